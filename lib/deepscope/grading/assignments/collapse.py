"""Checks of assignment 4 (neural collapse): class means and covariances, NC1, the simplex ETF,
and the NC2-NC4 measurements (distance to the ETF, self-duality, nearest-class-centre mismatch).

References: `deepscope.collapse` and closed forms: Sigma_W + Sigma_B is the total covariance
for balanced classes, NC1 is 0 for collapsed features and invariant to scale, an ETF has unit
rows with cosines -1/(C-1) that sum to zero, a rotated and scaled ETF is at distance 0, W = 3 M
is self-dual, and the classifier W = 2M, b_c = -|mu_c|^2 decides exactly like the nearest
class mean. Each check runs its published case and cases drawn at grading time (numbers of
classes, class sizes, dimensions, rows in a random order); each question observes one call for
the notebook's rules (its inputs left unchanged, the global generators untouched).
"""

from __future__ import annotations

import copy

import torch

from ... import collapse as reference
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


def _features(ctx, counts: list[int], dim: int, seed: int, spread: float = 1.0,
              dtype=torch.float64, shuffle: bool = False):
    """Gaussian clusters: class c has counts[c] points around a random mean (rows in class
    order, or shuffled)."""
    c = len(counts)
    means = 3 * ctx.randn(c, dim, seed=seed, dtype=dtype)
    labels = torch.cat([torch.full((n,), k, dtype=torch.long) for k, n in enumerate(counts)])
    if shuffle:
        labels = labels[torch.randperm(len(labels), generator=ctx.generator(seed + 2))]
    labels = labels.to(ctx.device)
    noise = spread * ctx.randn(len(labels), dim, seed=seed + 1, dtype=dtype)
    return means[labels] + noise, labels


def _drawn_features(ctx, dtype=torch.float64, balanced=False):
    """Features drawn at grading time: C in 2..7 classes of 2..12 points (equal sizes if
    ``balanced``), d in 2..12 dimensions, rows in a random order."""
    c, d = ctx.integers(2, 7), ctx.integers(2, 12)
    size = ctx.integers(2, 12)
    counts = [size if balanced else ctx.integers(2, 12) for _ in range(c)]
    h, y = _features(ctx, counts, d, ctx.fresh_seed(), spread=ctx.uniform(0.3, 2.0),
                     dtype=dtype, shuffle=True)
    return h, y, c, f"{len(h)} features in {d} dimensions, {c} classes of sizes {counts}"


def _rules(fn_name: str, case: str, *args):
    """An observed call on copies of ``args`` (another call of the check may share them, and
    would otherwise hide an in-place change made before)."""
    def judge(outs):
        expect_rules(outs[0], f"{fn_name} ({case})")

    return [Call(*copy.deepcopy(args)).observe()], judge


# --- class means and covariances --------------------------------------------------------------


def _stats_judge(outs_value, want, what: str, rtol: float):
    if not isinstance(outs_value, (tuple, list)) or len(outs_value) != 4:
        raise Fail(f"{what} should return four tensors (means, global_mean, sigma_w, sigma_b)")
    names = ("the class means", "the global mean", "Sigma_W", "Sigma_B")
    for got, expected, name in zip(outs_value, want, names):
        got = expect_tensor(got, f"{name} ({what})", shape=expected.shape)
        expect_close(got, expected, f"{name} ({what})", rtol=rtol, atol=1e-10)


def _stats_agrees(h, y, c, case):
    means, global_mean = reference.class_means(h, y, c)
    sigma_w, sigma_b = reference.covariances(h, y, c)
    want = (means, global_mean, sigma_w, sigma_b)

    def judge(outs):
        _stats_judge(outs[0], want, case, 1e-8)

    return [Call(h, y, c)], judge


def _stats_reference(ctx):
    h, y = _features(ctx, [7, 3, 12, 5], 6, seed=1)
    return combine(_stats_agrees(h, y, 4, "the published unbalanced classes"),
                   _stats_agrees(*_drawn_features(ctx)))


def _stats_total_case(h, y, c, case):
    centred = (h - h.mean(0)).double()
    total = centred.T @ centred / len(h)
    d = h.shape[1]

    def judge(outs):
        if not isinstance(outs[0], (tuple, list)) or len(outs[0]) != 4:
            raise Fail("class_means_and_covariances should return four tensors")
        sigma_w = expect_tensor(outs[0][2], f"Sigma_W ({case}, float32)", shape=(d, d),
                                dtype=h.dtype)
        sigma_b = expect_tensor(outs[0][3], f"Sigma_B ({case}, float32)", shape=(d, d),
                                dtype=h.dtype)
        expect_close(sigma_w + sigma_b, total, f"Sigma_W + Sigma_B for balanced classes ({case}; "
                     "it must be the total covariance 1/N sum (h - mu_G)(h - mu_G)^T)",
                     rtol=1e-4, atol=1e-5)

    return [Call(h, y, c)], judge


def _stats_total(ctx):
    h, y = _features(ctx, [10, 10, 10], 5, seed=2, dtype=torch.float32)
    return combine(_stats_total_case(h, y, 3, "the published 3 classes of 10"),
                   _stats_total_case(*_drawn_features(ctx, torch.float32, balanced=True)))


def _stats_rules(ctx):
    h, y, c, case = _drawn_features(ctx)
    return _rules("class_means_and_covariances", case, h, y, c)


STATISTICS = Question(
    "class_means_and_covariances", "Class means and covariances", [
        Check("agrees with deepscope.collapse.class_means and covariances: the published "
              "unbalanced classes and drawn ones, rows in any order", 1, _stats_reference,
              hint="Sigma_W = 1/N sum_i (h_i - mu_{y_i})(...)^T; Sigma_B = 1/C sum_c (mu_c - "
                   "mu_G)(...)^T; mu_G is the mean of all N features; labels come in any order"),
        Check("balanced classes: Sigma_W + Sigma_B is the total covariance; keeps float32", 1,
              _stats_total),
        Check("keeps the rules: features and labels unchanged", 1, _stats_rules,
              hint="features - mu makes a new tensor; features -= mu changes the caller's"),
    ])


# --- NC1 --------------------------------------------------------------------------------------


def _nc1_agrees(h, y, c, case):
    want = reference.nc1(h, y, c)

    def judge(outs):
        expect_number_close(outs[0], want, f"NC1 ({case})", rtol=1e-6)

    return [Call(h, y, c)], judge


def _nc1_reference(ctx):
    h, y = _features(ctx, [8, 12, 10, 9], 10, seed=10)  # d = 10 > C - 1: Sigma_B is singular
    h2, y2 = _features(ctx, [15, 15, 15], 2, seed=11, spread=2.0)
    return combine(_nc1_agrees(h, y, 4, "d = 10, C = 4: Sigma_B has rank 3"),
                   _nc1_agrees(h2, y2, 3, "d = 2, C = 3"), _nc1_agrees(*_drawn_features(ctx)))


def _nc1_properties(ctx):
    c, d = ctx.integers(2, 7), ctx.integers(2, 9)
    means = 2 * ctx.randn(c, d, seed=ctx.fresh_seed(), dtype=torch.float64)
    y = torch.arange(c, device=ctx.device).repeat(ctx.integers(2, 5))
    h, y_noisy, c2, case = _drawn_features(ctx)
    want = reference.nc1(h, y_noisy, c2)
    scale = ctx.choice([1e-3, 1e3])

    def judge(outs):
        expect_number_close(outs[0], 0.0, f"NC1 of features equal to their class means ({c} "
                            f"classes in {d} dimensions)", atol=1e-10)
        expect_number_close(outs[1], want, f"NC1 of features scaled by {scale:g} ({case}; it "
                            "must not change)", rtol=1e-6)

    return [Call(means[y], y, c), Call(scale * h, y_noisy, c2)], judge


def _nc1_rules(ctx):
    h, y, c, case = _drawn_features(ctx)
    return _rules("nc1", case, h, y, c)


NC1 = Question(
    "nc1", "NC1: within-class variability", [
        Check("agrees with deepscope.collapse.nc1 (Tr(Sigma_W Sigma_B^+) / C): the published "
              "cases and a drawn one", 1, _nc1_reference,
              hint="Sigma_B has rank C - 1 at most: use the pseudo-inverse (torch.linalg.pinv), "
                   "and divide the trace by C"),
        Check("0 for collapsed features, unchanged by scaling them", 1, _nc1_properties),
        Check("keeps the rules: features and labels unchanged", 1, _nc1_rules),
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


def _etf_cases(sizes):
    checks = [_etf_judge(c, d) for c, d in sizes]

    def judge(outs):
        for check, out in zip(checks, outs):
            check(out)

    return [Call(c, d) for c, d in sizes], judge


def _etf_sizes(ctx):
    c = ctx.integers(2, 16)
    return _etf_cases([(3, 5), (10, 16), (4, 4), (c, c + ctx.integers(0, 12))])


def _etf_minimal(ctx):
    c = ctx.integers(3, 16)
    return _etf_cases([(2, 1), (5, 4), (c, c - 1)])


def _etf_rules(ctx):
    c = ctx.integers(2, 12)
    return _rules("simplex_etf", f"C = {c}", c, c + ctx.integers(0, 6))


SIMPLEX_ETF = Question(
    "simplex_etf", "The simplex equiangular tight frame", [
        Check("unit rows, cosines -1/(C-1), rows summing to zero, float32: (C, d) = (3, 5), "
              "(10, 16), (4, 4) and a drawn (C, d)", 1, _etf_sizes,
              hint="centre the identity, I - 1 1^T / C, and scale its rows to unit norm; map it "
                   "into d dimensions with orthonormal columns; no size is special"),
        Check("fits the smallest dimension d = C - 1 ((2, 1), (5, 4) and a drawn C)", 1,
              _etf_minimal,
              hint="the centred identity spans only C - 1 dimensions: express it in an "
                   "orthonormal basis of that subspace (e.g. from a QR or SVD)"),
        Check("keeps the rules: the global generators untouched", 1, _etf_rules,
              hint="any rotation is fine, but build it without torch.randn / np.random (or "
                   "with a torch.Generator of your own)"),
    ])


# --- NC2: distance to the ETF -----------------------------------------------------------------


def _dist_reference(ctx):
    c = ctx.integers(2, 10)
    vs = [ctx.randn(6, 9, seed=30, dtype=torch.float64),
          ctx.randn(3, 3, seed=31, dtype=torch.float64),
          ctx.randn(c, c + ctx.integers(-1, 6), seed=ctx.fresh_seed(), dtype=torch.float64)]
    wants = [reference.etf_distance(v) for v in vs]

    def judge(outs):
        for out, want, v in zip(outs, wants, vs):
            expect_number_close(out, want, f"the distance to the ETF of {tuple(v.shape)} "
                                "vectors", rtol=1e-6)

    return [Call(v) for v in vs], judge


def _dist_zero(ctx):
    c = ctx.integers(2, 10)
    etfs = [(4.0, reference.simplex_etf(5, 7, seed=3, dtype=torch.float64, device=ctx.device)),
            (ctx.uniform(0.01, 100), reference.simplex_etf(
                c, c + ctx.integers(0, 5), seed=ctx.fresh_seed(), dtype=torch.float64,
                device=ctx.device))]

    def judge(outs):
        for out, (scale, etf) in zip(outs, etfs):
            expect_number_close(out, 0.0, f"the distance of a rotated {tuple(etf.shape)} simplex "
                                f"ETF scaled by {scale:.3g}", atol=1e-10)

    vectors = ctx.randn(c, c + 2, seed=ctx.fresh_seed(), dtype=torch.float64)
    return combine(([Call(scale * etf) for scale, etf in etfs], judge),
                   _rules("etf_distance", f"{tuple(vectors.shape)} vectors", vectors))


ETF_DISTANCE = Question(
    "etf_distance", "NC2: distance to the simplex ETF", [
        Check("agrees with deepscope.collapse.etf_distance (published and drawn vectors)", 1,
              _dist_reference,
              hint="|| G / ||G||_F - (I - 1 1^T / C) / sqrt(C - 1) ||_F with G = V V^T"),
        Check("0 for rotated, scaled simplex ETFs; keeps the rules (vectors unchanged)", 1,
              _dist_zero),
    ])


# --- NC3: self-duality ------------------------------------------------------------------------


def _duality_reference(ctx):
    c, d = ctx.integers(2, 10), ctx.integers(2, 10)
    pairs = [(ctx.randn(4, 6, seed=40, dtype=torch.float64),
              ctx.randn(4, 6, seed=41, dtype=torch.float64)),
             (ctx.randn(c, d, seed=ctx.fresh_seed(), dtype=torch.float64),
              ctx.randn(c, d, seed=ctx.fresh_seed(), dtype=torch.float64))]
    wants = [reference.self_duality(w, m) for w, m in pairs]

    def judge(outs):
        for out, want, (w, _) in zip(outs, wants, pairs):
            expect_number_close(out, want, f"the self-duality distance of {tuple(w.shape)} "
                                "matrices", rtol=1e-6)

    return [Call(w, m) for w, m in pairs], judge


def _duality_closed(ctx):
    m = ctx.randn(ctx.integers(2, 8), ctx.integers(2, 8), seed=ctx.fresh_seed(),
                  dtype=torch.float64)
    scale = ctx.uniform(0.1, 10)

    def judge(outs):
        expect_number_close(outs[0], 0.0, f"self_duality({scale:.3g} M, M) (W a positive "
                            "multiple of M)", atol=1e-10)
        expect_number_close(outs[1], 2.0, "self_duality(-M, M) (opposite directions)",
                            rtol=1e-10)

    w = ctx.randn(*m.shape, seed=ctx.fresh_seed(), dtype=torch.float64)
    return combine(([Call(scale * m, m), Call(-m, m)], judge),
                   _rules("self_duality", f"{tuple(m.shape)} matrices", w, m))


SELF_DUALITY = Question(
    "self_duality", "NC3: self-duality", [
        Check("agrees with deepscope.collapse.self_duality (published and drawn shapes)", 1,
              _duality_reference,
              hint="|| W / ||W||_F - M / ||M||_F ||_F (Frobenius norms, not squared)"),
        Check("0 for W = s M (s > 0), 2 for W = -M; keeps the rules (W and M unchanged)", 1,
              _duality_closed),
    ])


# --- NC4: nearest-class-centre mismatch -------------------------------------------------------


def _ncc_case(ctx, n, c, d, seeds, what):
    h = ctx.randn(n, d, seed=seeds[0], dtype=torch.float64)
    means = ctx.randn(c, d, seed=seeds[1], dtype=torch.float64)
    w = means + 0.7 * ctx.randn(c, d, seed=seeds[2], dtype=torch.float64)
    b = ctx.randn(c, seed=seeds[3], dtype=torch.float64)
    wants = [reference.ncc_mismatch(h, means, w, b), reference.ncc_mismatch(h, means, w)]

    def judge(outs):
        expect_number_close(outs[0], wants[0], f"the mismatch with a bias ({what})", atol=1e-12)
        expect_number_close(outs[1], wants[1], f"the mismatch without a bias (bias=None; {what})",
                            atol=1e-12)

    return [Call(h, means, w, b), Call(h, means, w)], judge


def _ncc_reference(ctx):
    n, c, d = ctx.integers(10, 80), ctx.integers(2, 8), ctx.integers(2, 8)
    return combine(_ncc_case(ctx, 60, 3, 4, (50, 51, 52, 53), "60 features, 3 classes"),
                   _ncc_case(ctx, n, c, d, [ctx.fresh_seed() for _ in range(4)],
                             f"{n} features in {d} dimensions, {c} classes"))


def _ncc_equivalent(ctx):
    n, c, d = ctx.integers(10, 80), ctx.integers(2, 8), ctx.integers(2, 8)
    h = ctx.randn(n, d, seed=ctx.fresh_seed(), dtype=torch.float64)
    means = ctx.randn(c, d, seed=ctx.fresh_seed(), dtype=torch.float64)
    w, b = 2 * means, -(means**2).sum(1)

    def judge(outs):
        expect_number_close(outs[0], 0.0, f"the mismatch of W = 2M, b_c = -|mu_c|^2 ({c} "
                            "classes; this classifier is the nearest-class-mean rule)",
                            atol=1e-12)

    return combine(([Call(h, means, w, b)], judge),
                   _rules("ncc_mismatch", f"{n} features, {c} classes", h, means,
                          means + 0.5, b))


NCC_MISMATCH = Question(
    "ncc_mismatch", "NC4: classifier vs nearest class centre", [
        Check("agrees with deepscope.collapse.ncc_mismatch, with and without a bias (published "
              "and drawn sizes)", 1, _ncc_reference,
              hint="compare argmax_c (w_c . h + b_c) with argmin_c |h - mu_c|"),
        Check("0 for the classifier W = 2M, b = -|mu|^2; keeps the rules (inputs unchanged)", 1,
              _ncc_equivalent),
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
