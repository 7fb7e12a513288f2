"""Message formats of the news pipeline: typed models, validation and event-time parsing.

The pydantic models below are the one definition of the ``news.raw``, ``news.scored``, ``news.dlq`` and
alert record formats. The JSON Schemas in ``core/schemas/`` (package data, for consumers in other
languages) are generated from them by :mod:`finpulse.core.schemagen` (``python -m finpulse.core.schemagen``);
a test fails when the checked-in files and the models disagree.

The models accept and refuse what those JSON Schemas (draft 2020-12) accept and refuse:

* strict types: no coercion (``"1"`` is not an integer, ``1`` is not a string, ``True`` is not a number);
  an integer-valued float such as ``1.0`` is an integer, as in JSON Schema (it becomes ``1``);
* keys the model does not name are allowed and kept (``additionalProperties``);
* an optional key that is not nullable may be left out but not be ``null``;
* ``pattern`` is searched with Python's :mod:`re`, as :mod:`jsonschema` does;
* ``format: date-time`` is documentation only, as it always was: time strings are checked where they are
  used (:func:`parse_time`, :mod:`finpulse.stream.messages`).

Pure functions: no Kafka, no Redis; nothing is built or read at import time beyond the class definitions.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from importlib import resources
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import CoreSchema, ErrorDetails

from . import rfc3339
from .errors import BadMessage
from .tickers import TICKER_RE

SCHEMA_NAMES = ("news.raw", "news.scored", "news.dlq", "alert")

#: the ``$id`` of message type ``name`` is ``SCHEMA_BASE_URI + name + ".json"``
SCHEMA_BASE_URI: Final = "https://finpulse.dev/schemas/"


class _NotNull:
    """Annotation of an optional key that may be omitted but, when present, must not be ``null``.

    Used as ``Annotated[T | None, NOT_NULL] = None``: the Python type says "absent reads as ``None``",
    while validation and the JSON Schema only allow ``T`` (the default is not validated).
    """

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        """Validate as the non-null member of ``source`` only.

        :param source: the annotated type, ``T | None``.
        :param handler: builds the core schema of ``source``.
        """
        schema = handler(source)
        if schema["type"] != "nullable":
            raise TypeError(f"NOT_NULL annotates an optional type (T | None), not {source!r}")
        inner: CoreSchema = schema["schema"]
        return inner


NOT_NULL: Final = _NotNull()


def _integral_float_to_int(value: Any) -> Any:
    """JSON Schema's ``integer`` is a set of values: ``1.0`` is one (returned as ``1``), ``1.5`` and ``True`` are not.

    :param value: the input of an integer field.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: a JSON Schema ``integer``
JsonInt = Annotated[int, BeforeValidator(_integral_float_to_int)]
#: a JSON Schema ``integer`` with ``minimum: 0`` (the constraint sits on ``int`` so the schema says ``minimum``)
Count = Annotated[int, Field(ge=0), BeforeValidator(_integral_float_to_int)]
#: a ``number`` in [0, 1]
Unit = Annotated[float, Field(ge=0, le=1)]
#: a ``number`` in [-1, 1]
Signed = Annotated[float, Field(ge=-1, le=1)]
#: a string documented as ``format: date-time`` (RFC 3339); the format is not enforced by validation
DateTime = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
#: an upper-case ticker symbol (:data:`finpulse.core.tickers.TICKER_RE`)
Ticker = Annotated[str, Field(pattern=TICKER_RE.pattern)]

Sentiment = Literal["negative", "positive", "neutral"]
AlertStatus = Literal["fired", "resolved"]
ScopeType = Literal["all", "topic", "ticker", "entity"]
Severity = Literal["info", "warning", "critical"]
SpikeTest = Literal["wilson", "zscore", "surge"]
PayloadEncoding = Literal["utf-8", "base64"]


class WireModel(BaseModel):
    """Base of every message model: strict JSON types, and keys the model does not name are kept."""

    model_config = ConfigDict(
        strict=True,
        extra="allow",
        regex_engine="python-re",
        protected_namespaces=(),
        ser_json_inf_nan="constants",
    )

    def to_wire(self) -> dict[str, Any]:
        """The message as a plain JSON-ready dict, in the shape producers send today.

        ``model_dump(mode="json")`` without ``None`` filtering (an explicit ``null`` stays), of the keys that were
        given (an omitted optional key stays omitted), in the model's order, then the unnamed keys. For a validated
        message ``model_validate(message).to_wire() == message`` (integer-valued floats such as ``1.0`` become ``1``).
        """
        return self.model_dump(mode="json", exclude_unset=True)


class NewsRaw(WireModel):
    """A crawled or replayed headline, as produced to the news.raw topic (UTF-8 JSON, at most 64 KiB).
    published_at is the event time every window uses.
    """

    model_config = ConfigDict(title="news.raw")

    id: str = Field(
        min_length=1,
        max_length=512,
        description="Stable id: the feed GUID, else sha256 of the canonical URL, else of source+title.",
    )
    title: str = Field(min_length=1, max_length=2000, pattern=r"\S", description="Headline, plain text (no HTML).")
    summary: Annotated[str, Field(max_length=20000)] | None = None
    url: Annotated[str, Field(max_length=4096)] | None = None
    source: Annotated[str, Field(max_length=256)] | None = Field(default=None, description="Feed or publisher name.")
    published_at: DateTime = Field(description="RFC 3339 event time, with offset.")
    fetched_at: DateTime | None = None
    published_at_inferred: Annotated[bool | None, NOT_NULL] = Field(
        default=None, description="True when the feed gave no date and published_at is the fetch time."
    )
    tickers: Annotated[list[Ticker], Field(max_length=50)] | None = None
    lang: Annotated[str, Field(max_length=16)] | None = None
    tags: list[str] | None = None
    duplicate_of: str | None = Field(
        default=None,
        description="Id of the first copy of a near-duplicate (syndicated) story; such a story is scored but not "
        "counted again.",
    )


class TopicScore(WireModel):
    """One of the classifier's best topics."""

    topic: str
    score: float


class SentimentProbs(WireModel):
    """The classifier's sentiment probabilities."""

    negative: float
    positive: float
    neutral: float


class NewsScored(NewsRaw):
    """A news.raw message plus the classifier's output. Keyed by id; partitioned like news.raw."""

    model_config = ConfigDict(title="news.scored")

    tickers: Annotated[list[Ticker], Field(max_length=50)] = Field(
        description="Given tickers, else cashtags ($AAPL) and bundled company names found in the text."
    )
    topic: str = Field(description="One of the 20 upstream topic names, e.g. 'Fed | Central Banks'.")
    topic_score: Unit
    topics_top3: Annotated[list[TopicScore], Field(min_length=1, max_length=3)]
    sentiment: Sentiment
    sentiment_probs: SentimentProbs
    sentiment_score: Signed = Field(description="p(positive) - p(negative).")
    model_version: str
    classified_at: DateTime


class DeadLetter(WireModel):
    """A message the pipeline could not process. payload is the original value: the text itself when it is
    valid UTF-8, else base64 with payload_encoding 'base64'.
    """

    model_config = ConfigDict(title="news.dlq")

    reason: str = Field(
        description="Machine-readable code, a colon, and a human explanation, e.g. 'missing_title: title is "
        "required'."
    )
    payload: str
    payload_encoding: PayloadEncoding
    topic: str
    partition: JsonInt
    offset: JsonInt
    stage: Annotated[str | None, NOT_NULL] = Field(
        default=None, description="Agent that dead-lettered it: classify or aggregate."
    )
    failed_at: DateTime


class TopHeadline(WireModel):
    """One of an alert's most negative headlines."""

    id: Annotated[str | None, NOT_NULL] = None
    title: str
    url: str | None
    source: str | None
    published_at: DateTime
    sentiment_score: Signed


class Alert(WireModel):
    """A negative-sentiment alert record, as produced to the alerts topic (keyed by alert_id) and sent as the
    body of json-format webhooks. One incident (alert_id) yields a 'fired' record, possibly further 'fired'
    records with a higher severity (escalation), and one 'resolved' record. event_id is unique per record and
    is the webhook-id. All times are event times (published_at) except created_at.
    """

    model_config = ConfigDict(title="alerts")

    alert_id: str = Field(
        pattern=r"^al_[0-9a-z]{32}$",
        description="Incident id: 'al_' + 32 hex digits of sha256(rule, scope, firing window). Deterministic: "
        "re-evaluation, redelivery and replay give the same id.",
    )
    event_id: str = Field(
        description="'<alert_id>.<status>.<severity>': unique per record; the Standard Webhooks webhook-id "
        "receivers de-duplicate on."
    )
    sequence: Annotated[int | None, NOT_NULL] = Field(
        default=None, ge=1,
        description="Order of this record within its incident: 'fired' at info 1, warning 2, critical 3, "
        "'resolved' 4. Each endpoint receives an incident's records in this order; a receiver keeps, per "
        "alert_id, the record with the highest sequence (and ignores a lower one arriving later, e.g. after "
        "a retry). Absent only in records from before it was introduced.",
    )
    status: AlertStatus
    test: Annotated[bool | None, NOT_NULL] = Field(
        default=None,
        description="Present and true only on synthetic records sent by 'finpulse alerts test-webhook'.",
    )
    rule: str = Field(description="Name of the rule in the rules file.")
    scope: str = Field(description="'all', 'topic:<name>' or 'ticker:<SYMBOL>'.")
    scope_type: ScopeType
    severity: Severity = Field(description="For 'resolved', the last severity of the incident.")
    namespace: str = Field(description="Run namespace ('live' or a backtest's).")
    window_start: DateTime = Field(
        description="Start of the short window [window_start, window_end) this record was decided on."
    )
    window_end: DateTime
    baseline_start: DateTime = Field(
        description="Baseline window [baseline_start, baseline_end): the period just before the short window."
    )
    baseline_end: DateTime
    count: Count = Field(description="Articles in the short window.")
    negative_count: Count
    positive_count: Annotated[Count | None, NOT_NULL] = None
    neutral_count: Annotated[Count | None, NOT_NULL] = None
    negative_rate: Unit = Field(description="negative_count / count (0 when count is 0).")
    mean_score: Signed | None = Field(
        default=None, description="Mean sentiment_score of the short window; null when empty."
    )
    baseline_count: Count
    baseline_negative_count: Count
    baseline_rate: Unit = Field(
        description="Smoothed baseline negative rate: (baseline_negative_count + prior_rate * prior_weight) / "
        "(baseline_count + prior_weight)."
    )
    threshold: float = Field(
        description="Negative-rate threshold of this record's severity level; for a 'surge' rule the level's "
        "false-alarm probability per scope and decision."
    )
    resolve_below: Annotated[float | None, NOT_NULL] = Field(
        default=None, description="Hysteresis threshold of the rule."
    )
    spike_test: SpikeTest
    statistic: float = Field(
        description="The spike test's statistic: Wilson lower bound of the short-window rate, the binomial "
        "z-score against baseline_rate, or for 'surge' -log10 of the smallest p-value."
    )
    statistic_threshold: float = Field(
        description="What the statistic had to reach to fire (baseline_rate + min_lift, z, or for 'surge' "
        "-log10 of the lowest level over the number of tests)."
    )
    p_value: Annotated[float | None, NOT_NULL] = Field(
        default=None, ge=0, le=1,
        description="'surge' rules: the smallest p-value of the decision (its window is window_start..window_end)."
    )
    surge_test: Annotated[Literal["count", "rate"] | None, NOT_NULL] = Field(
        default=None,
        description="'surge' rules: the test with that p-value: 'count' (negative headlines against the "
        "baseline's negative-binomial count) or 'rate' (beta-binomial negative share)."
    )
    expected_negative_count: Annotated[float | None, NOT_NULL] = Field(
        default=None, ge=0, description="'surge' rules: negative headlines the baseline predicts for the window."
    )
    z_score: float
    wilson_lower: Unit
    fired_window_end: DateTime = Field(description="window_end of the record that opened the incident.")
    top_headlines: Annotated[list[TopHeadline], Field(max_length=5)] = Field(
        description="The most negative (sentiment 'negative') headlines of the short window, most negative first."
    )
    model_version: str = Field(
        description="Classifier version(s) of the short window's articles, sorted, comma-separated."
    )
    created_at: DateTime = Field(
        description="Wall-clock time the record was created (the only field that differs between a live run and "
        "a replay)."
    )


#: the model of each message type, by schema name
MODELS: Final[Mapping[str, type[WireModel]]] = {
    "news.raw": NewsRaw,
    "news.scored": NewsScored,
    "news.dlq": DeadLetter,
    "alert": Alert,
}


def model_for(name: str) -> type[WireModel]:
    """The model of message type ``name``.

    :param name: one of :data:`SCHEMA_NAMES`.
    :raises ValueError: for an unknown name.
    """
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown message type {name!r} (one of {', '.join(SCHEMA_NAMES)})") from None


def schema_id(name: str) -> str:
    """The ``$id`` of the JSON Schema of message type ``name``.

    :param name: one of :data:`SCHEMA_NAMES`.
    """
    model_for(name)
    return f"{SCHEMA_BASE_URI}{name}.json"


def schema_text(name: str) -> str:
    """The JSON Schema of message type ``name`` (``news.raw``, ...), as shipped in the package.

    :param name: one of :data:`SCHEMA_NAMES`.
    """
    return resources.files("finpulse.core").joinpath("schemas", f"{name}.json").read_text(encoding="utf-8")


def _describe(error: ErrorDetails) -> str:
    """``<path>: <message>`` of one validation error; a missing key is reported at its object, as JSON Schema does.

    :param error: one of ``ValidationError.errors()``.
    """
    loc = [str(part) for part in error["loc"]]
    if error["type"] == "missing" and loc:
        key = loc.pop()
        message = f"{key!r} is a required property"
    else:
        message = error["msg"]
    return f"{'/'.join(loc) or '(root)'}: {message}"


def validate(name: str, message: dict[str, Any]) -> None:
    """Validate ``message`` against the model (and so the schema) of message type ``name``.

    :param name: one of :data:`SCHEMA_NAMES`.
    :param message: the decoded message.
    :raises BadMessage: ``schema`` with the first error's path and message.
    :raises ValueError: for an unknown ``name``.
    """
    model = model_for(name)
    try:
        model.model_validate(message)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_context=False, include_input=False)[0]
        raise BadMessage("schema", f"{name} {_describe(first)}") from None


def parse_time(value: Any, field: str = "published_at") -> datetime:
    """Parse an RFC 3339 timestamp into an aware UTC ``datetime`` (see :mod:`finpulse.core.rfc3339`).

    :param value: the timestamp string.
    :param field: the field name, for the error message.
    :raises BadMessage: ``bad_time`` when unparsable or naive.
    """
    try:
        return rfc3339.parse(value)
    except ValueError as exc:
        raise BadMessage("bad_time", f"{field} {exc}") from None


def event_time(message: dict[str, Any]) -> float:
    """The event time (``published_at``) of a raw or scored message, in epoch seconds.

    :param message: a ``news.raw`` or ``news.scored`` message.
    """
    return parse_time(message["published_at"]).timestamp()
