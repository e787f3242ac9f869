"""deepscope.scaling fits: planted-parameter recovery, closed forms, limits, the Epoch replication,
bad input."""

import numpy as np
import pytest
import torch
from deepscope import IdentifiabilityWarning, scaling
from deepscope.data import load_chinchilla_points
from deepscope.scaling import _lse
from scipy.optimize import check_grad, minimize_scalar

PLANTED = [scaling.HOFFMANN, scaling.EPOCH, scaling.ChinchillaParams(2.0, 2000.0, 900.0, 0.45, 0.3)]


def _synthetic_chinchilla(params, seed, n=200, noise=0.005):
    """Points with log-uniform N and D over Chinchilla's ranges and 0.5% log-normal noise."""
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(5e7), np.log(2e10), n))
    D = np.exp(rng.uniform(np.log(5e8), np.log(5e11), n))
    loss = scaling.chinchilla_loss(N, D, params) * np.exp(noise * rng.standard_normal(n))
    return N, D, loss


@pytest.mark.parametrize("params, seed", list(zip(PLANTED, (0, 1, 2))),
                         ids=["hoffmann", "epoch", "other"])
def test_fit_chinchilla_recovers_planted_exponents(params, seed):
    N, D, loss = _synthetic_chinchilla(params, seed)
    fit = scaling.fit_chinchilla(N, D, loss)
    assert abs(fit.alpha - params.alpha) <= 0.02, fit
    assert abs(fit.beta - params.beta) <= 0.02, fit
    assert abs(fit.E - params.E) <= 0.05, fit
    assert fit.n_starts == 243 and 1 <= fit.n_at_best <= fit.n_starts
    # the fit's objective is at least as good as the planted parameters' own
    assert fit.objective <= scaling.chinchilla_objective(N, D, loss, params) + 1e-12
    assert fit.params == scaling.ChinchillaParams(fit.E, fit.A, fit.B, fit.alpha, fit.beta)


def test_fit_chinchilla_exact_data_and_custom_starts():
    N, D, loss = _synthetic_chinchilla(scaling.EPOCH, 3, n=60, noise=0.0)
    start = scaling.ChinchillaParams(1.5, 100.0, 100.0, 0.5, 0.5)
    for starts in (start, [start, scaling.HOFFMANN], np.array([list(start)]),
                   {"E": 1.5, "A": 100.0, "B": 100.0, "alpha": 0.5, "beta": 0.5}):
        fit = scaling.fit_chinchilla(N, D, loss, starts=starts)
        assert fit.alpha == pytest.approx(scaling.EPOCH.alpha, abs=1e-3)
        assert fit.beta == pytest.approx(scaling.EPOCH.beta, abs=1e-3)
        assert fit.objective < 1e-8


def test_epoch_replication_on_the_shipped_data():
    """Besiroglu et al. (2024) Table 1: E 1.8172, A 482.01, B 2085.43, alpha 0.3478, beta 0.3658.
    A and B are poorly determined; alpha, beta and E are not."""
    p = load_chinchilla_points()
    fit = scaling.fit_chinchilla(p["N"], p["D"], p["loss"])
    assert fit.alpha == pytest.approx(0.3478, abs=0.003)
    assert fit.beta == pytest.approx(0.3658, abs=0.003)
    assert fit.E == pytest.approx(1.8172, abs=0.005)
    ours = fit.objective
    assert ours <= scaling.chinchilla_objective(p["N"], p["D"], p["loss"], scaling.EPOCH)
    assert ours < 0.5 * scaling.chinchilla_objective(p["N"], p["D"], p["loss"],
                                                       scaling.HOFFMANN)
    ratio = scaling.compute_optimal(5.88e23, fit).tokens_per_parameter
    assert 15 < ratio < 25, ratio  # Chinchilla itself: 70B parameters, 1.4T tokens
    assert scaling.compute_optimal(5.88e23, scaling.HOFFMANN).tokens_per_parameter > 80


def test_objective_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    log_x = [np.log(rng.uniform(1e7, 1e9, 30)), np.log(rng.uniform(1e9, 1e11, 30)), None]
    log_y = np.log(rng.uniform(2.0, 3.0, 30))
    for delta in (1e-3, 1.0):  # the absolute-loss and the quadratic branches
        for _ in range(3):
            theta = np.array([6.0, 7.0, 0.5, 0.3, 0.35]) + 0.1 * rng.standard_normal(5)
            f = lambda t, d=delta: _lse.lse_objective(t, log_x, log_y, d)[0]  # noqa: E731
            g = lambda t, d=delta: _lse.lse_objective(t, log_x, log_y, d)[1]  # noqa: E731
            assert check_grad(f, g, theta, epsilon=1e-7) < 1e-5 * (1 + np.abs(g(theta)).max())


@pytest.mark.parametrize("params", PLANTED, ids=["hoffmann", "epoch", "other"])
def test_compute_optimal_closed_form(params):
    C = np.array([1e18, 1e21, 5.88e23, 1e26])
    opt = scaling.compute_optimal(C, params)
    np.testing.assert_allclose(6 * opt.N * opt.D, C, rtol=1e-12)
    np.testing.assert_allclose(opt.tokens_per_parameter, opt.D / opt.N)
    for c, n_opt in zip(C, opt.N):
        numeric = minimize_scalar(lambda u, c=c: scaling.isoflop_loss(np.exp(u), c, params),
                                  bracket=(np.log(n_opt) - 3, np.log(n_opt) + 3),
                                  options={"xtol": 1e-12})
        assert np.exp(numeric.x) == pytest.approx(n_opt, rel=1e-6)
        assert scaling.isoflop_loss(n_opt, c, params) <= numeric.fun + 1e-15
    # N_opt ~ C^(beta / (alpha + beta))
    slope = np.polyfit(np.log(C), np.log(opt.N), 1)[0]
    assert slope == pytest.approx(params.beta / (params.alpha + params.beta), abs=1e-10)
    single = scaling.compute_optimal(5.88e23, params)
    assert isinstance(single.N, float) and isinstance(single.D, float)


def test_kaplan_limits_of_the_joint_law():
    p = scaling.EPOCH
    N = np.array([1e6, 1e8, 1e10])
    D = np.array([1e8, 1e10, 1e12])
    np.testing.assert_allclose(scaling.chinchilla_loss(N, 1e60, p), scaling.loss_vs_params(N, p),
                               rtol=1e-12)
    np.testing.assert_allclose(scaling.chinchilla_loss(1e60, D, p), scaling.loss_vs_data(D, p),
                               rtol=1e-12)
    assert scaling.loss_vs_params(1e60, p) == pytest.approx(p.E)
    # the joint law is the two limits plus E counted once
    joint = scaling.chinchilla_loss(N, D, p)
    np.testing.assert_allclose(joint, scaling.loss_vs_params(N, p) + scaling.loss_vs_data(D, p)
                               - p.E, rtol=1e-12)
    grid = scaling.chinchilla_loss(N[:, None], D[None, :], p)  # broadcasting
    torch_in = scaling.chinchilla_loss(torch.tensor(N), torch.tensor(D), p)  # tensors accepted
    np.testing.assert_allclose(torch_in, joint)
    assert grid.shape == (3, 3) and isinstance(scaling.chinchilla_loss(1e9, 1e10, p), float)


def test_as_params_forms_and_errors():
    p = scaling.EPOCH
    d = p._asdict()
    assert scaling.as_params(d) == p == scaling.as_params(list(p)) == scaling.as_params(p)
    assert scaling.as_params(np.array(p)) == p  # a 1-D array of the 5 numbers, as optimisers pass
    with pytest.raises(ValueError, match="missing beta"):
        scaling.as_params({k: v for k, v in d.items() if k != "beta"})
    with pytest.raises(TypeError, match="`params` must be ChinchillaParams"):
        scaling.as_params("abc")
    with pytest.raises(TypeError, match=r"`params.A` must be a real number, got str"):
        scaling.as_params((1.0, "x", 1.0, 0.3, 0.3))
    with pytest.raises(ValueError, match=r"chinchilla_loss: `params.alpha` must be finite and > 0"):
        scaling.chinchilla_loss(1e9, 1e10, (1.0, 1.0, 1.0, 0.0, 0.3))
    assert scaling.as_params((0.0, 1.0, 1.0, 0.3, 0.3)).E == 0.0  # E = 0 is a valid law


@pytest.mark.parametrize("bad, message", [
    (dict(N=[1e9, -1.0, 1e9, 1e9, 1e9, 1e9]), r"fit_chinchilla: `N` must be > 0, got -1"),
    (dict(D=[1e9, 1e9, 0.0, 1e9, 1e9, 1e9]), r"fit_chinchilla: `D` must be > 0, got 0"),
    (dict(loss=[2.0, 2.0, 2.0, -2.0, 2.0, 2.0]), r"fit_chinchilla: `loss` must be > 0, got -2"),
    (dict(loss=[2.0] * 5), r"arrays must have the same length, got `N` 6, `D` 6, `loss` 5"),
    (dict(N=[1e9] * 4, D=[1e9] * 4, loss=[2.0] * 4),
     r"`\(N, D\)` must take at least 5 distinct values to fit 5 parameters, got 1 \(all equal"),
    (dict(loss=[2.0, np.nan, 2, 2, 2, 2]), r"fit_chinchilla: `loss` must be finite, got nan"),
    (dict(N=np.ones((2, 3))), r"`N` must be a number or a 1-D array, got shape \(2, 3\)"),
])
def test_fit_chinchilla_bad_input(bad, message):
    args = dict(N=[1e8, 2e8, 4e8, 8e8, 1e9, 2e9], D=[1e10] * 6, loss=[2.5, 2.4, 2.3, 2.2, 2.1, 2.0])
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        scaling.fit_chinchilla(args["N"], args["D"], args["loss"])


def test_bad_starts_delta_and_types():
    N, D, loss = _synthetic_chinchilla(scaling.EPOCH, 0, n=20)
    with pytest.raises(ValueError, match="`kind` must be 'coarse' or 'full', got 'fine'"):
        scaling.fit_chinchilla(N, D, loss, starts="fine")
    with pytest.raises(ValueError, match=r"`starts` must have shape \(S, 5\)"):
        scaling.fit_chinchilla(N, D, loss, starts=np.ones((2, 4)))
    with pytest.raises(ValueError, match="`starts` must be finite with E >= 0 and A, B > 0"):
        scaling.fit_chinchilla(N, D, loss, starts=[[1.0, -1.0, 1.0, 0.3, 0.3]])
    with pytest.raises(TypeError, match="`starts` must be 'coarse', 'full', parameters"):
        scaling.fit_chinchilla(N, D, loss, starts=[object()])
    with pytest.raises(ValueError, match="`delta` must be a finite number > 0, got 0.0"):
        scaling.fit_chinchilla(N, D, loss, delta=0.0)
    with pytest.raises(TypeError, match="`delta` must be a real number, got str"):
        scaling.chinchilla_objective(N, D, loss, scaling.EPOCH, delta="1")
    with pytest.raises(TypeError, match="`N` must be an array of real numbers, got str"):
        scaling.chinchilla_loss("many", 1e9, scaling.EPOCH)
    with pytest.raises(TypeError, match="`N` must be an array of real numbers, got list"):
        scaling.chinchilla_loss([1.0, "x"], 1e9, scaling.EPOCH)
    with pytest.raises(ValueError, match="`C` must not be empty"):
        scaling.compute_optimal([], scaling.EPOCH)
    assert len(scaling.chinchilla_grid("full")) == 4500
    assert len(scaling.chinchilla_grid("coarse")) == 243


def test_all_starts_diverging_raises():
    with pytest.raises(RuntimeError, match="every start diverged"):
        _lse.fit_lse([np.zeros(3)], np.zeros(3), np.array([[np.nan, 1.0]]), delta=1e-3)


def test_full_grid_reaches_the_coarse_optimum():
    N, D, loss = _synthetic_chinchilla(scaling.EPOCH, 5, n=40)
    coarse = scaling.fit_chinchilla(N, D, loss)
    full = scaling.fit_chinchilla(N, D, loss, starts=scaling.chinchilla_grid("full")[::45])
    assert full.objective == pytest.approx(coarse.objective, rel=1e-5)


# ----------------------------------------------------------------------------------------------
# Power laws and the bootstrap


@pytest.mark.parametrize("seed", range(3))
def test_fit_power_law_recovers_planted_parameters(seed):
    rng = np.random.default_rng(seed)
    x = np.exp(rng.uniform(np.log(1e3), np.log(1e7), 60))
    y = scaling.power_law(x, 1.5, 80.0, 0.4) * np.exp(0.01 * rng.standard_normal(60))
    fit = scaling.fit_power_law(x, y)
    assert abs(fit.b - 0.4) <= 0.02 and abs(fit.c - 1.5) <= 0.05, fit
    np.testing.assert_allclose(fit.predict(x), fit.c + fit.a * x ** -fit.b)
    # a straight line in log-log space is biased low when an irreducible term exists
    line = scaling.fit_power_law(x, y, irreducible=False)
    assert line.c == 0.0 and line.b < 0.4 - 0.1, line


def test_fit_power_law_without_irreducible_term_is_exact_on_a_line():
    x = np.logspace(1, 5, 9)
    fit = scaling.fit_power_law(x, 3.0 * x**-0.7, irreducible=False)
    assert fit.b == pytest.approx(0.7, abs=1e-5) and fit.a == pytest.approx(3.0, rel=1e-4)
    assert fit.n_starts == 4 and fit.objective < 1e-10


def test_fit_power_law_bad_input():
    with pytest.raises(ValueError, match="fit_power_law: `x` must take at least 3 distinct values "
                                         "to fit 3 parameters, got 2"):
        scaling.fit_power_law([1.0, 2.0], [2.0, 1.0])
    with pytest.raises(ValueError, match="fit_power_law: `y` must be > 0, got -1"):
        scaling.fit_power_law([1.0, 2.0, 3.0], [2.0, 1.0, -1.0])
    with pytest.raises(ValueError, match="arrays must have the same length, got `x` 3, `y` 4"):
        scaling.fit_power_law([1.0, 2.0, 3.0], [2.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"`starts` must have 3 columns, got shape \(1, 2\)"):
        scaling.fit_power_law([1.0, 2.0, 3.0], [3.0, 2.0, 1.5], starts=[[0.0, 1.0]])
    with pytest.raises(TypeError, match="`x` must be an array of real numbers, got bool"):
        scaling.power_law(True, 1.0, 1.0, 1.0)


def test_bootstrap_intervals_cover_the_truth_and_are_reproducible():
    rng = np.random.default_rng(0)
    x = np.exp(rng.uniform(np.log(1e2), np.log(1e6), 40))
    y = scaling.power_law(x, 1.0, 20.0, 0.5) * np.exp(0.02 * rng.standard_normal(40))
    fit = lambda x, y: scaling.fit_power_law(x, y, starts=[[3.0, 0.0, 0.5]])  # noqa: E731
    boot = scaling.bootstrap(fit, x, y, n_boot=40, seed=1)
    assert set(boot.samples) == {"c", "a", "b"} and boot.ci == 0.95
    assert boot.contains("b", 0.5) and boot.contains("c", 1.0)
    low, high = boot.intervals["b"]
    assert 0 < high - low < 0.3
    again = scaling.bootstrap(fit, x, y, n_boot=40, seed=1)
    np.testing.assert_array_equal(boot.samples["b"], again.samples["b"])
    # fewer points give wider intervals
    with pytest.warns(IdentifiabilityWarning, match=r"bootstrap: \d+ of 40 refits warned"):
        few = scaling.bootstrap(fit, x[:10], y[:10], n_boot=40, seed=1)
    assert np.ptp(few.intervals["b"]) > np.ptp(boot.intervals["b"])
    # a dict-returning fit works too
    mean = scaling.bootstrap(lambda v: {"mean": float(np.mean(v))}, y, n_boot=20, ci=0.5)
    assert mean.contains("mean", float(np.median(mean.samples["mean"])))


def test_bootstrap_bad_input():
    y = np.arange(1.0, 11.0)
    with pytest.raises(TypeError, match="bootstrap: `fit` must be callable, got int"):
        scaling.bootstrap(3, y)
    with pytest.raises(ValueError, match="expected at least one data array"):
        scaling.bootstrap(np.mean)
    with pytest.raises(ValueError, match=r"`ci` must be in \(0, 1\), got 1.5"):
        scaling.bootstrap(lambda v: {"m": 1.0}, y, ci=1.5)
    with pytest.raises(ValueError, match="`n_boot` must be >= 2, got 1"):
        scaling.bootstrap(lambda v: {"m": 1.0}, y, n_boot=1)
    with pytest.raises(ValueError, match=r"arrays must have the same length"):
        scaling.bootstrap(lambda a, b: {"m": 1.0}, y, y[:3])
    with pytest.raises(TypeError, match="must return a NamedTuple or a dict of numbers, got float"):
        scaling.bootstrap(lambda v: 1.0, y, n_boot=2)


# ----------------------------------------------------------------------------------------------
# IsoFLOP analysis (Approach 2)


def _isoflop_runs(params, budgets, per_budget=9, span=2.0, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    N, C, loss = [], [], []
    for c in budgets:
        n_opt = scaling.compute_optimal(c, params).N
        sizes = n_opt * np.exp(np.linspace(-span, span, per_budget))
        L = scaling.isoflop_loss(sizes, c, params) * np.exp(noise * rng.standard_normal(len(sizes)))
        N += list(sizes)
        C += [c * (1 + 1e-3 * rng.standard_normal())] * per_budget  # rounding of D moves 6ND
        loss += list(L)
    return np.array(N), np.array(loss), np.array(C)


def test_isoflop_profiles_find_the_optimum_and_the_exponent():
    params = scaling.EPOCH
    budgets = np.logspace(18, 22, 5)
    N, loss, C = _isoflop_runs(params, budgets, span=1.0)
    profiles = scaling.isoflop_profiles(N, loss, C)
    assert len(profiles) == 5
    for prof, c in zip(profiles, budgets):
        assert prof.C == pytest.approx(c, rel=1e-2) and prof.interior
        assert prof.N_opt == pytest.approx(scaling.compute_optimal(c, params).N, rel=0.03)
        assert prof.D_opt == pytest.approx(prof.C / (6 * prof.N_opt))
        assert prof.loss_opt == pytest.approx(min(prof.loss), abs=2e-3)
        np.testing.assert_allclose(prof.predict(prof.N), prof.loss, atol=5e-3)
    fit = scaling.fit_isoflop_optima(profiles)
    assert fit.a == pytest.approx(params.beta / (params.alpha + params.beta), abs=0.02)
    assert fit.a + fit.b == pytest.approx(1.0, abs=1e-9) and fit.n_budgets == 5
    pred = fit.predict(1e20)
    assert pred.N == pytest.approx(scaling.compute_optimal(1e20, params).N, rel=0.05)


def test_isoflop_profiles_edge_cases_and_errors():
    # a profile that bends the wrong way has no optimum; two sizes make no profile
    N = np.array([1.0, 2.0, 4.0, 1.0, 2.0])
    loss = np.array([1.0, 2.0, 1.0, 1.0, 2.0])
    C = np.array([10.0, 10.0, 10.0, 99.0, 99.0])
    with pytest.warns(IdentifiabilityWarning) as caught:
        profiles = scaling.isoflop_profiles(N, loss, C)
    messages = [str(w.message) for w in caught]
    assert any("C = 99 have fewer than 3 distinct sizes and were skipped" in m for m in messages)
    assert any("C = 10 (3 sizes) have fewer than 5 sizes" in m for m in messages)
    assert len(profiles) == 1 and np.isnan(profiles[0].N_opt) and not profiles[0].interior
    with pytest.raises(ValueError, match="need at least 2 budgets with a usable optimum, got 0"):
        scaling.fit_isoflop_optima(profiles)
    with pytest.raises(ValueError, match=r"`rtol` must be in \[0, 1\), got 2"):
        scaling.isoflop_profiles(N, loss, C, rtol=2)
    with pytest.raises(ValueError, match="isoflop_profiles: arrays must have the same length"):
        scaling.isoflop_profiles(N, loss[:3], C)
