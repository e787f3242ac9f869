"""IsoFLOP analysis, Hoffmann et al. (2022) Approach 2: the best model size at each budget.

Train models of several sizes N with the same compute C each (so on D = C / (6 N) tokens). Along
such an IsoFLOP profile the final loss is U-shaped in log N: too small a model cannot use the
compute, too large a one sees too few tokens. A parabola in log N through each profile locates the
optimum N_opt(C); a line through log N_opt against log C gives the scaling exponent a in
N_opt ~ C^a (and D_opt ~ C^(1-a)). Hoffmann et al. found a = 0.49; Approach 3's law predicts
a = beta / (alpha + beta).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from .._checks import check_int
from .._warnings import IdentifiabilityWarning
from . import _identify
from ._validate import as_array, same_length
from .bootstrap import BootstrapResult, percentile_intervals
from .chinchilla import FLOP_PER_PARAMETER_TOKEN, ComputeOptimal

__all__ = ["IsoFLOPProfile", "IsoFLOPFit", "isoflop_profiles", "fit_isoflop_optima",
           "bootstrap_isoflop"]


class IsoFLOPProfile(NamedTuple):
    """One compute budget: its runs, the parabola loss = c2 u^2 + c1 u + c0 (u = ln N) and the
    optimum it implies (NaN when the parabola opens downwards)."""

    C: float  # the budget (geometric mean of the group's FLOP)
    N: np.ndarray  # (k,) model sizes, increasing
    loss: np.ndarray  # (k,) their final losses
    coef: np.ndarray  # (3,) c2, c1, c0
    N_opt: float
    D_opt: float  # C / (6 N_opt)
    loss_opt: float  # the parabola's minimum
    interior: bool  # N_opt lies within [min N, max N]

    def predict(self, N) -> np.ndarray:
        """Return the parabola's loss at sizes ``N`` (shape (m,))."""
        return np.polyval(self.coef, np.log(as_array(N, "N", "IsoFLOPProfile.predict")))


class IsoFLOPFit(NamedTuple):
    """Power laws through the optima: N_opt = k_N C^a and D_opt = k_D C^b."""

    a: float
    b: float
    k_N: float
    k_D: float
    n_budgets: int
    stderr: dict | None = None  # "a", "b": least-squares standard error of the slope (NaN for
    #                             2 budgets: a line through 2 points has no residual)

    def predict(self, C) -> ComputeOptimal:
        """Return the `ComputeOptimal` (N, D) these laws give at budgets ``C``."""
        C = as_array(C, "C", "IsoFLOPFit.predict")
        return ComputeOptimal(self.k_N * C**self.a, self.k_D * C**self.b)


def _groups(C: np.ndarray, rtol: float) -> list[np.ndarray]:
    """Indices of runs whose budgets agree within ``rtol`` (relative), in increasing C."""
    order = np.argsort(C)
    groups, current = [], [order[0]]
    for i in order[1:]:
        if C[i] <= C[current[0]] * (1 + rtol):
            current.append(i)
        else:
            groups.append(np.array(current))
            current = [i]
    groups.append(np.array(current))
    return groups


def isoflop_profiles(N, loss, C, *, rtol: float = 0.02) -> list[IsoFLOPProfile]:
    """Group runs by compute budget and fit a parabola in ln N to each group's losses.

    Args:
        N: model sizes (n,); loss: final losses (n,); C: each run's training FLOP (n,), e.g.
            6 N D or the budget it was assigned. Runs whose C agree within ``rtol`` form a budget.
        rtol: relative tolerance that groups budgets (rounding D to whole tokens moves 6 N D).

    Returns:
        One `IsoFLOPProfile` per budget with at least 3 distinct sizes, in increasing C
        (least-squares parabola, as Hoffmann et al. 2022, Approach 2).

    Warns:
        IdentifiabilityWarning: a budget with fewer than 3 sizes is skipped; one with exactly 3
        or 4 has a parabola that (nearly) interpolates its points, so nothing checks that the
        profile is a parabola at all (Hoffmann et al. trained about 9 sizes per budget; use 5+).
    """
    fn = "isoflop_profiles"
    N, loss, C = as_array(N, "N", fn), as_array(loss, "loss", fn), as_array(C, "C", fn)
    same_length(fn, N=N, loss=loss, C=C)
    if not 0 <= rtol < 1:
        raise ValueError(f"{fn}: `rtol` must be in [0, 1), got {rtol}")
    profiles, skipped, few = [], [], []
    for idx in _groups(C, rtol):
        sizes = len(np.unique(N[idx]))
        budget = float(np.exp(np.mean(np.log(C[idx]))))
        if sizes < 3:
            skipped.append(f"{budget:.3g}")
            continue
        if sizes < 5:
            few.append(f"{budget:.3g} ({sizes} sizes)")
        order = idx[np.argsort(N[idx])]
        u = np.log(N[order])
        coef = np.polyfit(u, loss[order], 2)
        if coef[0] > 0:
            u_opt = -coef[1] / (2 * coef[0])
            n_opt = float(np.exp(u_opt))
            loss_opt = float(np.polyval(coef, u_opt))
            interior = bool(u[0] <= u_opt <= u[-1])
        else:
            n_opt, loss_opt, interior = float("nan"), float("nan"), False
        profiles.append(IsoFLOPProfile(budget, N[order], loss[order], coef, n_opt,
                                       budget / (FLOP_PER_PARAMETER_TOKEN * n_opt), loss_opt,
                                       interior))
    if skipped:
        _identify.warn(f"{fn}: budgets C = {', '.join(skipped)} have fewer than 3 distinct sizes "
                       "and were skipped (a parabola needs 3)")
    if few:
        _identify.warn(f"{fn}: budgets C = {', '.join(few)} have fewer than 5 sizes: each "
                       "parabola (nearly) interpolates its points, so nothing checks its shape "
                       "(use 5 or more sizes per budget)")
    return profiles


def fit_isoflop_optima(profiles: list[IsoFLOPProfile], *, interior_only: bool = True
                       ) -> IsoFLOPFit:
    """Fit N_opt = k_N C^a and D_opt = k_D C^b through the profiles' optima (least squares in
    log-log space; Hoffmann et al. 2022, Approach 2). Since D_opt = C / (6 N_opt), b = 1 - a.

    Args:
        profiles: from `isoflop_profiles`.
        interior_only: use only optima inside each profile's range of sizes (an optimum outside
            it is an extrapolation of the parabola).

    Returns:
        An `IsoFLOPFit` (a, b, k_N, k_D, n_budgets, stderr). Needs at least 2 usable budgets;
        ``stderr`` holds the least-squares standard error of a (= that of b) from the scatter
        of the optima about the line; `bootstrap_isoflop` gives an interval that also carries
        the uncertainty of each optimum.

    Warns:
        IdentifiabilityWarning: only 2 usable budgets (the line interpolates them: no error
        estimate is possible).
    """
    fn = "fit_isoflop_optima"
    usable = [p for p in profiles if np.isfinite(p.N_opt) and (p.interior or not interior_only)]
    if len(usable) < 2:
        raise ValueError(f"{fn}: need at least 2 budgets with a usable optimum, got {len(usable)} "
                         f"of {len(profiles)} (widen the range of sizes per budget)")
    a, b, log_kn, log_kd, se = _line_through_optima(usable)
    if len(usable) == 2:
        _identify.warn(f"{fn}: only 2 budgets with a usable optimum: the line through them has "
                       "no residual, so its exponent comes without an error estimate")
    return IsoFLOPFit(a, b, float(np.exp(log_kn)), float(np.exp(log_kd)), len(usable),
                      {"a": se, "b": se})


def _line_through_optima(usable):
    log_c = np.log([p.C for p in usable])
    (a, log_kn), residual, *_ = np.polyfit(log_c, np.log([p.N_opt for p in usable]), 1,
                                           full=True)
    b, log_kd = np.polyfit(log_c, np.log([p.D_opt for p in usable]), 1)
    n = len(usable)
    spread = float(((log_c - log_c.mean()) ** 2).sum())
    rss = float(residual[0]) if len(residual) else 0.0
    se = float(np.sqrt(rss / (n - 2) / spread)) if n > 2 and spread > 0 else float("nan")
    return float(a), float(b), float(log_kn), float(log_kd), se


def bootstrap_isoflop(
    N, loss, C, *, n_boot: int = 200, ci: float = 0.95, seed: int = 0, rtol: float = 0.02,
    interior_only: bool = True, progress: bool = False,
) -> BootstrapResult:
    """Return a residual-bootstrap interval of the IsoFLOP exponents a (N_opt ~ C^a) and b.

    The design (the sizes trained at each budget) is kept fixed, as it was chosen, not
    sampled: each replicate adds residuals drawn with replacement from all profiles' parabola
    residuals (rescaled by sqrt(k / (k - 3)) for the 3 fitted coefficients of a k-point
    profile) to the fitted parabolas, refits every profile and the line through the optima
    (Efron & Tibshirani 1993, sec. 9.5, bootstrapping residuals). Replicates with fewer than 2
    usable optima are dropped and counted.

    Args:
        N, loss, C: the runs (n,), as for `isoflop_profiles`.
        n_boot: replicates; ci: coverage of the percentile intervals; seed: resampling seed.
        rtol, interior_only: as in `isoflop_profiles` and `fit_isoflop_optima`.
        progress: show a progress bar over the replicates.

    Returns:
        `BootstrapResult` with samples and intervals of ``a`` and ``b``; ``samples`` also holds
        ``dropped``, the number of replicates that had no usable line (a 1-element array).

    Warns:
        IdentifiabilityWarning: more than 10% of the replicates had no usable line.
    """
    fn = "bootstrap_isoflop"
    n_boot = check_int(n_boot, "n_boot", fn, minimum=2)
    if not 0 < ci < 1:
        raise ValueError(f"{fn}: `ci` must be in (0, 1), got {ci}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IdentifiabilityWarning)
        profiles = isoflop_profiles(N, loss, C, rtol=rtol)
    if not profiles:
        raise ValueError(f"{fn}: no budget has 3 or more sizes")
    fitted = [np.polyval(p.coef, np.log(p.N)) for p in profiles]
    pooled = np.concatenate([
        (p.loss - f) * np.sqrt(len(p.N) / (len(p.N) - 3)) if len(p.N) > 3 else 0 * f
        for p, f in zip(profiles, fitted)])
    rng = np.random.default_rng(seed)
    rows, dropped = [], 0
    for _ in tqdm(range(n_boot), desc=fn, disable=not progress, leave=False):
        usable = []
        for p, f in zip(profiles, fitted):
            u = np.log(p.N)
            coef = np.polyfit(u, f + rng.choice(pooled, size=len(u)), 2)
            if coef[0] <= 0:
                continue
            u_opt = -coef[1] / (2 * coef[0])
            if interior_only and not u[0] <= u_opt <= u[-1]:
                continue
            n_opt = float(np.exp(u_opt))
            usable.append(p._replace(N_opt=n_opt, D_opt=p.C / (FLOP_PER_PARAMETER_TOKEN * n_opt)))
        if len(usable) < 2:
            dropped += 1
            continue
        a, b, *_ = _line_through_optima(usable)
        rows.append((a, b))
    if len(rows) < 2:
        raise ValueError(f"{fn}: {dropped} of {n_boot} replicates had fewer than 2 usable "
                         "optima; the profiles do not locate their optima")
    if dropped > 0.1 * n_boot:
        _identify.warn(f"{fn}: {dropped} of {n_boot} replicates had fewer than 2 usable optima "
                       "and were dropped; the interval is conditional on the rest")
    samples = {"a": np.array([r[0] for r in rows]), "b": np.array([r[1] for r in rows])}
    result = percentile_intervals(samples, ci)
    result.samples["dropped"] = np.array([dropped])
    return result
