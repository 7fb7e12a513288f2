"""Small conversions shared by the layers that talk to Redis."""

from __future__ import annotations

from typing import Any


def as_str(value: Any) -> str:
    """A Redis reply (``bytes``) or any value as ``str`` (UTF-8)."""
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)
