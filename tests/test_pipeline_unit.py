"""The classify agent's logic without Kafka: parsing, dead letters, batch splitting."""

from __future__ import annotations

import base64
import json

import pytest

from finpulse.core.errors import BadMessage
from finpulse.core.messages import validate
from finpulse.stream.messages import parse_raw
from finpulse.stream.pipeline import RawItem, score_batch

NOW = 1_700_000_000.0


def fake_result(text: str) -> dict:
    return {"topic": "Macro", "topic_score": 0.9, "topics_top3": [{"topic": "Macro", "score": 0.9}],
            "sentiment": "negative", "sentiment_probs": {"negative": 0.8, "positive": 0.1, "neutral": 0.1},
            "sentiment_score": -0.7, "model_version": "test"}


def classify_ok(texts):
    return [fake_result(t) for t in texts]


def raw(i: int, **over) -> bytes:
    msg = {"id": f"n{i}", "title": f"Headline {i} $AAPL", "published_at": "2023-11-14T22:00:00Z", **over}
    return json.dumps(msg).encode()


def items(values):
    return [RawItem(v, "news.raw", 0, i) for i, v in enumerate(values)]


@pytest.mark.parametrize("value,code", [
    (b"", "empty"),
    (b"\xff\xfe\x00", "not_utf8"),
    (b"{not json", "not_json"),
    (b'"a string"', "not_object"),
    (json.dumps({"id": "x", "published_at": "2023-11-14T22:00:00Z"}).encode(), "missing_title"),
    (json.dumps({"id": "x", "title": "  ", "published_at": "2023-11-14T22:00:00Z"}).encode(), "missing_title"),
    (json.dumps({"id": "x", "title": "t", "published_at": "last tuesday"}).encode(), "bad_time"),
    (json.dumps({"id": "x", "title": "t", "published_at": "2023-11-14T22:00:00"}).encode(), "bad_time"),
    (json.dumps({"id": "x", "title": "t", "published_at": "2023-11-14T23:00:00Z"}).encode(), "future_event"),
    (json.dumps({"id": "x", "title": "t" * 70_000, "published_at": "2023-11-14T22:00:00Z"}).encode(), "oversized"),
    (json.dumps({"title": "t", "published_at": "2023-11-14T22:00:00Z"}).encode(), "schema"),
])
def test_each_bad_input_kind_has_its_reason(value, code):
    with pytest.raises(BadMessage) as exc:
        parse_raw(value, max_bytes=65536, now=NOW, future_tolerance_s=300)
    assert exc.value.code == code


def test_event_time_normalised_to_utc():
    msg = parse_raw(raw(1, published_at="2023-11-15T01:00:00+03:00"), max_bytes=65536, now=NOW,
                    future_tolerance_s=300)
    assert msg["published_at"] == "2023-11-14T22:00:00.000Z"


def test_batch_keeps_good_messages_and_dead_letters_bad_ones():
    values = [raw(0), b"\xff\xfe", raw(2), b"[]", raw(4)]
    out = score_batch(items(values), classify_ok, max_bytes=65536, future_tolerance_s=300, now=NOW)
    assert [m["id"] for m in out.scored] == ["n0", "n2", "n4"]  # input order kept
    assert [(d["offset"], d["reason"].split(":")[0]) for d in out.dead] == [(1, "not_utf8"), (3, "not_object")]
    binary = out.dead[0]
    assert binary["payload_encoding"] == "base64" and base64.b64decode(binary["payload"]) == b"\xff\xfe"
    for d in out.dead:
        validate("news.dlq", d)
    for m in out.scored:
        validate("news.scored", m)
        assert m["tickers"] == ["AAPL"]


def test_failing_batch_is_split_to_isolate_the_culprit():
    calls = []

    def classify_fragile(texts):
        calls.append(len(texts))
        if any("poison" in t for t in texts):
            raise RuntimeError("boom")
        return classify_ok(texts)

    values = [raw(i) for i in range(7)] + [raw(7, title="poison pill")] + [raw(i) for i in range(8, 10)]
    out = score_batch(items(values), classify_fragile, max_bytes=65536, future_tolerance_s=300, now=NOW)
    assert [m["id"] for m in out.scored] == [f"n{i}" for i in range(10) if i != 7]
    assert len(out.dead) == 1 and out.dead[0]["offset"] == 7
    assert "classifier failed" in out.dead[0]["reason"]
    assert calls[0] == 10 and len(calls) > 2


def test_classifier_item_error_goes_to_dlq():
    def classify_with_error(texts):
        return [{"error": "text is empty"} if t == "x" else fake_result(t) for t in texts]

    out = score_batch(items([raw(0, title="x"), raw(1)]), classify_with_error, max_bytes=65536,
                      future_tolerance_s=300, now=NOW)
    assert [m["id"] for m in out.scored] == ["n1"]
    assert out.dead[0]["reason"].startswith("unclassifiable")
