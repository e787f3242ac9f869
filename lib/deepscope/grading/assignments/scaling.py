"""Checks of assignment 5 (scaling laws): the Huber loss, a robust power-law fit, the
compute-optimal allocation and the Chinchilla fit (Approach 3).

References: `scipy.special.huber` and `deepscope.scaling` (fits, objectives, the closed-form
compute-optimal allocation), and planted parameters: a fit of noise-free data must recover the
law that generated it, and a Huber fit must shrug off a few outliers. Fits are judged by the
objective they reach: on the notebook's own compute frontier and on noisy data drawn at grading
time, the student's parameters, scored with the reference objective, must reach the optimum
the reference finds (to 0.1%); and on fresh data from the same noisy law they must predict as
well as the reference's parameters do. Laws, grids, budgets, residuals and thresholds are drawn
at grading time besides the published cases; a call per question is observed for the
notebook's rules (its arrays and dicts left unchanged, the global generators untouched).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import huber as scipy_huber

from ... import scaling as reference
from ..._warnings import IdentifiabilityWarning
from ..checks import (
    Assignment,
    Call,
    Check,
    Fail,
    Question,
    approx,
    combine,
    expect_number_close,
    expect_rules,
    relative,
)

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


def _huber_agrees(r, delta, what):
    want = scipy_huber(delta, r)

    def judge(outs):
        got = _expect_array(outs[0], f"huber(r, delta={delta:g}) ({what})", r.shape)
        if not np.allclose(got, want, rtol=1e-10, atol=1e-15):
            i = np.unravel_index(int(np.argmax(np.abs(got - want))), r.shape)
            raise Fail(f"huber(r, delta={delta:g}) ({what}) at r = {r[i]:.3g}: you have "
                       f"{got[i]:.3g} where {approx(want[i])} is expected")

    return [Call(r, delta)], judge


def _huber_reference(ctx):
    rng = np.random.default_rng(0)
    r = np.concatenate([rng.normal(0, 2e-3, 50), rng.normal(0, 0.5, 20)])
    delta = float(ctx.choice([1e-3, 1e-2, 0.1, 1.0])) * ctx.uniform(0.5, 2.0)
    shape = (ctx.integers(2, 6), ctx.integers(2, 6))
    drawn = np.random.default_rng(ctx.fresh_seed()).normal(0, 3 * delta, shape)
    drawn.flat[0], drawn.flat[-1] = delta, -delta  # the boundary itself
    published = combine(_huber_agrees(r, 1e-3, "the published residuals"),
                        ([Call(r, delta=0.5)], _huber_agrees(r, 0.5, "the published residuals")[1]))
    return combine(published, _huber_agrees(drawn, delta, f"drawn residuals of shape {shape}"))


def _huber_closed_forms(ctx):
    r = np.array([0.0, 0.5e-3, -1e-3, 2e-3, -0.1, 3.0])
    want = np.array([0.0, 0.125e-6, 0.5e-6, 1.5e-6, 0.0995e-3, 2.9995e-3])

    def judge(outs):
        got = _expect_array(outs[0], "huber(r, 1e-3)", r.shape)
        for value, expected, ri in zip(got, want, r):
            expect_number_close(value, expected, f"huber({ri:g}, 1e-3) (r^2 / 2 inside, "
                                "delta (|r| - delta / 2) outside)", rtol=1e-9, atol=1e-18)

    drawn = np.random.default_rng(ctx.fresh_seed()).normal(0, 1e-3, ctx.integers(3, 30))

    def rules(outs):
        expect_rules(outs[0], f"huber ({drawn.shape} residuals)")

    return combine(([Call(r, 1e-3)], judge), ([Call(drawn).observe()], rules))


HUBER = Question(
    "huber", "The Huber loss", [
        Check("agrees with scipy.special.huber: the published residuals (delta = 1e-3 and 0.5) "
              "and a drawn 2-D array with a drawn delta, the boundary included", 1,
              _huber_reference),
        Check("r^2/2 inside, delta (|r| - delta/2) outside, continuous at delta; keeps the "
              "rules (r unchanged)", 1, _huber_closed_forms,
              hint="np.abs(r) and np.where make new arrays; r **= 2 or r[...] = ... change the "
                   "caller's"),
    ])


# --- a power-law fit --------------------------------------------------------------------------

#: The notebook's compute frontier: the lowest loss of each of ten compute bins of the Chinchilla
#: runs (Epoch AI's extraction; `tests/grading` checks it against the data file).
FRONTIER_C = np.array([3.4098717015292923e18, 7.99750935882534e18, 2.0328966553395737e19,
                       5.362153673164827e19, 1.1226237865507304e20, 2.930178015323031e20,
                       5.870141868383024e20, 1.986547558937826e21, 5.031322209115321e21,
                       1.2956022673438285e22])
FRONTIER_LOSS = np.array([3.131833845205492, 2.962954091342755, 2.7780894167931174,
                          2.628284835801397, 2.5165346421087142, 2.398733033445379,
                          2.331416878272676, 2.249076295522973, 2.1794149286876103,
                          2.0773942450664395])
#: Fits may reach the reference optimum's objective within this factor (a correct multi-start
#: L-BFGS search gets there to 1e-6; an early stop or a worse local optimum does not).
_OPTIMUM = 1e-3
#: The Chinchilla fit's allowance: five parameters and a rugged objective; the notebook's own
#: 32-start search landed 0.54% above the reference's optimum on one drawn case in 200
#: (`tools.calibrate_grader`), while least squares, a missing E or 20 L-BFGS iterations land
#: 3% to 900% above it.
_CHINCHILLA_OPTIMUM = 0.02
#: On fresh data, a fit may predict this much worse than the reference's parameters.
_FRESH = 0.05


def _power_objective(x, y, c, a, b, delta=1e-3) -> float:
    with np.errstate(all="ignore"):
        value = float(scipy_huber(delta, np.log(c + a * x ** (-b)) - np.log(y)).sum())
    return value if np.isfinite(value) else float("inf")


def _law(value, what="fit_power_law"):
    c, a, b = _numbers(value, 3, what, "c, a, b")
    return c, a, b


def _drawn_law(ctx):
    """A law c + a x^-b and a grid of x drawn at grading time (the reducible part at the
    smallest x between 0.3 and 3 times c)."""
    lo, span, n = ctx.uniform(1, 18), ctx.uniform(3, 5), ctx.integers(10, 25)
    c, b = round(ctx.uniform(0.5, 3.0), 3), round(ctx.uniform(0.1, 0.8), 3)
    a = float(f"{ctx.uniform(0.3, 3.0) * c * 10 ** (lo * b):.4g}")
    return np.logspace(lo, lo + span, n), (c, a, b), (lo, span)


def _planted(x, law, what):
    """The published noise-free law: its parameters must come back (to 0.1%)."""
    y = law[0] + law[1] * x ** (-law[2])

    def judge(outs):
        got = _law(outs[0])
        for name, value, want in zip(("c", "a", "b"), got, law):
            expect_number_close(value, want, f"the fitted {name} of the noise-free law {what}",
                                rtol=1e-3)

    return [Call(x, y)], judge


def _planted_drawn(ctx):
    """A drawn noise-free law: judged by what it predicts, on its points and between them (a
    drawn law can be nearly unidentifiable, e.g. a tiny b trades c against a, so its
    parameters need not come back to 0.1% even from a perfect fit); an observed call."""
    x, law, (lo, span) = _drawn_law(ctx)
    c, a, b = law
    y = c + a * x ** (-b)
    between = 10 ** np.linspace(lo, lo + span, 97)
    truth = c + a * between ** (-b)
    what = f"a noise-free law drawn at grading time, {len(x)} points"

    def judge(outs):
        got = _law(expect_rules(outs[0], f"fit_power_law ({what})"))
        with np.errstate(all="ignore"):
            miss = np.abs(got[0] + got[1] * between ** (-got[2]) - truth) / truth
        worst = float(np.nanmax(miss)) if np.isfinite(miss).all() else float("inf")
        if not worst <= 1e-4:
            raise Fail(f"the fitted law misses {what} by up to {relative(worst)} between its "
                       "points (a fit of noise-free data must reproduce the law)")

    return [Call(x, y).observe()], judge


def _pl_planted(ctx):
    return combine(_planted(np.logspace(1, 5, 15), (0.5, 3.0, 0.4), "0.5 + 3 x^-0.4"),
                   _planted_drawn(ctx))


def _pl_outliers(ctx):
    """Two outliers on a drawn law: a Huber fit keeps to the law the other points follow, which
    is what reaching the Huber optimum means (least squares lands far from it)."""
    x, law, _ = _drawn_law(ctx)
    c, a, b = law
    y = c + a * x ** (-b)
    for i in ctx.rng.choice(np.arange(1, len(x) - 1), size=2, replace=False):
        y[int(i)] *= ctx.uniform(1.3, 1.8)
    return _optimum_case(x, y, f"{len(x)} points of a drawn law, two of them outliers",
                         truth=law)


def best_power_law(x, y, start=None):
    """The reference optimum: L-BFGS from the library's 12 starts and the planted law."""
    starts = reference.power_law_starts(x, y)
    if start is not None:
        c, a, b = start
        starts = np.vstack([starts, [np.log(a), np.log(c), b]])
    with warnings.catch_warnings():  # drawn laws may be weakly identified: judged by the
        warnings.simplefilter("ignore", IdentifiabilityWarning)  # optimum and predictions
        return reference.fit_power_law(x, y, starts=starts)


def _optimum_case(x, y, what, truth=None, fresh=None):
    best = best_power_law(x, y, truth)
    if fresh is not None:
        x_new, y_new = fresh
        ref_fresh = _power_objective(x_new, y_new, best.c, best.a, best.b)

    def judge(outs):
        c, a, b = _law(outs[0])
        value = _power_objective(x, y, c, a, b)
        if not value <= best.objective * (1 + _OPTIMUM) + 1e-12:
            raise Fail(f"on {what}, your law's Huber objective is {value / best.objective:.3g} "
                       "times the optimum the reference reaches (minimise the Huber loss of the "
                       "log residuals, scaled by 1/delta, from several starts)")
        if fresh is not None:
            new = _power_objective(x_new, y_new, c, a, b)
            if not new <= ref_fresh * (1 + _FRESH) + 1e-12:
                raise Fail(f"on fresh points from the law behind {what}, your law's Huber "
                           f"loss is {new / ref_fresh:.3g} times the reference fit's")

    return [Call(x, y)], judge


def noisy_power_data(ctx):
    """Noisy points from a law drawn at grading time, and fresh points from the same law:
    ``(x, y, law, (x_fresh, y_fresh))``."""
    x, law, (lo, span) = _drawn_law(ctx)
    rng = np.random.default_rng(ctx.fresh_seed())
    c, a, b = law
    noise = ctx.uniform(0.003, 0.02)
    y = (c + a * x ** (-b)) * np.exp(rng.normal(0, noise, len(x)))
    x_new = 10 ** rng.uniform(lo, lo + span, 40)
    y_new = (c + a * x_new ** (-b)) * np.exp(rng.normal(0, noise, len(x_new)))
    return x, y, law, (x_new, y_new)


def _pl_optimum(ctx):
    x, y, law, fresh = noisy_power_data(ctx)
    return combine(_optimum_case(FRONTIER_C, FRONTIER_LOSS, "the notebook's compute frontier"),
                   _optimum_case(x, y, f"{len(x)} noisy points drawn at grading time",
                                 truth=law, fresh=fresh))


POWER_LAW = Question(
    "fit_power_law", "A robust power-law fit", [
        Check("recovers planted laws from noise-free points (the published one's parameters, a "
              "drawn one's predictions); keeps the rules (x and y unchanged)", 1, _pl_planted,
              hint="minimise sum huber(log(c + a x^-b) - log y) over (log a, log c, b) with "
                   "scipy.optimize.minimize from several starts"),
        Check("ignores two outliers around a drawn law: reaches the Huber optimum there (least "
              "squares does not)", 1, _pl_outliers),
        Check("reaches the optimum of the Huber objective (the notebook's frontier and drawn "
              "noisy data) and predicts fresh data as well as the reference fit", 2,
              _pl_optimum, hint="divide the objective by delta so L-BFGS-B does not stop early; "
                                "keep the best of several starts"),
    ])


# --- the compute-optimal allocation -----------------------------------------------------------


def _drawn_params(ctx) -> dict:
    """Chinchilla-law parameters drawn at grading time around the published fits."""
    return {"E": round(ctx.uniform(1.5, 2.0), 4), "A": round(ctx.uniform(200, 800), 2),
            "B": round(ctx.uniform(200, 2500), 2), "alpha": round(ctx.uniform(0.25, 0.45), 4),
            "beta": round(ctx.uniform(0.2, 0.4), 4)}


def _co_case(budgets, params, what):
    want = reference.compute_optimal(budgets, params)
    shape = np.shape(budgets)

    def judge(outs):
        if not isinstance(outs[0], (tuple, list)) or len(outs[0]) != 2:
            raise Fail("compute_optimal should return the pair (N_opt, D_opt)")
        for got, expected, name in zip(outs[0], (want.N, want.D), ("N_opt", "D_opt")):
            got = _expect_array(got, f"{name} ({what})", shape)
            if not np.allclose(got, expected, rtol=1e-8):
                i = np.unravel_index(int(np.argmax(np.abs(got / expected - 1))), shape) \
                    if shape else ()
                raise Fail(f"{name} ({what}): you have {np.asarray(got)[i]:.3g} where "
                           f"{approx(np.asarray(expected)[i])} is expected (budget "
                           f"{np.asarray(budgets)[i]:.2g})")

    return [Call(budgets, params)], judge


def _co_reference(ctx):
    other = {"E": 1.82, "A": 482.0, "B": 2085.4, "alpha": 0.3478, "beta": 0.3658}  # Epoch AI
    shape = ctx.choice([(ctx.integers(1, 6),), (ctx.integers(2, 3), ctx.integers(2, 3))])
    budgets = 10 ** np.random.default_rng(ctx.fresh_seed()).uniform(17, 26, shape)
    return combine(_co_case(np.array([1e18, 5.88e23, 1e25]), _PLANTED, "Hoffmann et al.'s law"),
                   _co_case(1e21, other, "Epoch AI's law, a scalar budget"),
                   _co_case(budgets, _drawn_params(ctx), f"a drawn law, budgets of shape "
                                                         f"{shape}"))


def _co_budget(ctx):
    budget = 3e22
    params, drawn_budget = _drawn_params(ctx), 10 ** ctx.uniform(18, 25)

    def judge(outs):
        for out, c, what in ((outs[0], budget, "Hoffmann et al.'s law"),
                             (expect_rules(outs[1], "compute_optimal (a drawn law)"),
                              drawn_budget, "a drawn law")):
            n, d = _numbers(out, 2, "compute_optimal", "N_opt, D_opt")
            expect_number_close(6 * n * d, c, f"6 N_opt D_opt ({what}; it must use the whole "
                                "budget C)", rtol=1e-8)

    return [Call(budget, _PLANTED), Call(np.array(drawn_budget), params).observe()], judge


def _co_optimal(ctx):
    cases = [(3e22, _PLANTED, "Hoffmann et al.'s law"),
             (10 ** ctx.uniform(18, 25), _drawn_params(ctx), "a drawn law")]

    def judge(outs):
        for out, (budget, params, what) in zip(outs, cases):
            n, _ = _numbers(out, 2, "compute_optimal", "N_opt, D_opt")
            best = reference.isoflop_loss(n, budget, params)
            for factor in (0.98, 1.02):
                if not reference.isoflop_loss(n * factor, budget, params) > best:
                    raise Fail(f"N_opt = {n:.3g} is not optimal ({what}, budget {budget:.2g}): "
                               f"{factor:g} N_opt reaches a lower loss with the same budget")

    return [Call(budget, params) for budget, params, _ in cases], judge


COMPUTE_OPTIMAL = Question(
    "compute_optimal", "Compute-optimal allocation", [
        Check("agrees with deepscope.scaling.compute_optimal (published laws, drawn laws and "
              "budget arrays of any shape)", 1, _co_reference,
              hint="N_opt = G (C/6)^(beta/(alpha+beta)), D_opt = G^-1 (C/6)^(alpha/(alpha+beta)), "
                   "G = (alpha A / (beta B))^(1/(alpha+beta)); use the params you are given"),
        Check("uses the whole budget: 6 N_opt D_opt = C; keeps the rules (params and C "
              "unchanged)", 1, _co_budget, hint="D = C / (6 N), not C / N"),
        Check("is optimal: 2% more or fewer parameters lose", 1, _co_optimal),
    ])


# --- the Chinchilla fit -----------------------------------------------------------------------


def _grid_points():
    N = np.repeat(np.logspace(7, 10, 6), 5)
    D = np.tile(np.logspace(9, 12, 5), 6)
    return N, D


def _drawn_grid(ctx):
    """A grid of runs drawn at grading time: 5 to 7 model sizes times 4 to 6 data sizes."""
    n_lo, d_lo = ctx.uniform(6.5, 7.5), ctx.uniform(8.5, 9.5)
    sizes = np.logspace(n_lo, n_lo + ctx.uniform(2.5, 3.5), ctx.integers(5, 7))
    tokens = np.logspace(d_lo, d_lo + ctx.uniform(2.5, 3.5), ctx.integers(4, 6))
    return np.repeat(sizes, len(tokens)), np.tile(tokens, len(sizes))


def _params(value) -> dict:
    E, A, B, alpha, beta = _numbers(value, 5, "fit_chinchilla", "E, A, B, alpha, beta")
    return {"E": E, "A": A, "B": B, "alpha": alpha, "beta": beta}


def _ch_planted(ctx):
    N, D = _grid_points()
    loss = reference.chinchilla_loss(N, D, _PLANTED)
    what = "noise-free data from Hoffmann et al.'s law, the published grid of 30 runs"

    def judge(outs):
        got = _params(expect_rules(outs[0], f"fit_chinchilla ({what})"))
        for name in ("alpha", "beta"):
            expect_number_close(got[name], _PLANTED[name], f"the fitted {name} ({what})",
                                atol=1e-3, rtol=0)
        for name, rtol in (("E", 1e-3), ("A", 0.02), ("B", 0.02)):
            expect_number_close(got[name], _PLANTED[name], f"the fitted {name} ({what})",
                                rtol=rtol)

    return [Call(N, D, loss).observe()], judge


#: The notebook's grid of starts (E, A, B, alpha, beta): e in {-1, 1}, a, b in {5, 15},
#: alpha, beta in {0.3, 0.8}.
NOTEBOOK_STARTS = np.array([(np.exp(e), np.exp(a), np.exp(b), alpha, beta)
                            for e in (-1, 1) for a in (5, 15) for b in (5, 15)
                            for alpha in (0.3, 0.8) for beta in (0.3, 0.8)])


def best_chinchilla(N, D, loss):
    """The reference optimum: L-BFGS from the notebook's 32 starts, the search the notebook
    prescribes. (A start at the planted law sometimes finds a better optimum that the prescribed
    search misses by 1%, as at seed 171 of the calibration; a better search still passes.)"""
    with warnings.catch_warnings():  # as in best_power_law
        warnings.simplefilter("ignore", IdentifiabilityWarning)
        return reference.fit_chinchilla(N, D, loss, starts=NOTEBOOK_STARTS)


def _chinchilla_case(N, D, loss, what, fresh=None):
    best = best_chinchilla(N, D, loss)
    if fresh is not None:
        ref_fresh = reference.chinchilla_objective(*fresh, best)

    def judge(outs):
        got = _params(outs[0])
        if min(got["E"], got["A"], got["B"]) <= 0:
            raise Fail(f"E, A and B must be positive ({what})")
        value = reference.chinchilla_objective(N, D, loss, got)
        if not value <= best.objective * (1 + _CHINCHILLA_OPTIMUM) + 1e-9:
            raise Fail(f"on {what}, your fit's Huber objective is "
                       f"{value / best.objective:.3g} times the optimum the reference reaches "
                       "(Huber on the log-loss residuals, scaled by 1/delta, from several "
                       "starts?)")
        if fresh is not None:
            new = reference.chinchilla_objective(*fresh, got)
            if not new <= ref_fresh * (1 + _FRESH) + 1e-9:
                raise Fail(f"on fresh runs from the law behind {what}, your fit's Huber loss "
                           f"is {new / ref_fresh:.3g} times the reference fit's")

    return [Call(N, D, loss)], judge


def noisy_chinchilla_data(ctx):
    """Noisy runs with two outliers from a law drawn at grading time, and fresh runs from the
    same law: ``(N, D, loss, law, (N_fresh, D_fresh, loss_fresh))``."""
    N, D = _drawn_grid(ctx)
    law = _drawn_params(ctx)
    rng = np.random.default_rng(ctx.fresh_seed())
    noise = ctx.uniform(0.003, 0.01)
    loss = reference.chinchilla_loss(N, D, law) * np.exp(rng.normal(0, noise, len(N)))
    loss[rng.choice(len(N), size=2, replace=False)] *= rng.uniform(1.2, 1.5, 2)
    n_new = 10 ** rng.uniform(np.log10(N.min()), np.log10(N.max()), 60)
    d_new = 10 ** rng.uniform(np.log10(D.min()), np.log10(D.max()), 60)
    fresh = (n_new, d_new, reference.chinchilla_loss(n_new, d_new, law)
             * np.exp(rng.normal(0, noise, 60)))
    return N, D, loss, law, fresh


def _ch_noisy(ctx):
    N, D, loss, law, fresh = noisy_chinchilla_data(ctx)
    return _chinchilla_case(N, D, loss, f"{len(N)} noisy runs with two outliers, drawn at "
                            "grading time", fresh)


CHINCHILLA = Question(
    "fit_chinchilla", "The Chinchilla fit (Approach 3)", [
        Check("recovers planted parameters from noise-free data (the published grid and law); "
              "keeps the rules (N, D and loss unchanged)", 1, _ch_planted,
              hint="fit (log A, log B, log E, alpha, beta) with log L = logsumexp(log A - alpha "
                   "log N, log B - beta log D, log E); start from a grid"),
        Check("reaches the optimum of the Huber objective on noisy runs with outliers drawn at "
              "grading time (law, grid, noise) and predicts fresh runs as well as the reference "
              "fit", 2, _ch_noisy),
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
