"""The library's warning classes, so that users can filter them by name.

- `ConvergenceWarning`: an iterative method (power iteration, Lanczos, a fit's optimiser)
  stopped before its stopping rule was met; its result may be far from the answer.
- `IdentifiabilityWarning`: the data cannot determine a fitted model's parameters (too few
  distinct points, a direction never varied, an ill-conditioned Jacobian at the optimum).
- `CacheWarning`: a checkpoint cache could not be used as asked (an invalid checkpoint was
  retrained, a checkpoint could not be written); the result is still correct.
"""

from __future__ import annotations


class ConvergenceWarning(RuntimeWarning):
    """An iterative method stopped before meeting its tolerance (the result is not trusted)."""


class IdentifiabilityWarning(RuntimeWarning):
    """The data cannot identify a fit's parameters (the fitted values are not trusted)."""


class CacheWarning(UserWarning):
    """A checkpoint cache was bypassed (invalid file retrained, or the write failed)."""
