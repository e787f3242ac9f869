"""A training recipe that reaches the terminal phase of training on the book's small data.

Papyan et al. (2020) trained for hundreds of epochs past zero training error with SGD, momentum,
weight decay and a decaying learning rate. At notebook scale the same ingredients work when the
gradient is exact: full-batch gradient descent with momentum and weight decay, a cosine decay of
the learning rate, and batch normalisation in the network. (A pilot found that a plain ReLU MLP
with minibatch SGD, or with this recipe but without batch norm, stalls before collapsing.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .. import train as _train
from .._checks import check_float, check_int, check_module

__all__ = ["fit_terminal_phase"]


def fit_terminal_phase(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    steps: int = 1000,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-3,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    callback: Callable | None = None,
    progress: bool = True,
    desc: str = "terminal phase",
) -> _train.History:
    """Train with full-batch gradient descent, momentum, weight decay and a cosine-decayed
    learning rate (`deepscope.train.fit` with ``batch_size=None``: one epoch is one step).

    Args:
        model: the classifier, trained in place on its device (its mode is restored).
        data: ``(x, y)`` training tensors, (N, ...) and (N,).
        steps: gradient steps (= epochs of `fit`), >= 1.
        lr: initial learning rate, decayed to 0 along a cosine over ``steps``
            (``torch.optim.lr_scheduler.CosineAnnealingLR``).
        momentum, weight_decay: of ``torch.optim.SGD`` (weight decay on every parameter).
        test: optional held-out ``(x, y)`` evaluated after each step (costly; usually None).
        callback: called as ``callback(epoch, model, history)`` after each step, e.g. a
            `deepscope.collapse.CollapseTracker`; return True to stop.
        progress, desc: the progress bar.

    Returns:
        The `deepscope.train.History` of the run.
    """
    fn = "fit_terminal_phase"
    check_module(model, fn)
    steps = check_int(steps, "steps", fn)
    lr = check_float(lr, "lr", fn, positive=True)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr,
        momentum=check_float(momentum, "momentum", fn, nonnegative=True),
        weight_decay=check_float(weight_decay, "weight_decay", fn, nonnegative=True),
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)

    def after_step(epoch, net, history):
        schedule.step()
        return callback(epoch, net, history) if callback is not None else None

    return _train.fit(model, data, test=test, epochs=steps, optimizer=optimizer,
                      batch_size=None, callback=after_step, progress=progress, desc=desc)
