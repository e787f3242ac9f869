"""Mode connectivity: paths of low loss between two solutions, and the barrier along a path.

- `fit_bezier` (Garipov, Izmailov, Podoprikhin, Vetrov & Wilson 2018, "Loss surfaces, mode
  connectivity, and fast ensembling of DNNs", section 3): a quadratic Bezier curve
  phi(t) = (1 - t)^2 w_A + 2 t (1 - t) theta + t^2 w_B between two trained networks, whose
  control point theta minimises the expected loss along the curve, E_{t ~ U(0, 1)} L(phi(t)),
  by stochastic gradient steps on one random t and one minibatch at a time.
- `curve_losses`: the loss along a `BezierCurve` (all t at once, batched like the slices).
- `loss_barrier`: the height of the loss along a path above its end points. Two definitions are
  in use: Entezari, Sedghi, Saukh & Neyshabur (2022, eq. 1) measure it above the chord,
  max_t [L(t) - ((1 - t) L(0) + t L(1))] (``kind="chord"``, the default); Frankle, Dziugaite,
  Roy & Carbin (2020, "instability") above the mean of the end points,
  max_t L(t) - (L(0) + L(1)) / 2 (``kind="mean"``). They agree when the end points' losses are
  equal and differ by at most |L(0) - L(1)| / 2.

The end points are never changed; the curve's control point is a separate dict of tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from .._checks import check_choice, check_float, check_int, check_module, model_device
from .._guards import eval_mode
from ._core import (
    Params,
    _frozen_state,
    check_loss_fn,
    check_point,
    loss_at,
    pair_data,
    trainable_parameters,
)
from .slices import _finish, _run, as_grid

__all__ = ["BezierCurve", "fit_bezier", "curve_losses", "loss_barrier"]


def bernstein(t: torch.Tensor) -> torch.Tensor:
    """Return the quadratic Bernstein basis ((1 - t)^2, 2 t (1 - t), t^2), shape (len(t), 3)."""
    return torch.stack([(1 - t) ** 2, 2 * t * (1 - t), t**2], dim=-1)


@dataclass
class BezierCurve:
    """A quadratic Bezier curve in parameter space: ``start`` (t = 0), ``control``, ``end``
    (t = 1), each a dict name -> tensor. ``history`` holds the training loss per step."""

    start: Params
    control: Params
    end: Params
    history: list[float]

    def point(self, t: float) -> Params:
        """Return phi(t) = (1 - t)^2 start + 2 t (1 - t) control + t^2 end, a dict."""
        c = bernstein(torch.tensor(float(t), dtype=torch.float64)).tolist()
        return {n: c[0] * self.start[n] + c[1] * self.control[n] + c[2] * self.end[n]
                for n in self.start}


def fit_bezier(
    model_a: nn.Module,
    model_b,
    loss_fn: Callable,
    data,
    *,
    steps: int = 1000,
    lr: float = 1e-2,
    batch_size: int | None = 128,
    seed: int | None = 0,
    progress: bool = True,
) -> BezierCurve:
    """Train the control point of a quadratic Bezier curve between two networks (Garipov et al.
    2018): minimise E_{t ~ U(0, 1)} L(phi_theta(t)) with Adam, one t and one minibatch per step.

    The control point starts at the midpoint (w_A + w_B) / 2, where the straight line sits.

    Args:
        model_a: the first end point (its architecture and buffers are used; eval mode).
        model_b: the second end point: a network of the same architecture or its parameters.
        loss_fn: ``loss_fn(outputs, targets)``, the mean loss of a batch.
        data: ``(x, y)`` tensors.
        steps: optimisation steps.
        lr: Adam's learning rate.
        batch_size: minibatch size (None: the full batch every step).
        seed: seed of t and of the minibatches.
        progress: show a progress bar.

    Returns:
        A `BezierCurve` (tensors detached, on the model's device).
    """
    fn = "fit_bezier"
    check_module(model_a, fn, "model_a")
    check_loss_fn(loss_fn, fn)
    start = {n: t.clone() for n, t in trainable_parameters(model_a).items()}
    end = {n: t.clone() for n, t in check_point(model_b, start, "model_b", fn).items()}
    x, y = pair_data(data, fn, model_device(model_a))
    steps = check_int(steps, "steps", fn, minimum=0)
    lr = check_float(lr, "lr", fn, positive=True)
    size = len(x) if batch_size is None else check_int(batch_size, "batch_size", fn)
    control = {n: ((start[n] + end[n]) / 2).requires_grad_(True) for n in start}
    optimizer = torch.optim.Adam(control.values(), lr=lr)
    generator = torch.Generator().manual_seed(0 if seed is None else seed)
    frozen = _frozen_state(model_a)
    history = []
    bar = tqdm(range(steps), desc=fn, disable=not progress, leave=False)
    try:
        with eval_mode(model_a):
            for _ in bar:
                t = float(torch.rand((), generator=generator, dtype=torch.float64))
                idx = torch.randint(0, len(x), (size,), generator=generator).to(x.device) \
                    if size < len(x) else slice(None)
                c = bernstein(torch.tensor(t, dtype=torch.float64)).tolist()
                point = {n: c[0] * start[n] + c[1] * control[n] + c[2] * end[n] for n in start}
                loss = loss_at(model_a, point, frozen, loss_fn, [(x[idx], y[idx])])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                history.append(loss.detach())
    finally:
        bar.close()
    losses = torch.stack(history).tolist() if history else []
    return BezierCurve(start, {n: p.detach() for n, p in control.items()}, end, losses)


def curve_losses(
    model: nn.Module,
    curve: BezierCurve,
    loss_fn: Callable,
    data,
    ts=25,
    *,
    batch_size: int | None = None,
    accuracy: bool = False,
    vectorize: bool = True,
    progress: bool = False,
):
    """Evaluate the loss along a `BezierCurve` at ``ts`` (an int n: n points from 0 to 1).

    Args:
        model: the architecture (buffers and frozen parameters are taken from it).
        curve: a `BezierCurve` over the model's trainable parameters.
        loss_fn, data, batch_size, accuracy, vectorize, progress: as in `interpolate`.

    Returns:
        Losses (len(ts),), or ``(losses, accuracies)``; float64 on the CPU.
    """
    fn = "curve_losses"
    check_module(model, fn)
    check_loss_fn(loss_fn, fn)
    if not isinstance(curve, BezierCurve):
        raise TypeError(f"{fn}: `curve` must be a BezierCurve (from fit_bezier), "
                        f"got {type(curve).__name__}")
    reference = trainable_parameters(model)
    anchors = [check_point(getattr(curve, part), reference, f"curve.{part}", fn)
               for part in ("start", "control", "end")]
    if isinstance(ts, int) and not isinstance(ts, bool):
        ts = torch.linspace(0, 1, check_int(ts, "ts", fn, minimum=2), dtype=torch.float64)
    grid = as_grid(ts, "ts", fn)
    losses, accs = _run(model, anchors, bernstein(grid), loss_fn, data, fn, batch_size,
                        accuracy, vectorize, progress)
    return _finish(losses, accs, accuracy, (len(grid),))


def loss_barrier(losses, ts=None, *, kind: str = "chord") -> float:
    """Return the loss barrier along a path from t = 0 to t = 1.

    ``kind="chord"`` (Entezari et al. 2022, eq. 1): max_t [L(t) - ((1 - t) L(0) + t L(1))], the
    height above the straight line between the end points' losses. ``kind="mean"`` (Frankle et
    al. 2020, the "instability" of linear mode connectivity, there for the error):
    max_t L(t) - (L(0) + L(1)) / 2, the height above the end points' mean.

    Args:
        losses: losses (n,) at ``ts``, a path from t = 0 (first) to t = 1 (last).
        ts: the path coordinates (n,), increasing from 0 to 1 (default: evenly spaced).
        kind: ``"chord"`` or ``"mean"``.

    Returns:
        The barrier height, a float (0 or less when the loss never rises above the reference).
    """
    fn = "loss_barrier"
    check_choice(kind, "kind", fn, ("chord", "mean"))
    values = as_grid(losses, "losses", fn)
    if len(values) < 2:
        raise ValueError(f"{fn}: `losses` must hold at least the two end points, "
                         f"got {len(values)} value(s)")
    grid = torch.linspace(0, 1, len(values), dtype=torch.float64) if ts is None \
        else as_grid(ts, "ts", fn)
    if len(grid) != len(values):
        raise ValueError(f"{fn}: `ts` and `losses` must have the same length, "
                         f"got {len(grid)} and {len(values)}")
    if float(grid[0]) != 0.0 or float(grid[-1]) != 1.0:
        raise ValueError(f"{fn}: `ts` must run from 0 to 1 (the end points), got "
                         f"{float(grid[0])} to {float(grid[-1])}")
    if kind == "mean":
        return float(values.max() - (values[0] + values[-1]) / 2)
    chord = (1 - grid) * values[0] + grid * values[-1]
    return float((values - chord).max())
