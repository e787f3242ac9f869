"""Explorers of the landscape chapter (factories built on `deepscope.widgets.core.explorer`)."""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as W
import torch

from .._checks import check_float, check_int, check_module, model_device
from ..landscape import random_direction, slice_2d
from ..landscape._core import check_loss_fn, data_batches
from ..plotting.landscape import plot_loss_contour
from .core import explorer

__all__ = ["landscape_explorer"]


def landscape_explorer(
    model: torch.nn.Module,
    loss_fn: Callable,
    data,
    *,
    seed: int = 0,
    normalize: str = "filter",
    span: float = 1.0,
    resolution: int = 15,
    max_resolution: int = 41,
) -> W.VBox:
    """Explore 2-D slices of a model's loss landscape: L(theta + a d1 + b d2) on a grid
    [-span, span]^2, with d1, d2 random directions (`random_direction`, seeds 2s and 2s + 1).

    Args:
        model: the network (never changed).
        loss_fn: ``loss_fn(outputs, targets)``.
        data: ``(x, y)`` or batches (keep it small: every redraw evaluates resolution^2 points).
        seed, normalize, span, resolution: initial values of the controls.
        max_resolution: the largest grid the resolution slider allows.

    Returns:
        An `explorer` with controls ``seed`` (direction seed), ``normalize`` (``"filter"`` or
        ``"none"``), ``span`` and ``resolution`` (points per axis, odd so that the model itself
        is the centre); its state holds ``center_loss``, ``min_loss``, ``max_loss``,
        ``losses`` (the grid, a (resolution, resolution) tensor) and the control values.
    """
    fn = "landscape_explorer"
    check_module(model, fn)
    check_loss_fn(loss_fn, fn)
    batches = data_batches(data, fn, model_device(model))
    seed = check_int(seed, "seed", fn, minimum=0)
    span = check_float(span, "span", fn, positive=True)
    resolution = check_int(resolution, "resolution", fn, minimum=3)
    max_resolution = check_int(max_resolution, "max_resolution", fn, minimum=resolution)
    if normalize not in ("filter", "none"):
        raise ValueError(f"{fn}: `normalize` must be one of 'filter', 'none', got {normalize!r}")

    def render(values):
        n = values["resolution"] | 1  # odd: the grid contains the model itself
        grid = torch.linspace(-values["span"], values["span"], n)
        d1 = random_direction(model, 2 * values["seed"], values["normalize"])
        d2 = random_direction(model, 2 * values["seed"] + 1, values["normalize"])
        losses = slice_2d(model, d1, d2, loss_fn, batches, grid, grid, progress=False)
        title = f"{values['normalize']}-normalised directions, seed {values['seed']}"
        fig = plot_loss_contour(grid, grid, losses, title=title)
        state = {"center_loss": float(losses[n // 2, n // 2]), "min_loss": float(losses.min()),
                 "max_loss": float(losses.max()), "losses": losses, "resolution": n,
                 "span": values["span"], "seed": values["seed"],
                 "normalize": values["normalize"]}
        return fig, state

    controls = {
        "seed": W.IntSlider(value=seed, min=0, max=max(20, seed), description="direction seed",
                            continuous_update=False),
        "normalize": W.Dropdown(options=["filter", "none"], value=normalize,
                                description="normalise"),
        "span": W.FloatSlider(value=span, min=0.05, max=max(3.0, span), step=0.05,
                              description="span", continuous_update=False),
        "resolution": W.IntSlider(value=resolution | 1, min=3, max=max_resolution | 1, step=2,
                                  description="resolution", continuous_update=False),
    }
    return explorer(controls, render, title="A random 2-D slice of the loss landscape")
