"""Errors raised by :mod:`stream`."""


class StreamError(Exception):
    """Base class of every error raised by the stream layer."""


class BadMessage(StreamError):
    """A message that cannot be processed; it goes to the dead-letter topic.

    :param code: short machine-readable reason (``not_json``, ``missing_title``, ...).
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
