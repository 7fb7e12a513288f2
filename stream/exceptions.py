"""Errors raised by :mod:`finpulse.stream`."""

from __future__ import annotations

from finpulse.core.errors import FinpulseError


class StreamError(FinpulseError):
    """Base class of every error raised by the stream layer."""
