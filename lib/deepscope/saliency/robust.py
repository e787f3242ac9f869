"""Adversarial robustness for the saliency chapter: PGD attacks and PGD adversarial training
(Madry et al. 2018). Robust models have input gradients that look like the signal (Tsipras et
al. 2019; Shah, Jain & Netrapalli 2021), which chapter 1 measures on BlockDigits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import (
    check_choice,
    check_dataset,
    check_float,
    check_for_model,
    check_int,
    check_labels,
    check_module,
    check_nonempty,
    check_targets_for_model,
    check_tensor,
    model_device,
)
from .._guards import eval_mode
from ..train import History, fit
from ._core import make_generator

__all__ = ["pgd_attack", "robust_accuracy", "adversarial_fit", "NORMS"]

NORMS = ("linf", "l2")


def _norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *([1] * (t.dim() - 1)))


def pgd_attack(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    clamp: tuple[float, float] | None = (0.0, 1.0),
    seed: int | None = None,
) -> torch.Tensor:
    """Return adversarial examples x + delta, ||delta|| <= eps, that raise the cross-entropy,
    by projected gradient ascent (Madry et al. 2018, eq. 2.1).

    Each step moves delta by ``step_size`` along sign(grad) (linf) or grad/||grad|| (l2), then
    projects back on the eps-ball and, with ``clamp``, on the valid pixel range.

    Args:
        model: classifier (B, ...) -> (B, C), attacked in eval mode (restored).
        x, y: float inputs (B, ...) and labels (B,).
        eps: radius of the threat model (> 0), in the units of x.
        norm: ``"linf"`` or ``"l2"`` (the l2 norm is per image, over all its features).
        steps: gradient steps (>= 1).
        step_size: default 2.5 * eps / steps (Madry et al.'s rule of thumb).
        random_start: start from a uniform point of the linf ball (a random direction scaled
            uniformly inside the l2 ball).
        clamp: valid range (lo, hi) of the inputs, or None.
        seed: seed of the random start (None: torch's global generator).

    Returns:
        Adversarial inputs, shape of ``x`` (detached).
    """
    fn = "pgd_attack"
    check_module(model, fn)
    check_tensor(x, "x", fn, min_ndim=2, like="(B, ...)")
    check_for_model(model, check_nonempty(x, "x", fn, "image"), "x", fn)
    y = check_labels(y, len(x), fn, name="y").to(x.device)
    check_targets_for_model(model, x, y, "y", fn)
    eps = check_float(eps, "eps", fn, positive=True)
    check_choice(norm, "norm", fn, NORMS)
    steps = check_int(steps, "steps", fn)
    step_size = 2.5 * eps / steps if step_size is None else check_float(
        step_size, "step_size", fn, positive=True)
    generator = make_generator(seed, x.device, fn)
    x = x.detach()
    delta = torch.zeros_like(x)
    if random_start:
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if norm == "linf":
            delta = (2 * u - 1) * eps
        else:
            direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            radius = u.flatten(1)[:, :1].view(-1, *([1] * (x.dim() - 1))) * eps
            delta = direction / _norm(direction) * radius
    if clamp is not None:
        delta = (x + delta).clamp(*clamp) - x
    with eval_mode(model), torch.enable_grad():
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = F.cross_entropy(model(x + delta), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                if norm == "linf":
                    delta = (delta + step_size * grad.sign()).clamp(-eps, eps)
                else:
                    delta = delta + step_size * grad / _norm(grad)
                    delta = delta * (eps / _norm(delta)).clamp(max=1.0)
                if clamp is not None:
                    delta = (x + delta).clamp(*clamp) - x
    return (x + delta).detach()


def robust_accuracy(model, x, y, eps: float, *, batch_size: int = 512, **attack) -> float:
    """Return the accuracy of ``model`` on `pgd_attack` examples (keyword ``attack`` options
    passed on), evaluated in batches of ``batch_size`` images."""
    fn = "robust_accuracy"
    check_for_model(model, check_tensor(x, "x", fn, min_ndim=2, like="(B, ...)"), "x", fn)
    y = check_labels(y, len(x), fn, name="y").to(x.device)
    correct = torch.zeros((), device=x.device)
    for lo in range(0, len(x), check_int(batch_size, "batch_size", fn)):
        adv = pgd_attack(model, x[lo:lo + batch_size], y[lo:lo + batch_size], eps, **attack)
        with torch.no_grad(), eval_mode(model):
            correct += (model(adv).argmax(1) == y[lo:lo + batch_size]).sum()
    return float(correct) / len(x)


class _AdversarialBatches:
    """An iterable of (x_adv, y) minibatches, attacked with the model as it is when each batch
    is drawn; `deepscope.train.fit` consumes it like a DataLoader."""

    def __init__(self, model, x, y, batch_size, seed, attack):
        self.model, self.x, self.y, self.batch_size, self.attack = model, x, y, batch_size, attack
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0

    def __iter__(self):
        order = torch.randperm(len(self.x), generator=self.generator).to(self.x.device)
        self.epoch += 1
        for lo in range(0, len(self.x), self.batch_size):
            idx = order[lo:lo + self.batch_size]
            seed = int(torch.randint(2**31 - 1, (1,), generator=self.generator))
            adv = pgd_attack(self.model, self.x[idx], self.y[idx], seed=seed, **self.attack)
            yield adv, self.y[idx]


def adversarial_fit(
    model,
    train: tuple[torch.Tensor, torch.Tensor],
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 7,
    step_size: float | None = None,
    clamp: tuple[float, float] | None = (0.0, 1.0),
    batch_size: int = 128,
    seed: int = 0,
    **fit_kwargs,
) -> History:
    """Train ``model`` on PGD adversarial examples: min_theta E max_{||d|| <= eps} loss(x + d)
    (Madry et al. 2018, eq. 2.1), each minibatch attacked with the current weights.

    Args:
        model: the model to train in place.
        train: ``(x, y)`` tensors.
        eps, norm, steps, step_size, clamp: the attack (`pgd_attack`) used in training.
        batch_size: minibatch size.
        seed: seed of the shuffling and of the attacks' random starts.
        **fit_kwargs: passed to `deepscope.train.fit` (``epochs``, ``lr``, ``test``...).

    Returns:
        The `History` of `fit`; its train accuracy is the accuracy on the adversarial batches.
    """
    fn = "adversarial_fit"
    check_module(model, fn)
    if not (isinstance(train, (tuple, list)) and len(train) == 2):
        raise TypeError(f"{fn}: `train` must be a pair (x, y) of tensors, "
                        f"got {type(train).__name__}")
    x = check_dataset(model, check_tensor(train[0], "train[0]", fn, min_ndim=2), "train[0]", fn)
    y = check_labels(train[1], len(x), fn, name="train[1]")
    check_targets_for_model(model, x, y, "train[1]", fn)
    device = model_device(model)
    attack = {"eps": check_float(eps, "eps", fn, positive=True),
              "norm": check_choice(norm, "norm", fn, NORMS), "steps": check_int(steps, "steps", fn),
              "step_size": step_size, "clamp": clamp}
    batches = _AdversarialBatches(model, x.to(device), y.to(device),
                                  check_int(batch_size, "batch_size", fn),
                                  check_int(seed, "seed", fn, minimum=0), attack)
    return fit(model, batches, batch_size=None, **fit_kwargs)
