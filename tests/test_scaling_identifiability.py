"""Scaling fits refuse or warn when the data cannot identify the law (issue: a fixed D/N sweep, one
model size, all-equal x), and their standard errors match the real sampling spread."""

import warnings

import numpy as np
import pytest
from deepscope import IdentifiabilityWarning, scaling

TRUE = scaling.EPOCH


def _messages(caught):
    return [str(w.message) for w in caught if issubclass(w.category, IdentifiabilityWarning)]


def test_fixed_tokens_per_parameter_cannot_separate_n_from_d():
    # Every run at 20 tokens per parameter: log D = log N + const. The fit still reaches an
    # objective of ~1e-10, but with an exponent far from the truth and a compute-optimal
    # allocation off by orders of magnitude; it must say so.
    N = np.logspace(7, 10, 12)
    D = 20 * N
    with pytest.warns(IdentifiabilityWarning, match="log N and log D lie almost on one line") as w:
        fit = scaling.fit_chinchilla(N, D, scaling.chinchilla_loss(N, D, TRUE))
    assert "D/N ranges 20..20" in _messages(w)[0]
    assert fit.objective < 1e-9  # a perfect fit ...
    off = scaling.compute_optimal(5.88e23, fit).N / scaling.compute_optimal(5.88e23, TRUE).N
    assert abs(fit.alpha - TRUE.alpha) > 0.1 or not 0.1 < off < 10  # ... of the wrong law


def test_one_model_size_cannot_separate_e_from_the_size_term():
    N = np.full(12, 1e9)
    D = np.logspace(9, 12, 12)
    with pytest.warns(IdentifiabilityWarning) as w:
        fit = scaling.fit_chinchilla(N, D, scaling.chinchilla_loss(N, D, TRUE))
    messages = _messages(w)
    assert any("`N` takes 1 distinct value; E, A and alpha cannot be separated" in m
               for m in messages)
    assert any("ill-conditioned" in m and "alpha is not determined" in m for m in messages)
    assert abs(fit.E - TRUE.E) > 0.1  # the wrong floor, as the issue found (E = 0.88 here)


def test_all_equal_x_raises_and_too_few_levels_raise():
    with pytest.raises(ValueError, match=r"fit_power_law: `x` must take at least 3 distinct "
                                         r"values to fit 3 parameters, got 1 \(all equal"):
        scaling.fit_power_law([5.0] * 6, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    with pytest.raises(ValueError, match="`x` must take at least 2 distinct values to fit 2 "
                                         "parameters, got 1"):
        scaling.fit_power_law([5.0] * 6, np.arange(1.0, 7.0), irreducible=False)
    # duplicated points add no information: 6 points at 2 distinct x
    with pytest.raises(ValueError, match="got 2$"):
        scaling.fit_power_law([1.0, 1.0, 1.0, 2.0, 2.0, 2.0], np.arange(1.0, 7.0))
    with pytest.raises(ValueError, match=r"`\(N, D\)` must take at least 5 distinct values"):
        scaling.fit_chinchilla([1e8, 1e8, 1e9, 1e9, 1e10, 1e10], [1e9] * 6, [3.0] * 6)


def test_few_points_per_parameter_warn_and_enough_points_do_not():
    x = np.logspace(1, 5, 5)
    y = scaling.power_law(x, 1.0, 5.0, 0.5)
    with pytest.warns(IdentifiabilityWarning, match="5 distinct x values for 3 parameters"):
        scaling.fit_power_law(x, y)
    with pytest.warns(IdentifiabilityWarning, match=r"it interpolates them exactly"):
        scaling.fit_power_law(x[:3], y[:3])
    with warnings.catch_warnings():
        warnings.simplefilter("error", IdentifiabilityWarning)
        x = np.logspace(1, 5, 12)
        fit = scaling.fit_power_law(x, scaling.power_law(x, 1.0, 5.0, 0.5))
        assert fit.b == pytest.approx(0.5, abs=1e-4)
        # a well-designed Chinchilla sweep: several budgets, several sizes each
        N = np.repeat(np.logspace(7, 10, 6), 5)
        D = np.tile(np.logspace(9, 12, 5), 6)
        scaling.fit_chinchilla(N, D, scaling.chinchilla_loss(N, D, TRUE))


def test_undetermined_exponent_warns():
    # x over only 20% of its value, 1% noise: the curvature that separates c from a x^-b is
    # invisible, and the exponent's standard error exceeds half its value
    rng = np.random.default_rng(0)
    x = np.geomspace(1e3, 1.2e3, 20)
    y = scaling.power_law(x, 2.0, 40.0, 0.5) * np.exp(1e-2 * rng.standard_normal(20))
    with pytest.warns(IdentifiabilityWarning, match=r"b = .* \+- .* the data do not determine "
                                                   r"this exponent"):
        fit = scaling.fit_power_law(x, y)
    assert 2 * fit.stderr["b"] >= abs(fit.b)


def test_standard_errors_match_the_spread_over_fresh_datasets():
    # The asymptotic Huber standard errors against the real spread of the estimates over 200
    # independent datasets, in the absolute-loss regime (delta << noise) and the least-squares
    # one (delta >> noise), where the efficiency differs by about sqrt(pi / 2).
    rng = np.random.default_rng(3)
    for delta in (1e-3, 1.0):
        b, se = [], []
        for _ in range(200):
            x = np.exp(rng.uniform(np.log(1e3), np.log(1e7), 40))
            y = scaling.power_law(x, 1.7, 40.0, 0.35) * np.exp(0.01 * rng.standard_normal(40))
            fit = scaling.fit_power_law(x, y, delta=delta, starts=[[np.log(40), np.log(1.7), 0.35]])
            b.append(fit.b)
            se.append(fit.stderr["b"])
        assert np.mean(se) == pytest.approx(np.std(b), rel=0.2), delta
    assert set(fit.stderr) == {"a", "b", "c"}


def test_chinchilla_standard_errors_cover_the_truth():
    rng = np.random.default_rng(0)
    N = np.exp(rng.uniform(np.log(5e7), np.log(2e10), 150))
    D = np.exp(rng.uniform(np.log(5e8), np.log(5e11), 150))
    loss = scaling.chinchilla_loss(N, D, TRUE) * np.exp(0.01 * rng.standard_normal(150))
    fit = scaling.fit_chinchilla(N, D, loss, starts=TRUE)
    for name in ("E", "alpha", "beta"):
        assert abs(getattr(fit, name) - getattr(TRUE, name)) < 4 * fit.stderr[name], name
        assert 0 < fit.stderr[name] < 0.2


def test_isoflop_exponent_standard_error_and_bootstrap():
    rng = np.random.default_rng(1)
    N, loss, C = [], [], []
    for c in np.logspace(18, 21, 5):
        n_opt = scaling.compute_optimal(c, TRUE).N
        sizes = n_opt * np.exp(np.linspace(-1.5, 1.5, 7))
        N += list(sizes)
        C += [c] * 7
        loss += list(scaling.isoflop_loss(sizes, c, TRUE) * np.exp(0.003 * rng.standard_normal(7)))
    N, loss, C = map(np.array, (N, loss, C))
    fit = scaling.fit_isoflop_optima(scaling.isoflop_profiles(N, loss, C))
    a_true = TRUE.beta / (TRUE.alpha + TRUE.beta)
    assert 0 < fit.stderr["a"] < 0.1 and fit.stderr["b"] == fit.stderr["a"]
    boot = scaling.bootstrap_isoflop(N, loss, C, n_boot=200, seed=0)
    low, high = boot.intervals["a"]
    assert low < fit.a < high and low < a_true < high
    assert boot.samples["dropped"][0] <= 20
    np.testing.assert_allclose(boot.samples["a"] + boot.samples["b"], 1.0, atol=1e-9)
    again = scaling.bootstrap_isoflop(N, loss, C, n_boot=200, seed=0)
    np.testing.assert_array_equal(boot.samples["a"], again.samples["a"])
    # noisier profiles give a wider interval
    noisy = loss * np.exp(0.01 * rng.standard_normal(len(loss)))
    wide = scaling.bootstrap_isoflop(N, noisy, C, n_boot=200, seed=0)
    assert np.ptp(wide.intervals["a"]) > np.ptp(boot.intervals["a"])
    # two budgets: a line through two points has no error estimate
    two = C <= 1e19 * 1.01
    with pytest.warns(IdentifiabilityWarning, match="only 2 budgets"):
        fit2 = scaling.fit_isoflop_optima(scaling.isoflop_profiles(N[two], loss[two], C[two]))
    assert np.isnan(fit2.stderr["a"])
    with pytest.raises(ValueError, match=r"`ci` must be in \(0, 1\), got 2"):
        scaling.bootstrap_isoflop(N, loss, C, ci=2)


def test_fixed_parameters_are_held_and_the_rest_fitted():
    rng = np.random.default_rng(2)
    N = np.exp(rng.uniform(np.log(5e7), np.log(2e10), 60))
    D = np.exp(rng.uniform(np.log(5e8), np.log(5e11), 60))
    loss = scaling.chinchilla_loss(N, D, TRUE)
    fit = scaling.fit_chinchilla(N, D, loss, fixed={"E": TRUE.E})
    assert fit.E == pytest.approx(TRUE.E, rel=1e-12) and fit.stderr["E"] == 0
    assert fit.alpha == pytest.approx(TRUE.alpha, abs=1e-4)
    assert fit.beta == pytest.approx(TRUE.beta, abs=1e-4)
    # a wrong fixed floor is honoured too, and the other parameters compensate as best they can
    wrong = scaling.fit_chinchilla(N, D, loss, fixed={"E": 1.5, "alpha": 0.3})
    assert wrong.E == pytest.approx(1.5) and wrong.alpha == pytest.approx(0.3)
    assert wrong.objective > fit.objective
    with pytest.raises(ValueError, match="`fixed` keys must be among E, A, B, alpha, beta, got"):
        scaling.fit_chinchilla(N, D, loss, fixed={"C": 1.0})
    with pytest.raises(ValueError, match=r"`fixed\['E'\]` must be > 0, got -1"):
        scaling.fit_chinchilla(N, D, loss, fixed={"E": -1.0})
    with pytest.raises(ValueError, match="holds all 5 parameters"):
        scaling.fit_chinchilla(N, D, loss, fixed=dict(TRUE._asdict()))
