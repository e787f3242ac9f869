"""Bootstrap confidence intervals for any fit: refit on resampled data, read off percentiles.

Efron (1979). Resample the n points with replacement, refit, repeat; the spread of the refitted
parameters estimates their sampling uncertainty. Besiroglu et al. (2024) used it to show that the
confidence intervals Hoffmann et al. (2022) reported were implausibly narrow for ~400 runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from .._checks import check_int
from .._warnings import ConvergenceWarning, IdentifiabilityWarning
from ._validate import as_array, same_length

__all__ = ["BootstrapResult", "bootstrap", "percentile_intervals"]

#: Result fields that describe the search, not the law: never bootstrapped.
_NOT_PARAMETERS = {"objective", "n_starts", "n_at_best", "n_budgets"}


class BootstrapResult(NamedTuple):
    """Per-parameter bootstrap samples and percentile intervals."""

    samples: dict[str, np.ndarray]  # name -> (n_boot,) refitted values
    intervals: dict[str, tuple[float, float]]  # name -> (low, high) percentile interval
    ci: float  # the coverage, e.g. 0.95

    def contains(self, name: str, value: float) -> bool:
        """Return True when ``value`` lies in the interval of parameter ``name``."""
        low, high = self.intervals[name]
        return low <= value <= high


def _parameters(result) -> dict[str, float]:
    if hasattr(result, "_asdict"):
        items = result._asdict().items()
    elif isinstance(result, dict):
        items = result.items()
    else:
        raise TypeError("bootstrap: `fit` must return a NamedTuple or a dict of numbers, got "
                        f"{type(result).__name__}")
    return {k: float(v) for k, v in items if k not in _NOT_PARAMETERS
            and isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)}


def bootstrap(
    fit: Callable,
    *arrays,
    n_boot: int = 200,
    ci: float = 0.95,
    seed: int = 0,
    progress: bool = False,
) -> BootstrapResult:
    """Return percentile bootstrap intervals of the parameters ``fit(*arrays)`` estimates.

    Args:
        fit: a function of the arrays returning a NamedTuple (e.g. `fit_power_law`,
            `fit_chinchilla`) or a dict; its numeric fields are the parameters.
        *arrays: the data, positive arrays of equal length (n,), resampled together.
        n_boot: number of bootstrap refits.
        ci: coverage of the intervals, in (0, 1).
        seed: seed of the resampling.
        progress: show a progress bar over the refits.

    Returns:
        `BootstrapResult` (samples, intervals, ci).
    """
    fn = "bootstrap"
    if not callable(fit):
        raise TypeError(f"{fn}: `fit` must be callable, got {type(fit).__name__}")
    if not arrays:
        raise ValueError(f"{fn}: expected at least one data array, got none")
    data = [as_array(a, f"arrays[{i}]", fn, positive=False) for i, a in enumerate(arrays)]
    n = same_length(fn, **{f"arrays[{i}]": a for i, a in enumerate(data)})
    n_boot = check_int(n_boot, "n_boot", fn, minimum=2)
    if not 0 < ci < 1:
        raise ValueError(f"{fn}: `ci` must be in (0, 1), got {ci}")
    rng = np.random.default_rng(seed)
    rows, warned = [], {}
    for _ in tqdm(range(n_boot), desc=fn, disable=not progress, leave=False):
        idx = rng.integers(0, n, size=n)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", IdentifiabilityWarning)
            warnings.simplefilter("always", ConvergenceWarning)
            rows.append(_parameters(fit(*(a[idx] for a in data))))
        for w in caught:
            if issubclass(w.category, (IdentifiabilityWarning, ConvergenceWarning)):
                warned.setdefault((w.category, str(w.message).split(":")[0]), [0, w])[0] += 1
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for (category, _), (count, first) in warned.items():
        warnings.warn(f"{fn}: {count} of {n_boot} refits warned, e.g. {first.message}", category,
                      stacklevel=2)
    samples = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    return percentile_intervals(samples, ci)


def percentile_intervals(samples: dict[str, np.ndarray], ci: float) -> BootstrapResult:
    """Return the `BootstrapResult` of per-parameter ``samples`` (name -> (n_boot,)) with
    percentile intervals of coverage ``ci``."""
    tail = 100 * (1 - ci) / 2
    intervals = {k: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail)))
                 for k, v in samples.items()}
    return BootstrapResult(samples, intervals, ci)
