"""Errors raised by :mod:`alerts`."""

from __future__ import annotations


class AlertsError(Exception):
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


class InvalidArticle(AlertsError, ValueError):
    """A scored article the window store cannot count (bad id, time, sentiment or score).

    :param code: short machine-readable reason (``missing_id``, ``bad_time``, ``bad_sentiment``, ...).
    :param detail: human explanation.
    """

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail

    @property
    def reason(self) -> str:
        """``code: detail``, as a dead letter would carry it."""
        return f"{self.code}: {self.detail}"


class WebhookVerificationError(AlertsError):
    """A received webhook's signature or timestamp does not verify."""
