"""Explorers of the saliency chapter (factories built on `deepscope.widgets.core.explorer`)."""

from __future__ import annotations

__all__: list[str] = []
