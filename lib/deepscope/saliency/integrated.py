"""Path attributions: integrated gradients with Captum's quadrature rules, expected gradients,
and the baselines the chapter compares (zero, blurred, noise, data).

Integrated gradients (Sundararajan, Taly & Yan 2017) along the straight path from a baseline x'
to the input x:

    IG_i(x) = (x_i - x'_i) * integral_0^1 d f(x' + a (x - x')) / d x_i  da
            ~ (x_i - x'_i) * sum_k w_k  d f(x' + a_k (x - x')) / d x_i

Completeness: sum_i IG_i(x) = f(x) - f(x') up to the quadrature error, which ``return_delta``
reports as delta = sum_i IG_i - (f(x) - f(x')) (Captum's sign convention).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from .._checks import check_choice, check_float, check_int, check_tensor
from .._guards import eval_mode
from ._core import (
    check_batch_size,
    check_inputs,
    make_generator,
    resolve_baseline,
    rows_per_pass,
    target_gradients,
    target_scores,
)

__all__ = ["QUADRATURE_RULES", "quadrature", "integrated_gradients", "expected_gradients",
           "gaussian_blur", "completeness_gap"]

#: The quadrature rules of `integrated_gradients`, with Captum's names.
QUADRATURE_RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
                    "riemann_trapezoid")


def quadrature(steps: int, method: str = "gausslegendre") -> tuple[torch.Tensor, torch.Tensor]:
    """Return the nodes a_k in [0, 1] and weights w_k of a rule for integral_0^1 g(a) da.

    Captum's conventions, exactly: ``riemann_left`` a_k = k/n, ``riemann_right`` (k+1)/n,
    ``riemann_middle`` (k+1/2)/n, all with w_k = 1/n; ``riemann_trapezoid`` a = linspace(0, 1, n)
    with w_k = 1/n and both end weights halved, so the weights sum to (n-1)/n, not 1 (Captum's
    rule; a textbook trapezoid would use 1/(n-1)); ``gausslegendre`` a_k = (1+p_k)/2, w_k = v_k/2
    from the Gauss-Legendre nodes p_k and weights v_k on [-1, 1] (exact for polynomials of degree
    2n-1).

    Args:
        steps: number n of nodes (>= 1; >= 2 for ``riemann_trapezoid``).
        method: one of `QUADRATURE_RULES`.

    Returns:
        ``(alphas, weights)``, two float64 tensors of shape (n,).
    """
    fn = "quadrature"
    steps = check_int(steps, "steps", fn)
    check_choice(method, "method", fn, QUADRATURE_RULES)
    n = steps
    k = np.arange(n, dtype=np.float64)
    weights = np.full(n, 1.0 / n)
    if method == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(n)
        alphas, weights = (1 + nodes) / 2, w / 2
    elif method == "riemann_left":
        alphas = k / n
    elif method == "riemann_right":
        alphas = (k + 1) / n
    elif method == "riemann_middle":
        alphas = (k + 0.5) / n
    else:
        if n < 2:
            raise ValueError(f"{fn}: `steps` must be >= 2 for 'riemann_trapezoid', got {n}")
        alphas = np.linspace(0.0, 1.0, n)
        weights[0] /= 2
        weights[-1] /= 2
    return torch.from_numpy(alphas), torch.from_numpy(weights)


def _path_integral(model, x, target, max_target, baselines, alphas, weights, batch_size,
                   progress, fn):
    """Return mean_k (x - b_k) * sum_s weights[s] * grad f(b_k + alphas[s] (x - b_k)) for the
    (K, B|1, ...) baselines and (S,) nodes and weights."""
    K, S = baselines.shape[0], alphas.shape[-1]
    alphas = alphas.to(x.device, x.dtype).repeat(K)
    weights = weights.to(x.device, x.dtype).repeat(K)
    which = torch.arange(K, device=x.device).repeat_interleave(S)  # baseline of each point
    images, copies = rows_per_pass(batch_size, len(x))
    step = K * S if copies < 0 else copies
    view = (-1, 1, *([1] * (x.dim() - 1)))
    # G[k] = sum_s w_s grad f(x_{k,s}): the weighted gradient sum along the path from b_k
    summed = torch.zeros((K, *x.shape), dtype=x.dtype, device=x.device)
    bar = tqdm(total=K * S * -(-len(x) // images), desc=fn, disable=not progress, leave=False)
    for lo in range(0, len(x), images):
        xb, tb = x[lo:lo + images], target[lo:lo + images]
        bb = baselines if baselines.shape[1] == 1 else baselines[:, lo:lo + images]
        diff = xb[None] - bb  # (K, B, ...)
        for p in range(0, K * S, step):
            a, w, k = alphas[p:p + step], weights[p:p + step], which[p:p + step]
            if K == 1:
                points = bb + a.view(view) * diff  # (m, B, ...) by broadcasting, no gather
            else:
                points = bb[k] + a.view(view) * diff[k]
            m = points.shape[0]
            grads = target_gradients(model, points.reshape(m * len(xb), *xb.shape[1:]),
                                     tb.repeat(m), max_target, fn).reshape(m, *xb.shape)
            weighted = w.view(view) * grads
            if K == 1:
                summed[0, lo:lo + images] += weighted.sum(0)
            else:
                summed[:, lo:lo + images].index_add_(0, k, weighted)
            bar.update(m)
    bar.close()
    return ((x[None] - baselines) * summed).mean(0)


def completeness_gap(model, x, target, attributions, baseline=None, *,
                     output=None) -> torch.Tensor:
    """Return delta = sum_i A_i - (f(x) - mean_k f(x'_k)) per image, shape (B,).

    ``baseline`` and ``output`` as in `integrated_gradients`. Zero for a method that satisfies
    completeness (integrated gradients up to quadrature error, DeepLIFT's summation-to-delta
    exactly).
    """
    fn = "completeness_gap"
    model, x, target, max_target = check_inputs(model, x, target, fn, output=output,
                                                adapt=True)
    check_tensor(attributions, "attributions", fn)
    if attributions.shape != x.shape:
        raise ValueError(f"{fn}: `attributions` must have the shape of `x` {tuple(x.shape)}, "
                         f"got {tuple(attributions.shape)}")
    baselines = resolve_baseline(baseline, x, fn)
    return _gap(model, x, target, max_target, baselines, attributions, fn)


def _gap(model, x, target, max_target, baselines, attributions, fn):
    K = baselines.shape[0]
    with torch.no_grad(), eval_mode(model):
        fx = target_scores(model, x, target, max_target, fn)
        fb = target_scores(model, baselines.expand(K, *x.shape).reshape(-1, *x.shape[1:]),
                           target.repeat(K), max_target, fn).reshape(K, len(x)).mean(0)
    return attributions.flatten(1).sum(1) - (fx - fb)


def integrated_gradients(
    model,
    x: torch.Tensor,
    target,
    baseline=None,
    steps: int = 64,
    method: str = "gausslegendre",
    batch_size: int | None = None,
    return_delta: bool = False,
    *,
    progress: bool = False,
    output=None,
):
    """Return the integrated gradients of the target score along straight paths from baselines.

    Implements Sundararajan, Taly & Yan (2017), eq. (1), with the quadrature of `quadrature`
    (Captum's node and weight conventions, so results match ``captum.attr.IntegratedGradients``
    with the same ``n_steps`` and ``method``): attribution = (x - x') * sum_k w_k grad f(x_k),
    x_k = x' + a_k (x - x'). All steps are evaluated in batched passes of at most ``batch_size``
    rows (images x steps).

    Args:
        model, x, target: as `deepscope.saliency.gradient`; x (B, ...).
        baseline: None (zeros), a number, a tensor of shape x.shape[1:] (shared) or x.shape (one
            per image), or K baselines per image, shape (K, B, ...) or (K, 1, ...) (e.g.
            ``train_images[:K, None]``): the result is then the mean of the K integrated
            gradients, the deterministic form of expected gradients (Erion et al. 2021).
        steps: number of quadrature nodes (>= 1; >= 2 for the trapezoid rule).
        method: one of `QUADRATURE_RULES` (default Gauss-Legendre, as Captum).
        batch_size: most rows per forward pass (None: every step of every image at once).
        return_delta: also return the completeness gap (see `completeness_gap`), shape (B,).
        progress: show a progress bar over passes.
        output: for a model returning a dict, a tuple or an object, picks the class scores:
            a key, an index or a function (see `deepscope._forward`); ``model`` may then be
            any callable forward, not only an ``nn.Module``.

    Returns:
        Attributions of the shape of ``x``; with ``return_delta``, a pair (attributions, delta).
    """
    fn = "integrated_gradients"
    model, x, target, max_target = check_inputs(model, x, target, fn, output=output,
                                                adapt=True)
    steps = check_int(steps, "steps", fn)
    alphas, weights = quadrature(steps, check_choice(method, "method", fn, QUADRATURE_RULES))
    batch_size = check_batch_size(batch_size, fn)
    baselines = resolve_baseline(baseline, x, fn)
    with eval_mode(model):
        attributions = _path_integral(model, x, target, max_target, baselines, alphas, weights,
                                      batch_size, progress, fn)
    if not return_delta:
        return attributions
    return attributions, _gap(model, x, target, max_target, baselines, attributions, fn)


def expected_gradients(
    model,
    x: torch.Tensor,
    target,
    references: torch.Tensor,
    samples: int = 64,
    *,
    seed: int | None = None,
    batch_size: int | None = None,
    return_delta: bool = False,
    output=None,
):
    """Return expected gradients: E_{x'~data, a~U(0,1)} (x - x') grad f(x' + a (x - x')).

    The Monte Carlo estimator of Erion et al. (2021): each of ``samples`` draws picks a reference
    image x' uniformly from ``references`` and a point a uniformly on the path. Its expectation is
    integrated gradients averaged over the references (what `integrated_gradients` computes with
    a (K, 1, ...) baseline); the same as Captum's ``GradientShap`` with ``stdevs=0``.

    Args:
        model, x, target: as `deepscope.saliency.gradient`; x (B, ...).
        references: (R, ...) reference images with R >= 1, e.g. training images.
        samples: draws per image.
        seed: seed of the draws (None: torch's global generator).
        batch_size: most rows per forward pass.
        return_delta: also return the completeness gap against the mean reference output.
        output: picks the class scores from dict/tuple outputs (as `integrated_gradients`).

    Returns:
        Attributions of the shape of ``x`` (and the gap (B,) with ``return_delta``).
    """
    fn = "expected_gradients"
    model, x, target, max_target = check_inputs(model, x, target, fn, output=output,
                                                adapt=True)
    want = f"(R, {', '.join(map(str, x.shape[1:]))})"
    check_tensor(references, "references", fn, ndim=x.dim(), like=want)
    if references.shape[1:] != x.shape[1:] or len(references) == 0:
        raise ValueError(f"{fn}: `references` must have shape {want} with R >= 1, "
                         f"got {tuple(references.shape)}")
    samples = check_int(samples, "samples", fn)
    batch_size = check_batch_size(batch_size, fn)
    generator = make_generator(seed, x.device, fn)
    references = references.to(x.device, x.dtype)
    pick = torch.randint(len(references), (samples, len(x)), generator=generator,
                         device=x.device)
    alphas = torch.rand((samples, len(x)), generator=generator, device=x.device, dtype=x.dtype)
    images, copies = rows_per_pass(batch_size, len(x))
    step = samples if copies < 0 else copies
    total = torch.zeros_like(x)
    with eval_mode(model):
        for lo in range(0, len(x), images):
            xb, tb = x[lo:lo + images], target[lo:lo + images]
            for p in range(0, samples, step):
                base = references[pick[p:p + step, lo:lo + images]]  # (m, b, ...)
                diff = xb[None] - base
                a = alphas[p:p + step, lo:lo + images]
                a = a.reshape(*a.shape, *([1] * (x.dim() - 1)))
                points = base + a * diff
                m = points.shape[0]
                grads = target_gradients(model, points.reshape(m * len(xb), *xb.shape[1:]),
                                         tb.repeat(m), max_target, fn).reshape(m, *xb.shape)
                total[lo:lo + images] += (diff * grads).sum(0)
    attributions = total / samples
    if not return_delta:
        return attributions
    gap = _gap(model, x, target, max_target, references[:, None], attributions, fn)
    return attributions, gap


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur images (B, C, H, W) with a Gaussian of standard deviation ``sigma`` pixels.

    The blurred-image baseline of integrated gradients (Sturmfels, Lundberg & Lee 2020, "Visualizing
    the impact of feature attribution baselines"). Reflect padding keeps the mean brightness at
    the borders; the kernel is truncated at 3 sigma.

    Returns:
        A tensor of the shape of ``x``.
    """
    fn = "gaussian_blur"
    check_tensor(x, "x", fn, ndim=4, like="(B, C, H, W)")
    sigma = check_float(sigma, "sigma", fn, positive=True)
    radius = max(1, int(np.ceil(3 * sigma)))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    padded = torch.nn.functional.pad(x, (radius, radius, radius, radius), mode="reflect")
    rows = torch.nn.functional.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1),
                                      groups=channels)
    return torch.nn.functional.conv2d(rows, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1),
                                      groups=channels)
