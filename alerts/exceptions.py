"""Errors raised by :mod:`finpulse.alerts`."""

from __future__ import annotations

from finpulse.core.errors import BadMessage, FinpulseError


class AlertsError(FinpulseError):
    """Base class of every error raised by the alerts package."""


class ConfigError(AlertsError, ValueError):
    """The rules/endpoints TOML (or a secrets file) is invalid.

    :param where: file and key path of the problem, e.g. ``config/rules.toml: rules[2].min_count``.
    :param detail: human explanation.
    """

    def __init__(self, where: str, detail: str):
        super().__init__(f"{where}: {detail}")
        self.where = where
        self.detail = detail


class InvalidArticle(AlertsError, BadMessage, ValueError):
    """A scored article the window store cannot count (bad id, time, sentiment or score).

    :param code: short machine-readable reason (``missing_id``, ``bad_time``, ``bad_sentiment``, ...).
    :param detail: human explanation.
    """


class WebhookVerificationError(AlertsError):
    """A received webhook's signature or timestamp does not verify."""
