"""IsoFLOP analysis, Hoffmann et al. (2022) Approach 2: the best model size at each budget.

Train models of several sizes N with the same compute C each (so on D = C / (6 N) tokens). Along
such an IsoFLOP profile the final loss is U-shaped in log N: too small a model cannot use the
compute, too large a one sees too few tokens. A parabola in log N through each profile locates the
optimum N_opt(C); a line through log N_opt against log C gives the scaling exponent a in
N_opt ~ C^a (and D_opt ~ C^(1-a)). Hoffmann et al. found a = 0.49; Approach 3's law predicts
a = beta / (alpha + beta).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._validate import as_array, same_length
from .chinchilla import FLOP_PER_PARAMETER_TOKEN, ComputeOptimal

__all__ = ["IsoFLOPProfile", "IsoFLOPFit", "isoflop_profiles", "fit_isoflop_optima"]


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
    """
    fn = "isoflop_profiles"
    N, loss, C = as_array(N, "N", fn), as_array(loss, "loss", fn), as_array(C, "C", fn)
    same_length(fn, N=N, loss=loss, C=C)
    if not 0 <= rtol < 1:
        raise ValueError(f"{fn}: `rtol` must be in [0, 1), got {rtol}")
    profiles = []
    for idx in _groups(C, rtol):
        if len(np.unique(N[idx])) < 3:
            continue
        order = idx[np.argsort(N[idx])]
        u = np.log(N[order])
        coef = np.polyfit(u, loss[order], 2)
        budget = float(np.exp(np.mean(np.log(C[idx]))))
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
        An `IsoFLOPFit` (a, b, k_N, k_D, n_budgets). Needs at least 2 usable budgets.
    """
    fn = "fit_isoflop_optima"
    if not isinstance(profiles, (list, tuple)) or not all(
            isinstance(p, IsoFLOPProfile) for p in profiles):
        raise TypeError(f"{fn}: `profiles` must be a list of IsoFLOPProfile (from "
                        f"isoflop_profiles), got {type(profiles).__name__}")
    for i, p in enumerate(profiles):
        as_array([p.C, *([p.N_opt, p.D_opt] if np.isfinite(p.N_opt) else [])],
                 f"profiles[{i}]", fn)  # budgets and optima: finite and > 0 (NaN: no optimum)
    usable = [p for p in profiles if np.isfinite(p.N_opt) and (p.interior or not interior_only)]
    if len(usable) < 2:
        raise ValueError(f"{fn}: `profiles`: need at least 2 budgets with a usable optimum, got "
                         f"{len(usable)} of {len(profiles)} (widen the range of sizes per budget)")
    log_c = np.log([p.C for p in usable])
    a, log_kn = np.polyfit(log_c, np.log([p.N_opt for p in usable]), 1)
    b, log_kd = np.polyfit(log_c, np.log([p.D_opt for p in usable]), 1)
    return IsoFLOPFit(float(a), float(b), float(np.exp(log_kn)), float(np.exp(log_kd)),
                      len(usable))
