"""Checks of assignment 4 (neural collapse): class means and covariances, NC1, the simplex ETF,
and the NC2-NC4 measurements (distance to the ETF, self-duality, nearest-class-centre mismatch).

References: `deepscope.collapse` and closed forms: Sigma_W + Sigma_B is the total covariance
for balanced classes, NC1 is 0 for collapsed features and invariant to scale, an ETF has unit
rows with cosines -1/(C-1) that sum to zero, a rotated and scaled ETF is at distance 0, W = 3 M
is self-dual, and the classifier W = 2M, b_c = -|mu_c|^2 decides exactly like the nearest
class mean.
"""

from __future__ import annotations

import torch

from ... import collapse as reference
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


def _features(ctx, counts: list[int], dim: int, seed: int, spread: float = 1.0,
              dtype=torch.float64):
    """Gaussian clusters: class c has counts[c] points around a random mean."""
    c = len(counts)
    means = 3 * ctx.randn(c, dim, seed=seed, dtype=dtype)
    labels = torch.cat([torch.full((n,), k, dtype=torch.long) for k, n in enumerate(counts)])
    labels = labels.to(ctx.device)
    noise = spread * ctx.randn(len(labels), dim, seed=seed + 1, dtype=dtype)
    return means[labels] + noise, labels


# --- class means and covariances --------------------------------------------------------------


def _stats_judge(outs_value, want, what: str, rtol: float):
    if not isinstance(outs_value, (tuple, list)) or len(outs_value) != 4:
        raise Fail(f"{what} should return four tensors (means, global_mean, sigma_w, sigma_b)")
    names = ("the class means", "the global mean", "Sigma_W", "Sigma_B")
    for got, expected, name in zip(outs_value, want, names):
        got = expect_tensor(got, name, shape=expected.shape)
        expect_close(got, expected, name, rtol=rtol, atol=1e-10)


def _stats_reference(ctx):
    h, y = _features(ctx, [7, 3, 12, 5], 6, seed=1)  # unbalanced classes
    means, global_mean = reference.class_means(h, y, 4)
    sigma_w, sigma_b = reference.covariances(h, y, 4)
    want = (means, global_mean, sigma_w, sigma_b)

    def judge(outs):
        _stats_judge(outs[0], want, "class_means_and_covariances", 1e-8)

    return [Call(h, y, 4)], judge


def _stats_total(ctx):
    h, y = _features(ctx, [10, 10, 10], 5, seed=2, dtype=torch.float32)
    centred = (h - h.mean(0)).double()
    total = centred.T @ centred / len(h)

    def judge(outs):
        if not isinstance(outs[0], (tuple, list)) or len(outs[0]) != 4:
            raise Fail("class_means_and_covariances should return four tensors")
        sigma_w = expect_tensor(outs[0][2], "Sigma_W (float32 input)", shape=(5, 5),
                                dtype=h.dtype)
        sigma_b = expect_tensor(outs[0][3], "Sigma_B (float32 input)", shape=(5, 5),
                                dtype=h.dtype)
        expect_close(sigma_w + sigma_b, total, "Sigma_W + Sigma_B for balanced classes (it must "
                     "be the total covariance 1/N sum (h - mu_G)(h - mu_G)^T)", rtol=1e-4,
                     atol=1e-5)

    return [Call(h, y, 3)], judge


STATISTICS = Question(
    "class_means_and_covariances", "Class means and covariances", [
        Check("agrees with deepscope.collapse.class_means and covariances (unbalanced classes)",
              2, _stats_reference,
              hint="Sigma_W = 1/N sum_i (h_i - mu_{y_i})(...)^T; Sigma_B = 1/C sum_c (mu_c - "
                   "mu_G)(...)^T; mu_G is the mean of all N features"),
        Check("balanced classes: Sigma_W + Sigma_B is the total covariance; keeps float32", 1,
              _stats_total),
    ])


# --- NC1 --------------------------------------------------------------------------------------


def _nc1_reference(ctx):
    h, y = _features(ctx, [8, 12, 10, 9], 10, seed=10)  # d = 10 > C - 1: Sigma_B is singular
    want = reference.nc1(h, y, 4)
    h2, y2 = _features(ctx, [15, 15, 15], 2, seed=11, spread=2.0)
    want2 = reference.nc1(h2, y2, 3)

    def judge(outs):
        expect_number_close(outs[0], want, "NC1 (d = 10, C = 4: Sigma_B has rank 3)",
                            rtol=1e-6)
        expect_number_close(outs[1], want2, "NC1 (d = 2, C = 3)", rtol=1e-6)

    return [Call(h, y, 4), Call(h2, y2, 3)], judge


def _nc1_properties(ctx):
    means = 2 * ctx.randn(5, 7, seed=20, dtype=torch.float64)
    y = torch.arange(5, device=ctx.device).repeat(4)
    h, y_noisy = _features(ctx, [6, 6, 6, 6, 6], 7, seed=21)
    want = reference.nc1(h, y_noisy, 5)

    def judge(outs):
        expect_number_close(outs[0], 0.0, "NC1 of features equal to their class means",
                            atol=1e-10)
        expect_number_close(outs[1], want, "NC1 of features scaled by 1000 (it must not "
                            "change)", rtol=1e-6)

    return [Call(means[y], y, 5), Call(1000 * h, y_noisy, 5)], judge


NC1 = Question(
    "nc1", "NC1: within-class variability", [
        Check("agrees with deepscope.collapse.nc1 (Tr(Sigma_W Sigma_B^+) / C)", 2,
              _nc1_reference, hint="Sigma_B has rank C - 1 at most: use the pseudo-inverse "
                                   "(torch.linalg.pinv), and divide the trace by C"),
        Check("0 for collapsed features, unchanged by scaling them", 1, _nc1_properties),
    ])


# --- the simplex ETF --------------------------------------------------------------------------


def _etf_judge(c: int, dim: int, dtype=torch.float32):
    gram = c / (c - 1) * (torch.eye(c, dtype=torch.float64) - 1.0 / c)

    def check(value):
        m = expect_tensor(value, f"simplex_etf({c}, {dim})", shape=(c, dim), dtype=dtype)
        m64 = m.detach().to("cpu", torch.float64)
        expect_close(m64.norm(dim=1), torch.ones(c, dtype=torch.float64),
                     f"the row norms of simplex_etf({c}, {dim})", rtol=1e-5, atol=1e-6)
        expect_close(m64.sum(0), torch.zeros(dim, dtype=torch.float64),
                     f"the sum of the rows of simplex_etf({c}, {dim})", rtol=0, atol=1e-5)
        expect_close(m64 @ m64.T, gram, f"the Gram matrix of simplex_etf({c}, {dim}) (ones on "
                     f"the diagonal, -1/(C-1) = {-1 / (c - 1):.4g} elsewhere)", rtol=1e-5,
                     atol=1e-6)
    return check


def _etf_sizes(ctx):
    sizes = [(3, 5), (10, 16), (4, 4)]
    checks = [_etf_judge(c, d) for c, d in sizes]

    def judge(outs):
        for check, out in zip(checks, outs):
            check(out)

    return [Call(c, d) for c, d in sizes], judge


def _etf_minimal(ctx):
    sizes = [(2, 1), (5, 4)]
    checks = [_etf_judge(c, d) for c, d in sizes]

    def judge(outs):
        for check, out in zip(checks, outs):
            check(out)

    return [Call(c, d) for c, d in sizes], judge


SIMPLEX_ETF = Question(
    "simplex_etf", "The simplex equiangular tight frame", [
        Check("unit rows, cosines -1/(C-1), rows summing to zero (C, d) = (3, 5), (10, 16), "
              "(4, 4), float32", 2, _etf_sizes,
              hint="centre the identity, I - 1 1^T / C, and scale its rows to unit norm; map it "
                   "into d dimensions with orthonormal columns"),
        Check("fits the smallest dimension d = C - 1 ((2, 1) and (5, 4))", 1, _etf_minimal,
              hint="the centred identity spans only C - 1 dimensions: express it in an "
                   "orthonormal basis of that subspace (e.g. from a QR or SVD)"),
    ])


# --- NC2: distance to the ETF -----------------------------------------------------------------


def _dist_reference(ctx):
    v = ctx.randn(6, 9, seed=30, dtype=torch.float64)
    v2 = ctx.randn(3, 3, seed=31, dtype=torch.float64)
    wants = [reference.etf_distance(v), reference.etf_distance(v2)]

    def judge(outs):
        for out, want in zip(outs, wants):
            expect_number_close(out, want, "the distance to the ETF", rtol=1e-6)

    return [Call(v), Call(v2)], judge


def _dist_zero(ctx):
    etf = reference.simplex_etf(5, 7, seed=3, dtype=torch.float64, device=ctx.device)

    def judge(outs):
        expect_number_close(outs[0], 0.0, "the distance of a rotated simplex ETF scaled by 4",
                            atol=1e-10)

    return [Call(4 * etf)], judge


ETF_DISTANCE = Question(
    "etf_distance", "NC2: distance to the simplex ETF", [
        Check("agrees with deepscope.collapse.etf_distance", 1, _dist_reference,
              hint="|| G / ||G||_F - (I - 1 1^T / C) / sqrt(C - 1) ||_F with G = V V^T"),
        Check("0 for a rotated, scaled simplex ETF", 1, _dist_zero),
    ])


# --- NC3: self-duality ------------------------------------------------------------------------


def _duality_reference(ctx):
    w, m = ctx.randn(4, 6, seed=40, dtype=torch.float64), ctx.randn(4, 6, seed=41,
                                                                     dtype=torch.float64)
    want = reference.self_duality(w, m)

    def judge(outs):
        expect_number_close(outs[0], want, "the self-duality distance", rtol=1e-6)

    return [Call(w, m)], judge


def _duality_closed(ctx):
    m = ctx.randn(5, 3, seed=42, dtype=torch.float64)

    def judge(outs):
        expect_number_close(outs[0], 0.0, "self_duality(3 M, M) (W a positive multiple of M)",
                            atol=1e-10)
        expect_number_close(outs[1], 2.0, "self_duality(-M, M) (opposite directions)",
                            rtol=1e-10)

    return [Call(3 * m, m), Call(-m, m)], judge


SELF_DUALITY = Question(
    "self_duality", "NC3: self-duality", [
        Check("agrees with deepscope.collapse.self_duality", 1, _duality_reference,
              hint="|| W / ||W||_F - M / ||M||_F ||_F (Frobenius norms, not squared)"),
        Check("0 for W = 3 M, 2 for W = -M", 1, _duality_closed),
    ])


# --- NC4: nearest-class-centre mismatch -------------------------------------------------------


def _ncc_reference(ctx):
    h = ctx.randn(60, 4, seed=50, dtype=torch.float64)
    means = ctx.randn(3, 4, seed=51, dtype=torch.float64)
    w = means + 0.7 * ctx.randn(3, 4, seed=52, dtype=torch.float64)
    b = ctx.randn(3, seed=53, dtype=torch.float64)
    wants = [reference.ncc_mismatch(h, means, w, b), reference.ncc_mismatch(h, means, w)]
    if not 0 < min(wants):
        raise AssertionError("the seeded case must have disagreements")

    def judge(outs):
        expect_number_close(outs[0], wants[0], "the mismatch with a bias", atol=1e-12)
        expect_number_close(outs[1], wants[1], "the mismatch without a bias (bias=None)",
                            atol=1e-12)

    return [Call(h, means, w, b), Call(h, means, w)], judge


def _ncc_equivalent(ctx):
    h = ctx.randn(80, 5, seed=60, dtype=torch.float64)
    means = ctx.randn(4, 5, seed=61, dtype=torch.float64)
    w, b = 2 * means, -(means**2).sum(1)

    def judge(outs):
        expect_number_close(outs[0], 0.0, "the mismatch of W = 2M, b_c = -|mu_c|^2 (this "
                            "classifier is the nearest-class-mean rule)", atol=1e-12)

    return [Call(h, means, w, b)], judge


NCC_MISMATCH = Question(
    "ncc_mismatch", "NC4: classifier vs nearest class centre", [
        Check("agrees with deepscope.collapse.ncc_mismatch, with and without a bias", 1,
              _ncc_reference, hint="compare argmax_c (w_c . h + b_c) with argmin_c |h - mu_c|"),
        Check("0 for the classifier W = 2M, b = -|mu|^2", 1, _ncc_equivalent),
    ])


_STATISTICS_SOURCE = """
def class_means_and_covariances(features, labels, num_classes):
    import torch as _torch
    n, d = features.shape
    counts = _torch.bincount(labels, minlength=num_classes).to(features.dtype)
    means = _torch.zeros(num_classes, d, dtype=features.dtype, device=features.device)
    means = means.index_add(0, labels, features) / counts[:, None]
    global_mean = features.mean(0)
    within, centred = features - means[labels], means - global_mean
    return means, global_mean, within.T @ within / n, centred.T @ centred / num_classes
"""

ASSIGNMENT = Assignment(
    id="04_neural_collapse",
    title="Neural collapse: class statistics, NC1-NC4 and the simplex ETF",
    questions=[STATISTICS, NC1, SIMPLEX_ETF, ETF_DISTANCE, SELF_DUALITY, NCC_MISMATCH],
    master="instructor/04_neural_collapse/assignment.ipynb",
    student="chapters/04_neural_collapse/assignment.ipynb",
    substitutes={"class_means_and_covariances": _STATISTICS_SOURCE},
)
