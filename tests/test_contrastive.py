"""deepscope.contrastive losses and geometry against closed forms and loop-based references."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from deepscope import contrastive as C
from scipy.special import i0

from tests.conftest import requires_cuda


def nt_xent_loop(z1, z2, tau):
    """Reference NT-Xent written as the paper's double loop (Chen et al. 2020, Algorithm 1)."""
    z = [F.normalize(v, dim=0) for v in torch.cat([z1, z2]).double()]
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        numerator = math.exp(float(z[i] @ z[j]) / tau)
        denominator = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(2 * n) if k != i)
        total += -math.log(numerator / denominator)
    return total / (2 * n)


def supcon_loop(z, labels, tau):
    """Reference L^sup_out written as loops (Khosla et al. 2020, eq. 2)."""
    z = [F.normalize(v, dim=0) for v in z.double()]
    terms = []
    for i in range(len(z)):
        positives = [p for p in range(len(z)) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(math.exp(float(z[i] @ z[a]) / tau) for a in range(len(z)) if a != i)
        terms.append(-sum(math.log(math.exp(float(z[i] @ z[p]) / tau) / denominator)
                          for p in positives) / len(positives))
    return sum(terms) / len(terms)


# ------------------------------------------------------------------------------------ InfoNCE


@pytest.mark.parametrize("n", [2, 5, 64])
@pytest.mark.parametrize("tau", [0.07, 0.5, 3.0])
def test_nt_xent_of_identical_embeddings_is_log_2n_minus_1(n, tau):
    z = torch.randn(1, 12).expand(n, 12)
    assert float(C.info_nce(z, z, tau)) == pytest.approx(math.log(2 * n - 1), abs=1e-5)
    assert C.collapsed_info_nce(n) == pytest.approx(math.log(2 * n - 1), rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_nt_xent_matches_loop_reference(seed):
    g = torch.Generator().manual_seed(seed)
    z1, z2 = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    for tau in (0.1, 0.5, 2.0):
        ours = float(C.info_nce(z1.double(), z2.double(), tau))
        assert ours == pytest.approx(nt_xent_loop(z1, z2, tau), rel=1e-10)


def test_nt_xent_unnormalised_and_symmetric():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    assert float(C.info_nce(z1, z2)) == pytest.approx(float(C.info_nce(z2, z1)), rel=1e-6)
    # normalize=False uses dot products: equal to the normalised loss on pre-normalised rows
    u1, u2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    assert float(C.info_nce(u1, u2, 0.3, normalize=False)) == pytest.approx(
        float(C.info_nce(z1, z2, 0.3)), rel=1e-6)
    assert float(C.info_nce(3 * z1, z2, 0.3, normalize=False)) != pytest.approx(
        float(C.info_nce(z1, z2, 0.3, normalize=False)), rel=1e-3)


def test_nt_xent_falls_for_aligned_distinct_pairs_and_is_differentiable():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(32, 16, generator=g, requires_grad=True)
    aligned = C.info_nce(z, z + 0.01 * torch.randn(32, 16, generator=g), 0.1)
    assert float(aligned.detach()) < 0.1 < math.log(63)
    aligned.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_info_nce_bad_input():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"`z1` and `z2` must have the same shape.*\(4, 3\) and "
                                         r"\(5, 3\)"):
        C.info_nce(z, torch.randn(5, 3), 0.5)
    with pytest.raises(ValueError, match=r"info_nce: `z1` must have 2 dimensions \(N, D\), got "
                                         r"shape \(4,\)"):
        C.info_nce(torch.randn(4), torch.randn(4), 0.5)
    with pytest.raises(ValueError, match="`temperature` must be > 0, got 0.0"):
        C.info_nce(z, z, 0.0)
    with pytest.raises(ValueError, match="`temperature` must be > 0, got -1.0"):
        C.info_nce(z, z, -1)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        C.info_nce(z[:1], z[:1], 0.5)
    with pytest.raises(TypeError, match="floating-point"):
        C.info_nce(torch.ones(4, 3, dtype=torch.long), torch.ones(4, 3, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match="`batch_size` must be >= 2"):
        C.collapsed_info_nce(1)


# ------------------------------------------------------------------------------------- SupCon


@pytest.mark.parametrize("seed", range(3))
def test_supcon_matches_loop_reference(seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(12, 6, generator=g).double()
    labels = torch.tensor([0, 1, 2, 0, 1, 3, 0, 2, 4, 1, 5, 5])  # 4 has no positive
    ours = float(C.supcon(z, labels, 0.2))
    assert ours == pytest.approx(supcon_loop(z, labels.tolist(), 0.2), rel=1e-10)


def test_supcon_with_instance_labels_is_nt_xent():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(9, 4, generator=g), torch.randn(9, 4, generator=g)
    idx = torch.arange(9)
    assert float(C.supcon(torch.cat([z1, z2]), torch.cat([idx, idx]), 0.4)) == pytest.approx(
        float(C.info_nce(z1, z2, 0.4)), rel=1e-5)


def test_supcon_bad_input():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="at least one anchor a positive"):
        C.supcon(z, torch.arange(4), 0.1)
    with pytest.raises(ValueError, match=r"`labels` must have shape \(4,\), got \(3,\)"):
        C.supcon(z, torch.arange(3), 0.1)
    with pytest.raises(TypeError, match="`labels` must be an integer tensor"):
        C.supcon(z, torch.zeros(4), 0.1)
    with pytest.raises(ValueError, match="`temperature` must be > 0"):
        C.supcon(z, torch.zeros(4, dtype=torch.long), 0)


# --------------------------------------------------------------- negative weights and forces


def test_negative_weights_are_softmax_and_sharpen_as_temperature_falls():
    s = torch.tensor([0.9, 0.5, 0.1, -0.3, -0.8])
    for tau in (0.05, 0.5, 5.0):
        w = C.negative_weights(s, tau)
        expected = np.exp(s.numpy() / tau) / np.exp(s.numpy() / tau).sum()
        np.testing.assert_allclose(w.numpy(), expected, rtol=1e-5)
    hard = [float(C.negative_weights(s, t)[0]) for t in (2.0, 0.5, 0.1, 0.02)]
    entropy = [float(C.weight_entropy(C.negative_weights(s, t))) for t in (2.0, 0.5, 0.1, 0.02)]
    assert hard == sorted(hard) and entropy == sorted(entropy, reverse=True)
    assert float(C.weight_entropy(torch.full((8,), 1 / 8))) == pytest.approx(math.log(8))
    assert float(C.weight_entropy(torch.tensor([1.0, 0.0, 0.0]))) == 0.0
    with pytest.raises(ValueError, match="`temperature` must be > 0"):
        C.negative_weights(s, 0)
    with pytest.raises(ValueError, match=r"`similarities` must have at least 1 dimensions"):
        C.negative_weights(torch.tensor(0.5), 1.0)


def test_negative_weights_take_minus_inf_as_a_mask_and_refuse_nan_and_plus_inf():
    s = torch.tensor([[-math.inf, 0.5, 0.1], [0.9, -math.inf, 0.1]])
    w = C.negative_weights(s, 0.5)
    assert w[0, 0] == 0 and w[1, 1] == 0  # masked: weight 0 (softmax's convention)
    np.testing.assert_allclose(w[0, 1:].numpy(), C.negative_weights(s[0, 1:], 0.5).numpy())
    torch.testing.assert_close(w.sum(-1), torch.ones(2))
    for bad in (math.nan, math.inf):  # not a mask: raise by name
        with pytest.raises(ValueError, match="negative_weights: `similarities` must be finite"):
            C.negative_weights(torch.tensor([[bad, 0.5, 0.1]]), 0.5)
    with pytest.raises(ValueError, match="negative_weights: `similarities` has a row whose"):
        C.negative_weights(torch.full((2, 3), -math.inf), 0.5)  # all masked: no weights


@pytest.mark.parametrize("tau", [0.1, 1.0])
def test_anchor_gradients_match_autograd(tau):
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(3, generator=g).double(), torch.randn(3, generator=g).double()
    negs = torch.randn(6, 3, generator=g).double()
    result = C.anchor_gradients(u, v, negs, tau)
    leaves = [t.clone().requires_grad_(True) for t in (u, v, negs)]
    logits = torch.cat([(leaves[0] @ leaves[1])[None], leaves[2] @ leaves[0]]) / tau
    loss = -torch.log_softmax(logits, 0)[0]
    grads = torch.autograd.grad(loss, leaves)
    assert float(result.loss) == pytest.approx(float(loss.detach()), rel=1e-12)
    for ours, ref in zip((result.grad_anchor, result.grad_positive, result.grad_negatives), grads):
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(result.weights, torch.softmax(negs @ u / tau, 0))
    p = torch.softmax(logits.detach(), 0)
    assert float(result.positive_weight) == pytest.approx(float(p[0]))
    # the per-negative force is proportional to its weight: p_k = (1 - p+) * weight_k
    torch.testing.assert_close(p[1:], (1 - p[0]) * result.weights)


def test_anchor_gradients_bad_input():
    u = torch.randn(2)
    with pytest.raises(ValueError, match=r"`negatives` must have shape \(K, 2\)"):
        C.anchor_gradients(u, u, torch.randn(4, 3), 0.5)
    with pytest.raises(ValueError, match="`anchor` and `positive` must have the same shape"):
        C.anchor_gradients(u, torch.randn(3), torch.randn(4, 2), 0.5)
    with pytest.raises(ValueError, match=r"`anchor` must have 1 dimensions \(D,\)"):
        C.anchor_gradients(torch.randn(1, 2), torch.randn(1, 2), torch.randn(4, 2), 0.5)


# ------------------------------------------------------------------ alignment and uniformity


def test_alignment_closed_forms():
    z = torch.randn(10, 4)
    assert float(C.alignment(z, 2.5 * z)) == pytest.approx(0.0, abs=1e-6)  # scale-free
    assert float(C.alignment(z, -z)) == pytest.approx(4.0, rel=1e-6)  # antipodal: ||2u||^2
    assert float(C.alignment(z, -z, alpha=1)) == pytest.approx(2.0, rel=1e-6)
    e = torch.eye(2)
    assert float(C.alignment(e, e.flip(0))) == pytest.approx(2.0, rel=1e-6)  # orthogonal
    with pytest.raises(ValueError, match=r"alignment: `z1` and `z2` must have the same shape"):
        C.alignment(z, z[:3])
    with pytest.raises(ValueError, match="`alpha` must be > 0"):
        C.alignment(z, z, alpha=0)
    with pytest.raises(ValueError, match=r"`z2` must have 2 dimensions"):
        C.alignment(z, z[0])


def test_uniformity_on_the_circle_is_minus_4_plus_log_i0_4():
    closed_form = -4 + math.log(i0(4))
    assert closed_form == pytest.approx(-1.5750, abs=1e-4)
    assert C.uniform_sphere_uniformity(2) == pytest.approx(closed_form, rel=1e-12)
    # evenly spaced points: the pair mean excludes i = j, a bias of about (1 - e^U) / (N e^U)
    n = 4096
    angles = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    u = float(C.uniformity(C.circle_points(angles).double(), batch_size=1000))
    assert u == pytest.approx(closed_form, abs=2e-3)
    # random uniform points
    g = torch.Generator().manual_seed(0)
    random = float(C.uniformity(torch.randn(4000, 2, generator=g)))
    assert random == pytest.approx(closed_form, abs=0.02)


def test_uniformity_on_s511_is_about_minus_4():
    assert C.uniform_sphere_uniformity(512) == pytest.approx(-3.9844, abs=1e-4)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4096, 512, generator=g)
    u = float(C.uniformity(z, batch_size=1024))
    assert u == pytest.approx(C.uniform_sphere_uniformity(512), abs=2e-3)
    assert u == pytest.approx(-4.0, abs=0.03)


def test_uniform_sphere_closed_form_other_dimensions():
    # S^0 = {-1, 1}: E exp(4 s) = cosh 4; S^2 (Archimedes): s uniform on [-1, 1], E = sinh(4)/4
    assert C.uniform_sphere_uniformity(1) == pytest.approx(-4 + math.log(math.cosh(4)))
    assert C.uniform_sphere_uniformity(3) == pytest.approx(-4 + math.log(math.sinh(4) / 4))
    g = torch.Generator().manual_seed(1)
    assert float(C.uniformity(torch.randn(3000, 3, generator=g), t=1.0)) == pytest.approx(
        C.uniform_sphere_uniformity(3, t=1.0), abs=0.02)
    with pytest.raises(ValueError, match="`dim` must be >= 1"):
        C.uniform_sphere_uniformity(0)


def test_uniformity_collapsed_is_zero_and_blocks_agree():
    z = torch.randn(1, 8).expand(50, 8)
    assert float(C.uniformity(z)) == pytest.approx(0.0, abs=1e-6)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(301, 7, generator=g).double()
    reference = torch.pdist(F.normalize(x, dim=1)).pow(2).mul(-2).exp().mean().log()
    for bs in (1, 7, 100, 301, 5000):
        assert float(C.uniformity(x, batch_size=bs)) == pytest.approx(float(reference), rel=1e-10)
    x.requires_grad_(True)
    C.uniformity(x, batch_size=50).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_uniformity_bad_input():
    with pytest.raises(ValueError, match=r"uniformity: `z` must have at least 2 rows"):
        C.uniformity(torch.randn(1, 3))
    with pytest.raises(ValueError, match="`t` must be > 0"):
        C.uniformity(torch.randn(5, 3), t=-2)
    with pytest.raises(ValueError, match=r"`z` must have 2 dimensions \(N, D\), got shape \(5,\)"):
        C.uniformity(torch.randn(5))


# ---------------------------------------------------------------- ranks, spectra and collapse


@pytest.mark.parametrize("r", [1, 3, 10])
def test_effective_rank_of_rank_r_data_is_at_most_r(r):
    g = torch.Generator().manual_seed(r)
    z = torch.randn(200, r, generator=g).double() @ torch.randn(r, 40, generator=g).double()
    erank = float(C.effective_rank(z))
    assert 1.0 <= erank <= r + 1e-9
    assert erank > 0.5 * r  # Gaussian factors are well spread
    # float32 data is rank r only up to rounding (~1e-7 relative): the excess stays tiny
    assert float(C.effective_rank(z.float())) <= r + 1e-4


def test_effective_rank_closed_forms():
    q, _ = torch.linalg.qr(torch.randn(30, 30, dtype=torch.float64))
    assert float(C.effective_rank(q[:, :7])) == pytest.approx(7.0, rel=1e-10)  # equal sigmas
    # sigma = (3, 1): p = (3/4, 1/4), H = -(3/4 log 3/4 + 1/4 log 1/4)
    z = torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64))
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert float(C.effective_rank(z)) == pytest.approx(math.exp(h), rel=1e-12)
    ranks = torch.linalg.matrix_rank(torch.randn(20, 5))
    assert float(C.effective_rank(torch.randn(20, 5))) <= int(ranks)
    with pytest.raises(ValueError, match="non-zero singular value"):
        C.effective_rank(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="all-zero matrix of shape \\(4, 3\\) after centring"):
        C.effective_rank(torch.ones(4, 3), center=True)
    # centring removes a common offset: rank-2 data plus a constant row offset
    g = torch.Generator().manual_seed(0)
    low = torch.randn(300, 2, generator=g).double() @ torch.randn(2, 10, generator=g).double()
    shifted = low + 5.0
    assert float(C.effective_rank(shifted, center=True)) <= 2 + 1e-9
    assert float(C.effective_rank(shifted)) > 1.0
    with pytest.raises(ValueError, match=r"effective_rank: `z` must have 2 dimensions"):
        C.effective_rank(torch.randn(4))


def test_singular_spectrum_is_the_covariance_eigenvalues():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(500, 6, generator=g) * torch.tensor([5.0, 3.0, 1.0, 0.5, 0.0, 0.0])
    spectrum = C.singular_spectrum(z)
    reference = np.sort(np.linalg.eigvalsh(np.cov(z.double().numpy().T, bias=True)))[::-1]
    np.testing.assert_allclose(spectrum.numpy(), reference, rtol=1e-9, atol=1e-12)
    assert spectrum.shape == (6,) and float(spectrum[4]) < 1e-12
    shifted = C.singular_spectrum(z + 100.0, center=False)
    assert float(shifted[0]) > 1e4  # the mean dominates the uncentred second moment
    with pytest.raises(ValueError, match=r"singular_spectrum: `z` must have at least 2 rows"):
        C.singular_spectrum(torch.randn(1, 4))


def test_collapse_indicator():
    g = torch.Generator().manual_seed(0)
    spread = float(C.collapse_indicator(torch.randn(5000, 64, generator=g)))
    assert spread == pytest.approx(1.0, abs=0.02)
    collapsed = torch.randn(1, 64).expand(100, 64) + 1e-6 * torch.randn(100, 64)
    assert float(C.collapse_indicator(collapsed)) < 1e-4
    with pytest.raises(ValueError, match="at least 2 rows"):
        C.collapse_indicator(torch.randn(1, 4))


def test_circle_points_and_toy():
    p = C.circle_points([0.0, math.pi / 2])
    torch.testing.assert_close(p, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), atol=1e-7, rtol=0)
    with pytest.raises(ValueError, match=r"`angles` must have shape \(K,\)"):
        C.circle_points([[0.0]])
    anchor, positive, negatives = C.circle_toy(10, seed=3)
    assert negatives.shape == (10, 2)
    torch.testing.assert_close(negatives.norm(dim=1), torch.ones(10))
    assert torch.equal(C.circle_toy(10, seed=3)[2], negatives)
    with pytest.raises(ValueError, match="`n_negatives` must be >= 1"):
        C.circle_toy(0)


@requires_cuda
def test_losses_and_geometry_on_cuda():
    z1, z2 = torch.randn(64, 16, device="cuda"), torch.randn(64, 16, device="cuda")
    cpu = float(C.info_nce(z1.cpu(), z2.cpu(), 0.2))
    assert float(C.info_nce(z1, z2, 0.2)) == pytest.approx(cpu, rel=1e-4)
    assert C.uniformity(z1, batch_size=16).device.type == "cuda"
    assert float(C.uniformity(z1, batch_size=16)) == pytest.approx(
        float(C.uniformity(z1.cpu())), rel=1e-4)
    assert C.effective_rank(z1).device.type == "cuda"
    assert C.singular_spectrum(z1).device.type == "cuda"
    labels = torch.arange(64, device="cuda") % 8
    assert C.supcon(z1, labels).device.type == "cuda"
