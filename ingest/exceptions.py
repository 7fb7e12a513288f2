"""Errors raised by :mod:`finpulse.ingest` (the classes live beside the code that raises them)."""

from __future__ import annotations

from finpulse.core.errors import FinpulseError


class IngestError(FinpulseError):
    """Base class of every error raised by the ingestion layer (feeds, crawler, replay, producer)."""
