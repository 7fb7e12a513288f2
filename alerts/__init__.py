"""finpulse alerts: rolling negative-sentiment windows, event-time detection, webhook delivery.

Pure logic plus Redis (``redis.asyncio``) and HTTP (``aiohttp``); no Kafka or Faust here. Modules:

* :mod:`.windows` (scopes, time buckets, article parsing), :mod:`.store` (Redis window counts);
* :mod:`.rules` (rules, statistics and the pure decision), :mod:`.detector` (event-time evaluation);
* :mod:`.config` (the rules TOML, endpoints, retry policy, secrets: :func:`load_config`);
* :mod:`.render` (webhook bodies), :mod:`.signing` (Standard Webhooks signatures);
* :mod:`.queue` (the Redis delivery queue), :mod:`.sender` (HTTP delivery with retries, test webhooks).

The stream agents call:

* :class:`WindowStore` ``.record(batch)`` for every ``news.scored`` micro-batch;
* :class:`Detector` ``.evaluate()`` after it (``.tick()`` from a wall-clock timer in live mode,
  ``.flush()`` at the end of a replay), produce the returned records to ``alerts``, then
  ``.mark_emitted(records)``;
* :class:`DeliveryQueue` ``.enqueue(record, endpoints)`` for each alert record and a
  :class:`Deliverer` ``.run_forever(stop)`` whose ``on_dead`` callback produces to ``alerts.dlq``.

See ``docs/alerts.md``.
"""

from finpulse.core.constants import SEVERITIES
from finpulse.core.http import parse_retry_after
from finpulse.core.tickers import normalize_ticker

from .config import (
    AlertsConfig,
    Endpoint,
    RetryPolicy,
    check_table,
    load_config,
    load_secrets_file,
    parse_duration,
    parse_endpoints,
    parse_rule,
    redact_url,
)
from .detector import Detector
from .exceptions import AlertsError, ConfigError, InvalidArticle, WebhookVerificationError
from .queue import DeliveryQueue
from .render import FORMATS, render_body, slack_payload, webhook_id_of
from .rules import (
    Decision,
    Evaluation,
    Level,
    Rule,
    RuleState,
    binomial_z,
    decide,
    evaluate,
    make_alert_id,
    make_event_id,
    severity_rank,
    smoothed_rate,
    wilson_lower,
)
from .sender import USER_AGENT, AttemptResult, Deliverer, post_webhook, sample_alert, send_test_webhook
from .signing import sign, sign_headers, verify
from .store import BucketSeries, RecordResult, WindowStore, delete_namespace
from .windows import (
    WindowStats,
    baseline_bounds,
    bucket_ceil,
    bucket_start,
    normalize_scope,
    parse_article,
    parse_time,
    scope_type,
    scopes_for,
    window_bounds,
    window_buckets,
)

__all__ = [
    "SEVERITIES", "parse_retry_after",
    "AlertsConfig", "Endpoint", "RetryPolicy", "check_table", "load_config", "load_secrets_file", "parse_duration",
    "parse_endpoints", "parse_rule", "redact_url",
    "Detector",
    "AlertsError", "ConfigError", "InvalidArticle", "WebhookVerificationError",
    "DeliveryQueue",
    "FORMATS", "render_body", "slack_payload", "webhook_id_of",
    "Decision", "Evaluation", "Level", "Rule", "RuleState", "binomial_z", "decide", "evaluate", "make_alert_id",
    "make_event_id", "severity_rank", "smoothed_rate", "wilson_lower",
    "USER_AGENT", "AttemptResult", "Deliverer", "post_webhook", "sample_alert", "send_test_webhook",
    "sign", "sign_headers", "verify",
    "BucketSeries", "RecordResult", "WindowStore", "delete_namespace",
    "WindowStats", "baseline_bounds", "bucket_ceil", "bucket_start", "normalize_scope",
    "normalize_ticker", "parse_article", "parse_time", "scope_type", "scopes_for", "window_bounds", "window_buckets",
]
