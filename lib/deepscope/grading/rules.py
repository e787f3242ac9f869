"""The rules a graded function must keep, observed around one call in the sandbox.

Every assignment notebook states them: a graded function leaves what it is given as it found it
(tensors, arrays, dicts, a model's parameters, buffers, ``requires_grad`` flags and train/eval
mode), removes every hook it registers, and neither draws from nor reseeds the global random
number generators (torch's, NumPy's legacy one, Python's ``random``) unless its question says so.

`snapshot` records that state before the call and `changes` names what differs after it, as
plain strings the grader's judge turns into a failure message (`checks.expect_rules`). Only the
standard library, NumPy and torch are imported here: this module runs inside the sandbox.
"""

from __future__ import annotations

import inspect
import random

import numpy as np
import torch
from torch import nn

#: The kinds of change `changes` reports, in the order a message lists them.
KINDS = ("inputs", "hooks", "rng")
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")
_MAX_LEAVES = 2000


def _argument_names(fn, args, kwargs) -> list[tuple[str, object]]:
    """Pair each argument with the name the function gives it (``argument 2`` if unknown)."""
    try:
        bound = inspect.signature(fn).bind_partial(*args, **kwargs)
        names = list(bound.arguments.items())
        if len(names) == len(args) + len(kwargs):
            return [(f"`{k}`", v) for k, v in names]
    except (TypeError, ValueError):
        pass
    return ([(f"argument {i + 1}", a) for i, a in enumerate(args)]
            + [(f"`{k}`", v) for k, v in kwargs.items()])


def _leaves(value, where: str, out: list, depth: int = 0) -> None:
    """Collect ``(where, kind, object)`` for everything mutable inside an argument."""
    if depth > 4 or len(out) > _MAX_LEAVES:
        return
    if isinstance(value, torch.Tensor):
        out.append((where, "tensor", value))
    elif isinstance(value, np.ndarray):
        out.append((where, "array", value))
    elif isinstance(value, nn.Module):
        out.append((where, "module", value))
    elif isinstance(value, dict):
        out.append((where, "dict", value))
        for key, item in value.items():
            _leaves(item, f"{where}[{key!r}]", out, depth + 1)
    elif isinstance(value, list):
        out.append((where, "list", value))
        for i, item in enumerate(value):
            _leaves(item, f"{where}[{i}]", out, depth + 1)
    elif isinstance(value, tuple):
        for i, item in enumerate(value):
            _leaves(item, f"{where}[{i}]", out, depth + 1)


def _tensor_state(t: torch.Tensor):
    flag = t.requires_grad
    t = torch.Tensor.detach(t)
    return (tuple(t.shape), t.dtype, t.device, t.clone(), flag)


def _module_state(module: nn.Module) -> dict:
    return {
        "tensors": {name: _tensor_state(t) for name, t in
                    [*module.named_parameters(), *module.named_buffers()]},
        "requires_grad": {name: p.requires_grad for name, p in module.named_parameters()},
        "training": {name or "(the model)": m.training for name, m in module.named_modules()},
        "hooks": {name or "(the model)": sum(len(getattr(m, h, {}) or {}) for h in _HOOK_DICTS)
                  for name, m in module.named_modules()},
    }


def _rng_state() -> dict:
    state = {"torch": torch.random.get_rng_state().clone(),
             "numpy": np.random.get_state(legacy=False),
             "random": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch.cuda"] = [s.clone() for s in torch.cuda.get_rng_state_all()]
    return state


def _global_hooks() -> int:
    module = nn.modules.module
    return sum(len(getattr(module, name, {}) or {}) for name in _GLOBAL_HOOKS)


def snapshot(fn, args, kwargs) -> dict:
    """Record the state of a call's arguments and of the global RNGs and hooks."""
    leaves: list = []
    for name, value in _argument_names(fn, args, kwargs):
        _leaves(value, name, leaves)
    states = []
    for where, kind, obj in leaves:
        if kind in ("tensor", "array"):
            state = _tensor_state(obj) if kind == "tensor" else (obj.shape, obj.dtype, obj.copy())
        elif kind == "module":
            state = _module_state(obj)
        elif kind == "dict":
            state = {k: v for k, v in obj.items()}
        else:
            state = list(obj)
        states.append((where, kind, obj, state))
    return {"leaves": states, "rng": _rng_state(), "global_hooks": _global_hooks()}


def _tensor_change(before, after) -> str:
    shape, dtype, device, values, flag = before
    if (tuple(after.shape), after.dtype, after.device) != (shape, dtype, device):
        return (f"changed from shape {shape}, {dtype} on {device} to shape "
                f"{tuple(after.shape)}, {after.dtype} on {after.device}")
    if after.requires_grad != flag:
        return (f"had its requires_grad flag changed to {after.requires_grad} (work on a copy: "
                "x.detach().requires_grad_())")
    now = torch.Tensor.detach(after)
    if now.is_floating_point() or now.is_complex():
        same = bool(((now == values) | (now.isnan() & values.isnan())).all())
    else:
        same = torch.equal(now, values)
    return "" if same else "changed in place"


def _module_changes(where: str, before: dict, module: nn.Module) -> list[str]:
    found = []
    now = dict([*module.named_parameters(), *module.named_buffers()])
    for name, state in before["tensors"].items():
        if name not in now:
            found.append(f"{where}: its tensor {name} was removed")
        elif (text := _tensor_change(state, now[name])) and "requires_grad" not in text:
            found.append(f"{where}: its tensor {name} {text}")
    for name, flag in before["requires_grad"].items():
        param = dict(module.named_parameters()).get(name)
        if param is not None and param.requires_grad != flag:
            found.append(f"{where}: requires_grad of {name} changed from {flag} to "
                         f"{param.requires_grad}")
    modes = {name or "(the model)": m.training for name, m in module.named_modules()}
    changed = [name for name, flag in before["training"].items() if modes.get(name, flag) != flag]
    if changed:
        mode = "train" if modes[changed[0]] else "eval"
        found.append(f"{where}: left in {mode} mode (it came in "
                     f"{'eval' if mode == 'train' else 'train'} mode; restore it)")
    return found


def _hook_changes(where: str, before: dict, module: nn.Module) -> list[str]:
    found = []
    now = {name or "(the model)": sum(len(getattr(m, h, {}) or {}) for h in _HOOK_DICTS)
           for name, m in module.named_modules()}
    for name, count in now.items():
        extra = count - before["hooks"].get(name, 0)
        if extra > 0:
            layer = where if name == "(the model)" else f"`{where.strip('`')}.{name}`"
            found.append(f"{extra} hook(s) left on {layer} (keep the handle that "
                         "register_forward_hook returns and call handle.remove(), in a finally)")
    return found


def changes(before: dict) -> dict[str, list[str]]:
    """Return what a call changed: ``{"inputs": [...], "hooks": [...], "rng": [...]}``."""
    found: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for where, kind, obj, state in before["leaves"]:
        if kind == "tensor":
            if (text := _tensor_change(state, obj)):
                found["inputs"].append(f"{where} {text}")
        elif kind == "array":
            shape, dtype, values = state
            if obj.shape != shape or obj.dtype != dtype or not np.array_equal(obj, values,
                                                                               equal_nan=True):
                found["inputs"].append(f"{where} changed in place")
        elif kind == "module":
            found["inputs"].extend(_module_changes(where, state, obj))
            found["hooks"].extend(_hook_changes(where, state, obj))
        elif kind == "dict":
            if set(obj) != set(state) or any(obj[k] is not v for k, v in state.items()):
                found["inputs"].append(f"{where} (a dict) had entries added, removed or "
                                       "replaced")
        elif kind == "list" and (len(obj) != len(state)
                                 or any(a is not b for a, b in zip(obj, state))):
            found["inputs"].append(f"{where} (a list) changed")
    if _global_hooks() > before["global_hooks"]:
        found["hooks"].append("a global module hook was left registered")
    rng = before["rng"]
    if not torch.equal(torch.random.get_rng_state(), rng["torch"]):
        found["rng"].append("torch's global generator (torch.manual_seed, or torch.randn/rand/"
                            "randint/randperm without generator=)")
    if "torch.cuda" in rng and any(not torch.equal(a, b) for a, b in
                                   zip(torch.cuda.get_rng_state_all(), rng["torch.cuda"])):
        found["rng"].append("torch's CUDA generator")
    if not _same_numpy_state(np.random.get_state(legacy=False), rng["numpy"]):
        found["rng"].append("NumPy's global generator (np.random.seed or np.random.* functions; "
                            "use np.random.default_rng(seed))")
    if random.getstate() != rng["random"]:
        found["rng"].append("Python's random module")
    return found


def _same_numpy_state(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            _same_numpy_state(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    return a == b
