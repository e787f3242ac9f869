"""Numbers read off slices and trajectories: slice curvature against the exact Hessian, the 2-D
non-convexity map on closed forms, the random-walk null of trajectory PCA against its
theoretical explained variance (Antognini & Sohl-Dickstein 2018), both barrier definitions, and
the residual MLP of the skip-connection contrast."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from deepscope import landscape as L
from deepscope import models

from tests.test_landscape import problem


def test_slice_curvature_is_the_rayleigh_quotient_of_the_hessian():
    model, x, y = problem()
    model = model.double()
    x = x.double()
    H = L.hessian_matrix(model, F.cross_entropy, (x, y)).double()
    values, vectors = torch.linalg.eigh(H)
    top = L.as_point(model, vectors[:, -1].to(torch.float64))
    alphas = torch.linspace(-0.05, 0.05, 21, dtype=torch.float64)
    along_top = L.slice_1d(model, top, F.cross_entropy, (x, y), alphas)
    curvature = L.slice_curvature(alphas, along_top)
    assert curvature == pytest.approx(float(values[-1]), rel=1e-3)
    d = L.random_direction(model, 3, "filter")
    v = L.as_vector(d).double()
    quotient = float(v @ H @ v)
    along_d = L.slice_1d(model, d, F.cross_entropy, (x, y), alphas)
    assert L.slice_curvature(alphas, along_d) == pytest.approx(quotient, rel=2e-2)
    assert float(values[0]) * float(v @ v) <= quotient <= float(values[-1]) * float(v @ v)


def test_slice_curvature_on_a_parabola_and_errors():
    a = np.linspace(-2, 2, 41)
    assert L.slice_curvature(a, 3 * a**2 + a + 1) == pytest.approx(6.0)
    assert L.slice_curvature(a, 3 * a**2 + a**4, width=0.1) == pytest.approx(6.0, rel=1e-2)
    with pytest.raises(ValueError, match="same length, got 41 and 3"):
        L.slice_curvature(a, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least 3 points, on both sides of 0"):
        L.slice_curvature(np.linspace(0, 1, 9), np.zeros(9))
    with pytest.raises(ValueError, match="must be finite"):
        L.slice_curvature(a, np.full(41, np.nan))
    with pytest.raises(ValueError, match="`width` must be > 0"):
        L.slice_curvature(a, a**2, width=0.0)


def test_slice_nonconvexity_on_a_bowl_and_a_saddle():
    g = np.linspace(-1, 1, 11)
    X, Y = np.meshgrid(g, g)  # X varies along columns: losses[row = y, col = x]
    bowl = L.slice_nonconvexity(g, g, X**2 + 4 * Y**2)
    assert bowl.ratio.shape == (9, 9) and np.allclose(bowl.ratio, 0.25)
    assert bowl.share_negative == 0.0
    saddle = L.slice_nonconvexity(g, g, X**2 - Y**2 + 0.5 * X * Y)
    assert saddle.share_negative == 1.0 and np.allclose(saddle.ratio, 1.0)
    mixed = L.slice_nonconvexity(g, g, np.cos(3 * X) + Y**2)
    assert 0 < mixed.share_negative < 1
    with pytest.raises(ValueError, match=r"shape \(len\(ys\), len\(xs\)\) = \(11, 11\)"):
        L.slice_nonconvexity(g, g, np.zeros((11, 10)))
    with pytest.raises(ValueError, match="evenly spaced"):
        L.slice_nonconvexity(g**3, g, X)


def test_random_walk_like_keeps_the_step_lengths_and_start():
    model, _, _ = problem()
    start = L.snapshot(model)
    g = torch.Generator().manual_seed(0)
    path = [start]
    for i in range(6):
        path.append({n: t + (i + 1) * 0.01 * torch.randn(t.shape, generator=g)
                     for n, t in path[-1].items()})
    walk = L.random_walk_like(path, seed=1)
    assert len(walk) == len(path) and walk[0].keys() == start.keys()
    assert all(torch.equal(walk[0][n], start[n]) for n in start)
    lengths = [float((L.as_vector(b) - L.as_vector(a)).norm()) for a, b in zip(path, path[1:])]
    walked = [float((L.as_vector(b) - L.as_vector(a)).norm()) for a, b in zip(walk, walk[1:])]
    assert walked == pytest.approx(lengths, rel=1e-5)
    assert torch.equal(L.as_vector(L.random_walk_like(path, seed=1)[-1]), L.as_vector(walk[-1]))
    assert not torch.equal(L.as_vector(L.random_walk_like(path, seed=2)[-1]),
                           L.as_vector(walk[-1]))
    with pytest.raises(ValueError, match="at least 2 parameter dicts"):
        L.random_walk_like(path[:1])
    with pytest.raises(TypeError, match="must hold dicts"):
        L.random_walk_like([1, 2])


def test_random_walk_pca_matches_the_theory():
    # Antognini & Sohl-Dickstein (2018): for n steps of a random walk in high dimension the k-th
    # PCA component explains about 6 / (pi^2 k^2) of the variance: 0.61 + 0.15 for k = 1, 2
    dim, n = 4000, 60
    start = {"w": torch.zeros(dim, dtype=torch.float64)}
    path = [start] + [{"w": torch.full((dim,), float(i + 1))} for i in range(n)]
    ratios = []
    for seed in range(6):
        pca = L.trajectory_pca(L.random_walk_like(path, seed=seed), k=2)
        ratios.append(float(pca.explained_variance_ratio.sum()))
    expected = 6 / math.pi**2 * (1 + 1 / 4)
    assert abs(np.mean(ratios) - expected) < 0.05, (ratios, expected)
    straight = L.trajectory_pca(path, k=2)  # a straight path is 1-D
    assert float(straight.explained_variance_ratio[0]) > 0.999


def test_loss_barrier_both_definitions():
    losses = [0.0, 1.0, 2.0]  # rising path: above the chord by 0, above the mean by 1
    assert L.loss_barrier(losses) == pytest.approx(0.0)
    assert L.loss_barrier(losses, kind="mean") == pytest.approx(1.0)
    same_ends = [0.5, 1.5, 0.7, 0.5]
    assert L.loss_barrier(same_ends) == pytest.approx(L.loss_barrier(same_ends, kind="mean"))
    with pytest.raises(ValueError, match="`kind` must be one of 'chord', 'mean'"):
        L.loss_barrier(losses, kind="max")


def test_residual_mlp_with_and_without_skips():
    torch.manual_seed(0)
    a = models.residual_mlp(64, width=8, depth=3)
    torch.manual_seed(0)
    b = models.residual_mlp(64, width=8, depth=3, skip=False)
    assert [n for n, _ in a.named_children()][:3] == ["flatten", "stem", "stem_act"]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    x = torch.randn(5, 1, 8, 8)
    assert a(x).shape == (5, 10) and not torch.allclose(a.eval()(x), b.eval()(x))
    h = a.stem_act(a.stem(x.flatten(1)))
    block = a.block1
    assert torch.allclose(block(h), h + block.act(block.bn(block.fc(h))))
    plain = models.residual_mlp(64, width=8, depth=2, batch_norm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in plain.modules())
    with pytest.raises(ValueError, match="`depth` must be >= 1"):
        models.residual_mlp(64, depth=0)
