"""How an assignment's questions are checked: `Assignment`, `Question`, `Check`, `Call`, `Fail`.

A check is built in the grader's own process: its ``build(ctx)`` makes the inputs, computes
what a correct answer must satisfy (usually with the library's reference implementation) and
returns the calls to make on the student's function with a ``judge``. The calls run in the
sandbox; the judge receives their outputs (plain tensors, arrays and numbers) and raises `Fail`
with a message the student can act on. The design every check follows is in the package's
docstring (`deepscope.grading`): the published case plus cases drawn from ``ctx`` at grading
time, estimators judged statistically, fits by the objective they reach, the notebook's rules
observed (`Call.observe`, `expect_rules`), messages without copyable expected values. Example::

    def _doubles(ctx):
        shape = (ctx.integers(2, 6), ctx.integers(1, 4))     # drawn when grading
        x = ctx.randn(*shape, seed=ctx.fresh_seed())
        def judge(outs):
            y = expect_tensor(outs[0], "the result", like=x)
            expect_close(y, 2 * x, f"the result for a {shape} input")
        return [Call(x)], judge

    Question("double", "Double a tensor", [Check("doubles a tensor", 1, _doubles)])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

#: What every answer cell may use without importing it.
DEFAULT_PREAMBLE = """\
import math
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
"""
#: Modules a submission may not import: the reference library and peer libraries.
DEFAULT_FORBIDDEN = ("deepscope", "captum", "pyhessian", "loss_landscapes")


class Fail(Exception):
    """A check failed; ``str(fail)`` is the message shown to the student."""


class Call:
    """One call of the student's function: ``Call(*args, **kwargs)``.

    Arguments are copied into the sandbox (tensors, ``nn.Module`` objects from torch, numbers).
    ``label`` names the call in timeout messages. After `differentiate`, the judge receives the
    pair ``(value, gradients)`` instead of the value.
    """

    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs
        self.label = ""
        self.grad_of: tuple[int, ...] = ()
        self.observed = False

    def differentiate(self, *positions: int) -> Call:
        """Also return the gradients of the (one-element) result with respect to the positional
        arguments at ``positions`` (computed in the sandbox: the judge gets ``(value, grads)``,
        and a result that is not differentiable fails the check)."""
        self.grad_of = tuple(int(p) for p in positions)
        return self

    def observe(self) -> Call:
        """Also report what the call changed (its inputs, hooks, the global RNGs: `rules`):
        the judge gets the pair ``(value, changes)``; check it with `expect_rules`."""
        self.observed = True
        return self


@dataclass
class CaseContext:
    """What a check builds its inputs with: the grading device, a random generator seeded for
    this check at grading time (`fresh_seed`, `integers`, `uniform`, `choice` draw the cases),
    and helpers that make seeded tensors and models.

    ``seed`` is derived from the grading seed (recorded in the report; ``deepscope grade --seed``
    repeats a grading exactly), the question and the check, so every check draws its own cases
    whatever else is graded and however many jobs run.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self):
        self.rng = np.random.default_rng(int(self.seed))

    def fresh_seed(self) -> int:
        """A seed drawn at grading time (for inputs no student can know in advance)."""
        return int(self.rng.integers(1, 2**31 - 1))

    def integers(self, low: int, high: int) -> int:
        """An integer drawn uniformly from ``low`` to ``high``, both included."""
        return int(self.rng.integers(int(low), int(high) + 1))

    def uniform(self, low: float, high: float) -> float:
        """A float drawn uniformly from [low, high)."""
        return float(self.rng.uniform(low, high))

    def choice(self, options: Sequence):
        """One of ``options``, drawn uniformly."""
        return options[int(self.rng.integers(len(options)))]

    def generator(self, seed: int) -> torch.Generator:
        """A CPU generator seeded with ``seed`` (draw on the CPU, then move: same numbers
        on every device)."""
        return torch.Generator().manual_seed(int(seed))

    def randn(self, *shape: int, seed: int, dtype=torch.float32) -> torch.Tensor:
        """Standard normal numbers of ``shape`` on the grading device, seeded."""
        return torch.randn(*shape, generator=self.generator(seed), dtype=dtype).to(self.device)

    def build(self, make: Callable[[], Any], seed: int):
        """Call ``make()`` (e.g. a model builder) with torch's generator seeded, without
        disturbing the caller's random state; move the result to the grading device."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            made = make()
        return made.to(self.device) if hasattr(made, "to") else made


Judge = Callable[[list], None]


@dataclass
class Check:
    """A named, pointed check: ``build(ctx) -> (calls, judge)``; ``hint`` follows a failure.
    ``private`` marks a check from a teacher's private file (shown to students only after the
    grades are published, e.g. on Gradescope)."""

    name: str
    points: float
    build: Callable[[CaseContext], tuple[list[Call], Judge]]
    hint: str = ""
    private: bool = False


@dataclass
class Question:
    """One graded function: its name in the notebook, a title, and the checks that score it."""

    function: str
    title: str
    checks: list[Check]
    time_limit: float = 60.0

    @property
    def points(self) -> float:
        """The question's maximum points (the sum over its checks)."""
        return float(sum(c.points for c in self.checks))


@dataclass
class Assignment:
    """A chapter's assignment: its questions, where its master and student copy live, what its
    answer cells may import, and the reference versions of helpers that questions share."""

    id: str
    title: str
    questions: list[Question]
    master: str = ""
    student: str = ""
    preamble: str = DEFAULT_PREAMBLE
    forbidden: tuple[str, ...] = DEFAULT_FORBIDDEN
    #: Correct versions (source code, no deepscope import) of graded functions that other
    #: graded functions may call: a question that uses one is graded with it in place of the
    #: student's, so one mistake costs points once.
    substitutes: dict[str, str] = field(default_factory=dict)

    @property
    def points(self) -> float:
        """The assignment's maximum points."""
        return float(sum(q.points for q in self.questions))

    def question(self, function: str) -> Question:
        """Return the question that grades ``function``."""
        for q in self.questions:
            if q.function == function:
                return q
        known = ", ".join(q.function for q in self.questions)
        raise KeyError(f"assignment {self.id} has no question {function!r} (it has: {known})")


def combine(*parts: tuple[list[Call], Judge]) -> tuple[list[Call], Judge]:
    """Join several ``(calls, judge)`` pairs (e.g. the published case and drawn ones) into the
    ``(calls, judge)`` of one check: each judge gets the outputs of its own calls."""
    calls: list[Call] = []
    spans = []
    for made, judge in parts:
        spans.append((len(calls), len(made), judge))
        calls.extend(made)

    def judge_all(outs):
        for start, count, judge in spans:
            judge(outs[start:start + count])

    return calls, judge_all


# ---------------------------------------------------------------------------------------------
# Judging helpers: each returns the checked value or raises Fail with a helpful message


def _describe(value: Any) -> str:
    """A short description of a returned value for failure messages."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, np.ndarray):
        return f"a NumPy array of shape {value.shape} and dtype {value.dtype}"
    if value is None or isinstance(value, (bool, int, float, str)):
        return f"{type(value).__name__} {value!r}"[:120]
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    return repr(value) if type(value).__name__ == "_Unsupported" else f"a {type(value).__name__}"


def expect_tensor(
    value,
    what: str,
    *,
    like: torch.Tensor | None = None,
    shape: Sequence[int] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Check that ``value`` is a tensor with the given shape, dtype and device (``like`` sets all
    three from a tensor); return it."""
    if like is not None:
        shape = like.shape if shape is None else shape
        dtype = like.dtype if dtype is None else dtype
        device = like.device if device is None else device
    if not isinstance(value, torch.Tensor):
        raise Fail(f"{what} should be a torch.Tensor, got {_describe(value)}")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise Fail(f"{what} should have shape {tuple(shape)}, got {tuple(value.shape)}")
    if dtype is not None and value.dtype != dtype:
        raise Fail(f"{what} should keep the input's dtype {dtype}, got {value.dtype}")
    if device is not None and value.device != torch.device(device):
        raise Fail(f"{what} should be on the input's device {torch.device(device)}, got "
                   f"{value.device} (compute on x.device; do not move data to the CPU)")
    return value


def expect_scalar(value, what: str) -> float:
    """Check that ``value`` is a real number (a Python number or a one-element tensor/array)."""
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "fiu":
        return float(value.reshape(-1)[0])
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return float(value.reshape(-1)[0])
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Fail(f"{what} should be a number, got {_describe(value)}")
    return float(value)


def expect_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    what: str,
    *,
    rtol: float = 1e-4,
    atol: float = 1e-6,
) -> None:
    """Check ``|actual - expected| <= atol + rtol * |expected|`` elementwise (NaN fails);
    the message names the worst entry."""
    actual = torch.as_tensor(actual).detach().to("cpu", torch.float64)
    expected = torch.as_tensor(expected).detach().to("cpu", torch.float64)
    if actual.shape != expected.shape:
        raise Fail(f"{what} should have shape {tuple(expected.shape)}, got {tuple(actual.shape)}")
    if not torch.isfinite(actual).all():
        bad = (~torch.isfinite(actual)).sum().item()
        raise Fail(f"{what} holds {bad} NaN or infinite value(s)")
    excess = (actual - expected).abs() - (atol + rtol * expected.abs())
    if (excess > 0).any():
        flat = int(excess.reshape(-1).argmax())
        index = tuple(int(i) for i in np.unravel_index(flat, tuple(expected.shape))) \
            if expected.dim() else ()
        got, want = actual.reshape(-1)[flat].item(), expected.reshape(-1)[flat].item()
        scale = expected.abs().max().item() or 1.0
        worst = (actual - expected).abs().max().item()
        at = f" at index {index}" if index else ""
        raise Fail(f"mismatch in {what}:{at} you have {got:.3g} where {approx(want)} is "
                   f"expected; the largest difference is {relative(worst / scale)} of the "
                   "largest expected magnitude")


def approx(value: float) -> str:
    """An expected value as a failure message shows it: two significant digits ("about 0.16"),
    enough to see what is wrong, too few to copy into a lookup table."""
    value = float(value)
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    return f"about {value:.2g}"


def relative(ratio: float) -> str:
    """A relative error as a failure message shows it ("12%", "3.1e-05 times")."""
    ratio = float(ratio)
    if not math.isfinite(ratio):
        return f"{ratio:g} times"
    return f"{ratio:.0%}" if ratio >= 0.01 else f"{ratio:.1e} times"


def expect_number_close(actual, expected: float, what: str, *, rtol: float = 1e-4,
                        atol: float = 1e-8) -> float:
    """Check a scalar against an expected number; return it."""
    value = expect_scalar(actual, what)
    if not math.isfinite(value) or abs(value - expected) > atol + rtol * abs(expected):
        off = abs(value - expected) / abs(expected) if expected else abs(value - expected)
        how = f"{relative(off)} off" if expected else f"{off:.2g} away"
        raise Fail(f"{what} is {value:.3g} where {approx(expected)} is expected ({how})")
    return value


def expect_rules(out, what: str, *, rng: bool = True):
    """Check the observations of a `Call.observe` call against the notebook's rules (inputs
    left unchanged, no hook left behind, and, with ``rng``, the global random generators left
    alone); return the call's value."""
    if not isinstance(out, tuple) or len(out) != 2 or not isinstance(out[1], dict):
        raise Fail(f"{what}: the grader could not observe the call")  # pragma: no cover
    value, found = out
    broken = [*found.get("inputs", ()), *found.get("hooks", ())]
    if rng:
        broken += [f"it drew from or reseeded {g}" for g in found.get("rng", ())]
    if broken:
        raise Fail(f"{what} broke the notebook's rules (leave what you are given as you found "
                   "it, remove your hooks, leave the global random generators alone): "
                   + "; ".join(broken))
    return value
