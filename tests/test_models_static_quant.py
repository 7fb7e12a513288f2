"""Static activation scales make the int8 model's labels independent of the batch (models/static_quant.py)."""

from __future__ import annotations

import random

import pytest

from finpulse.models import Classifier
from finpulse.models.data import load_split
from finpulse.models.normalize import normalize_text
from finpulse.models.static_quant import activation_ranges, freeze_activation_scales


@pytest.fixture(scope="module")
def static_model(tmp_path_factory):
    clf = Classifier(device="cpu")
    src = clf.manifest["_dir"] + "/" + clf.manifest["files"]["cpu"]["path"]
    calib = [e.text for e in load_split("sentiment", "train")][:300]  # never the validation splits
    ranges = activation_ranges(src, (e.ids for e in clf.tokenizer.encode_batch([normalize_text(t) for t in calib])))
    return freeze_activation_scales(src, tmp_path_factory.mktemp("sq") / "model.static.onnx", ranges)


def relabel(clf: Classifier, texts: list[str], batch: int, seed: int) -> list[tuple[str, str]]:
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    out: dict[int, tuple[str, str]] = {}
    for i in range(0, len(order), batch):
        chunk = order[i:i + batch]
        for j, r in zip(chunk, clf.classify([texts[k] for k in chunk]), strict=True):
            out[j] = (r["topic"], r["sentiment"])
    return [out[i] for i in range(len(texts))]


def test_labels_do_not_depend_on_the_batch_with_static_scales(static_model):
    texts = [e.text for e in load_split("topic", "valid")][:600]
    static = Classifier(device="cpu", batch_size=32, onnx_path=static_model)
    reference = relabel(static, texts, 1, 0)  # each headline alone
    for batch, seed in ((32, 1), (17, 2), (64, 3)):
        assert relabel(static, texts, batch, seed) == reference
    # the dynamically quantised model it was made from does change labels with the batch
    dynamic = Classifier(device="cpu", batch_size=32)
    alone = relabel(dynamic, texts, 1, 0)
    assert any(relabel(dynamic, texts, b, s) != alone for b, s in ((32, 1), (17, 2), (64, 3)))
    # and the static model agrees with it on almost every headline
    agree = sum(a == b for a, b in zip(alone, reference, strict=True)) / len(texts)
    assert agree > 0.95
