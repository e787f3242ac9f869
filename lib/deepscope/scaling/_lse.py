"""The fitting engine shared by power-law and Chinchilla fits: a robust fit in log space.

Both laws are sums of power-law terms, ``y = sum_k exp(c_k) * x_k^(-e_k)`` (a constant term has
no ``x_k``), so ``log y`` is the log-sum-exp of the terms' logs. Following Hoffmann et al. (2022,
Approach 3) we minimise the Huber loss of the residual in log space,

    objective(theta) = sum_i Huber_delta( LSE_k(c_k - e_k log x_ki) - log y_i ),

with L-BFGS (scipy) from a list of starting points and keep the best. Working in log space makes
the fit scale-free (a 1% miss costs the same at every loss level); Huber with a small delta makes it
robust to outliers (it is the absolute loss beyond delta).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.optimize import minimize
from scipy.special import huber
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm


class LSEFit(NamedTuple):
    """Result of `fit_lse`: the best ``theta`` and how the multi-start search went."""

    theta: np.ndarray  # (K + M,) log-coefficients, then exponents
    objective: float  # sum of Huber losses at theta
    n_starts: int  # starts tried
    n_converged: int  # starts whose L-BFGS run reported success
    n_at_best: int  # starts that reached the best objective (relative 1e-6)


def _terms(theta, log_x):
    k = len(log_x)
    n = next(len(lx) for lx in log_x if lx is not None)
    exponents = iter(theta[k:])
    rows = []
    for c, lx in zip(theta[:k], log_x):
        rows.append(np.full(n, c) if lx is None else c - next(exponents) * lx)
    return np.stack(rows), k


def lse_objective(theta, log_x, log_y, delta):
    """Return the Huber objective (a float) and its gradient (K + M,) at ``theta`` (K + M,):
    K log-coefficients, then one exponent per term with data. ``log_x`` holds one array (n,)
    per term (None for a constant term), ``log_y`` is (n,)."""
    terms, k = _terms(np.asarray(theta, dtype=np.float64), log_x)
    top = terms.max(axis=0)
    weights = np.exp(terms - top)
    total = weights.sum(axis=0)
    residual = top + np.log(total) - log_y
    softmax = weights / total
    slope = np.clip(residual, -delta, delta)  # d Huber / d residual
    # elementwise sums, not BLAS: threaded BLAS on these tiny products is slow on a busy machine
    weighted = softmax * slope
    grad_c = weighted.sum(axis=1)
    grad_e = [-(weighted[j] * lx).sum() for j, lx in enumerate(log_x) if lx is not None]
    return float(huber(delta, residual).sum()), np.concatenate([grad_c, grad_e])


def lse_jacobian(theta, log_x, *, centred: bool = False) -> np.ndarray:
    """Return the Jacobian (n, K + M) of the model's log-prediction LSE_k(c_k - e_k log x_k)
    with respect to ``theta`` (log-coefficients, then exponents). With ``centred`` the exponent
    columns use log x_k minus its mean (the parametrisation with coefficients at the data's
    geometric centre, whose conditioning does not depend on the units of x)."""
    terms, k = _terms(np.asarray(theta, dtype=np.float64), log_x)
    softmax = np.exp(terms - terms.max(axis=0))
    softmax /= softmax.sum(axis=0)
    columns = list(softmax)
    for j, lx in enumerate(log_x):
        if lx is not None:
            columns.append(-softmax[j] * (lx - lx.mean() if centred else lx))
    return np.column_stack(columns)


def lse_residuals(theta, log_x, log_y) -> np.ndarray:
    """Return the log-residuals LSE_k(c_k - e_k log x_k) - log y (n,) at ``theta``."""
    terms, _ = _terms(np.asarray(theta, dtype=np.float64), log_x)
    top = terms.max(axis=0)
    return top + np.log(np.exp(terms - top).sum(axis=0)) - log_y


def fit_lse(
    log_x: list[np.ndarray | None],
    log_y: np.ndarray,
    starts: np.ndarray,
    *,
    delta: float,
    progress: bool = False,
    desc: str = "fit",
    fixed: dict[int, float] | None = None,
) -> LSEFit:
    """Minimise `lse_objective` with L-BFGS from every row of ``starts`` (S, K + M); return the
    best run. Starts whose run ends in a non-finite objective are skipped. ``fixed`` maps
    positions of ``theta`` to values held fixed (equal L-BFGS-B bounds).

    BLAS runs single-threaded meanwhile (threadpoolctl, restored on exit): L-BFGS-B's tiny
    vector operations ran 20x slower in CPU time with two OpenBLAS threads on a busy machine."""
    with threadpool_limits(limits=1, user_api="blas"):
        bounds = None
        if fixed:
            starts = np.array(starts, dtype=np.float64)
            bounds = [(None, None)] * starts.shape[1]
            for i, value in fixed.items():
                starts[:, i] = value
                bounds[i] = (value, value)
        return _fit_lse(log_x, log_y, starts, delta, progress, desc, bounds)


#: L-BFGS-B's default stopping rule (a decrease below 2.2e-9 absolute when f < 1) is loose for
#: objectives of order 1e-3; the best starts are therefore polished with these tolerances.
_POLISH = {"maxiter": 10_000, "ftol": 1e-15, "gtol": 1e-12}
_POLISHED = 3


def _minimize(start, log_x, log_y, delta, options, bounds=None):
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return minimize(lse_objective, np.asarray(start, dtype=np.float64), jac=True,
                        args=(log_x, log_y, delta), method="L-BFGS-B", options=options,
                        bounds=bounds)


def _fit_lse(log_x, log_y, starts, delta, progress, desc, bounds=None):
    runs = []
    for start in tqdm(starts, desc=desc, disable=not progress, leave=False):
        result = _minimize(start, log_x, log_y, delta, {"maxiter": 2000}, bounds)
        if np.isfinite(result.fun) and np.all(np.isfinite(result.x)):
            runs.append(result)
    if not runs:
        raise RuntimeError("fit: every start diverged; check the data and the starting grid")
    runs.sort(key=lambda r: r.fun)
    polished = [_minimize(r.x, log_x, log_y, delta, _POLISH, bounds) for r in runs[:_POLISHED]]
    best = min((r for r in polished + runs[:1] if np.isfinite(r.fun)), key=lambda r: r.fun)
    value = float(best.fun)
    values = np.array([r.fun for r in runs])
    at_best = int(np.sum(values <= value * (1 + 1e-6) + 1e-12 * delta))
    return LSEFit(best.x, value, len(starts), sum(bool(r.success) for r in runs), max(at_best, 1))
