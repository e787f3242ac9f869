"""Can the data identify a fit's parameters? Design checks, conditioning and standard errors.

A fit can reach a tiny objective and still be meaningless: a sweep that keeps D/N fixed cannot
tell the N term of the Chinchilla law from its D term, one model size cannot separate E from
A / N^alpha, and three points determine three parameters exactly, with nothing left to check
them. The fits of `deepscope.scaling` call these checks and raise `ValueError` when nothing can
be fitted, or warn with `deepscope.IdentifiabilityWarning` when the answer is not trustworthy.

Standard errors follow the asymptotics of M-estimators (Huber 1964; Huber & Ronchetti 2009,
ch. 7): for the Huber loss with threshold delta on residuals r = model - log y,

    Cov(theta) = tau^2 (J^T J)^-1,   tau^2 = E[psi(r)^2] / E[psi'(r)]^2,

with J the Jacobian of the model's log-prediction at the optimum and psi the clipped residual.
The expectations are taken under Gaussian residuals whose scale is estimated robustly (1.4826 x
the median absolute residual, corrected for the k fitted parameters), so a handful of outliers
does not inflate them; tau -> sigma for least squares (delta >> sigma) and sigma sqrt(pi / 2) in
the absolute-loss limit (delta << sigma). They describe noise, not model misspecification: use
`bootstrap` when the law may be wrong.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.special import erf

from .._warnings import IdentifiabilityWarning

#: A Jacobian whose columns (unit-normalised, exponents centred) have a condition number above
#: this leaves some combination of parameters undetermined to ~1e-4 relative: warn.
MAX_CONDITION = 1e4
#: The centred (log N, log D) design must span two directions: its smaller singular value over
#: its larger must exceed this, else N and D vary together and their terms cannot be separated.
MIN_DESIGN_SPREAD = 0.05


def warn(message: str) -> None:
    """Issue an `IdentifiabilityWarning` pointing at the user's call."""
    warnings.warn(message, IdentifiabilityWarning, stacklevel=4)


def check_levels(x: np.ndarray, name: str, k: int, fn: str, what: str) -> int:
    """Raise ``ValueError`` when ``x`` has fewer than ``k`` distinct values (``what`` cannot be
    fitted at all); return the number of distinct values."""
    levels = len(np.unique(x))
    if levels < k:
        equal = " (all equal: nothing can be fitted)" if levels == 1 else ""
        raise ValueError(f"{fn}: `{name}` must take at least {k} distinct values to fit {what}, "
                         f"got {levels}{equal}")
    return levels


def check_points_per_parameter(n_distinct: int, k: int, fn: str, what: str = "points") -> None:
    """Warn when fewer than 2 distinct points per parameter are given: the fit then nearly
    interpolates, and its residuals cannot tell a good law from a bad one."""
    if n_distinct < 2 * k:
        exact = " (it interpolates them exactly)" if n_distinct == k else ""
        warn(f"{fn}: {n_distinct} distinct {what} for {k} parameters{exact}; at least {2 * k} "
             "(2 per parameter) are needed for the residuals to check the law")


def check_chinchilla_design(log_n: np.ndarray, log_d: np.ndarray, fn: str) -> None:
    """Warn when the runs cannot separate the law's N and D terms: fewer than 3 model sizes or
    3 token counts, or (log N, log D) on one line (e.g. a fixed D/N ratio, or one IsoFLOP
    budget)."""
    for values, var, term in ((log_n, "N", "E, A and alpha"), (log_d, "D", "E, B and beta")):
        levels = len(np.unique(values))
        if levels < 3:
            warn(f"{fn}: `{var}` takes {levels} distinct value{'s' * (levels > 1)}; {term} "
                 f"cannot be separated (vary {var} over at least 3 values)")
            return
    design = np.column_stack([log_n - log_n.mean(), log_d - log_d.mean()])
    s = np.linalg.svd(design, compute_uv=False)
    spread = float(s[1] / s[0])
    if spread < MIN_DESIGN_SPREAD:
        ratio = np.exp(log_d - log_n)
        warn(f"{fn}: log N and log D lie almost on one line (spread {spread:.2g} < "
             f"{MIN_DESIGN_SPREAD}; D/N ranges {ratio.min():.3g}..{ratio.max():.3g}), so the N and "
             "D terms cannot be told apart; vary N and D independently (several compute "
             "budgets, or several token counts per size)")


def condition_number(jacobian: np.ndarray) -> float:
    """Return the condition number of ``jacobian`` (n, k) with unit-norm columns (inf if a
    column is zero or the matrix is rank deficient)."""
    norms = np.linalg.norm(jacobian, axis=0)
    if np.any(norms == 0) or not np.all(np.isfinite(jacobian)):
        return math.inf
    s = np.linalg.svd(jacobian / norms, compute_uv=False)
    return float(s[0] / s[-1]) if s[-1] > 0 else math.inf


def check_conditioning(jacobian: np.ndarray, names: list[str], fn: str) -> float:
    """Warn when the Jacobian at the optimum is ill-conditioned, naming the parameters of its
    weakest direction; return the condition number."""
    cond = condition_number(jacobian)
    if cond > MAX_CONDITION:
        norms = np.linalg.norm(jacobian, axis=0)
        norms[norms == 0] = 1.0
        _, _, vt = np.linalg.svd(jacobian / norms)
        weak = vt[-1] / np.abs(vt[-1]).max()
        involved = [n for n, w in zip(names, weak) if abs(w) > 0.2]
        what = (f"{involved[0]} is" if len(involved) == 1 else
                f"{', '.join(involved)} trade off against each other and are")
        warn(f"{fn}: the fit is ill-conditioned at its optimum (condition number {cond:.3g} > "
             f"{MAX_CONDITION:g}): {what} not determined by these data")
    return cond


def check_exponents(values: dict, stderr: dict, fn: str) -> None:
    """Warn when an exponent's standard error is so large that +-2 standard errors include 0:
    the data (with their noise) do not determine even its sign."""
    weak = [f"{k} = {v:.3g} +- {stderr[k]:.2g}" for k, v in values.items()
            if np.isfinite(stderr[k]) and 2 * stderr[k] >= abs(v)]
    if weak:
        warn(f"{fn}: {', '.join(weak)} (standard error): the data do not determine "
             f"{'this exponent' if len(weak) == 1 else 'these exponents'} (widen the range "
             "of the runs, or add runs)")


def huber_tau2(residuals: np.ndarray, delta: float, k: int) -> float:
    """Return tau^2 = E[psi^2] / E[psi']^2 of the Huber loss under Gaussian residuals whose
    scale is 1.4826 x median |r - median r|, inflated by n / (n - k) for the k fitted
    parameters (0 when n <= k)."""
    n = len(residuals)
    if n <= k:
        return math.nan
    sigma = 1.4826 * float(np.median(np.abs(residuals - np.median(residuals))))
    sigma *= math.sqrt(n / (n - k))
    if sigma == 0:
        return 0.0
    c = delta / sigma
    inside = float(erf(c / math.sqrt(2)))  # P(|r| < delta) = E[psi']
    density = math.exp(-c * c / 2) / math.sqrt(2 * math.pi)
    e_psi2 = sigma**2 * (inside - 2 * c * density) + delta**2 * (1 - inside)
    return e_psi2 / inside**2


def standard_errors(jacobian: np.ndarray, residuals: np.ndarray, delta: float) -> np.ndarray:
    """Return the standard errors (k,) of the Huber fit's parameters (NaN where the Jacobian is
    singular or no degrees of freedom are left)."""
    n, k = jacobian.shape
    tau2 = huber_tau2(residuals, delta, k)
    try:
        cov = tau2 * np.linalg.inv(jacobian.T @ jacobian)
    except np.linalg.LinAlgError:
        return np.full(k, math.nan)
    diag = np.diag(cov)
    return np.where(diag >= 0, np.sqrt(np.abs(diag)), math.nan)
