"""Directions in parameter space: random Gaussian directions, and the filter normalisation that
makes plots along them comparable across networks (Li, Xu, Taylor, Studer & Goldstein 2018,
"Visualizing the loss landscape of neural nets", section 4).

A direction is a dict ``{name: tensor}`` over the model's trainable parameters (see
`deepscope.landscape.trainable_parameters`). A *filter* of a parameter with at least two
dimensions is one slice along its first dimension: a row of a linear layer's weight (one output
unit), one output channel of a convolution. Filter normalisation rescales each filter of the
direction to the norm of the matching filter of the weights,

    d_i  <-  d_i / ||d_i|| * ||theta_i||,

so that a step of size alpha moves every filter by the same *relative* amount. ReLU networks
are invariant to rescaling a layer by c and the next by 1/c; raw random directions are not,
filter-normalised ones are (the chapter's first notebook checks it).
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_choice, check_int, check_module, check_tensor
from ._core import Params, check_point, trainable_parameters

__all__ = ["random_direction", "filter_normalize", "orthogonalize"]

NORMALIZATIONS = ("filter", "layer", "none")
ONE_DIM_RULES = ("zero", "weights", "filter")


def _normalize_one_dim(d: torch.Tensor, w: torch.Tensor, rule: str, eps: float) -> torch.Tensor:
    if rule == "zero":
        return torch.zeros_like(d)
    if rule == "weights":
        return w.clone()
    return d / d.abs().clamp_min(eps) * w.abs()  # each entry is a filter of one element


def filter_normalize(direction, reference, *, biases: str = "zero", eps: float = 1e-10) -> Params:
    """Rescale each filter of a direction to the norm of the matching filter of the weights.

    Implements Li et al. (2018), eq. in section 4: for every parameter with at least two
    dimensions and every filter i (index of the first dimension), d_i <- d_i / ||d_i|| *
    ||theta_i||. Parameters with at most one dimension (biases, normalisation scales and shifts)
    follow ``biases``: ``"zero"`` (Li et al.'s default: the direction does not move them),
    ``"weights"`` (the direction equals the weights, Li et al.'s alternative) or ``"filter"``
    (each entry is its own filter: |d_j| <- |theta_j|).

    Args:
        direction: dict name -> tensor, the trainable parameters' names and shapes.
        reference: the model (``nn.Module``) or a dict of weights theta with the same names.
        biases: the rule for parameters with at most one dimension (see above).
        eps: lower bound of each filter norm of ``direction`` (no division by zero).

    Returns:
        A new dict with the same names and shapes; ``direction`` is not modified.
    """
    fn = "filter_normalize"
    check_choice(biases, "biases", fn, ONE_DIM_RULES)
    if isinstance(reference, nn.Module):
        weights = trainable_parameters(reference)
    elif isinstance(reference, dict):
        weights = {n: check_tensor(t, f"reference[{n!r}]", fn) for n, t in reference.items()}
    else:
        raise TypeError(f"{fn}: `reference` must be an nn.Module or a dict name -> tensor, "
                        f"got {type(reference).__name__}")
    direction = check_point(direction, weights, "direction", fn)
    out = {}
    for name, d in direction.items():
        w = weights[name]
        if d.dim() <= 1:
            out[name] = _normalize_one_dim(d, w, biases, eps)
            continue
        d_norm = d.flatten(1).norm(dim=1).view(-1, *([1] * (d.dim() - 1)))
        w_norm = w.flatten(1).norm(dim=1).view(-1, *([1] * (d.dim() - 1)))
        out[name] = d / d_norm.clamp_min(eps) * w_norm
    return out


def random_direction(
    model: nn.Module,
    seed: int | None = None,
    normalize: str | None = "filter",
    *,
    biases: str = "zero",
) -> Params:
    """Draw a Gaussian random direction in the space of the model's trainable parameters.

    The entries are i.i.d. N(0, 1), drawn on the model's device in its dtype from a generator
    seeded with ``seed`` (never on the host: a billion-parameter model would need gigabytes of
    host memory and a copy), then normalised. The same seed gives the same direction for every
    model with the same parameter shapes on the same kind of device and dtype; a CUDA and a CPU
    generator give different draws. Normalisation:

    - ``"filter"`` (default): `filter_normalize` (Li et al. 2018), with ``biases`` for
      parameters of at most one dimension;
    - ``"layer"``: each parameter tensor rescaled to the norm of the weights' tensor (1-D
      parameters follow ``biases`` too);
    - ``"none"`` or None: the raw Gaussian direction (not scale invariant).

    Args:
        model: the network whose trainable parameters define the space.
        seed: seed of the draw (None: a fresh random seed).
        normalize: ``"filter"``, ``"layer"``, ``"none"`` or None.
        biases: ``"zero"``, ``"weights"`` or ``"filter"`` (see `filter_normalize`).

    Returns:
        A dict name -> tensor with the shapes of the model's trainable parameters.
    """
    fn = "random_direction"
    check_module(model, fn)
    normalize = "none" if normalize is None else normalize
    check_choice(normalize, "normalize", fn, NORMALIZATIONS)
    check_choice(biases, "biases", fn, ONE_DIM_RULES)
    seed = torch.Generator().seed() if seed is None else check_int(seed, "seed", fn, minimum=0)
    weights = trainable_parameters(model)
    generators: dict[torch.device, torch.Generator] = {}  # one per device of a split model
    raw = {}
    for n, w in weights.items():
        if w.device not in generators:
            generators[w.device] = torch.Generator(device=w.device).manual_seed(
                seed + 7919 * len(generators))
        raw[n] = torch.randn(w.shape, generator=generators[w.device], device=w.device,
                             dtype=w.dtype)
    if normalize == "filter":
        return filter_normalize(raw, weights, biases=biases)
    if normalize == "layer":
        return {n: (_normalize_one_dim(d, weights[n], biases, 1e-10) if d.dim() <= 1
                    else d / d.norm().clamp_min(1e-10) * weights[n].norm()) for n, d in raw.items()}
    return raw


def orthogonalize(direction, against) -> Params:
    """Return ``direction`` minus its projection on ``against`` (Gram-Schmidt, one step).

    Two random directions in a space of thousands of dimensions are nearly orthogonal already;
    this makes a 2-D slice's axes exactly orthogonal (as a flat vector inner product).

    Args:
        direction, against: dicts with the same names and shapes.

    Returns:
        A new dict d - (<d, a> / <a, a>) a.
    """
    fn = "orthogonalize"
    if not isinstance(against, dict):
        raise TypeError(f"{fn}: `against` must be a dict name -> tensor, "
                        f"got {type(against).__name__}")
    direction = check_point(direction, against, "direction", fn)
    dot = sum((direction[n] * a).sum() for n, a in against.items())
    norm2 = sum((a * a).sum() for a in against.values())
    if float(norm2) == 0.0:
        raise ValueError(f"{fn}: `against` must be a non-zero direction, got all zeros")
    return {n: direction[n] - dot / norm2 * a for n, a in against.items()}
