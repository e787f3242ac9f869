"""Figures of the collapse chapter."""

from __future__ import annotations

__all__: list[str] = []
