"""Sanity checks for saliency maps (Adebayo et al. 2018): does the map change when the model does?

A map that explains the *model* must change when the model's weights are replaced by random
ones. Cascading randomization re-initialises the layers one at a time from the output down and
compares each new map with the original by Spearman rank correlation; independent randomization
re-initialises one layer at a time. A model-free control, the Sobel edge map of the input
(`edge_detector`), passes neither test by construction: it never changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn
from tqdm.auto import tqdm

from .._checks import (
    as_target,
    check_choice,
    check_finite,
    check_for_model,
    check_int,
    check_like,
    check_module,
    check_nonempty,
    check_tensor,
)
from .._guards import restored_parameters
from .cam import find_layer

__all__ = ["rank_correlation", "edge_detector", "randomizable_layers", "model_randomization",
           "cascading_randomization", "RandomizationResult"]


def rank_correlation(a: torch.Tensor, b: torch.Tensor, *, absolute: bool = False) -> torch.Tensor:
    """Return the Spearman rank correlation between the maps a[i] and b[i], shape (B,).

    Maps (B, ...) are flattened per image; ties get average ranks (``scipy.stats.rankdata``),
    so constant regions (dead ReLUs, zero background) are handled correctly. A constant map has
    no ranking: its correlation is NaN. With ``absolute`` the magnitudes |a|, |b| are ranked
    (Adebayo et al. report both).
    """
    fn = "rank_correlation"
    check_tensor(a, "a", fn, min_ndim=1)
    check_tensor(b, "b", fn, min_ndim=1)
    check_finite(check_nonempty(a, "a", fn, "map"), "a", fn)
    check_like(b, a, "b", fn, "a")
    if a.shape != b.shape:
        raise ValueError(f"{fn}: `a` and `b` must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    a, b = (t.detach().flatten(1).double().cpu().numpy() for t in (a, b))
    if absolute:
        a, b = np.abs(a), np.abs(b)
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(1) / np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    return torch.from_numpy(rho)


def edge_detector(model, x: torch.Tensor, target=None) -> torch.Tensor:
    """Return the Sobel gradient magnitude of each image, summed over channels, shape of ``x``
    with one channel repeated: a "saliency map" that ignores the model and the target entirely
    (the control of Adebayo et al. 2018). ``model`` and ``target`` are accepted and unused, so it
    plugs in wherever an attribution method does."""
    fn = "edge_detector"
    check_tensor(x, "x", fn, ndim=4, like="(B, C, H, W)")
    check_finite(check_nonempty(x, "x", fn, "image"), "x", fn)
    if target is not None:  # unused, but a wrong one is still a mistake worth reporting
        as_target(target, len(x), fn)
    sobel = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]],
                         dtype=x.dtype, device=x.device)
    kernels = torch.stack([sobel, sobel.T])[:, None]  # (2, 1, 3, 3)
    flat = x.detach().sum(1, keepdim=True)
    edges = F.conv2d(F.pad(flat, (1, 1, 1, 1), mode="replicate"), kernels)
    return edges.pow(2).sum(1, keepdim=True).sqrt().expand_as(x).clone()


def randomizable_layers(model: nn.Module) -> list[str]:
    """Return the names of the modules that own parameters, from the output to the input
    (reverse registration order; the order of a cascading randomization)."""
    check_module(model, "randomizable_layers")
    return [name for name, m in model.named_modules()
            if name and any(True for _ in m.parameters(recurse=False))][::-1]


def _reinitialize(module: nn.Module, seed: int) -> None:
    """Re-initialise a module's own parameters with its default init, from ``seed``."""
    devices = [p.device.index or 0 for p in module.parameters(recurse=False)
               if p.device.type == "cuda"]
    with torch.random.fork_rng(devices=devices[:1]), torch.no_grad():
        torch.manual_seed(seed)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:
            for p in module.parameters(recurse=False):
                p.normal_(0.0, 0.01)


class RandomizationResult(NamedTuple):
    """Result of `model_randomization`: ``layers[i]`` is the layer randomized (cumulatively in
    the cascading mode) for ``maps[i + 1]``; ``correlation[i]`` (B,) compares ``maps[i + 1]``
    with the original ``maps[0]``."""

    layers: list[str]
    correlation: torch.Tensor  # (L, B)
    maps: list[torch.Tensor]  # L + 1 maps, each the shape of x


def model_randomization(
    model: nn.Module,
    x: torch.Tensor,
    target,
    attribution: Callable,
    *,
    layers=None,
    cascading: bool = True,
    absolute: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> RandomizationResult:
    """Re-initialise layers and measure how much an attribution map changes (Adebayo et al. 2018,
    "Sanity checks for saliency maps", section 3.1).

    Args:
        model: the trained model; its weights are restored bitwise afterwards, also on errors.
        x, target: the images (B, ...) and targets passed to ``attribution``.
        attribution: ``attribution(model, x, target) -> maps`` of x's shape, e.g.
            `deepscope.saliency.gradient` or ``lambda m, x, t: integrated_gradients(m, x, t)``.
        layers: names or modules to randomize, in order (default `randomizable_layers`: top
            to bottom).
        cascading: randomize cumulatively (cascading) or one layer at a time (independent).
        absolute: compare rank correlations of |maps| (Adebayo et al.'s main figures).
        seed: seed of the re-initialisations (layer i uses seed + i); the global RNG is untouched.
        progress: show a progress bar over layers.

    Returns:
        A `RandomizationResult` (layers, correlation (L, B), maps).
    """
    fn = "model_randomization"
    check_module(model, fn)
    if not callable(attribution):
        raise TypeError(f"{fn}: `attribution` must be a callable (model, x, target) -> maps, "
                        f"got {type(attribution).__name__}")
    seed = check_int(seed, "seed", fn, minimum=0)
    check_for_model(model, check_tensor(x, "x", fn, min_ndim=2, like="(B, ...)"), "x", fn)
    names = randomizable_layers(model) if layers is None else [
        find_layer(model, layer, fn)[0] for layer in layers]
    if not names:
        raise ValueError(f"{fn}: `layers` must name at least one layer with parameters, got none")
    modules = dict(model.named_modules())
    maps = [attribution(model, x, target).detach()]
    correlations = []
    with restored_parameters(model):
        state = {k: v.clone() for k, v in model.state_dict().items()}
        for i, name in enumerate(tqdm(names, desc=fn, disable=not progress, leave=False)):
            if not cascading:
                model.load_state_dict(state)
            _reinitialize(modules[name], seed + i)
            maps.append(attribution(model, x, target).detach())
            correlations.append(rank_correlation(maps[0], maps[-1], absolute=absolute))
    return RandomizationResult(names, torch.stack(correlations), maps)


def cascading_randomization(model, x, target, attribution, **kwargs) -> RandomizationResult:
    """Return `model_randomization` in its cascading mode: layers randomized cumulatively from
    the output to the input (Adebayo et al. 2018, Fig. 2). Arguments as there."""
    kwargs.setdefault("cascading", True)
    check_choice(kwargs["cascading"], "cascading", "cascading_randomization", (True,))
    return model_randomization(model, x, target, attribution, **kwargs)
