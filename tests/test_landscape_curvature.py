"""deepscope.landscape curvature: checked against the exact Hessian (torch.func.hessian and
eigvalsh on models of <= 100 parameters) and against PyHessian and loss-landscapes (oracles)."""

import copy
import math

import deepscope
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from deepscope import landscape as L
from deepscope import models
from torch.func import functional_call


def small_problem(seed=0, activation="tanh", n=64):
    """A 51-parameter classifier (4-6-3) on random data, float64, trained a little so the
    Hessian has the structure of a trained net (positive top, small negative bottom)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    torch.manual_seed(seed)
    model = models.mlp(4, (6,), 3, activation=activation).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model, x, y


def exact_hessian(model, x, y):
    """An independent exact Hessian: torch.func.hessian of the loss as a function of the flat
    parameter vector (forward-over-reverse, no shared code with the library)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(v):
        chunks = torch.split(v, [math.prod(s) for s in shapes])
        params = {n: c.view(s) for n, c, s in zip(names, chunks, shapes)}
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    return torch.func.hessian(loss)(flat)


@pytest.fixture(scope="module")
def exact():
    model, x, y = small_problem()
    H = exact_hessian(model, x, y)
    assert H.shape == (51, 51)
    return model, x, y, H, torch.linalg.eigvalsh(H)


def test_hessian_matrix_and_hvp_match_the_exact_hessian(exact):
    model, x, y, H, _ = exact
    ours = L.hessian_matrix(model, F.cross_entropy, (x, y), batch_size=7)
    torch.testing.assert_close(ours, H, rtol=1e-10, atol=1e-12)
    v = torch.randn(51, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(L.hvp(model, F.cross_entropy, (x, y), v), H @ v)
    as_dict = L.hvp(model, F.cross_entropy, (x, y), L.as_point(model, v))
    torch.testing.assert_close(L.as_vector(as_dict), H @ v)
    halves = [(x[:40], y[:40]), (x[40:], y[40:])]  # batches: weighted by size
    torch.testing.assert_close(L.hvp(model, F.cross_entropy, halves, v), H @ v)
    grad = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    torch.testing.assert_close(L.loss_gradient(model, F.cross_entropy, halves),
                               torch.cat([g.reshape(-1) for g in grad]))
    op = L.hessian_operator(model, F.cross_entropy, (x, y))
    V = torch.randn(3, 51, dtype=torch.float64)
    torch.testing.assert_close(op.matmat(V), V @ H)
    assert op.dim == 51 and op.calls == 3


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_top_eigenvalues_match_eigvalsh(exact, method):
    model, x, y, _, eig = exact
    top = eig.flip(0)[:3]
    kw = {"tol": 1e-12, "max_iter": 20000} if method == "power" else {}
    values, vectors = L.top_eigenvalues(model, F.cross_entropy, (x, y), k=3, method=method,
                                        return_vectors=True, **kw)
    assert values.dtype == torch.float64 and vectors.shape == (3, 51)
    torch.testing.assert_close(values, top, rtol=1e-6, atol=0)
    H = exact[3]
    for value, vector in zip(values, vectors):  # H u = lambda u
        torch.testing.assert_close(H @ vector, value * vector, rtol=0, atol=1e-4)
    if method == "lanczos":  # a warm start from the top eigenvector converges at once
        warm = L.top_eigenvalues(model, F.cross_entropy, (x, y), v0=vectors[0].float())
        torch.testing.assert_close(warm, top[:1], rtol=1e-6, atol=0)


def test_top_eigenvalue_defaults_reach_1e4_on_a_larger_model():
    """The documented default accuracy (<= 1e-4 relative) on a 1,210-parameter digits-sized
    MLP with ReLU, against eigvalsh of the exact matrix."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 64, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (300,), generator=g)
    torch.manual_seed(0)
    model = models.mlp(64, (16,), 10).double()
    H = L.hessian_matrix(model, F.cross_entropy, (x, y), batch_size=128)
    eig = torch.linalg.eigvalsh(H).flip(0)
    for k in (1, 5):
        values = L.top_eigenvalues(model, F.cross_entropy, (x, y), k=k)
        assert ((values - eig[:k]).abs() / eig[:k]).max() <= 1e-4


def test_hutchinson_trace_within_four_standard_errors(exact):
    model, x, y, H, _ = exact
    exact_trace = H.trace().item()
    for seed in range(3):
        estimate, stderr = L.hessian_trace(model, F.cross_entropy, (x, y), samples=200,
                                           seed=seed, batch_size=50, return_stderr=True)
        assert stderr > 0
        assert abs(estimate.item() - exact_trace) <= 4 * stderr.item()
    # a single Rademacher probe: z^T H z = tr H + sum_{i != j} z_i z_j H_ij
    one = L.hessian_trace(model, F.cross_entropy, (x, y), samples=1, seed=0)
    assert one.dim() == 0


def test_slq_density_integrates_to_one_and_brackets_the_spectrum(exact):
    model, x, y, _, eig = exact
    density = L.spectral_density(model, F.cross_entropy, (x, y), iters=30, runs=3, seed=0)
    assert density.nodes.shape == (3, 30) and density.dim == 51
    torch.testing.assert_close(density.weights.sum(1), torch.ones(3, dtype=torch.float64))
    span = (eig[-1] - eig[0]).item()
    assert density.nodes.min() >= eig[0] - 1e-8 * span  # Ritz values lie inside the spectrum
    assert density.nodes.max() <= eig[-1] + 1e-8 * span
    assert abs(density.nodes.max() - eig[-1]) <= 1e-6 * span  # and reach its extremes
    assert abs(density.nodes.min() - eig[0]) <= 1e-3 * span
    grid, values = density.density()
    assert values.min() >= 0
    assert torch.trapezoid(values, grid).item() == pytest.approx(1.0, abs=1e-3)
    _, sharp = density.density(grid=torch.linspace(-1, 2, 3001), sigma=0.01)
    assert torch.trapezoid(sharp, torch.linspace(-1, 2, 3001)).item() == pytest.approx(1, abs=1e-3)
    # the fraction of mass above a threshold estimates the fraction of eigenvalues above it
    full = L.spectral_density(model, F.cross_entropy, (x, y), iters=51, runs=20, seed=1)
    t = eig[-4].item() - 1e-9  # 4 eigenvalues above
    assert full.fraction_above(t) * 51 == pytest.approx(4, abs=1.5)


def test_linalg_on_explicit_matrices():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    spectrum = torch.cat([torch.tensor([10.0, 7.0, -5.0]), torch.linspace(-1, 1, 27)]).double()
    A = Q @ torch.diag(spectrum) @ Q.T
    v0 = torch.randn(30, generator=g, dtype=torch.float64)
    values, vectors = L.power_iteration(lambda v: A @ v, v0, k=3, tol=1e-13, max_iter=5000)
    torch.testing.assert_close(values, torch.tensor([10.0, 7.0, -5.0], dtype=torch.float64))
    torch.testing.assert_close(vectors @ vectors.T, torch.eye(3, dtype=torch.float64),
                               atol=1e-6, rtol=0)
    alpha, beta, basis = L.lanczos(lambda v: A @ v, v0, 30)
    assert len(alpha) == 30 and len(beta) == 29
    torch.testing.assert_close(basis @ basis.T, torch.eye(30, dtype=torch.float64))
    theta, _ = L.ritz_pairs(alpha, beta)
    torch.testing.assert_close(theta, spectrum.sort().values)
    # an invariant subspace stops Lanczos early with exact eigenvalues
    D = torch.diag(torch.tensor([3.0, 3.0, 1.0, 1.0], dtype=torch.float64))
    alpha, beta, _ = L.lanczos(lambda v: D @ v, torch.ones(4, dtype=torch.float64), 10)
    assert len(alpha) == 2
    torch.testing.assert_close(L.ritz_pairs(alpha, beta)[0], torch.tensor([1.0, 3.0]).double())
    with pytest.warns(deepscope.ConvergenceWarning, match="did not converge in 2 iterations"):
        L.power_iteration(lambda v: A @ v, v0, max_iter=2)
    zero, _ = L.power_iteration(lambda v: 0 * v, v0)
    assert zero.item() == 0
    again, _ = L.power_iteration(lambda v: D @ v, torch.tensor([1.0, 0, 0, 0]).double(), k=2)
    assert again.tolist() == pytest.approx([3.0, 3.0])  # v0 in the first span: perturbed


def test_curvature_errors():
    model, x, y = small_problem()
    ce = F.cross_entropy
    with pytest.raises(ValueError, match="`k` must be <= the number of trainable parameters"):
        L.top_eigenvalues(model, ce, (x, y), k=52)
    with pytest.raises(ValueError, match="`method` must be one of 'lanczos', 'power'"):
        L.top_eigenvalues(model, ce, (x, y), method="arnoldi")
    with pytest.raises(ValueError, match="`k` must be >= 1, got 0"):
        L.top_eigenvalues(model, ce, (x, y), k=0)
    with pytest.raises(ValueError, match=r"`v` must have shape \(51,\)"):
        L.hvp(model, ce, (x, y), torch.zeros(50, dtype=torch.float64))
    with pytest.raises(ValueError, match="more than `max_params` = 10"):
        L.hessian_matrix(model, ce, (x, y), max_params=10)
    with pytest.raises(ValueError, match="`samples` must be >= 2, got 1"):
        L.hessian_trace(model, ce, (x, y), samples=1, return_stderr=True)
    with pytest.raises(ValueError, match="`iters` must be >= 1, got 0"):
        L.spectral_density(model, ce, (x, y), iters=0)
    with pytest.raises(ValueError, match="vectors must have 51 entries"):
        L.hessian_operator(model, ce, (x, y))(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="`v0` must be a finite, non-zero start vector"):
        L.lanczos(lambda v: v, torch.zeros(3), 2)
    with pytest.raises(ValueError, match=r"`matvec` must return a vector of shape \(3,\)"):
        L.power_iteration(lambda v: v[:2], torch.ones(3))
    with pytest.raises(TypeError, match="`matvec` must be callable"):
        L.lanczos(None, torch.ones(3), 2)
    with pytest.raises(ValueError, match="`k` must be <= the dimension 3, got 4"):
        L.power_iteration(lambda v: v, torch.ones(3), k=4)
    with pytest.raises(ValueError, match=r"`v0` must have 1 dimensions \(n,\)"):
        L.lanczos(lambda v: v, torch.ones(3, 1), 2)
    with pytest.raises(ValueError, match="Krylov space has dimension 1 < k = 2"):
        L.top_eigenvalues(model, lambda o, t: 0 * o.sum(), (x, y), k=2)
    with pytest.raises(ValueError, match=r"`v0` must be a vector of shape \(51,\), got \(3,\)"):
        L.top_eigenvalues(model, ce, (x, y), v0=torch.zeros(3))
    with pytest.raises(ValueError, match="`sigma` must be > 0"):
        L.spectral_density(model, ce, (x, y), iters=3, runs=1).density(sigma=0.0)


# --------------------------------------------------------------------------------------------
# Oracles: PyHessian and loss-landscapes (extra `oracle`)


@pytest.mark.oracle
def test_top_eigenvalues_and_trace_agree_with_pyhessian():
    pyhessian = pytest.importorskip("pyhessian")
    model, x, y = small_problem(activation="relu", n=200)
    model = model.float()
    x = x.float()
    reference = copy.deepcopy(model)  # PyHessian writes .grad and switches to eval mode
    torch.manual_seed(0)
    oracle = pyhessian.hessian(reference, F.cross_entropy, data=(x, y), cuda=False)
    theirs, _ = oracle.eigenvalues(top_n=2, maxIter=2000, tol=1e-7)
    ours = L.top_eigenvalues(model, F.cross_entropy, (x, y), k=2)
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-4)
    their_trace = np.mean(oracle.trace(maxIter=400, tol=0.0))
    estimate, stderr = L.hessian_trace(model, F.cross_entropy, (x, y), samples=400, seed=0,
                                       return_stderr=True)
    # two independent Monte Carlo estimates of the same trace
    assert abs(estimate.item() - their_trace) <= 4 * math.sqrt(2) * stderr.item()


@pytest.mark.oracle
def test_interpolate_agrees_with_loss_landscapes_linear_interpolation():
    loss_landscapes = pytest.importorskip("loss_landscapes")
    from loss_landscapes.metrics import Loss

    model, x, y = small_problem(seed=0)
    other, _, _ = small_problem(seed=1)
    steps = 20
    theirs = loss_landscapes.linear_interpolation(
        model, other, Loss(F.cross_entropy, x, y), steps=steps, deepcopy_model=True)
    # loss-landscapes evaluates at a = 1/steps, 2/steps, ..., 1 (not at a = 0)
    alphas = torch.arange(1, steps + 1, dtype=torch.float64) / steps
    ours = L.interpolate(model, other, F.cross_entropy, (x, y), alphas=alphas)
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-9, atol=1e-12)
