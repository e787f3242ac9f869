"""Explorers of the scaling chapter (factories built on `deepscope.widgets.core.explorer`)."""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np

from ..scaling import EPOCH, HOFFMANN, as_params, chinchilla_loss, compute_optimal, isoflop_loss
from .core import explorer

__all__ = ["compute_budget_explorer"]


def compute_budget_explorer(params=None, *, log10_C: float = 23.77,
                            log10_range: tuple[float, float] = (18.0, 26.0)) -> W.VBox:
    """Explore compute-optimal training: pick a budget C and see, for each law, the IsoFLOP curve
    L(N, C / (6N)), its optimum N_opt, D_opt (6 N D = C) and the predicted loss.

    Args:
        params: dict label -> parameters (anything `deepscope.scaling.as_params` accepts);
            default Epoch AI's refit and Hoffmann et al.'s published constants.
        log10_C: initial budget, log10 of training FLOP (23.77: Chinchilla's 5.88e23).
        log10_range: the slider's (min, max).

    Returns:
        An `explorer` with control ``log10_C``; its state holds ``C`` and dicts label -> value
        ``N_opt``, ``D_opt``, ``loss`` and ``tokens_per_parameter``.
    """
    fn = "compute_budget_explorer"
    laws = {"Epoch AI refit": EPOCH, "Hoffmann et al.": HOFFMANN} if params is None else params
    if not isinstance(laws, dict) or not laws:
        raise TypeError(f"{fn}: `params` must be a non-empty dict label -> parameters, got "
                        f"{type(laws).__name__}")
    laws = {label: as_params(p, fn) for label, p in laws.items()}
    low, high = (float(v) for v in log10_range)
    if not low < high or not low <= log10_C <= high:
        raise ValueError(f"{fn}: need log10_range[0] < log10_range[1] and log10_C inside, got "
                         f"{log10_C} in ({low}, {high})")

    def render(values):
        C = 10.0 ** values["log10_C"]
        state = {"C": C, "N_opt": {}, "D_opt": {}, "loss": {}, "tokens_per_parameter": {}}
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        for i, (label, p) in enumerate(laws.items()):
            opt = compute_optimal(C, p)
            loss = chinchilla_loss(opt.N, opt.D, p)
            grid = opt.N * np.geomspace(1 / 30, 30, 200)
            ax.plot(grid, isoflop_loss(grid, C, p), color=f"C{i}", label=label)
            ax.plot(opt.N, loss, "*", ms=13, color=f"C{i}", mec="black",
                    label=f"N = {opt.N:.3g}, D = {opt.D:.3g} ({opt.D / opt.N:.0f} tok/param)")
            state["N_opt"][label], state["D_opt"][label] = opt.N, opt.D
            state["loss"][label], state["tokens_per_parameter"][label] = loss, opt.D / opt.N
        ax.set(xscale="log", xlabel="parameters N", ylabel="predicted loss",
               title=f"IsoFLOP curves at C = {C:.2e} FLOP")
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig, state

    slider = W.FloatSlider(value=log10_C, min=low, max=high, step=0.05, description="log10 C",
                           continuous_update=False, readout_format=".2f")
    return explorer({"log10_C": slider}, render, title="How should a compute budget be spent?")
