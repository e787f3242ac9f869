"""Models as researchers have them: any callable forward, and an adapter for its output.

Attribution, landscape and training functions call ``model(x)`` and need one tensor out of it
(class scores for saliency, the input of ``loss_fn`` elsewhere). Real models return dicts
(``{"logits": ..., "features": ...}``), tuples ``(logits, aux)`` or library objects such as a
Hugging Face ``ModelOutput``; researchers call them through other methods (``model.classify``)
or closures. The ``output=`` argument says which tensor to use:

- ``None``: the model returns the tensor itself;
- a string: a key (``out["logits"]``), or an attribute for objects without keys (``out.logits``);
- an int: a position in a tuple or list (``out[0]``);
- a callable: ``output(out) -> tensor`` for anything else.

`as_module` turns a callable forward plus an adapter into an ``nn.Module`` (`Forward`) that the
rest of the library can treat like any model: when the callable is a module, or a bound method
of one (``model.classify``), that module is the wrapper's child ``root``, so eval mode, hooks
and layer names reach it. A plain function has no modules the library can see: its caller
keeps charge of train/eval mode.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

__all__ = ["Forward", "as_module", "root_module", "select_output", "check_output_adapter"]

OutputAdapter = str | int | Callable | None


def _describe(out) -> str:
    if isinstance(out, Mapping):
        return f"a {type(out).__name__} with keys {list(out)[:8]}"
    if isinstance(out, (tuple, list)):
        kinds = ", ".join(type(o).__name__ for o in out[:6])
        return f"a {type(out).__name__} of {len(out)} ({kinds})"
    return type(out).__name__


def check_output_adapter(output, fn: str) -> OutputAdapter:
    """Return ``output`` after checking it is None, a key (str), an index (int) or a callable."""
    if output is None or isinstance(output, str) or callable(output):
        return output
    if isinstance(output, numbers.Integral) and not isinstance(output, bool):
        return int(output)
    raise TypeError(f"{fn}: `output` must be None, a key (str), an index (int) or a callable "
                    f"outputs -> tensor, got {type(output).__name__}")


def select_output(out, output: OutputAdapter, fn: str) -> torch.Tensor:
    """Return the tensor that the adapter ``output`` picks from a model's outputs ``out``.

    Raises a ``TypeError``/``ValueError`` naming the function, the available keys or length,
    and what the adapter asked for, when it cannot pick a tensor.
    """
    if output is None:
        picked = out
    elif isinstance(output, str):
        if isinstance(out, Mapping) or hasattr(out, "keys"):
            try:
                picked = out[output]
            except (KeyError, TypeError, IndexError):
                raise ValueError(f"{fn}: `output` {output!r} must be a key of the model's "
                                 f"outputs, got {_describe(out)}") from None
        elif hasattr(out, output):
            picked = getattr(out, output)
        else:
            raise ValueError(f"{fn}: `output` {output!r} must be a key or attribute of the "
                             f"model's outputs, got {_describe(out)}")
    elif isinstance(output, int):
        if not isinstance(out, Sequence) or isinstance(out, (str, torch.Tensor)):
            raise TypeError(f"{fn}: `output` {output} is an index, so the model must return a "
                            f"tuple or list, got {_describe(out)}")
        if not -len(out) <= output < len(out):
            raise ValueError(f"{fn}: `output` must be an index into the model's outputs, "
                             f"got {output} for {_describe(out)}")
        picked = out[output]
    else:
        picked = output(out)
    if not isinstance(picked, torch.Tensor):
        hint = ("" if output is not None else
                "; pass `output=` (a key, an index or a function) to pick the tensor")
        what = "the model" if output is None else f"`output` {output!r}"
        raise TypeError(f"{fn}: {what} must give a tensor, got {_describe(picked)}{hint}")
    return picked


class Forward(nn.Module):
    """A callable forward ``f(x)`` followed by an output adapter, seen as an ``nn.Module``.

    Attributes: ``root`` (the module behind ``f``, a registered child, or None for a plain
    function), ``output`` (the adapter), ``fn`` (the calling function, for messages).
    """

    def __init__(self, forward: Callable, output: OutputAdapter, fn: str):
        super().__init__()
        root = forward if isinstance(forward, nn.Module) else getattr(forward, "__self__", None)
        self.root = root if isinstance(root, nn.Module) else None
        object.__setattr__(self, "_call", forward)  # not registered a second time
        self.output = output
        self.fn = fn

    def forward(self, x):
        return select_output(self._call(x), self.output, self.fn)


def as_module(model, fn: str, output: OutputAdapter = None) -> nn.Module:
    """Return ``model`` as an ``nn.Module`` whose call gives one tensor.

    An ``nn.Module`` without an adapter is returned as it is; anything else callable (a module
    with ``output=``, a bound method, a function) is wrapped in a `Forward`.
    """
    output = check_output_adapter(output, fn)
    if isinstance(model, nn.Module) and output is None:
        return model
    if isinstance(model, Forward):
        return model if output is None else Forward(model, output, fn)
    if not callable(model):
        raise TypeError(f"{fn}: `model` must be an nn.Module or a callable forward x -> "
                        f"outputs, got {type(model).__name__}")
    return Forward(model, output, fn)


def root_module(model) -> nn.Module | None:
    """Return the module whose submodules are the model's layers (None for a plain function)."""
    if isinstance(model, Forward):
        return root_module(model.root) if isinstance(model.root, Forward) else model.root
    return model if isinstance(model, nn.Module) else None
