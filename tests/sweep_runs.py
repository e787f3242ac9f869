"""Module-level run functions for the sweep-runner tests (importable by spawned workers)."""

import os
from pathlib import Path


def square(spec, config):
    """A tiny run returning {"config", "value"}. Each call is appended to ``spec["log"]``. If
    ``spec["trap"]`` names an existing file and ``config == spec["at"]``, the file is removed
    and the run fails once, as a transient fault would: ``spec["kind"]`` "raise" raises,
    "exit" kills the process running it."""
    if spec.get("log"):
        with open(spec["log"], "a") as f:
            f.write(f"{config}\n")
    trap = spec.get("trap")
    if trap and config == spec.get("at") and Path(trap).exists():
        Path(trap).unlink()
        if spec.get("kind") == "exit":
            os._exit(3)
        raise RuntimeError(f"run {config} failed on purpose")
    return {"config": config, "value": config**2}


def calls(log) -> list[int]:
    """The configs `square` was called with, in order."""
    path = Path(log)
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def armed(tmp_path, kind: str, at: int) -> dict:
    """A spec whose run ``at`` fails once (``kind``: "raise" or "exit")."""
    trap = Path(tmp_path) / "trap"
    trap.write_text("armed")
    return {"log": str(Path(tmp_path) / "calls.txt"), "trap": str(trap), "at": at, "kind": kind}
