"""Figures shared by every chapter: the book's style, image grids, training curves."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["use_book_style", "show_images", "plot_history", "to_numpy_image"]

BOOK_STYLE = {
    "figure.figsize": (6.0, 4.0),
    "figure.dpi": 100,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "image.cmap": "viridis",
    "font.size": 10,
    "legend.frameon": False,
}


def use_book_style() -> None:
    """Apply the book's matplotlib rcParams (small figures, light grid, no top/right spines)."""
    plt.rcParams.update(BOOK_STYLE)


def to_numpy_image(image) -> np.ndarray:
    """Turn one image (C, H, W), (H, W) tensor or array into an (H, W) or (H, W, C) numpy array."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().float().numpy()
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
    if image.ndim != 2 and not (image.ndim == 3 and image.shape[-1] in (3, 4)):
        raise ValueError(
            f"to_numpy_image: expected an image of shape (H, W), (1, H, W) or (3, H, W), "
            f"got {tuple(image.shape)}"
        )
    return image


def show_images(images, titles=None, *, ncols: int = 8, cmap: str = "gray_r", size: float = 1.2,
                vmin=None, vmax=None):
    """Draw a grid of images (N, C, H, W) or (N, H, W) with optional titles; return the figure."""
    images = list(images)
    if not images:
        raise ValueError("show_images: expected at least one image, got none")
    if titles is not None and len(titles) != len(images):
        raise ValueError(
            f"show_images: got {len(titles)} titles for {len(images)} images; pass one per image"
        )
    ncols = min(ncols, len(images))
    nrows = math.ceil(len(images) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.2 * nrows),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(to_numpy_image(images[i]), cmap=cmap, vmin=vmin, vmax=vmax)
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=8)
    fig.tight_layout()
    return fig


def plot_history(history, *, ax=None):
    """Plot the loss and accuracy curves of a `deepscope.train.History`; return the figure."""
    if ax is None:
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2))
    else:
        fig, ax_loss, ax_acc = ax.figure, ax, ax.twinx()
    ax_loss.plot(history.epoch, history.train_loss, label="train")
    if history.test_loss:
        ax_loss.plot(history.epoch, history.test_loss, label="test")
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log")
    ax_loss.legend()
    ax_acc.plot(history.epoch, history.train_acc, label="train")
    if history.test_acc:
        ax_acc.plot(history.epoch, history.test_acc, label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy")
    ax_acc.legend()
    fig.tight_layout()
    return fig
