"""Checks of assignment 3 (contrastive geometry): InfoNCE, alignment, uniformity and the
effective rank.

References: `deepscope.contrastive` (values and, through `Call.differentiate`, gradients) and
closed forms: NT-Xent of identical embeddings is log(2N - 1), alignment is 0 for identical and
2^alpha for antipodal pairs, uniformity is 0 for collapsed features and invariant to the scale
of each row, and the effective rank of r equal singular values is r.
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
    expect_close,
    expect_number_close,
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


# --- InfoNCE ----------------------------------------------------------------------------------


def _nce_reference(ctx):
    z1, z2 = ctx.randn(8, 5, seed=1), ctx.randn(8, 5, seed=2)
    return _agrees("info_nce", reference.info_nce, [z1, z2], (0, 1), {"temperature": 0.5})


def _nce_temperature(ctx):
    z1 = ctx.randn(6, 3, seed=3, dtype=torch.float64)
    z2 = z1 + 0.3 * ctx.randn(6, 3, seed=4, dtype=torch.float64)
    return _agrees("info_nce", reference.info_nce, [z1, z2], (0, 1), {"temperature": 0.1},
                   rtol=1e-10, atol=1e-12)


def _nce_identical(ctx):
    z = ctx.randn(1, 4, seed=5).expand(10, 4).contiguous()

    def judge(outs):
        expect_number_close(outs[0], math.log(2 * 10 - 1), "the loss of 10 pairs of identical "
                            "embeddings (it must be log(2N - 1): each anchor's positive and its "
                            "2N - 2 negatives all have similarity 1)", rtol=1e-5)

    return [Call(z, z.clone(), temperature=0.5)], judge


INFO_NCE = Question(
    "info_nce", "InfoNCE (SimCLR's NT-Xent)", [
        Check("agrees with deepscope.contrastive.info_nce, value and gradients (tau = 0.5)", 2,
              _nce_reference, hint="all 2N rows are anchors; each one's positive is its other "
                                   "view, its negatives the 2N - 2 other rows (not itself)"),
        Check("agrees at tau = 0.1 in float64 (value and gradients)", 1, _nce_temperature),
        Check("identical embeddings give log(2N - 1)", 1, _nce_identical,
              hint="mask the diagonal (self-similarity) out of the denominator"),
    ])


# --- alignment --------------------------------------------------------------------------------


def _align_reference(ctx):
    z1, z2 = ctx.randn(12, 4, seed=10), ctx.randn(12, 4, seed=11)
    return _agrees("alignment", reference.alignment, [z1, z2], (0, 1), {"alpha": 2.0})


def _align_alpha(ctx):
    z1 = ctx.randn(12, 4, seed=12, dtype=torch.float64)
    z2 = z1 + 0.5 * ctx.randn(12, 4, seed=13, dtype=torch.float64)
    want = float(reference.alignment(z1, z2, alpha=1.0))

    def judge(outs):
        expect_number_close(outs[0], want, "alignment(z1, z2, alpha=1) (float64)", rtol=1e-10)

    return [Call(z1, z2, alpha=1.0)], judge


def _align_closed_forms(ctx):
    z = ctx.randn(9, 3, seed=14)

    def judge(outs):
        expect_number_close(outs[0], 0.0, "the alignment of identical pairs", atol=1e-6)
        expect_number_close(outs[1], 2.0**3, "the alignment of antipodal pairs, alpha = 3 (it "
                            "must be 2^alpha: unit vectors at distance 2)", rtol=1e-5)
        expect_number_close(outs[2], float(reference.alignment(z, z.flip(0), alpha=2.0)),
                            "the alignment of rescaled rows (features are L2-normalised first)",
                            rtol=1e-5)

    scales = torch.linspace(0.1, 10, 9, device=ctx.device)[:, None]
    return [Call(z, 3 * z, alpha=2.0), Call(z, -0.5 * z, alpha=3.0),
            Call(z * scales, z.flip(0), alpha=2.0)], judge


ALIGNMENT = Question(
    "alignment", "Alignment (Wang & Isola 2020)", [
        Check("agrees with deepscope.contrastive.alignment, value and gradients", 1,
              _align_reference, hint="L2-normalise the rows first"),
        Check("uses alpha (alpha = 1, float64)", 1, _align_alpha),
        Check("0 for identical pairs, 2^alpha for antipodal ones, invariant to row scales", 1,
              _align_closed_forms),
    ])


# --- uniformity -------------------------------------------------------------------------------


def _unif_reference(ctx):
    z = ctx.randn(20, 4, seed=20)
    return _agrees("uniformity", reference.uniformity, [z], (0,), {"t": 2.0})


def _unif_float64(ctx):
    z = ctx.randn(15, 3, seed=21, dtype=torch.float64)
    want = float(reference.uniformity(z, t=1.0))

    def judge(outs):
        expect_number_close(outs[0], want, "uniformity(z, t=1) (float64)", rtol=1e-10)

    return [Call(z, t=1.0)], judge


def _unif_collapsed(ctx):
    z = ctx.randn(1, 5, seed=22).expand(7, 5).contiguous()

    def judge(outs):
        expect_number_close(outs[0], 0.0, "the uniformity of collapsed features (all pairs at "
                            "distance 0: log mean exp(0) = 0)", atol=1e-5)

    return [Call(z, t=2.0)], judge


def _unif_scales(ctx):
    z = ctx.randn(16, 3, seed=23)
    scales = torch.linspace(0.05, 20, 16, device=ctx.device)[:, None]
    want = float(reference.uniformity(z, t=2.0))

    def judge(outs):
        expect_number_close(outs[0], want, "the uniformity of rows rescaled by 0.05 to 20 (it "
                            "must not change: features are L2-normalised first)", rtol=1e-5)

    return [Call(z * scales, t=2.0)], judge


UNIFORMITY = Question(
    "uniformity", "Uniformity (Wang & Isola 2020)", [
        Check("agrees with deepscope.contrastive.uniformity, value and gradients", 2,
              _unif_reference, hint="log of the mean of exp(-t ||f_i - f_j||^2) over the "
                                    "N (N - 1) / 2 pairs i < j of normalised rows"),
        Check("uses t (t = 1, float64)", 1, _unif_float64),
        Check("collapsed features give 0; rescaling rows changes nothing", 1,
              lambda ctx: _both(_unif_collapsed(ctx), _unif_scales(ctx))),
    ])


def _both(first, second):
    calls1, judge1 = first
    calls2, judge2 = second
    n = len(calls1)

    def judge(outs):
        judge1(outs[:n])
        judge2(outs[n:])

    return calls1 + calls2, judge


# --- effective rank ---------------------------------------------------------------------------


def _erank_reference(ctx):
    z = ctx.randn(30, 6, seed=30) * torch.tensor([5.0, 3, 2, 1, 0.5, 0.1], device=ctx.device)
    want = float(reference.effective_rank(z))

    def judge(outs):
        expect_number_close(outs[0], want, "effective_rank(z)", rtol=1e-5)

    return [Call(z)], judge


def _erank_equal(ctx):
    def equal_singular_values(r: int, seed: int):
        u, _ = torch.linalg.qr(torch.randn(20, r, generator=ctx.generator(seed),
                                           dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn(8, r, generator=ctx.generator(seed + 1),
                                           dtype=torch.float64))
        return (3.0 * u @ v.T).to(ctx.device)

    matrices = [equal_singular_values(r, 40 + 2 * r) for r in (1, 3, 8)]

    def judge(outs):
        for out, r in zip(outs, (1, 3, 8)):
            expect_number_close(out, float(r), f"the effective rank of a matrix with {r} equal "
                                f"non-zero singular values (it must be {r})", rtol=1e-6)

    return [Call(m) for m in matrices], judge


EFFECTIVE_RANK = Question(
    "effective_rank", "Effective rank (Roy & Vetterli 2007)", [
        Check("agrees with deepscope.contrastive.effective_rank", 2, _erank_reference,
              hint="p = sigma / sum(sigma) from the singular values of z as given (no centring, "
                   "not their squares); return exp(-sum p log p)"),
        Check("r equal singular values give exactly r (r = 1, 3, 8)", 1, _erank_equal),
    ])


ASSIGNMENT = Assignment(
    id="03_contrastive_geometry",
    title="Contrastive geometry: InfoNCE, alignment, uniformity and effective rank",
    questions=[INFO_NCE, ALIGNMENT, UNIFORMITY, EFFECTIVE_RANK],
    master="instructor/03_contrastive_geometry/assignment.ipynb",
    student="chapters/03_contrastive_geometry/assignment.ipynb",
)
