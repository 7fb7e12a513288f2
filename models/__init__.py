"""The finpulse news classifier: tokenisation, ONNX sessions, training and export.

Runtime users need only :class:`Classifier` (onnxruntime + tokenizers); training and export
(:mod:`finpulse.models.train`, :mod:`finpulse.models.export`, :mod:`finpulse.models.network`) need the ``train`` extra.
"""

from .exceptions import InvalidInputError, ManifestError, ModelError
from .labels import SENTIMENT_LABELS, TOPIC_LABELS

__all__ = ["Classifier", "InvalidInputError", "ManifestError", "ModelError", "SENTIMENT_LABELS", "TOPIC_LABELS"]


def __getattr__(name: str):
    if name == "Classifier":
        from .classifier import Classifier

        return Classifier
    raise AttributeError(name)
