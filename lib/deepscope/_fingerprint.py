"""Fingerprints of training configurations: everything that determines a training run's result,
code included, reduced to a sha256 (what `deepscope.train.cached_fit` keys its cache on).

A value is fingerprinted by what it *is*, never by where it lives in memory:

- tensors and arrays by dtype, shape and bytes (parameters also by ``requires_grad``);
- functions, lambdas included, by their bytecode (instructions, constants, names), their default
  arguments, the values in their closure and the values of the globals they read, recursively,
  so that editing a lambda's body or a helper it calls changes the key;
- classes by the bytecode of their methods (an edit to ``forward`` changes the key) and objects,
  modules and callable instances by their class and the fingerprints of their attributes;
- code of the standard library and of installed packages (torch, numpy...) by name and package
  version, not by bytecode; deepscope's own code by a digest of its source files.

What cannot be seen from Python (an open file, a lock, a generator, an object implemented in C)
raises `Unfingerprintable`, naming where it was found; `cached_fit` then asks for ``key=``.
"""

from __future__ import annotations

import dis
import enum
import functools
import hashlib
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["Unfingerprintable", "fingerprint"]

_SCALARS = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device,
            torch.Size, torch.layout, torch.memory_format, range, slice, type(Ellipsis))
_GLOBAL_OPS = {"LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL"}


class Unfingerprintable(TypeError):
    """A value whose state Python cannot see, so that no key derived from it would be sound."""

    def __init__(self, path: str, value):
        self.path, self.kind = path, type(value).__qualname__
        super().__init__(f"{path} is a {type(value).__module__}.{self.kind}, whose state cannot "
                         "be fingerprinted")


def _root(module_name: str | None) -> str:
    return (module_name or "").split(".")[0]


@functools.cache
def _deepscope_sources() -> str:
    """The sha256 of this package's source files: its own code counts as one versioned unit."""
    digest = hashlib.sha256()
    package = Path(__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _library_version(module_name: str | None) -> str | None:
    """Return a version tag for code of the standard library, an installed package or deepscope
    itself, else None (code to fingerprint by its bytecode: the user's, a notebook's)."""
    root = _root(module_name)
    if not root or root == "__main__":
        return None
    if root == "deepscope":
        return f"deepscope-{_deepscope_sources()}"
    if root in sys.stdlib_module_names or root == "builtins":
        return f"python{sys.version_info[0]}.{sys.version_info[1]}"
    module = sys.modules.get(root)
    origin = getattr(module, "__file__", None) or ""
    if "site-packages" in origin or "dist-packages" in origin:
        return f"{root}-{getattr(module, '__version__', 'unversioned')}"
    return None


def _defined_in_python(cls: type) -> bool:
    """True for ``object`` and classes written in Python (a notebook's, a .py file's)."""
    if cls is object or cls.__module__ == "__main__":
        return True
    if cls.__module__ in sys.builtin_module_names:
        return False
    origin = getattr(sys.modules.get(cls.__module__), "__file__", None) or ""
    return not origin.endswith((".so", ".pyd"))


class _Fingerprinter:
    def __init__(self, opaque: bool):
        self.opaque = opaque  # True: unfingerprintable values become their type (with key=)
        self.done: dict[int, str] = {}
        self.active: dict[int, int] = {}
        self.alive: list = []  # keeps every visited object alive, so ids stay unique

    def __call__(self, value, path: str) -> str:
        if isinstance(value, _SCALARS):
            return f"{type(value).__name__}:{value!r}"
        key = id(value)
        if key in self.done:
            return self.done[key]
        if key in self.active:
            return f"cycle:{self.active[key]}"
        self.active[key] = len(self.active)
        self.alive.append(value)
        try:
            token = self._compute(value, path)
        except Unfingerprintable:
            if not self.opaque:
                raise
            token = f"opaque:{type(value).__module__}.{type(value).__qualname__}"
        finally:
            del self.active[key]
        digest = hashlib.sha256(token.encode()).hexdigest()
        self.done[key] = digest
        return digest

    # ----------------------------------------------------------------------------------------

    def _compute(self, value, path: str) -> str:
        if isinstance(value, torch.Tensor):
            return self._tensor(value, path)
        if isinstance(value, np.ndarray | np.generic):
            array = np.ascontiguousarray(value)
            if array.dtype == object:
                raise Unfingerprintable(path, value)
            digest = hashlib.sha256(array.tobytes()).hexdigest()
            return f"ndarray:{array.dtype}:{array.shape}:{digest}"
        if isinstance(value, enum.Enum):
            return f"enum:{self._class(type(value), path)}:{value.name}"
        if isinstance(value, tuple | list):
            items = ",".join(self(v, f"{path}[{i}]") for i, v in enumerate(value))
            return f"{self._container(value, path)}:[{items}]"
        if isinstance(value, dict):
            items = sorted(f"{self(k, f'{path} key')}={self(v, f'{path}[{k!r}]')}"
                           for k, v in value.items())
            return f"{self._container(value, path)}:{{{','.join(items)}}}"
        if isinstance(value, types.MappingProxyType):
            return f"mappingproxy:{self(dict(value), path)}"
        if isinstance(value, set | frozenset):
            items = sorted(self(v, f"{path} item") for v in value)
            return f"{type(value).__name__}:{{{','.join(items)}}}"
        if isinstance(value, types.ModuleType):
            return f"module:{value.__name__}:{_library_version(value.__name__)}"
        if isinstance(value, type):
            return self._class(value, path)
        if isinstance(value, types.FunctionType):
            return self._function(value, path)
        if isinstance(value, types.CodeType):
            return f"code:{self._code(value, path, {})}"
        if isinstance(value, types.MethodType):
            return (f"method:{self(value.__func__, f'{path}.__func__')}:"
                    f"{self(value.__self__, f'{path}.__self__')}")
        if isinstance(value, types.BuiltinFunctionType | types.BuiltinMethodType):
            owner = getattr(value, "__self__", None)
            bound = "" if owner is None or isinstance(owner, types.ModuleType) else \
                self(owner, f"{path}.__self__")
            name = f"{getattr(value, '__module__', None)}.{value.__qualname__}"
            return f"builtin:{name}:{_library_version(value.__module__)}:{bound}"
        if isinstance(value, functools.partial):
            return (f"partial:{self(value.func, f'{path}.func')}:{self(value.args, path)}:"
                    f"{self(value.keywords, path)}")
        if isinstance(value, torch.Generator):
            return f"generator:{value.device}:{self(value.get_state(), path)}"
        if isinstance(value, torch.optim.Optimizer):
            return (f"optimizer:{self._class(type(value), path)}:"
                    f"{self(value.state_dict(), f'{path}.state_dict()')}")
        if isinstance(value, nn.Module):
            return self._module(value, path)
        return self._object(value, path)

    def _tensor(self, t: torch.Tensor, path: str) -> str:
        if t.layout != torch.strided or t.device.type == "meta":
            raise Unfingerprintable(path, t)
        data = t.detach().cpu().contiguous()
        raw = data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b""
        flag = f":grad={t.requires_grad}" if isinstance(t, nn.Parameter) else ""
        return f"tensor:{t.dtype}:{tuple(t.shape)}{flag}:{hashlib.sha256(raw).hexdigest()}"

    def _container(self, value, path: str) -> str:
        kind = type(value)
        if kind in (tuple, list, dict):
            return kind.__name__
        return f"{kind.__name__}:{self._class(kind, path)}"

    def _code(self, code: types.CodeType, path: str, globals_: dict) -> str:
        parts = [code.co_code.hex(), repr(code.co_names), repr(code.co_varnames),
                 repr(code.co_freevars), repr(code.co_cellvars),
                 repr((code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount,
                       code.co_flags))]
        for const in code.co_consts:
            parts.append(self._code(const, path, globals_) if isinstance(const, types.CodeType)
                         else self(const, f"{path} constant"))
        instructions = list(dis.get_instructions(code))
        for ins, after in zip(instructions, instructions[1:] + [None]):
            if ins.opname not in _GLOBAL_OPS or ins.argval not in globals_:
                continue
            name, value = ins.argval, globals_[ins.argval]
            parts.append(f"{name}={self(value, f'{path} global {name}')}")
            if (isinstance(value, types.ModuleType) and _library_version(value.__name__) is None
                    and after is not None and after.opname in ("LOAD_ATTR", "LOAD_METHOD")
                    and hasattr(value, after.argval)):  # helper.fn(...): a user module's member
                attr = f"{name}.{after.argval}"
                member = getattr(value, after.argval)
                parts.append(f"{attr}={self(member, f'{path} global {attr}')}")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    def _function(self, fn: types.FunctionType, path: str) -> str:
        name = f"{fn.__module__}.{fn.__qualname__}"
        version = _library_version(fn.__module__)
        if version is not None and _root(fn.__module__) != "deepscope":
            return f"function:{name}:{version}"
        cells = []
        for var, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
            try:
                contents = cell.cell_contents
            except ValueError:
                cells.append(f"{var}=<empty>")
                continue
            cells.append(f"{var}={self(contents, f'{path} closure {var}')}")
        code = version or self._code(fn.__code__, path, fn.__globals__)  # deepscope: version
        return (f"function:{name}:{code}:"
                f"{self(fn.__defaults__, f'{path} defaults')}:"
                f"{self(fn.__kwdefaults__, f'{path} defaults')}:{','.join(cells)}")

    def _class(self, cls: type, path: str) -> str:
        name = f"{cls.__module__}.{cls.__qualname__}"
        version = _library_version(cls.__module__)
        if version is not None:
            return f"class:{name}:{version}"
        parts = [name]
        for base in cls.__mro__:
            if base is object:
                continue
            if _library_version(base.__module__) is not None:
                parts.append(f"{base.__module__}.{base.__qualname__}")
                continue
            for attr, member in sorted(vars(base).items()):
                code_like = (types.FunctionType, staticmethod, classmethod, property)
                if attr.startswith("_abc_") or (attr.startswith("__") and attr.endswith("__")
                                                and not isinstance(member, code_like)):
                    continue  # bookkeeping (annotations, dataclass fields, ABC caches)
                if isinstance(member, staticmethod | classmethod):
                    member = member.__func__
                if isinstance(member, property):
                    member = (member.fget, member.fset, member.fdel)
                parts.append(f"{attr}={self(member, f'{path} ({base.__qualname__}.{attr})')}")
        return f"class:{hashlib.sha256('|'.join(parts).encode()).hexdigest()}"

    def _module(self, module: nn.Module, path: str) -> str:
        parts = [self._class(type(module), path)]
        for attr, value in sorted(vars(module).items()):
            where = f"{path}.{attr}"
            if "hooks" in attr and isinstance(value, dict):  # keys are process-wide counters
                parts.append(f"{attr}=" + ",".join(self(v, f"{where}[]") for v in value.values()))
            elif attr == "training":
                continue  # fit and evaluate set the mode they need
            else:
                parts.append(f"{attr}={self(value, where)}")
        return "module:" + "|".join(parts)

    def _object(self, value, path: str) -> str:
        cls = type(value)
        has_slots = any("__slots__" in vars(base) for base in cls.__mro__ if base is not object)
        if not all(map(_defined_in_python, cls.__mro__)) or (cls.__dictoffset__ == 0
                                                              and not has_slots):
            raise Unfingerprintable(path, value)  # state held in C, invisible from Python
        state = dict(getattr(value, "__dict__", {}))
        for slots in (getattr(base, "__slots__", ()) for base in cls.__mro__):
            for slot in (slots,) if isinstance(slots, str) else slots:
                if slot not in ("__dict__", "__weakref__") and hasattr(value, slot):
                    state[slot] = getattr(value, slot)
        return f"object:{self._class(cls, path)}:{self(state, path)}"


def fingerprint(value, path: str = "value", *, opaque: bool = False) -> str:
    """Return the sha256 (hex) of what ``value`` is: data, code and state (module docstring).

    Raises `Unfingerprintable` naming the part (``path``...) that cannot be seen, unless
    ``opaque`` (then such parts count by their type only).
    """
    return _Fingerprinter(opaque)(value, path)
