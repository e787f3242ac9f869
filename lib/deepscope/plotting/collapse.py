"""Figures of the collapse chapter: the four-panel NC1-NC4 figure of Papyan, Han & Donoho (2020)
and class means (with features and classifier rows) in the plane of the simplex ETF or of PCA."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["plot_collapse", "project_means", "plot_class_means", "plot_snapshot"]


def _series(history):
    """Return (x, label, metrics list, train error or None) of a CollapseHistory or UFMResult."""
    if hasattr(history, "epoch") and hasattr(history, "metrics"):
        return list(history.epoch), "epoch", list(history.metrics), list(history.train_error)
    if hasattr(history, "steps") and hasattr(history, "history"):
        return list(history.steps), "step", list(history.history), None
    raise TypeError(
        "plot_collapse: `history` must be a collapse.CollapseHistory (tracker.history) or a "
        f"collapse.UFMResult, got {type(history).__name__}"
    )


def plot_collapse(history, *, axes=None, label: str | None = None, logx: bool = True):
    """Draw the four panels of neural collapse against training time (Papyan et al. 2020,
    Figures 2-7 condensed): NC1 (log scale), NC2 (distance of the normalised Gram of the means
    and of the classifier to the simplex ETF, and equinorm), NC3 (self-duality) and NC4 (the
    classifier vs nearest-class-centre mismatch, with the training error).

    Args:
        history: a `deepscope.collapse.CollapseHistory` (``tracker.history``) or a
            `deepscope.collapse.UFMResult` recorded with ``record_every``.
        axes: four matplotlib axes to draw into (e.g. to overlay two runs); new ones if None.
        label: a legend label prefix for this run (when overlaying runs).
        logx: logarithmic time axis (the terminal phase is long).

    Returns:
        The figure. A dotted vertical line marks the first epoch with zero training error.
    """
    x, xlabel, metrics, error = _series(history)
    if not metrics:
        raise ValueError("plot_collapse: `history` holds no measurements yet")
    if axes is None:
        fig, axes = plt.subplots(1, 4, figsize=(13, 3.2))
    else:
        axes = list(np.ravel(axes))
        if len(axes) != 4:
            raise ValueError(f"plot_collapse: `axes` must be 4 axes, got {len(axes)}")
        fig = axes[0].figure
    prefix = f"{label}: " if label else ""

    def series(name):
        return [getattr(m, name) for m in metrics]

    ax1, ax2, ax3, ax4 = axes
    ax1.plot(x, series("nc1"), label=f"{prefix}NC1")
    ax1.set(yscale="log", title=r"NC1: Tr$(\Sigma_W\Sigma_B^+)/C$")
    ax2.plot(x, series("etf_distance_means"), label=f"{prefix}means: ETF distance")
    ax2.plot(x, series("etf_distance_weights"), label=f"{prefix}classifier: ETF distance")
    ax2.plot(x, series("equinorm_means"), ls="--", label=f"{prefix}means: std/mean of norms")
    ax2.set(title="NC2: simplex ETF")
    ax3.plot(x, series("self_duality"), label=f"{prefix}NC3")
    ax3.set(title=r"NC3: $\|W/\|W\| - \tilde M/\|\tilde M\|\|$")
    ax4.plot(x, series("ncc_mismatch"), label=f"{prefix}NC4 mismatch")
    if error is not None:
        ax4.plot(x, error, ls="--", label=f"{prefix}training error")
    ax4.set(title="NC4: classifier vs nearest centre")
    zero = next((e for e, err in zip(x, error or []) if err == 0), None)
    for ax in axes:
        ax.set_xlabel(xlabel)
        if logx and min(x) > 0:
            ax.set_xscale("log")
        if zero is not None:
            ax.axvline(zero, color="gray", ls=":", lw=1)
    for ax in (ax2, ax4):
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _as_tensor(value, name: str):
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"plot_class_means: `{name}` must be a tensor, got {type(value).__name__}")
    return value.detach().cpu().double()


def project_means(means, global_mean=None, *, plane: str = "etf"):
    """Return the (dim, 2) basis of the plane to draw class means in and the centre used.

    Args:
        means: class means (C, dim).
        global_mean: the point at the origin of the plot (default: the average of the means).
        plane: ``"etf"`` (the plane in which a simplex ETF is a regular C-gon, in class order;
            `deepscope.collapse.etf_plane`) or ``"pca"`` (the top two principal directions of
            the centred means).

    Returns:
        ``(basis, centre)``: a float64 (dim, 2) tensor and a (dim,) tensor.
    """
    from ..collapse import etf_plane

    means = _as_tensor(means, "means")
    if means is None or means.dim() != 2 or means.shape[0] < 2:
        shape = None if means is None else tuple(means.shape)
        raise ValueError(f"project_means: `means` must have shape (C >= 2, dim), got {shape}")
    centre = means.mean(0) if global_mean is None else _as_tensor(global_mean, "global_mean")
    if plane == "etf":
        return etf_plane(means - centre), centre
    if plane == "pca":
        _, _, vh = torch.linalg.svd(means - centre, full_matrices=False)
        basis = torch.zeros(means.shape[1], 2, dtype=means.dtype)
        k = min(2, vh.shape[0])
        basis[:, :k] = vh[:k].T
        return basis, centre
    raise ValueError(f"project_means: `plane` must be 'etf' or 'pca', got {plane!r}")


def plot_class_means(means, global_mean=None, *, weight=None, features=None, labels=None,
                     plane: str = "etf", ax=None, title: str | None = None, ideal: bool = True):
    """Draw class means (big dots), optional features (small dots) and classifier rows (arrows)
    projected on a plane: the ETF plane, where collapsed means form a regular polygon, or PCA.

    Args:
        means: class means (C, dim); global_mean: the origin (default: the mean of the means).
        weight: classifier rows (C, dim), drawn as arrows from the origin, rescaled so their
            average length is that of the centred means (NC3 compares directions, not scale).
        features, labels: samples (n, dim) and their labels (n,), drawn faintly.
        plane: ``"etf"`` or ``"pca"`` (see `project_means`).
        ax: the axes to draw into (a new figure if None).
        title: the axes title.
        ideal: draw the regular C-gon a simplex ETF would give (ETF plane only).

    Returns:
        The figure.
    """
    means = _as_tensor(means, "means")
    basis, centre = project_means(means, global_mean, plane=plane)
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 4.2))
    else:
        fig = ax.figure
    c = means.shape[0]
    colors = plt.get_cmap("tab10" if c <= 10 else "tab20")(np.arange(c) % 20)
    projected = ((means - centre) @ basis).numpy()
    scale = float(np.linalg.norm(projected, axis=1).mean()) or 1.0
    if features is not None:
        features = _as_tensor(features, "features")
        labels = _as_tensor(labels, "labels")
        if labels is None or len(labels) != len(features):
            raise ValueError("plot_class_means: `features` need `labels` of the same length")
        points = ((features - centre) @ basis).numpy()
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.35,
                   c=colors[labels.long().numpy()], linewidths=0)
    if ideal and plane == "etf" and c >= 3:
        radius = float(np.linalg.norm((means - centre).numpy(), axis=1).mean())
        angles = 2 * math.pi * np.arange(c + 1) / c
        # a simplex ETF of radius |mu~| projects to a regular C-gon of radius |mu~| sqrt(2/(C-1))
        r = radius * math.sqrt(2 / (c - 1))
        ax.plot(r * np.cos(angles), r * np.sin(angles), color="gray", ls=":", lw=1,
                label="simplex ETF")
    if weight is not None:
        w = _as_tensor(weight, "weight")
        if w.shape != means.shape:
            raise ValueError(f"plot_class_means: `weight` must have shape {tuple(means.shape)}, "
                             f"got {tuple(w.shape)}")
        w = w / w.norm(dim=1).mean() * (means - centre).norm(dim=1).mean()
        arrows = (w @ basis).numpy()
        for k in range(c):
            ax.annotate("", xy=arrows[k], xytext=(0, 0),
                        arrowprops=dict(arrowstyle="->", color=colors[k], lw=1.2))
    ax.scatter(projected[:, 0], projected[:, 1], s=70, c=colors, edgecolors="black", zorder=3)
    for k in range(c):
        ax.annotate(str(k), projected[k], textcoords="offset points", xytext=(5, 5), fontsize=8)
    lim = 1.35 * max(scale, float(np.abs(projected).max()) if projected.size else 1.0)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal",
           title=title or f"class means ({plane.upper()} plane)")
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def plot_snapshot(snapshot, *, plane: str = "etf", ax=None, title: str | None = None):
    """Draw a `deepscope.collapse.Snapshot` (one epoch of a tracker) with `plot_class_means`:
    its class means, kept features and classifier rows. Returns the figure."""
    return plot_class_means(
        snapshot.means, snapshot.global_mean, weight=snapshot.weight,
        features=snapshot.features if len(snapshot.features) else None,
        labels=snapshot.labels if len(snapshot.labels) else None,
        plane=plane, ax=ax, title=title or f"epoch {snapshot.epoch}",
    )
