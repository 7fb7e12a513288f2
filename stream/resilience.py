"""The worker's one rule for faults: a message's fault is dead-lettered, an infrastructure fault is waited out.

* **Infrastructure** (Redis or the broker unreachable, a timeout, Redis loading or read-only): the
  operation is retried with exponential backoff (:func:`retry_infra`), logged once when the outage
  starts and once when it ends, and if it lasts longer than ``Settings.infra_retry_s`` the stage
  raises :class:`InfrastructureDown`, which stops the worker with a non-zero exit code and without
  acknowledging the unprocessed input (:func:`stop_worker`), so the orchestrator restarts it and the
  input is redelivered.
* **A message** (anything else one input makes the code raise): :func:`isolate` splits the batch in
  halves until the culprits are alone; the agent dead-letters them with the exception as the reason
  and the rest flows on.

Pure asyncio; the agents in :mod:`finpulse.stream.agents` wire it to Faust.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from .exceptions import StreamError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: First and longest pause between two tries of an operation that met an infrastructure fault.
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.2, 5.0
#: Exit status of a worker stopped by a fault it could not wait out (``EX_SOFTWARE``).
EXIT_FAULT = 70
#: Exit status of a worker interrupted (SIGINT) before it started consuming: nothing was read or
#: committed (the shell's 128 + SIGINT).
EXIT_INTERRUPTED = 130
#: Exit status of a worker told to stop (SIGINT / SIGTERM) whose graceful shutdown took longer than
#: :data:`STOP_GRACE_S`: it stopped consuming, and the offsets it had not committed are redelivered
#: (``EX_TEMPFAIL``).
EXIT_STOP_FORCED = 75
#: Longest graceful shutdown of a worker; then it exits at once (:data:`EXIT_FAULT` when a fault
#: stopped it, else :data:`EXIT_STOP_FORCED`).
STOP_GRACE_S = 30.0


class InfrastructureDown(StreamError):
    """Redis or the broker stayed unavailable longer than ``Settings.infra_retry_s``."""


def _infra_types() -> tuple[type[BaseException], ...]:
    import redis.exceptions as rex

    types: list[type[BaseException]] = [ConnectionError, TimeoutError, OSError, asyncio.TimeoutError,
                                        rex.ConnectionError, rex.TimeoutError, rex.BusyLoadingError,
                                        rex.ReadOnlyError, rex.ClusterDownError, rex.TryAgainError,
                                        rex.MasterDownError]
    try:
        import aiokafka.errors as kex

        types += [kex.KafkaConnectionError, kex.KafkaTimeoutError, kex.NodeNotReadyError,
                  kex.RequestTimedOutError, kex.NotLeaderForPartitionError, kex.LeaderNotAvailableError,
                  kex.NotEnoughReplicasError, kex.NotEnoughReplicasAfterAppendError, kex.KafkaUnavailableError]
    except ImportError:  # pragma: no cover - aiokafka comes with faust
        pass
    return tuple(types)


def is_infrastructure_error(exc: BaseException) -> bool:
    """Whether ``exc`` says Redis or the broker is unavailable (retry), not that the input is bad.

    :param exc: the exception an operation raised.
    """
    if isinstance(exc, _infra_types()):
        return True
    name = type(exc).__name__
    # Faust wraps a failed produce; look at what it wraps
    cause = exc.__cause__ or exc.__context__
    return name in ("ProducerSendError",) and cause is not None and is_infrastructure_error(cause)


async def retry_infra(op: Callable[[], Awaitable[T]], *, what: str, give_up_after_s: float,
                      sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                      clock: Callable[[], float] = time.monotonic) -> T:
    """Run ``op`` until it succeeds, retrying infrastructure faults with exponential backoff.

    :param op: the operation (called again for each try; it must be safe to repeat).
    :param what: names the operation in the log (``"record in Redis"``).
    :param give_up_after_s: how long an outage may last before :class:`InfrastructureDown`.
    :param sleep: the pause (tests pass a fake).
    :param clock: monotonic time (tests pass a fake).
    :returns: what ``op`` returned.
    :raises InfrastructureDown: when the outage lasts longer than ``give_up_after_s``.
    :raises Exception: any fault that is not an infrastructure fault, at once (a message's fault).
    """
    started: float | None = None
    tries = 0
    delay = BACKOFF_FIRST_S
    while True:
        try:
            result = await op()
        except Exception as exc:
            if not is_infrastructure_error(exc):
                raise
            now = clock()
            if started is None:
                started = now
                log.error("%s failed (%s: %s); retrying with backoff for up to %.0f s", what, type(exc).__name__,
                          exc, give_up_after_s)
            tries += 1
            if now - started >= give_up_after_s:
                raise InfrastructureDown(f"{what}: still failing after {now - started:.0f} s and {tries} tries "
                                         f"({type(exc).__name__}: {exc})") from exc
            await sleep(delay)
            delay = min(BACKOFF_MAX_S, delay * 2)
            continue
        if started is not None:
            log.warning("%s recovered after %.1f s (%d failed tries)", what, clock() - started, tries)
        return result


async def isolate(items: Sequence[T], op: Callable[[Sequence[T]], Awaitable[Any]], *, what: str,
                  give_up_after_s: float) -> list[tuple[T, BaseException]]:
    """Apply ``op`` to ``items``; find the items that make it raise, and let the others through.

    ``op`` must be idempotent (it may see an item twice: the pipeline's Redis writes are). A fault
    that is not an infrastructure fault splits the batch in halves, recursively, down to single
    items, which are returned with their exception. Infrastructure faults are retried
    (:func:`retry_infra`).

    :param items: the batch.
    :param op: ``async op(sub_batch)``.
    :param what: names the operation in the log.
    :param give_up_after_s: see :func:`retry_infra`.
    :returns: ``(item, exception)`` for each item that ``op`` cannot process; empty when all went well.
    :raises InfrastructureDown: see :func:`retry_infra`.
    """
    if not items:
        return []
    try:
        await retry_infra(lambda: op(items), what=what, give_up_after_s=give_up_after_s)
        return []
    except InfrastructureDown:
        raise
    except Exception as exc:  # noqa: BLE001 - one of these items is at fault
        if len(items) == 1:
            return [(items[0], exc)]
        mid = len(items) // 2
        return (await isolate(items[:mid], op, what=what, give_up_after_s=give_up_after_s)
                + await isolate(items[mid:], op, what=what, give_up_after_s=give_up_after_s))


def describe(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` of an exception, cut to ``limit`` characters (for a dead letter's reason)."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def stop_worker(reason: str, exc: BaseException | None = None, *, on_stop: Callable[[], None] | None = None) -> None:
    """Stop this worker process loudly: log CRITICAL and ask the worker to shut down (SIGTERM to itself).

    The graceful shutdown commits only acknowledged offsets, so what was not processed is
    redelivered; the CLI then exits with :data:`EXIT_FAULT`, and so does the process by itself when
    that shutdown takes longer than :data:`STOP_GRACE_S`.

    :param reason: what failed.
    :param exc: the exception, logged with its traceback.
    :param on_stop: called first (the worker records the fault so its exit status says so).
    """
    log.critical("stopping the worker: %s", reason, exc_info=exc)
    if on_stop is not None:
        on_stop()
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:  # called outside the worker's loop (tests)
        loop = None
    exit_if_still_running(STOP_GRACE_S, EXIT_FAULT, loop)
    os.kill(os.getpid(), signal.SIGTERM)


_deadline_armed = False


def exit_if_still_running(after_s: float, status: int, loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Exit with ``status`` after ``after_s`` unless the process has ended by then.

    The graceful shutdown can hang (seen after a broker came back with a wiped log, and after a
    plain SIGINT: the stream agents stopped, the process never exited; Faust's known shutdown hang),
    which leaves a worker that neither works nor exits for its orchestrator to restart or its operator
    to see stopped. Offsets not committed by then are redelivered to the next worker.

    :param after_s: how long the shutdown may take.
    :param status: the exit status then (:data:`EXIT_FAULT` or :data:`EXIT_STOP_FORCED`).
    :param loop: the worker's event loop: where its unfinished tasks wait is logged before the exit.

    Armed once per process: a fault's :func:`stop_worker` arms it, and the shutdown its SIGTERM
    starts (:class:`~finpulse.stream.app.FaustWorker`) finds it armed.
    """
    global _deadline_armed
    if _deadline_armed:
        return
    _deadline_armed = True

    def expire() -> None:
        if loop is not None:
            log.critical("the graceful shutdown is stuck; its unfinished tasks:\n%s", _task_stacks(loop))
        log.critical("the graceful shutdown did not finish in %.0f s; exiting now with status %d "
                     "(offsets not committed are redelivered)", after_s, status)
        logging.shutdown()
        os._exit(status)

    timer = threading.Timer(after_s, expire)
    timer.daemon = True  # never keeps a process that ended on its own
    timer.start()


def _task_stacks(loop: asyncio.AbstractEventLoop, limit: int = 40) -> str:
    """Where the unfinished tasks of ``loop`` wait (read from another thread: best effort)."""
    try:
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    except RuntimeError:  # the set changed while it was copied
        return "(could not list the tasks)"
    out = []
    for t in tasks[:limit]:
        buf = io.StringIO()
        t.print_stack(limit=6, file=buf)
        out.append(buf.getvalue())
    if len(tasks) > limit:
        out.append(f"... and {len(tasks) - limit} more")
    return "\n".join(out)
