"""Explorers of the collapse chapter (factories built on `deepscope.widgets.core.explorer`)."""

from __future__ import annotations

__all__: list[str] = []
