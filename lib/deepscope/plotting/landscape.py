"""Figures of the landscape chapter."""

from __future__ import annotations

__all__: list[str] = []
