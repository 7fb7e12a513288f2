"""The message models of :mod:`finpulse.core.messages` and the JSON Schemas generated from them.

* the checked-in ``core/schemas/*.json`` are what :mod:`finpulse.core.schemagen` generates (a model change without
  ``python -m finpulse.core.schemagen`` fails here);
* for each message type, valid and invalid examples get the same verdict from :func:`validate` (the models) and
  from a jsonschema ``Draft202012Validator`` built from the generated document. Every verdict below was also
  the verdict of the hand-written schemas these models replaced (checked once against those files), so the
  replacement accepts and refuses what they did.
"""

from __future__ import annotations

import copy
import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from finpulse.core import schemagen
from finpulse.core.errors import BadMessage
from finpulse.core.messages import (
    MODELS,
    SCHEMA_NAMES,
    Alert,
    DeadLetter,
    NewsRaw,
    NewsScored,
    schema_text,
    validate,
)

_DROP = object()  # a change that removes the key

Message = dict[str, Any]


def changed(base: Message, path: str, value: Any) -> Message:
    """A deep copy of ``base`` with the key at ``path`` (``a/0/b``) set to ``value`` or, for ``_DROP``, removed.

    :param base: the valid example.
    :param path: keys and list indexes joined by ``/``.
    :param value: the new value.
    """
    out = copy.deepcopy(base)
    *parents, last = path.split("/")
    node: Any = out
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is _DROP:
        del node[last]
    else:
        node[last] = value
    return out


RAW: Message = {"id": "n1", "title": "Fed holds rates", "published_at": "2026-01-05T14:03:00Z"}
RAW_FULL: Message = {
    **RAW,
    "summary": "The committee kept the target range unchanged.",
    "url": "https://example.com/fed",
    "source": "Example Wire",
    "fetched_at": "2026-01-05T14:04:00.000Z",
    "published_at_inferred": False,
    "tickers": ["AAPL", "BRK.B", "X"],
    "lang": "en",
    "tags": ["macro", "rates"],
    "duplicate_of": None,
    "published_at_precision": "day",  # a key the schema does not name
}
SCORED: Message = {
    **RAW,
    "tickers": ["AAPL"],
    "topic": "Fed | Central Banks",
    "topic_score": 0.91,
    "topics_top3": [{"topic": "Fed | Central Banks", "score": 0.91}, {"topic": "Macro", "score": 0.05}],
    "sentiment": "negative",
    "sentiment_probs": {"negative": 0.8, "positive": 0.1, "neutral": 0.1},
    "sentiment_score": -0.7,
    "model_version": "minilm-2026.01",
    "classified_at": "2026-01-05T14:03:01.250Z",
}
DLQ: Message = {
    "reason": "missing_title: title is required and must be a non-empty string",
    "payload": '{"id": "x"}',
    "payload_encoding": "utf-8",
    "topic": "news.raw",
    "partition": 0,
    "offset": 42,
    "stage": "classify",
    "failed_at": "2026-01-05T14:03:00.000Z",
}
HEADLINE: Message = {
    "id": "n7",
    "title": "Bank X misses estimates",
    "url": "https://example.com/x",
    "source": "Example Wire",
    "published_at": "2026-01-05T14:01:00.000Z",
    "sentiment_score": -0.9,
}
ALERT: Message = {
    "alert_id": "al_" + "0123456789abcdef" * 2,
    "event_id": "al_" + "0123456789abcdef" * 2 + ".fired.warning",
    "status": "fired",
    "rule": "market",
    "scope": "ticker:AAPL",
    "scope_type": "ticker",
    "severity": "warning",
    "namespace": "live",
    "window_start": "2026-01-05T13:00:00.000Z",
    "window_end": "2026-01-05T14:00:00.000Z",
    "baseline_start": "2026-01-04T14:00:00.000Z",
    "baseline_end": "2026-01-05T13:00:00.000Z",
    "count": 20,
    "negative_count": 12,
    "positive_count": 3,
    "neutral_count": 5,
    "negative_rate": 0.6,
    "mean_score": -0.35,
    "baseline_count": 300,
    "baseline_negative_count": 60,
    "baseline_rate": 0.2,
    "threshold": 0.5,
    "resolve_below": 0.3,
    "spike_test": "wilson",
    "statistic": 0.39,
    "statistic_threshold": 0.35,
    "z_score": 4.4,
    "wilson_lower": 0.39,
    "fired_window_end": "2026-01-05T14:00:00.000Z",
    "top_headlines": [HEADLINE, {**HEADLINE, "id": "n8", "url": None, "source": None, "sentiment_score": -0.8}],
    "model_version": "m1",
    "created_at": "2026-01-05T14:00:05.123Z",
}
ALERT_OPTIONAL = ("test", "positive_count", "neutral_count", "mean_score", "resolve_below")
ALERT_REQUIRED = [key for key in ALERT if key not in ALERT_OPTIONAL]

#: (label, message) pairs every validator must accept, by message type
ACCEPTED: dict[str, list[tuple[str, Any]]] = {
    "news.raw": [
        ("minimal", RAW),
        ("full, with an unnamed key", RAW_FULL),
        *[(f"{key} null", changed(RAW_FULL, key, None))
          for key in ("summary", "url", "source", "fetched_at", "tickers", "lang", "tags", "duplicate_of")],
        ("title with leading space", changed(RAW, "title", "  x")),
        ("id of 512", changed(RAW, "id", "i" * 512)),
        ("title of 2000", changed(RAW, "title", "t" * 2000)),
        ("summary of 20000", changed(RAW, "summary", "s" * 20000)),
        ("50 tickers", changed(RAW, "tickers", ["AAPL"] * 50)),
        ("ticker of 10", changed(RAW, "tickers", ["ABCDEFGH-1"])),
        ("no tickers", changed(RAW, "tickers", [])),
        ("published_at_inferred true", changed(RAW, "published_at_inferred", True)),
        # `format: date-time` was never enforced by validate(): time strings are checked by parse_time
        ("published_at not a date", changed(RAW, "published_at", "last tuesday")),
        # patterns are searched with Python's re, whose `$` also matches before a final newline
        ("ticker with final newline", changed(RAW, "tickers", ["AAPL\n"])),
    ],
    "news.scored": [
        ("scored", SCORED),
        ("with raw's optional keys and an unnamed key", {**RAW_FULL, **SCORED, "extra": {"k": [1]}}),
        ("no tickers", changed(SCORED, "tickers", [])),
        ("one topic", changed(SCORED, "topics_top3", [{"topic": "Macro", "score": 1}])),
        ("three topics", changed(SCORED, "topics_top3", [{"topic": "a", "score": 0.5}] * 3)),
        ("topic with unnamed key", changed(SCORED, "topics_top3/0/rank", 1)),
        ("probs with unnamed key", changed(SCORED, "sentiment_probs/other", 0.0)),
        ("integer score bounds", changed(changed(SCORED, "sentiment_score", -1), "topic_score", 1)),
        ("float score bound", changed(SCORED, "sentiment_score", 1.0)),
        ("unbounded probability", changed(SCORED, "sentiment_probs/negative", 7)),
        ("positive", changed(SCORED, "sentiment", "positive")),
    ],
    "news.dlq": [
        ("dead letter", DLQ),
        ("without stage", changed(DLQ, "stage", _DROP)),
        ("base64", changed(DLQ, "payload_encoding", "base64")),
        ("unnamed key", changed(DLQ, "error_class", "ValueError")),
        ("negative offset", changed(DLQ, "offset", -1)),
        ("big offset", changed(DLQ, "offset", 2**70)),
        ("integer-valued float", changed(DLQ, "partition", 3.0)),
        ("empty payload", changed(DLQ, "payload", "")),
    ],
    "alert": [
        ("fired", ALERT),
        ("minimal", {k: v for k, v in ALERT.items() if k not in ALERT_OPTIONAL}),
        ("resolved", changed(ALERT, "status", "resolved")),
        ("test record", changed(ALERT, "test", True)),
        ("test false", changed(ALERT, "test", False)),
        ("mean_score null", changed(ALERT, "mean_score", None)),
        ("empty window", changed(changed(ALERT, "count", 0), "negative_rate", 0)),
        ("no headlines", changed(ALERT, "top_headlines", [])),
        ("five headlines", changed(ALERT, "top_headlines", [HEADLINE] * 5)),
        ("headline without id", changed(ALERT, "top_headlines/0/id", _DROP)),
        ("headline with unnamed key", changed(ALERT, "top_headlines/0/topic", "Macro")),
        ("unnamed key", changed(ALERT, "calm_since", None)),
        ("negative threshold and statistics", changed(changed(ALERT, "z_score", -3), "statistic", -1.5)),
        ("integer-valued float count", changed(ALERT, "count", 20.0)),
        ("zscore test", changed(ALERT, "spike_test", "zscore")),
        ("scope all", changed(changed(ALERT, "scope", "all"), "scope_type", "all")),
    ],
}

#: (label, message) pairs every validator must refuse, by message type
REFUSED: dict[str, list[tuple[str, Any]]] = {
    "news.raw": [
        ("not an object", [RAW]),
        ("a string", json.dumps(RAW)),
        *[(f"no {key}", changed(RAW, key, _DROP)) for key in ("id", "title", "published_at")],
        ("empty id", changed(RAW, "id", "")),
        ("id of 513", changed(RAW, "id", "i" * 513)),
        ("int id", changed(RAW, "id", 1)),
        ("null id", changed(RAW, "id", None)),
        ("blank title", changed(RAW, "title", " \t\n ")),
        ("empty title", changed(RAW, "title", "")),
        ("title of 2001", changed(RAW, "title", "t" * 2001)),
        ("number title", changed(RAW, "title", 1.5)),
        ("null title", changed(RAW, "title", None)),
        ("summary of 20001", changed(RAW, "summary", "s" * 20001)),
        ("int summary", changed(RAW, "summary", 5)),
        ("url of 4097", changed(RAW, "url", "u" * 4097)),
        ("source of 257", changed(RAW, "source", "s" * 257)),
        ("lang of 17", changed(RAW, "lang", "l" * 17)),
        ("epoch published_at", changed(RAW, "published_at", 1767621780)),
        ("null published_at", changed(RAW, "published_at", None)),
        ("int fetched_at", changed(RAW, "fetched_at", 5)),
        ("published_at_inferred string", changed(RAW, "published_at_inferred", "true")),
        ("published_at_inferred int", changed(RAW, "published_at_inferred", 1)),
        ("published_at_inferred null", changed(RAW, "published_at_inferred", None)),
        ("tickers string", changed(RAW, "tickers", "AAPL")),
        ("tickers tuple", changed(RAW, "tickers", ("AAPL",))),
        ("lower-case ticker", changed(RAW, "tickers", ["aapl"])),
        ("cashtag", changed(RAW, "tickers", ["$AAPL"])),
        ("ticker of 11", changed(RAW, "tickers", ["ABCDEFGHIJK"])),
        ("digit-first ticker", changed(RAW, "tickers", ["1AB"])),
        ("int ticker", changed(RAW, "tickers", [1])),
        ("51 tickers", changed(RAW, "tickers", ["AAPL"] * 51)),
        ("int tag", changed(RAW, "tags", ["ok", 1])),
        ("tags string", changed(RAW, "tags", "macro")),
        ("int duplicate_of", changed(RAW, "duplicate_of", 3)),
    ],
    "news.scored": [
        ("raw only", RAW_FULL),
        *[(f"no {key}", changed(SCORED, key, _DROP)) for key in SCORED],
        ("null tickers", changed(SCORED, "tickers", None)),
        ("lower-case ticker (from news.raw)", changed(SCORED, "tickers", ["aapl"])),
        ("title of 2001 (from news.raw)", changed(SCORED, "title", "t" * 2001)),
        ("int summary (from news.raw)", changed(SCORED, "summary", 1)),
        ("topic_score over 1", changed(SCORED, "topic_score", 1.5)),
        ("topic_score below 0", changed(SCORED, "topic_score", -0.1)),
        ("topic_score string", changed(SCORED, "topic_score", "0.5")),
        ("topic_score bool", changed(SCORED, "topic_score", True)),
        ("null topic", changed(SCORED, "topic", None)),
        ("no topics", changed(SCORED, "topics_top3", [])),
        ("four topics", changed(SCORED, "topics_top3", [{"topic": "a", "score": 0.5}] * 4)),
        ("topic without score", changed(SCORED, "topics_top3/0/score", _DROP)),
        ("topic score string", changed(SCORED, "topics_top3/1/score", "0.9")),
        ("topic name int", changed(SCORED, "topics_top3/0/topic", 1)),
        ("topics_top3 object", changed(SCORED, "topics_top3", {"topic": "a", "score": 0.5})),
        ("unknown sentiment", changed(SCORED, "sentiment", "bearish")),
        ("capitalised sentiment", changed(SCORED, "sentiment", "Negative")),
        ("null sentiment", changed(SCORED, "sentiment", None)),
        ("probs without neutral", changed(SCORED, "sentiment_probs/neutral", _DROP)),
        ("prob string", changed(SCORED, "sentiment_probs/positive", "0.1")),
        ("prob bool", changed(SCORED, "sentiment_probs/positive", False)),
        ("probs list", changed(SCORED, "sentiment_probs", [0.8, 0.1, 0.1])),
        ("sentiment_score over 1", changed(SCORED, "sentiment_score", 1.01)),
        ("sentiment_score below -1", changed(SCORED, "sentiment_score", -2)),
        ("int model_version", changed(SCORED, "model_version", 1)),
        ("null classified_at", changed(SCORED, "classified_at", None)),
    ],
    "news.dlq": [
        *[(f"no {key}", changed(DLQ, key, _DROP)) for key in DLQ if key != "stage"],
        ("unknown encoding", changed(DLQ, "payload_encoding", "latin-1")),
        ("null payload", changed(DLQ, "payload", None)),
        ("bytes payload", changed(DLQ, "payload", b"x")),
        ("int reason", changed(DLQ, "reason", 1)),
        ("partition string", changed(DLQ, "partition", "1")),
        ("partition bool", changed(DLQ, "partition", True)),
        ("partition fraction", changed(DLQ, "partition", 1.5)),
        ("null offset", changed(DLQ, "offset", None)),
        ("null stage", changed(DLQ, "stage", None)),
        ("int stage", changed(DLQ, "stage", 1)),
        ("int topic", changed(DLQ, "topic", 0)),
        ("epoch failed_at", changed(DLQ, "failed_at", 1767621780.5)),
    ],
    "alert": [
        *[(f"no {key}", changed(ALERT, key, _DROP)) for key in ALERT_REQUIRED],
        ("short alert_id", changed(ALERT, "alert_id", "al_" + "0" * 31)),
        ("upper-case alert_id", changed(ALERT, "alert_id", "al_" + "0123456789ABCDEF" * 2)),
        ("alert_id without prefix", changed(ALERT, "alert_id", "0123456789abcdef" * 2)),
        ("int event_id", changed(ALERT, "event_id", 7)),
        ("unknown status", changed(ALERT, "status", "open")),
        ("unknown scope_type", changed(ALERT, "scope_type", "sector")),
        ("unknown severity", changed(ALERT, "severity", "high")),
        ("test string", changed(ALERT, "test", "yes")),
        ("test null", changed(ALERT, "test", None)),
        ("negative count", changed(ALERT, "count", -1)),
        ("count string", changed(ALERT, "count", "20")),
        ("count bool", changed(ALERT, "count", True)),
        ("count fraction", changed(ALERT, "count", 20.5)),
        ("null count", changed(ALERT, "count", None)),
        ("negative positive_count", changed(ALERT, "positive_count", -1)),
        ("null neutral_count", changed(ALERT, "neutral_count", None)),
        ("negative_rate over 1", changed(ALERT, "negative_rate", 1.5)),
        ("mean_score over 1", changed(ALERT, "mean_score", 2)),
        ("mean_score string", changed(ALERT, "mean_score", "-0.3")),
        ("baseline_rate below 0", changed(ALERT, "baseline_rate", -0.1)),
        ("negative baseline_count", changed(ALERT, "baseline_count", -5)),
        ("threshold string", changed(ALERT, "threshold", "0.5")),
        ("null threshold", changed(ALERT, "threshold", None)),
        ("null resolve_below", changed(ALERT, "resolve_below", None)),
        ("unknown spike_test", changed(ALERT, "spike_test", "t-test")),
        ("wilson_lower over 1", changed(ALERT, "wilson_lower", 1.1)),
        ("z_score bool", changed(ALERT, "z_score", False)),
        ("six headlines", changed(ALERT, "top_headlines", [HEADLINE] * 6)),
        ("headlines object", changed(ALERT, "top_headlines", HEADLINE)),
        *[(f"headline without {key}", changed(ALERT, f"top_headlines/1/{key}", _DROP))
          for key in ("title", "url", "source", "published_at", "sentiment_score")],
        ("headline score below -1", changed(ALERT, "top_headlines/0/sentiment_score", -1.5)),
        ("headline null id", changed(ALERT, "top_headlines/0/id", None)),
        ("headline int id", changed(ALERT, "top_headlines/0/id", 5)),
        ("headline int url", changed(ALERT, "top_headlines/0/url", 5)),
        ("headline string", changed(ALERT, "top_headlines", ["Bank X misses estimates"])),
        ("null created_at", changed(ALERT, "created_at", None)),
        ("int model_version", changed(ALERT, "model_version", 1)),
    ],
}

CASES = [
    pytest.param(name, message, verdict, id=f"{name}: {'accepts' if verdict else 'refuses'} {label}")
    for verdict, table in ((True, ACCEPTED), (False, REFUSED))
    for name, cases in table.items()
    for label, message in cases
]


@cache
def generated_validator(name: str) -> Draft202012Validator:
    """A jsonschema validator of the document generated from the model of ``name`` (no format checker, as before).

    :param name: one of :data:`SCHEMA_NAMES`.
    """
    document = schemagen.schema_documents()[name]
    Draft202012Validator.check_schema(document)
    return Draft202012Validator(document)


def models_accept(name: str, message: Any) -> bool:
    """The verdict of :func:`validate`: accepted, or refused with a ``schema`` :class:`BadMessage`.

    :param name: one of :data:`SCHEMA_NAMES`.
    :param message: the example.
    """
    try:
        validate(name, message)
    except BadMessage as exc:
        assert exc.code == "schema" and exc.detail.startswith(f"{name} ")
        return False
    return True


def test_checked_in_schemas_are_generated_from_the_models() -> None:
    documents = schemagen.schema_documents()
    assert sorted(documents) == sorted(SCHEMA_NAMES) == sorted(MODELS)
    for name, document in documents.items():
        assert json.loads(schema_text(name)) == document, f"run python -m finpulse.core.schemagen ({name})"
        assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert document["$id"] == f"https://finpulse.dev/schemas/{name}.json"
    assert schemagen.stale_files() == [], "run python -m finpulse.core.schemagen"
    assert schemagen.main(["--check"]) == 0


def test_titles_and_descriptions_are_kept() -> None:
    documents = schemagen.schema_documents()
    assert [documents[n]["title"] for n in SCHEMA_NAMES] == ["news.raw", "news.scored", "news.dlq", "alerts"]
    assert documents["news.raw"]["description"].startswith("A crawled or replayed headline, as produced to the")
    assert documents["news.raw"]["properties"]["title"]["description"] == "Headline, plain text (no HTML)."
    assert "\n" not in json.dumps(documents)  # descriptions from docstrings are on one line
    alert = documents["alert"]["properties"]
    assert alert["top_headlines"]["description"].startswith("The most negative (sentiment 'negative') headlines")
    assert alert["created_at"] == {
        "description": "Wall-clock time the record was created (the only field that differs between a live run and "
        "a replay).",
        "format": "date-time",
        "type": "string",
    }


def test_generator_check_and_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert schemagen.main(["--check", "--dir", str(tmp_path)]) == 1  # all missing
    assert sorted(p.name for p in schemagen.write_schemas(tmp_path)) == sorted(f"{n}.json" for n in SCHEMA_NAMES)
    assert schemagen.write_schemas(tmp_path) == []  # deterministic: nothing to rewrite
    assert schemagen.main(["--check", "--dir", str(tmp_path)]) == 0
    raw = tmp_path / "news.raw.json"
    text = raw.read_text(encoding="utf-8")
    assert text.endswith("}\n") and text.startswith('{\n  "$schema": ')
    raw.write_text(text.replace('"maxLength": 512', '"maxLength": 513'), encoding="utf-8")
    capsys.readouterr()
    assert schemagen.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "news.raw.json" in capsys.readouterr().err
    assert schemagen.main(["--dir", str(tmp_path)]) == 0
    assert raw.read_text(encoding="utf-8") == text


@pytest.mark.parametrize("name,message,verdict", CASES)
def test_models_and_generated_schema_agree(name: str, message: Any, verdict: bool) -> None:
    assert models_accept(name, message) is verdict
    assert generated_validator(name).is_valid(message) is verdict


def test_every_type_has_cases() -> None:
    for name in SCHEMA_NAMES:
        assert len(ACCEPTED[name]) >= 5 and len(REFUSED[name]) >= 10


@pytest.mark.parametrize("name,message,detail", [
    ("news.raw", changed(RAW, "id", _DROP), "news.raw (root): 'id' is a required property"),
    ("news.raw", [RAW], "news.raw (root): Input should be a valid dictionary or instance of NewsRaw"),
    ("news.raw", changed(RAW, "tickers", ["AAPL", "aapl"]),
     "news.raw tickers/1: String should match pattern '^[A-Z][A-Z0-9.\\-]{0,9}$'"),
    ("news.scored", changed(SCORED, "topics_top3/1/score", _DROP),
     "news.scored topics_top3/1: 'score' is a required property"),
    ("news.dlq", changed(DLQ, "partition", "1"), "news.dlq partition: Input should be a valid integer"),
    ("alert", changed(ALERT, "top_headlines/0/sentiment_score", -2),
     "alert top_headlines/0/sentiment_score: Input should be greater than or equal to -1"),
])
def test_error_names_the_first_failing_path(name: str, message: Any, detail: str) -> None:
    with pytest.raises(BadMessage) as exc:
        validate(name, message)
    assert exc.value.code == "schema" and exc.value.detail == detail
    assert exc.value.reason == f"schema: {detail}"


def test_unknown_message_type() -> None:
    with pytest.raises(ValueError, match="unknown message type 'news.other'"):
        validate("news.other", RAW)


@pytest.mark.parametrize("model,message", [
    (NewsRaw, RAW),
    (NewsRaw, RAW_FULL),
    (NewsScored, {**RAW_FULL, **SCORED}),
    (DeadLetter, DLQ),
    (DeadLetter, changed(DLQ, "stage", _DROP)),
    (Alert, ALERT),
    (Alert, changed(changed(ALERT, "top_headlines/0/id", _DROP), "mean_score", None)),
])
def test_to_wire_keeps_the_shape(model: type[NewsRaw | DeadLetter | Alert], message: Message) -> None:
    wire = model.model_validate(message).to_wire()
    assert wire == message  # the same keys: omitted stay omitted, nulls stay null, unnamed keys kept
    assert json.loads(json.dumps(wire)) == wire


def test_dead_letters_of_the_pipeline_round_trip() -> None:
    from finpulse.stream.messages import dead_letter

    for value in (b'{"id": 1}', b"\xff\xfe"):
        record = dead_letter(value, "not_json: x", topic="news.raw", partition=2, offset=9, stage="classify",
                             now=1_767_621_780.0)
        assert DeadLetter.model_validate(record).to_wire() == record


def test_models_read_typed_values() -> None:
    scored = NewsScored.model_validate(SCORED)
    assert scored.tickers == ["AAPL"] and scored.sentiment_probs.negative == 0.8
    assert scored.summary is None and scored.published_at_inferred is None  # omitted reads as None
    dlq = DeadLetter.model_validate(changed(DLQ, "partition", 3.0))
    assert dlq.partition == 3 and type(dlq.partition) is int and dlq.to_wire()["partition"] == 3
    alert = Alert.model_validate(ALERT)
    assert alert.top_headlines[1].url is None and alert.count == 20
    assert NewsRaw.model_validate(RAW_FULL).model_extra == {"published_at_precision": "day"}


def test_nan_is_refused_where_bounded() -> None:
    """The one place where the models are stricter than the documents (and the old schemas): NaN is no JSON
    value, and jsonschema's ``minimum``/``maximum`` let it through (every comparison with NaN is false)."""
    assert not models_accept("news.scored", changed(SCORED, "sentiment_score", math.nan))
    assert generated_validator("news.scored").is_valid(changed(SCORED, "sentiment_score", math.nan))
    assert models_accept("news.scored", changed(SCORED, "sentiment_probs/neutral", math.nan))  # unbounded
