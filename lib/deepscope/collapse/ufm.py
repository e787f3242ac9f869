"""The unconstrained-features model (UFM): neural collapse without a network.

If a network is expressive enough to place its last-layer features anywhere, the features
``H`` themselves can be treated as free variables and trained together with the classifier
(Mixon, Parshall & Pi 2020; Fang et al. 2021; Zhu et al. 2021). With N = C n samples, n per class,
the regularised objective is (Zhu et al. 2021, eq. 3)

    f(W, H, b) = 1/N sum_i L(W h_i + b, y_i) + lam_W/2 |W|_F^2 + lam_H/2 |H|_F^2 + lam_b/2 |b|^2

with L the cross-entropy, or the squared error to one-hot targets, ``L = |z - e_y|^2 / 2``
(Han, Papyan & Donoho 2022; Tirer & Bruna 2022). For cross-entropy with ``d >= C - 1`` every
global minimiser is a neural-collapse configuration (Zhu et al. 2021, Theorem 3.1) and every
other critical point is a strict saddle, so plain gradient descent finds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .._checks import (
    check_choice,
    check_finite,
    check_float,
    check_int,
    check_labels,
    check_like,
    check_tensor,
)
from .metrics import CollapseMetrics, collapse_metrics

__all__ = ["ufm_loss", "UFMResult", "train_ufm"]

LOSSES = ("ce", "mse")


def ufm_loss(
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    *,
    loss: str = "ce",
    weight_decay: float = 5e-3,
    feature_decay: float | None = None,
    bias_decay: float | None = None,
) -> torch.Tensor:
    """Return the regularised UFM objective f(W, H, b) of Zhu et al. (2021, eq. 3) (module doc).

    Args:
        features: H as rows, (N, d).
        weight: W, (C, d).
        bias: b, (C,), or None for a bias-free classifier.
        labels: (N,) integer labels in [0, C).
        loss: ``"ce"`` (cross-entropy) or ``"mse"`` (half squared error to one-hot targets).
        weight_decay: lam_W >= 0.
        feature_decay: lam_H >= 0 (default: ``weight_decay``).
        bias_decay: lam_b >= 0 (default: ``weight_decay``).

    Returns:
        A scalar tensor, differentiable in features, weight and bias.
    """
    fn = "ufm_loss"
    check_choice(loss, "loss", fn, LOSSES)
    check_tensor(features, "features", fn, ndim=2, like="(N, d)")
    check_tensor(weight, "weight", fn, ndim=2, like="(C, d)")
    if weight.shape[1] != features.shape[1]:
        raise ValueError(f"{fn}: `weight` must have shape (C, {features.shape[1]}), "
                         f"got {tuple(weight.shape)}")
    check_finite(features, "features", fn)
    check_like(weight, features, "weight", fn, "features")
    c = weight.shape[0]
    labels = check_labels(labels, features.shape[0], fn, num_classes=c)
    lam_w = check_float(weight_decay, "weight_decay", fn, nonnegative=True)
    lam_h = lam_w if feature_decay is None else check_float(feature_decay, "feature_decay", fn,
                                                            nonnegative=True)
    lam_b = lam_w if bias_decay is None else check_float(bias_decay, "bias_decay", fn,
                                                         nonnegative=True)
    if bias is not None:
        check_like(check_tensor(bias, "bias", fn, ndim=1, like="(C,)"), features, "bias", fn,
                   "features")
        if bias.shape[0] != c:
            raise ValueError(f"{fn}: `bias` must have shape ({c},), got {tuple(bias.shape)}")
    targets = nn.functional.one_hot(labels, c).to(features.dtype) if loss == "mse" else None
    return _objective(features, weight, bias, labels, targets, lam_w, lam_h, lam_b)


def _objective(h, w, b, labels, targets, lam_w, lam_h, lam_b) -> torch.Tensor:
    """`ufm_loss` without validation (for the training loop): ``targets`` one-hot for MSE,
    None for cross-entropy."""
    logits = h @ w.T
    penalty = lam_w / 2 * w.pow(2).sum() + lam_h / 2 * h.pow(2).sum()
    if b is not None:
        logits = logits + b
        penalty = penalty + lam_b / 2 * b.pow(2).sum()
    if targets is None:
        fit = nn.functional.cross_entropy(logits, labels)
    else:
        fit = (logits - targets).pow(2).sum(1).mean() / 2
    return fit + penalty


@dataclass
class UFMResult:
    """What `train_ufm` returns: the trained variables, the final metrics and the record."""

    features: torch.Tensor  # H, (N, d)
    labels: torch.Tensor  # (N,)
    weight: torch.Tensor  # W, (C, d)
    bias: torch.Tensor | None  # b, (C,)
    metrics: CollapseMetrics  # of the final configuration
    steps: list[int] = field(default_factory=list)  # steps at which the record was taken
    loss: list[float] = field(default_factory=list)
    history: list[CollapseMetrics] = field(default_factory=list)

    def series(self, name: str) -> list[float]:
        """Return one recorded metric over ``steps``, e.g. ``series("nc1")``."""
        if name == "loss":
            return list(self.loss)
        return [getattr(m, name) for m in self.history]


def _class_sizes(n_per_class, c: int, fn: str) -> list[int]:
    if isinstance(n_per_class, (list, tuple)):
        if len(n_per_class) != c:
            raise ValueError(f"{fn}: `n_per_class` must be an int or a sequence of {c} ints "
                             f"(one per class), got {len(n_per_class)} values")
        return [check_int(k, "n_per_class", fn, minimum=2) for k in n_per_class]
    return [check_int(n_per_class, "n_per_class", fn, minimum=2)] * c


def train_ufm(
    num_classes: int,
    dim: int,
    n_per_class: int | Sequence[int],
    *,
    loss: str = "ce",
    weight_decay: float = 5e-3,
    feature_decay: float | None = None,
    bias_decay: float | None = None,
    bias: bool = True,
    steps: int = 1000,
    lr: float = 0.5,
    momentum: float = 0.9,
    init_scale: float = 1.0,
    record_every: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> UFMResult:
    """Train the unconstrained-features model by full-batch gradient descent with momentum.

    Features H (N, d), classifier W (C, d) and bias b (C,) start Gaussian with standard
    deviation ``init_scale / sqrt(d)`` (H, W) and 0 (b), and descend `ufm_loss`. Labels are
    ``[0]*n_0 + [1]*n_1 + ... + [C-1]*n_{C-1}``.

    Args:
        num_classes: C >= 2; dim: d >= 1.
        n_per_class: samples per class, an int n >= 2 (N = C n) or a sequence of C such ints
            (class imbalance, as in the minority-collapse analysis of Fang et al. 2021).
        loss, weight_decay, feature_decay, bias_decay: as in `ufm_loss`.
        bias: train a bias (else b = None).
        steps: gradient steps (>= 1); lr, momentum: of ``torch.optim.SGD``.
        init_scale: scale of the random initialisation.
        record_every: record the loss and `collapse_metrics` every this many steps (and at the
            last step); None records only the end.
        seed: seed of the initialisation (a private generator; global RNG untouched).
        dtype, device: where the variables live (float64 on the CPU by default).
        progress: show a progress bar.

    Returns:
        A `UFMResult`. With cross-entropy, weight decay and d >= C - 1 its metrics approach 0
        (Zhu et al. 2021); with d < C - 1 no simplex ETF fits and NC2 stays away from 0.
    """
    fn = "train_ufm"
    c = check_int(num_classes, "num_classes", fn, minimum=2)
    d = check_int(dim, "dim", fn)
    sizes = _class_sizes(n_per_class, c, fn)
    steps = check_int(steps, "steps", fn)
    check_choice(loss, "loss", fn, LOSSES)
    lr = check_float(lr, "lr", fn, positive=True)
    momentum = check_float(momentum, "momentum", fn, nonnegative=True)
    init_scale = check_float(init_scale, "init_scale", fn, positive=True)
    if record_every is not None:
        record_every = check_int(record_every, "record_every", fn)
    seed = check_int(seed, "seed", fn, minimum=0)
    lam_w = check_float(weight_decay, "weight_decay", fn, nonnegative=True)
    lam_h = lam_w if feature_decay is None else check_float(feature_decay, "feature_decay", fn,
                                                            nonnegative=True)
    lam_b = lam_w if bias_decay is None else check_float(bias_decay, "bias_decay", fn,
                                                         nonnegative=True)
    generator = torch.Generator().manual_seed(seed)
    std = init_scale / d**0.5
    n_total = sum(sizes)
    h = (torch.randn(n_total, d, generator=generator, dtype=dtype) * std).to(device)
    w = (torch.randn(c, d, generator=generator, dtype=dtype) * std).to(device)
    h.requires_grad_(True)
    w.requires_grad_(True)
    b = torch.zeros(c, dtype=dtype, device=h.device, requires_grad=True) if bias else None
    labels = torch.repeat_interleave(torch.arange(c), torch.tensor(sizes)).to(h.device)
    targets = nn.functional.one_hot(labels, c).to(dtype) if loss == "mse" else None
    params = [h, w] + ([b] if b is not None else [])
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum)

    def objective():
        return _objective(h, w, b, labels, targets, lam_w, lam_h, lam_b)

    result_steps, losses, history = [], [], []

    def record(step):
        with torch.no_grad():
            value = objective()
        result_steps.append(step)
        losses.append(float(value))
        history.append(collapse_metrics(h.detach(), labels, w.detach(),
                                        None if b is None else b.detach()))

    for step in tqdm(range(1, steps + 1), desc="UFM", disable=not progress, leave=False):
        optimizer.zero_grad(set_to_none=True)
        objective().backward()
        optimizer.step()
        if record_every is not None and step % record_every == 0 and step != steps:
            record(step)
    record(steps)
    return UFMResult(
        features=h.detach(), labels=labels, weight=w.detach(),
        bias=None if b is None else b.detach(), metrics=history[-1],
        steps=result_steps, loss=losses, history=history,
    )
