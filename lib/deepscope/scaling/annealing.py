"""The loss curve as a function of the learning-rate schedule (Tissue et al. 2024).

Tissue, Wang, Yang, Wang & Zhou (2024), *Scaling Law with Learning Rate Annealing*, model the loss
after s steps of any schedule eta_1..eta_s (as multiples of the peak rate) as

    L(s) = L0 + A * S1^(-alpha) - C * S2,

with the forward area S1 = sum_{i<=s} eta_i (how far training has moved) and the annealing area
S2 = sum_{i<=s} m_i, m_i = lambda m_{i-1} + (eta_{i-1} - eta_i) (how much the rate has been
lowered, with a momentum lambda ~ 0.999 so the benefit of a decay arrives gradually). Fitted on
two schedules (constant and cosine), it predicts others, e.g. warmup-stable-decay.

`loss_curve` trains a model under a schedule with `deepscope.train.fit` on fresh samples and
records the loss every few steps: the data the law is fitted to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import huber
from threadpoolctl import threadpool_limits
from torch import nn

from .. import train
from .._checks import check_float, check_int, check_module
from ._validate import as_array, check_delta, enough_points, same_length
from .schedules import scheduled_adam

__all__ = [
    "AnnealingLaw", "DECAY_GRID", "annealing_areas", "annealing_loss", "fit_annealing_law",
    "loss_curve", "schedule_rates",
]


class AnnealingLaw(NamedTuple):
    """Parameters of L(s) = L0 + A S1^-alpha - C S2, the annealing momentum the areas are
    computed with, and the fit's objective."""

    L0: float
    A: float
    alpha: float
    C: float
    decay: float = 0.999
    objective: float = 0.0

    def predict(self, lrs, steps) -> np.ndarray:
        """Return the law's loss after each of ``steps`` (1-based, (k,)) of schedule ``lrs``."""
        S1, S2 = annealing_areas(lrs, decay=self.decay)
        steps = np.asarray(steps, dtype=int)
        return annealing_loss(S1[steps - 1], S2[steps - 1], self)


#: Annealing momenta `fit_annealing_law` chooses from when ``decay=None``.
DECAY_GRID = (0.9, 0.95, 0.98, 0.99, 0.995, 0.999)


def annealing_areas(lrs, *, decay: float = 0.999) -> tuple[np.ndarray, np.ndarray]:
    """Return the forward area S1 and the annealing area S2 after each step of a schedule.

    Args:
        lrs: learning rates of steps 1..T as multiples of the peak rate, shape (T,), >= 0.
        decay: the momentum lambda of the annealing area, in [0, 1).

    Returns:
        S1, S2, each of shape (T,): S1[s-1] = sum_{i<=s} eta_i, S2[s-1] = sum_{i<=s} m_i with
        m_i = decay m_{i-1} + (eta_{i-1} - eta_i) and eta_0 = eta_1 (Tissue et al. 2024, eq. 1).
    """
    fn = "annealing_areas"
    eta = as_array(lrs, "lrs", fn, positive=False)
    if np.any(eta < 0):
        raise ValueError(f"{fn}: `lrs` must be >= 0, got {eta.min():g} (min)")
    decay = check_float(decay, "decay", fn, nonnegative=True)
    if decay >= 1:
        raise ValueError(f"{fn}: `decay` must be in [0, 1), got {decay}")
    drops = np.diff(eta, prepend=eta[0]) * -1.0
    m = np.empty_like(eta)
    momentum = 0.0
    for i, drop in enumerate(drops):
        momentum = decay * momentum + drop
        m[i] = momentum
    return np.cumsum(eta), np.cumsum(m)


def annealing_loss(S1, S2, params) -> np.ndarray:
    """Return L0 + A S1^-alpha - C S2 for areas of shape (n,); ``params`` is an `AnnealingLaw` or
    a sequence starting (L0, A, alpha, C)."""
    fn = "annealing_loss"
    S1 = as_array(S1, "S1", fn)
    S2 = as_array(S2, "S2", fn, positive=False)
    same_length(fn, S1=S1, S2=S2)
    L0, A, alpha, C = tuple(params)[:4]
    return L0 + A * S1 ** -alpha - C * S2


def _objective(theta, S1, S2, log_y, delta):
    with np.errstate(over="ignore", invalid="ignore"):
        l0, a, alpha, c = np.exp(theta[0]), np.exp(theta[1]), theta[2], np.exp(theta[3])
        power = a * S1 ** -alpha
        pred = l0 + power - c * S2
    if np.any(pred <= 0) or not np.all(np.isfinite(pred)):
        return 1e10, np.zeros(4)
    r = np.log(pred) - log_y
    slope = np.clip(r, -delta, delta) / pred
    grad = np.array([(slope * l0).sum(), (slope * power).sum(),
                     (slope * -power * np.log(S1)).sum(), (slope * -c * S2).sum()])
    return float(huber(delta, r).sum()), grad


def fit_annealing_law(curves: Sequence[tuple], *, decay: float | None = None,
                      delta: float = 1e-3) -> AnnealingLaw:
    """Fit L(s) = L0 + A S1^-alpha - C S2 to loss curves of one or more schedules.

    Minimises sum Huber_delta(log L_pred - log L_obs) over all points of all curves with L-BFGS
    from a small grid of starts (L0, A, C > 0 by construction). With ``decay=None`` the
    annealing momentum lambda is chosen from `DECAY_GRID` by the same objective (Tissue et al.
    2024 use 0.999 for runs of tens of thousands of steps; short runs need a shorter memory).

    Args:
        curves: sequence of (lrs, steps, losses): the schedule's rates for steps 1..T (T,) as
            multiples of the peak, the 1-based steps at which the loss was measured (k,), and
            the losses (k,).
        decay: the annealing momentum lambda of `annealing_areas`, or None to choose it.
        delta: Huber threshold on log residuals.

    Returns:
        An `AnnealingLaw` (L0, A, alpha, C, decay, objective).
    """
    fn = "fit_annealing_law"
    delta = check_delta(delta, fn)
    if not len(curves):
        raise ValueError(f"{fn}: `curves` must hold at least one (lrs, steps, losses) triple")
    checked = []
    for lrs, steps, losses in curves:
        steps = as_array(steps, "steps", fn).astype(int)
        losses = as_array(losses, "losses", fn)
        same_length(fn, steps=steps, losses=losses)
        if steps.max() > len(np.atleast_1d(lrs)):
            raise ValueError(f"{fn}: `steps` must be <= the schedule's length "
                             f"{len(np.atleast_1d(lrs))}, got {steps.max()}")
        checked.append((lrs, steps, losses))
    enough_points(sum(len(c[2]) for c in checked), 4, fn)
    decays = DECAY_GRID if decay is None else (decay,)
    with threadpool_limits(limits=1, user_api="blas"):
        fits = [_fit_one(checked, d, delta) for d in decays]
    return min(fits, key=lambda f: f.objective)


def _fit_one(curves, decay, delta) -> AnnealingLaw:
    S1s, S2s = [], []
    for lrs, steps, _ in curves:
        S1, S2 = annealing_areas(lrs, decay=decay)
        S1s.append(S1[steps - 1])
        S2s.append(S2[steps - 1])
    S1, S2 = np.concatenate(S1s), np.concatenate(S2s)
    y = np.concatenate([c[2] for c in curves])
    if np.any(S1 <= 0):
        raise ValueError("fit_annealing_law: the forward area must be > 0 where the loss is "
                         "measured (a schedule that starts at 0 needs its first steps skipped)")
    best = None
    for frac in (0.5, 0.9):
        for alpha in (0.3, 0.6, 1.0):
            for c_scale in (1e-4, 1e-2):
                l0 = frac * y.min()
                a = max(y[np.argmin(S1)] - l0, 1e-3) * S1.min() ** alpha
                start = np.array([np.log(l0), np.log(a), alpha, np.log(c_scale * y.mean())])
                res = minimize(_objective, start, jac=True, args=(S1, S2, np.log(y), delta),
                               method="L-BFGS-B",
                               options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-12})
                if best is None or res.fun < best.fun:
                    best = res
    l0, a, alpha, c = best.x
    return AnnealingLaw(float(np.exp(l0)), float(np.exp(a)), float(alpha), float(np.exp(c)),
                        float(decay), float(best.fun))


class _FreshBatches:
    """An iterable yielding ``count`` fresh minibatches each time it is iterated (one "epoch" of
    `train.fit` is then ``count`` optimizer steps on never-seen samples)."""

    def __init__(self, sample, batch_size, count, seed):
        self.sample, self.batch_size, self.count, self.seed = sample, batch_size, count, seed

    def __iter__(self):
        x, y = self.sample(self.batch_size * self.count, self.seed)
        self.seed += 1
        for i in range(self.count):
            yield x[i * self.batch_size:(i + 1) * self.batch_size], \
                y[i * self.batch_size:(i + 1) * self.batch_size]


def loss_curve(
    model: nn.Module,
    sample: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
    evaluate: Callable[[nn.Module], float],
    schedule: Callable[[int], float],
    steps: int,
    *,
    lr: float = 0.05,
    batch_size: int = 128,
    eval_every: int = 20,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Train ``model`` in place for ``steps`` Adam steps whose rate is ``lr * schedule(t)``, on
    fresh samples, and return the steps (k,) after which ``evaluate(model)`` was recorded and
    those losses (k,), every ``eval_every`` steps (k = steps // eval_every)."""
    fn = "loss_curve"
    check_module(model, fn)
    steps = check_int(steps, "steps", fn)
    eval_every = check_int(eval_every, "eval_every", fn)
    if steps % eval_every:
        raise ValueError(f"{fn}: `steps` ({steps}) must be a multiple of `eval_every` "
                         f"({eval_every})")
    batches = _FreshBatches(sample, check_int(batch_size, "batch_size", fn), eval_every, seed)
    recorded = []
    train.fit(model, batches, epochs=steps // eval_every, progress=False,
              optimizer=scheduled_adam(lr, schedule),
              callback=lambda epoch, m, history: recorded.append(float(evaluate(m))))
    return np.arange(1, len(recorded) + 1) * eval_every, np.array(recorded)


def schedule_rates(schedule: Callable[[int], float], steps: int) -> np.ndarray:
    """Return the multipliers schedule(0..steps-1): the rates of steps 1..steps, shape (steps,)."""
    return np.array([schedule(t) for t in range(check_int(steps, "steps", "schedule_rates"))])

