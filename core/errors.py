"""The root of every error finpulse raises, and the one error a message can cause.

Each layer has its own ``exceptions.py`` whose base class derives from :class:`FinpulseError`, so a
caller can catch everything finpulse raises with one ``except``.
"""

from __future__ import annotations


class FinpulseError(Exception):
    """Base class of every error raised by finpulse."""


class BadMessage(FinpulseError):
    """A message that cannot be processed because of what it holds; it goes to a dead-letter topic.

    :param code: short machine-readable reason (``not_json``, ``missing_title``, ``bad_time``, ...).
    :param detail: human explanation.
    """

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail

    @property
    def reason(self) -> str:
        """``code: detail``, as written into the dead letter."""
        return f"{self.code}: {self.detail}"
