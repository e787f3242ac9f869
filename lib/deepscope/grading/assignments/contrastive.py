"""Checks of assignment 3 (contrastive geometry): InfoNCE, alignment, uniformity and the
effective rank.

References: `deepscope.contrastive` (values and, through `Call.differentiate`, gradients) and
closed forms: NT-Xent of identical embeddings is log(2N - 1), alignment is 0 for identical and
2^alpha for antipodal pairs, uniformity is 0 for collapsed features and invariant to the scale
of each row, and the effective rank of r equal singular values is r. Each check runs its
published case and cases drawn at grading time (N, D, temperatures, exponents, ranks); a last
check per question observes one call for the notebook's rules (the inputs left unchanged).
"""

from __future__ import annotations

import math

import torch

from ... import contrastive as reference
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
    expect_tensor,
)


def _value_and_grads(out, what: str, like: list[torch.Tensor]):
    if not isinstance(out, tuple) or len(out) != 2:
        raise Fail(f"{what} should be a one-element tensor (a differentiable scalar), got "
                   f"{type(out).__name__}")
    value, grads = out
    for g, x in zip(grads, like):
        expect_tensor(g, f"the gradient of {what}", like=x)
    return value, grads


def _reference_with_grads(fn, args: list[torch.Tensor], positions, **kwargs):
    leaves = [a.detach().clone().requires_grad_(True) for a in args]
    value = fn(*leaves, **kwargs)
    grads = torch.autograd.grad(value, [leaves[i] for i in positions])
    return value.detach(), grads


def _agrees(fn_name: str, fn, args, positions, kwargs, rtol=1e-5, atol=1e-7):
    want, want_grads = _reference_with_grads(fn, args, positions, **kwargs)

    def judge(outs):
        value, grads = _value_and_grads(outs[0], f"{fn_name}(...)", [args[i] for i in positions])
        expect_number_close(value, float(want), f"{fn_name}(...)", rtol=rtol, atol=atol)
        for k, (g, w) in enumerate(zip(grads, want_grads)):
            expect_close(g, w, f"the gradient of {fn_name} with respect to argument "
                         f"{positions[k] + 1}", rtol=rtol * 10, atol=atol * 10)

    return [Call(*args, **kwargs).differentiate(*positions)], judge


def _rules(fn_name: str, *args, **kwargs):
    shapes = " and ".join(str(tuple(a.shape)) for a in args)

    def judge(outs):
        expect_rules(outs[0], f"{fn_name} ({shapes} inputs)")

    return [Call(*args, **kwargs).observe()], judge


def _pair(ctx, dtype=torch.float32, noise=None):
    """Two views drawn at grading time: N in 3..16 pairs of D in 2..8 dimensions."""
    n, d = ctx.integers(3, 16), ctx.integers(2, 8)
    z1 = ctx.randn(n, d, seed=ctx.fresh_seed(), dtype=dtype)
    z2 = ctx.randn(n, d, seed=ctx.fresh_seed(), dtype=dtype)
    return (z1, z1 + noise * z2) if noise is not None else (z1, z2)


# --- InfoNCE ----------------------------------------------------------------------------------


def _nce_reference(ctx):
    z1, z2 = ctx.randn(8, 5, seed=1), ctx.randn(8, 5, seed=2)
    d1, d2 = _pair(ctx)
    tau = round(ctx.uniform(0.1, 1.0), 3)
    return combine(
        _agrees("info_nce", reference.info_nce, [z1, z2], (0, 1), {"temperature": 0.5}),
        _agrees(f"info_nce (N = {len(d1)}, D = {d1.shape[1]}, tau = {tau})", reference.info_nce,
                [d1, d2], (0, 1), {"temperature": tau}))


def _nce_temperature(ctx):
    z1 = ctx.randn(6, 3, seed=3, dtype=torch.float64)
    z2 = z1 + 0.3 * ctx.randn(6, 3, seed=4, dtype=torch.float64)
    d1, d2 = _pair(ctx, torch.float64, noise=0.3)
    tau = round(ctx.uniform(0.05, 0.2), 3)
    return combine(
        _agrees("info_nce (tau = 0.1, float64)", reference.info_nce, [z1, z2], (0, 1),
                {"temperature": 0.1}, rtol=1e-10, atol=1e-12),
        _agrees(f"info_nce (N = {len(d1)}, tau = {tau}, float64)", reference.info_nce, [d1, d2],
                (0, 1), {"temperature": tau}, rtol=1e-10, atol=1e-12))


def _nce_identical(ctx):
    sizes = [10, ctx.integers(2, 40)]
    embeddings = [ctx.randn(1, ctx.integers(2, 8), seed=ctx.fresh_seed()).expand(n, -1)
                  .contiguous() for n in sizes]
    tau = round(ctx.uniform(0.1, 2.0), 3)

    def judge(outs):
        for out, n in zip(outs, sizes):
            expect_number_close(out, math.log(2 * n - 1), f"the loss of {n} pairs of identical "
                                "embeddings (it must be log(2N - 1): each anchor's positive and "
                                "its 2N - 2 negatives all have similarity 1)", rtol=1e-5)

    return [Call(z, z.clone(), temperature=tau) for z in embeddings], judge


def _nce_rules(ctx):
    z1, z2 = _pair(ctx)
    return _rules("info_nce", z1, z2, temperature=round(ctx.uniform(0.1, 1.0), 3))


INFO_NCE = Question(
    "info_nce", "InfoNCE (SimCLR's NT-Xent)", [
        Check("agrees with deepscope.contrastive.info_nce, value and gradients: tau = 0.5 and a "
              "drawn N, D and tau", 1, _nce_reference,
              hint="all 2N rows are anchors; each one's positive is its other view, its "
                   "negatives the 2N - 2 other rows (not itself)"),
        Check("agrees at small temperatures in float64 (value and gradients)", 1,
              _nce_temperature),
        Check("identical embeddings give log(2N - 1), for any N", 1, _nce_identical,
              hint="mask the diagonal (self-similarity) out of the denominator"),
        Check("keeps the rules: z1 and z2 unchanged", 1, _nce_rules,
              hint="F.normalize returns a new tensor; do not normalise z1 or z2 in place"),
    ])


# --- alignment --------------------------------------------------------------------------------


def _align_reference(ctx):
    z1, z2 = ctx.randn(12, 4, seed=10), ctx.randn(12, 4, seed=11)
    d1, d2 = _pair(ctx, noise=0.5)
    alpha = round(ctx.uniform(0.5, 3.0), 3)
    e1, e2 = _pair(ctx, torch.float64, noise=0.5)
    want = float(reference.alignment(e1, e2, alpha=1.0))

    def judge(outs):
        expect_number_close(outs[0], want, f"alignment(z1, z2, alpha=1) (N = {len(e1)}, "
                            "float64)", rtol=1e-10)

    return combine(
        _agrees("alignment", reference.alignment, [z1, z2], (0, 1), {"alpha": 2.0}),
        _agrees(f"alignment (N = {len(d1)}, D = {d1.shape[1]}, alpha = {alpha})",
                reference.alignment, [d1, d2], (0, 1), {"alpha": alpha}),
        ([Call(e1, e2, alpha=1.0)], judge))


def _align_closed_forms(ctx):
    z = ctx.randn(ctx.integers(3, 16), ctx.integers(2, 6), seed=ctx.fresh_seed())
    alpha = round(ctx.uniform(0.5, 4.0), 3)
    n = len(z)

    def judge(outs):
        expect_number_close(outs[0], 0.0, "the alignment of identical pairs", atol=1e-6)
        expect_number_close(outs[1], 2.0**alpha, f"the alignment of antipodal pairs, alpha = "
                            f"{alpha} (it must be 2^alpha: unit vectors at distance 2)", rtol=1e-5)
        expect_number_close(outs[2], float(reference.alignment(z, z.flip(0), alpha=2.0)),
                            "the alignment of rescaled rows (features are L2-normalised first)",
                            rtol=1e-5)

    scales = torch.linspace(0.1, 10, n, device=ctx.device)[:, None]
    return [Call(z, 3 * z, alpha=2.0), Call(z, -0.5 * z, alpha=alpha),
            Call(z * scales, z.flip(0), alpha=2.0)], judge


def _align_rules(ctx):
    z1, z2 = _pair(ctx)
    return _rules("alignment", z1, z2, alpha=round(ctx.uniform(0.5, 3.0), 3))


ALIGNMENT = Question(
    "alignment", "Alignment (Wang & Isola 2020)", [
        Check("agrees with deepscope.contrastive.alignment, value and gradients, for drawn N, "
              "D and alpha (and alpha = 1 in float64)", 1, _align_reference,
              hint="L2-normalise the rows first; use alpha as given"),
        Check("0 for identical pairs, 2^alpha for antipodal ones, invariant to row scales", 1,
              _align_closed_forms),
        Check("keeps the rules: z1 and z2 unchanged", 1, _align_rules,
              hint="F.normalize returns a new tensor; do not normalise z1 or z2 in place"),
    ])


# --- uniformity -------------------------------------------------------------------------------


def _unif_reference(ctx):
    z = ctx.randn(20, 4, seed=20)
    drawn, _ = _pair(ctx)
    t = round(ctx.uniform(0.5, 4.0), 3)
    return combine(_agrees("uniformity", reference.uniformity, [z], (0,), {"t": 2.0}),
                   _agrees(f"uniformity (N = {len(drawn)}, D = {drawn.shape[1]}, t = {t})",
                           reference.uniformity, [drawn], (0,), {"t": t}))


def _unif_value(z, t, what):
    want = float(reference.uniformity(z, t=t))

    def judge(outs):
        expect_number_close(outs[0], want, what, rtol=1e-10)

    return [Call(z, t=t)], judge


def _unif_float64(ctx):
    drawn, _ = _pair(ctx, torch.float64)
    t = round(ctx.uniform(0.5, 4.0), 3)
    return combine(_unif_value(ctx.randn(15, 3, seed=21, dtype=torch.float64), 1.0,
                               "uniformity(z, t=1) (float64)"),
                   _unif_value(drawn, t, f"uniformity(z, t={t}) (N = {len(drawn)}, float64)"))


def _unif_closed_forms(ctx):
    n = ctx.integers(2, 20)
    collapsed = ctx.randn(1, 5, seed=ctx.fresh_seed()).expand(n, 5).contiguous()
    z = ctx.randn(ctx.integers(3, 20), 3, seed=ctx.fresh_seed())
    scales = torch.linspace(0.05, 20, len(z), device=ctx.device)[:, None]
    want = float(reference.uniformity(z, t=2.0))

    def judge(outs):
        expect_number_close(outs[0], 0.0, f"the uniformity of {n} collapsed features (all pairs "
                            "at distance 0: log mean exp(0) = 0)", atol=1e-5)
        expect_number_close(outs[1], want, "the uniformity of rows rescaled by 0.05 to 20 (it "
                            "must not change: features are L2-normalised first)", rtol=1e-5)

    return [Call(collapsed, t=2.0), Call(z * scales, t=2.0)], judge


def _unif_rules(ctx):
    z, _ = _pair(ctx)
    return _rules("uniformity", z, t=round(ctx.uniform(0.5, 4.0), 3))


UNIFORMITY = Question(
    "uniformity", "Uniformity (Wang & Isola 2020)", [
        Check("agrees with deepscope.contrastive.uniformity, value and gradients: t = 2 and a "
              "drawn N, D and t", 1, _unif_reference,
              hint="log of the mean of exp(-t ||f_i - f_j||^2) over the N (N - 1) / 2 pairs "
                   "i < j of normalised rows"),
        Check("uses t (float64)", 1, _unif_float64),
        Check("collapsed features give 0; rescaling rows changes nothing", 1, _unif_closed_forms),
        Check("keeps the rules: z unchanged", 1, _unif_rules,
              hint="F.normalize returns a new tensor; do not normalise z in place"),
    ])


# --- effective rank ---------------------------------------------------------------------------


def _erank_value(z, what):
    want = float(reference.effective_rank(z))

    def judge(outs):
        expect_number_close(outs[0], want, what, rtol=1e-5)

    return [Call(z)], judge


def _erank_reference(ctx):
    z = ctx.randn(30, 6, seed=30) * torch.tensor([5.0, 3, 2, 1, 0.5, 0.1], device=ctx.device)
    n, d = ctx.integers(3, 40), ctx.integers(2, 10)
    scales = torch.tensor([ctx.uniform(0.01, 5.0) for _ in range(d)], device=ctx.device)
    drawn = ctx.randn(n, d, seed=ctx.fresh_seed()) * scales + ctx.uniform(-2, 2)
    return combine(_erank_value(z, "effective_rank(z)"),
                   _erank_value(drawn, f"effective_rank(z) of a drawn ({n}, {d}) matrix with "
                                "unequal column scales and an offset"))


def _erank_equal(ctx):
    def equal_singular_values(n: int, d: int, r: int, seed: int):
        u, _ = torch.linalg.qr(torch.randn(n, r, generator=ctx.generator(seed),
                                           dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn(d, r, generator=ctx.generator(seed + 1),
                                           dtype=torch.float64))
        return (3.0 * u @ v.T).to(ctx.device)

    d = ctx.integers(3, 10)
    cases = [(20, 8, 1), (20, 8, 3), (20, 8, 8), (ctx.integers(d, 30), d, ctx.integers(1, d))]
    matrices = [equal_singular_values(n, dd, r, 40 + 2 * r if i < 3 else ctx.fresh_seed())
                for i, (n, dd, r) in enumerate(cases)]

    def judge(outs):
        for out, (n, dd, r) in zip(outs, cases):
            expect_number_close(out, float(r), f"the effective rank of a ({n}, {dd}) matrix "
                                f"with {r} equal non-zero singular values (it must be {r})",
                                rtol=1e-6)

    return [Call(m) for m in matrices], judge


def _erank_rules(ctx):
    return _rules("effective_rank", ctx.randn(ctx.integers(3, 30), ctx.integers(2, 8),
                                              seed=ctx.fresh_seed()))


EFFECTIVE_RANK = Question(
    "effective_rank", "Effective rank (Roy & Vetterli 2007)", [
        Check("agrees with deepscope.contrastive.effective_rank: the published matrix and a "
              "drawn one", 1, _erank_reference,
              hint="p = sigma / sum(sigma) from the singular values of z as given (no centring, "
                   "not their squares); return exp(-sum p log p)"),
        Check("r equal singular values give exactly r (r = 1, 3, 8 and a drawn r)", 1,
              _erank_equal),
        Check("keeps the rules: z unchanged", 1, _erank_rules,
              hint="z - z.mean(0) or z.double() make new tensors; z -= ... changes the caller's"),
    ])


ASSIGNMENT = Assignment(
    id="03_contrastive_geometry",
    title="Contrastive geometry: InfoNCE, alignment, uniformity and effective rank",
    questions=[INFO_NCE, ALIGNMENT, UNIFORMITY, EFFECTIVE_RANK],
    master="instructor/03_contrastive_geometry/assignment.ipynb",
    student="chapters/03_contrastive_geometry/assignment.ipynb",
)
