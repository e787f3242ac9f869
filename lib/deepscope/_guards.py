"""Context managers that leave a user's model exactly as they gave it.

The library's promise (DESIGN.md section 3): no function leaves a model changed, not its weights,
not its train/eval mode, not its hooks, also when the function raises or is interrupted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode and restore each one's own ``training`` flag on exit."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


@contextmanager
def removing_hooks() -> Iterator[list]:
    """Collect hook handles in the yielded list and remove every one on exit."""
    handles: list = []
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def restored_parameters(model: nn.Module) -> Iterator[nn.Module]:
    """Snapshot parameters, buffers, ``requires_grad`` flags and ``.grad``; restore them bitwise on
    exit, also after an exception or a KeyboardInterrupt."""
    params = [
        (p, p.detach().clone(), p.requires_grad, None if p.grad is None else p.grad.clone())
        for p in model.parameters()
    ]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield model
    finally:
        with torch.no_grad():
            for param, value, requires_grad, grad in params:
                param.copy_(value)
                param.requires_grad_(requires_grad)
                param.grad = grad
            for buffer, value in buffers:
                buffer.copy_(value)
