"""Figures of the saliency chapter: attribution overlays, method-by-image grids, randomization
and removal curves."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .core import to_numpy_image

__all__ = ["attribution_overlay", "show_attributions", "plot_randomization",
           "plot_removal_curves"]


def _map2d(attribution) -> np.ndarray:
    """(C, H, W), (1, H, W) or (H, W) attribution -> (H, W) numpy, channels summed."""
    if isinstance(attribution, torch.Tensor):
        attribution = attribution.detach().cpu().double().numpy()
    a = np.asarray(attribution, dtype=float)
    if a.ndim == 3:
        a = a.sum(0)
    if a.ndim != 2:
        raise ValueError(f"attribution_overlay: expected an attribution of shape (H, W) or "
                         f"(C, H, W), got {a.shape}")
    return a


def attribution_overlay(image, attribution, *, ax=None, signed: bool = True, alpha: float = 0.6,
                        title: str | None = None, box=None):
    """Draw an attribution map with the image's outline (grey images) or over the image (colour
    images); return the axes.

    Args:
        image: (C, H, W) or (H, W) tensor/array; a grey image is drawn as the contour of its
            ink at half its range, so the map's colours stay readable.
        attribution: (C, H, W) (channels summed) or (H, W) map of the same height and width.
        ax: axes to draw on (default: a new figure).
        signed: diverging red/blue colours symmetric around 0 (red = evidence for the target);
            else a sequential map from the minimum (use for |gradient| or Grad-CAM).
        alpha: opacity of the map over a colour image.
        title: axes title.
        box: optional ground-truth box (top, left, bottom, right), drawn in green.
    """
    a = _map2d(attribution)
    img = to_numpy_image(image)
    if img.shape[:2] != a.shape:
        raise ValueError(f"attribution_overlay: image {img.shape[:2]} and attribution "
                         f"{a.shape} must have the same height and width")
    if ax is None:
        _, ax = plt.subplots(figsize=(2.4, 2.4))
    grey = img.ndim == 2
    if not grey:  # colour images: blend the map over the picture
        ax.imshow(img)
    opacity = 1.0 if grey else alpha
    if signed:
        limit = float(np.abs(a).max()) or 1.0
        ax.imshow(a, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=opacity)
    else:
        ax.imshow(a, cmap="magma", alpha=opacity)
    if grey and img.max() > img.min():  # grey images: the ink as a contour over the map
        level = img.min() + 0.5 * (img.max() - img.min())
        ax.contour(img, levels=[level], colors="k" if signed else "w", linewidths=0.8)
    if box is not None:
        top, left, bottom, right = (int(v) for v in box)
        ax.add_patch(plt.Rectangle((left - 0.5, top - 0.5), right - left, bottom - top,
                                   fill=False, color="tab:green", lw=1.5))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if title:
        ax.set_title(title, fontsize=8)
    return ax


def show_attributions(images, maps: dict, *, titles=None, signed=True, boxes=None,
                      size: float = 1.5):
    """Draw a grid: one row per image, its picture first, then one column per method.

    Args:
        images: (N, C, H, W) images.
        maps: method name -> attributions (N, C, H, W) or maps (N, H, W).
        titles: optional row labels (one per image), shown on the image column.
        signed: bool for every method, or a dict name -> bool (see `attribution_overlay`).
        boxes: optional (N, 4) ground-truth boxes drawn on every panel.

    Returns:
        The figure.
    """
    n = len(images)
    if not maps:
        raise ValueError("show_attributions: `maps` must hold at least one method, got none")
    for name, value in maps.items():
        if len(value) != n:
            raise ValueError(f"show_attributions: maps[{name!r}] has {len(value)} entries for "
                             f"{n} images")
    fig, axes = plt.subplots(n, len(maps) + 1, figsize=(size * (len(maps) + 1), size * n + 0.3),
                             squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(to_numpy_image(images[i]), cmap="gray_r")
        axes[i, 0].set_xticks([])
        axes[i, 0].set_yticks([])
        axes[i, 0].grid(False)
        if titles is not None:
            axes[i, 0].set_ylabel(str(titles[i]), fontsize=8)
        for j, (name, value) in enumerate(maps.items(), start=1):
            sign = signed.get(name, True) if isinstance(signed, dict) else signed
            attribution_overlay(images[i], value[i], ax=axes[i, j], signed=sign,
                                title=name if i == 0 else None,
                                box=None if boxes is None else boxes[i])
    axes[0, 0].set_title("input", fontsize=8)
    fig.tight_layout()
    return fig


def plot_randomization(results: dict, *, ax=None):
    """Plot mean rank correlation (with the 10-90% band over images) against the number of layers
    randomized, one line per method; ``results`` maps a method name to a
    `deepscope.saliency.RandomizationResult`. Return the figure.

    A correlation is undefined (NaN) when either map is blank (`deepscope.saliency.blank_maps`,
    e.g. a Grad-CAM map zeroed by its ReLU). The mean is over the defined pairs, and the number
    of undefined ones is written beside each point and in the legend, so they do not vanish.
    """
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 3.4))
    else:
        fig = ax.figure
    labels = None
    for name, result in results.items():
        corr = result.correlation.double().numpy()  # (L, B)
        steps = np.arange(1, corr.shape[0] + 1)
        centre = np.concatenate([[1.0], np.nanmean(corr, axis=1)])
        low = np.concatenate([[1.0], np.nanpercentile(corr, 10, axis=1)])
        high = np.concatenate([[1.0], np.nanpercentile(corr, 90, axis=1)])
        x = np.concatenate([[0], steps])
        undefined = np.isnan(corr).sum(axis=1)
        label = name if not undefined.any() else f"{name} ({int(undefined.sum())} undefined)"
        line, = ax.plot(x, centre, marker="o", label=label)
        ax.fill_between(x, low, high, alpha=0.2)
        for step, count, value in zip(steps, undefined, centre[1:]):
            if count:
                ax.annotate(f"{int(count)} blank", (step, value), textcoords="offset points",
                            xytext=(4, 4), fontsize=7, color=line.get_color())
        labels = ["original"] + [f"+{layer}" for layer in result.layers]
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, fontsize=8)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set(ylabel="rank correlation with original", ylim=(-0.3, 1.05),
           title="cascading randomization (top layer first)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_removal_curves(fractions, curves: dict, *, ax=None, ylabel: str = "accuracy",
                        title: str | None = None):
    """Plot accuracy against the fraction of pixels removed, one line per ranking (e.g. the
    output of `deepscope.saliency.road` for a map and for a random ranking). Return the figure."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.3))
    else:
        fig = ax.figure
    for name, values in curves.items():
        values = values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
        if len(values) != len(fractions):
            raise ValueError(f"plot_removal_curves: curve {name!r} has {len(values)} points for "
                             f"{len(fractions)} fractions")
        ax.plot(fractions, values, marker="o", label=name)
    ax.set(xlabel="fraction of pixels removed", ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
