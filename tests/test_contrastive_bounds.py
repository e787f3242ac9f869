"""The InfoNCE bound and limit (deepscope.contrastive.bounds) and the few-label probe."""

import math

import pytest
import torch
import torch.nn.functional as F
from deepscope import contrastive, data


def _loop_bound(z1, z2, tau):
    """The bound written out anchor by anchor, in both directions (an independent oracle)."""
    u1, u2 = F.normalize(z1.double(), dim=1), F.normalize(z2.double(), dim=1)
    n = len(u1)
    total = 0.0
    for a, b in ((u1, u2), (u2, u1)):
        for i in range(n):
            logits = torch.tensor([float(a[i] @ b[j]) / tau for j in range(n)], dtype=torch.float64)
            total += -float(torch.log_softmax(logits, 0)[i])
    return math.log(n) - total / (2 * n)


def test_infonce_bound_matches_the_formula_and_its_ceiling():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(2, 12, 5, generator=g)
    result = contrastive.infonce_bound(z1, z2, temperature=0.3)
    assert result.bound == pytest.approx(_loop_bound(z1, z2, 0.3), abs=1e-12)
    assert result.ceiling == pytest.approx(math.log(12))
    assert result.bound == pytest.approx(result.ceiling - result.loss)
    # identical rows certify nothing; orthogonal, perfectly paired rows reach log N as tau -> 0
    same = torch.ones(12, 5)
    assert contrastive.infonce_bound(same, same).bound == pytest.approx(0.0, abs=1e-12)
    eye = torch.eye(12)
    assert contrastive.infonce_bound(eye, eye, temperature=0.01).bound == pytest.approx(
        math.log(12), abs=1e-6)
    for seed in range(20):  # never above log N, whatever the data
        a, b = torch.randn(2, 7, 3, generator=torch.Generator().manual_seed(seed))
        assert contrastive.infonce_bound(a, b, temperature=0.05).bound <= math.log(7) + 1e-12


def test_infonce_bound_stays_below_the_true_mutual_information_of_gaussians():
    # X ~ N(0, I_2), Y = rho X + sqrt(1 - rho^2) E: I(X; Y) = -log(1 - rho^2) nats (d = 2).
    rho, n, batches = 0.6, 256, 40
    true_mi = -math.log(1 - rho**2)
    g = torch.Generator().manual_seed(1)
    bounds = []
    for _ in range(batches):
        x = torch.randn(n, 2, generator=g, dtype=torch.float64)
        y = rho * x + math.sqrt(1 - rho**2) * torch.randn(n, 2, generator=g, dtype=torch.float64)
        bounds.append(contrastive.infonce_bound(x, y, temperature=0.5).bound)
    mean = sum(bounds) / batches
    se = (sum((b - mean) ** 2 for b in bounds) / (batches - 1) / batches) ** 0.5
    assert mean <= true_mi + 3 * se, (mean, true_mi)
    assert mean > 0.05  # and the cosine critic does certify some of it
    # shuffled pairs certify nothing
    x = torch.randn(n, 2, generator=g)
    y = torch.randn(n, 2, generator=g)
    assert contrastive.infonce_bound(x, y, temperature=0.5).bound < 0.05


def test_infonce_limit_is_the_large_batch_limit_of_the_loss():
    g = torch.Generator().manual_seed(2)
    z1 = F.normalize(torch.randn(3000, 4, generator=g, dtype=torch.float64), dim=1)
    z2 = F.normalize(z1 + 0.3 * torch.randn(3000, 4, generator=g, dtype=torch.float64), dim=1)
    tau = 0.5
    limit = contrastive.infonce_limit(z1, z2, tau)
    s = z1 @ z2.T / tau
    assert limit.alignment_term == pytest.approx(-float(s.diagonal().mean()))
    off = s - torch.diag(torch.full((3000,), float("inf"), dtype=torch.float64))
    manual = float((torch.logsumexp(off, 1) - math.log(2999)).mean())
    assert limit.uniformity_term == pytest.approx(manual)
    assert limit.limit == pytest.approx(limit.alignment_term + limit.uniformity_term)
    # Wang & Isola, Theorem 1: L(M negatives) - log M approaches the limit as M grows
    gaps = []
    for m in (8, 64, 2999):
        loss = contrastive.infonce_bound(z1[: m + 1], z2[: m + 1], tau).loss
        gaps.append(abs(loss - math.log(m) - limit.limit))
    assert gaps[-1] < 0.01 and gaps[-1] < gaps[0]


def test_bounds_reject_bad_input_by_name():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="infonce_bound"):
        contrastive.infonce_bound(z, torch.randn(5, 3))
    with pytest.raises(ValueError, match="temperature"):
        contrastive.infonce_bound(z, z, temperature=0.0)
    with pytest.raises(ValueError, match="infonce_limit"):
        contrastive.infonce_limit(z[:1], z[:1])


def test_few_label_probe_uses_the_same_draws_for_every_encoder():
    x_train, y_train = data.digits("train")
    x_test, y_test = data.digits("test")
    a = contrastive.few_label_probe(torch.nn.Flatten(), (x_train, y_train), (x_test, y_test),
                                    labels_per_class=3, draws=2, seed=0)
    b = contrastive.few_label_probe(torch.nn.Flatten(), (x_train, y_train), (x_test, y_test),
                                    labels_per_class=3, draws=2, seed=0)
    assert a.per_draw == b.per_draw and len(a.per_draw) == 2
    assert a.accuracy == pytest.approx(sum(a.per_draw) / 2)
    assert 0.4 < a.accuracy < 1.0  # 30 labels: far better than chance, below the full probe
    with pytest.raises(ValueError, match="labels_per_class"):
        contrastive.few_label_probe(torch.nn.Flatten(), (x_train, y_train), (x_test, y_test),
                                    labels_per_class=10_000)
