"""Checks of assignment 2 (loss landscapes): filter normalisation, the Hessian-vector product,
power iteration and Hutchinson's trace estimator.

References: `deepscope.landscape` (filter normalisation, the Hessian-vector product, the exact
Hessian) and closed forms: per-filter scale invariance, H = (2/N) A^T A for least squares,
matrices with a known spectrum, and Hutchinson's estimator being exact on a diagonal matrix.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ... import landscape as reference
from ... import models
from ..checks import (
    Assignment,
    Call,
    Check,
    Fail,
    Question,
    expect_close,
    expect_number_close,
    expect_scalar,
    expect_tensor,
)

# --- filter normalisation ---------------------------------------------------------------------


def _cnn_weights(ctx, seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    model = ctx.build(lambda: models.small_cnn(1, 3, channels=(4, 6)), seed).to(dtype)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _random_like(ctx, weights: dict, seed: int) -> dict[str, torch.Tensor]:
    return {n: ctx.randn(*w.shape, seed=seed + i, dtype=w.dtype)
            for i, (n, w) in enumerate(weights.items())}


def _expect_direction(value, like: dict, what: str) -> dict:
    if not isinstance(value, dict) or set(value) != set(like):
        got = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise Fail(f"{what} should be a dict with the keys {sorted(like)}, got {got}")
    for name, tensor in like.items():
        expect_tensor(value[name], f"{what}[{name!r}]", like=tensor)
    return value


def _fn_reference(ctx):
    weights = _cnn_weights(ctx, 1)
    direction = _random_like(ctx, weights, 100)
    want = reference.filter_normalize(direction, weights, biases="zero")

    def judge(outs):
        got = _expect_direction(outs[0], weights, "the normalised direction")
        for name in weights:
            expect_close(got[name], want[name], f"the normalised direction[{name!r}]",
                         rtol=1e-5, atol=1e-7)

    return [Call(direction, weights)], judge


def _fn_invariance(ctx):
    weights = _cnn_weights(ctx, 2, torch.float64)
    direction = _random_like(ctx, weights, 200)
    scaled = {}
    for i, (name, d) in enumerate(direction.items()):
        factors = 0.1 + 10 * torch.rand(d.shape[0], generator=ctx.generator(300 + i),
                                        dtype=d.dtype).to(d.device)
        scaled[name] = d * factors.view(-1, *([1] * (d.dim() - 1)))

    def judge(outs):
        first = _expect_direction(outs[0], weights, "the normalised direction (float64)")
        second = _expect_direction(outs[1], weights, "the normalised direction (float64)")
        for name, w in weights.items():
            if w.dim() <= 1:
                expect_close(first[name], torch.zeros_like(w), f"direction[{name!r}] (a bias: "
                             "Li et al. set it to zero)", rtol=0, atol=0)
                continue
            expect_close(first[name].flatten(1).norm(dim=1), w.flatten(1).norm(dim=1),
                         f"the filter norms of direction[{name!r}] (each must equal the norm "
                         "of the matching filter of the weights)", rtol=1e-10, atol=1e-12)
            expect_close(second[name], first[name], f"direction[{name!r}] after rescaling each "
                         "filter of the input direction by a different positive factor (the "
                         "result must not change)", rtol=1e-10, atol=1e-12)

    return [Call(direction, weights), Call(scaled, weights)], judge


FILTER_NORMALIZE = Question(
    "filter_normalize", "Filter normalisation", [
        Check("agrees with deepscope.landscape.filter_normalize (biases set to zero)", 2,
              _fn_reference, hint="a filter is one index of the first dimension: d[i] <- "
                                  "d[i] / ||d[i]|| * ||w[i]||, norms over all other dimensions"),
        Check("filter norms equal the weights', biases zero, invariant to rescaling each filter "
              "(float64)", 2, _fn_invariance),
    ])


# --- Hessian-vector product -------------------------------------------------------------------


def _flat_size(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _hvp_reference(ctx):
    model = ctx.build(lambda: models.mlp(6, hidden=(8,), out_features=3, activation="tanh"), 10)
    x = ctx.randn(20, 6, seed=11)
    y = torch.randint(0, 3, (20,), generator=ctx.generator(12)).to(ctx.device)
    v = ctx.randn(_flat_size(model), seed=13)
    want = reference.hvp(model, F.cross_entropy, (x, y), v)

    def judge(outs):
        got = expect_tensor(outs[0], "H v", like=v)
        expect_close(got, want, "H v", rtol=1e-4, atol=1e-6)

    return [Call(model, F.cross_entropy, x, y, v)], judge


def _hvp_least_squares(ctx):
    model = ctx.build(lambda: nn.Linear(5, 1), 20).to(torch.float64)
    x = ctx.randn(30, 5, seed=21, dtype=torch.float64)
    y = ctx.randn(30, 1, seed=22, dtype=torch.float64)
    A = torch.cat([x, torch.ones(30, 1, dtype=x.dtype, device=x.device)], dim=1)  # [w, b]
    vs = [ctx.randn(6, seed=23 + i, dtype=torch.float64) for i in range(2)]
    wants = [2 / len(x) * A.T @ (A @ v) for v in vs]

    def judge(outs):
        for got, want in zip(outs, wants):
            got = expect_tensor(got, "H v (float64 input)", like=want)
            expect_close(got, want, "H v for least squares (it must equal (2/N) A^T A v)",
                         rtol=1e-10, atol=1e-12)

    return [Call(model, nn.MSELoss(), x, y, v) for v in vs], judge


def _hvp_exact(ctx):
    model = ctx.build(lambda: models.mlp(3, hidden=(4,), out_features=2, activation="tanh"),
                      30).to(torch.float64)
    x = ctx.randn(10, 3, seed=31, dtype=torch.float64)
    y = torch.randint(0, 2, (10,), generator=ctx.generator(32)).to(ctx.device)
    H = reference.hessian_matrix(model, F.cross_entropy, (x, y))
    basis = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    picks = [0, H.shape[0] // 2, H.shape[0] - 1]

    def judge(outs):
        for got, i in zip(outs, picks):
            got = expect_tensor(got, "H e_i", like=basis[i])
            expect_close(got, H[:, i], f"H e_{i} (column {i} of the exact Hessian)", rtol=1e-8,
                         atol=1e-10)

    return [Call(model, F.cross_entropy, x, y, basis[i]) for i in picks], judge


HVP = Question(
    "hvp", "Hessian-vector product", [
        Check("agrees with deepscope.landscape.hvp (tanh MLP, cross-entropy)", 2, _hvp_reference,
              hint="differentiate g . v, where g = grad of the loss taken with create_graph=True"),
        Check("least squares: equals (2/N) A^T A v exactly (float64)", 1, _hvp_least_squares),
        Check("columns of the exact Hessian (float64)", 1, _hvp_exact),
    ])


# --- power iteration --------------------------------------------------------------------------


def _with_spectrum(ctx, values: list[float], seed: int, dtype=torch.float64):
    n = len(values)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=ctx.generator(seed), dtype=dtype))
    q = q.to(ctx.device)
    A = q @ torch.diag(torch.tensor(values, dtype=dtype, device=ctx.device)) @ q.T
    return (A + A.T) / 2, q


def _power_judge(value: float, vector: torch.Tensor, v0: torch.Tensor, rtol: float):
    def judge(outs):
        if not isinstance(outs[0], (tuple, list)) or len(outs[0]) != 2:
            raise Fail("power_iteration should return a pair (eigenvalue, eigenvector)")
        got_value, got_vector = outs[0]
        expect_number_close(got_value, value, "the eigenvalue", rtol=rtol)
        u = expect_tensor(got_vector, "the eigenvector", like=v0)
        norm = float(u.norm())
        if abs(norm - 1) > 1e-6:
            raise Fail(f"the eigenvector should have norm 1, got {norm:.6g}")
        alignment = abs(float(u.to(vector.dtype) @ vector))
        if alignment < 1 - 1e-6:
            raise Fail(f"the eigenvector is not the top one: |<u, q_1>| = {alignment:.6f}")
    return judge


def _power_known(ctx):
    values = [5.0, 2.5, -2.0, 1.0, 0.5, 0.25] + [0.1] * 14
    A, q = _with_spectrum(ctx, values, 40)
    v0 = ctx.randn(len(values), seed=41, dtype=torch.float64)
    return ([Call(functools.partial(torch.mv, A), v0, iters=100)],
            _power_judge(5.0, q[:, 0], v0, 1e-8))


def _power_negative(ctx):
    values = [-6.0, 3.0, 2.0, 1.0, -1.0, 0.5] + [0.2] * 10
    A, q = _with_spectrum(ctx, values, 50)
    v0 = ctx.randn(len(values), seed=51, dtype=torch.float64)
    return ([Call(functools.partial(torch.mv, A), v0, iters=100)],
            _power_judge(-6.0, q[:, 0], v0, 1e-8))


def _power_float32(ctx):
    values = [4.0, 1.0, 0.5, 0.25] + [0.1] * 8
    A, q = _with_spectrum(ctx, values, 60, torch.float32)
    v0 = ctx.randn(len(values), seed=61)
    return ([Call(functools.partial(torch.mv, A), v0, iters=60)],
            _power_judge(4.0, q[:, 0], v0, 1e-5))


POWER_ITERATION = Question(
    "power_iteration", "Power iteration", [
        Check("finds the top eigenpair of a matrix with a known spectrum (float64)", 2,
              _power_known, hint="v <- A v / ||A v||, then the eigenvalue is the Rayleigh "
                                 "quotient v . A v"),
        Check("keeps the sign of a dominant negative eigenvalue", 1, _power_negative,
              hint="||A v|| is |lambda|; the Rayleigh quotient v . A v keeps the sign"),
        Check("keeps float32 and the start vector's device", 1, _power_float32),
    ])


# --- Hutchinson's trace estimator --------------------------------------------------------------


def _hutchinson_diagonal(ctx):
    d = ctx.randn(40, seed=70, dtype=torch.float64)
    D = torch.diag(d)
    trace = float(d.sum())

    def judge(outs):
        for out in outs:
            expect_number_close(out, trace, "the estimate for a diagonal matrix (with "
                                "Rademacher probes z_i^2 = 1, so it must be exact)", rtol=1e-10,
                                atol=1e-10)

    like = torch.zeros(40, dtype=torch.float64, device=ctx.device)
    return [Call(functools.partial(torch.mv, D), like, samples=s, seed=s) for s in (1, 7)], judge


def _hutchinson_unbiased(ctx):
    B = ctx.randn(30, 30, seed=80, dtype=torch.float64)
    A = (B + B.T) / 2
    trace = float(A.trace())
    off = A - torch.diag(torch.diag(A))
    samples = 4000
    stderr = math.sqrt(2 * float((off**2).sum()) / samples)

    def judge(outs):
        got = expect_scalar(outs[0], "the estimate")
        if not abs(got - trace) <= 5 * stderr:
            raise Fail(f"the estimate {got:.4g} is {abs(got - trace) / stderr:.1f} standard "
                       f"errors from the trace {trace:.4g} ({samples} samples); expected within 5")

    like = torch.zeros(30, dtype=torch.float64, device=ctx.device)
    return [Call(functools.partial(torch.mv, A), like, samples=samples, seed=3)], judge


HUTCHINSON = Question(
    "hutchinson_trace", "Hutchinson's trace estimator", [
        Check("exact on diagonal matrices (Rademacher probes), for 1 and 7 samples", 2,
              _hutchinson_diagonal, hint="draw z with entries +-1 (not Gaussian) and average "
                                         "z . (A z) over the samples"),
        Check("within 5 standard errors of the trace of a symmetric matrix (4000 samples)", 1,
              _hutchinson_unbiased),
    ])

ASSIGNMENT = Assignment(
    id="02_loss_landscapes",
    title="Loss landscapes: filter normalisation, Hessian-vector products, power iteration, "
          "Hutchinson's trace",
    questions=[FILTER_NORMALIZE, HVP, POWER_ITERATION, HUTCHINSON],
    master="instructor/02_loss_landscapes/assignment.ipynb",
    student="chapters/02_loss_landscapes/assignment.ipynb",
)
