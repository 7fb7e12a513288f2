"""Evaluation of a model variant on a labelled CSV (accuracy, macro-F1, per class, confusion)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .data import read_labelled_csv
from .labels import labels_for
from .metrics import classification_report


def logits_fn(variant: str, model_dir: str | Path | None = None, checkpoint: str | Path | None = None,
              fp32_path: str | Path | None = None) -> Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]]:
    """A function ``texts -> (topic_logits, sentiment_logits)`` for one model variant.

    :param variant: ``int8`` (shipped CPU ONNX), ``fp16`` (GPU ONNX built from it), ``fp32``
        (unshipped ONNX export, ``fp32_path``) or ``torch`` (the PyTorch checkpoint).
    :param model_dir: artifact directory (default: the shipped default model).
    :param checkpoint: checkpoint directory, for ``torch``.
    :param fp32_path: the fp32 ONNX file, for ``fp32`` (default ``build/onnx/model.fp32.onnx``).
    """
    if variant == "torch":
        from .manifest import load_manifest
        from .network import load_checkpoint, torch_logits
        from .tokenize import load_tokenizer

        manifest = load_manifest(model_dir)
        tok = load_tokenizer(Path(manifest["_dir"]) / manifest["files"]["tokenizer"]["path"], manifest["max_length"])
        model = load_checkpoint(checkpoint or "models/artifacts/checkpoint")
        return lambda texts: torch_logits(model, tok, list(texts))
    from .classifier import Classifier

    if variant == "fp32":
        from .export import BUILD_DIR

        return Classifier(model_dir, device="cpu", onnx_path=fp32_path or BUILD_DIR / "model.fp32.onnx").logits
    device = "auto" if variant == "fp16" else "cpu"
    return Classifier(model_dir, device=device, variant=variant).logits


def decision_of(model_dir: str | Path | None = None) -> dict:
    """The manifest's ``decision`` rule of ``model_dir`` (``{}`` when it has none)."""
    from .manifest import load_manifest

    return dict(load_manifest(model_dir, verify=False).get("decision") or {})


def evaluate(data: str | Path, task: str, logits: Callable, decision: dict | None = None) -> dict:
    """Evaluate on a ``text,label`` CSV for ``task``; returns :func:`classification_report`'s dict.

    :param decision: a manifest ``decision`` rule; its sentiment bias decides the sentiment labels as
        :class:`~finpulse.models.classifier.Classifier` does (temperatures never change a label).
    """
    from .calibration import sentiment_labels

    exs = read_labelled_csv(data, task)
    topic_logits, sent_logits = logits([e.text for e in exs])
    if task == "topic":
        preds = topic_logits.argmax(-1)
    else:
        d = decision or {}
        preds = sentiment_labels(sent_logits, float((d.get("temperature") or {}).get("sentiment", 1.0)),
                                 d.get("sentiment_bias"))
    return classification_report([e.label for e in exs], preds.tolist(), labels_for(task))


def format_report(rep: dict, task: str) -> str:
    """Human-readable text of an evaluation report."""
    labels = labels_for(task)
    lines = [f"task={task} n={rep['n']} accuracy={rep['accuracy']:.4f} macro_f1={rep['macro_f1']:.4f}", "",
             f"{'class':32s} {'prec':>6s} {'recall':>6s} {'f1':>6s} {'n':>5s}"]
    for lab in labels:
        c = rep["per_class"][lab]
        lines.append(f"{lab:32s} {c['precision']:6.3f} {c['recall']:6.3f} {c['f1']:6.3f} {c['support']:5d}")
    lines += ["", "confusion matrix (rows = true, columns = predicted, in the order above):"]
    lines += [" ".join(f"{v:4d}" for v in row) for row in rep["confusion_matrix"]]
    return "\n".join(lines)
