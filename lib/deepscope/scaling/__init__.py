"""Scaling laws: fit them well, replicate Chinchilla, measure your own.

- `power_law`: L(x) = c + a x^-b fitted robustly in log space (`fit_power_law`).
- `chinchilla`: L(N, D) = E + A / N^alpha + B / D^beta (`chinchilla_loss`, `fit_chinchilla` as
  Hoffmann et al. 2022 Approach 3 and Epoch AI 2024, `compute_optimal` under C = 6 N D).
- `isoflop`: Approach 2, a parabola in log N per compute budget (`isoflop_profiles`).
- `bootstrap`: percentile intervals for any fit.
- `schedules`: learning-rate schedules that `deepscope.train.fit` can follow.
- `annealing`: the schedule-aware loss-curve law of Tissue et al. (2024) and `loss_curve`.
- `sweep`: a Markov-chain language with known entropy and tiny models trained over sizes and
  token counts (`markov_sweep`, `markov_run`; `train_run` for your own models).
- `runner`: `run_sweep`, independent runs on any `concurrent.futures.Executor` (serial, process
  pools, Dask), resumable from a results folder keyed by a hash of each run.

Everything here works on numpy arrays (CPU); the sweep trains on the device it is given.
"""

from .annealing import *  # noqa: F403
from .annealing import __all__ as _annealing
from .bootstrap import *  # noqa: F403
from .bootstrap import __all__ as _bootstrap
from .chinchilla import *  # noqa: F403
from .chinchilla import __all__ as _chinchilla
from .isoflop import *  # noqa: F403
from .isoflop import __all__ as _isoflop
from .power_law import *  # noqa: F403
from .power_law import __all__ as _power_law
from .runner import *  # noqa: F403
from .runner import __all__ as _runner
from .schedules import *  # noqa: F403
from .schedules import __all__ as _schedules
from .sweep import *  # noqa: F403
from .sweep import __all__ as _sweep

__all__ = [*_power_law, *_chinchilla, *_isoflop, *_bootstrap, *_schedules, *_sweep, *_annealing,
           *_runner]
