"""Scoring maps against a known ground truth: heatmaps, the pointing game, energy in the mask,
and mask IoU. The book's datasets know where the signal is (`deepscope.data.digit_canvas` boxes,
`deepscope.data.block_digits` blocks), so a map can be checked, not just admired.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_choice, check_int, check_tensor

__all__ = ["heatmap", "pointing_game", "mask_energy", "mask_iou", "blank_maps",
           "HEATMAP_REDUCTIONS"]

HEATMAP_REDUCTIONS = ("abs", "sum", "max_abs", "positive")


def heatmap(attributions: torch.Tensor, reduce: str = "abs") -> torch.Tensor:
    """Collapse attributions (B, C, H, W) to one map per image (B, H, W).

    ``reduce``: ``"abs"`` sums |a| over channels (the usual saliency map), ``"sum"`` sums the
    signed values, ``"max_abs"`` takes max_c |a| (Simonyan et al. 2014), ``"positive"`` sums
    max(a, 0) (evidence for the class only). Maps that are already (B, H, W) (Grad-CAM) are
    returned after the same elementwise rule with C = 1.
    """
    fn = "heatmap"
    check_tensor(attributions, "attributions", fn, ndim=(3, 4), like="(B, C, H, W) or (B, H, W)")
    check_choice(reduce, "reduce", fn, HEATMAP_REDUCTIONS)
    a = attributions if attributions.dim() == 4 else attributions[:, None]
    if reduce == "abs":
        return a.abs().sum(1)
    if reduce == "sum":
        return a.sum(1)
    if reduce == "max_abs":
        return a.abs().amax(1)
    return a.clamp(min=0).sum(1)


def _maps_and_masks(maps, mask, fn):
    check_tensor(maps, "maps", fn, ndim=(3, 4), like="(B, H, W) or (B, 1, H, W)")
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"{fn}: `mask` must be a bool tensor (True where the signal is), got "
                        f"{getattr(mask, 'dtype', type(mask).__name__)}")
    maps = maps if maps.dim() == 3 else heatmap(maps, "sum") if maps.shape[1] == 1 else None
    if maps is None:
        raise ValueError(f"{fn}: `maps` must have one channel; reduce channels with `heatmap` "
                         "first")
    mask = mask[:, 0] if mask.dim() == 4 and mask.shape[1] == 1 else mask
    if mask.shape != maps.shape:
        raise ValueError(f"{fn}: `mask` must have the maps' shape {tuple(maps.shape)} (or with a "
                         f"channel dim of 1), got {tuple(mask.shape)}")
    return maps, mask.to(maps.device)


def blank_maps(maps: torch.Tensor, *, atol: float = 0.0) -> torch.Tensor:
    """Return, per map, whether it is blank: constant to within ``atol`` (max - min <= atol).

    A blank map has no peak and no ranking, so the pointing game's argmax falls on the first
    pixel, `mask_energy` is NaN (all zero) and `rank_correlation` is NaN. Grad-CAM maps are
    often blank: its ReLU zeroes a map whose weighted sum of feature maps is negative
    everywhere (randomised networks, off-class targets). Count blank maps and report them beside
    any average: ``nanmean`` would silently drop them.

    Args:
        maps: (B, H, W), (B, C, H, W) or (B, D): one map (or attribution) per image.
        atol: the largest max - min still called blank (>= 0).

    Returns:
        A bool tensor (B,).
    """
    fn = "blank_maps"
    check_tensor(maps, "maps", fn, min_ndim=2, like="(B, ...)")
    if not isinstance(atol, (int, float)) or isinstance(atol, bool) or atol < 0:
        raise ValueError(f"{fn}: `atol` must be a number >= 0, got {atol!r}")
    flat = maps.detach().flatten(1)
    return (flat.amax(1) - flat.amin(1)) <= atol


def pointing_game(maps: torch.Tensor, mask: torch.Tensor, *, tolerance: int = 0) -> torch.Tensor:
    """Return, per image, whether the map's maximum falls on the ground truth (Zhang et al. 2018,
    "Top-down neural attention by excitation backprop").

    Args:
        maps: one map per image (B, H, W) (use `heatmap` for attributions (B, C, H, W)).
        mask: bool ground truth (B, H, W) or (B, 1, H, W), True where the object is.
        tolerance: also count a hit within this many pixels of the mask (Zhang et al. use 15 px
            at 224 px resolution); the mask is dilated by a (2t+1)-square.

    Returns:
        A bool tensor (B,): the hits. Chance level is the mask's share of the image. A blank
        map (`blank_maps`) "points" at its first pixel: count blank maps separately.
    """
    fn = "pointing_game"
    maps, mask = _maps_and_masks(maps, mask, fn)
    tolerance = check_int(tolerance, "tolerance", fn, minimum=0)
    if tolerance:
        mask = F.max_pool2d(mask[:, None].float(), 2 * tolerance + 1, stride=1,
                            padding=tolerance)[:, 0] > 0
    peak = maps.flatten(1).argmax(1)
    return mask.flatten(1).gather(1, peak[:, None]).squeeze(1)


def mask_energy(maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Return the share of each map's positive mass inside the mask, shape (B,).

    sum_{mask} max(L, 0) / sum max(L, 0) (the "energy-based pointing game" of Wang et al. 2020,
    Score-CAM). A map spread uniformly scores the mask's area share; NaN for an all-zero map.
    """
    fn = "mask_energy"
    maps, mask = _maps_and_masks(maps, mask, fn)
    positive = maps.clamp(min=0).flatten(1)
    return (positive * mask.flatten(1)).sum(1) / positive.sum(1)


def mask_iou(maps: torch.Tensor, mask: torch.Tensor, *, top: int | None = None) -> torch.Tensor:
    """Return the IoU of each map's top pixels with the mask, shape (B,).

    The map is binarised by keeping its ``top`` highest pixels (default: as many as the mask has,
    so a perfect map scores 1); ties are broken by position.
    """
    fn = "mask_iou"
    maps, mask = _maps_and_masks(maps, mask, fn)
    flat_mask = mask.flatten(1)
    if top is not None:
        k = torch.full((len(maps),), check_int(top, "top", fn), device=maps.device)
    else:
        k = flat_mask.sum(1)
    order = maps.flatten(1).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=maps.device).expand_as(order))
    chosen = rank < k[:, None]
    inter = (chosen & flat_mask).sum(1)
    union = (chosen | flat_mask).sum(1)
    return inter.double() / union.clamp(min=1)
