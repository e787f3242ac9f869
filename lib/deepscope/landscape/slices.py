"""Slices of the loss landscape: the loss along a line and on a plane through parameter space.

- `interpolate`: the straight line from one network to another (Goodfellow, Vinyals & Saxe 2015,
  "Qualitatively characterizing neural network optimization problems"): L((1 - a) theta_A +
  a theta_B).
- `slice_1d`: L(theta + a d) along a direction d.
- `slice_2d`: L(theta + x d1 + y d2) on a grid (Li et al. 2018).

All of them evaluate many parameter points at once: the points of a chunk of ``batch_size``
are mapped over with ``torch.func.vmap`` and ``functional_call``, never by copying weights into
the module, so the user's model is left exactly as it was (also when ``loss_fn`` raises).

When the model is an ``nn.Sequential`` whose first layer with parameters is a Linear or
convolution (``models.mlp``, ``models.small_cnn``), the slices use that layer's linearity in its
parameters: its output at theta + x d1 + y d2 is its output at theta, plus x times its output at
d1, plus y times its output at d2. Three passes through the first layer then serve the whole
grid and only the rest of the network runs per point (same losses up to float rounding).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .._checks import check_int, check_module
from .._forward import check_output_adapter
from ._core import check_loss_fn, check_point, evaluate_combinations, trainable_parameters

__all__ = ["interpolate", "slice_1d", "slice_2d"]


def as_grid(values, name: str, fn: str) -> torch.Tensor:
    """Return a 1-D float64 tensor of grid coordinates after checking it is non-empty, finite."""
    if isinstance(values, torch.Tensor):
        grid = values.detach().to("cpu", torch.float64)
    elif isinstance(values, Sequence) or hasattr(values, "__array__"):
        try:
            grid = torch.as_tensor(values, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{fn}: `{name}` must be a 1-D sequence of numbers, got {values!r}") \
                from err
    else:
        raise TypeError(f"{fn}: `{name}` must be a 1-D tensor or sequence of numbers, "
                        f"got {type(values).__name__}")
    if grid.dim() != 1 or grid.numel() == 0:
        raise ValueError(f"{fn}: `{name}` must be a non-empty 1-D grid of coordinates, "
                         f"got shape {tuple(grid.shape)}")
    if not torch.isfinite(grid).all():
        raise ValueError(f"{fn}: `{name}` must hold finite numbers, got {grid.tolist()}")
    return grid


def _run(model, anchors, coefficients, loss_fn, data, fn, batch_size, accuracy, vectorize,
         progress, output=None):
    output = check_output_adapter(output, fn)
    bar = tqdm(total=len(coefficients), desc=fn, disable=not progress, leave=False)
    try:
        losses, accs = evaluate_combinations(
            model, anchors, coefficients, loss_fn, data, fn=fn, batch_size=batch_size,
            accuracy=accuracy, vectorize=vectorize, progress=bar, output=output)
    finally:
        bar.close()
    return losses, accs


def interpolate(
    model_a: nn.Module,
    model_b,
    loss_fn: Callable,
    data,
    alphas=25,
    *,
    batch_size: int | None = None,
    accuracy: bool = False,
    vectorize: bool = True,
    progress: bool = False,
    output=None,
):
    """Evaluate the loss on the straight line between two networks of the same architecture.

    Computes L((1 - a) theta_A + a theta_B) for every a in ``alphas`` (Goodfellow et al. 2015).
    a = 0 is ``model_a``, a = 1 is ``model_b``; values outside [0, 1] extrapolate.

    Args:
        model_a: the first network (its architecture and buffers are used for every point).
        model_b: the second network, or a dict of its trainable parameters.
        loss_fn: ``loss_fn(outputs, targets)`` returning the mean loss of a batch.
        data: a pair ``(x, y)`` or an iterable of ``(x, y)`` batches.
        alphas: an int n (n evenly spaced points from 0 to 1, both included) or a 1-D
            sequence/tensor of coefficients.
        batch_size: points evaluated together (bounds memory; None: about 16k samples' worth
            of forward passes per chunk).
        accuracy: also return the accuracy at each point.
        vectorize: False evaluates point by point (for loss functions vmap cannot batch).
        progress: show a progress bar.
        output: picks the tensor passed to ``loss_fn`` (and to the accuracy) from a model
            returning a dict, a tuple or an object: a key, an index or a function
            (`deepscope._forward`); None passes the outputs as they are.

    Returns:
        Losses (len(alphas),), or ``(losses, accuracies)`` with ``accuracy=True``; float64
        tensors on the CPU.
    """
    fn = "interpolate"
    check_module(model_a, fn, "model_a")
    check_loss_fn(loss_fn, fn)
    theta_a = trainable_parameters(model_a)
    theta_b = check_point(model_b, theta_a, "model_b", fn)
    if isinstance(alphas, int) and not isinstance(alphas, bool):
        alphas = torch.linspace(0, 1, check_int(alphas, "alphas", fn, minimum=2),
                                dtype=torch.float64)
    grid = as_grid(alphas, "alphas", fn)
    coefficients = torch.stack([1 - grid, grid], dim=1)
    losses, accs = _run(model_a, [theta_a, theta_b], coefficients, loss_fn, data, fn,
                        batch_size, accuracy, vectorize, progress, output)
    return _finish(losses, accs, accuracy, (len(grid),))


def slice_1d(
    model: nn.Module,
    direction,
    loss_fn: Callable,
    data,
    alphas,
    *,
    batch_size: int | None = None,
    accuracy: bool = False,
    vectorize: bool = True,
    progress: bool = False,
    output=None,
):
    """Evaluate the loss along a line through the model's parameters: L(theta + a d).

    Args:
        model: the network; theta are its trainable parameters.
        direction: a dict name -> tensor (e.g. from `random_direction`), the model's shapes.
        loss_fn, data: as in `interpolate`.
        alphas: 1-D sequence/tensor of step sizes a.
        batch_size, accuracy, vectorize, progress, output: as in `interpolate`.

    Returns:
        Losses (len(alphas),) (and accuracies with ``accuracy=True``), float64 on the CPU.
    """
    fn = "slice_1d"
    check_module(model, fn)
    check_loss_fn(loss_fn, fn)
    theta = trainable_parameters(model)
    d = check_point(direction, theta, "direction", fn)
    grid = as_grid(alphas, "alphas", fn)
    coefficients = torch.stack([torch.ones_like(grid), grid], dim=1)
    losses, accs = _run(model, [theta, d], coefficients, loss_fn, data, fn, batch_size,
                        accuracy, vectorize, progress, output)
    return _finish(losses, accs, accuracy, (len(grid),))


def slice_2d(
    model: nn.Module,
    d1,
    d2,
    loss_fn: Callable,
    data,
    xs,
    ys,
    *,
    batch_size: int | None = None,
    accuracy: bool = False,
    vectorize: bool = True,
    progress: bool = True,
    output=None,
):
    """Evaluate the loss on a plane through the model's parameters: L(theta + x d1 + y d2).

    Li et al. (2018) draw d1 and d2 as filter-normalised random directions
    (`random_direction`); PCA directions of a training trajectory (`trajectory_pca`) show the
    path the optimiser took.

    Args:
        model: the network; theta are its trainable parameters.
        d1, d2: dicts name -> tensor with the model's shapes (the x and y axes).
        loss_fn: ``loss_fn(outputs, targets)`` returning the mean loss of a batch.
        data: a pair ``(x, y)`` or an iterable of ``(x, y)`` batches.
        xs: 1-D grid of coefficients along d1 (columns).
        ys: 1-D grid of coefficients along d2 (rows).
        batch_size: grid points evaluated together with vmap (bounds memory; None: about 16k
            samples' worth of forward passes per chunk).
        accuracy: also return the accuracy grid.
        vectorize: False evaluates point by point.
        progress: show a progress bar over the grid points.
        output: the output adapter, as in `interpolate`.

    Returns:
        Losses of shape (len(ys), len(xs)), entry [i, j] at (xs[j], ys[i]) (the layout
        ``matplotlib.contour(xs, ys, losses)`` expects); with ``accuracy=True`` the pair
        ``(losses, accuracies)``. Float64 tensors on the CPU.
    """
    fn = "slice_2d"
    check_module(model, fn)
    check_loss_fn(loss_fn, fn)
    theta = trainable_parameters(model)
    d1 = check_point(d1, theta, "d1", fn)
    d2 = check_point(d2, theta, "d2", fn)
    grid_x, grid_y = as_grid(xs, "xs", fn), as_grid(ys, "ys", fn)
    yy, xx = torch.meshgrid(grid_y, grid_x, indexing="ij")
    coefficients = torch.stack([torch.ones(xx.numel(), dtype=torch.float64), xx.flatten(),
                                yy.flatten()], dim=1)
    losses, accs = _run(model, [theta, d1, d2], coefficients, loss_fn, data, fn, batch_size,
                        accuracy, vectorize, progress, output)
    return _finish(losses, accs, accuracy, (len(grid_y), len(grid_x)))


def _finish(losses, accs, accuracy, shape):
    losses = losses.detach().to("cpu", torch.float64).reshape(shape)
    if not accuracy:
        return losses
    return losses, accs.detach().to("cpu", torch.float64).reshape(shape)
