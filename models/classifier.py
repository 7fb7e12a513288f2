"""The runtime classifier: ONNX Runtime + ``tokenizers``, no torch.

Example::

    from finpulse.models import Classifier
    clf = Classifier()                       # shipped default model, CUDA fp16 if available else CPU int8
    clf.classify(["Fed hikes rates by 75bp", "Apple beats estimates"])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import InvalidInputError
from .manifest import load_manifest
from .normalize import normalize_text
from .tokenize import load_tokenizer

log = logging.getLogger(__name__)

MAX_CHARS = 10_000
"""Texts longer than this many characters are cut before tokenising (the token limit in the
manifest, 128, is far shorter anyway: longer headlines are truncated, never refused)."""


PAD_SLACK = 1.25
"""Longest row of an ONNX run / shortest row of that run, at most (see :meth:`Classifier._groups`)."""


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    probs: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return probs


class Classifier:
    """Topic and sentiment for headlines, in one forward pass of the shipped ONNX model.

    :param model_dir: directory with ``manifest.json``; ``None`` = the shipped default model.
    :param device: ``auto`` (CUDA when ``onnxruntime-gpu`` and a device are present), ``cpu`` or
        ``cuda`` (error if unavailable).
    :param variant: force ``int8`` (CPU) or ``fp16`` (GPU); default follows the device.
    :param batch_size: texts per ONNX run inside :meth:`classify`.
    :param threads: ONNX Runtime intra-op threads (0 = one per core).
    :param spinning: let idle intra-op threads busy-wait for the next piece of work (ONNX
        Runtime's default). Fastest on an otherwise idle machine; a worker that shares its cores
        with the event loop, the broker and Redis turns it off so waiting threads yield the CPU.
    :param onnx_path: run this ONNX file instead of the manifest's (e.g. the unshipped fp32 export,
        for evaluation and benchmarks); it must have the same inputs, outputs and labels.
    :param verify: check every file's sha256 against the manifest before loading.
    """

    def __init__(self, model_dir: str | Path | None = None, *, device: str = "auto", variant: str | None = None,
                 batch_size: int = 32, threads: int = 0, spinning: bool = True, verify: bool = True,
                 onnx_path: str | Path | None = None):
        import onnxruntime as ort

        self.manifest = load_manifest(model_dir, verify=verify)
        mdir = Path(self.manifest["_dir"])
        self.topic_labels: list[str] = list(self.manifest["labels"]["topic"])
        self.sentiment_labels: list[str] = list(self.manifest["labels"]["sentiment"])
        self.max_length = int(self.manifest["max_length"])
        self.batch_size = batch_size
        self.tokenizer = load_tokenizer(mdir / self.manifest["files"]["tokenizer"]["path"], self.max_length)

        available = ort.get_available_providers()
        want_cuda = device == "cuda" or (device == "auto" and "CUDAExecutionProvider" in available)
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise RuntimeError("device='cuda' but onnxruntime has no CUDAExecutionProvider "
                               "(install finpulse[gpu], which brings onnxruntime-gpu)")
        variant = variant or ("fp32" if onnx_path else "fp16" if want_cuda else "int8")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        if not spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if onnx_path:
            path = Path(onnx_path)
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if want_cuda else ["CPUExecutionProvider"]
        elif variant == "fp16":
            from .gpu import fp16_model_path

            path = fp16_model_path(self.manifest)
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if want_cuda else ["CPUExecutionProvider"]
        elif variant == "int8":
            path = mdir / self.manifest["files"]["cpu"]["path"]
            providers = ["CPUExecutionProvider"]
        else:
            raise ValueError(f"unknown variant {variant!r}; expected int8 or fp16 (or give onnx_path)")
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        self.variant = variant
        self.provider = self.session.get_providers()[0]
        decision = self.manifest.get("decision") or {}
        temps = decision.get("temperature") or {}
        self.topic_temperature = float(temps.get("topic", 1.0))
        self.sentiment_temperature = float(temps.get("sentiment", 1.0))
        self.sentiment_bias = np.asarray(decision.get("sentiment_bias") or [0.0] * len(self.sentiment_labels),
                                         dtype=np.float64)
        if self.sentiment_bias.shape != (len(self.sentiment_labels),):
            raise ValueError(f"manifest decision.sentiment_bias must have {len(self.sentiment_labels)} values")
        self._neg = self.sentiment_labels.index("negative")
        self._pos = self.sentiment_labels.index("positive")
        log.info("classifier %s loaded: variant=%s provider=%s file=%s", self.model_version, variant,
                 self.provider, Path(path).name)

    @property
    def model_version(self) -> str:
        """The manifest's model version (recorded on every scored message)."""
        return str(self.manifest["version"])

    def logits(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``(topic_logits, sentiment_logits)`` for already-valid texts, in input order."""
        normed = [normalize_text(t[:MAX_CHARS]) for t in texts]
        encs = self.tokenizer.encode_batch(normed)
        lengths = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
        order = np.argsort(lengths, kind="stable")  # similar lengths together: less padding
        topic = np.empty((len(texts), len(self.topic_labels)), dtype=np.float32)
        sent = np.empty((len(texts), len(self.sentiment_labels)), dtype=np.float32)
        for idx in self._groups(lengths[order], order):
            width = int(lengths[idx].max())
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for r, i in enumerate(idx):
                n = lengths[i]
                ids[r, :n] = encs[i].ids
                mask[r, :n] = 1
            t_out, s_out = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
            topic[idx] = t_out
            sent[idx] = s_out
        return topic, sent

    def _groups(self, sorted_lengths: np.ndarray, order: np.ndarray) -> list[np.ndarray]:
        """Split length-sorted rows into runs of at most ``batch_size`` whose padding stays small.

        A run ends when the next row is more than ``PAD_SLACK`` times longer than the run's first
        row: every row is then padded by less than that factor. Fewer padded tokens matter more than
        bigger runs on a CPU (measured in ``docs/benchmarks.md``).
        """
        groups: list[np.ndarray] = []
        start = 0
        for k in range(1, len(order) + 1):
            if (k == len(order) or k - start >= self.batch_size
                    or sorted_lengths[k] > PAD_SLACK * sorted_lengths[start]):
                groups.append(order[start:k])
                start = k
        return groups

    @staticmethod
    def check_text(text: Any) -> str | None:
        """Why ``text`` cannot be classified, or ``None`` if it can."""
        if not isinstance(text, str):
            return f"text must be a string, not {type(text).__name__}"
        if not normalize_text(text[:MAX_CHARS]):
            return "text is empty (or only whitespace / URLs) after normalisation"
        return None

    def classify(self, texts: Sequence[Any]) -> list[dict[str, Any]]:
        """Classify a batch of headlines in one call.

        Invalid items (not a string; empty, whitespace-only or URL-only) do not fail the batch:
        their result is ``{"error": "<why>"}`` and the others are classified. Texts longer than the
        model's ``max_length`` tokens are truncated (documented; never an error).

        :param texts: the headlines.
        :returns: per text, in input order: ``topic``, ``topic_score``, ``topics_top3`` (list of
            ``{"topic", "score"}``), ``sentiment``, ``sentiment_probs`` (negative/positive/neutral),
            ``sentiment_score`` = p(positive) - p(negative), and ``model_version``. Probabilities are
            temperature-scaled and the sentiment label follows the manifest's ``decision`` rule
            (:mod:`finpulse.models.calibration`): it is the arg-max of the probabilities plus the bias,
            so a headline can be labelled negative while p(neutral) is a little higher.
        """
        if isinstance(texts, str):
            raise InvalidInputError("classify() takes a list of texts, not one string")
        results: list[dict[str, Any]] = [{} for _ in texts]
        valid: list[int] = []
        for i, t in enumerate(texts):
            why = self.check_text(t)
            if why:
                results[i] = {"error": why}
            else:
                valid.append(i)
        if valid:
            t_logits, s_logits = self.logits([texts[i] for i in valid])
            # the manifest's decision rule (models/calibration.py): temperature-scaled probabilities,
            # and the sentiment label that wins after the bias (e.g. against defaulting to neutral)
            t_probs = _softmax(t_logits.astype(np.float64) / self.topic_temperature)
            s_scaled = s_logits.astype(np.float64) / self.sentiment_temperature
            s_probs = _softmax(s_scaled)
            s_label = (s_scaled + self.sentiment_bias).argmax(axis=1)
            top3 = np.argsort(-t_probs, axis=1)[:, :3]
            for row, i in enumerate(valid):
                tp, sp = t_probs[row], s_probs[row]
                results[i] = {
                    "topic": self.topic_labels[int(top3[row, 0])],
                    "topic_score": round(float(tp[top3[row, 0]]), 6),
                    "topics_top3": [{"topic": self.topic_labels[int(k)], "score": round(float(tp[k]), 6)}
                                    for k in top3[row]],
                    "sentiment": self.sentiment_labels[int(s_label[row])],
                    "sentiment_probs": {lab: round(float(sp[j]), 6) for j, lab in enumerate(self.sentiment_labels)},
                    "sentiment_score": round(float(sp[self._pos] - sp[self._neg]), 6),
                    "model_version": self.model_version,
                }
        return results
