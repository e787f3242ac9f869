"""Devices, seeds, threads and the first cell of every notebook.

Environment variables read here (all optional):

- ``DEEPSCOPE_DEVICE``: force a device (``cpu``, ``cuda``, ``cuda:1``, ``mps``) instead of the
  automatic choice (cuda, then mps, then cpu).
- ``DEEPSCOPE_THREADS``: number of torch CPU threads `setup_notebook` sets. The test runner sets
  it to cores / parallel workers: torch on two cores loses badly to oversubscription.
- ``DEEPSCOPE_FULL``: the cost switch of the book. ``1`` runs the full-size experiments a
  notebook offers; unset (the default, and what CI runs) runs the quick versions. ``smoke``
  is CI's full-mode smoke test: the full-size data and models, but every loop a notebook
  sizes with ``ctx.iters(n)`` runs only a handful of iterations, so the full paths cannot rot
  (the science asserts are not expected to hold then; ``tools.execute_book --smoke`` tolerates
  ``AssertionError`` and nothing else).
- ``DEEPSCOPE_SEED``: replaces the seed a notebook passes to `setup_notebook`. Used to calibrate
  a notebook's asserts over several seeds (``python -m tools.calibrate``).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch

_TRUE = {"1", "true", "yes", "on"}


def _available(kind: str) -> bool:
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    return kind == "cpu"


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """Return the torch device to compute on.

    Order of precedence: the ``prefer`` argument, then the ``DEEPSCOPE_DEVICE`` environment
    variable, then the first available of cuda, mps, cpu.

    Args:
        prefer: a device name (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``), a
            ``torch.device``, or None for the automatic choice.

    Returns:
        A ``torch.device``. Raises ``ValueError`` when the requested device is unknown or not
        available on this machine.
    """
    requested = prefer if prefer is not None else os.environ.get("DEEPSCOPE_DEVICE") or None
    if requested is None:
        for kind in ("cuda", "mps"):
            if _available(kind):
                return torch.device(kind)
        return torch.device("cpu")
    if not isinstance(requested, (str, torch.device)):
        raise TypeError(
            f"get_device: expected a device name or torch.device, got {type(requested).__name__}"
        )
    try:
        device = torch.device(requested)
    except RuntimeError as err:
        raise ValueError(
            f"get_device: unknown device {requested!r}; expected 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from err
    if not _available(device.type):
        raise ValueError(f"get_device: device {str(device)!r} was requested but is not available")
    if device.type == "cuda" and device.index is not None:
        if device.index >= torch.cuda.device_count():
            raise ValueError(
                f"get_device: {device} requested but only {torch.cuda.device_count()} CUDA "
                "device(s) exist"
            )
    return device


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) random generators.

    Args:
        seed: a non-negative int. The same seed gives identical tensors on CPU.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed_everything: seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed_everything: seed must be >= 0, got {seed}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS and Windows
        return os.cpu_count() or 1


def _env_int(name: str, expected: str, minimum: int | None = None) -> int | None:
    """Return the int in environment variable ``name`` (None when unset or empty)."""
    raw = os.environ.get(name)
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError as err:
        raise ValueError(f"{name} must be {expected}, got {raw!r}") from err
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be {expected}, got {raw!r}")
    return value


def default_threads() -> int:
    """Return the torch CPU thread count the book uses: ``DEEPSCOPE_THREADS`` or the usable
    cores (at most 8; more rarely helps the small models of the book)."""
    n = _env_int("DEEPSCOPE_THREADS", "a positive int", minimum=1)
    return n if n is not None else max(1, min(_cpu_count(), 8))


def _cost_switch() -> str:
    return os.environ.get("DEEPSCOPE_FULL", "").strip().lower()


def full_mode() -> bool:
    """Return True when the cost switch ``DEEPSCOPE_FULL`` asks for full-size experiments
    (``1``, or ``smoke``: full sizes with a handful of iterations)."""
    return _cost_switch() in _TRUE or smoke_mode()


def smoke_mode() -> bool:
    """Return True for CI's full-mode smoke test (``DEEPSCOPE_FULL=smoke``)."""
    return _cost_switch() == "smoke"


#: Iterations a loop sized with `NotebookContext.iters` runs in the full-mode smoke test.
SMOKE_ITERS = 3


@dataclass(frozen=True)
class NotebookContext:
    """What `setup_notebook` decided: notebooks read ``ctx.device``, ``ctx.full`` and size their
    loops with ``ctx.iters(n)`` (``ctx.smoke`` is True only in CI's full-mode smoke test)."""

    device: torch.device
    seed: int
    full: bool
    threads: int
    smoke: bool = False

    def pick(self, quick, full):
        """Return ``full`` in full mode (and the smoke test), else ``quick``.

        Example: ``n_train = ctx.pick(quick=1000, full=5000)``.
        """
        return full if self.full else quick

    def iters(self, n: int) -> int:
        """Return ``n`` (a count of steps, epochs, seeds or samples), or at most `SMOKE_ITERS`
        of them in the full-mode smoke test, where only the code path is exercised."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"NotebookContext.iters: `n` must be an int >= 0, got {n!r}")
        return min(n, SMOKE_ITERS) if self.smoke else n


def setup_notebook(seed: int = 0, *, style: bool = True, quiet: bool = False) -> NotebookContext:
    """Prepare a notebook: seed everything, set torch's and BLAS's CPU threads, apply the book's
    plot style, print one line saying the device, the thread count and the cost mode.

    Args:
        seed: seed for `seed_everything` (``DEEPSCOPE_SEED``, when set, replaces it).
        style: apply the book's matplotlib style (`deepscope.plotting.use_book_style`).
        quiet: do not print the device line.

    Returns:
        A `NotebookContext` with ``device``, ``seed``, ``full`` (the cost switch) and ``threads``.
    """
    env_seed = _env_int("DEEPSCOPE_SEED", "an int")
    if env_seed is not None:
        seed = env_seed
    seed_everything(seed)
    threads = default_threads()
    torch.set_num_threads(threads)
    # NumPy/SciPy BLAS too: two OpenBLAS threads beside torch's made fits up to 20x slower.
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)
    device = get_device()
    full, smoke = full_mode(), smoke_mode()
    if style:
        from .plotting import use_book_style

        use_book_style()
    if not quiet:
        from . import __version__

        mode = ("full-mode smoke test (DEEPSCOPE_FULL=smoke)" if smoke
                else "full (DEEPSCOPE_FULL=1)" if full
                else "quick (set DEEPSCOPE_FULL=1 for full size)")
        print(
            f"deepscope {__version__} | torch {torch.__version__} | device: {device} | "
            f"threads: {threads} | seed: {seed} | mode: {mode}"
        )
    return NotebookContext(device=device, seed=seed, full=full, threads=threads, smoke=smoke)
