"""Errors raised by the app layer (CLI, demo, backtest, dev stack)."""

from __future__ import annotations

from finpulse.core.errors import FinpulseError


class AppError(FinpulseError):
    """Base class of every error raised by the app layer."""
