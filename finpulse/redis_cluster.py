"""A real Redis Cluster on loopback: masters and replicas of ``redis-server`` in cluster mode.

For tests, benchmarks and ``finpulse stack up --redis-cluster``: each node is a ``redis-server`` (7 or
newer: ``CLUSTER ADDSLOTSRANGE``) on a free port, with AOF in its own folder. The cluster is built with
the cluster commands themselves (``CLUSTER MEET``, ``ADDSLOTSRANGE``, ``REPLICATE``), so it needs no
``redis-cli``. Its URL is ``redis+cluster://127.0.0.1:<port>,...`` (:mod:`finpulse.core.connections`).

Faults: :meth:`LocalRedisCluster.kill` (kill -9 one node), :meth:`LocalRedisCluster.restart`, and
:meth:`LocalRedisCluster.fail_over` (kill -9 a master, wait for its replica to take over, bring the old
master back as a replica).
"""

from __future__ import annotations

import logging
import random
import socket
import subprocess
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from .stack import StackError, _ignore_sigint, _wait_until, redis_server_binary

log = logging.getLogger(__name__)

SLOTS = 16384
BUS_PORT_OFFSET = 10000
"""A node's cluster bus listens on its port plus this (so node ports stay at or below 55535)."""


def free_cluster_port(taken: Collection[int] = (), attempts: int = 200) -> int:
    """A loopback port that is free, as is its cluster bus port (port + 10000), and below 55536."""
    for _ in range(attempts):
        port = random.randint(20000, 55535 - 1)
        if port in taken or port + BUS_PORT_OFFSET in taken:
            continue
        try:
            for p in (port, port + BUS_PORT_OFFSET):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise StackError("no free port pair for a redis cluster node")


@dataclass
class ClusterNodeProcess:
    """One ``redis-server`` of the cluster (its port, data folder and process)."""

    port: int
    dir: Path
    proc: subprocess.Popen | None = None


@dataclass
class LocalRedisCluster:
    """``masters`` primaries with ``replicas`` replicas each, on free loopback ports.

    :param masters: number of primaries (slots are split evenly between them).
    :param replicas: replicas per primary (1 for the failover experiments).
    :param log_dir: node folders and logs (a temporary directory by default).
    :param node_timeout_ms: ``cluster-node-timeout``: how long a master may be unreachable before its
        replica is promoted (short on loopback so a failover takes seconds).
    """

    masters: int = 3
    replicas: int = 1
    log_dir: str = ""
    node_timeout_ms: int = 2000
    nodes: list[ClusterNodeProcess] = field(default_factory=list)

    # --- life cycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> LocalRedisCluster:
        """Start every node, join them, assign slots and replicas; wait until the cluster is ``ok``.

        :raises StackError: when a node does not start or the cluster does not converge.
        """
        if not self.log_dir:
            self.log_dir = tempfile.mkdtemp(prefix="finpulse-redis-cluster-")
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        log.info("redis cluster up: %s", self.url)
        return self

    def _start(self, timeout: float) -> None:
        taken: set[int] = set()
        for i in range(self.masters * (1 + self.replicas)):
            port = free_cluster_port(taken)
            taken |= {port, port + BUS_PORT_OFFSET}
            node = ClusterNodeProcess(port=port, dir=Path(self.log_dir) / f"node-{i}")
            node.dir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(node)
            self._spawn(node)
        for node in self.nodes:
            _wait_until(lambda n=node: self._client(n).ping(), f"redis cluster node {node.port}", 20, 0.1)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self._client(node).execute_command("CLUSTER", "MEET", "127.0.0.1", first.port)
        per = SLOTS // self.masters
        for i, node in enumerate(self.nodes[: self.masters]):
            lo, hi = i * per, (SLOTS - 1 if i == self.masters - 1 else (i + 1) * per - 1)
            self._client(node).execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)

        def all_known() -> None:
            for node in self.nodes:
                known = self._client(node).execute_command("CLUSTER", "NODES")
                known = known.decode() if isinstance(known, bytes) else known
                if sum(1 for line in str(known).splitlines() if line.strip()) < len(self.nodes):
                    raise StackError(f"node {node.port} does not know every node yet")

        _wait_until(all_known, "redis cluster nodes meeting", timeout, 0.1)
        ids = [self.node_id(n) for n in self.nodes[: self.masters]]
        for r in range(self.replicas):
            for i in range(self.masters):
                replica = self.nodes[self.masters * (1 + r) + i]
                _wait_until(lambda rp=replica, mid=ids[i]: self._client(rp).execute_command(
                    "CLUSTER", "REPLICATE", mid), f"replica {replica.port} of {ids[i][:8]}", timeout, 0.2)
        self.wait_ok(timeout)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop every node (SIGTERM, then SIGKILL after ``timeout`` s)."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
            node.proc = None

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- addresses and state ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis+cluster://`` URL listing every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def _client(self, node: ClusterNodeProcess):
        import redis

        return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2, decode_responses=True)

    def node_id(self, node: ClusterNodeProcess) -> str:
        """The cluster node id of ``node``."""
        return str(self._client(node).execute_command("CLUSTER", "MYID"))

    def role(self, node: ClusterNodeProcess) -> str:
        """``master`` or ``slave`` (as ``ROLE`` reports), or ``down`` when it does not answer."""
        try:
            return str(self._client(node).execute_command("ROLE")[0])
        except Exception:  # noqa: BLE001 - a dead node
            return "down"

    def primaries(self) -> list[ClusterNodeProcess]:
        """The nodes that are masters now (failovers move this)."""
        return [n for n in self.nodes if self.role(n) == "master"]

    def wait_ok(self, timeout: float = 60.0) -> None:
        """Wait until every running node reports ``cluster_state:ok``, every slot is served by a
        running master and each master has its replicas attached and in sync.

        :raises StackError: after ``timeout`` s.
        """
        def ok() -> None:
            running = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
            for node in running:
                info = self._client(node).execute_command("CLUSTER", "INFO")
                if "cluster_state:ok" not in str(info):
                    raise StackError(f"node {node.port}: cluster_state not ok")
            masters = [n for n in running if self.role(n) == "master"]
            if len(masters) != self.masters:
                raise StackError(f"{len(masters)} masters running, expected {self.masters}")
            for m in masters:
                repl = self._client(m).info("replication")
                online = sum(1 for k, v in repl.items() if k.startswith("slave") and isinstance(v, dict)
                             and v.get("state") == "online")
                if online < self.replicas and len(running) == len(self.nodes):
                    raise StackError(f"master {m.port}: {online} replica(s) online")

        _wait_until(ok, "redis cluster state ok", timeout, 0.2)

    # --- faults ----------------------------------------------------------------------------------

    def kill(self, node: ClusterNodeProcess) -> None:
        """kill -9 one node (its AOF and ``nodes.conf`` stay for :meth:`restart`)."""
        if node.proc is not None and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()
        node.proc = None

    def restart(self, node: ClusterNodeProcess, timeout: float = 30.0) -> None:
        """Start a stopped node again on its port with its data; it rejoins the cluster."""
        self._spawn(node)
        _wait_until(lambda: self._client(node).ping(), f"redis cluster node {node.port}", timeout, 0.1)

    def fail_over(self, master: ClusterNodeProcess | None = None, timeout: float = 60.0) -> dict:
        """Crash a master (kill -9), wait until a replica serves its slots, then restart it as a replica.

        :param master: the master to crash (the first master by default).
        :returns: ``{"killed": port, "promoted": port, "seconds": time until the cluster was ok again}``.
        """
        master = master or self.primaries()[0]
        if self.role(master) != "master":
            raise StackError(f"node {master.port} is not a master")
        before = {n.port for n in self.primaries()}
        t0 = time.monotonic()
        self.kill(master)

        def promoted() -> None:
            now = {n.port for n in self.nodes if n.proc is not None and self.role(n) == "master"}
            if len(now) != self.masters or now <= before:
                raise StackError("no replica promoted yet")

        _wait_until(promoted, f"failover of master {master.port}", timeout, 0.2)
        new = next(n.port for n in self.primaries() if n.port not in before)
        self.restart(master)
        self.wait_ok(timeout)
        return {"killed": master.port, "promoted": new, "seconds": round(time.monotonic() - t0, 2)}

    def _spawn(self, node: ClusterNodeProcess) -> None:
        argv = [redis_server_binary(), "--port", str(node.port), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms), "--save", "",
                "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(node.dir)]
        logf = open(node.dir / "redis.log", "ab")
        node.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=_ignore_sigint)
        logf.close()
        time.sleep(0.05)
        if node.proc.poll() is not None:
            raise StackError(f"redis-server (cluster mode) exited on port {node.port}; see {node.dir}/redis.log")
