"""Errors raised by :mod:`models`."""


class ModelError(Exception):
    """Base class of every error raised by the model layer."""


class ManifestError(ModelError):
    """The model manifest is missing, malformed, or does not match the files on disk."""


class InvalidInputError(ModelError, ValueError):
    """A text given to the classifier cannot be classified (empty, not a string, ...)."""
