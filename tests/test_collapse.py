"""deepscope.collapse: the simplex ETF, NC1-NC4 against exact fixtures and an independent NC1."""

import math

import numpy as np
import pytest
import torch
from deepscope import collapse

from tests.conftest import requires_cuda


def _etf_fixture(c=5, d=12, n=7, scale=2.5, seed=3):
    """Features equal to their class means, which form a rotated, scaled, shifted simplex ETF."""
    means = scale * collapse.simplex_etf(c, d, seed=seed, dtype=torch.float64)
    shift = torch.linspace(-1, 1, d, dtype=torch.float64)
    labels = torch.arange(c).repeat(n)  # interleaved classes
    return means[labels] + shift, labels, means


def _noisy(c=4, d=6, n=30, seed=0, sizes=None):
    g = torch.Generator().manual_seed(seed)
    sizes = sizes or [n] * c
    centres = 3 * torch.randn(c, d, generator=g, dtype=torch.float64)
    labels = torch.repeat_interleave(torch.arange(c), torch.tensor(sizes))
    features = centres[labels] + torch.randn(len(labels), d, generator=g, dtype=torch.float64)
    return features, labels


# --------------------------------------------------------------------------------------------
# The simplex ETF


@pytest.mark.parametrize("c,d,seed", [(2, 1, None), (3, 2, None), (4, 3, 1), (10, 9, None),
                                      (10, 64, 0), (5, 5, None)])
def test_simplex_etf_is_a_simplex_equiangular_tight_frame(c, d, seed):
    m = collapse.simplex_etf(c, d, seed=seed, dtype=torch.float64)
    assert m.shape == (c, d)
    gram = m @ m.T
    expected = c / (c - 1) * (torch.eye(c, dtype=torch.float64) - 1.0 / c)
    assert torch.allclose(gram, expected, atol=1e-12)
    assert torch.allclose(gram.diagonal(), torch.ones(c, dtype=torch.float64), atol=1e-12)
    assert m.sum(0).abs().max() < 1e-12
    # tight frame: M^T M is (C/(C-1)) times a projection of rank C-1
    eig = torch.linalg.eigvalsh(m.T @ m)
    assert torch.allclose(eig[-(c - 1):], torch.full((c - 1,), c / (c - 1), dtype=eig.dtype))


def test_simplex_etf_rotation_and_errors():
    a = collapse.simplex_etf(4, 6)
    b = collapse.simplex_etf(4, 6, seed=1)
    assert a.dtype == torch.float32 and not torch.allclose(a, b)
    assert torch.allclose(a @ a.T, b @ b.T, atol=1e-6)
    assert torch.equal(b, collapse.simplex_etf(4, 6, seed=1))
    with pytest.raises(ValueError, match=r"`dim` must be >= num_classes - 1 = 3 .* got 2"):
        collapse.simplex_etf(4, 2)
    with pytest.raises(ValueError, match="`num_classes` must be >= 2, got 1"):
        collapse.simplex_etf(1, 3)
    with pytest.raises(TypeError, match="`dim` must be an int, got float"):
        collapse.simplex_etf(3, 2.0)


def test_etf_plane_shows_a_simplex_etf_as_a_regular_polygon():
    for c, d in [(3, 2), (5, 4), (7, 20)]:
        means = 1.7 * collapse.simplex_etf(c, d, seed=2, dtype=torch.float64)
        basis = collapse.etf_plane(means)
        assert torch.allclose(basis.T @ basis, torch.eye(2, dtype=torch.float64), atol=1e-12)
        points = means @ basis
        radii = points.norm(dim=1)
        assert torch.allclose(radii, radii[0].expand(c), atol=1e-12)
        assert radii[0] == pytest.approx(1.7 * math.sqrt(2 / (c - 1)))
        angles = torch.atan2(points[:, 1], points[:, 0])
        steps = torch.remainder(angles.roll(-1) - angles, 2 * math.pi)
        assert torch.allclose(steps, torch.full((c,), 2 * math.pi / c, dtype=steps.dtype))
    two = collapse.etf_plane(torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]))
    assert torch.allclose(two.T @ two, torch.eye(2), atol=1e-6)
    line = collapse.etf_plane(torch.tensor([[1.0], [-1.0]]))
    assert line.shape == (1, 2) and line[0, 0] == 1 and line[0, 1] == 0
    flat = collapse.etf_plane(torch.zeros(3, 4))
    assert torch.allclose(flat.T @ flat, torch.eye(2))
    with pytest.raises(ValueError, match="at least 2 class means, got 1"):
        collapse.etf_plane(torch.zeros(1, 4))


def test_fixed_etf_head_is_fixed_and_reads_like_a_linear_layer():
    head = collapse.fixed_etf_head(16, 10, scale=3.0)
    assert [n for n, _ in head.named_parameters()] == [] and head.bias is None
    assert torch.allclose(head.weight, 3.0 * collapse.simplex_etf(10, 16, seed=0))
    h = torch.randn(5, 16)
    assert torch.allclose(head(h), h @ head.weight.T)
    assert "num_classes=10" in repr(head)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), head)
    assert collapse.find_classifier(net) is head
    with pytest.raises(ValueError, match=r"expected features of shape \(B, 16\), got \(5, 8\)"):
        head(torch.randn(5, 8))
    with pytest.raises(ValueError, match="`scale` must be > 0"):
        collapse.FixedETFHead(16, 10, scale=0.0)
    with pytest.raises(ValueError, match="`in_features` must be >= num_classes - 1 = 9 .* got 4"):
        collapse.fixed_etf_head(4, 10)


# --------------------------------------------------------------------------------------------
# NC1-NC4


def test_exact_etf_fixture_gives_every_metric_zero():
    features, labels, means = _etf_fixture()
    centred = means - means.mean(0)
    weight = 4.0 * centred
    m = collapse.collapse_metrics(features, labels, weight, torch.zeros(5, dtype=torch.float64))
    values = m.as_dict()
    assert set(values) == {"nc1", "equinorm_means", "equiangular_means", "etf_distance_means",
                           "equinorm_weights", "equiangular_weights", "etf_distance_weights",
                           "self_duality", "ncc_mismatch"}
    for name, value in values.items():
        assert abs(value) < 1e-10, (name, value)


def test_nc1_equals_an_independent_trace_formula_on_noisy_data():
    for c, d, sizes in [(4, 6, None), (3, 10, None), (5, 3, [12, 30, 7, 19, 25])]:
        features, labels = _noisy(c=c, d=d, sizes=sizes, seed=c)
        h, y = features.numpy(), labels.numpy()
        mu_g = h.mean(0)
        mus = np.stack([h[y == k].mean(0) for k in range(c)])
        sigma_w = sum(np.outer(v, v) for v in h - mus[y]) / len(h)
        sigma_b = sum(np.outer(v, v) for v in mus - mu_g) / c
        expected = np.trace(sigma_w @ np.linalg.pinv(sigma_b)) / c
        assert collapse.nc1(features, labels) == pytest.approx(expected, rel=1e-9)
        assert collapse.collapse_metrics(features, labels).nc1 == pytest.approx(expected,
                                                                                 rel=1e-9)
        sw, sb = collapse.covariances(features, labels)
        assert np.allclose(sw.numpy(), sigma_w) and np.allclose(sb.numpy(), sigma_b)


def test_nc1_shrinks_with_the_noise_and_is_invariant_to_rotation_and_scale():
    features, labels = _noisy(c=4, d=6, n=40, seed=1)
    means, _ = collapse.class_means(features, labels)
    tighter = means[labels] + 0.1 * (features - means[labels])
    assert collapse.nc1(tighter, labels) == pytest.approx(0.01 * collapse.nc1(features, labels))
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    base = collapse.collapse_metrics(features, labels).as_dict()
    moved = collapse.collapse_metrics(3.0 * features @ q + 1.0, labels).as_dict()
    for name in ("nc1", "equinorm_means", "equiangular_means", "etf_distance_means"):
        assert moved[name] == pytest.approx(base[name], rel=1e-9), name
    # Sigma_W + Sigma_B is the total covariance for balanced classes
    sw, sb = collapse.covariances(features, labels)
    centred = features - features.mean(0)
    assert torch.allclose(sw + sb, centred.T @ centred / len(features))


def test_nc2_measures_on_known_configurations():
    c = 4
    basis = torch.eye(c, dtype=torch.float64)  # orthogonal, equal norms: cos 0
    assert collapse.equinorm(basis) == pytest.approx(0.0, abs=1e-15)
    assert collapse.equiangularity(basis) == pytest.approx(1 / (c - 1))
    ident = torch.eye(c, dtype=torch.float64)
    etf_gram = (ident - 1 / c) / math.sqrt(c - 1)
    expected = float(torch.linalg.norm(ident / math.sqrt(c) - etf_gram))
    assert collapse.etf_distance(basis) == pytest.approx(expected)
    assert collapse.equinorm(torch.tensor([[1.0, 0], [0, 2.0], [3.0, 0]])) == pytest.approx(0.5)
    assert collapse.etf_distance(collapse.simplex_etf(6, 9)) < 1e-6
    assert collapse.equiangularity(-collapse.simplex_etf(6, 9)) < 1e-6


def test_nc3_and_nc4_on_known_configurations():
    features, labels, means = _etf_fixture(c=3, d=4)
    centred = means - means.mean(0)
    assert collapse.self_duality(0.2 * centred, centred) == pytest.approx(0, abs=1e-12)
    assert collapse.self_duality(-centred, centred) == pytest.approx(2.0)
    # a huge bias for class 0 makes the classifier say 0 everywhere: it disagrees with the
    # nearest class centre on the other two thirds of the samples
    bias = torch.tensor([100.0, 0.0, 0.0], dtype=torch.float64)
    assert collapse.ncc_mismatch(features, means, centred, bias) == pytest.approx(2 / 3)
    assert collapse.ncc_mismatch(features, means, centred) == 0.0
    m = collapse.collapse_metrics(features, labels, centred, bias)
    assert m.ncc_mismatch == pytest.approx(2 / 3) and m.self_duality < 1e-12


def test_metrics_are_nan_where_undefined_and_computed_in_float64():
    features, labels = _noisy(c=3, d=4)
    weight = torch.randn(3, 4)
    weight[1] = 0
    m = collapse.collapse_metrics(features.float(), labels, weight)
    assert math.isnan(m.equiangular_weights) and not math.isnan(m.etf_distance_weights)
    assert math.isfinite(m.nc1) and math.isnan(collapse.collapse_metrics(features, labels)
                                               .self_duality)
    means, global_mean = collapse.class_means(features.float(), labels)
    assert means.dtype == torch.float64 and global_mean.shape == (4,)
    same = torch.zeros(6, 2)
    assert collapse.nc1(same, torch.tensor([0, 0, 0, 1, 1, 1])) == math.inf


def test_bad_input_gives_clear_errors():
    features, labels = _noisy(c=3, d=4, n=5)
    with pytest.raises(ValueError, match="same length, got 15 features and 14 labels"):
        collapse.collapse_metrics(features, labels[:-1])
    bad = labels.clone()
    bad[0] = 3
    with pytest.raises(ValueError, match=r"`labels` must be < 3 \(the number of classes\), "
                                         r"got max 3"):
        collapse.collapse_metrics(features, bad, torch.randn(3, 4))
    with pytest.raises(ValueError, match="`labels` must be >= 0, got min -1"):
        collapse.nc1(features, labels - 1)
    lonely = torch.tensor([0, 0, 1, 1, 2])
    with pytest.raises(ValueError, match="at least 2 samples .* got 1 in class 2"):
        collapse.collapse_metrics(features[:5], lonely)
    with pytest.raises(ValueError, match="got 0 in class 1"):
        collapse.nc1(features[:4], torch.tensor([0, 0, 2, 2]))
    with pytest.raises(TypeError, match="`labels` must be an integer tensor"):
        collapse.nc1(features, labels.float())
    with pytest.raises(TypeError, match="`labels` must be a torch.Tensor, got list"):
        collapse.nc1(features, labels.tolist())
    with pytest.raises(ValueError, match=r"`features` must have 2 dimensions \(N, d\)"):
        collapse.nc1(features[0], labels)
    nan = features.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="must be finite"):
        collapse.collapse_metrics(nan, labels)
    with pytest.raises(ValueError, match=r"`weight` must have shape \(C, 4\) .* got \(3, 5\)"):
        collapse.collapse_metrics(features, labels, torch.randn(3, 5))
    with pytest.raises(ValueError, match="`bias` was given without `weight`"):
        collapse.collapse_metrics(features, labels, bias=torch.zeros(3))
    with pytest.raises(ValueError, match=r"`bias` must have shape \(3,\), got \(2,\)"):
        collapse.collapse_metrics(features, labels, torch.randn(3, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="`features` and `labels` must have the same length"):
        collapse.class_means(features, labels[:3])
    with pytest.raises(ValueError, match="got 1 in class 2"):
        collapse.covariances(features[:5], lonely)
    with pytest.raises(ValueError, match="need at least 2 classes"):
        collapse.nc1(features[:4], torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one sample"):
        collapse.nc1(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2 rows"):
        collapse.equinorm(torch.ones(1, 3))
    with pytest.raises(ValueError, match="at least 2 rows"):
        collapse.equiangularity(torch.ones(1, 3))
    with pytest.raises(ValueError, match="at least 2 rows"):
        collapse.etf_distance(torch.ones(1, 3))
    with pytest.raises(ValueError, match="must not all be zero"):
        collapse.etf_distance(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="must be nonzero, got a zero row"):
        collapse.equiangularity(torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"same shape \(C, d\), got \(3, 4\) and \(2, 4\)"):
        collapse.self_duality(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="must be nonzero"):
        collapse.self_duality(torch.zeros(3, 4), torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"must have shape \(C, 4\), got \(3, 4\) and \(2, 4\)"):
        collapse.ncc_mismatch(features, torch.randn(2, 4), torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"`bias` must have shape \(3,\), got \(4,\)"):
        collapse.ncc_mismatch(features, torch.randn(3, 4), torch.randn(3, 4), torch.zeros(4))


@requires_cuda
def test_metrics_on_cuda_match_cpu():
    features, labels = _noisy(c=4, d=6)
    weight, bias = torch.randn(4, 6), torch.randn(4)
    cpu = collapse.collapse_metrics(features, labels, weight, bias).as_dict()
    gpu = collapse.collapse_metrics(features.cuda(), labels.cuda(), weight.cuda(),
                                    bias.cuda()).as_dict()
    for name in cpu:
        assert gpu[name] == pytest.approx(cpu[name], rel=1e-6, abs=1e-9), name
