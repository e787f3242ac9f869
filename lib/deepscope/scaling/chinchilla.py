"""The Chinchilla law L(N, D) = E + A / N^alpha + B / D^beta: evaluate, fit, and use it.

Hoffmann et al. (2022), *Training Compute-Optimal Large Language Models*, Approach 3: N parameters
trained on D tokens reach loss L(N, D); E is the irreducible loss (the entropy of text), the other
two terms the penalties for a finite model and finite data. The fit minimises the Huber loss
(delta = 1e-3) of log L's residual, with log L written as the log-sum-exp
LSE(a - alpha log N, b - beta log D, e), A = e^a, B = e^b, E = e^e, by L-BFGS from a grid of
starts. Besiroglu et al. (2024, Epoch AI) refit Hoffmann et al.'s data this way and found
E = 1.8172, A = 482.01, B = 2085.43, alpha = 0.3478, beta = 0.3658 (`EPOCH`), unlike the published
constants (`HOFFMANN`).

With training compute C = 6 N D FLOP (a forward and backward pass cost about 6 FLOP per parameter
and token), the loss-minimising allocation has a closed form (`compute_optimal`).
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from . import _identify
from ._lse import fit_lse, lse_jacobian, lse_objective, lse_residuals
from ._validate import as_array, check_delta, same_length

__all__ = [
    "ChinchillaParams", "ChinchillaFit", "ComputeOptimal", "HOFFMANN", "EPOCH",
    "FLOP_PER_PARAMETER_TOKEN", "as_params", "chinchilla_loss", "loss_vs_params",
    "loss_vs_data", "isoflop_loss", "chinchilla_grid", "chinchilla_objective", "fit_chinchilla",
    "compute_optimal",
]

#: Training FLOP per parameter and token: C = 6 N D (Kaplan et al. 2020, Hoffmann et al. 2022).
FLOP_PER_PARAMETER_TOKEN = 6.0


class ChinchillaParams(NamedTuple):
    """Parameters of L(N, D) = E + A / N^alpha + B / D^beta."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float


class ChinchillaFit(NamedTuple):
    """Result of `fit_chinchilla`: the parameters, the objective and the search's record."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float  # sum over points of Huber_delta(log-residual) at the optimum
    n_starts: int  # starting points tried
    n_at_best: int  # starts that reached the best objective (relative 1e-6)
    stderr: dict | None = None  # name -> asymptotic standard error (see `fit_chinchilla`)

    @property
    def params(self) -> ChinchillaParams:
        """The five law parameters as `ChinchillaParams`."""
        return ChinchillaParams(self.E, self.A, self.B, self.alpha, self.beta)


class ComputeOptimal(NamedTuple):
    """Compute-optimal allocation: N parameters and D tokens (6 N D = C)."""

    N: np.ndarray | float
    D: np.ndarray | float

    @property
    def tokens_per_parameter(self):
        """D / N, the ratio Hoffmann et al. found to be about 20."""
        return self.D / self.N


#: Hoffmann et al. (2022), Approach 3, as published.
HOFFMANN = ChinchillaParams(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
#: Besiroglu et al. (2024), Epoch AI's refit of the same data (their Table 1).
EPOCH = ChinchillaParams(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)

_FIELDS = ChinchillaParams._fields


def as_params(params, fn: str = "as_params") -> ChinchillaParams:
    """Return ``params`` as `ChinchillaParams`: accepts `ChinchillaParams`, a `ChinchillaFit`,
    a mapping with keys E, A, B, alpha, beta, or a sequence or 1-D array of those 5 numbers in
    that order.
    Requires E >= 0 and A, B, alpha, beta > 0."""
    if isinstance(params, Mapping):
        missing = [k for k in _FIELDS if k not in params]
        if missing:
            raise ValueError(f"{fn}: `params` must have keys {', '.join(_FIELDS)}, "
                             f"missing {', '.join(missing)}")
        values = [params[k] for k in _FIELDS]
    elif all(hasattr(params, k) for k in _FIELDS):
        values = [getattr(params, k) for k in _FIELDS]
    elif (isinstance(params, Sequence) and not isinstance(params, str) and len(params) == 5) or (
        isinstance(params, np.ndarray) and params.shape == (5,)
    ):
        values = [v.item() if isinstance(v, np.generic) else v for v in params]
    else:
        raise TypeError(f"{fn}: `params` must be ChinchillaParams, a ChinchillaFit, a dict or 5 "
                        f"numbers (E, A, B, alpha, beta), got {type(params).__name__}")
    for name, value in zip(_FIELDS, values):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{fn}: `params.{name}` must be a real number, got "
                            f"{type(value).__name__}")
        if not np.isfinite(value) or value < 0 or (value == 0 and name != "E"):
            bound = ">= 0" if name == "E" else "> 0"
            raise ValueError(f"{fn}: `params.{name}` must be finite and {bound}, got {value}")
    return ChinchillaParams(*(float(v) for v in values))


def _out(value):
    return float(value) if np.ndim(value) == 0 else value


def chinchilla_loss(N, D, params):
    """Return L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, eq. 2).

    Args:
        N: parameters, positive, any shape; D: tokens, positive, broadcastable with N.
        params: anything `as_params` accepts.

    Returns:
        Loss with the broadcast shape of N and D (a float for scalars).
    """
    fn = "chinchilla_loss"
    p = as_params(params, fn)
    N = as_array(N, "N", fn, flat=False)
    D = as_array(D, "D", fn, flat=False)
    return _out(p.E + p.A * N ** -p.alpha + p.B * D ** -p.beta)


def loss_vs_params(N, params):
    """Return L(N) = E + A / N^alpha, the infinite-data limit of `chinchilla_loss` (the form of
    Kaplan et al. 2020's L(N), with an irreducible term). Same shape as N."""
    p = as_params(params, "loss_vs_params")
    return _out(p.E + p.A * as_array(N, "N", "loss_vs_params", flat=False) ** -p.alpha)


def loss_vs_data(D, params):
    """Return L(D) = E + B / D^beta, the infinite-model limit of `chinchilla_loss` (Kaplan et
    al. 2020's L(D), with an irreducible term). Same shape as D."""
    p = as_params(params, "loss_vs_data")
    return _out(p.E + p.B * as_array(D, "D", "loss_vs_data", flat=False) ** -p.beta)


def isoflop_loss(N, C, params):
    """Return the loss of N parameters trained with C FLOP, i.e. on D = C / (6 N) tokens: the
    IsoFLOP profile of a law. N and C positive and broadcastable."""
    fn = "isoflop_loss"
    N = as_array(N, "N", fn, flat=False)
    C = as_array(C, "C", fn, flat=False)
    return chinchilla_loss(N, C / (FLOP_PER_PARAMETER_TOKEN * N), params)


def compute_optimal(C, params) -> ComputeOptimal:
    """Return the N and D minimising L(N, D) subject to 6 N D = C (Hoffmann et al. 2022, eq. 4).

    Setting dL/dN = 0 along D = C / (6 N) gives N^(alpha + beta) = (alpha A / (beta B)) (C/6)^beta:

        N_opt = G (C/6)^(beta / (alpha + beta)),  D_opt = G^-1 (C/6)^(alpha / (alpha + beta)),
        G = (alpha A / (beta B))^(1 / (alpha + beta)).

    Args:
        C: training FLOP, positive, any shape.
        params: anything `as_params` accepts.

    Returns:
        `ComputeOptimal` (N, D) with the shape of C (floats for a scalar C).
    """
    fn = "compute_optimal"
    p = as_params(params, fn)
    half = as_array(C, "C", fn, flat=False) / FLOP_PER_PARAMETER_TOKEN
    s = p.alpha + p.beta
    G = (p.alpha * p.A / (p.beta * p.B)) ** (1 / s)
    N = G * half ** (p.beta / s)
    return ComputeOptimal(_out(N), _out(half / N))


def chinchilla_grid(kind: str = "coarse") -> np.ndarray:
    """Return starting points for `fit_chinchilla`, rows (E, A, B, alpha, beta).

    ``"full"`` is Epoch AI's grid, 4,500 starts: e = log E in {-1, -0.5, ..., 1}, a = log A and
    b = log B in {0, 5, ..., 25}, alpha and beta in {0, 0.5, ..., 2}. ``"coarse"`` (243 starts)
    takes e in {-1, 0, 1}, a, b in {0, 10, 20}, alpha, beta in {0, 0.5, 1}; on Epoch's data it
    reaches the same optimum in a few seconds.
    """
    if kind == "full":
        e, ab, ex = np.arange(-1, 1.01, 0.5), np.arange(0, 26, 5.0), np.arange(0, 2.01, 0.5)
    elif kind == "coarse":
        e, ab, ex = np.array([-1.0, 0, 1]), np.array([0.0, 10, 20]), np.array([0.0, 0.5, 1])
    else:
        raise ValueError(f"chinchilla_grid: `kind` must be 'coarse' or 'full', got {kind!r}")
    rows = [(np.exp(e_), np.exp(a), np.exp(b), al, be)
            for e_, a, b, al, be in itertools.product(e, ab, ab, ex, ex)]
    return np.array(rows)


def _theta(p: ChinchillaParams) -> np.ndarray:
    with np.errstate(divide="ignore"):  # E = 0 is allowed: e = -inf drops the constant term
        return np.array([np.log(p.A), np.log(p.B), np.log(p.E), p.alpha, p.beta])


def _start_thetas(starts, fn: str) -> np.ndarray:
    """Turn `fit_chinchilla`'s ``starts`` into rows (a, b, e, alpha, beta) of the engine."""
    if isinstance(starts, str):
        rows = chinchilla_grid(starts)
    elif isinstance(starts, Mapping) or hasattr(starts, "alpha"):
        rows = np.array([as_params(starts, fn)])
    elif isinstance(starts, Sequence) and starts and (
        isinstance(starts[0], Mapping) or hasattr(starts[0], "alpha")
    ):
        rows = np.array([as_params(s, fn) for s in starts])
    else:
        try:
            rows = np.atleast_2d(np.asarray(starts, dtype=np.float64))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{fn}: `starts` must be 'coarse', 'full', parameters or an array "
                            f"(S, 5), got {type(starts).__name__}") from err
    if rows.ndim != 2 or rows.shape[1] != 5 or len(rows) == 0:
        raise ValueError(f"{fn}: `starts` must have shape (S, 5) with S >= 1 rows "
                         f"(E, A, B, alpha, beta), got shape {rows.shape}")
    if not np.all(np.isfinite(rows)) or np.any(rows[:, 0] < 0) or np.any(rows[:, 1:3] <= 0):
        raise ValueError(f"{fn}: `starts` must be finite with E >= 0 and A, B > 0")
    # a start at E = 0 begins from a negligible constant term (e = -20)
    e = np.log(np.maximum(rows[:, 0], np.exp(-20.0)))
    return np.column_stack([np.log(rows[:, 1]), np.log(rows[:, 2]), e, rows[:, 3], rows[:, 4]])


#: Positions of the parameters in the engine's theta = (log A, log B, log E, alpha, beta).
_THETA_INDEX = {"A": 0, "B": 1, "E": 2, "alpha": 3, "beta": 4}


def _fixed_thetas(fixed, fn: str) -> dict[int, float]:
    """Turn ``fixed`` ({"E": 1.8, ...}) into {theta position: value} (logs of E, A, B)."""
    if fixed is None:
        return {}
    if not isinstance(fixed, Mapping):
        raise TypeError(f"{fn}: `fixed` must be a dict name -> value, got {type(fixed).__name__}")
    out = {}
    for name, value in fixed.items():
        if name not in _THETA_INDEX:
            raise ValueError(f"{fn}: `fixed` keys must be among {', '.join(_FIELDS)}, got {name!r}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(
            value
        ):
            raise TypeError(f"{fn}: `fixed[{name!r}]` must be a finite real number, got {value!r}")
        if name in ("E", "A", "B") and value <= 0:
            raise ValueError(f"{fn}: `fixed[{name!r}]` must be > 0, got {value}")
        out[_THETA_INDEX[name]] = float(np.log(value) if name in ("E", "A", "B") else value)
    if len(out) == 5:
        raise ValueError(f"{fn}: `fixed` holds all 5 parameters; nothing is left to fit")
    return out


def _data(N, D, loss, fn):
    N, D, loss = as_array(N, "N", fn), as_array(D, "D", fn), as_array(loss, "loss", fn)
    n = same_length(fn, N=N, D=D, loss=loss)
    return [np.log(N), np.log(D), None], np.log(loss), n


def chinchilla_objective(N, D, loss, params, *, delta: float = 1e-3) -> float:
    """Return sum_i Huber_delta(log L(N_i, D_i) - log loss_i), the objective `fit_chinchilla`
    minimises, for any parameters (e.g. to compare `HOFFMANN` and `EPOCH` on the same data).
    N, D, loss: positive arrays of shape (n,)."""
    fn = "chinchilla_objective"
    log_x, log_y, _ = _data(N, D, loss, fn)
    theta = _theta(as_params(params, fn))
    return lse_objective(theta, log_x, log_y, check_delta(delta, fn))[0]


def fit_chinchilla(
    N, D, loss, *, starts="coarse", delta: float = 1e-3, fixed: Mapping | None = None,
    progress: bool = False,
) -> ChinchillaFit:
    """Fit L(N, D) = E + A / N^alpha + B / D^beta as Hoffmann et al. (2022) Approach 3 and
    Besiroglu et al. (2024): minimise sum_i Huber_delta(LSE(a - alpha log N_i, b - beta log D_i,
    e) - log loss_i) over (a, b, e, alpha, beta) with L-BFGS from every start; keep the best.

    Args:
        N, D, loss: positive arrays of shape (n,) (parameters, tokens, final loss) with at least
            5 distinct (N, D) runs, 10 or more for a fit the residuals can check.
        starts: ``"coarse"`` (243 starts, the default) or ``"full"`` (Epoch's 4,500; minutes
            without an analytic gradient, about 20 s with ours), see `chinchilla_grid`; or one
            start / a sequence of starts in any form `as_params` accepts, or an array (S, 5).
        delta: Huber threshold on the log residuals.
        fixed: parameters held at given values, e.g. ``{"E": entropy}`` when the irreducible
            loss is known, or ``{"alpha": 0.34}``; the others are fitted (their standard errors
            assume the fixed values are exact; a fixed one's is 0).
        progress: show a progress bar over the starts.

    Returns:
        A `ChinchillaFit` (E, A, B, alpha, beta, objective, n_starts, n_at_best, stderr).
        ``stderr`` maps each parameter to its asymptotic standard error (Huber M-estimator,
        Gaussian log-noise of robustly estimated scale; `deepscope.scaling._identify`): it
        measures noise, not a wrong law; use `bootstrap` for intervals.

    Raises:
        ValueError: fewer than 5 distinct (N, D) runs.

    Warns:
        IdentifiabilityWarning: the runs cannot separate the terms (fewer than 3 sizes or 3
        token counts; N and D varied together, e.g. at a fixed D/N ratio or on one IsoFLOP
        budget), fewer than 10 distinct runs (2 per parameter), an ill-conditioned
        Jacobian at the optimum, or an exponent whose +-2 standard errors include 0.
    """
    fn = "fit_chinchilla"
    log_x, log_y, _ = _data(N, D, loss, fn)
    runs = _identify.check_levels(log_x[0] + 1j * log_x[1], "(N, D)", 5, fn, "5 parameters")
    delta = check_delta(delta, fn)
    thetas = _start_thetas(starts, fn)
    held = _fixed_thetas(fixed, fn)
    free = [i for i in range(5) if i not in held]
    _identify.check_chinchilla_design(log_x[0], log_x[1], fn)
    result = fit_lse(log_x, log_y, thetas, delta=delta, progress=progress, desc=fn, fixed=held)
    theta = result.theta
    _identify.check_points_per_parameter(runs, len(free), fn, "(N, D) runs")
    names = np.array(["A", "B", "E", "alpha", "beta"])
    _identify.check_conditioning(lse_jacobian(theta, log_x, centred=True)[:, free],
                                 list(names[free]), fn)
    se = np.zeros(5)
    se[free] = _identify.standard_errors(lse_jacobian(theta, log_x)[:, free],
                                         lse_residuals(theta, log_x, log_y), delta)
    a, b, e, alpha, beta = (float(v) for v in theta)
    A, B, E = np.exp(a), np.exp(b), np.exp(e)
    stderr = {"E": E * se[2], "A": A * se[0], "B": B * se[1], "alpha": se[3], "beta": se[4]}
    _identify.check_exponents({"alpha": alpha, "beta": beta}, stderr, fn)
    return ChinchillaFit(float(E), float(A), float(B), alpha, beta, result.objective,
                         result.n_starts, result.n_at_best,
                         {k: float(v) for k, v in stderr.items()})
