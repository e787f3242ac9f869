"""Gradient attributions: the input gradient, gradient x input, SmoothGrad and its squared and
variance variants, and the local linear fit that SmoothGrad secretly is.

All functions take a classifier ``model`` mapping (B, ...) to class scores (B, C), images ``x``
(B, ...) (float) and ``target`` (an int or a LongTensor of shape (B,)); they differentiate the
target *score* (a logit unless the model ends in a softmax), in eval mode, and return a tensor of
the shape of ``x``. The model's mode, weights and gradients are left as they were.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from .._checks import check_choice, check_float, check_int, check_tensor
from .._guards import eval_mode
from ._core import (
    check_batch_size,
    check_inputs,
    make_generator,
    rows_per_pass,
    target_gradients,
    target_scores,
)

__all__ = ["gradient", "input_x_gradient", "smoothgrad", "smoothgrad_sq", "vargrad",
           "local_linear_fit", "SMOOTHGRAD_KINDS"]

#: The aggregates of `smoothgrad` (Captum's ``nt_type`` names).
SMOOTHGRAD_KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")


def _batched(fn_name, model, x, target, max_target, batch_size, compute):
    """Apply ``compute(model, xb, tb, max_target, fn)`` to chunks of at most batch_size images."""
    if batch_size is None or batch_size >= len(x):
        return compute(model, x, target, max_target, fn_name)
    return torch.cat([compute(model, x[i:i + batch_size], target[i:i + batch_size], max_target,
                              fn_name) for i in range(0, len(x), batch_size)])


def gradient(model, x: torch.Tensor, target, *, batch_size: int | None = None,
             output=None) -> torch.Tensor:
    """Return the input gradient of the target score, d f_target(x) / dx (Simonyan et al. 2014).

    Args:
        model: classifier mapping (B, ...) to (B, C).
        x: float inputs (B, ...).
        target: an int or a LongTensor (B,) of class indices.
        batch_size: most images per forward pass (None: all at once).
        output: for a model returning a dict, a tuple or an object, picks the class scores:
            a key, an index or a function (see `deepscope._forward`); ``model`` may then be
            any callable forward, not only an ``nn.Module``.

    Returns:
        The signed gradient, shape of ``x``. (Simonyan et al. show max_c |grad| as the map; use
        `deepscope.saliency.heatmap` for that.) Matches Captum's ``Saliency(abs=False)``.
    """
    fn = "gradient"
    model, x, target, max_target = check_inputs(model, x, target, fn, output=output,
                                                adapt=True)
    batch_size = check_batch_size(batch_size, fn)
    with eval_mode(model):
        return _batched(fn, model, x, target, max_target, batch_size, target_gradients)


def input_x_gradient(model, x: torch.Tensor, target, *,
                     batch_size: int | None = None, output=None) -> torch.Tensor:
    """Return gradient x input, x * d f_target(x) / dx (Shrikumar et al. 2016).

    Shapes and arguments as `gradient`. For a linear model it is each feature's exact
    contribution w_i x_i; it equals integrated gradients from a zero baseline whenever the
    gradient is constant along the path. Matches Captum's ``InputXGradient``.
    """
    fn = "input_x_gradient"
    model, x, target, max_target = check_inputs(model, x, target, fn, output=output,
                                                adapt=True)
    batch_size = check_batch_size(batch_size, fn)
    with eval_mode(model):
        return x * _batched(fn, model, x, target, max_target, batch_size, target_gradients)


def _noise_chunks(x, samples, per_pass_copies, generator, noise):
    """Yield standard-normal noise chunks of shape (m, B, ...) totalling ``samples`` copies."""
    step = samples if per_pass_copies < 0 else per_pass_copies
    for start in range(0, samples, step):
        m = min(step, samples - start)
        if noise is not None:
            yield noise[start:start + m].to(device=x.device, dtype=x.dtype)
        else:
            yield torch.randn((m, *x.shape), generator=generator, device=x.device, dtype=x.dtype)


def smoothgrad(
    model,
    x: torch.Tensor,
    target,
    sigma: float = 0.15,
    samples: int = 50,
    *,
    kind: str = "smoothgrad",
    attribution: Callable | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    noise: torch.Tensor | None = None,
    progress: bool = False,
    output=None,
) -> torch.Tensor:
    """Average an attribution over Gaussian perturbations of the input (Smilkov et al. 2017).

    SmoothGrad(x) = (1/n) sum_i A(x + sigma * eps_i), eps_i ~ N(0, I), with A the input gradient
    by default. ``sigma`` is an **absolute** standard deviation in the units of ``x`` (Smilkov et
    al. quote it relative to the input range, max(x) - min(x); for images in [0, 1] the two
    coincide), as Captum's ``NoiseTunnel(stdevs=sigma)``.

    Args:
        model, x, target: as `gradient`; x (B, ...).
        sigma: noise standard deviation (> 0).
        samples: number n of noisy copies per image.
        kind: ``"smoothgrad"`` (mean of A), ``"smoothgrad_sq"`` (mean of A**2) or ``"vargrad"``
            (mean of A**2 minus the squared mean: the biased variance of Adebayo et al. 2018),
            Captum's ``nt_type`` conventions.
        attribution: another method ``A(model, x, target) -> tensor of x's shape`` to smooth
            (e.g. `input_x_gradient`); called on (m*B, ...) batches of noisy copies.
        batch_size: most rows (noisy copies x images) per forward pass; None: all at once.
        seed: seed of the noise (None: torch's global generator).
        noise: optional standard-normal draws of shape (samples, *x.shape) to use instead of
            fresh ones (matched comparisons); the perturbations are sigma * noise.
        progress: show a progress bar over passes.
        output: for a model returning a dict, a tuple or an object, picks the class scores:
            a key, an index or a function (see `deepscope._forward`); ``model`` may then be
            any callable forward, not only an ``nn.Module``.

    Returns:
        Tensor of the shape of ``x``.
    """
    fn = "smoothgrad"
    model, x, target, max_target = check_inputs(model, x, target, fn, output=output,
                                                adapt=True)
    sigma = check_float(sigma, "sigma", fn, positive=True)
    samples = check_int(samples, "samples", fn)
    check_choice(kind, "kind", fn, SMOOTHGRAD_KINDS)
    batch_size = check_batch_size(batch_size, fn)
    if attribution is not None and not callable(attribution):
        raise TypeError(f"{fn}: `attribution` must be a callable (model, x, target) -> tensor, "
                        f"got {type(attribution).__name__}")
    if noise is not None:
        check_tensor(noise, "noise", fn)
        if tuple(noise.shape) != (samples, *x.shape):
            raise ValueError(f"{fn}: `noise` must have shape {(samples, *x.shape)} "
                             f"(samples, *x.shape), got {tuple(noise.shape)}")
    generator = make_generator(seed, x.device, fn)
    images, copies = rows_per_pass(batch_size, len(x))
    total = torch.zeros_like(x)
    total_sq = torch.zeros_like(x) if kind != "smoothgrad" else None
    passes = tqdm(total=samples * -(-len(x) // images), desc=fn, disable=not progress,
                  leave=False)
    with eval_mode(model):
        for lo in range(0, len(x), images):
            xb, tb = x[lo:lo + images], target[lo:lo + images]
            sub_noise = None if noise is None else noise[:, lo:lo + images]
            for eps in _noise_chunks(xb, samples, copies, generator, sub_noise):
                m = eps.shape[0]
                noisy = (xb[None] + sigma * eps).reshape(m * len(xb), *xb.shape[1:])
                rows = tb.repeat(m)
                if attribution is None:
                    a = target_gradients(model, noisy, rows, max_target, fn)
                else:
                    a = attribution(model, noisy, rows)
                a = a.reshape(m, *xb.shape)
                total[lo:lo + images] += a.sum(0)
                if total_sq is not None:
                    total_sq[lo:lo + images] += (a * a).sum(0)
                passes.update(m)
    passes.close()
    mean = total / samples
    if kind == "smoothgrad":
        return mean
    mean_sq = total_sq / samples
    return mean_sq if kind == "smoothgrad_sq" else mean_sq - mean * mean


def smoothgrad_sq(model, x, target, sigma: float = 0.15, samples: int = 50, **kwargs):
    """Return SmoothGrad-Squared, the mean squared attribution over noisy copies (Hooker et al.
    2019); `smoothgrad` with ``kind="smoothgrad_sq"`` (shapes and arguments as there)."""
    return smoothgrad(model, x, target, sigma, samples, kind="smoothgrad_sq", **kwargs)


def vargrad(model, x, target, sigma: float = 0.15, samples: int = 50, **kwargs):
    """Return VarGrad, the variance of the attribution over noisy copies (Adebayo et al. 2018);
    `smoothgrad` with ``kind="vargrad"`` (shapes and arguments as there)."""
    return smoothgrad(model, x, target, sigma, samples, kind="vargrad", **kwargs)


def local_linear_fit(
    model,
    x: torch.Tensor,
    target,
    sigma: float = 0.15,
    samples: int = 2000,
    *,
    seed: int | None = None,
    batch_size: int | None = None,
    output=None,
) -> torch.Tensor:
    """Fit f_target(x + eps) ~ a + w . eps by least squares on Gaussian perturbations; return w.

    This is C-LIME, LIME with a Gaussian neighbourhood of width sigma and no interpretable
    representation. By Stein's lemma, E[eps f(x + eps)] = sigma**2 E[grad f(x + eps)], so the
    population slope is exactly the SmoothGrad of the gradient with the same sigma (Han, Srinivas
    & Lakkaraju 2022, "Which explanation should I choose? A function approximation perspective").

    Args:
        model, x, target: as `gradient`; x (B, ...) with D = prod(x.shape[1:]) features.
        sigma: neighbourhood width (absolute noise standard deviation).
        samples: perturbations per image (must exceed D + 1; the fit solves a (D+1)-dim least
            squares problem per image, so keep D small: this is for teaching and testing).
        seed: seed of the perturbations (None: torch's global generator).
        batch_size: most rows per forward pass (None: all at once).
        output: picks the class scores from dict/tuple outputs (as `gradient`).

    Returns:
        The slopes w, shape of ``x``.
    """
    fn = "local_linear_fit"
    model, x, target, max_target = check_inputs(model, x, target, fn, output=output,
                                                adapt=True)
    sigma = check_float(sigma, "sigma", fn, positive=True)
    samples = check_int(samples, "samples", fn)
    batch_size = check_batch_size(batch_size, fn)
    features = x[0].numel()
    if samples <= features + 1:
        raise ValueError(f"{fn}: `samples` must exceed the number of features + 1 "
                         f"({features + 1}) for a least-squares fit, got {samples}")
    generator = make_generator(seed, x.device, fn)
    eps = sigma * torch.randn((samples, *x.shape), generator=generator, device=x.device,
                              dtype=x.dtype)
    step = samples if batch_size is None else max(1, batch_size // len(x))
    with torch.no_grad(), eval_mode(model):
        values = torch.cat([
            target_scores(model, (x[None] + e).reshape(-1, *x.shape[1:]),
                          target.repeat(e.shape[0]), max_target, fn).reshape(-1, len(x))
            for e in eps.split(step)])  # (samples, B)
    ones = torch.ones((*eps.shape[:2], 1), dtype=x.dtype, device=x.device)
    design = torch.cat([ones, eps.flatten(2)], dim=2)  # (samples, B, 1 + D)
    solution = torch.linalg.lstsq(design.transpose(0, 1), values.T[..., None]).solution
    return solution[:, 1:, 0].reshape(x.shape)
