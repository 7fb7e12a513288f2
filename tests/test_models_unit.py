"""Unit tests of the model layer that need no trained model: normalisation, labels, data, metrics, tickers."""

from __future__ import annotations

import pytest

from finpulse.models.batchfile import read_rows
from finpulse.models.data import load_split, stratified_holdout
from finpulse.models.labels import SENTIMENT_LABELS, TOPIC_LABELS, labels_for
from finpulse.models.metrics import classification_report, confusion_matrix
from finpulse.models.normalize import normalize_text
from finpulse.models.tickers import extract_tickers


class TestNormalize:
    def test_urls_removed_and_whitespace_collapsed(self):
        assert normalize_text("Fed hikes   rates https://t.co/abc123 now\n") == "Fed hikes rates now"
        assert normalize_text("see www.example.com/x?y=1 for more") == "see for more"

    def test_html_entities_unescaped_twice(self):
        assert normalize_text("AT&amp;T &amp;amp; Verizon") == "AT&T & Verizon"

    def test_cashtags_upper_cased_and_separated(self):
        assert normalize_text("$aapl,$msft up") == "$AAPL , $MSFT up"
        assert normalize_text("$BRK.B rises") == "$BRK.B rises"

    def test_control_and_zero_width_removed(self):
        assert normalize_text("Apple\u200b beats\u0007 estimates") == "Apple beats estimates"

    def test_empty_and_url_only_become_empty(self):
        assert normalize_text("   ") == ""
        assert normalize_text("https://t.co/xyz") == ""

    def test_non_text_refused(self):
        with pytest.raises(TypeError):
            normalize_text(42)  # type: ignore[arg-type]

    def test_idempotent(self):
        s = "  $tsla &amp; $gm slump https://t.co/q  "
        assert normalize_text(normalize_text(s)) == normalize_text(s)


class TestLabels:
    def test_topic_names_match_upstream(self):
        assert len(TOPIC_LABELS) == 20
        assert TOPIC_LABELS[1] == "Fed | Central Banks"
        assert TOPIC_LABELS[19] == "Stock Movement"

    def test_sentiment_ids_follow_upstream(self):
        # upstream: 0 bearish, 1 bullish, 2 neutral
        assert SENTIMENT_LABELS == ("negative", "positive", "neutral")

    def test_unknown_task(self):
        with pytest.raises(ValueError):
            labels_for("emotion")


class TestData:
    def test_splits_have_upstream_sizes(self):
        assert len(load_split("topic", "train")) == 16990
        assert len(load_split("topic", "valid")) == 4117
        assert len(load_split("sentiment", "train")) == 9543
        assert len(load_split("sentiment", "valid")) == 2388

    def test_holdout_is_stratified_and_disjoint(self):
        exs = load_split("sentiment", "train")
        train, dev = stratified_holdout(exs, 0.1, seed=1)
        assert len(train) + len(dev) == len(exs)
        assert {id(e) for e in train}.isdisjoint({id(e) for e in dev})
        for label in (0, 1, 2):
            share = sum(e.label == label for e in dev) / len(dev)
            full = sum(e.label == label for e in exs) / len(exs)
            assert abs(share - full) < 0.01

    def test_holdout_never_touches_validation_texts(self):
        valid = {e.text for e in load_split("sentiment", "valid")}
        train, dev = stratified_holdout(load_split("sentiment", "train"), 0.1, seed=1)
        # the dev slice comes from the training split only
        overlap = {e.text for e in dev} & valid
        assert len(overlap) <= 5  # upstream has a handful of duplicated tweets across splits


class TestMetrics:
    def test_confusion_and_report(self):
        y_true = [0, 0, 1, 1, 2, 2]
        y_pred = [0, 1, 1, 1, 2, 0]
        cm = confusion_matrix(y_true, y_pred, 3)
        assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
        rep = classification_report(y_true, y_pred, ["a", "b", "c"])
        assert rep["accuracy"] == pytest.approx(4 / 6)
        # per-class F1: a: p=.5 r=.5 -> .5; b: p=2/3 r=1 -> .8; c: p=1 r=.5 -> 2/3
        assert rep["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
        assert rep["per_class"]["b"]["support"] == 2


class TestTickers:
    def test_cashtags(self):
        assert extract_tickers("$CCL $RCL - Nomura points to weakness") == ["CCL", "RCL"]

    def test_given_tickers_win(self):
        assert extract_tickers("$AAPL up", ["msft", "$nvda"]) == ["MSFT", "NVDA"]

    def test_company_names_when_no_cashtag(self):
        assert extract_tickers("Goldman Sachs upgrades Apple") == ["GS", "AAPL"]
        assert extract_tickers("apple pie prices rise") == []

    def test_dedup_and_no_false_dollar_amounts(self):
        assert extract_tickers("$AAPL and $aapl") == ["AAPL"]
        assert extract_tickers("Costs $5 billion") == []


class TestBatchFile:
    def test_jsonl_with_malformed_lines(self, tmp_path):
        p = tmp_path / "in.jsonl"
        p.write_text('{"id": "a", "text": "Fed hikes"}\nnot json\n{"id": "c"}\n\n{"text": "no id"}\n')
        rows = list(read_rows(p))
        assert [(r.line, r.id, r.error is None) for r in rows] == [(1, "a", True), (2, None, False),
                                                                    (3, "c", False), (5, 5, True)]
        assert "not JSON" in rows[1].error

    def test_csv_and_text(self, tmp_path):
        c = tmp_path / "in.csv"
        c.write_text('id,text\n1,"Fed hikes, again"\n2,Oil slumps\n')
        assert [(r.id, r.text) for r in read_rows(c)] == [("1", "Fed hikes, again"), ("2", "Oil slumps")]
        t = tmp_path / "in.txt"
        t.write_text("Fed hikes\n\nOil slumps\n")
        assert [(r.line, r.text) for r in read_rows(t)] == [(1, "Fed hikes"), (3, "Oil slumps")]

    def test_csv_without_text_column(self, tmp_path):
        c = tmp_path / "in.csv"
        c.write_text("headline\nx\n")
        with pytest.raises(ValueError, match="text"):
            list(read_rows(c))
