"""One typed settings object for every finpulse process.

Values come, highest priority first, from keyword arguments, ``FINPULSE_*`` environment variables
(``FINPULSE_KAFKA_BOOTSTRAP``, ``FINPULSE_BATCH_MAX``, ...), the TOML file named by
``FINPULSE_CONFIG`` (top-level keys named like the fields), and the defaults below.

A *namespace* isolates runs: the live namespace (``live``) uses the plain topic names and consumer
group; any other namespace (a backtest's ``bt-...``) suffixes topics and group with ``.<namespace>``.
Redis keys always start with ``finpulse:<namespace>:`` (see :mod:`finpulse.core.constants`).

Files shipped inside the package (``core/resources/``: the default rules, the sample feeds, the
example webhook-secrets file, the demo sample) are located by :func:`shipped_file` through
:mod:`importlib.resources`, so every command works from any folder after ``pip install``. In a
checkout, ``config/rules.toml``, ``config/feeds.toml``, ``config/webhook-secrets.env.example`` and
``data/demo/sample.jsonl`` are symbolic links to these files (one copy, nothing to keep in sync).
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

#: The checkout's root (``core/`` is one of its folders). Meaningful in a checkout only (tests,
#: scripts, training data); nothing a command needs at run time is located through it.
REPO_ROOT = Path(__file__).resolve().parent.parent
LIVE_NAMESPACE = "live"
RESOURCE_PACKAGE = "finpulse.core"
RESOURCE_DIR = "resources"
DEFAULT_RULES = "rules.toml"


def default_cache_dir() -> Path:
    """finpulse's cache folder when ``Settings.cache_dir`` is empty: ``$FINPULSE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/finpulse``, else ``~/.cache/finpulse`` (read at each call, not created)."""
    explicit = os.environ.get("FINPULSE_CACHE_DIR", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "finpulse"


def shipped_file(name: str) -> Path:
    """The path of a file shipped in the package (``core/resources/<name>``), e.g. ``rules.toml``,
    ``feeds.toml``, ``webhook-secrets.env.example``, ``demo/sample.jsonl``.

    Installed packages and checkouts are folders, so this is the file itself; from a zipped package
    the file is copied once to ``<cache>/resources/<name>``.

    :param name: the file's path below ``resources/`` (``/``-separated).
    :raises FileNotFoundError: when the package ships no such file.
    """
    res = resources.files(RESOURCE_PACKAGE).joinpath(RESOURCE_DIR, *name.split("/"))
    if not res.is_file():
        raise FileNotFoundError(f"{RESOURCE_PACKAGE} ships no {RESOURCE_DIR}/{name} (is the package installed whole?)")
    if isinstance(res, Path):
        return res
    out = default_cache_dir() / RESOURCE_DIR / name
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        with resources.as_file(res) as tmp:
            shutil.copyfile(tmp, out)
    return out


class Settings(BaseSettings):
    """Settings of a finpulse worker, demo, crawler, replay or backtest.

    :param kafka_bootstrap: ``host:port[,host:port]`` of the Kafka cluster; empty means "start the
        embedded development broker" where a command supports it.
    :param redis_url: ``redis://`` URL; empty means "start an embedded redis-server".
    :param namespace: run namespace (``live`` or e.g. ``bt-20260101``), see module docstring.
    :param topic_raw: crawled headlines (``news.raw``).
    :param topic_scored: classified headlines (``news.scored``).
    :param topic_dlq: dead letters of the news pipeline (``news.dlq``).
    :param topic_alerts: alert records (``alerts``).
    :param topic_alerts_dlq: alerts whose webhook delivery finally failed (``alerts.dlq``).
    :param partitions: partitions of every topic finpulse creates (>= expected workers).
    :param replication_factor: replication factor of created topics.
    :param consumer_group: Faust application id, i.e. Kafka consumer group.
    :param batch_max: most messages the classify agent takes in one micro-batch.
    :param batch_within: seconds the classify agent waits to fill a micro-batch.
    :param commit_interval_s: how often the worker commits consumed offsets (Faust
        ``broker_commit_interval``); only offsets of fully processed batches are ever committed.
    :param commit_every: also commit after this many processed messages.
    :param rebalance_timeout_s: consumer-group rebalance timeout. Short by default: a batch takes
        well under a second, and Tansu holds a first join for about half this value.
    :param session_timeout_s: consumer-group session timeout (a dead worker's partitions move
        to the others after this).
    :param fetch_max_wait_ms: longest a worker's fetch request waits for data. Faust fixes it at
        1500 ms; Apache Kafka answers as soon as data arrives anyway, but the Tansu dev broker holds
        idle fetches, which added ~0.6 s per hop, so the worker lowers it (stream/app.py).
    :param max_payload_bytes: raw messages larger than this are dead-lettered.
    :param future_tolerance_s: events dated more than this in the future are dead-lettered.
    :param oldest_event: the oldest ``published_at`` accepted (RFC 3339); older events are
        dead-lettered (``too_old``), so a mis-dated article (1970, year 1) cannot make the detector
        walk decades of empty hours. Generous by default; replays and backtests of older history
        set their own (``--from``).
    :param late_allowance_s: events older than the newest event time minus this are "late"
        (still counted, and reported in a metric).
    :param bucket_seconds: width of a Redis window bucket.
    :param windows_s: query windows in seconds (default 15 min, 1 h, 24 h).
    :param model_dir: directory of the base model (its ``manifest.json``): the version in force when
        none was promoted; empty = the model shipped in the package.
    :param models_dir: the model directory: one sub-folder per promotable version
        (:mod:`finpulse.models.registry`); empty = ``$XDG_DATA_HOME/finpulse/models``, else
        ``~/.local/share/finpulse/models``.
    :param model_version: pin this model version: the worker scores with it and ignores the shared
        version in force (backtests pin one); empty = follow ``finpulse model promote`` / ``rollback``.
    :param device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    :param infer_workers: inference threads of the worker: micro-batches classified at the same
        time. The classify agent keeps ``infer_workers + 1`` batches in flight (the extra one is
        being collected or produced); outputs stay in partition order.
    :param infer_threads: ONNX Runtime intra-op threads per inference run (0 = the machine's
        cores divided by ``infer_workers``).
    :param infer_spinning: let idle inference threads busy-wait (ONNX Runtime's default). Off by
        default in the worker: it shares its cores with the event loop (and, in development, with
        the broker and Redis), and spinning threads take CPU they need.
    :param crawl_contact: who runs this crawler, sent in its ``User-Agent`` (e.g.
        ``"Risk Desk Ltd ops@example.com"``); some publishers (the SEC) block crawlers without one,
        and the crawler warns when it is empty.
    :param rules_file: TOML file of detection rules and webhook endpoints; empty (the default) = the
        rules shipped in the package (``core/resources/rules.toml``, also ``config/rules.toml`` in a
        checkout). An empty value is resolved to that file's path when the settings are built, so
        ``settings.rules_file`` is always a path.
    :param webhook_secrets_file: optional TOML/``KEY=VALUE`` file of endpoint secrets.
    :param infra_retry_s: how long a stage retries an infrastructure fault (Redis or the broker
        unavailable, a timeout) with backoff before it stops the worker (non-zero exit, nothing
        unprocessed acknowledged) so that the orchestrator restarts it.
    :param cache_dir: finpulse's cache folder (the fp16 GPU model, the workers' Faust data folders);
        empty = ``$XDG_CACHE_HOME/finpulse``, else ``~/.cache/finpulse`` (:meth:`cache_path`).
    :param ops_host: address the operations endpoints (``/livez``, ``/readyz``, ``/metrics``) of the
        worker and the crawler bind to (``0.0.0.0`` in containers).
    :param worker_ops_port: the worker's operations port (0 = any free port, logged; -1 = off). Each
        process serves its own; several workers on one host need one port each.
    :param crawler_ops_port: the crawler's operations port (same rules).
    :param serve_host: address ``finpulse serve`` (dashboard, API) binds to.
    :param serve_port: port of ``finpulse serve`` (0 = any free port).
    :param api_token: bearer token that API mutations (acknowledge, silence) require; unset = the API
        is read-only.
    """

    model_config = SettingsConfigDict(env_prefix="FINPULSE_", extra="ignore")

    kafka_bootstrap: str = ""
    redis_url: str = ""
    namespace: str = LIVE_NAMESPACE

    topic_raw: str = "news.raw"
    topic_scored: str = "news.scored"
    topic_dlq: str = "news.dlq"
    topic_alerts: str = "alerts"
    topic_alerts_dlq: str = "alerts.dlq"
    partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1)
    consumer_group: str = "finpulse"

    batch_max: int = Field(64, ge=1)
    batch_within: float = Field(0.05, gt=0)
    commit_interval_s: float = Field(1.0, gt=0)
    commit_every: int = Field(256, ge=1)
    rebalance_timeout_s: float = Field(10.0, gt=0)
    session_timeout_s: float = Field(10.0, gt=0)
    fetch_max_wait_ms: int = Field(100, ge=1, le=5000)
    max_payload_bytes: int = Field(64 * 1024, ge=1024)
    future_tolerance_s: float = Field(300.0, ge=0)
    oldest_event: str = "2000-01-01T00:00:00Z"
    infra_retry_s: float = Field(60.0, gt=0)
    late_allowance_s: float = Field(6 * 3600.0, ge=0)
    bucket_seconds: int = Field(60, ge=1)
    windows_s: list[int] = Field(default_factory=lambda: [900, 3600, 86400])

    model_dir: str = ""
    models_dir: str = ""
    model_version: str = ""
    device: str = "auto"
    infer_workers: int = Field(2, ge=1, le=16)
    infer_threads: int = Field(0, ge=0)
    infer_spinning: bool = False

    crawl_contact: str = ""

    rules_file: str = Field("", validate_default=True)
    webhook_secrets_file: str = ""
    cache_dir: str = ""

    ops_host: str = "127.0.0.1"
    worker_ops_port: int = Field(9464, ge=-1, le=65535)
    crawler_ops_port: int = Field(9465, ge=-1, le=65535)
    serve_host: str = "127.0.0.1"
    serve_port: int = Field(8050, ge=0, le=65535)
    api_token: SecretStr | None = None

    def infer_threads_resolved(self) -> int:
        """ONNX Runtime intra-op threads per inference run (``infer_threads``, or the cores / workers)."""
        return self.infer_threads or max(1, (os.cpu_count() or 1) // self.infer_workers)

    def cache_path(self) -> Path:
        """The cache folder (``cache_dir``, else :func:`default_cache_dir`); not created here."""
        return Path(self.cache_dir).expanduser() if self.cache_dir.strip() else default_cache_dir()

    @field_validator("rules_file")
    @classmethod
    def _resolve_rules_file(cls, v: str) -> str:
        return v if v.strip() else str(shipped_file(DEFAULT_RULES))

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, v: str) -> str:
        import re

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}", v):
            raise ValueError(f"namespace {v!r} must be 1-63 chars of letters, digits, '_', '.', '-'")
        return v

    @field_validator("oldest_event")
    @classmethod
    def _check_oldest_event(cls, v: str) -> str:
        from . import rfc3339

        return rfc3339.format(rfc3339.parse(v))

    def oldest_event_ts(self) -> float:
        """``oldest_event`` as epoch seconds."""
        from . import rfc3339

        return rfc3339.parse(self.oldest_event).timestamp()

    @field_validator("device")
    @classmethod
    def _check_device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda"):
            raise ValueError("device must be auto, cpu or cuda")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get("FINPULSE_CONFIG")
        if path:
            if not Path(path).is_file():
                raise FileNotFoundError(f"FINPULSE_CONFIG={path} does not exist")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    # --- derived names -------------------------------------------------------------------------

    def topic(self, base: str) -> str:
        """The Kafka topic name for ``base`` in this namespace."""
        return base if self.namespace == LIVE_NAMESPACE else f"{base}.{self.namespace}"

    @property
    def group_id(self) -> str:
        """The consumer group (Faust app id) in this namespace."""
        return self.topic(self.consumer_group)

    @property
    def redis_prefix(self) -> str:
        """Prefix of every Redis key of this namespace (the key layout is in :mod:`finpulse.core.constants`)."""
        from finpulse.core.constants import prefix

        return prefix(self.namespace)

    def all_topics(self) -> list[str]:
        """Every topic this namespace uses, namespaced."""
        return [self.topic(t) for t in (self.topic_raw, self.topic_scored, self.topic_dlq,
                                        self.topic_alerts, self.topic_alerts_dlq)]

    def with_overrides(self, **kwargs: Any) -> Settings:
        """A copy with some fields replaced (validated)."""
        return Settings(**{**self.model_dump(), **kwargs})
