"""Redis key layout and fixed vocabularies of :mod:`alerts` (one place, like arq's ``constants.py``).

Every key starts with ``finpulse:<namespace>:`` (:func:`prefix`), so two namespaces (``live`` and a
backtest's ``bt-...``) never see each other's keys. Keys that a Lua script or a ``MULTI`` touches
together share one Redis Cluster hash tag (the part in ``{...}``):

=============================================  =======  ===================================================
key (after ``finpulse:<ns>:``)                 type     content
=============================================  =======  ===================================================
``{<scope>}:b:<bucket>``                       hash     ``n``, ``negative``, ``positive``, ``neutral``,
                                                        ``sum_sentiment_score_micro``, ``mv:<model_version>``
``{<scope>}:seen:<bucket>``                    set      article ids counted in the bucket (idempotency)
``{<scope>}:neg:<bucket>``                     zset     5 most negative headlines (JSON), score = micro-score
``{<scope>}:recent``                           list     the scope's 30 most recently counted headlines (JSON)
``claim:<article id>``                         string   the labels an article was first counted with (JSON:
                                                        scopes, sentiment, micro-score, model version)
``scopes``                                     zset     scope -> start of the newest bucket with data
``evtime``                                     zset     ``oldest`` / ``newest`` event time seen (watermark)
``metrics``                                    hash     ``counted``, ``duplicates``, ``syndicated``, ``late``,
                                                        ``invalid`` counters
``{det}:state``                                hash     ``<rule>|<scope>`` -> detector state (JSON)
``{det}:pending``                              hash     ``event_id`` -> alert not yet acknowledged (JSON)
``{det}:cursor``                               string   last bucket boundary evaluated (epoch seconds)
``{det}:emitting``                             hash     ``event_id`` -> ``<detector id>|<lease end>``: who
                                                        produces a pending record (one worker, not all)
``{hist}:records``                             hash     ``event_id`` -> alert record (JSON), the alert history
``{hist}:by-time``                             zset     ``event_id`` -> window end (epoch seconds)
``{hist}:acks``                                hash     ``alert_id`` -> acknowledgement (JSON: by, at, note)
``silences``                                   hash     ``scope:<scope>`` / ``alert:<id>`` -> silence (JSON)
``{mon:<model version>}:h:<hour>``             hash     predictions of the hour: ``n``, ``<kind>|<category>`` counts
``{mon:<model version>}:ref``                  hash     the version's reference distribution (frozen)
``model-versions``                             zset     model version -> last time it scored
``{model}:promoted``                           list     model versions promoted, oldest first; the last one is in force
``{model}:events``                             list     promotions and rollbacks (JSON), newest first, at most 200
``{model}:shadow``                             string   the shadow model version (scores traffic, never published)
``{model}:agree:<shadow>|<in force>``          hash     shadow comparison counts: ``n``, ``topic``, ``sentiment``,
                                                        ``s:<in force label>|<shadow label>``
``{dlv}:due:<endpoint>``                       zset     webhook-id -> next attempt time (epoch seconds)
``{dlv}:job:<endpoint>:<webhook-id>``          hash     rendered body, alert, attempts, state
``{dlv}:log:<endpoint>:<webhook-id>``          list     one JSON outcome per delivery attempt
=============================================  =======  ===================================================

``<bucket>`` is the bucket's start in integer epoch seconds (UTC).
"""

from __future__ import annotations

KEY_ROOT = "finpulse"
"""First component of every key (``finpulse:<namespace>:...``)."""

# --- window store ------------------------------------------------------------------------------
BUCKET_KEY = "b"
ROLLUP_KEY = "h"
SEEN_KEY = "seen"
TOP_NEGATIVE_KEY = "neg"
RECENT_KEY = "recent"
RECENT_N = 30
"""Newest headlines kept per scope (the dashboard's "recent headlines" of a scope)."""
CLAIM_KEY = "claim"
SCOPES_KEY = "scopes"
EVENT_TIME_KEY = "evtime"
METRICS_KEY = "metrics"
ENTITIES_KEY = "entities"        # promoted emerging entities: zset entity -> newest mention (event time)
ENTITY_ALIASES_KEY = "entity-aliases"   # hash acronym -> the name it stands for ("SVB" -> "Silicon Valley Bank")
CANDIDATE_KEY = "cand"           # per candidate name, in its future scope's hash tag: zset of its mentions
MONITOR_KEY = "mon"                       # model monitoring, in hash tag {mon:<model version>}
MODEL_VERSIONS_KEY = "model-versions"     # zset model version -> last time it scored (wall clock)
MODEL_TAG = "{model}"                     # model lifecycle: {model}:promoted (list), {model}:events, {model}:shadow...
HISTORY_TAG = "{hist}"                    # alert history: {hist}:records (hash), {hist}:by-time (zset), {hist}:acks
SILENCES_KEY = "silences"                 # hash "scope:<scope>" | "alert:<alert id>" -> silence (JSON)
LOG_IDENTITY_KEY = "log-identity"         # hash: cluster_id, topic -> topic id (stream/logwatch.py)
PROCESSED_OFFSETS_KEY = "log-processed"   # hash "topic|partition" -> highest offset processed
REWIND_KEY = "log-rewind"                 # hash topic -> why: the rewind plan after a log reset
BACKLOG_KEY = "log-backlog"               # hash "topic|partition" -> {"lag", "at"}: unprocessed messages

EVENT_TIME_OLDEST = "oldest"
EVENT_TIME_NEWEST = "newest"

BUCKET_FIELDS = ("n", "negative", "positive", "neutral", "sum_sentiment_score_micro")
"""Counter fields of a bucket hash; ``mv:<model_version>`` fields count articles per model version."""
MODEL_VERSION_FIELD_PREFIX = "mv:"
SCORE_SCALE = 1_000_000
"""Sentiment scores are summed as integers in millionths, so sums do not depend on arrival order."""

METRIC_FIELDS = ("counted", "duplicates", "syndicated", "late", "invalid", "relabelled")

DEFAULT_BUCKET_SECONDS = 60
DEFAULT_WINDOWS_S = (900, 3600, 86400)
DEFAULT_RETENTION_S = 2 * 86400
#: hourly roll-ups of the buckets, for windows of hours to days against baselines of weeks
ROLLUP_SECONDS = 3600
DEFAULT_ROLLUP_RETENTION_S = 35 * 86400
DEFAULT_LATE_ALLOWANCE_S = 6 * 3600.0
TOP_K = 5

# --- detector ----------------------------------------------------------------------------------
DETECTOR_TAG = "{det}"
STATE_KEY = "state"
PENDING_KEY = "pending"
CURSOR_KEY = "cursor"
EMIT_LEASE_KEY = "emitting"

SEVERITIES = ("info", "warning", "critical")
"""Severity names, lowest first; rules and endpoint filters use these names."""

ALERT_ID_PREFIX = "al_"
ALERT_SCHEMA_ID = "https://finpulse.dev/schemas/alert.json"

# --- delivery ----------------------------------------------------------------------------------
DELIVERY_TAG = "{dlv}"
DUE_KEY = "due"
JOB_KEY = "job"
LOG_KEY = "log"

SCOPE_TYPES = ("all", "topic", "ticker", "entity")
ALL_SCOPE = "all"


def prefix(namespace: str) -> str:
    """The prefix of every key of a namespace.

    :param namespace: run namespace (``live``, ``bt-...``), as in :class:`finpulse.core.settings.Settings`.
    :returns: ``finpulse:<namespace>`` (same as ``Settings.redis_prefix``).
    """
    if not namespace or any(c in namespace for c in "{}: \n"):
        raise ValueError(f"invalid namespace {namespace!r}")
    return f"{KEY_ROOT}:{namespace}"


def bucket_key_head(namespace: str, scope: str) -> str:
    """What every bucket key of a scope starts with: ``bucket_key`` is this plus the bucket start.

    :param namespace: run namespace.
    :param scope: normalised scope (``all``, ``topic:<name>``, ``ticker:<SYMBOL>``).
    """
    return f"{prefix(namespace)}:{{{scope}}}:{BUCKET_KEY}:"


def bucket_key(namespace: str, scope: str, bucket: int) -> str:
    """Key of a bucket's counter hash.

    :param namespace: run namespace.
    :param scope: normalised scope (``all``, ``topic:<name>``, ``ticker:<SYMBOL>``).
    :param bucket: bucket start, integer epoch seconds.
    """
    return f"{bucket_key_head(namespace, scope)}{bucket}"


def rollup_key_head(namespace: str, scope: str) -> str:
    """What every hourly roll-up key of a scope starts with (``rollup_key`` adds the hour's start).

    :param namespace: run namespace.
    :param scope: normalised scope.
    """
    return f"{prefix(namespace)}:{{{scope}}}:{ROLLUP_KEY}:"


def rollup_key(namespace: str, scope: str, hour: int) -> str:
    """Key of an hourly roll-up hash (``n`` and one counter per sentiment) of a scope.

    :param namespace: run namespace.
    :param scope: normalised scope.
    :param hour: the hour's start, integer epoch seconds (a multiple of :data:`ROLLUP_SECONDS`).
    """
    return f"{rollup_key_head(namespace, scope)}{hour}"


def candidate_key(namespace: str, name: str) -> str:
    """Key of the mentions of a candidate emerging entity (in the hash tag of its future scope).

    :param namespace: run namespace.
    :param name: the normalised name.
    """
    return f"{prefix(namespace)}:{{entity:{name}}}:{CANDIDATE_KEY}"


def seen_key(namespace: str, scope: str, bucket: int) -> str:
    """Key of the set of article ids already counted in a bucket.

    :param namespace: run namespace.
    :param scope: normalised scope.
    :param bucket: bucket start, integer epoch seconds.
    """
    return f"{prefix(namespace)}:{{{scope}}}:{SEEN_KEY}:{bucket}"


def recent_key(namespace: str, scope: str) -> str:
    """Key of the list of a scope's most recently counted headlines (newest first, JSON).

    :param namespace: run namespace.
    :param scope: normalised scope.
    """
    return f"{prefix(namespace)}:{{{scope}}}:{RECENT_KEY}"


def top_negative_key(namespace: str, scope: str, bucket: int) -> str:
    """Key of the sorted set of a bucket's most negative headlines.

    :param namespace: run namespace.
    :param scope: normalised scope.
    :param bucket: bucket start, integer epoch seconds.
    """
    return f"{prefix(namespace)}:{{{scope}}}:{TOP_NEGATIVE_KEY}:{bucket}"


def claim_key(namespace: str, article_id: str) -> str:
    """Key holding the labels an article was first counted with (see ``WindowStore.record``).

    A single key (no hash tag needed): it is written with ``SET NX`` and read with ``GET``, never
    together with other keys in one script or transaction.

    :param namespace: run namespace.
    :param article_id: the article's id.
    """
    return f"{prefix(namespace)}:{CLAIM_KEY}:{article_id}"


def monitor_key(namespace: str, model_version: str, name: str) -> str:
    """Key of the model monitoring of one model version (``h:<hour>`` counts, ``ref``, ``ref-meta``).

    :param namespace: run namespace.
    :param model_version: the model version (its own hash tag).
    :param name: ``h:<hour start>``, ``ref`` or ``ref-meta``.
    """
    return f"{prefix(namespace)}:{{{MONITOR_KEY}:{model_version}}}:{name}"


def history_key(namespace: str, name: str) -> str:
    """Key of the alert history (``records``, ``by-time``, ``acks``; all in hash tag ``{hist}``).

    :param namespace: run namespace.
    :param name: the structure.
    """
    return f"{prefix(namespace)}:{HISTORY_TAG}:{name}"


def ns_key(namespace: str, name: str) -> str:
    """Key of a namespace-wide structure (``scopes``, ``evtime``, ``metrics``).

    :param namespace: run namespace.
    :param name: one of :data:`SCOPES_KEY`, :data:`EVENT_TIME_KEY`, :data:`METRICS_KEY`.
    """
    return f"{prefix(namespace)}:{name}"


def metrics_key(namespace: str) -> str:
    """Key of the namespace's counters hash (``finpulse:<ns>:metrics``).

    :class:`finpulse.alerts.store.WindowStore` increments ``counted``, ``duplicates``, ``syndicated``,
    ``late`` and ``invalid`` there on every ``record()``; other components may add their own fields.

    :param namespace: run namespace.
    """
    return ns_key(namespace, METRICS_KEY)


def detector_key(namespace: str, name: str) -> str:
    """Key of the detector's state (all in hash tag ``{det}`` so one ``MULTI`` updates them).

    :param namespace: run namespace.
    :param name: one of :data:`STATE_KEY`, :data:`PENDING_KEY`, :data:`CURSOR_KEY`, :data:`EMIT_LEASE_KEY`.
    """
    return f"{prefix(namespace)}:{DETECTOR_TAG}:{name}"


def endpoints_key(namespace: str) -> str:
    """Key of the set of endpoint names that ever had jobs (to retire those no longer configured).

    :param namespace: run namespace.
    """
    return f"{prefix(namespace)}:{DELIVERY_TAG}:endpoints"


def due_key(namespace: str, endpoint: str) -> str:
    """Key of an endpoint's due-time sorted set.

    :param namespace: run namespace.
    :param endpoint: endpoint name.
    """
    return f"{prefix(namespace)}:{DELIVERY_TAG}:{DUE_KEY}:{endpoint}"


def job_key(namespace: str, endpoint: str, webhook_id: str) -> str:
    """Key of one delivery job (an alert event for one endpoint).

    :param namespace: run namespace.
    :param endpoint: endpoint name.
    :param webhook_id: the ``webhook-id`` header value (the alert's ``event_id``).
    """
    return f"{prefix(namespace)}:{DELIVERY_TAG}:{JOB_KEY}:{endpoint}:{webhook_id}"


def log_key(namespace: str, endpoint: str, webhook_id: str) -> str:
    """Key of the attempt log of one delivery job.

    :param namespace: run namespace.
    :param endpoint: endpoint name.
    :param webhook_id: the ``webhook-id`` header value.
    """
    return f"{prefix(namespace)}:{DELIVERY_TAG}:{LOG_KEY}:{endpoint}:{webhook_id}"
