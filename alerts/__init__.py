"""finpulse alerts: rolling negative-sentiment windows, event-time detection, webhook delivery.

Pure logic plus Redis (``redis.asyncio``) and HTTP (``aiohttp``); no Kafka or Faust here. The
stream agents call:

* :class:`WindowStore` ``.record(batch)`` for every ``news.scored`` micro-batch;
* :class:`Detector` ``.evaluate()`` after it (``.tick()`` from a wall-clock timer in live mode,
  ``.flush()`` at the end of a replay), produce the returned records to ``alerts``, then
  ``.mark_emitted(records)``;
* :class:`DeliveryQueue` ``.enqueue(record, endpoints)`` for each alert record and a
  :class:`Deliverer` ``.run_forever(stop)`` whose ``on_dead`` callback produces to ``alerts.dlq``.

See ``docs/alerts.md``.
"""

from .constants import SEVERITIES
from .delivery import (DeliveryQueue, Deliverer, Endpoint, RetryPolicy, load_secrets_file, parse_endpoints,
                       parse_retry_after, redact_url, render_body, send_test_webhook, slack_payload)
from .detector import Detector
from .exceptions import AlertsError, ConfigError, InvalidArticle, WebhookVerificationError
from .rules import (AlertsConfig, Decision, Evaluation, Level, Rule, RuleState, binomial_z, decide, evaluate,
                    load_config, make_alert_id, make_event_id, parse_duration, parse_rule, wilson_lower)
from .signing import sign, sign_headers, verify
from .store import BucketSeries, RecordResult, WindowStore, delete_namespace
from .windows import (WindowStats, baseline_bounds, bucket_ceil, bucket_start, format_time, normalize_scope,
                      normalize_ticker, parse_article, parse_time, scope_type, scopes_for, window_bounds,
                      window_buckets)

__all__ = [
    "SEVERITIES", "DeliveryQueue", "Deliverer", "Endpoint", "RetryPolicy", "load_secrets_file", "parse_endpoints",
    "parse_retry_after", "redact_url", "render_body", "send_test_webhook", "slack_payload", "Detector",
    "AlertsError", "ConfigError", "InvalidArticle", "WebhookVerificationError", "AlertsConfig", "Decision",
    "Evaluation", "Level", "Rule", "RuleState", "binomial_z", "decide", "evaluate", "load_config",
    "make_alert_id", "make_event_id", "parse_duration", "parse_rule", "wilson_lower", "sign", "sign_headers",
    "verify", "BucketSeries", "RecordResult", "WindowStore", "delete_namespace", "WindowStats",
    "baseline_bounds", "bucket_ceil", "bucket_start", "format_time", "normalize_scope", "normalize_ticker",
    "parse_article", "parse_time", "scope_type", "scopes_for", "window_bounds", "window_buckets",
]
