"""Errors raised by :mod:`finpulse.models`."""

from __future__ import annotations

from finpulse.core.errors import FinpulseError


class ModelError(FinpulseError):
    """Base class of every error raised by the model layer."""


class ManifestError(ModelError):
    """The model manifest is missing, malformed, or does not match the files on disk."""


class InvalidInputError(ModelError, ValueError):
    """A text given to the classifier cannot be classified (empty, not a string, ...)."""


class SoupError(ModelError, ValueError):
    """Checkpoints that cannot be averaged, or an empty list of them."""


class ModelVersionError(ModelError, LookupError):
    """A model version that is not in the model directory, or a promotion / rollback that cannot be done."""
