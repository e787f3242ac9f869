"""Maintenance tools of the book (not part of the `deepscope` library)."""
