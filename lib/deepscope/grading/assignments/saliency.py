"""Checks of assignment 1 (saliency): integrated gradients, SmoothGrad and Grad-CAM.

Each question is compared with `deepscope.saliency` on its published case and on cases drawn at
grading time (batch sizes, input shapes of rank 2 or 4, models, targets, steps, noise levels),
and checked against properties that need no reference: completeness of integrated gradients,
the closed forms of a linear model (IG = (x - x') * w, SmoothGrad = w whatever the noise), and
Grad-CAM's equality with the class activation map of a global-average-pooling network.
SmoothGrad drawing its own noise is judged as an estimator: fresh draws on every call, and the
whitened errors of repeated calls at 4 and 64 samples follow the chi-square law that independent
draws give (the mean and covariance of one noisy gradient are estimated here from 8192 draws).
A last check per question observes one call for the notebook's rules (inputs, the model's
parameters and mode left alone, hooks removed, the global generator untouched).
"""

from __future__ import annotations

import math

import torch
from scipy.stats import chi2
from torch import nn

from ... import models
from ... import saliency as reference
from ..checks import (
    Assignment,
    Call,
    Check,
    Fail,
    Question,
    combine,
    expect_close,
    expect_rules,
    expect_tensor,
    relative,
)

_TARGETS = [0, 1, 2, 1]
#: Tail probability of each side of SmoothGrad's statistical bound under its fitted null law.
#: The law is approximate (averages of 4 noisy gradients are not Gaussian): measured with
#: `tools.estimator_tails`, correct answers' tails run up to 1.8 times the law's at 1e-3, so the
#: bound sits at 1e-9 to keep a correct answer's failure rate far below 1e-6.
_TAIL = 1e-9


def _mlp(ctx, seed: int, in_features: int = 16, hidden: int = 12, classes: int = 3,
         activation: str = "relu", dtype=torch.float32) -> nn.Module:
    return ctx.build(lambda: models.mlp(in_features, hidden=(hidden,), out_features=classes,
                                        activation=activation), seed).to(dtype)


def _linear(ctx, seed: int, in_features: int = 16, classes: int = 3,
            dtype=torch.float32) -> nn.Module:
    return ctx.build(lambda: nn.Sequential(nn.Flatten(), nn.Linear(in_features, classes)),
                     seed).to(dtype)


def _images(ctx, seed: int, dtype=torch.float32) -> torch.Tensor:
    return ctx.randn(4, 1, 4, 4, seed=seed, dtype=dtype)


def _targets(ctx) -> torch.Tensor:
    return torch.tensor(_TARGETS, device=ctx.device)


def _row_weights(model: nn.Module, target: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The linear model's weight row of each image's target, in the shape of ``like``."""
    return model[1].weight.detach()[target].reshape(like.shape)


def _drawn_input(ctx, dtype=torch.float32):
    """A batch drawn at grading time: shape (B, D) or (B, C, H, W), targets, a model for it."""
    b = ctx.integers(2, 6)
    shape = ctx.choice([(b, ctx.integers(5, 20)),
                        (b, ctx.integers(1, 2), ctx.integers(3, 6), ctx.integers(3, 6))])
    classes = ctx.integers(2, 5)
    x = ctx.randn(*shape, seed=ctx.fresh_seed(), dtype=dtype)
    targets = torch.tensor([ctx.integers(0, classes - 1) for _ in range(b)], device=ctx.device)
    features = math.prod(shape[1:])
    return x, targets, features, classes


def _case(x, steps=None, extra="") -> str:
    text = f"a {tuple(x.shape)} {str(x.dtype).replace('torch.', '')} batch"
    plural = "s" if steps != 1 else ""
    steps_text = f", {steps} step{plural}" if steps is not None else ""
    return text + steps_text + extra


# --- integrated gradients ---------------------------------------------------------------------


def _ig_agrees(ctx, model, x, t, steps, baseline=None, what="the attributions"):
    want = reference.integrated_gradients(model, x, t, baseline=baseline, steps=steps,
                                          method="riemann_middle")
    kwargs = {"steps": steps} if baseline is None else {"baseline": baseline, "steps": steps}

    def judge(outs):
        got = expect_tensor(outs[0], f"{what} ({_case(x, steps)})", like=x)
        expect_close(got, want, f"{what} ({_case(x, steps)})", rtol=1e-4, atol=1e-6)

    return [Call(model, x, t, **kwargs)], judge


def _ig_drawn(ctx, activation="relu", dtype=torch.float32):
    x, t, features, classes = _drawn_input(ctx, dtype)
    model = _mlp(ctx, ctx.fresh_seed(), features, ctx.integers(6, 16), classes, activation, dtype)
    return model, x, t


def _ig_reference(ctx):
    model, x, t = _ig_drawn(ctx)
    return combine(_ig_agrees(ctx, _mlp(ctx, 1), _images(ctx, 2), _targets(ctx), 32),
                   _ig_agrees(ctx, model, x, t, ctx.integers(5, 40)))


def _ig_baseline(ctx):
    model, x = _mlp(ctx, 3), _images(ctx, 4)
    drawn_model, drawn_x, _ = _ig_drawn(ctx)
    drawn_target = ctx.integers(0, drawn_model[-1].out_features - 1)
    return combine(
        _ig_agrees(ctx, model, x, 2, 16, ctx.randn(*x.shape, seed=5),
                   "the attributions from a random baseline"),
        _ig_agrees(ctx, drawn_model, drawn_x, drawn_target, ctx.integers(5, 40),
                   ctx.randn(*drawn_x.shape, seed=ctx.fresh_seed()),
                   "the attributions from a random baseline, an int target"))


def _ig_complete(ctx, model, x, t, baseline):
    """Completeness up to the quadrature error: the sum of each input's attributions may miss
    f(x) - f(baseline) by what the midpoint rule with 128 steps misses it (the reference's
    own gap), plus 1e-4 of the largest |f(x) - f(baseline)|."""
    with torch.no_grad():
        rows = torch.arange(len(x), device=x.device)
        gap = model(x)[rows, t] - model(baseline)[rows, t]
    midpoint = reference.integrated_gradients(model, x, t, baseline=baseline, steps=128,
                                              method="riemann_middle").flatten(1).sum(1)
    allowed = (midpoint - gap).abs() + 1e-6 + 1e-4 * gap.abs().max()
    what = f"the sum of each input's attributions ({_case(x, 128)})"

    def judge(outs):
        got = expect_tensor(outs[0], f"the attributions ({_case(x, 128)})", like=x)
        miss = (got.flatten(1).sum(1).to(gap) - gap).abs()
        if not torch.isfinite(miss).all():
            raise Fail(f"{what} holds NaN or infinite values")
        if (miss > allowed).any():
            i = int((miss - allowed).argmax())
            raise Fail(f"completeness fails: {what} misses f(x) - f(baseline) by "
                       f"{relative(float(miss[i] / gap.abs().max()))} of the largest "
                       "|f(x) - f(baseline)| at input "
                       f"{i}, more than the midpoint rule's own quadrature error")

    return [Call(model, x, t, baseline=baseline, steps=128)], judge


def _ig_completeness(ctx):
    model = _mlp(ctx, 6, activation="tanh", dtype=torch.float64)
    x, t = _images(ctx, 7, torch.float64), _targets(ctx)
    drawn_model, drawn_x, drawn_t = _ig_drawn(ctx, "tanh", torch.float64)
    return combine(_ig_complete(ctx, model, x, t, 0.5 * torch.ones_like(x)),
                   _ig_complete(ctx, drawn_model, drawn_x, drawn_t,
                                ctx.randn(*drawn_x.shape, seed=ctx.fresh_seed(),
                                          dtype=torch.float64)))


def _ig_exact(ctx, model, x, t, baseline, steps):
    want = (x - baseline) * _row_weights(model, t, x)

    def judge(outs):
        got = expect_tensor(outs[0], f"the attributions ({_case(x, steps)})", like=x)
        expect_close(got, want, f"the attributions of a linear model ({_case(x, steps)})",
                     rtol=1e-10, atol=1e-12)

    return [Call(model, x, t, baseline=baseline, steps=steps)], judge


def _ig_linear(ctx):
    x, t = _images(ctx, 9, torch.float64), _targets(ctx)
    drawn_x, drawn_t, features, classes = _drawn_input(ctx, torch.float64)
    return combine(
        _ig_exact(ctx, _linear(ctx, 8, dtype=torch.float64), x, t,
                  ctx.randn(*x.shape, seed=10, dtype=torch.float64), 1),
        _ig_exact(ctx, _linear(ctx, ctx.fresh_seed(), features, classes, torch.float64),
                  drawn_x, drawn_t, ctx.randn(*drawn_x.shape, seed=ctx.fresh_seed(),
                                              dtype=torch.float64), ctx.integers(1, 7)))


def _ig_rules(ctx):
    model, x, t = _ig_drawn(ctx)
    model.train()
    baseline = ctx.randn(*x.shape, seed=ctx.fresh_seed())

    def judge(outs):
        expect_rules(outs[0], f"integrated_gradients ({_case(x, 16)})")

    return [Call(model, x, t, baseline=baseline, steps=16).observe()], judge


INTEGRATED_GRADIENTS = Question(
    "integrated_gradients", "Integrated gradients (midpoint rule)", [
        Check("agrees with deepscope.saliency.integrated_gradients (midpoint rule, zero "
              "baseline, a target per input): the published case and a drawn one", 1,
              _ig_reference,
              hint="nodes a_k = (k + 1/2) / steps, weights 1/steps; attributions = (x - baseline) "
                   "* sum_k w_k grad f(baseline + a_k (x - baseline)); x may have any shape "
                   "(B, ...)"),
        Check("uses the baseline it is given (random baselines, an int target)", 1,
              _ig_baseline),
        Check("completeness: each input's attributions sum to f(x) - f(baseline)", 1,
              _ig_completeness, hint="did you multiply the averaged gradient by (x - baseline)?"),
        Check("linear model: equals (x - baseline) * w exactly, in float64", 1, _ig_linear,
              hint="a linear model's gradient is its weight row w everywhere; keep the input's "
                   "dtype and device (alphas with dtype=x.dtype, device=x.device)"),
        Check("keeps the rules: x, the baseline and the model (parameters, requires_grad, "
              "train mode) unchanged, no hook left, the global generator untouched", 1,
              _ig_rules, hint="work on copies: point = (baseline + a (x - baseline))"
                              ".detach().requires_grad_(); never call x.requires_grad_() or "
                              "model.eval() on what you were given"),
    ])


# --- SmoothGrad -------------------------------------------------------------------------------


def _sg_agrees(model, x, t, noise, sigma, samples, what="the SmoothGrad map", rtol=1e-4,
               atol=1e-6):
    want = reference.smoothgrad(model, x, t, sigma=sigma, samples=samples, noise=noise)
    case = _case(x, extra=f", sigma {sigma:.2g}, {samples} samples")

    def judge(outs):
        got = expect_tensor(outs[0], f"{what} ({case})", like=x)
        expect_close(got, want, f"{what} ({case})", rtol=rtol, atol=atol)

    return [Call(model, x, t, sigma=sigma, samples=samples, noise=noise)], judge


def _sg_published(ctx, dtype, activation, seed, target=None, sigma=0.3, samples=16):
    model = _mlp(ctx, seed, activation=activation, dtype=dtype)
    x = _images(ctx, seed + 1, dtype)
    t = _targets(ctx) if target is None else target
    noise = ctx.randn(samples, *x.shape, seed=seed + 2, dtype=dtype)
    return model, x, t, noise


def _sg_drawn(ctx, dtype=torch.float32, activation="relu"):
    x, t, features, classes = _drawn_input(ctx, dtype)
    model = _mlp(ctx, ctx.fresh_seed(), features, ctx.integers(6, 16), classes, activation, dtype)
    samples = ctx.integers(3, 24)
    noise = ctx.randn(samples, *x.shape, seed=ctx.fresh_seed(), dtype=dtype)
    return model, x, t, noise, round(ctx.uniform(0.05, 1.0), 3), samples


def _sg_reference(ctx):
    model, x, t, noise, sigma, samples = _sg_drawn(ctx)
    published = _sg_published(ctx, torch.float32, "relu", 20)
    return combine(_sg_agrees(*published, 0.3, 16), _sg_agrees(model, x, t, noise, sigma, samples))


def _noisy_gradients(model, x, t, sigma, draws, generator):
    """Gradients of the target scores at ``draws`` noisy copies of x: shape (draws, numel(x))."""
    eps = torch.randn((draws, *x.shape), generator=generator, dtype=x.dtype).to(x.device)
    noisy = (x[None] + sigma * eps).reshape(draws * len(x), *x.shape[1:]).requires_grad_(True)
    rows = torch.arange(draws * len(x), device=x.device)
    scores = model(noisy)[rows, t.repeat(draws)]
    (grads,) = torch.autograd.grad(scores.sum(), noisy)
    return grads.reshape(draws, -1)


def smoothgrad_statistics_case(ctx):
    """The estimator check's case: a tanh network in float64, two inputs, targets, sigma, and
    the law of one noisy gradient g estimated from 8192 draws: ``(model, x, t, sigma, mean,
    whiten, rank, fourth)``, where ``w = whiten.T @ (g - mean)`` has identity covariance and
    ``fourth`` is the variance of ``|w|^2`` (2 rank for a Gaussian g; more for heavier tails)."""
    d = ctx.integers(6, 12)
    model = _mlp(ctx, ctx.fresh_seed(), d, d + ctx.integers(4, 12), 3, "tanh", torch.float64)
    x = ctx.randn(2, d, seed=ctx.fresh_seed(), dtype=torch.float64)
    t = torch.tensor([ctx.integers(0, 2), ctx.integers(0, 2)], device=ctx.device)
    sigma = round(ctx.uniform(0.3, 0.8), 3)
    grads = _noisy_gradients(model, x, t, sigma, 8192, ctx.generator(ctx.fresh_seed()))
    mean = grads.mean(0)
    values, vectors = torch.linalg.eigh(torch.cov(grads.T))
    keep = values > 1e-6 * values.max()
    whiten = vectors[:, keep] / values[keep].sqrt()
    fourth = float(((grads - mean) @ whiten).pow(2).sum(1).var())
    return model, x, t, sigma, mean, whiten, int(keep.sum()), fourth


def smoothgrad_statistic(maps: torch.Tensor, samples: int, mean, whiten) -> float:
    """sum_k samples * |whiten^T (map_k - mean)|^2 over the calls' maps (K, numel)."""
    return float((samples * ((maps - mean) @ whiten).pow(2)).sum())


def smoothgrad_null(rank: int, fourth: float, samples: int, repeats: int) -> tuple[float, float]:
    """The law of `smoothgrad_statistic` for a correct estimator, as a scaled chi-square
    ``c * chi2(nu)`` matching its mean, repeats * rank, and its variance, repeats * (2 rank +
    (fourth - 2 rank) / samples): exact for Gaussian gradients, and the excess kurtosis of
    averages of only a few bounded, skewed gradients (Satterthwaite 1946); returns (c, nu)."""
    mean = repeats * rank
    variance = repeats * (2 * rank + (fourth - 2 * rank) / samples)
    return variance / (2 * mean), 2 * mean**2 / variance


def _sg_statistics(ctx):
    """SmoothGrad with its own noise, judged as an estimator (see the module docstring)."""
    model, x, t, sigma, mean, whiten, rank, fourth = smoothgrad_statistics_case(ctx)
    repeats, sizes = 10, (4, 64)
    bounds = {}
    for n in sizes:
        scale, dof = smoothgrad_null(rank, fourth, n, repeats)
        bounds[n] = (scale * chi2.ppf(_TAIL, dof), scale * chi2.isf(_TAIL, dof))
    calls = [Call(model, x, t, sigma=sigma, samples=n) for n in sizes for _ in range(repeats)]
    case = _case(x, extra=f", sigma {sigma:.2g}, a tanh network, noise=None")

    def judge(outs):
        maps = [expect_tensor(o, f"the SmoothGrad map ({case})", like=x).reshape(-1)
                for o in outs]
        for n_i, n in enumerate(sizes):
            group = torch.stack(maps[n_i * repeats:(n_i + 1) * repeats]).to(mean)
            if (group[1:] == group[:1]).all(dim=1).any():
                raise Fail(f"two calls with noise=None and samples={n} returned the same map "
                           f"({case}): draw fresh noise on every call (torch.randn, without "
                           "reseeding the global generator)")
            stat = smoothgrad_statistic(group, n, mean, whiten)
            low, high = bounds[n]
            if not low <= stat <= high:
                ratio = stat / (repeats * rank)
                why = ("the maps vary much less than averages of independent noisy gradients do"
                       if stat < low else "the maps vary more, or sit farther from the "
                       "smoothed gradient, than averages of independent noisy gradients do")
                raise Fail(f"with noise=None and samples={n} ({case}), {why}: their squared "
                           f"whitened error is {ratio:.2g} times what {n} independent "
                           f"draws of sigma * N(0, 1) noise give (a correct answer stays "
                           f"between {low / (repeats * rank):.2g} and "
                           f"{high / (repeats * rank):.2g} but for a chance far below 1e-6)")

    return calls, judge


def _sg_closed_forms(ctx):
    x, t, features, classes = _drawn_input(ctx)
    model = _linear(ctx, ctx.fresh_seed(), features, classes)
    want = _row_weights(model, t, x)
    sigma = round(ctx.uniform(0.1, 2.0), 3)

    def judge(outs):
        got = expect_tensor(outs[0], f"the SmoothGrad map ({_case(x)})", like=x)
        expect_close(got, want, f"SmoothGrad of a linear model ({_case(x)}; it must equal the "
                     "weight row of the target, whatever the noise)", rtol=1e-5, atol=1e-6)

    linear = ([Call(model, x, t, sigma=sigma, samples=8)], judge)
    model64, x64, _, noise64 = _sg_published(ctx, torch.float64, "tanh", 40, target=1)
    return combine(linear, _sg_agrees(model64, x64, 1, noise64, 0.3, 16,
                                      "the SmoothGrad map (float64 input)", 1e-10, 1e-12))


def _sg_rules(ctx):
    model, x, t, noise, sigma, samples = _sg_drawn(ctx)
    model.train()

    def judge(outs):
        expect_rules(outs[0], f"smoothgrad with noise given ({_case(x)})")

    return [Call(model, x, t, sigma=sigma, samples=samples, noise=noise).observe()], judge


SMOOTHGRAD = Question(
    "smoothgrad", "SmoothGrad", [
        Check("agrees with deepscope.saliency.smoothgrad on the same noise: the published case "
              "and a drawn one", 1, _sg_reference,
              hint="perturb with sigma * noise (sigma is absolute, in the units of x) and "
                   "average the gradients over the samples"),
        Check("draws its own noise when none is given: fresh draws on every call, spread "
              "shrinking as 1/samples, centred on the smoothed gradient", 1, _sg_statistics,
              hint="noise = torch.randn(samples, *x.shape, dtype=x.dtype, device=x.device) on "
                   "every call; average over exactly `samples` draws"),
        Check("linear model: equals the target's weight row whatever the noise; keeps float64",
              1, _sg_closed_forms, hint="average the gradients themselves (not their squares "
                                        "or sums)"),
        Check("keeps the rules: x, noise and the model unchanged, no hook left, the global "
              "generator untouched when noise is given", 1, _sg_rules,
              hint="when noise is given, draw nothing; never modify noise or x in place"),
    ])


# --- Grad-CAM ---------------------------------------------------------------------------------


def _cnn(ctx, seed: int, dtype=torch.float32, channels=(4, 6), in_channels=1,
         classes=3) -> nn.Module:
    return ctx.build(lambda: models.small_cnn(in_channels, classes, channels=channels),
                     seed).to(dtype)


def _cam_agrees(model, x, t, layer_name):
    layer = getattr(model, layer_name)
    want = reference.grad_cam(model, x, t, layer, upsample=False)
    what = f"the Grad-CAM maps at {layer_name} ({_case(x)})"

    def judge(outs):
        got = expect_tensor(outs[0], what, like=want)
        expect_close(got, want, what, rtol=1e-4, atol=1e-6)

    return [Call(model, x, t, layer)], judge


def _cam_drawn(ctx, target_per_image=True, dtype=torch.float32):
    c_in, classes = ctx.integers(1, 3), ctx.integers(2, 5)
    model = _cnn(ctx, ctx.fresh_seed(), dtype, (ctx.integers(3, 8), ctx.integers(3, 8)), c_in,
                 classes)
    b, size = ctx.integers(2, 5), ctx.integers(5, 12)
    x = ctx.randn(b, c_in, size, size + ctx.integers(0, 3), seed=ctx.fresh_seed(), dtype=dtype)
    t = (torch.tensor([ctx.integers(0, classes - 1) for _ in range(b)], device=ctx.device)
         if target_per_image else ctx.integers(0, classes - 1))
    return model, x, t


def _cam_last(ctx):
    published = _cam_agrees(_cnn(ctx, 50), ctx.randn(3, 1, 8, 8, seed=51),
                            torch.tensor(_TARGETS[:3], device=ctx.device), "conv2")
    return combine(published, _cam_agrees(*_cam_drawn(ctx), "conv2"))


def _cam_early(ctx):
    published = _cam_agrees(_cnn(ctx, 60), ctx.randn(3, 1, 8, 8, seed=61), 0, "relu1")
    return combine(published, _cam_agrees(*_cam_drawn(ctx, target_per_image=False), "relu1"))


def _cam_of_gap(model, x, t):
    with torch.no_grad():
        features = model[: list(dict(model.named_children())).index("relu2") + 1](x)
        weights = model.fc.weight[t]  # (B, K)
        h, w = features.shape[2:]
        want = torch.relu(torch.einsum("bk,bkhw->bhw", weights, features) / (h * w))
    what = f"the Grad-CAM maps at relu2 ({_case(x)})"

    def judge(outs):
        got = expect_tensor(outs[0], what, like=want)
        expect_close(got, want, f"{what}: they must equal ReLU(sum_k w_k A_k) / (h w), the "
                     "class activation map of a global-average-pooling network", rtol=1e-9,
                     atol=1e-12)

    return [Call(model, x, t, model.relu2)], judge


def _cam_gap(ctx):
    published = _cam_of_gap(_cnn(ctx, 70, torch.float64),
                            ctx.randn(3, 1, 8, 8, seed=71, dtype=torch.float64),
                            torch.tensor(_TARGETS[:3], device=ctx.device))
    return combine(published, _cam_of_gap(*_cam_drawn(ctx, dtype=torch.float64)))


def _cam_rules(ctx):
    model, x, t = _cam_drawn(ctx)
    model.train()

    def judge(outs):
        expect_rules(outs[0], f"grad_cam ({_case(x)})")

    return [Call(model, x, t, model.conv2).observe()], judge


GRAD_CAM = Question(
    "grad_cam", "Grad-CAM", [
        Check("agrees with deepscope.saliency.grad_cam at the last conv layer (no upsampling): "
              "the published case and a drawn network and input size", 1, _cam_last,
              hint="weights = gradients averaged over the spatial positions; map = "
                   "ReLU(sum_k weight_k * activation_k), at the layer's own (h, w)"),
        Check("agrees at an earlier layer (an int target)", 1, _cam_early),
        Check("global-average-pooling network: equals the class activation map / (h w), float64",
              1, _cam_gap),
        Check("keeps the rules: the hook is removed, the model and x are unchanged, the global "
              "generator untouched", 1, _cam_rules,
              hint="handle = layer.register_forward_hook(...); try: ... finally: "
                   "handle.remove()"),
    ])

ASSIGNMENT = Assignment(
    id="01_saliency",
    title="Saliency: integrated gradients, SmoothGrad and Grad-CAM",
    questions=[INTEGRATED_GRADIENTS, SMOOTHGRAD, GRAD_CAM],
    master="instructor/01_saliency/assignment.ipynb",
    student="chapters/01_saliency/assignment.ipynb",
)
