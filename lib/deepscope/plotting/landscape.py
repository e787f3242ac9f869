"""Figures of the landscape chapter: 1-D curves, contour and surface plots of 2-D slices,
Hessian spectra, sharpness along training, and losses along paths between solutions."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = [
    "plot_slice_1d",
    "plot_loss_contour",
    "plot_loss_surface",
    "plot_spectrum",
    "plot_sharpness_history",
    "plot_path_losses",
]


def _np(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=float)


def _axes(ax, figsize, **kw):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, **kw)
        return fig, ax
    return ax.figure, ax


def plot_slice_1d(alphas, losses, *, ax=None, label=None, xlabel="alpha", ylabel="loss",
                  log=False, **style):
    """Plot loss curves along a line: ``losses`` (n,) or a dict label -> (n,) against
    ``alphas`` (n,); return the figure."""
    fig, ax = _axes(ax, (5.0, 3.4))
    curves = losses if isinstance(losses, dict) else {label: losses}
    x = _np(alphas)
    for name, values in curves.items():
        values = _np(values)
        if values.shape != x.shape:
            raise ValueError(f"plot_slice_1d: expected losses of shape {x.shape} like `alphas`, "
                             f"got {values.shape}")
        ax.plot(x, values, label=name, **style)
    ax.set(xlabel=xlabel, ylabel=ylabel, yscale="log" if log else "linear")
    if any(name is not None for name in curves):
        ax.legend()
    return fig


def plot_loss_contour(xs, ys, losses, *, ax=None, levels=20, log=True, filled=True,
                      trajectory=None, title=None, colorbar=True):
    """Draw a 2-D slice as a contour plot (Li et al. 2018, Figure 5); return the figure.

    Args:
        xs, ys: grid coordinates (n,) and (m,).
        losses: (m, n) losses, entry [i, j] at (xs[j], ys[i]) (`slice_2d`'s layout).
        levels: number of contour levels (or explicit levels).
        log: contour log10(loss) (resolves the basin and the walls together).
        filled: filled contours with line contours on top.
        trajectory: optional (T, 2) coordinates of a path to draw (e.g. `trajectory_pca`).
        title: the axes' title.
        colorbar: add a colorbar.
    """
    x, y, z = _np(xs), _np(ys), _np(losses)
    if z.shape != (len(y), len(x)):
        raise ValueError(f"plot_loss_contour: expected losses of shape (len(ys), len(xs)) = "
                         f"{(len(y), len(x))}, got {z.shape}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"plot_loss_contour: a contour needs at least 2 points per axis, "
                         f"got {len(x)} x {len(y)}")
    fig, ax = _axes(ax, (4.6, 3.8))
    values = np.log10(np.maximum(z, 1e-12)) if log else z
    if filled:
        filled_set = ax.contourf(x, y, values, levels=levels, cmap="viridis")
        ax.contour(x, y, values, levels=filled_set.levels, colors="k", linewidths=0.3)
        if colorbar:
            fig.colorbar(filled_set, ax=ax, label="log10 loss" if log else "loss")
    else:
        lines = ax.contour(x, y, values, levels=levels, cmap="viridis")
        ax.clabel(lines, fontsize=7)
    if trajectory is not None:
        path = _np(trajectory)
        ax.plot(path[:, 0], path[:, 1], "o-", color="tab:red", ms=3, lw=1, label="trajectory")
        ax.legend(loc="upper right")
    ax.plot([0], [0], "*", color="white", mec="k", ms=10)
    ax.set(xlabel="direction 1", ylabel="direction 2", title=title)
    ax.grid(False)
    return fig


def plot_loss_surface(xs, ys, losses, *, ax=None, log=False, title=None):
    """Draw a 2-D slice as a 3-D surface; return the figure."""
    x, y, z = _np(xs), _np(ys), _np(losses)
    if z.shape != (len(y), len(x)):
        raise ValueError(f"plot_loss_surface: expected losses of shape (len(ys), len(xs)) = "
                         f"{(len(y), len(x))}, got {z.shape}")
    if ax is None:
        fig = plt.figure(figsize=(5.0, 4.0))
        ax = fig.add_subplot(projection="3d")
    fig = ax.figure
    X, Y = np.meshgrid(x, y)
    ax.plot_surface(X, Y, np.log10(np.maximum(z, 1e-12)) if log else z, cmap="viridis",
                    linewidth=0, antialiased=True)
    ax.set(xlabel="direction 1", ylabel="direction 2", zlabel="log10 loss" if log else "loss",
           title=title)
    return fig


def plot_spectrum(eigenvalues=None, *, density=None, ax=None, bins=80, sigma=None,
                  mark=None, log=True, floor=1e-5):
    """Plot a Hessian spectrum: a histogram of exact ``eigenvalues`` and/or the smoothed SLQ
    ``density`` (a `SpectralDensity`); ``mark`` draws vertical lines (e.g. top eigenvalues).

    On the log axis (``log``) the y range starts at ``floor`` times the highest density: the
    Gaussian tails of the smoothed density fall to 1e-100 and below, which would squash the
    part worth seeing (the bulk and the outliers' bumps) into the top of the figure; None keeps
    matplotlib's range. Return the figure."""
    if eigenvalues is None and density is None:
        raise ValueError("plot_spectrum: pass `eigenvalues`, `density` or both, got neither")
    fig, ax = _axes(ax, (5.4, 3.4))
    if eigenvalues is not None:
        values = _np(eigenvalues)
        ax.hist(values, bins=bins, density=True, alpha=0.5, color="tab:gray",
                label=f"exact ({len(values)} eigenvalues)")
    if density is not None:
        grid, values = density.density(sigma=sigma)
        ax.plot(_np(grid), _np(values), color="tab:blue", label="SLQ density")
    for value in [] if mark is None else _np(mark).ravel():
        ax.axvline(value, color="tab:red", lw=0.8, alpha=0.7)
    ax.set(xlabel="eigenvalue", ylabel="density", yscale="log" if log else "linear")
    if log and floor is not None:
        top = ax.get_ylim()[1]
        heights = [float(np.max(_np(line.get_ydata()))) for line in ax.lines
                   if len(line.get_ydata()) > 2]
        heights += [float(patch.get_height()) for patch in ax.patches]
        if heights:
            top = max(heights) * 2
        ax.set_ylim(floor * top / 2, top)
    ax.legend()
    return fig


def plot_sharpness_history(histories, *, ax=None, time: bool = False, relative: bool = False,
                           threshold: bool = True):
    """Plot sharpness (top Hessian eigenvalue) and loss along gradient descent for one or more
    `SharpnessHistory` (a list or a dict label -> history), with each run's 2/eta dashed.

    ``time=True`` puts eta * t on the x axis instead of the step t, so runs with different step
    sizes (e.g. gradient descent and a small-step gradient-flow control) are compared at the
    same point of the flow. ``relative=True`` plots eta * sharpness / 2, for which the stability
    threshold of every run is 1 (Cohen et al. 2021 plot it so). ``threshold=False`` leaves out a
    run's dashed 2/eta line (e.g. for a control whose own threshold is off the chart).
    Return the figure."""
    if not isinstance(histories, (list, tuple, dict)):
        histories = [histories]
    items = histories.items() if isinstance(histories, dict) else \
        [(f"lr = {h.lr:g}", h) for h in histories]
    if ax is None:
        fig, (ax_s, ax_l) = plt.subplots(1, 2, figsize=(9.5, 3.4))
    else:
        fig, ax_s, ax_l = ax.figure, ax, None
    for i, (label, h) in enumerate(items):
        color = f"C{i}"
        scale_x = h.lr if time else 1.0
        scale_y = h.lr / 2 if relative else 1.0
        ax_s.plot(np.asarray(h.sharpness_step) * scale_x, np.asarray(h.sharpness) * scale_y,
                  color=color, label=label)
        if threshold and not relative:
            ax_s.axhline(h.threshold, color=color, ls="--", lw=0.8)
        if ax_l is not None:
            ax_l.plot(np.asarray(h.step) * scale_x, h.loss, color=color, label=label)
    if relative:
        ax_s.axhline(1.0, color="k", ls="--", lw=0.8)
    xlabel = "eta * t" if time else "step"
    ax_s.set(xlabel=xlabel, ylabel="eta * sharpness / 2" if relative else
             "sharpness (top eigenvalue)", title="dashed: stability threshold" if relative
             else "dashed: 2 / lr")
    ax_s.legend(fontsize=8)
    if ax_l is not None:
        ax_l.set(xlabel=xlabel, ylabel="training loss", yscale="log")
    fig.tight_layout()
    return fig


def plot_path_losses(ts, losses, *, ax=None, ylabel="loss", log=False):
    """Plot losses along paths between two solutions: ``losses`` a dict label -> (n,) at
    ``ts`` (n,) from 0 to 1. Return the figure."""
    if not isinstance(losses, dict):
        losses = {None: losses}
    fig = plot_slice_1d(ts, losses, ax=ax, xlabel="t (0: solution A, 1: solution B)",
                        ylabel=ylabel, log=log, marker=".")
    return fig
