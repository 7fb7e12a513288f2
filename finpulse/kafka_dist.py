"""Apache Kafka 4 (KRaft) for tests and the dev stack: fetched from Maven Central, run as a single node.

The jars of ``org.apache.kafka:kafka_2.13`` and their runtime dependencies (plus the Log4j2 SLF4J
binding) are copied by ``mvn dependency:copy-dependencies`` into
``<cache>/kafka/<version>/libs`` on first use (``<cache>`` is ``FINPULSE_CACHE_DIR``, else
``$XDG_CACHE_HOME/finpulse``, else ``~/.cache/finpulse``). A node is one JVM that is broker and
controller at once (``process.roles=broker,controller``, static quorum of one voter) with its log
directory in a state directory of the caller's choosing, so it can be stopped and started again on
the same data. Nothing here starts a process at import.
"""

from __future__ import annotations

import base64
import fcntl
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .exceptions import AppError

#: The Kafka release fetched unless ``FINPULSE_KAFKA_VERSION`` says otherwise (newest 4.x on Maven Central
#: when this was written; checked with a ``[4.0.0,5.0.0)`` version range).
KAFKA_VERSION = "4.4.0"
#: Log4j2 of the same release line as the ``log4j-core`` that Kafka 4.4 depends on; Kafka logs through
#: SLF4J 1.7, so the binding is ``log4j-slf4j-impl`` (not ``log4j-slf4j2-impl``).
LOG4J_VERSION = "2.25.5"
#: The Log4j2 configuration shipped as package data (console only; the stack sends stdout to its log dir).
LOG4J_CONFIG = Path(__file__).parent / "kafka_log4j2.xml"
#: JVM options for a 2-core CI machine: a small heap and a quick start.
JVM_OPTS = ("-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true")

#: Properties that tie a node to its host and folders: :attr:`KafkaNode.overrides` cannot change them.
NODE_LOCAL_PROPERTIES = frozenset({"node.id", "listeners", "advertised.listeners", "controller.quorum.voters",
                                   "log.dirs", "log.dir"})

_COMPLETE = ".complete"


class KafkaDistError(AppError, RuntimeError):
    """Apache Kafka could not be fetched, formatted or started (Java or Maven missing, mvn failed)."""


def kafka_version() -> str:
    """The Kafka version to run: ``FINPULSE_KAFKA_VERSION``, else :data:`KAFKA_VERSION`."""
    return os.environ.get("FINPULSE_KAFKA_VERSION") or KAFKA_VERSION


def cache_dir() -> Path:
    """finpulse's cache: ``FINPULSE_CACHE_DIR``, else ``$XDG_CACHE_HOME/finpulse``, else ``~/.cache/finpulse``."""
    env = os.environ.get("FINPULSE_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "finpulse"


def java_binary() -> str:
    """``java``: ``FINPULSE_JAVA_BIN``, else ``$JAVA_HOME/bin/java``, else the one on ``PATH``.

    :raises KafkaDistError: when there is none.
    """
    env = os.environ.get("FINPULSE_JAVA_BIN")
    if env:
        return env
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise KafkaDistError("no java: Apache Kafka 4 needs Java 17+ (apt-get install openjdk-17-jre-headless)")
    return found


def libs_dir(version: str | None = None) -> Path:
    """Where the jars of ``version`` live (or will live) in the cache.

    :param version: Kafka version; :func:`kafka_version` when ``None``.
    """
    return cache_dir() / "kafka" / (version or kafka_version()) / "libs"


def kafka_available(version: str | None = None) -> bool:
    """Whether a Kafka node can be run here: Java, and the jars cached or ``mvn`` to fetch them.

    :param version: Kafka version; :func:`kafka_version` when ``None``.
    """
    try:
        java_binary()
    except KafkaDistError:
        return False
    return (libs_dir(version) / _COMPLETE).exists() or shutil.which("mvn") is not None


def _pom(version: str) -> str:
    deps = [("org.apache.kafka", "kafka_2.13", version),
            ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
            ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION)]
    xml = "".join(f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
                  for g, a, v in deps)
    return ('<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
            "<groupId>finpulse</groupId><artifactId>kafka-dist</artifactId><version>0</version>"
            f"<packaging>pom</packaging><dependencies>{xml}</dependencies></project>\n")


def fetch_kafka(version: str | None = None, timeout: float = 900.0) -> Path:
    """Return the jar directory of Kafka ``version``, fetching it from Maven Central on first use.

    Idempotent: a finished download is marked by a ``.complete`` file and reused. Concurrent callers
    (parallel test sessions) serialise on an exclusive lock file next to the directory; the jars are
    copied into a temporary directory and renamed into place, so a killed fetch leaves nothing half-made.

    :param version: Kafka version; :func:`kafka_version` when ``None``.
    :param timeout: seconds ``mvn`` may run.
    :raises KafkaDistError: when ``mvn`` is missing or fails (its output is in the message).
    """
    version = version or kafka_version()
    libs = libs_dir(version)
    if (libs / _COMPLETE).exists():
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    with open(libs.parent / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (libs / _COMPLETE).exists():  # another process fetched it while we waited
            return libs
        mvn = os.environ.get("FINPULSE_MVN_BIN") or shutil.which("mvn")
        if not mvn:
            raise KafkaDistError(f"Apache Kafka {version} is not in {libs} and there is no mvn to fetch it "
                                 "(apt-get install maven, or set FINPULSE_TEST_BROKER=tansu)")
        work = Path(tempfile.mkdtemp(prefix="fetch-", dir=libs.parent))
        try:
            (work / "pom.xml").write_text(_pom(version))
            argv = [mvn, "-B", "-q", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
                    "-DincludeScope=runtime", f"-DoutputDirectory={work / 'libs'}"]
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise KafkaDistError(f"mvn did not fetch Apache Kafka {version} within {timeout:.0f}s") from None
            jars = list((work / "libs").glob("*.jar"))
            if done.returncode != 0 or not any(j.name == f"kafka_2.13-{version}.jar" for j in jars):
                tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
                raise KafkaDistError(f"mvn could not fetch org.apache.kafka:kafka_2.13:{version} "
                                     f"(exit {done.returncode}):\n{tail}")
            (work / "libs" / _COMPLETE).write_text(f"{len(jars)} jars\n")
            if libs.exists():
                shutil.rmtree(libs)
            (work / "libs").rename(libs)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return libs


def random_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (like ``kafka-storage random-uuid``).

    Never one that starts with ``-`` (1 in 64 do): the storage tool's argument parser takes it for an
    option (``argument --cluster-id/-t: expected one argument``); Kafka's own ``Uuid`` redraws those too.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


@dataclass
class KafkaNode:
    """One KRaft node (broker + controller) whose data lives in ``data_dir``.

    :param data_dir: holds ``server.properties`` and the log directory ``logs/``; reused across restarts.
    :param port: the PLAINTEXT (client) port on 127.0.0.1.
    :param controller_port: the CONTROLLER port on 127.0.0.1.
    :param partitions: ``num.partitions`` for auto-created topics.
    :param log_dir: where the broker's own log files go (``kafka.logs.dir``).
    :param version: Kafka version; :func:`kafka_version` when empty.
    :param overrides: broker properties that replace or add to :meth:`properties` (e.g. a deployment's
        settings, to test them); the listeners, quorum voters and ``log.dirs`` always stay this node's.
    """

    data_dir: Path
    port: int
    controller_port: int
    partitions: int = 1
    log_dir: Path | None = None
    version: str = ""
    overrides: dict[str, str] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    def properties(self) -> dict[str, str]:
        """The broker configuration (single node: every replication factor and min ISR is 1), then ``overrides``."""
        base = {
            "node.id": "1",
            "process.roles": "broker,controller",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(Path(self.data_dir) / "logs"),
            "num.partitions": str(self.partitions),
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            "log.retention.hours": "24",
        }
        return {**base, **{k: v for k, v in self.overrides.items() if k not in NODE_LOCAL_PROPERTIES}}

    def config_file(self) -> Path:
        """Write ``server.properties`` into ``data_dir`` (again at each start: ports may change) and return it."""
        Path(self.data_dir).mkdir(parents=True, exist_ok=True)
        path = Path(self.data_dir) / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        return path

    def _java(self, main: str, *args: str) -> list[str]:
        libs = fetch_kafka(self.version or None)
        log_dir = self.log_dir or self.data_dir
        # without the shipped config (package data missing) Log4j2 falls back to errors on the console
        logging = [f"-Dlog4j2.configurationFile={LOG4J_CONFIG}"] if LOG4J_CONFIG.exists() else []
        return [java_binary(), *JVM_OPTS, *logging, f"-Dkafka.logs.dir={log_dir}", "-cp", f"{libs}/*", main, *args]

    def formatted(self) -> bool:
        """Whether the log directory was formatted (holds ``meta.properties``)."""
        return (Path(self.data_dir) / "logs" / "meta.properties").exists()

    def format(self, timeout: float = 120.0) -> None:
        """Format the log directory with a new cluster id unless it is formatted already.

        :param timeout: seconds the storage tool may run.
        :raises KafkaDistError: when the storage tool fails.
        """
        if self.formatted():
            return
        argv = self._java("kafka.tools.StorageTool", "format", f"--cluster-id={random_cluster_id()}",
                          "-c", str(self.config_file()))
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise KafkaDistError(f"kafka-storage format failed (exit {done.returncode}): "
                                 f"{(done.stdout + done.stderr).strip()[-2000:]}")

    def argv(self) -> list[str]:
        """The command line of the node (formats the log directory and writes the config first)."""
        self.format()
        return self._java("kafka.Kafka", str(self.config_file()))
