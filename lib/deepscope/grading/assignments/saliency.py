"""Checks of assignment 1 (saliency): integrated gradients, SmoothGrad and Grad-CAM.

Each question is compared with `deepscope.saliency` on seeded small models (the reference), and
checked against a property that needs no reference: completeness of integrated gradients, the
closed forms of a linear model (IG = (x - x') * w, SmoothGrad = w whatever the noise), and
Grad-CAM's equality with the class activation map of a global-average-pooling network.
"""

from __future__ import annotations

import torch
from torch import nn

from ... import models
from ... import saliency as reference
from ..checks import Assignment, Call, Check, Question, expect_close, expect_tensor

_TARGETS = [0, 1, 2, 1]


def _mlp(ctx, seed: int, activation: str = "relu", dtype=torch.float32) -> nn.Module:
    return ctx.build(lambda: models.mlp(16, hidden=(12,), out_features=3,
                                        activation=activation), seed).to(dtype)


def _linear(ctx, seed: int, dtype=torch.float32) -> nn.Module:
    return ctx.build(lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), seed).to(dtype)


def _images(ctx, seed: int, dtype=torch.float32) -> torch.Tensor:
    return ctx.randn(4, 1, 4, 4, seed=seed, dtype=dtype)


def _targets(ctx) -> torch.Tensor:
    return torch.tensor(_TARGETS, device=ctx.device)


def _row_weights(model: nn.Module, target: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The linear model's weight row of each image's target, in the shape of ``like``."""
    return model[1].weight.detach()[target].reshape(like.shape)


# --- integrated gradients ---------------------------------------------------------------------


def _ig_reference(ctx):
    model, x, t = _mlp(ctx, 1), _images(ctx, 2), _targets(ctx)
    want = reference.integrated_gradients(model, x, t, steps=32, method="riemann_middle")

    def judge(outs):
        got = expect_tensor(outs[0], "the attributions", like=x)
        expect_close(got, want, "the attributions", rtol=1e-4, atol=1e-6)

    return [Call(model, x, t, steps=32)], judge


def _ig_baseline(ctx):
    model, x = _mlp(ctx, 3), _images(ctx, 4)
    baseline = ctx.randn(*x.shape, seed=5)
    want = reference.integrated_gradients(model, x, 2, baseline=baseline, steps=16,
                                          method="riemann_middle")

    def judge(outs):
        got = expect_tensor(outs[0], "the attributions", like=x)
        expect_close(got, want, "the attributions from a random baseline", rtol=1e-4,
                     atol=1e-6)

    return [Call(model, x, 2, baseline=baseline, steps=16)], judge


def _ig_completeness(ctx):
    model = _mlp(ctx, 6, activation="tanh", dtype=torch.float64)
    x, t = _images(ctx, 7, torch.float64), _targets(ctx)
    baseline = 0.5 * torch.ones_like(x)
    with torch.no_grad():
        rows = torch.arange(len(x))
        gap = model(x)[rows, t] - model(baseline)[rows, t]

    def judge(outs):
        got = expect_tensor(outs[0], "the attributions", like=x)
        expect_close(got.flatten(1).sum(1), gap, "the sum of each image's attributions "
                     "(completeness: it must equal f(x) - f(baseline))", rtol=1e-4, atol=1e-6)

    return [Call(model, x, t, baseline=baseline, steps=128)], judge


def _ig_linear(ctx):
    model = _linear(ctx, 8, torch.float64)
    x, t = _images(ctx, 9, torch.float64), _targets(ctx)
    baseline = ctx.randn(*x.shape, seed=10, dtype=torch.float64)
    want = (x - baseline) * _row_weights(model, t, x)

    def judge(outs):
        got = expect_tensor(outs[0], "the attributions (float64 input)", like=x)
        expect_close(got, want, "the attributions of a linear model", rtol=1e-10, atol=1e-12)

    return [Call(model, x, t, baseline=baseline, steps=1)], judge


INTEGRATED_GRADIENTS = Question(
    "integrated_gradients", "Integrated gradients (midpoint rule)", [
        Check("agrees with deepscope.saliency.integrated_gradients (riemann_middle, zero "
              "baseline, 32 steps, a target per image)", 2, _ig_reference,
              hint="nodes a_k = (k + 1/2) / steps, weights 1/steps; attributions = (x - baseline) "
                   "* sum_k w_k grad f(baseline + a_k (x - baseline))"),
        Check("uses the baseline it is given (a random one, an int target)", 1, _ig_baseline),
        Check("completeness: each image's attributions sum to f(x) - f(baseline)", 1,
              _ig_completeness, hint="did you multiply the averaged gradient by (x - baseline)?"),
        Check("linear model: equals (x - baseline) * w exactly, in float64", 1, _ig_linear,
              hint="a linear model's gradient is its weight row w everywhere; keep the input's "
                   "dtype and device (alphas with dtype=x.dtype, device=x.device)"),
    ])


# --- SmoothGrad -------------------------------------------------------------------------------


def _sg_matched(ctx, dtype, activation, seed, target=None):
    model = _mlp(ctx, seed, activation=activation, dtype=dtype)
    x = _images(ctx, seed + 1, dtype)
    t = _targets(ctx) if target is None else target
    noise = ctx.randn(16, *x.shape, seed=seed + 2, dtype=dtype)
    want = reference.smoothgrad(model, x, t, sigma=0.3, samples=16, noise=noise)
    return model, x, t, noise, want


def _sg_reference(ctx):
    model, x, t, noise, want = _sg_matched(ctx, torch.float32, "relu", 20)

    def judge(outs):
        got = expect_tensor(outs[0], "the SmoothGrad map", like=x)
        expect_close(got, want, "the SmoothGrad map", rtol=1e-4, atol=1e-6)

    return [Call(model, x, t, sigma=0.3, samples=16, noise=noise)], judge


def _sg_linear(ctx):
    model = _linear(ctx, 30)
    x, t = _images(ctx, 31), _targets(ctx)
    want = _row_weights(model, t, x)

    def judge(outs):
        got = expect_tensor(outs[0], "the SmoothGrad map", like=x)
        expect_close(got, want, "SmoothGrad of a linear model (it must equal the weight row of "
                     "the target, whatever the noise)", rtol=1e-5, atol=1e-6)

    return [Call(model, x, t, sigma=1.0, samples=8)], judge


def _sg_float64(ctx):
    model, x, t, noise, want = _sg_matched(ctx, torch.float64, "tanh", 40, target=1)

    def judge(outs):
        got = expect_tensor(outs[0], "the SmoothGrad map (float64 input)", like=x)
        expect_close(got, want, "the SmoothGrad map", rtol=1e-10, atol=1e-12)

    return [Call(model, x, t, sigma=0.3, samples=16, noise=noise)], judge


SMOOTHGRAD = Question(
    "smoothgrad", "SmoothGrad", [
        Check("agrees with deepscope.saliency.smoothgrad on the same noise (sigma = 0.3, 16 "
              "samples)", 2, _sg_reference,
              hint="perturb with sigma * noise (sigma is absolute, in the units of x) and "
                   "average the gradients over the samples"),
        Check("linear model: equals the target's weight row, drawing its own noise", 1,
              _sg_linear, hint="average the gradients themselves (not their squares or sums)"),
        Check("keeps float64 (matched noise, an int target)", 1, _sg_float64),
    ])


# --- Grad-CAM ---------------------------------------------------------------------------------


def _cnn(ctx, seed: int, dtype=torch.float32) -> nn.Module:
    return ctx.build(lambda: models.small_cnn(1, 3, channels=(4, 6)), seed).to(dtype)


def _cam_reference(ctx, layer_name, target, seed):
    model = _cnn(ctx, seed)
    x = ctx.randn(3, 1, 8, 8, seed=seed + 1)
    t = torch.tensor(target[:3], device=ctx.device) if isinstance(target, list) else target
    layer = getattr(model, layer_name)
    want = reference.grad_cam(model, x, t, layer, upsample=False)

    def judge(outs):
        got = expect_tensor(outs[0], f"the Grad-CAM maps at {layer_name}", like=want)
        expect_close(got, want, f"the Grad-CAM maps at {layer_name}", rtol=1e-4, atol=1e-6)

    return [Call(model, x, t, layer)], judge


def _cam_last(ctx):
    return _cam_reference(ctx, "conv2", _TARGETS, 50)


def _cam_early(ctx):
    return _cam_reference(ctx, "relu1", 0, 60)


def _cam_gap(ctx):
    model = _cnn(ctx, 70, torch.float64)
    x = ctx.randn(3, 1, 8, 8, seed=71, dtype=torch.float64)
    t = torch.tensor(_TARGETS[:3], device=ctx.device)
    with torch.no_grad():
        features = model[: list(dict(model.named_children())).index("relu2") + 1](x)
        weights = model.fc.weight[t]  # (B, K)
        h, w = features.shape[2:]
        want = torch.relu(torch.einsum("bk,bkhw->bhw", weights, features) / (h * w))

    def judge(outs):
        got = expect_tensor(outs[0], "the Grad-CAM maps at relu2 (float64 input)", like=want)
        expect_close(got, want, "the Grad-CAM maps of a global-average-pooling network (they "
                     "must equal ReLU(sum_k w_k A_k) / (h w), the class activation map)",
                     rtol=1e-9, atol=1e-12)

    return [Call(model, x, t, model.relu2)], judge


GRAD_CAM = Question(
    "grad_cam", "Grad-CAM", [
        Check("agrees with deepscope.saliency.grad_cam at the last conv layer (no upsampling)",
              2, _cam_last, hint="weights = gradients averaged over the spatial positions; map = "
                                 "ReLU(sum_k weight_k * activation_k)"),
        Check("agrees at an earlier layer (an int target)", 1, _cam_early),
        Check("global-average-pooling network: equals the class activation map / (h w), float64",
              1, _cam_gap),
    ])

ASSIGNMENT = Assignment(
    id="01_saliency",
    title="Saliency: integrated gradients, SmoothGrad and Grad-CAM",
    questions=[INTEGRATED_GRADIENTS, SMOOTHGRAD, GRAD_CAM],
    master="instructor/01_saliency/assignment.ipynb",
    student="chapters/01_saliency/assignment.ipynb",
)
