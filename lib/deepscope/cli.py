"""The ``deepscope`` command line: ``deepscope info`` (and the subcommands later chapters add)."""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys

#: Import names of the `oracle` extra's test-only peer libraries.
ORACLE_MODULES = ("captum", "pyhessian", "loss_landscapes")


def info() -> dict[str, str]:
    """Return what ``deepscope info`` prints: versions, the device, threads, the oracle extra."""
    import torch

    from . import __version__
    from .device import default_threads, full_mode, get_device

    missing = [m for m in ORACLE_MODULES if importlib.util.find_spec(m) is None]
    return {
        "deepscope": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(get_device()),
        "cuda available": str(torch.cuda.is_available()),
        "torch threads (setup_notebook)": str(default_threads()),
        "cost mode": "full" if full_mode() else "quick",
        "oracle extra": "installed" if not missing else f"missing ({', '.join(missing)})",
    }


def _cmd_info(_args) -> int:
    rows = info()
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``deepscope`` command."""
    parser = argparse.ArgumentParser(
        prog="deepscope", description="deepscope: the library of the science-of-deep-learning book"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p_info = sub.add_parser("info", help="versions, device, threads and installed extras")
    p_info.set_defaults(handler=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``deepscope`` console script."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
