"""Figures of the saliency chapter."""

from __future__ import annotations

__all__: list[str] = []
