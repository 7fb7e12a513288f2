"""Orchestration shared by ``finpulse demo`` and ``finpulse backtest``.

* :func:`stack_from_env`: the embedded stack, or the broker / Redis named by
  ``FINPULSE_KAFKA_BOOTSTRAP`` / ``FINPULSE_REDIS_URL`` (then nothing is started).
* :func:`run_settings`: settings of a run namespace with one partition per topic, so event time is
  totally ordered and a run is repeatable.
* :class:`WorkerProcess`: a ``finpulse worker`` subprocess in that namespace, with its own log.
* :class:`TopicReader`: reads JSON messages of several topics from the beginning (kafka-python, no
  consumer group, nothing committed), and can drain them to their current end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from finpulse.core.settings import Settings
from finpulse.stream.resilience import EXIT_INTERRUPTED, EXIT_STOP_FORCED


def stack_from_env(kafka_bootstrap: str | None = None, redis_url: str | None = None):
    """An (unstarted) :class:`finpulse.stack.EmbeddedStack`; use it as a context manager.

    :param kafka_bootstrap: broker to use; default ``FINPULSE_KAFKA_BOOTSTRAP`` (empty: start Tansu).
    :param redis_url: Redis to use; default ``FINPULSE_REDIS_URL`` (empty: start redis-server).
    """
    from .stack import EmbeddedStack

    return EmbeddedStack(
        kafka_bootstrap=os.environ.get("FINPULSE_KAFKA_BOOTSTRAP", "") if kafka_bootstrap is None else kafka_bootstrap,
        redis_url=os.environ.get("FINPULSE_REDIS_URL", "") if redis_url is None else redis_url)


def run_settings(stack: Any, namespace: str, **overrides: Any) -> Settings:
    """Settings of a run namespace on ``stack``: ``FINPULSE_*`` / ``FINPULSE_CONFIG`` values, with
    the stack's addresses, ``namespace`` and one partition per topic.

    :param stack: anything with ``kafka_bootstrap`` and ``redis_url``.
    :param namespace: the run namespace (``demo-...``, ``bt-...``).
    :param overrides: more fields to set (e.g. ``rules_file``).
    """
    return Settings(**{"kafka_bootstrap": stack.kafka_bootstrap, "redis_url": stack.redis_url,
                       "namespace": namespace, "partitions": 1, **overrides})


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a worker process for ``settings`` (inherits this process's environment,
    e.g. ``FINPULSE_MODEL_DIR``).

    :param settings: broker, Redis, namespace, partitions and rules file of the run.
    :param extra: more variables.
    """
    return {**os.environ, "FINPULSE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "FINPULSE_REDIS_URL": settings.redis_url, "FINPULSE_NAMESPACE": settings.namespace,
            "FINPULSE_PARTITIONS": str(settings.partitions), "FINPULSE_RULES_FILE": settings.rules_file,
            "FINPULSE_OLDEST_EVENT": settings.oldest_event, "PYTHONUNBUFFERED": "1",
            "FINPULSE_MODEL_VERSION": settings.model_version, "FINPULSE_MODELS_DIR": settings.models_dir,
            # several run workers may share a host: any free port unless one is set (the log names it)
            "FINPULSE_WORKER_OPS_PORT": os.environ.get("FINPULSE_WORKER_OPS_PORT", "0"), **extra}


class WorkerProcess:
    """A ``finpulse worker`` subprocess of a run (stdout and stderr go to ``log_path``), started in the
    current folder, where it writes nothing (Faust's data folder is under the cache, see
    :func:`finpulse.stream.app.faust_options`).

    :param settings: the run's settings (see :func:`worker_env`).
    :param log_path: the worker's log file (appended).
    :param extra_env: more environment variables.
    :param log_level: the worker's ``--log-level``.
    """

    def __init__(self, settings: Settings, log_path: str | Path, *, extra_env: Mapping[str, str] | None = None,
                 log_level: str = "info"):
        self.log_path = Path(log_path)
        env = worker_env(settings, **dict(extra_env or {}))
        with open(self.log_path, "ab") as logf:
            # the caller's folder (relative FINPULSE_CONFIG / model paths keep their meaning); -P keeps
            # it off sys.path, so nothing there can shadow a module. Faust's data folder is in the cache.
            self.proc = subprocess.Popen([sys.executable, "-P", "-m", "finpulse.cli", "--log-level", log_level,
                                          "worker"], env=env, stdout=logf, stderr=subprocess.STDOUT)

    @property
    def returncode(self) -> int | None:
        """The exit code once the worker has exited, else ``None``."""
        return self.proc.poll()

    @property
    def stopped_as_told(self) -> bool:
        """Whether the worker has exited because it was told to: a clean stop (0), a stop whose graceful
        shutdown overran its deadline (``EXIT_STOP_FORCED``: uncommitted offsets are redelivered), or an
        interrupt (Ctrl-C reaches the whole foreground process group) that landed before its stop
        handlers were installed (``EXIT_INTERRUPTED``, or killed by SIGINT while Python was still starting)."""
        return self.proc.poll() in (0, EXIT_STOP_FORCED, EXIT_INTERRUPTED, -signal.SIGINT)

    def check(self) -> None:
        """:raises RuntimeError: when the worker has exited."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"the worker exited with code {self.proc.returncode}; see {self.log_path}")

    def stop(self, timeout_s: float = 20.0) -> int:
        """Graceful stop (SIGTERM: the worker finishes its batch and commits), SIGKILL after
        ``timeout_s``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


class TopicReader:
    """Reads JSON messages of ``topics`` from the beginning, without a consumer group.

    :param bootstrap: the broker.
    :param topics: full topic names (they must exist).
    :param timeout_s: how long to wait for the topics' metadata.
    """

    def __init__(self, bootstrap: str, topics: Iterable[str], *, timeout_s: float = 30.0):
        from kafka import KafkaConsumer, TopicPartition

        self.topics = list(topics)
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                       auto_offset_reset="earliest", consumer_timeout_ms=500)
        deadline = time.monotonic() + timeout_s
        tps: list[TopicPartition] = []
        for t in self.topics:
            parts = self._consumer.partitions_for_topic(t)
            while not parts and time.monotonic() < deadline:
                time.sleep(0.2)
                parts = self._consumer.partitions_for_topic(t)
            if not parts:
                self._consumer.close()
                raise RuntimeError(f"topic {t} has no partitions (does it exist?)")
            tps.extend(TopicPartition(t, p) for p in sorted(parts))
        self._tps = tps
        self._consumer.assign(tps)
        self._consumer.seek_to_beginning(*tps)

    def poll(self, timeout_ms: int = 500) -> list[tuple[str, Any]]:
        """The next messages as ``(topic, decoded JSON)`` (``None`` for a value that is not JSON),
        in partition order."""
        out = []
        for tp, records in self._consumer.poll(timeout_ms=timeout_ms).items():
            for rec in records:
                try:
                    value = json.loads(rec.value)
                except (TypeError, ValueError):
                    value = None
                out.append((tp.topic, value))
        return out

    def drain(self, timeout_s: float = 30.0) -> list[tuple[str, Any]]:
        """Everything up to the topics' end offsets as of now (as :meth:`poll`).

        :raises TimeoutError: when the end is not reached within ``timeout_s``.
        """
        ends = self._consumer.end_offsets(self._tps)
        out: list[tuple[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while any(self._consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {self.topics} to their end within {timeout_s}s")
            out.extend(self.poll(200))
        return out

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
