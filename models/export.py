"""Export the trained PyTorch checkpoint to ONNX, optimise, quantise, and write the manifest.

``finpulse export`` calls :func:`export`. Needs the ``train`` extra (torch, onnx).

Artifacts (``models/artifacts/``):

* ``model.int8.onnx`` — the shipped CPU model: fp32 export (opset 17, dynamic batch and sequence
  axes, outputs ``topic_logits`` and ``sentiment_logits``), ONNX Runtime's BERT graph fusions
  (attention, layer-norm, GELU, embedding), int8 quantisation (weights per output channel), then the
  activation scales frozen (:mod:`finpulse.models.static_quant`; calibrated on training headlines
  scored one at a time) so a headline's labels do not depend on the batch it is scored in.
* ``tokenizer.json`` — the base model's WordPiece tokenizer.
* ``manifest.json`` — version, label maps, max sequence length, sha256 of every file, recipe, metrics,
  and the ``decision`` rule (temperatures, sentiment bias) fitted on dev data by
  :func:`fit_decision` (:mod:`finpulse.models.calibration`).

The fp32 and optimised fp32 files are written to ``build/onnx/`` (not shipped: 90 MB). The GPU fp16
variant is built from the shipped int8 file at load time (:func:`finpulse.models.gpu.fp16_from_int8`), which
keeps the repository under its 60 MB budget.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .labels import SENTIMENT_LABELS, TOPIC_LABELS
from .manifest import sha256_file
from .normalize import NORMALIZATION_VERSION

log = logging.getLogger(__name__)

ARTIFACT_DIR = Path(__file__).resolve().parent / "artifacts"
BUILD_DIR = Path(__file__).resolve().parent.parent / "build" / "onnx"
OPSET = 17
INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAMES = ["topic_logits", "sentiment_logits"]


def export_fp32(ckpt_dir: str | Path, out_path: str | Path) -> Path:
    """Export the checkpoint to a plain fp32 ONNX file with dynamic batch / sequence axes."""
    import torch

    from .network import load_checkpoint

    model = load_checkpoint(ckpt_dir, attn_implementation="eager")  # the pattern ORT's fusions know
    ids = torch.tensor([[101, 7592, 2088, 102, 0], [101, 2023, 2003, 1037, 102]], dtype=torch.long)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.long)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model, (ids, mask), str(out_path),
        input_names=INPUT_NAMES, output_names=OUTPUT_NAMES, opset_version=OPSET, dynamo=False,
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                      "topic_logits": {0: "batch"}, "sentiment_logits": {0: "batch"}},
    )
    return out_path


def optimize_fp32(src: str | Path, dst: str | Path, num_heads: int = 12, hidden_size: int = 384) -> Path:
    """Apply ONNX Runtime's BERT fusions (offline, CPU-portable) to ``src``."""
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                         opt_level=1, use_gpu=False)
    log.info("fusions: %s", opt.get_fused_operator_statistics())
    opt.save_model_to_file(str(dst))
    return Path(dst)


def quantize_int8(src: str | Path, dst: str | Path) -> Path:
    """Dynamic int8 quantisation: weights int8 per output channel, activations quantised per run.

    Per-channel scales were chosen over per-tensor ones for fidelity to fp32, measured without
    labels on the training split's dev slice: label agreement with fp32 97.4 % (topic) and 98.4 %
    (sentiment) against 94.1 % and 94.6 % per-tensor, for 0.5 % more bytes.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Fused contrib ops (BiasGelu, SkipLayerNormalization...) defeat shape inference for a few
    # tensors; they are all float.
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return Path(dst)


def write_manifest(artifact_dir: str | Path, *, version: str, max_length: int, recipe: dict,
                   metrics: dict | None = None, files: dict[str, str] | None = None) -> dict:
    """Write ``manifest.json`` listing every artifact with its sha256.

    :param artifact_dir: directory holding the artifacts.
    :param version: model version string (``finpulse-minilm-mt-<date>``).
    :param max_length: runtime token limit (longer inputs are truncated, documented).
    :param recipe: the training recipe (from the checkpoint's ``recipe.json``).
    :param metrics: measured metrics to record (may be added later with :func:`update_metrics`).
    :param files: role -> file name, e.g. ``{"cpu": "model.int8.onnx", "tokenizer": "tokenizer.json"}``.
    """
    d = Path(artifact_dir)
    files = files or {"cpu": "model.int8.onnx", "tokenizer": "tokenizer.json"}
    manifest = {
        "name": "finpulse-news-classifier",
        "version": version,
        "format": 1,
        "base_model": recipe.get("base_model", "sentence-transformers/all-MiniLM-L6-v2") + " (Apache-2.0)",
        "inputs": INPUT_NAMES,
        "outputs": OUTPUT_NAMES,
        "opset": OPSET,
        "max_length": max_length,
        "normalization_version": NORMALIZATION_VERSION,
        "labels": {"topic": list(TOPIC_LABELS), "sentiment": list(SENTIMENT_LABELS)},
        "files": {role: {"path": name, "sha256": sha256_file(d / name), "bytes": (d / name).stat().st_size}
                  for role, name in files.items()},
        "recipe": recipe,
        "metrics": metrics or {},
    }
    (d / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def update_metrics(artifact_dir: str | Path, metrics: dict) -> dict:
    """Merge ``metrics`` into an existing manifest (files and hashes untouched)."""
    path = Path(artifact_dir) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["metrics"] = {**manifest.get("metrics", {}), **metrics}
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


CALIBRATION_TWEETS = 1500
"""Training tweets (both tasks, seeded sample) whose activations set the static int8 scales; the
``train`` headlines of the news-style set are added. Never a validation split, never the dev slice."""


def calibration_texts(recipe: dict) -> list[str]:
    """The headlines the static activation scales are calibrated on (see :data:`CALIBRATION_TWEETS`)."""
    import random

    from .data import load_news
    from .train import train_dev_split

    train_set, _dev = train_dev_split(recipe.get("dev_fraction", 0.08), recipe.get("seed", 13), recipe.get("limit"))
    texts = [e.text for e in train_set]
    random.Random(0).shuffle(texts)
    news = [e.text for e in load_news("train") if e.task == "topic"]
    return texts[:CALIBRATION_TWEETS] + news


def make_static(dynamic: str | Path, dst: str | Path, tokenizer_path: str | Path, texts: list[str]) -> Path:
    """Freeze the activation scales of the dynamically quantised ``dynamic`` into ``dst``."""
    from .normalize import normalize_text
    from .static_quant import activation_ranges, freeze_activation_scales
    from .tokenize import load_tokenizer

    tok = load_tokenizer(tokenizer_path, 128)
    ranges = activation_ranges(dynamic, (e.ids for e in tok.encode_batch([normalize_text(t) for t in texts])))
    return freeze_activation_scales(dynamic, dst, ranges)


def dev_figures(model_dir: str | Path, tweet_dev: Sequence, news_dev: Sequence) -> dict[str, Any]:
    """Accuracy and macro-F1 per head of an exported model, with its manifest's decision rule.

    :param model_dir: an exported model directory (manifest, int8 file, tokenizer).
    :param tweet_dev: the tweet dev slice (:class:`~finpulse.models.data.Example` of both tasks).
    :param news_dev: the news-style dev split (may be empty).
    :returns: ``{"tweet": {"topic": {...}, "sentiment": {...}}, "news": {...}}``; each head
        ``{"accuracy", "macro_f1", "n"}`` (a set without examples of a head is left out).
    """
    from .calibration import sentiment_labels
    from .classifier import Classifier
    from .labels import SENTIMENT_LABELS, TOPIC_LABELS
    from .metrics import classification_report

    clf = Classifier(model_dir, device="cpu", variant="int8")
    out: dict[str, Any] = {}
    for name, examples in (("tweet", tweet_dev), ("news", news_dev)):
        heads: dict[str, Any] = {}
        for task in ("topic", "sentiment"):
            exs = [e for e in examples if e.task == task]
            if not exs:
                continue
            t_log, s_log = clf.logits([e.text for e in exs])
            if task == "topic":
                preds, labels = t_log.argmax(1), TOPIC_LABELS
            else:  # the manifest's decision rule, as Classifier.classify applies it
                preds = sentiment_labels(s_log, clf.sentiment_temperature, clf.sentiment_bias)
                labels = SENTIMENT_LABELS
            rep = classification_report([e.label for e in exs], preds.tolist(), labels)
            heads[task] = {"accuracy": rep["accuracy"], "macro_f1": rep["macro_f1"], "n": rep["n"]}
        out[name] = heads
    return out


def fit_decision(model_dir: str | Path, recipe: dict, max_tweet_drop: float = 0.005,
                 reference_dir: str | Path | None = None) -> dict:
    """Temperatures and the sentiment bias of the int8 model in ``model_dir``, fitted on dev data.

    Temperatures: per head, on the tweet dev slice (the run's held-out slice of the training splits)
    and the news-style ``dev`` split pooled. Bias: :func:`finpulse.models.calibration.fit_neutral_bias`
    on the news-style ``dev`` split, guarded by the tweet dev slice. Also reports a two-fold
    cross-fitted news macro-F1 (the bias fitted on one half of the news dev split, measured on the
    other), an estimate free of the optimism of measuring on the data the bias was chosen on.

    :param model_dir: an exported model (manifest without a decision yet, or with one: it is ignored).
    :param recipe: the training recipe (its ``dev_fraction``, ``seed``, ``limit`` give the dev slice).
    :param max_tweet_drop: the guard on the tweet dev slice's sentiment accuracy and macro-F1.
    :param reference_dir: the exported release in force. Given, the guard counts the allowance from its
        tweet dev figures (with its own decision rule), so the new weights and the bias share one
        allowance (:mod:`finpulse.models.release`); otherwise from this model without a bias.
    """
    import numpy as np

    from .calibration import fit_neutral_bias, fit_temperature
    from .classifier import Classifier
    from .data import load_news
    from .train import train_dev_split

    clf = Classifier(model_dir, device="cpu", variant="int8")
    _train, tweet_dev = train_dev_split(recipe.get("dev_fraction", 0.08), recipe.get("seed", 13), recipe.get("limit"))
    news = load_news("dev")
    out: dict = {"fitted_on": "tweet dev slice (held out of the training splits) + data/news-dev dev split"}
    temps, logits = {}, {}
    for task in ("topic", "sentiment"):
        exs = [e for e in tweet_dev if e.task == task] + [e for e in news if e.task == task]
        t_log, s_log = clf.logits([e.text for e in exs])
        lg = t_log if task == "topic" else s_log
        labels = np.array([e.label for e in exs])
        temps[task] = fit_temperature(lg, labels)
        n_tweet = sum(e.task == task for e in tweet_dev)
        logits[task] = (lg[:n_tweet], labels[:n_tweet], lg[n_tweet:], labels[n_tweet:])
    out["temperature"] = temps
    tw_l, tw_y, nw_l, nw_y = logits["sentiment"]
    floor = None
    if reference_dir is not None:
        from .manifest import load_manifest

        ref = dev_figures(reference_dir, tweet_dev, [])["tweet"]["sentiment"]
        floor = {"accuracy": ref["accuracy"], "macro_f1": ref["macro_f1"]}
        out["guard_reference"] = {"version": load_manifest(reference_dir, verify=False).get("version"),
                                  "tweet_dev_sentiment": {k: round(v, 4) for k, v in floor.items()}}
    fit = fit_neutral_bias(nw_l, nw_y, tw_l, tw_y, temps["sentiment"], max_tweet_drop, tweet_floor=floor)
    out.update(sentiment_bias=fit["sentiment_bias"], news_dev_macro_f1=fit["news_macro_f1"],
               tweet_dev_macro_f1=fit["tweet_macro_f1"], max_tweet_drop=max_tweet_drop)
    halves = np.arange(len(nw_y)) % 2
    cross = []
    for h in (0, 1):
        a, b = halves == h, halves != h
        bias = fit_neutral_bias(nw_l[a], nw_y[a], tw_l, tw_y, temps["sentiment"], max_tweet_drop,
                                tweet_floor=floor)["sentiment_bias"]
        cross.append((nw_l[b], nw_y[b], bias))
    from .calibration import sentiment_labels
    from .labels import SENTIMENT_LABELS
    from .metrics import classification_report

    ys = np.concatenate([c[1] for c in cross])
    ps = np.concatenate([sentiment_labels(c[0], temps["sentiment"], c[2]) for c in cross])
    out["news_dev_macro_f1_cross_fitted"] = round(
        float(classification_report(ys.tolist(), ps.tolist(), SENTIMENT_LABELS)["macro_f1"]), 4)
    return out


def export(ckpt_dir: str | Path, artifact_dir: str | Path = ARTIFACT_DIR, build_dir: str | Path = BUILD_DIR,
           *, version: str, max_length: int = 128, static: bool = True, decide: bool = True,
           reference_dir: str | Path | None = None, max_tweet_drop: float = 0.005) -> dict:
    """Full export: fp32 -> optimised fp32 -> int8 (static activation scales); copy tokenizer; write the
    manifest with the fitted decision rule.

    :param ckpt_dir: checkpoint written by :func:`finpulse.models.train.train`.
    :param artifact_dir: where the shipped files go.
    :param build_dir: where the unshipped fp32 files go.
    :param version: model version recorded in the manifest.
    :param max_length: runtime token limit.
    :param static: freeze the activation scales (labels independent of the batch); ``False`` ships the
        dynamically quantised file.
    :param decide: fit and record the decision rule (:func:`fit_decision`).
    :param reference_dir: the release in force, the decision rule's tweet guard reference (:func:`fit_decision`).
    :param max_tweet_drop: the decision rule's tweet guard allowance.
    :returns: the manifest.
    """
    from .network import base_encoder_dir

    ckpt, art, build = Path(ckpt_dir), Path(artifact_dir), Path(build_dir)
    art.mkdir(parents=True, exist_ok=True)
    build.mkdir(parents=True, exist_ok=True)
    fp32 = export_fp32(ckpt, build / "model.fp32.onnx")
    opt = optimize_fp32(fp32, build / "model.fp32.opt.onnx")
    shutil.copyfile(base_encoder_dir() / "tokenizer.json", art / "tokenizer.json")
    recipe = json.loads((ckpt / "recipe.json").read_text())
    if static:
        dynamic = quantize_int8(opt, build / "model.int8.dynamic.onnx")
        make_static(dynamic, art / "model.int8.onnx", art / "tokenizer.json", calibration_texts(recipe))
        recipe = {**recipe, "quantization": "int8, weights per output channel, static activation scales "
                                            f"(MinMax on {CALIBRATION_TWEETS} training tweets + news train split)"}
    else:
        quantize_int8(opt, art / "model.int8.onnx")
    manifest = write_manifest(art, version=version, max_length=max_length, recipe=recipe)
    if decide:
        manifest["decision"] = fit_decision(art, recipe, max_tweet_drop, reference_dir)
        (art / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
