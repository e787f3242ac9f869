"""deepscope.landscape: SAM, the edge-of-stability tracker, Bezier mode connectivity, trajectory
PCA, and the chapter's figures and explorer."""

import copy

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F
from deepscope import landscape as L
from deepscope import models, plotting, widgets
from torch import nn

from tests.test_landscape import RaisingLoss, assert_same_state, problem, state_of


def test_sam_step_matches_algorithm_1():
    """One SAM step with plain SGD: w <- w - lr * g(w + rho g(w) / ||g(w)||)."""
    model, x, y = problem()
    reference = copy.deepcopy(model)
    rho, lr = 0.1, 0.5

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    opt = L.SAM(model.parameters(), torch.optim.SGD, rho=rho, lr=lr)
    loss = opt.step(closure)
    params = list(reference.parameters())
    g = torch.autograd.grad(F.cross_entropy(reference(x), y), params)
    norm = torch.cat([t.reshape(-1) for t in g]).norm()
    with torch.no_grad():
        for p, gi in zip(params, g):
            p.add_(rho * gi / norm)
    g_adv = torch.autograd.grad(F.cross_entropy(reference(x), y), params)
    with torch.no_grad():
        for p, gi in zip(params, g):
            p.sub_(rho * gi / norm)
        expected = [p - lr * ga for p, ga in zip(params, g_adv)]
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p, e, rtol=1e-12, atol=1e-12)
    assert loss.item() == pytest.approx(F.cross_entropy(reference(x), y).item())
    asam = L.SAM(model.parameters(), torch.optim.SGD, rho=rho, adaptive=True, lr=lr)
    asam.step(closure)  # runs; its neighbourhood scales with |w|
    with pytest.raises(ValueError, match="`closure` is required"):
        opt.step()
    with pytest.raises(TypeError, match="`base_optimizer` must be a torch.optim.Optimizer"):
        L.SAM(model.parameters(), "sgd")
    with pytest.raises(ValueError, match="`rho` must be > 0"):
        L.SAM(model.parameters(), torch.optim.SGD, rho=0.0, lr=0.1)


def test_sam_restores_weights_bitwise_when_the_second_pass_raises():
    model, x, y = problem()
    before = state_of(model)
    opt = L.SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    calls = []

    def closure():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("second pass failed")
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="second pass failed"):
        opt.step(closure)
    params, _, _, _ = before
    for n, p in model.named_parameters():
        assert torch.equal(p, params[n])


def test_fit_sam_trains_and_reports_history():
    model, x, _ = problem(n=120, hidden=(16,))
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()  # learnable labels
    start = F.cross_entropy(model(x), y).item()
    history = L.fit_sam(model, (x, y), epochs=15, lr=0.2, rho=0.05, batch_size=32,
                        test=(x, y), progress=False)
    assert len(history.train_loss) == 15 and len(history.test_acc) == 15
    assert history.train_loss[-1] < 0.7 * start
    assert 0 <= history.train_acc[-1] <= 1
    with pytest.raises(TypeError, match="`train` must be a pair"):
        L.fit_sam(model, x)


def test_track_sharpness_on_a_quadratic():
    """Linear least squares: the Hessian is 2 X^T X / n everywhere, so the tracked sharpness is
    its top eigenvalue at every step; GD converges below 2/lambda and diverges above it."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g)
    y = torch.randn(40, 1, generator=g)
    top = torch.linalg.eigvalsh(2 * x.T @ x / 40).max().item()

    def fresh():
        torch.manual_seed(0)
        return nn.Linear(6, 1, bias=False)

    stable = L.track_sharpness(fresh(), F.mse_loss, (x, y), lr=1.8 / top, steps=60, every=20,
                               progress=False)
    assert stable.sharpness_step == [0, 20, 40, 60] and len(stable.loss) == 61
    assert stable.sharpness == pytest.approx([top] * 4, rel=1e-4)
    assert stable.loss[-1] < stable.loss[0] and not stable.diverged
    assert stable.threshold == pytest.approx(2 / (1.8 / top))
    unstable = L.track_sharpness(fresh(), F.mse_loss, (x, y), lr=3.0 / top, steps=1000,
                                 every=50, progress=False)
    assert unstable.diverged and len(unstable.loss) < 1000
    with pytest.raises(ValueError, match="`lr` must be > 0"):
        L.track_sharpness(fresh(), F.mse_loss, (x, y), lr=0.0, steps=3)


def two_solutions(n=150, hidden=(12,)):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    y = ((x[:, 0] * x[:, 1] > 0).long() + (x[:, 2] > 0).long())
    solutions = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = models.mlp(5, hidden, 3)
        opt = torch.optim.Adam(model.parameters(), lr=0.02)
        for _ in range(300):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        solutions.append(model)
    return (*solutions, x, y)


def test_bezier_curve_lowers_the_barrier_and_keeps_its_end_points():
    model_a, model_b, x, y = two_solutions()
    before = state_of(model_a), state_of(model_b)
    line = L.interpolate(model_a, model_b, F.cross_entropy, (x, y), alphas=21)
    curve = L.fit_bezier(model_a, model_b, F.cross_entropy, (x, y), steps=400, lr=0.02,
                         batch_size=64, progress=False)
    assert_same_state(model_a, before[0])
    assert_same_state(model_b, before[1])
    along = L.curve_losses(model_a, curve, F.cross_entropy, (x, y), ts=21)
    assert along[0].item() == pytest.approx(line[0].item(), rel=1e-6)
    assert along[-1].item() == pytest.approx(line[-1].item(), rel=1e-6)
    assert L.loss_barrier(line) > 0.1
    assert L.loss_barrier(along) < 0.5 * L.loss_barrier(line)
    assert len(curve.history) == 400
    mid = curve.point(0.5)
    expected = {n: 0.25 * curve.start[n] + 0.5 * curve.control[n] + 0.25 * curve.end[n]
                for n in mid}
    assert all(torch.allclose(mid[n], expected[n]) for n in mid)
    losses, accs = L.curve_losses(model_a, curve, F.cross_entropy, (x, y), ts=[0.0, 1.0],
                                  accuracy=True)
    assert accs.shape == (2,)
    with pytest.raises(TypeError, match="`curve` must be a BezierCurve"):
        L.curve_losses(model_a, {"a": 1}, F.cross_entropy, (x, y))
    with pytest.raises(TypeError, match="`data` must be a pair"):
        L.fit_bezier(model_a, model_b, F.cross_entropy, [(x, y)] * 2)


def test_loss_barrier_definition_and_errors():
    assert L.loss_barrier([0.0, 1.0, 0.0]) == pytest.approx(1.0)
    assert L.loss_barrier([1.0, 0.5, 0.0]) == pytest.approx(0.0)
    assert L.loss_barrier([2.0, 2.0, 0.0], ts=[0.0, 0.5, 1.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least the two end points"):
        L.loss_barrier([1.0])
    with pytest.raises(ValueError, match="same length, got 2 and 3"):
        L.loss_barrier([1.0, 2.0, 3.0], ts=[0.0, 1.0])
    with pytest.raises(ValueError, match="`ts` must run from 0 to 1"):
        L.loss_barrier([1.0, 2.0], ts=[0.0, 0.5])


def test_trajectory_pca_recovers_a_planar_path():
    model, x, y = problem()
    center = L.snapshot(model)
    g = torch.Generator().manual_seed(0)
    u = {n: torch.randn(t.shape, generator=g, dtype=t.dtype) for n, t in center.items()}
    v = L.orthogonalize({n: torch.randn(t.shape, generator=g, dtype=t.dtype)
                         for n, t in center.items()}, u)
    ts = torch.linspace(0, 1, 12, dtype=torch.float64)
    snaps = [{n: center[n] + (1 - t) * 3 * u[n] + torch.sin(4 * t) * v[n] for n in center}
             for t in ts]
    pca = L.trajectory_pca(snaps, k=2)
    assert pca.coords.shape == (12, 2)
    assert pca.explained_variance_ratio.sum().item() == pytest.approx(1.0, abs=1e-9)
    assert pca.explained_variance_ratio[0] >= pca.explained_variance_ratio[1]
    basis = torch.stack([L.as_vector(d) for d in pca.directions])
    torch.testing.assert_close(basis @ basis.T, torch.eye(2, dtype=torch.float64))
    # each snapshot is the centre plus its coordinates along the two directions
    for snap, (a, b) in zip(snaps, pca.coords):
        rebuilt = L.as_vector(pca.center) + a * basis[0] + b * basis[1]
        torch.testing.assert_close(rebuilt, L.as_vector(snap))
    with pytest.raises(ValueError, match="at least 2 parameter dicts"):
        L.trajectory_pca(snaps[:1])
    with pytest.raises(ValueError, match=r"`k` must be <= len\(snapshots\) - 1 = 11"):
        L.trajectory_pca(snaps, k=12)
    with pytest.raises(TypeError, match="must hold dicts"):
        L.trajectory_pca([1, 2])


def test_plots_draw_what_they_are_given():
    xs, ys = torch.linspace(-1, 1, 5), torch.linspace(-1, 1, 4)
    losses = torch.rand(4, 5) + 0.1
    fig = plotting.plot_loss_contour(xs, ys, losses, trajectory=torch.zeros(3, 2), title="t")
    assert fig.axes[0].get_title() == "t" and len(fig.axes) == 2  # contour + colorbar
    fig = plotting.plot_loss_contour(xs, ys, losses, filled=False, log=False)
    assert len(fig.axes) == 1
    with pytest.raises(ValueError, match=r"shape \(len\(ys\), len\(xs\)\) = \(4, 5\)"):
        plotting.plot_loss_contour(xs, ys, losses.T)
    with pytest.raises(ValueError, match="at least 2 points per axis"):
        plotting.plot_loss_contour(xs[:1], ys, losses[:, :1])
    fig = plotting.plot_loss_surface(xs, ys, losses, log=True)
    assert fig.axes[0].name == "3d"
    with pytest.raises(ValueError, match="plot_loss_surface: expected losses of shape"):
        plotting.plot_loss_surface(xs, ys, losses.T)
    fig = plotting.plot_slice_1d(xs, {"a": xs**2, "b": xs**2 + 1})
    assert len(fig.axes[0].lines) == 2
    with pytest.raises(ValueError, match="plot_slice_1d: expected losses of shape"):
        plotting.plot_slice_1d(xs, xs[:3])
    model, x, y = problem()
    density = L.spectral_density(model, F.cross_entropy, (x, y), iters=10, runs=2)
    fig = plotting.plot_spectrum(torch.randn(50), density=density, mark=[1.0, 2.0])
    assert len(fig.axes[0].lines) == 3
    low, high = fig.axes[0].get_ylim()  # floored: the density's tails reach ~1e-100
    peak = float(density.density()[1].max())
    assert high >= peak and low == pytest.approx(1e-5 * high / 2)
    unfloored = plotting.plot_spectrum(density=density, floor=None).axes[0].get_ylim()[0]
    assert unfloored < low
    with pytest.raises(ValueError, match="pass `eigenvalues`, `density` or both"):
        plotting.plot_spectrum()
    h = L.SharpnessHistory(lr=0.1, step=[0, 1], loss=[1.0, 0.5], sharpness_step=[0],
                           sharpness=[3.0])
    fig = plotting.plot_sharpness_history(h)
    assert fig.axes[0].lines[0].get_ydata()[0] == 3.0
    _, ax = plt.subplots()
    assert plotting.plot_sharpness_history({"run": h}, ax=ax) is ax.figure
    g = L.SharpnessHistory(lr=0.01, step=[0, 1, 2], loss=[1.0, 0.9, 0.8],
                           sharpness_step=[0, 2], sharpness=[3.0, 50.0])
    fig = plotting.plot_sharpness_history({"gd": h, "flow": g}, time=True, relative=True)
    gd_line, flow_line = fig.axes[0].lines[:2]
    assert list(flow_line.get_xdata()) == pytest.approx([0.0, 0.02])  # eta * t
    assert list(flow_line.get_ydata()) == pytest.approx([0.015, 0.25])  # eta * lambda / 2
    assert gd_line.get_ydata()[0] == pytest.approx(0.15)
    assert fig.axes[0].lines[2].get_ydata()[0] == 1.0  # one threshold line for every run
    fig = plotting.plot_path_losses(torch.linspace(0, 1, 3), {"line": [1.0, 2.0, 1.0]})
    assert fig.axes[0].lines[0].get_ydata()[1] == 2.0


def test_landscape_explorer_state_follows_controls_and_model_is_untouched():
    model, x, y = problem(hidden=(6,))
    model.train()
    before = state_of(model)
    box = widgets.landscape_explorer(model, F.cross_entropy, (x, y), resolution=5, span=0.5)
    assert box.state["renders"] == 1 and box.state["losses"].shape == (5, 5)
    with torch.no_grad():
        center = F.cross_entropy(model.eval()(x), y).item()
    model.train()
    assert box.state["center_loss"] == pytest.approx(center, rel=1e-9)
    filtered_max = box.state["max_loss"]
    box.controls["normalize"].value = "none"
    assert box.state["normalize"] == "none" and box.state["renders"] == 2
    assert box.state["max_loss"] != filtered_max
    box.controls["resolution"].value = 7
    assert box.state["losses"].shape == (7, 7)
    box.controls["seed"].value = 3
    assert box.state["seed"] == 3 and box.state["center_loss"] == pytest.approx(center)
    assert_same_state(model, before)
    with pytest.raises(ValueError, match="`normalize` must be one of 'filter', 'none'"):
        widgets.landscape_explorer(model, F.cross_entropy, (x, y), normalize="layer")
    with pytest.raises(ValueError, match="`resolution` must be >= 3, got 1"):
        widgets.landscape_explorer(model, F.cross_entropy, (x, y), resolution=1)


def test_raising_loss_in_curve_losses_and_track_sharpness_model_state():
    model_a, model_b, x, y = two_solutions(n=40, hidden=(4,))
    curve = L.fit_bezier(model_a, model_b, F.cross_entropy, (x, y), steps=3, progress=False)
    before = state_of(model_a)
    with pytest.raises(RuntimeError, match="loss failed midway"):
        L.curve_losses(model_a, curve, RaisingLoss(2), (x, y), ts=4, vectorize=False)
    assert_same_state(model_a, before)
    model_a.train()
    with pytest.raises(RuntimeError, match="loss failed midway"):
        L.track_sharpness(model_a, RaisingLoss(2), (x, y), lr=0.1, steps=3, progress=False)
    assert model_a.training  # a training function: weights may change, the mode is restored
