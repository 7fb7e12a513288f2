"""Static activation scales make the int8 model's labels independent of the batch (models/static_quant.py).

The shipped model has them (since minilm-mt-2026.11.29). These tests thaw them back into the dynamic
quantisers they replaced, show that the dynamic model's labels move with the batch, and that freezing
scales calibrated on training headlines makes them stable again.
"""

from __future__ import annotations

import random

import onnx
import pytest

from finpulse.models import Classifier
from finpulse.models.data import load_split
from finpulse.models.normalize import normalize_text
from finpulse.models.static_quant import activation_ranges, freeze_activation_scales, thaw_activation_scales


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    clf = Classifier(device="cpu")
    shipped = clf.manifest["_dir"] + "/" + clf.manifest["files"]["cpu"]["path"]
    d = tmp_path_factory.mktemp("sq")
    dynamic = thaw_activation_scales(shipped, d / "model.dynamic.onnx")
    calib = [e.text for e in load_split("sentiment", "train")][:300]  # never the validation splits
    ranges = activation_ranges(dynamic, (e.ids for e in clf.tokenizer.encode_batch([normalize_text(t) for t in calib])))
    return {"shipped": shipped, "dynamic": dynamic,
            "static": freeze_activation_scales(dynamic, d / "model.static.onnx", ranges)}


def relabel(clf: Classifier, texts: list[str], batch: int, seed: int) -> list[tuple[str, str]]:
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    out: dict[int, tuple[str, str]] = {}
    for i in range(0, len(order), batch):
        chunk = order[i:i + batch]
        for j, r in zip(chunk, clf.classify([texts[k] for k in chunk]), strict=True):
            out[j] = (r["topic"], r["sentiment"])
    return [out[i] for i in range(len(texts))]


def test_the_shipped_model_has_static_scales_and_thawing_restores_the_dynamic_quantisers(models):
    ops = [n.op_type for n in onnx.load(str(models["shipped"])).graph.node]
    assert "DynamicQuantizeLinear" not in ops and "QuantizeLinear" in ops
    thawed = [n.op_type for n in onnx.load(str(models["dynamic"])).graph.node]
    assert thawed.count("DynamicQuantizeLinear") == ops.count("QuantizeLinear") and "QuantizeLinear" not in thawed


def test_labels_do_not_depend_on_the_batch_with_static_scales(models):
    texts = [e.text for e in load_split("topic", "valid")][:600]
    static = Classifier(device="cpu", batch_size=32, onnx_path=models["static"])
    reference = relabel(static, texts, 1, 0)  # each headline alone
    for batch, seed in ((32, 1), (17, 2), (64, 3)):
        assert relabel(static, texts, batch, seed) == reference
    # the dynamically quantised model does change labels with the batch
    dynamic = Classifier(device="cpu", batch_size=32, onnx_path=models["dynamic"])
    alone = relabel(dynamic, texts, 1, 0)
    assert any(relabel(dynamic, texts, b, s) != alone for b, s in ((32, 1), (17, 2), (64, 3)))
    # and the static model agrees with it on almost every headline
    agree = sum(a == b for a, b in zip(alone, reference, strict=True)) / len(texts)
    assert agree > 0.95
