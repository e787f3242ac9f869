"""Checks of assignment 2 (loss landscapes): filter normalisation, the Hessian-vector product,
power iteration and Hutchinson's trace estimator.

References: `deepscope.landscape` (filter normalisation, the Hessian-vector product, the exact
Hessian) and closed forms: per-filter scale invariance, H = (2/N) A^T A for least squares,
matrices with a known spectrum, and Hutchinson's estimator being exact on a diagonal matrix.
Every check runs its published case and cases drawn at grading time: parameter dicts with
tensors of rank 1 to 4, networks with a frozen layer, spectra, sizes and seeds. Hutchinson's
estimator is judged as an estimator: the same seed repeats, different seeds differ, and the
errors of 30 seeds at 4 and at 64 samples follow the chi-square law that the exact variance of
Rademacher probes, 2 sum_{i != j} A_ij^2 / samples, gives.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from scipy.stats import chi2
from torch import nn

from ... import landscape as reference
from ... import models
from ..checks import (
    Assignment,
    Call,
    Check,
    Fail,
    Question,
    combine,
    expect_close,
    expect_number_close,
    expect_rules,
    expect_scalar,
    expect_tensor,
)

_TAIL = 1e-7  # tail probability of each side of a statistical bound

# --- filter normalisation ---------------------------------------------------------------------


def _cnn_weights(ctx, seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    model = ctx.build(lambda: models.small_cnn(1, 3, channels=(4, 6)), seed).to(dtype)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _random_like(ctx, weights: dict, seed: int) -> dict[str, torch.Tensor]:
    return {n: ctx.randn(*w.shape, seed=seed + i, dtype=w.dtype)
            for i, (n, w) in enumerate(weights.items())}


def _drawn_weights(ctx, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Parameters of a network drawn at grading time: a linear, a conv1d and a conv2d weight
    (ranks 2, 3 and 4, in a drawn order) with their biases, of drawn sizes."""
    shapes = {"linear": (ctx.integers(2, 9), ctx.integers(2, 9)),
              "conv1d": (ctx.integers(2, 6), ctx.integers(1, 4), ctx.integers(1, 5)),
              "conv2d": (ctx.integers(2, 6), ctx.integers(1, 4), 3, 3)}
    order = [str(k) for k in ctx.rng.permutation(list(shapes))]
    weights = {}
    for i, kind in enumerate(order):
        shape = shapes[kind]
        scale = ctx.uniform(0.1, 3.0)
        weights[f"layer{i}.weight"] = scale * ctx.randn(*shape, seed=ctx.fresh_seed(), dtype=dtype)
        weights[f"layer{i}.bias"] = ctx.randn(shape[0], seed=ctx.fresh_seed(), dtype=dtype)
    return weights


def _expect_direction(value, like: dict, what: str) -> dict:
    if not isinstance(value, dict) or set(value) != set(like):
        got = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise Fail(f"{what} should be a dict with the keys {sorted(like)}, got {got}")
    for name, tensor in like.items():
        expect_tensor(value[name], f"{what}[{name!r}]", like=tensor)
    return value


def _describe(weights: dict) -> str:
    return "parameters " + ", ".join(f"{n} {tuple(w.shape)}" for n, w in weights.items())


def _fn_agrees(weights, direction):
    want = reference.filter_normalize(direction, weights, biases="zero")
    what = f"the normalised direction ({_describe(weights)})"

    def judge(outs):
        got = _expect_direction(outs[0], weights, what)
        for name in weights:
            expect_close(got[name], want[name], f"{what}[{name!r}]", rtol=1e-5, atol=1e-7)

    return [Call(direction, weights)], judge


def _fn_reference(ctx):
    weights = _cnn_weights(ctx, 1)
    drawn = _drawn_weights(ctx)
    return combine(_fn_agrees(weights, _random_like(ctx, weights, 100)),
                   _fn_agrees(drawn, _random_like(ctx, drawn, ctx.fresh_seed())))


def _fn_properties(ctx, weights, seed):
    direction = _random_like(ctx, weights, seed)
    scaled = {}
    for i, (name, d) in enumerate(direction.items()):
        factors = 0.1 + 10 * torch.rand(d.shape[0], generator=ctx.generator(seed + 300 + i),
                                        dtype=d.dtype).to(d.device)
        scaled[name] = d * factors.view(-1, *([1] * (d.dim() - 1)))
    what = f"the normalised direction ({_describe(weights)}, float64)"

    def judge(outs):
        first = _expect_direction(outs[0], weights, what)
        second = _expect_direction(outs[1], weights, what)
        for name, w in weights.items():
            if w.dim() <= 1:
                expect_close(first[name], torch.zeros_like(w), f"direction[{name!r}] (a bias: "
                             "Li et al. set it to zero)", rtol=0, atol=0)
                continue
            expect_close(first[name].flatten(1).norm(dim=1), w.flatten(1).norm(dim=1),
                         f"the filter norms of direction[{name!r}] of shape {tuple(w.shape)} "
                         "(each must equal the norm of the matching filter of the weights)",
                         rtol=1e-10, atol=1e-12)
            expect_close(second[name], first[name], f"direction[{name!r}] after rescaling each "
                         "filter of the input direction by a different positive factor (the "
                         "result must not change)", rtol=1e-10, atol=1e-12)

    return [Call(direction, weights), Call(scaled, weights)], judge


def _fn_invariance(ctx):
    return combine(_fn_properties(ctx, _cnn_weights(ctx, 2, torch.float64), 200),
                   _fn_properties(ctx, _drawn_weights(ctx, torch.float64), ctx.fresh_seed()))


def _fn_rules(ctx):
    weights = _drawn_weights(ctx)
    direction = _random_like(ctx, weights, ctx.fresh_seed())

    def judge(outs):
        expect_rules(outs[0], f"filter_normalize ({_describe(weights)})")

    return [Call(direction, weights).observe()], judge


FILTER_NORMALIZE = Question(
    "filter_normalize", "Filter normalisation", [
        Check("agrees with deepscope.landscape.filter_normalize (biases set to zero): the "
              "published network and drawn parameters of rank 1 to 4", 1, _fn_reference,
              hint="a filter is one index of the first dimension, whatever the rank: d[i] <- "
                   "d[i] / ||d[i]|| * ||w[i]||, norms over all other dimensions"),
        Check("filter norms equal the weights', biases zero, invariant to rescaling each filter "
              "(float64)", 2, _fn_invariance),
        Check("keeps the rules: direction and weights (the dicts and their tensors) unchanged",
              1, _fn_rules, hint="build a new dict; never assign into `direction` or divide its "
                                 "tensors in place"),
    ])


# --- Hessian-vector product -------------------------------------------------------------------


def _flat_size(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _drawn_network(ctx, dtype=torch.float32):
    """A network drawn at grading time, sometimes with its first layer frozen, and its data."""
    d, k, n = ctx.integers(2, 7), ctx.integers(2, 4), ctx.integers(5, 25)
    hidden = tuple(ctx.integers(2, 8) for _ in range(ctx.integers(1, 2)))
    activation = ctx.choice(["tanh", "gelu", "softplus"])
    model = ctx.build(lambda: models.mlp(d, hidden=hidden, out_features=k,
                                         activation=activation), ctx.fresh_seed()).to(dtype)
    frozen = ctx.integers(0, 1) == 1
    if frozen:
        model.fc1.requires_grad_(False)
    x = ctx.randn(n, d, seed=ctx.fresh_seed(), dtype=dtype)
    y = torch.randint(0, k, (n,), generator=ctx.generator(ctx.fresh_seed())).to(ctx.device)
    case = (f"a {activation} MLP {d}-{'-'.join(map(str, hidden))}-{k}"
            + (" with its first layer frozen" if frozen else "") + f", {n} samples")
    return model, x, y, case


def _hvp_agrees(ctx, model, x, y, case):
    v = ctx.randn(_flat_size(model), seed=ctx.fresh_seed(), dtype=x.dtype)
    want = reference.hvp(model, F.cross_entropy, (x, y), v)

    def judge(outs):
        got = expect_tensor(outs[0], f"H v ({case})", like=v)
        expect_close(got, want, f"H v ({case})", rtol=1e-4, atol=1e-6)

    return [Call(model, F.cross_entropy, x, y, v)], judge


def _hvp_reference(ctx):
    model = ctx.build(lambda: models.mlp(6, hidden=(8,), out_features=3, activation="tanh"), 10)
    x = ctx.randn(20, 6, seed=11)
    y = torch.randint(0, 3, (20,), generator=ctx.generator(12)).to(ctx.device)
    return combine(_hvp_agrees(ctx, model, x, y, "the published tanh MLP 6-8-3"),
                   _hvp_agrees(ctx, *_drawn_network(ctx)))


def _least_squares(ctx, n, p, seeds):
    model = ctx.build(lambda: nn.Linear(p, 1), seeds[0]).to(torch.float64)
    x = ctx.randn(n, p, seed=seeds[1], dtype=torch.float64)
    y = ctx.randn(n, 1, seed=seeds[2], dtype=torch.float64)
    A = torch.cat([x, torch.ones(n, 1, dtype=x.dtype, device=x.device)], dim=1)  # [w, b]
    vs = [ctx.randn(p + 1, seed=seeds[3] + i, dtype=torch.float64) for i in range(2)]
    wants = [2 / n * A.T @ (A @ v) for v in vs]

    def judge(outs):
        for got, want in zip(outs, wants):
            got = expect_tensor(got, f"H v ({n} x {p} least squares, float64)", like=want)
            expect_close(got, want, f"H v for least squares with {n} samples and {p} features "
                         "(it must equal (2/N) A^T A v)", rtol=1e-10, atol=1e-12)

    return [Call(model, nn.MSELoss(), x, y, v) for v in vs], judge


def _hvp_least_squares(ctx):
    return combine(_least_squares(ctx, 30, 5, (20, 21, 22, 23)),
                   _least_squares(ctx, ctx.integers(8, 40), ctx.integers(1, 9),
                                  [ctx.fresh_seed() for _ in range(4)]))


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


def _hvp_rules(ctx):
    model, x, y, case = _drawn_network(ctx)
    model.train()
    v = ctx.randn(_flat_size(model), seed=ctx.fresh_seed())

    def judge(outs):
        expect_rules(outs[0], f"hvp ({case})")

    return [Call(model, F.cross_entropy, x, y, v).observe()], judge


HVP = Question(
    "hvp", "Hessian-vector product", [
        Check("agrees with deepscope.landscape.hvp (cross-entropy): the published MLP and a "
              "drawn one, sometimes with a frozen layer", 1, _hvp_reference,
              hint="differentiate g . v, where g = grad of the loss taken with create_graph=True, "
                   "over the parameters that require gradients only"),
        Check("least squares: equals (2/N) A^T A v exactly (float64)", 1, _hvp_least_squares),
        Check("columns of the exact Hessian (float64)", 1, _hvp_exact),
        Check("keeps the rules: the model's parameters, requires_grad flags and mode, x, y and "
              "v unchanged", 1, _hvp_rules,
              hint="use torch.autograd.grad on the parameters as they are; do not set "
                   "requires_grad, move or perturb them"),
    ])


# --- power iteration --------------------------------------------------------------------------


def _with_spectrum(ctx, values: list[float], seed: int, dtype=torch.float64):
    n = len(values)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=ctx.generator(seed), dtype=torch.float64))
    A = q @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ q.T
    return ((A + A.T) / 2).to(ctx.device, dtype), q.to(ctx.device, dtype)


def _drawn_spectrum(ctx, sign=None, ratio=None) -> list[float]:
    n = ctx.integers(8, 40)
    top = ctx.uniform(1.0, 10.0) * (sign if sign is not None else ctx.choice([-1.0, 1.0]))
    ratio = ctx.uniform(0.2, 0.6) if ratio is None else ratio
    rest = [ctx.uniform(-ratio, ratio) * abs(top) for _ in range(n - 1)]
    return [top, *rest]


def _power_case(ctx, values, seed, v_seed, iters, rtol, dtype=torch.float64):
    A, q = _with_spectrum(ctx, values, seed, dtype)
    v0 = ctx.randn(len(values), seed=v_seed, dtype=dtype)
    value, vector = values[0], q[:, 0]
    case = (f"a {len(values)} x {len(values)} {str(dtype).replace('torch.', '')} matrix, "
            f"{iters} iterations")

    def judge(outs):
        if not isinstance(outs[0], (tuple, list)) or len(outs[0]) != 2:
            raise Fail("power_iteration should return a pair (eigenvalue, eigenvector)")
        got_value, got_vector = outs[0]
        expect_number_close(got_value, value, f"the eigenvalue ({case})", rtol=rtol)
        u = expect_tensor(got_vector, f"the eigenvector ({case})", like=v0)
        norm = float(u.norm())
        if abs(norm - 1) > 1e-6:
            raise Fail(f"the eigenvector should have norm 1, got {norm:.3g} ({case})")
        alignment = abs(float(u.to(vector.dtype) @ vector))
        if alignment < 1 - 1e-6:
            raise Fail(f"the eigenvector is not the top one: |<u, q_1>| = {alignment:.3g} "
                       f"({case})")

    return [Call(functools.partial(torch.mv, A), v0, iters=iters)], judge


def _power_known(ctx):
    published = [5.0, 2.5, -2.0, 1.0, 0.5, 0.25] + [0.1] * 14
    slow = _drawn_spectrum(ctx, ratio=ctx.uniform(0.9, 0.94))  # needs its 600 iterations
    slow[1] = ctx.choice([-1, 1]) * 0.95 * abs(slow[0])
    return combine(_power_case(ctx, published, 40, 41, 100, 1e-8),
                   _power_case(ctx, _drawn_spectrum(ctx, 1.0), ctx.fresh_seed(),
                               ctx.fresh_seed(), 100, 1e-8),
                   _power_case(ctx, slow, ctx.fresh_seed(), ctx.fresh_seed(), 600, 1e-8))


def _power_negative(ctx):
    published = [-6.0, 3.0, 2.0, 1.0, -1.0, 0.5] + [0.2] * 10
    return combine(_power_case(ctx, published, 50, 51, 100, 1e-8),
                   _power_case(ctx, _drawn_spectrum(ctx, -1.0), ctx.fresh_seed(),
                               ctx.fresh_seed(), 100, 1e-8))


def _power_float32(ctx):
    published = [4.0, 1.0, 0.5, 0.25] + [0.1] * 8
    return combine(_power_case(ctx, published, 60, 61, 60, 1e-5, torch.float32),
                   _power_case(ctx, _drawn_spectrum(ctx), ctx.fresh_seed(), ctx.fresh_seed(),
                               60, 1e-5, torch.float32))


def _power_rules(ctx):
    values = _drawn_spectrum(ctx)
    A, _ = _with_spectrum(ctx, values, ctx.fresh_seed())
    v0 = ctx.randn(len(values), seed=ctx.fresh_seed(), dtype=torch.float64)

    def judge(outs):
        expect_rules(outs[0], f"power_iteration (a {len(values)} x {len(values)} matrix)")

    return [Call(functools.partial(torch.mv, A), v0, iters=30).observe()], judge


POWER_ITERATION = Question(
    "power_iteration", "Power iteration", [
        Check("finds the top eigenpair of matrices with a known spectrum (float64): the "
              "published one and drawn ones, one converging slowly (600 iterations)", 1,
              _power_known,
              hint="v <- A v / ||A v||, then the eigenvalue is the Rayleigh quotient v . A v"),
        Check("keeps the sign of a dominant negative eigenvalue", 1, _power_negative,
              hint="||A v|| is |lambda|; the Rayleigh quotient v . A v keeps the sign"),
        Check("keeps float32 and the start vector's device", 1, _power_float32),
        Check("keeps the rules: v0 unchanged, the global generator untouched", 1, _power_rules,
              hint="start from v = v0 / v0.norm() (a new tensor), not v0 /= ...; start from v0, "
                   "not from torch.randn"),
    ])


# --- Hutchinson's trace estimator --------------------------------------------------------------


def _diagonal_case(ctx, d, seed, samples):
    diagonal = ctx.randn(d, seed=seed, dtype=torch.float64)
    D = torch.diag(diagonal)
    trace = float(diagonal.sum())
    like = torch.zeros(d, dtype=torch.float64, device=ctx.device)

    def judge(outs):
        for out, s in zip(outs, samples):
            expect_number_close(out, trace, f"the estimate for a {d} x {d} diagonal matrix with "
                                f"{s} samples (with Rademacher probes z_i^2 = 1, so it must be "
                                "exact)", rtol=1e-10, atol=1e-10)

    return [Call(functools.partial(torch.mv, D), like, samples=s, seed=s) for s in samples], judge


def _hutchinson_diagonal(ctx):
    return combine(_diagonal_case(ctx, 40, 70, (1, 7)),
                   _diagonal_case(ctx, ctx.integers(5, 50), ctx.fresh_seed(),
                                  (ctx.integers(1, 5), ctx.integers(6, 30))))


def hutchinson_case(ctx):
    """The estimator check's case: a symmetric matrix drawn at grading time, its trace and the
    variance of one Rademacher probe's z.Az, 2 sum_{i != j} A_ij^2: ``(A, trace, variance)``."""
    d = ctx.integers(20, 40)
    B = ctx.randn(d, d, seed=ctx.fresh_seed(), dtype=torch.float64)
    A = (B + B.T) / 2 + torch.diag(ctx.randn(d, seed=ctx.fresh_seed(), dtype=torch.float64))
    variance = 2 * float((A - torch.diag(torch.diag(A))).pow(2).sum())
    return A, float(A.trace()), variance


def hutchinson_statistic(estimates, samples: int, trace: float, variance: float) -> float:
    """sum_k samples (estimate_k - trace)^2 / variance: about chi-square with K degrees of
    freedom for K independent estimates of ``samples`` probes each."""
    return sum(samples * (v - trace) ** 2 for v in estimates) / variance


def _hutchinson_statistics(ctx):
    A, trace, variance = hutchinson_case(ctx)
    d = A.shape[0]
    like = torch.zeros(d, dtype=torch.float64, device=ctx.device)
    matvec = functools.partial(torch.mv, A)
    repeats, sizes = 30, (4, 64)
    seeds = [ctx.fresh_seed() for _ in range(repeats * len(sizes))]
    calls = [Call(matvec, like, samples=n, seed=seeds[i * repeats + k])
             for i, n in enumerate(sizes) for k in range(repeats)]
    calls.append(Call(matvec, like, samples=sizes[0], seed=seeds[0]))  # the same seed again
    low, high = chi2.ppf(_TAIL, repeats), chi2.isf(_TAIL, repeats)
    case = f"a symmetric {d} x {d} matrix"

    def judge(outs):
        values = [expect_scalar(o, f"the estimate ({case})") for o in outs]
        if not math.isclose(values[-1], values[0], rel_tol=1e-12, abs_tol=1e-12):
            raise Fail(f"two calls with the same seed gave different estimates ({case}): draw "
                       "the probes from torch.Generator().manual_seed(seed), not from the global "
                       "generator")
        for i, n in enumerate(sizes):
            group = values[i * repeats:(i + 1) * repeats]
            if len(set(group)) < len(group):
                raise Fail(f"different seeds gave the same estimate ({case}, {n} samples): the "
                           "estimate must depend on the random probes the seed draws")
            stat = hutchinson_statistic(group, n, trace, variance)
            if not low <= stat <= high:
                how = ("spread much less" if stat < low else "spread more, or sit farther from "
                       "the trace,")
                raise Fail(f"the estimates of {repeats} seeds with {n} samples ({case}) {how} "
                           f"than Hutchinson's estimator does: their squared errors are "
                           f"{stat / repeats:.2g} times 2 sum_(i != j) A_ij^2 / samples, the "
                           f"variance of Rademacher probes (a correct answer stays between "
                           f"{low / repeats:.2g} and {high / repeats:.2g} but for a chance "
                           "below 1e-6)")

    return calls, judge


def _hutchinson_rules(ctx):
    d = ctx.integers(5, 30)
    B = ctx.randn(d, d, seed=ctx.fresh_seed(), dtype=torch.float64)
    like = torch.zeros(d, dtype=torch.float64, device=ctx.device)

    def judge(outs):
        expect_rules(outs[0], f"hutchinson_trace (a {d} x {d} matrix)")

    return [Call(functools.partial(torch.mv, B + B.T), like, samples=ctx.integers(2, 9),
                 seed=ctx.fresh_seed()).observe()], judge


HUTCHINSON = Question(
    "hutchinson_trace", "Hutchinson's trace estimator", [
        Check("exact on diagonal matrices (Rademacher probes): the published one and a drawn "
              "one, few samples", 1, _hutchinson_diagonal,
              hint="draw z with entries +-1 (not Gaussian) and average z . (A z) over the samples"),
        Check("is the estimator: the same seed repeats, different seeds differ, the spread "
              "shrinks as 1/samples around the trace", 1, _hutchinson_statistics,
              hint="a fresh probe for each of the `samples` terms, all drawn from "
                   "torch.Generator().manual_seed(seed)"),
        Check("keeps the rules: `like` unchanged, the global generator untouched", 1,
              _hutchinson_rules, hint="use your own torch.Generator, never torch.manual_seed"),
    ])

ASSIGNMENT = Assignment(
    id="02_loss_landscapes",
    title="Loss landscapes: filter normalisation, Hessian-vector products, power iteration, "
          "Hutchinson's trace",
    questions=[FILTER_NORMALIZE, HVP, POWER_ITERATION, HUTCHINSON],
    master="instructor/02_loss_landscapes/assignment.ipynb",
    student="chapters/02_loss_landscapes/assignment.ipynb",
)
