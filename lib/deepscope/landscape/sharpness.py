"""Sharpness and stability: sharpness-aware minimisation, and the top Hessian eigenvalue along
full-batch gradient descent (the edge of stability).

- `SAM` (Foret, Kleiner, Mobahi & Neyshabur 2021, "Sharpness-aware minimization for efficiently
  improving generalization", Algorithm 1): minimise max_{||e|| <= rho} L(w + e) by taking the
  gradient at the first-order worst case e = rho g / ||g||. ``adaptive=True`` is ASAM (Kwon et al.
  2021): e = rho T^2 g / ||T g|| with T = |w|.
- `fit_sam`: a minibatch training loop with `SAM` (`deepscope.train.fit` calls ``step()``
  without the closure SAM needs).
- `track_sharpness`: full-batch gradient descent with step size eta, recording the loss at every
  step and the sharpness (top Hessian eigenvalue) every few steps. Gradient descent on a
  quadratic diverges once the sharpness exceeds 2/eta; on neural networks the sharpness rises
  (progressive sharpening) until it reaches about 2/eta and then hovers there while the loss
  keeps falling non-monotonically (Cohen, Kaur, Li, Kolter & Talwalkar 2021, "Gradient descent
  on neural networks typically occurs at the edge of stability").

These functions train the model in place, as `deepscope.train.fit` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .._checks import check_float, check_int, check_module, model_device
from .._guards import restored_tensors, training_modes
from ..train import History, evaluate
from ._core import check_loss_fn, data_batches, pair_data
from .curvature import top_eigenvalues

__all__ = ["SAM", "fit_sam", "SharpnessHistory", "track_sharpness"]


class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimisation around a base optimiser (Foret et al. 2021, Algorithm 1).

    Each ``step(closure)`` computes the gradient g at w (first ``closure()`` call), moves to
    w + e with e = rho g / ||g|| (ASAM: e = rho |w|^2 g / || |w| g ||), computes the gradient
    there (second call), puts the weights back to w *bitwise* (a saved copy, not w + e - e) and
    lets the base optimiser step with that gradient. If the second call raises, the weights are
    restored before the exception propagates.

    Args:
        params: the parameters (or parameter groups) to optimise.
        base_optimizer: an optimiser class, e.g. ``torch.optim.SGD``.
        rho: radius of the neighbourhood (> 0).
        adaptive: use ASAM's scale-invariant neighbourhood.
        **kwargs: passed to ``base_optimizer`` (``lr=``, ``momentum=``...).

    The closure must zero the gradients, compute the loss, call ``backward()`` and return the
    loss; ``step`` returns the loss at w.
    """

    def __init__(self, params, base_optimizer=torch.optim.SGD, *, rho: float = 0.05,
                 adaptive: bool = False, **kwargs):
        rho = check_float(rho, "rho", "SAM", positive=True)
        if not (isinstance(base_optimizer, type) and issubclass(base_optimizer,
                                                                 torch.optim.Optimizer)):
            raise TypeError(f"SAM: `base_optimizer` must be a torch.optim.Optimizer class, "
                            f"got {base_optimizer!r}")
        super().__init__(params, dict(rho=rho, adaptive=bool(adaptive), **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)

    @torch.no_grad()
    def _ascent(self) -> None:
        scaled = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    scale = p.abs() if group["adaptive"] else 1.0
                    scaled.append((scale * p.grad).norm())
        norm = torch.stack(scaled).norm() if scaled else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                factor = p * p if group["adaptive"] else 1.0
                p.add_(factor * p.grad * (group["rho"] / (norm + 1e-12)))

    def _perturbed(self) -> list[torch.Tensor]:
        """The parameters the ascent moves (those with a gradient)."""
        return [p for group in self.param_groups for p in group["params"] if p.grad is not None]

    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        """Take one SAM step; ``closure`` is required (see the class docstring)."""
        if closure is None:
            raise ValueError("SAM.step: `closure` is required: a function that zeroes the "
                             "gradients, computes the loss, calls backward() and returns it")
        with torch.enable_grad():
            loss = closure()
        with restored_tensors(self._perturbed()):  # w saved before the ascent changes it
            self._ascent()
            with torch.enable_grad():
                closure()
        self.base_optimizer.step()
        return loss


def fit_sam(
    model: nn.Module,
    train,
    *,
    rho: float = 0.05,
    adaptive: bool = False,
    epochs: int = 10,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_size: int = 128,
    loss_fn: Callable | None = None,
    test=None,
    seed: int | None = 0,
    progress: bool = True,
) -> History:
    """Train a model in place with `SAM` around SGD and return its per-epoch `History`.

    Args:
        model: the module to train (its train/eval mode is restored at the end).
        train: ``(x, y)`` tensors, shuffled into minibatches of ``batch_size`` each epoch.
        rho, adaptive: SAM's radius and ASAM switch.
        epochs, lr, momentum, weight_decay: SGD settings.
        loss_fn: ``loss_fn(outputs, targets)``, cross-entropy by default.
        test: optional ``(x, y)`` evaluated after each epoch.
        seed: seed of the shuffling.
        progress: show a progress bar over epochs.

    Returns:
        A `deepscope.train.History` (train loss and accuracy are means over the epoch's
        batches, at the unperturbed weights).
    """
    fn = "fit_sam"
    check_module(model, fn)
    loss_fn = check_loss_fn(loss_fn or nn.functional.cross_entropy, fn)
    x, y = pair_data(train, fn, model_device(model), "train", model, loss_fn)
    epochs = check_int(epochs, "epochs", fn, minimum=0)
    batch_size = check_int(batch_size, "batch_size", fn)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, adaptive=adaptive, lr=lr,
              momentum=momentum, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(0 if seed is None else seed)
    history = History()
    modes = training_modes(model)
    bar = tqdm(range(1, epochs + 1), desc=fn, disable=not progress, leave=False)
    try:
        modes.start()
        for epoch in bar:
            model.train()
            order = torch.randperm(len(x), generator=generator).to(x.device)
            total_loss = torch.zeros((), device=x.device)
            correct = torch.zeros((), device=x.device)
            for start in range(0, len(x), batch_size):
                idx = order[start : start + batch_size]
                xb, yb = x[idx], y[idx]
                outputs = []

                def closure(xb=xb, yb=yb, outputs=outputs):
                    opt.zero_grad(set_to_none=True)
                    out = model(xb)
                    outputs.append(out.detach())
                    loss = loss_fn(out, yb)
                    loss.backward()
                    return loss

                loss = opt.step(closure)
                total_loss += loss.detach() * len(xb)
                if outputs[0].dim() == 2 and not yb.is_floating_point():
                    correct += (outputs[0].argmax(1) == yb).sum()
            history.epoch.append(epoch)
            history.train_loss.append(float(total_loss) / len(x))
            history.train_acc.append(float(correct) / len(x))
            if test is not None:
                test_loss, test_acc = evaluate(model, test, loss_fn=loss_fn)
                history.test_loss.append(test_loss)
                history.test_acc.append(test_acc)
            bar.set_postfix(loss=f"{history.train_loss[-1]:.4f}")
    finally:
        modes.stop()
        bar.close()
    return history


@dataclass
class SharpnessHistory:
    """What `track_sharpness` recorded: the loss after every step, the sharpness every few."""

    lr: float
    step: list[int] = field(default_factory=list)  # 0, 1, ..., steps
    loss: list[float] = field(default_factory=list)
    sharpness_step: list[int] = field(default_factory=list)
    sharpness: list[float] = field(default_factory=list)
    diverged: bool = False

    @property
    def threshold(self) -> float:
        """2 / eta: the sharpness beyond which gradient descent on a quadratic diverges."""
        return 2.0 / self.lr


def track_sharpness(
    model: nn.Module,
    loss_fn: Callable,
    data,
    *,
    lr: float,
    steps: int,
    every: int = 10,
    tol: float = 1e-3,
    max_iter: int = 40,
    seed: int | None = 0,
    progress: bool = True,
) -> SharpnessHistory:
    """Train a model in place by full-batch gradient descent and track its sharpness.

    Each step is w <- w - lr * grad L(w) on all of ``data``; every ``every`` steps (and at step 0
    and the last step) the top Hessian eigenvalue is computed with `top_eigenvalues` (Lanczos,
    relative residual ``tol``) from the previous top eigenvector plus a random vector of half
    its norm (a warm start that still sees every direction). Training stops early, with
    ``diverged=True``, if the loss becomes NaN or infinite. (Cohen et al. 2021.)

    Args:
        model: the network, trained in place (no batch norm or dropout: the sharpness is
            measured in eval mode, the steps are taken in train mode).
        loss_fn: ``loss_fn(outputs, targets)`` (the mean loss of a batch).
        data: ``(x, y)`` or an iterable of batches: the full batch of gradient descent.
        lr: the step size eta.
        steps: number of gradient steps.
        every: steps between two sharpness measurements.
        tol, max_iter: Lanczos tolerance and steps per measurement.
        seed: seed of the first Lanczos start vector.
        progress: show a progress bar.

    Returns:
        A `SharpnessHistory`.
    """
    fn = "track_sharpness"
    check_module(model, fn)
    check_loss_fn(loss_fn, fn)
    lr = check_float(lr, "lr", fn, positive=True)
    steps = check_int(steps, "steps", fn, minimum=0)
    every = check_int(every, "every", fn)
    batches = data_batches(data, fn, model_device(model), model, loss_fn)
    total = sum(len(x) for x, _ in batches)
    params = [p for p in model.parameters() if p.requires_grad]
    history = SharpnessHistory(lr=lr)
    losses = []
    modes = training_modes(model)
    previous = {}
    generator = torch.Generator().manual_seed(0 if seed is None else seed)

    def measure(step):  # warm start from the last top eigenvector: few Lanczos steps
        v0 = previous.get("v")
        if v0 is not None:
            noise = torch.randn(v0.shape, generator=generator, dtype=torch.float64)
            v0 = v0 + 0.5 * (noise / noise.norm()).to(v0)
        value, vector = top_eigenvalues(model, loss_fn, batches, k=1, tol=tol,
                                        max_iter=max_iter, seed=seed, v0=v0,
                                        return_vectors=True)
        previous["v"] = vector[0]
        history.sharpness_step.append(step)
        history.sharpness.append(float(value[0]))

    bar = tqdm(range(steps + 1), desc=fn, disable=not progress, leave=False)
    try:
        modes.start()
        for step in bar:
            model.train()
            loss = 0.0
            grads = [torch.zeros_like(p) for p in params]
            for x, y in batches:
                batch_loss = loss_fn(model(x), y) * (len(x) / total)
                for g, gb in zip(grads, torch.autograd.grad(batch_loss, params)):
                    g += gb
                loss = loss + batch_loss.detach()
            losses.append(loss)
            if step % every == 0 or step == steps:
                if not math.isfinite(float(loss)):
                    history.diverged = True
                    break
                measure(step)
                bar.set_postfix(loss=f"{float(loss):.4f}", sharpness=f"{history.sharpness[-1]:.1f}")
            if step == steps:
                break
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p.sub_(lr * g)
    finally:
        modes.stop()
        bar.close()
    history.loss = torch.stack([torch.as_tensor(v) for v in losses]).tolist()
    history.step = list(range(len(history.loss)))
    return history
