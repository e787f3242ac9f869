"""Learning-rate schedules as step -> factor functions, and an optimizer that follows one.

`deepscope.train.fit` calls ``optimizer.step()`` once per minibatch; `ScheduledOptimizer` wraps a
torch optimizer so that each step also advances a ``torch.optim.lr_scheduler.LambdaLR``. Hoffmann
et al. (2022) found that a cosine decay matched to the run's length matters for scaling fits:
a run cut short of its schedule (Kaplan et al. 2020's practice) overstates the loss of small D.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .._checks import check_choice, check_float, check_int

__all__ = ["lr_schedule", "ScheduledOptimizer", "scheduled_adam"]

SCHEDULES = ("constant", "cosine", "wsd")


def lr_schedule(
    kind: str, total_steps: int, *, warmup: int = 0, final: float = 0.0, decay_frac: float = 0.2
) -> Callable[[int], float]:
    """Return step -> learning-rate factor for a schedule of ``total_steps`` optimizer steps.

    All start with a linear warm-up over ``warmup`` steps. Then ``"constant"`` stays at 1;
    ``"cosine"`` decays as (1 + cos(pi t)) / 2 to ``final`` (t the fraction of post-warm-up steps
    done); ``"wsd"`` (warmup-stable-decay, Hu et al. 2024) stays at 1 and decays linearly to
    ``final`` over the last ``decay_frac`` of the steps.
    """
    fn = "lr_schedule"
    check_choice(kind, "kind", fn, SCHEDULES)
    total = check_int(total_steps, "total_steps", fn)
    warmup = check_int(warmup, "warmup", fn, minimum=0)
    final = check_float(final, "final", fn, nonnegative=True)
    decay_frac = check_float(decay_frac, "decay_frac", fn, positive=True)
    if warmup >= total:
        raise ValueError(f"{fn}: `warmup` must be < `total_steps` ({total}), got {warmup}")
    if decay_frac > 1:
        raise ValueError(f"{fn}: `decay_frac` must be in (0, 1], got {decay_frac}")
    decay_start = max(warmup, total - math.ceil(decay_frac * total))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        if kind == "cosine":
            t = min(1.0, (step - warmup) / max(1, total - warmup))
            return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t))
        if step < decay_start:
            return 1.0
        t = min(1.0, (step - decay_start) / max(1, total - decay_start))
        return 1 - (1 - final) * t

    return factor


class ScheduledOptimizer:
    """A torch optimizer whose learning rates follow ``schedule`` (step -> factor of the initial
    rate), advanced after every ``step()``; what `deepscope.train.fit` accepts as an optimizer."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Callable[[int], float]):
        self.optimizer = optimizer
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        loss = self.optimizer.step(closure)
        self.scheduler.step()
        return loss


def scheduled_adam(lr: float, schedule: Callable[[int], float], **adam_kwargs) -> Callable:
    """Return ``params -> ScheduledOptimizer(Adam(params, lr), schedule)`` for `train.fit`."""
    lr = check_float(lr, "lr", "scheduled_adam", positive=True)
    return lambda params: ScheduledOptimizer(torch.optim.Adam(params, lr=lr, **adam_kwargs),
                                             schedule)
