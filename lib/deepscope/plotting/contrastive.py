"""Figures of the contrastive chapter: embeddings on the circle and the sphere, the
alignment-uniformity plane, embedding spectra, and the forces InfoNCE puts on each point."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = [
    "plot_circle",
    "plot_angle_density",
    "plot_sphere",
    "plot_alignment_uniformity",
    "plot_embedding_spectrum",
    "plot_anchor_gradients",
]


def _unit_rows(z, dim: int, fn: str) -> np.ndarray:
    if isinstance(z, torch.Tensor):
        z = z.detach().cpu().double().numpy()
    z = np.asarray(z, dtype=float)
    if z.ndim != 2 or z.shape[1] != dim:
        raise ValueError(f"{fn}: `z` must have shape (N, {dim}), got {tuple(z.shape)}")
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def _labels(labels, n: int, fn: str):
    if labels is None:
        return None
    labels = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if labels.shape != (n,):
        raise ValueError(f"{fn}: `labels` must have shape ({n},), got {tuple(labels.shape)}")
    return labels


def _colours(labels) -> dict:
    if labels is None:
        return {"color": "tab:blue"}
    return {"c": labels % 10, "cmap": "tab10", "vmin": 0, "vmax": 9}


def _axes(ax, projection=None, figsize=(4.2, 4.2)):
    if ax is not None:
        return ax.figure, ax
    fig = plt.figure(figsize=figsize)
    return fig, fig.add_subplot(projection=projection)


def plot_circle(z, labels=None, *, ax=None, title: str | None = None, jitter: float = 0.04):
    """Draw 2-D embeddings, L2-normalised, on the unit circle, coloured by label.

    Points are drawn at radius 1 + a small label-dependent offset (``jitter``) so that classes
    sharing an arc stay visible. Shapes: z (N, 2), labels (N,) or None. Returns the figure.
    """
    fn = "plot_circle"
    u = _unit_rows(z, 2, fn)
    labels = _labels(labels, len(u), fn)
    fig, ax = _axes(ax)
    theta = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(theta), np.sin(theta), color="0.8", lw=1)
    radius = 1 + (jitter * (labels - labels.min()) / max(np.ptp(labels), 1)
                  if labels is not None else 0)
    points = u * np.reshape(radius, (-1, 1)) if labels is not None else u
    ax.scatter(points[:, 0], points[:, 1], s=8, alpha=0.7, **_colours(labels))
    ax.set(aspect="equal", title=title or "embeddings on the circle")
    ax.set_axis_off()
    return fig


def plot_angle_density(z, labels, *, ax=None, bins: int = 36, title: str | None = None):
    """Draw, per class, the histogram of the angles of 2-D embeddings (Wang & Isola 2020, fig. 3):
    uniform features give flat totals, aligned ones narrow per-class peaks. Returns the figure."""
    fn = "plot_angle_density"
    u = _unit_rows(z, 2, fn)
    labels = _labels(labels, len(u), fn)
    fig, ax = _axes(ax, figsize=(6, 3))
    angles = np.arctan2(u[:, 1], u[:, 0])
    edges = np.linspace(-np.pi, np.pi, bins + 1)
    cmap = plt.get_cmap("tab10")
    for c in np.unique(labels):
        ax.hist(angles[labels == c], bins=edges, histtype="step", color=cmap(int(c) % 10),
                label=str(c))
    ax.hist(angles, bins=edges, color="0.85", zorder=0, label="all")
    ax.set(xlabel="angle (radians)", ylabel="count", xlim=(-np.pi, np.pi),
           title=title or "angles of the embeddings per class")
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot_sphere(z, labels=None, *, ax=None, title: str | None = None):
    """Draw 3-D embeddings, L2-normalised, on the unit sphere (a 3-D scatter over a wireframe),
    coloured by label. Shapes: z (N, 3), labels (N,) or None. Returns the figure."""
    fn = "plot_sphere"
    u = _unit_rows(z, 3, fn)
    labels = _labels(labels, len(u), fn)
    fig, ax = _axes(ax, projection="3d")
    a, b = np.meshgrid(np.linspace(0, 2 * np.pi, 25), np.linspace(0, np.pi, 13))
    ax.plot_wireframe(np.cos(a) * np.sin(b), np.sin(a) * np.sin(b), np.cos(b), color="0.85",
                      lw=0.5)
    ax.scatter(u[:, 0], u[:, 1], u[:, 2], s=6, alpha=0.8, **_colours(labels))
    ax.set(xticks=[], yticks=[], zticks=[], title=title or "embeddings on the sphere")
    ax.set_box_aspect((1, 1, 1))
    return fig


def plot_alignment_uniformity(runs: Mapping, *, ax=None, title: str | None = None):
    """Draw runs in the alignment-uniformity plane (Wang & Isola 2020, fig. 5): x the uniformity
    loss, y the alignment loss, lower-left is better.

    Args:
        runs: name -> (alignment, uniformity), each a number (a point) or a sequence (a
            trajectory over training, drawn as a line from a hollow start to a filled end).

    Returns:
        The figure.
    """
    if not isinstance(runs, Mapping) or not runs:
        raise ValueError("plot_alignment_uniformity: `runs` must be a non-empty mapping name -> "
                         f"(alignment, uniformity), got {runs!r}")
    fig, ax = _axes(ax, figsize=(5, 4))
    for name, (align, unif) in runs.items():
        align, unif = np.atleast_1d(align).astype(float), np.atleast_1d(unif).astype(float)
        if align.shape != unif.shape:
            raise ValueError(f"plot_alignment_uniformity: run {name!r} has {align.size} "
                             f"alignment values but {unif.size} uniformity values")
        line = ax.plot(unif, align, marker="o" if align.size == 1 else None, label=name)[0]
        if align.size > 1:
            ax.plot(unif[0], align[0], "o", mfc="white", color=line.get_color())
            ax.plot(unif[-1], align[-1], "o", color=line.get_color())
    ax.set(xlabel=r"uniformity loss  $\log\,E\,e^{-2\|f(x)-f(y)\|^2}$",
           ylabel=r"alignment loss  $E\,\|f(x)-f(x^+)\|^2$",
           title=title or "alignment vs uniformity (lower-left is better)")
    ax.legend(fontsize=8)
    return fig


def plot_embedding_spectrum(spectra: Mapping, *, ax=None, floor: float = 1e-12,
                            title: str | None = None):
    """Draw embedding spectra (e.g. `singular_spectrum`) on a log scale, largest first (Jing et
    al. 2022, fig. 2). ``spectra``: name -> 1-D values; values below ``floor`` are drawn at it.
    Returns the figure."""
    if not isinstance(spectra, Mapping) or not spectra:
        raise ValueError("plot_embedding_spectrum: `spectra` must be a non-empty mapping name -> "
                         f"values, got {spectra!r}")
    fig, ax = _axes(ax, figsize=(5, 3.5))
    for name, values in spectra.items():
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().double().numpy()
        values = np.sort(np.asarray(values, dtype=float).ravel())[::-1]
        ax.plot(np.arange(1, values.size + 1), np.maximum(values, floor), label=name)
    ax.set(yscale="log", xlabel="singular value rank", ylabel="singular value",
           title=title or "spectrum of the embedding covariance")
    ax.legend(fontsize=8)
    return fig


def _tangent(points: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    return vectors - (vectors * points).sum(1, keepdims=True) * points


def plot_anchor_gradients(anchor, positive, negatives, result, *, title: str | None = None):
    """Draw the toy of the temperature notebook: an anchor, its positive and negatives on the
    circle, each negative coloured by its weight softmax(s/tau), with arrows showing where
    gradient descent moves each point (minus the gradient, projected on the circle's tangent);
    and beside it the weights against each negative's angle from the anchor.

    Args:
        anchor, positive: (2,) unit vectors; negatives: (K, 2) unit vectors.
        result: the `deepscope.contrastive.AnchorGradients` of these points.

    Returns:
        The figure (two axes).
    """
    to_np = lambda t: t.detach().cpu().double().numpy()  # noqa: E731
    u, v, neg = to_np(anchor), to_np(positive), to_np(negatives)
    if u.shape != (2,) or neg.ndim != 2 or neg.shape[1] != 2:
        raise ValueError("plot_anchor_gradients: expected 2-D points (anchor (2,), negatives "
                         f"(K, 2)), got {u.shape} and {neg.shape}")
    weights = to_np(result.weights)
    fig, (ax, ax_w) = plt.subplots(1, 2, figsize=(9, 4))
    theta = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(theta), np.sin(theta), color="0.85", lw=1)
    move_neg = _tangent(neg, -to_np(result.grad_negatives))
    move_pos = _tangent(v[None], -to_np(result.grad_positive)[None])[0]
    scale = 0.5 / max(np.linalg.norm(move_neg, axis=1).max(), np.linalg.norm(move_pos), 1e-12)
    points = ax.scatter(neg[:, 0], neg[:, 1], c=weights, cmap="magma_r", s=40, vmin=0,
                        vmax=max(weights.max(), 1e-12), edgecolors="0.3", zorder=3)
    ax.quiver(neg[:, 0], neg[:, 1], move_neg[:, 0] * scale, move_neg[:, 1] * scale,
              angles="xy", scale_units="xy", scale=1, color="tab:red", width=0.005, zorder=5)
    ax.quiver([v[0]], [v[1]], [move_pos[0] * scale], [move_pos[1] * scale], angles="xy",
              scale_units="xy", scale=1, color="tab:green", width=0.006, zorder=5)
    ax.scatter([u[0]], [u[1]], marker="*", s=250, color="tab:blue", zorder=4, label="anchor")
    ax.scatter([v[0]], [v[1]], marker="o", s=80, color="tab:green", zorder=4, label="positive")
    fig.colorbar(points, ax=ax, shrink=0.7, label="weight softmax(s/τ)")
    ax.set(aspect="equal", xticks=[], yticks=[], xlim=(-1.6, 1.6), ylim=(-1.6, 1.6),
           title="arrows: -gradient (tangential)")
    ax.legend(loc="lower left", fontsize=8)
    angle = np.degrees(np.arccos(np.clip(neg @ u, -1, 1)))
    order = np.argsort(angle)
    ax_w.plot(angle[order], weights[order], "o-", color="tab:red", ms=4)
    ax_w.axhline(1 / len(weights), color="0.6", ls="--", label="uniform 1/K")
    ax_w.set(xlabel="angle between negative and anchor (degrees)", ylabel="weight", xlim=(0, 180),
             title="which negatives the loss pushes")
    ax_w.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
