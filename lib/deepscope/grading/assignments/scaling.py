"""Checks of assignment 5 (scaling laws): the Huber loss, a robust power-law fit, the
compute-optimal allocation and the Chinchilla fit (Approach 3).

References: `scipy.special.huber` and `deepscope.scaling` (fits, objectives, the closed-form
compute-optimal allocation), and planted parameters: a fit of noise-free data must recover the
law that generated it, a Huber fit must shrug off a few outliers, and on noisy data a fit must
reach an objective at least as low as the reference's.
"""

from __future__ import annotations

import numpy as np
from scipy.special import huber as scipy_huber

from ... import scaling as reference
from ..checks import Assignment, Call, Check, Fail, Question, expect_number_close

_PLANTED = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al.


def _expect_array(value, what: str, shape) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise Fail(f"{what} should be an array of numbers, got {type(value).__name__}") from err
    if array.shape != tuple(shape):
        raise Fail(f"{what} should have shape {tuple(shape)}, got {array.shape}")
    return array


def _numbers(value, count: int, what: str, names: str) -> list[float]:
    if not isinstance(value, (tuple, list)) or len(value) != count:
        raise Fail(f"{what} should return a tuple of {count} numbers ({names}), got "
                   f"{type(value).__name__}")
    numbers = []
    for v, name in zip(value, names.split(",")):
        try:
            array = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise Fail(f"{what}: {name.strip()} should be a number, got {type(v).__name__}") \
                from err
        if array.size != 1:
            raise Fail(f"{what}: {name.strip()} should be a number, got shape {array.shape}")
        numbers.append(float(array.reshape(-1)[0]))
    return numbers


# --- the Huber loss ---------------------------------------------------------------------------


def _huber_reference(ctx):
    rng = np.random.default_rng(0)
    r = np.concatenate([rng.normal(0, 2e-3, 50), rng.normal(0, 0.5, 20)])
    want = scipy_huber(1e-3, r)
    want2 = scipy_huber(0.5, r)

    def judge(outs):
        for out, expected, delta in zip(outs, (want, want2), (1e-3, 0.5)):
            got = _expect_array(out, f"huber(r, delta={delta})", r.shape)
            if not np.allclose(got, expected, rtol=1e-10, atol=1e-15):
                i = int(np.argmax(np.abs(got - expected)))
                raise Fail(f"huber(r, delta={delta}) at r = {r[i]:.4g}: you have {got[i]:.6g}, "
                           f"expected {expected[i]:.6g}")

    return [Call(r, 1e-3), Call(r, delta=0.5)], judge


def _huber_closed_forms(ctx):
    r = np.array([0.0, 0.5e-3, -1e-3, 2e-3, -0.1, 3.0])
    want = np.array([0.0, 0.125e-6, 0.5e-6, 1.5e-6, 0.0995e-3, 2.9995e-3])

    def judge(outs):
        got = _expect_array(outs[0], "huber(r, 1e-3)", r.shape)
        for value, expected, ri in zip(got, want, r):
            expect_number_close(value, expected, f"huber({ri:g}, 1e-3) (r^2 / 2 inside, "
                                "delta (|r| - delta / 2) outside)", rtol=1e-9, atol=1e-18)

    return [Call(r, 1e-3)], judge


HUBER = Question(
    "huber", "The Huber loss", [
        Check("agrees with scipy.special.huber (delta = 1e-3 and 0.5)", 1, _huber_reference),
        Check("r^2/2 inside, delta (|r| - delta/2) outside, continuous at delta", 1,
              _huber_closed_forms),
    ])


# --- a power-law fit --------------------------------------------------------------------------


def _power_objective(x, y, c, a, b, delta=1e-3) -> float:
    with np.errstate(all="ignore"):
        return float(scipy_huber(delta, np.log(c + a * x ** (-b)) - np.log(y)).sum())


def _law(value, what="fit_power_law"):
    c, a, b = _numbers(value, 3, what, "c, a, b")
    return c, a, b


def _pl_planted(ctx):
    x = np.logspace(1, 5, 15)
    cases = [(0.5, 3.0, 0.4), (2.0, 40.0, 0.9)]
    ys = [c + a * x ** (-b) for c, a, b in cases]

    def judge(outs):
        for out, (c, a, b) in zip(outs, cases):
            got = _law(out)
            for name, value, want in zip(("c", "a", "b"), got, (c, a, b)):
                expect_number_close(value, want, f"the fitted {name} of the noise-free law "
                                    f"{c} + {a} x^-{b}", rtol=1e-3)

    return [Call(x, y) for y in ys], judge


def _pl_outliers(ctx):
    x = np.logspace(1, 5, 14)
    y = 0.8 + 5.0 * x ** (-0.5)
    y[[3, 9]] *= 1.5  # two bad runs

    def judge(outs):
        c, a, b = _law(outs[0])
        if not abs(b - 0.5) < 0.01 or not abs(c - 0.8) < 0.01:
            raise Fail(f"with 2 outliers among 14 points the Huber fit should stay on the law "
                       f"0.8 + 5 x^-0.5 (|b - 0.5| < 0.01, |c - 0.8| < 0.01); got c = {c:.4g}, "
                       f"b = {b:.4g}")

    return [Call(x, y)], judge


def _pl_noisy(ctx):
    rng = np.random.default_rng(7)
    x = np.logspace(2, 6, 20)
    y = (1.2 + 8.0 * x ** (-0.3)) * np.exp(rng.normal(0, 0.02, len(x)))
    best = reference.fit_power_law(x, y).objective

    def judge(outs):
        c, a, b = _law(outs[0])
        value = _power_objective(x, y, c, a, b)
        if not value <= best * (1 + 1e-3) + 1e-12:
            raise Fail(f"the fit's Huber objective is {value:.6g}; the reference reaches "
                       f"{best:.6g} on the same noisy data (search from more starts?)")

    return [Call(x, y)], judge


POWER_LAW = Question(
    "fit_power_law", "A robust power-law fit", [
        Check("recovers two planted laws from noise-free points", 2, _pl_planted,
              hint="minimise sum huber(log(c + a x^-b) - log y) over (log a, log c, b) with "
                   "scipy.optimize.minimize from several starts"),
        Check("ignores two outliers among 14 points (Huber, not least squares)", 1,
              _pl_outliers),
        Check("reaches the reference's objective on noisy data", 1, _pl_noisy),
    ])


# --- the compute-optimal allocation -----------------------------------------------------------


def _co_reference(ctx):
    budgets = np.array([1e18, 5.88e23, 1e25])
    want = reference.compute_optimal(budgets, _PLANTED)
    other = {"E": 1.82, "A": 482.0, "B": 2085.4, "alpha": 0.3478, "beta": 0.3658}  # Epoch AI
    want_other = reference.compute_optimal(1e21, other)

    def judge(outs):
        if not isinstance(outs[0], (tuple, list)) or len(outs[0]) != 2:
            raise Fail("compute_optimal should return the pair (N_opt, D_opt)")
        n, d = (_expect_array(v, name, budgets.shape) for v, name in
                zip(outs[0], ("N_opt", "D_opt")))
        for got, expected, name in ((n, want.N, "N_opt"), (d, want.D, "D_opt")):
            if not np.allclose(got, expected, rtol=1e-8):
                raise Fail(f"{name} for budgets {budgets.tolist()}: you have {got.tolist()}, "
                           f"expected {np.asarray(expected).tolist()}")
        n2, d2 = _numbers(outs[1], 2, "compute_optimal", "N_opt, D_opt")
        expect_number_close(n2, float(want_other.N), "N_opt with Epoch AI's parameters",
                            rtol=1e-8)
        expect_number_close(d2, float(want_other.D), "D_opt with Epoch AI's parameters",
                            rtol=1e-8)

    return [Call(budgets, _PLANTED), Call(1e21, other)], judge


def _co_budget(ctx):
    budget = 3e22

    def judge(outs):
        n, d = _numbers(outs[0], 2, "compute_optimal", "N_opt, D_opt")
        expect_number_close(6 * n * d, budget, "6 N_opt D_opt (it must use the whole budget C)",
                            rtol=1e-8)

    return [Call(budget, _PLANTED)], judge


def _co_optimal(ctx):
    budget = 3e22

    def judge(outs):
        n, _ = _numbers(outs[0], 2, "compute_optimal", "N_opt, D_opt")
        best = reference.isoflop_loss(n, budget, _PLANTED)
        for factor in (0.98, 1.02):
            if not reference.isoflop_loss(n * factor, budget, _PLANTED) > best:
                raise Fail(f"N_opt = {n:.4g} is not optimal: {factor:g} N_opt reaches a lower "
                           f"loss with the same budget")

    return [Call(budget, _PLANTED)], judge


COMPUTE_OPTIMAL = Question(
    "compute_optimal", "Compute-optimal allocation", [
        Check("agrees with deepscope.scaling.compute_optimal (array and scalar budgets)", 1,
              _co_reference, hint="N_opt = G (C/6)^(beta/(alpha+beta)), D_opt = G^-1 "
                                  "(C/6)^(alpha/(alpha+beta)), G = (alpha A / (beta B))^(1/("
                                  "alpha+beta))"),
        Check("uses the whole budget: 6 N_opt D_opt = C", 1, _co_budget,
              hint="D = C / (6 N), not C / N"),
        Check("is optimal: 2% more or fewer parameters lose", 1, _co_optimal),
    ])


# --- the Chinchilla fit -----------------------------------------------------------------------


def _grid_points():
    N = np.repeat(np.logspace(7, 10, 6), 5)
    D = np.tile(np.logspace(9, 12, 5), 6)
    return N, D


def _params(value) -> dict:
    E, A, B, alpha, beta = _numbers(value, 5, "fit_chinchilla", "E, A, B, alpha, beta")
    return {"E": E, "A": A, "B": B, "alpha": alpha, "beta": beta}


def _ch_planted(ctx):
    N, D = _grid_points()
    loss = reference.chinchilla_loss(N, D, _PLANTED)

    def judge(outs):
        got = _params(outs[0])
        for name in ("alpha", "beta"):
            expect_number_close(got[name], _PLANTED[name], f"the fitted {name} of noise-free "
                                "Chinchilla-law data", atol=1e-3, rtol=0)
        for name, rtol in (("E", 1e-3), ("A", 0.02), ("B", 0.02)):
            expect_number_close(got[name], _PLANTED[name], f"the fitted {name} of noise-free "
                                "Chinchilla-law data", rtol=rtol)

    return [Call(N, D, loss)], judge


def _ch_noisy(ctx):
    N, D = _grid_points()
    rng = np.random.default_rng(11)
    loss = reference.chinchilla_loss(N, D, _PLANTED) * np.exp(rng.normal(0, 0.01, len(N)))
    loss[[4, 17]] *= 1.3  # two diverged runs
    best = reference.fit_chinchilla(N, D, loss, starts=[_PLANTED]).objective

    def judge(outs):
        got = _params(outs[0])
        if min(got["E"], got["A"], got["B"]) < 0:
            raise Fail(f"E, A and B must be positive, got {got}")
        value = reference.chinchilla_objective(N, D, loss, got)
        if not value <= best * (1 + 1e-3) + 1e-9:
            raise Fail(f"the fit's Huber objective is {value:.6g}; the reference reaches "
                       f"{best:.6g} on the same noisy data with two outliers (Huber on the "
                       "log-loss residuals, from several starts?)")

    return [Call(N, D, loss)], judge


CHINCHILLA = Question(
    "fit_chinchilla", "The Chinchilla fit (Approach 3)", [
        Check("recovers planted parameters from noise-free data", 2, _ch_planted,
              hint="fit (log A, log B, log E, alpha, beta) with log L = logsumexp(log A - alpha "
                   "log N, log B - beta log D, log E); start from a grid"),
        Check("reaches the reference's Huber objective on noisy data with outliers", 1,
              _ch_noisy),
    ], time_limit=120.0)


_HUBER_SOURCE = """
def huber(r, delta=1e-3):
    import numpy as _np
    from scipy.special import huber as _huber
    return _huber(delta, _np.asarray(r, dtype=_np.float64))
"""

ASSIGNMENT = Assignment(
    id="05_scaling_laws",
    title="Scaling laws: Huber loss, power-law fits, compute-optimal allocation, Chinchilla",
    questions=[HUBER, POWER_LAW, COMPUTE_OPTIMAL, CHINCHILLA],
    master="instructor/05_scaling_laws/assignment.ipynb",
    student="chapters/05_scaling_laws/assignment.ipynb",
    substitutes={"huber": _HUBER_SOURCE},
)
