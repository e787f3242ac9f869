"""Context managers that leave a user's model exactly as they gave it, also under Ctrl-C.

The library's promise (DESIGN.md section 10): no function leaves a model changed, not its
weights, buffers, gradients, ``requires_grad`` flags, train/eval mode or hooks, also when the
function raises or is interrupted by an asynchronous ``KeyboardInterrupt``.

Two rules make that hold under a real Ctrl-C, which Python delivers between any two bytecodes:

1. Every guard takes its snapshot (its restore point) *before* it changes anything, and its
   ``__exit__`` restores from the snapshot whatever happened in between (a half-done
   ``model.eval()``, a hook registered but not yet recorded, parameters left swapped by an
   interrupted ``torch.func.functional_call``).
2. Restoration cannot be cut in half by a second interrupt. While a guard is active on the main
   thread, SIGINT goes to `_on_sigint`, which looks at the interrupted frame: inside a guard's
   ``__enter__`` or ``__exit__`` (or anything they call) the interrupt is *deferred*, i.e.
   recorded and raised as soon as that method has finished; anywhere else it is passed to the
   handler that was installed before (normally Python's, which raises ``KeyboardInterrupt``).
   Guards are classes, not generators, so that ``__exit__`` is the first frame that runs when a
   ``with`` block ends: there is no window between the block and the protected code.

On other threads nothing is deferred (Python runs signal handlers on the main thread only), and
if SIGINT is ignored or left at the system default no handler is installed.
"""

from __future__ import annotations

import signal
import threading

import torch
from torch import nn

__all__ = [
    "eval_mode",
    "frozen_parameters",
    "removing_hooks",
    "restored_parameters",
    "restored_tensors",
    "training_modes",
]


# --------------------------------------------------------------------------------------------
# Deferring SIGINT while a guard snapshots or restores


class _Shield:
    """Process-wide state of the SIGINT handler that guards install (main thread only)."""

    depth = 0  # guards currently active on the main thread
    previous = None  # the handler our handler replaced (callable)
    installed = False
    pending = None  # the signal number of a deferred interrupt, or None


def _protected(frame) -> bool:
    while frame is not None:
        if frame.f_code in _PROTECTED:
            return True
        frame = frame.f_back
    return False


def _on_sigint(signum, frame):
    """Defer the interrupt inside a guard's enter/exit; otherwise behave as the old handler."""
    if _protected(frame) or _Shield.previous is None:
        _Shield.pending = signum
        return
    _Shield.previous(signum, frame)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _acquire() -> None:
    """Install `_on_sigint` for the outermost guard (on the main thread, if SIGINT is handled)."""
    if not _main_thread():
        return
    if _Shield.depth == 0:
        current = signal.getsignal(signal.SIGINT)
        if callable(current) and current is not _on_sigint:
            _Shield.pending = None
            _Shield.previous = signal.signal(signal.SIGINT, _on_sigint)
            _Shield.installed = True
    _Shield.depth += 1


def _deliver() -> None:
    """Hand a deferred interrupt to the handler we replaced (Python's raises KeyboardInterrupt)."""
    signum, _Shield.pending = _Shield.pending, None
    if signum is None:
        return
    previous = _Shield.previous
    if callable(previous) and previous is not _on_sigint:
        previous(signum, None)
    else:
        raise KeyboardInterrupt


def _release() -> None:
    """Uninstall the handler with the outermost guard; deliver a deferred interrupt now."""
    if not _main_thread():
        return
    _Shield.depth -= 1
    if _Shield.depth == 0 and _Shield.installed:
        if signal.getsignal(signal.SIGINT) is _on_sigint:
            signal.signal(signal.SIGINT, _Shield.previous)
        _Shield.installed = False
        try:
            _deliver()
        finally:
            _Shield.previous = None
    else:
        _deliver()


# --------------------------------------------------------------------------------------------
# What a guard snapshots


def _hook_dicts(module: nn.Module):
    return [(name, value) for name, value in vars(module).items()
            if "hooks" in name and isinstance(value, dict)]


class _Structure:
    """The cheap structural state of a model: per module its train/eval flag, the objects in its
    parameter, buffer and submodule slots and its hook dicts; per parameter ``requires_grad``
    and the ``.grad`` object. Restoring puts back exactly these (no values are copied)."""

    def __init__(self, model: nn.Module, *, everything: bool = True):
        modules = list(model.modules())
        self.modes = [(m, m.training) for m in modules]
        self.everything = everything
        if not everything:
            return
        self.slots = [(m, dict(m._parameters), dict(m._buffers), dict(m._modules))
                      for m in modules]
        self.hooks = [(d, dict(d)) for m in modules for _, d in _hook_dicts(m)]
        params = {id(p): p for m in modules for p in m._parameters.values() if p is not None}
        self.params = [(p, p.requires_grad, p.grad) for p in params.values()]

    def restore(self) -> None:
        for module, training in self.modes:
            if module.training != training:
                module.training = training
        if not self.everything:
            return
        for module, params, buffers, children in self.slots:
            for now, saved in ((module._parameters, params), (module._buffers, buffers),
                               (module._modules, children)):
                if now.keys() != saved.keys() or any(now[k] is not v for k, v in saved.items()):
                    now.clear()
                    now.update(saved)
        for live, saved in self.hooks:
            if live.keys() != saved.keys():
                live.clear()
                live.update(saved)
        for p, requires_grad, grad in self.params:
            if p.requires_grad != requires_grad:
                p.requires_grad_(requires_grad)
            if p.grad is not grad:
                p.grad = grad


class _Guard:
    """Base class: ``__enter__`` snapshots, then applies its change; ``__exit__`` restores. Both
    run with SIGINT deferred (subclasses override `_snapshot`, `_apply`, `_restore`, never
    ``__enter__``/``__exit__``, which are the protected code)."""

    def _snapshot(self) -> None:  # pragma: no cover - overridden
        pass

    def _apply(self) -> None:
        pass

    def _restore(self) -> None:  # pragma: no cover - overridden
        pass

    def _value(self):
        return None

    def __enter__(self):
        self._entered = False
        _acquire()
        snapshotted = False
        try:
            self._snapshot()
            snapshotted = True
            self._apply()
            value = self._value()
        except BaseException:
            try:
                if snapshotted:
                    self._restore()
            finally:
                _release()
            raise
        self._entered = True
        if _Shield.pending is not None and _main_thread():  # interrupted while entering
            try:
                _deliver()
            except BaseException:  # undo, then let the interrupt through
                self._entered = False
                try:
                    self._restore()
                finally:
                    _release()
                raise
        return value

    def __exit__(self, *exc_info) -> bool:
        if not getattr(self, "_entered", False):  # never entered (or undone while entering)
            return False
        self._entered = False
        try:
            self._restore()
        finally:
            _release()
        return False

    #: For a function that cannot wrap its body in ``with`` (``guard.start()`` as the first
    #: statement of a ``try`` whose ``finally`` starts with ``guard.stop()``): the same code.
    start = __enter__
    stop = __exit__


_PROTECTED = {_Guard.__enter__.__code__, _Guard.__exit__.__code__}


# --------------------------------------------------------------------------------------------
# The guards


class eval_mode(_Guard):  # noqa: N801 - used as a function: `with eval_mode(model):`
    """Put every submodule in eval mode; on exit restore each module's own ``training`` flag and
    the model's structure (parameter/buffer slots, hooks, ``requires_grad``, ``.grad``)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def _snapshot(self):
        self.state = _Structure(self.model)

    def _apply(self):
        self.model.eval()

    def _restore(self):
        self.state.restore()

    def _value(self):
        return self.model


class training_modes(_Guard):  # noqa: N801
    """Restore each submodule's ``training`` flag on exit (for functions that train a model and
    may switch modes, so that a mixed-mode model comes back mixed)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def _snapshot(self):
        self.state = _Structure(self.model, everything=False)

    def _restore(self):
        self.state.restore()

    def _value(self):
        return self.model


class removing_hooks(_Guard):  # noqa: N801
    """Collect hook handles in the yielded list and remove every one on exit.

    With ``model`` given, also restore the hook dicts of all its submodules to their state at
    entry, which removes a hook whose handle never reached the list (an interrupt between
    ``register_forward_hook`` and ``handles.append``).
    """

    def __init__(self, model: nn.Module | None = None):
        self.model = model

    def _snapshot(self):
        self.handles: list = []
        self.state = None if self.model is None else _Structure(self.model)

    def _restore(self):
        for handle in self.handles:
            handle.remove()
        if self.state is not None:
            self.state.restore()

    def _value(self):
        return self.handles


class frozen_parameters(_Guard):  # noqa: N801
    """Turn off ``requires_grad`` on every parameter; restore each flag on exit. Input
    gradients then build no graph for weight gradients (faster, less memory)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def _snapshot(self):
        self.state = _Structure(self.model)

    def _apply(self):
        for p in self.model.parameters():
            if p.requires_grad:
                p.requires_grad_(False)

    def _restore(self):
        self.state.restore()


class restored_tensors(_Guard):  # noqa: N801
    """Snapshot the values of some tensors (copies) and copy them back bitwise on exit."""

    def __init__(self, tensors):
        self.tensors = list(tensors)

    def _snapshot(self):
        self.saved = [t.detach().clone() for t in self.tensors]

    def _restore(self):
        with torch.no_grad():
            for tensor, value in zip(self.tensors, self.saved):
                tensor.copy_(value)

    def _value(self):
        return self.tensors


class restored_parameters(_Guard):  # noqa: N801
    """Snapshot parameters, buffers, ``requires_grad`` flags and ``.grad``; restore them bitwise
    on exit (values copied back into the same tensors), also after an exception or a
    KeyboardInterrupt. The model's structure and modes are restored as by `eval_mode`."""

    def __init__(self, model: nn.Module):
        self.model = model

    def _snapshot(self):
        self.state = _Structure(self.model)
        self.params = [(p, p.detach().clone(), None if p.grad is None else p.grad.detach().clone())
                       for p, _, _ in self.state.params]
        self.buffers = [(b, b.detach().clone()) for _, _, buffers, _ in self.state.slots
                        for b in buffers.values() if b is not None]

    def _restore(self):
        self.state.restore()
        with torch.no_grad():
            for param, value, grad in self.params:
                param.copy_(value)
                if grad is not None:
                    param.grad.copy_(grad)
            for buffer, value in self.buffers:
                buffer.copy_(value)

    def _value(self):
        return self.model
