"""Figures of the scaling chapter: log-log fits, residuals, sweeps, IsoFLOP profiles and
compute-optimal frontiers. Every function returns the matplotlib figure it drew on."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import LogLocator, NullFormatter

from ..scaling import (
    as_params,
    chinchilla_loss,
    compute_optimal,
    isoflop_loss,
)
from ..scaling._validate import as_array, same_length

__all__ = [
    "plot_power_law", "plot_chinchilla_residuals", "plot_scaling_runs", "plot_isoflop_profiles",
    "plot_compute_optimal",
]


def _axes(ax, figsize=(5.5, 3.8)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def _named(items, fn: str) -> dict:
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    if hasattr(items, "predict"):
        return {"fit": items}
    raise TypeError(f"{fn}: `fits` must be a PowerLawFit or a dict label -> fit, got "
                    f"{type(items).__name__}")


def plot_power_law(x, y, fits=None, *, ax=None, x_range=None, title=None):
    """Scatter (x, y) on log-log axes and draw fitted power laws c + a x^-b over them.

    Args:
        x, y: positive arrays (n,).
        fits: a `PowerLawFit`, or a dict label -> `PowerLawFit` (each drawn with its c dotted).
        ax: axes to draw on (default: a new figure).
        x_range: (low, high) of the curves (default: the data's range).
    """
    fn = "plot_power_law"
    x, y = as_array(x, "x", fn), as_array(y, "y", fn)
    same_length(fn, x=x, y=y)
    fig, ax = _axes(ax)
    ax.scatter(x, y, s=14, color="black", alpha=0.6, label="data", zorder=3)
    low, high = x_range if x_range is not None else (x.min(), x.max())
    grid = np.geomspace(low, high, 200)
    for i, (label, fit) in enumerate(_named(fits, fn).items()):
        color = f"C{i}"
        ax.plot(grid, fit.predict(grid), color=color,
                label=f"{label}: b = {fit.b:.3f}" + (f", c = {fit.c:.3g}" if fit.c else ""))
        if fit.c > 0:
            ax.axhline(fit.c, color=color, ls=":", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="x", ylabel="L")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def plot_chinchilla_residuals(N, D, loss, params, *, ax=None):
    """Plot log-residuals log L_pred - log L_obs against N for each parameter set.

    Args:
        N, D, loss: positive arrays (n,).
        params: dict label -> parameters (anything `as_params` accepts).
    """
    fn = "plot_chinchilla_residuals"
    N, D, loss = as_array(N, "N", fn), as_array(D, "D", fn), as_array(loss, "loss", fn)
    same_length(fn, N=N, D=D, loss=loss)
    fig, ax = _axes(ax)
    for i, (label, p) in enumerate(dict(params).items()):
        residual = np.log(chinchilla_loss(N, D, as_params(p, fn))) - np.log(loss)
        ax.scatter(N, residual, s=10, alpha=0.6, color=f"C{i}",
                   label=f"{label}: median |r| = {np.median(np.abs(residual)):.4f}")
    ax.axhline(0, color="black", lw=1)
    ax.set(xscale="log", xlabel="parameters N", ylabel="log L_pred − log L_obs")
    ax.legend(fontsize=8)
    return fig


def plot_scaling_runs(N, D, loss, *, law=None, entropy=None, ax=None):
    """Plot each model size's final loss against its tokens D (one line per N), with the fitted
    law's prediction dashed and the known entropy as a floor.

    Args:
        N, D, loss: arrays (n,) of a sweep (e.g. `deepscope.scaling.markov_sweep`'s output).
        law: parameters of L(N, D) to draw (optional).
        entropy: the irreducible loss to draw as a horizontal line (optional).
    """
    fn = "plot_scaling_runs"
    N, D, loss = as_array(N, "N", fn), as_array(D, "D", fn), as_array(loss, "loss", fn)
    same_length(fn, N=N, D=D, loss=loss)
    fig, ax = _axes(ax)
    sizes = np.unique(N)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(sizes)))
    for color, n in zip(colors, sizes):
        m = N == n
        order = np.argsort(D[m])
        ax.plot(D[m][order], loss[m][order], "o-", color=color, ms=4, label=f"N = {int(n):,}")
        if law is not None:
            grid = np.geomspace(D.min(), D.max(), 100)
            ax.plot(grid, chinchilla_loss(n, grid, law), "--", color=color, lw=1)
    if entropy is not None:
        ax.axhline(entropy, color="black", ls=":", lw=1, label=f"entropy {entropy:.3f}")
    ax.set(xscale="log", xlabel="tokens D", ylabel="loss")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # labels at 1, 2, 5 x 10^k
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot_isoflop_profiles(profiles, *, law=None, ax=None):
    """Draw IsoFLOP profiles: each budget's runs (loss vs N), its parabola in log N and optimum;
    with ``law``, that law's IsoFLOP curve dashed (Hoffmann et al. 2022, Figure 3).

    Args:
        profiles: list of `deepscope.scaling.IsoFLOPProfile`.
        law: parameters of L(N, D) (optional).
    """
    if not profiles:
        raise ValueError("plot_isoflop_profiles: expected at least one profile, got none")
    fig, ax = _axes(ax)
    colors = plt.cm.plasma(np.linspace(0, 0.85, len(profiles)))
    for color, prof in zip(colors, profiles):
        grid = np.geomspace(prof.N.min() / 1.5, prof.N.max() * 1.5, 100)
        ax.scatter(prof.N, prof.loss, color=color, s=18, zorder=3, label=f"C = {prof.C:.1e}")
        ax.plot(grid, prof.predict(grid), color=color, lw=1)
        if np.isfinite(prof.N_opt):
            ax.plot(prof.N_opt, prof.loss_opt, "*", color=color, ms=12, mec="black", zorder=4)
        if law is not None:
            ax.plot(grid, isoflop_loss(grid, prof.C, law), "--", color=color, lw=1, alpha=0.7)
    ax.set(xscale="log", xlabel="parameters N", ylabel="final loss")
    ax.legend(fontsize=7)
    return fig


def plot_compute_optimal(params, C_range=(1e18, 1e26), *, points=None, power_laws=None):
    """Draw the compute-optimal N_opt(C) and tokens per parameter D_opt / N_opt for each law.

    Args:
        params: dict label -> parameters (anything `as_params` accepts).
        C_range: (low, high) training FLOP.
        points: optional dict label -> (C, N) of actual models to mark (e.g. Chinchilla).
        power_laws: optional dict label -> (k, a) of allocation rules N_opt = k C^a drawn
            dashed, with D = C / (6 N) (e.g. Kaplan et al. 2020's N ~ C^0.73).
    """
    fn = "plot_compute_optimal"
    C = np.geomspace(*as_array(C_range, "C_range", fn), 200)
    fig, (ax_n, ax_r) = plt.subplots(1, 2, figsize=(10, 3.8))
    laws = dict(params)
    for i, (label, p) in enumerate(laws.items()):
        opt = compute_optimal(C, as_params(p, fn))
        ax_n.plot(C, opt.N, color=f"C{i}", label=label)
        ax_r.plot(C, opt.tokens_per_parameter, color=f"C{i}", label=label)
    for j, (label, (k, a)) in enumerate(dict(power_laws or {}).items(), start=len(laws)):
        N = float(k) * C ** float(a)
        ax_n.plot(C, N, ls="--", color=f"C{j}", label=label)
        ax_r.plot(C, C / (6 * N) / N, ls="--", color=f"C{j}", label=label)
    for j, (label, (c, n)) in enumerate((points or {}).items()):
        marker = "os^D"[j % 4]
        ax_n.plot(c, n, ls="none", color="black", ms=6, marker=marker, label=label)
        ax_r.plot(c, c / (6 * n) / n, ls="none", color="black", ms=6, marker=marker,
                  label=label)
    ax_n.set(xscale="log", yscale="log", xlabel="training FLOP C", ylabel="N_opt (parameters)")
    ax_r.set(xscale="log", yscale="log", xlabel="training FLOP C", ylabel="tokens per parameter")
    ax_n.legend(fontsize=8)
    fig.tight_layout()
    return fig
