"""Power laws with an irreducible term, L(x) = c + a * x^(-b), fitted robustly in log space.

A power law is a straight line in log-log space only when there is nothing it tends to: with an
irreducible term c > 0 the curve bends towards c, and a straight-line fit of log L on log x then
underestimates the exponent b (the classic bias of log-log regression). `fit_power_law` fits the
three parameters directly, as Hoffmann et al. (2022) fit their joint law: Huber loss on the
residual of log L, L-BFGS from several starting points.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _identify
from ._lse import fit_lse, lse_jacobian, lse_residuals
from ._validate import as_array, check_delta, same_length

__all__ = ["PowerLawFit", "power_law", "fit_power_law", "power_law_starts"]


class PowerLawFit(NamedTuple):
    """A fitted power law L(x) = c + a * x^(-b); c is 0 when fitted without irreducible term."""

    c: float
    a: float
    b: float
    objective: float  # sum of Huber losses of the log residuals at the optimum
    n_starts: int = 1
    n_at_best: int = 1  # starts that reached the best objective (a check of the search)
    stderr: dict | None = None  # name -> asymptotic standard error (see `fit_power_law`)

    def predict(self, x) -> np.ndarray:
        """Return c + a * x^(-b) at ``x`` (array of shape (n,))."""
        return power_law(x, self.c, self.a, self.b)


def power_law(x, c: float, a: float, b: float) -> np.ndarray:
    """Evaluate L(x) = c + a * x^(-b) at positive ``x`` (shape (n,)); return shape (n,)."""
    x = as_array(x, "x", "power_law")
    return c + a * x ** (-b)


def power_law_starts(x: np.ndarray, y: np.ndarray, irreducible: bool = True) -> np.ndarray:
    """Return the default starting points of `fit_power_law` as rows (log a, [log c,] b).

    Exponents b in {0.1, 0.3, 1, 3}; with an irreducible term c in {0.01, 0.5, 0.9} * min(y);
    a then makes the law pass through the point of smallest x. Shape (12, 3) or (4, 2).
    """
    i = int(np.argmin(x))
    rows = []
    for b in (0.1, 0.3, 1.0, 3.0):
        for frac in (0.01, 0.5, 0.9) if irreducible else (0.0,):
            c = frac * y.min()
            a = max(y[i] - c, 0.1 * y[i]) * x[i] ** b
            rows.append((np.log(a), np.log(c), b) if irreducible else (np.log(a), b))
    return np.array(rows)


def fit_power_law(
    x,
    y,
    irreducible: bool = True,
    *,
    delta: float = 1e-3,
    starts=None,
    progress: bool = False,
) -> PowerLawFit:
    """Fit L(x) = c + a * x^(-b) (or a * x^(-b) without ``irreducible``) to points (x, y).

    Minimises sum_i Huber_delta(log(c + a x_i^(-b)) - log y_i) with L-BFGS from several starts
    (Hoffmann et al. 2022, Approach 3, applied to one variable); a, c > 0 by construction.

    Args:
        x, y: positive arrays of shape (n,) with at least 3 distinct x values (2 without the
            irreducible term); 6 or more (2 per parameter) for a fit the residuals can check.
        irreducible: fit the constant c (else c = 0 and the fit is a line in log-log space).
        delta: Huber threshold on log residuals (1e-3: essentially absolute loss).
        starts: rows (log a, log c, b) (or (log a, b)); default `power_law_starts`.
        progress: show a progress bar over the starts.

    Returns:
        A `PowerLawFit` (c, a, b, objective, n_starts, n_at_best, stderr). ``stderr`` maps
        ``"c"``, ``"a"``, ``"b"`` to asymptotic standard errors of the Huber M-estimator
        (Gaussian log-noise of robustly estimated scale; see `deepscope.scaling._identify`);
        they describe noise, not a wrong law: use `bootstrap` for intervals.

    Raises:
        ValueError: fewer distinct x values than parameters (e.g. all x equal).

    Warns:
        IdentifiabilityWarning: fewer than 2 distinct x values per parameter, a Jacobian at
        the optimum so ill-conditioned that the parameters trade off against each other, or
        an exponent whose +-2 standard errors include 0.
    """
    fn = "fit_power_law"
    x, y = as_array(x, "x", fn), as_array(y, "y", fn)
    same_length(fn, x=x, y=y)
    k = 3 if irreducible else 2
    levels = _identify.check_levels(x, "x", k, fn, f"{k} parameters")
    delta = check_delta(delta, fn)
    if starts is None:
        starts = power_law_starts(x, y, irreducible)
    starts = np.atleast_2d(np.asarray(starts, dtype=np.float64))
    if starts.shape[1] != k:
        raise ValueError(f"{fn}: `starts` must have {k} columns, got shape {starts.shape}")
    log_x = [np.log(x), None] if irreducible else [np.log(x)]
    result = fit_lse(log_x, np.log(y), starts, delta=delta, progress=progress, desc=fn)
    theta = result.theta
    c = float(np.exp(theta[1])) if irreducible else 0.0
    a, b = float(np.exp(theta[0])), float(theta[-1])
    _identify.check_points_per_parameter(levels, k, fn, "x values")
    names = ["a", "c", "b"] if irreducible else ["a", "b"]
    _identify.check_conditioning(lse_jacobian(theta, log_x, centred=True), names, fn)
    se = _identify.standard_errors(lse_jacobian(theta, log_x),
                                   lse_residuals(theta, log_x, np.log(y)), delta)
    stderr = {"a": a * se[0], "b": float(se[-1]), "c": c * se[1] if irreducible else 0.0}
    _identify.check_exponents({"b": b}, stderr, fn)
    return PowerLawFit(c, a, b, result.objective, result.n_starts, result.n_at_best,
                       {k_: float(v) for k_, v in stderr.items()})

