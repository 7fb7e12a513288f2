"""The one Faust app of finpulse, built when a worker starts, never when a module is imported.

:func:`create_app` builds, for one :class:`~finpulse.core.settings.Settings`: the Faust app, its
topics, the worker's resources (:class:`~finpulse.stream.services.Services`: inference executor,
classifier, Redis) and its consumer tweak. ``finpulse worker`` calls it and runs the app.

The agents live in :mod:`finpulse.stream.agents` and declare themselves with :func:`agent`,
:func:`task`, :func:`timer` and :func:`on_shutdown` below. Faust's autodiscovery imports that module
when the worker starts; only then is each declaration registered on the app of :func:`current`.
The agents import this module; this module never imports them (it names them in
``autodiscover``).
"""

from __future__ import annotations

import asyncio
import functools
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import aiokafka
import faust
import faust.transport.drivers.aiokafka as aiokafka_driver
import venusian

from finpulse.core.settings import Settings
from finpulse.core.stackstate import resolve_bootstrap

from . import resilience
from .exceptions import StreamError
from .services import Services

AGENTS_MODULE = "finpulse.stream.agents"
#: the venusian category our declarations use: one that Faust's autodiscovery scans for
SCAN_CATEGORY = "faust.agent"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Topics:
    """The topics of one namespace (names from the settings)."""

    raw: faust.types.TopicT
    scored: faust.types.TopicT
    dlq: faust.types.TopicT
    alerts: faust.types.TopicT
    alerts_dlq: faust.types.TopicT


@dataclass(frozen=True)
class Worker:
    """What the agents of one worker process use: the app, its settings, topics and resources.

    :param registered: the declarations already registered on ``app`` (Faust discovers twice when a
        worker starts: in ``app.main()`` and again in its worker command).
    :param faults: why the worker stopped itself (:func:`~finpulse.stream.resilience.stop_worker`);
        non-empty means the process exits with a non-zero status.
    """

    app: faust.App
    settings: Settings
    topics: Topics
    services: Services
    registered: set[Callable[..., Any]] = field(default_factory=set)
    faults: list[str] = field(default_factory=list)


_current: Worker | None = None


def current() -> Worker:
    """The worker built by the last :func:`create_app` of this process.

    :raises StreamError: when no app was created (the agents module was imported by hand).
    """
    if _current is None:
        raise StreamError("no finpulse worker app: call finpulse.stream.app.create_app(settings) first")
    return _current


class FaustWorker(faust.Worker):
    """Faust's worker with a deadline on its graceful shutdown.

    Whatever starts the shutdown (SIGINT, SIGTERM, a fault), the process exits by itself
    :data:`~finpulse.stream.resilience.STOP_GRACE_S` later if it is still running then: with
    ``EXIT_FAULT`` when a fault stopped it, else ``EXIT_STOP_FORCED``. Faust's shutdown can hang
    after the agents have stopped (seen after a plain SIGINT and after a broker lost its log), which
    would leave a process that neither consumes nor exits. Offsets not committed are redelivered.
    """

    @property
    def shortlabel(self) -> str:
        """Faust's label in the log: ``[^Worker]: Ready`` as with Faust's own class."""
        return "Worker"

    def on_worker_shutdown(self) -> None:
        """Faust's hook, called once the worker has begun to stop (before its services stop)."""
        super().on_worker_shutdown()
        faulted = _current is not None and bool(_current.faults)
        resilience.exit_if_still_running(resilience.STOP_GRACE_S,
                                         resilience.EXIT_FAULT if faulted else resilience.EXIT_STOP_FORCED,
                                         self.loop)


def faust_options(settings: Settings, bootstrap: str) -> dict[str, Any]:
    """The Faust app options for ``settings`` (pure but for creating the cache folder).

    Faust's data folder (``datadir``; it holds nothing with the in-memory table store, but Faust
    creates it) lives under the cache, ``<Settings.cache_path()>/faust/<consumer group>``, never in
    the current directory. Faust creates only its last component, so its parent is created here.

    :param settings: the worker's settings.
    :param bootstrap: ``host:port[,host:port]`` of the Kafka cluster.
    """
    faust_dir = settings.cache_path().absolute() / "faust"
    faust_dir.mkdir(parents=True, exist_ok=True)
    # Faust formats the path with str.format (``{conf.name}``): escape braces of the user's path
    datadir = str(faust_dir / settings.group_id).replace("{", "{{").replace("}", "}}")
    return dict(
        datadir=datadir,
        broker=[f"kafka://{hp.strip()}" for hp in bootstrap.split(",")],
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,               # the worker serves nothing it does not need
        autodiscover=[AGENTS_MODULE],
        origin=AGENTS_MODULE,            # else Faust's CLI names the script (finpulse-worker) as a module to scan
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_every=settings.commit_every,
        broker_commit_interval=settings.commit_interval_s,
        stream_wait_empty=False,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_session_timeout=settings.session_timeout_s,
        store="memory://",
        Worker=FaustWorker,              # a deadline on the graceful shutdown
    )


def use_fetch_max_wait(ms: int) -> None:
    """Faust passes a fixed ``fetch_max_wait_ms=1500`` to aiokafka; use the setting instead.

    Scoped to this (worker) process: only the consumer class that Faust's driver instantiates is
    replaced, by a subclass that overrides that one argument. Called by :func:`create_app`.
    """
    base = aiokafka.AIOKafkaConsumer

    class Consumer(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["fetch_max_wait_ms"] = ms
            super().__init__(*args, **kwargs)

    patched = types.ModuleType(aiokafka.__name__)
    patched.__dict__.update(vars(aiokafka))
    patched.AIOKafkaConsumer = Consumer  # type: ignore[attr-defined]
    aiokafka_driver.aiokafka = patched  # type: ignore[attr-defined]


def create_app(settings: Settings) -> faust.App:
    """Build the worker's Faust app for ``settings`` and make it :func:`current`.

    :param settings: the worker's settings (namespace, topics, broker, batching, ...).
    :returns: the app; ``app.main()`` runs it (autodiscovery registers the agents then).
    :raises RuntimeError: when no broker is configured or recorded by ``finpulse stack up``.
    """
    global _current
    use_fetch_max_wait(settings.fetch_max_wait_ms)
    app = faust.App(settings.group_id, **faust_options(settings, resolve_bootstrap(settings)))

    def topic(base: str) -> faust.types.TopicT:
        return app.topic(settings.topic(base), partitions=settings.partitions)

    topics = Topics(raw=topic(settings.topic_raw), scored=topic(settings.topic_scored),
                    dlq=topic(settings.topic_dlq), alerts=topic(settings.topic_alerts),
                    alerts_dlq=topic(settings.topic_alerts_dlq))
    _current = Worker(app=app, settings=settings, topics=topics, services=Services(settings))
    return app


def _declare(register: Callable[[Worker, F], object]) -> Callable[[F], F]:
    """A decorator that registers its function on :func:`current`'s app when Faust discovers it."""
    def decorate(fun: F) -> F:
        def on_discovered(scanner: object, name: str, ob: F) -> None:
            worker = current()
            if ob not in worker.registered:
                worker.registered.add(ob)
                register(worker, ob)

        venusian.attach(fun, on_discovered, category=SCAN_CATEGORY)
        return fun
    return decorate


def stops_worker_on_error(kind: str, fun: F) -> F:
    """Wrap an agent or task so that an exception escaping it stops the whole worker, loudly.

    Faust would restart a crashed agent in the same process and drop the batches it had in flight
    until the process restarts; instead the worker shuts down (committing only acknowledged offsets)
    and exits non-zero, so the orchestrator restarts it and the unacknowledged input is redelivered.
    The wrapped coroutine then waits to be cancelled by the shutdown (it is never restarted).

    :param kind: ``agent`` or ``task`` (for the log).
    :param fun: the coroutine function.
    """
    @functools.wraps(fun)
    async def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            await fun(*args, **kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any escape is fatal by design
            from .resilience import stop_worker

            reason = f"{kind} {fun.__name__} failed: {type(exc).__name__}: {exc}"
            stop_worker(reason, exc, on_stop=lambda: current().faults.append(reason))
            await asyncio.Event().wait()
    return cast(F, guarded)


def agent(topic: str, **options: Any) -> Callable[[F], F]:
    """Declare a Faust agent on the namespace's topic ``topic`` (a :class:`Topics` field name).

    An exception escaping the agent stops the worker (:func:`stops_worker_on_error`).

    :param topic: ``raw``, ``scored``, ``dlq``, ``alerts`` or ``alerts_dlq``.
    :param options: passed to ``faust.App.agent`` (e.g. ``concurrency=1``).
    """
    return _declare(lambda w, fun: w.app.agent(getattr(w.topics, topic), **options)(
        stops_worker_on_error("agent", fun)))


def task() -> Callable[[F], F]:
    """Declare a background task of the worker (``faust.App.task``); an escaping exception stops the worker."""
    return _declare(lambda w, fun: w.app.task(stops_worker_on_error("task", fun)))


def timer(interval: float) -> Callable[[F], F]:
    """Declare a function run every ``interval`` seconds (``faust.App.timer``)."""
    return _declare(lambda w, fun: w.app.timer(interval=interval)(fun))


def on_shutdown() -> Callable[[F], F]:
    """Declare a receiver of the worker's ``on_before_shutdown`` signal."""
    return _declare(lambda w, fun: w.app.on_before_shutdown.connect(fun))
