"""docker-compose.yml and the Dockerfile would run as written (there is no Docker engine here).

Each test reads the files and checks them against what the code does: every ``FINPULSE_*`` name is a
Settings field, every volume is mounted where its service writes, secrets come only from a file the
operator names, images match the versions the tests run, and our Kafka fixture starts with the same
broker settings that compose passes (then serves the topics ``finpulse topics create`` makes).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from finpulse.core.heartbeat import heartbeat_path
from finpulse.core.settings import Settings
from finpulse.kafka_dist import KAFKA_VERSION, NODE_LOCAL_PROPERTIES
from finpulse.stack import redis_server_binary

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SERVICES = COMPOSE["services"]
FINPULSE_SERVICES = [n for n, s in SERVICES.items() if s.get("build")]
LONG_RUNNING = [n for n, s in SERVICES.items() if s.get("restart") == "unless-stopped"]
#: env names of the apache/kafka image that configure the JVM or the image, not server.properties
KAFKA_IMAGE_ENV = {"KAFKA_HEAP_OPTS", "KAFKA_OPTS", "KAFKA_JMX_OPTS", "KAFKA_LOG4J_OPTS", "KAFKA_JVM_PERFORMANCE_OPTS",
                   "KAFKA_GC_LOG_OPTS", "KAFKA_VERSION", "CLUSTER_ID"}


def kafka_properties(env: dict[str, str]) -> dict[str, str]:
    """Broker properties from the apache/kafka image's ``KAFKA_*`` variables, mapped as the image does.

    ``KAFKA_`` is dropped and the rest lower-cased; ``___`` becomes ``-``, ``__`` ``_`` and ``_`` ``.``.
    """
    out = {}
    for name, value in env.items():
        if not name.startswith("KAFKA_") or name in KAFKA_IMAGE_ENV:
            continue
        key = name[len("KAFKA_"):].lower().replace("___", "\0").replace("__", "\1").replace("_", ".")
        out[key.replace("\0", "-").replace("\1", "_")] = str(value)
    return out


def env_of(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in (SERVICES[service].get("environment") or {}).items()}


def settings_of(service: str) -> Settings:
    """The Settings a service's process builds from its compose environment."""
    env = {k[len("FINPULSE_"):].lower(): v for k, v in env_of(service).items() if k.startswith("FINPULSE_")}
    return Settings(**env)


def volume_targets(service: str) -> dict[str, str]:
    """container path -> volume name (or host path) of a service's mounts."""
    out = {}
    for v in SERVICES[service].get("volumes", []):
        spec = re.sub(r":(ro|rw)$", "", v)  # source:target[:mode]; a source may hold ${VAR:-default}
        source, _, target = spec.rpartition(":")
        out[target] = source
    return out


def test_kafka_properties_mapping_follows_the_image():
    assert kafka_properties({"KAFKA_LOG_DIRS": "/d", "KAFKA_FOO__BAR": "1", "KAFKA_A___B_C": "2",
                             "KAFKA_HEAP_OPTS": "-Xmx1g"}) == {"log.dirs": "/d", "foo_bar": "1", "a-b.c": "2"}


def test_every_finpulse_variable_is_a_settings_field():
    fields = set(Settings.model_fields)
    names = {k for s in FINPULSE_SERVICES for k in env_of(s) if k.startswith("FINPULSE_")}
    assert names, "compose sets no FINPULSE_ variables?"
    unknown = sorted(n for n in names if n[len("FINPULSE_"):].lower() not in fields)
    assert not unknown, f"docker-compose.yml sets variables that Settings ignores: {unknown}"
    for s in FINPULSE_SERVICES:
        settings_of(s)  # and every value validates


def test_kafka_writes_its_log_into_its_volume():
    env = env_of("kafka")
    log_dirs = kafka_properties(env)["log.dirs"].split(",")
    targets = volume_targets("kafka")
    assert all(d in targets for d in log_dirs), f"log.dirs {log_dirs} not on a volume ({targets})"
    assert all(targets[d] in COMPOSE["volumes"] for d in log_dirs), "Kafka's log must be on a named volume"


def test_redis_persists_with_aof_into_its_volume():
    cmd = SERVICES["redis"]["command"]
    opts = dict(zip(cmd[1::2], cmd[2::2], strict=True))
    assert opts.get("--appendonly") == "yes" and opts.get("--appendfsync") in ("everysec", "always")
    assert opts.get("--dir") in volume_targets("redis")
    assert volume_targets("redis")[opts["--dir"]] in COMPOSE["volumes"]


def test_finpulse_services_write_only_to_their_cache_volume(tmp_path):
    dockerfile_cache = re.search(r"^ENV FINPULSE_CACHE_DIR=(\S+)", DOCKERFILE, re.M).group(1)
    assert re.search(rf'^VOLUME \["{re.escape(dockerfile_cache)}"[],]', DOCKERFILE, re.M)
    for name in FINPULSE_SERVICES:
        svc, settings = SERVICES[name], settings_of(name)
        cache = str(settings.cache_path())
        assert cache == dockerfile_cache
        assert svc.get("read_only") is True, f"{name}: the root filesystem should be read-only"
        assert volume_targets(name).get(cache) in COMPOSE["volumes"], f"{name}: {cache} is not on a volume"
        # what the worker writes: Faust's data folder and the heartbeats, all below the cache
        for role in ("worker", "crawler"):
            assert str(heartbeat_path(settings, role)).startswith(cache + "/")
        assert str(settings.model_copy(update={"cache_dir": str(tmp_path)}).cache_path()) == str(tmp_path)
        # the rules file is mounted read-only where FINPULSE_RULES_FILE points
        assert settings.rules_file in volume_targets(name)


def test_every_finpulse_service_shares_one_model_directory_volume():
    targets = set()
    for name in FINPULSE_SERVICES:
        models_dir = settings_of(name).models_dir
        assert models_dir, f"{name}: FINPULSE_MODELS_DIR unset (promoted versions would be lost with the container)"
        targets.add(volume_targets(name).get(models_dir))
    assert len(targets) == 1 and targets.pop() in COMPOSE["volumes"]  # a promotion reaches every worker


def test_faust_data_folder_is_below_the_cache(tmp_path):
    from finpulse.stream.app import faust_options

    settings = settings_of("worker").model_copy(update={"cache_dir": str(tmp_path)})
    assert faust_options(settings, "kafka:9092")["datadir"].startswith(str(tmp_path) + "/")


def test_images_run_as_non_root_from_the_wheel():
    assert re.search(r"pip wheel .*--no-deps", DOCKERFILE), "the image should be built from the wheel"
    assert re.search(r"pip install [^\n]*\.whl", DOCKERFILE)
    runtime = DOCKERFILE.split("\nFROM ")[-1]  # the last stage is the image
    assert "COPY . ." not in runtime, "the source tree must not reach the runtime image"
    user = re.findall(r"^USER (\S+)", runtime, re.M)[-1]
    assert user.split(":")[0] not in ("root", "0")
    for name in FINPULSE_SERVICES:
        assert SERVICES[name]["user"].split(":")[0] not in ("root", "0")


def test_health_checks_and_dependencies():
    for name in LONG_RUNNING:
        assert SERVICES[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name, svc in SERVICES.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            want = "service_completed_successfully" if dep == "init-topics" else "service_healthy"
            assert cond["condition"] == want, f"{name} -> {dep}"
    for name in FINPULSE_SERVICES:
        test = SERVICES[name].get("healthcheck", {}).get("test")
        if test and SERVICES[name]["command"][0] == "serve":
            assert "/livez" in test[-1] and str(settings_of(name).serve_port) in test[-1]
        elif test:
            role = {"worker": "worker", "crawl": "crawler"}[SERVICES[name]["command"][0]]
            assert test == ["CMD", "finpulse", "health", role]


def test_health_command_reads_the_heartbeat(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from finpulse.cli import main
    from finpulse.core.heartbeat import beat

    monkeypatch.setenv("FINPULSE_CACHE_DIR", str(tmp_path))
    run = CliRunner().invoke
    assert run(main, ["health", "worker"]).exit_code == 1  # never beat
    path = heartbeat_path(Settings(), "worker")
    beat(path, now=0.0)
    res = run(main, ["health", "worker"])
    assert res.exit_code == 1 and "unhealthy" in res.output
    beat(path)
    assert run(main, ["health", "worker"]).exit_code == 0
    assert run(main, ["health", "crawler"]).exit_code == 1


def test_secrets_only_from_a_file_the_operator_names():
    secret = COMPOSE["secrets"]["webhooks"]["file"]
    assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", secret), "the secrets file must come from a required variable"
    assert "example" not in secret.split(":?")[0]
    for name in FINPULSE_SERVICES:
        if "webhooks" in SERVICES[name].get("secrets", []):
            assert settings_of(name).webhook_secrets_file == "/run/secrets/webhooks"


def test_the_example_secrets_are_refused(tmp_path):
    from finpulse.alerts.config import load_secrets_file
    from finpulse.alerts.exceptions import ConfigError
    from finpulse.core.settings import shipped_file

    with pytest.raises(ConfigError, match="example"):
        load_secrets_file(shipped_file("webhook-secrets.env.example"))
    own = tmp_path / "secrets.env"
    own.write_text("RISK_DESK_SECRET=whsec_bXktb3duLXNlY3JldC1mb3ItdGhlLXRlc3Q=\n")
    assert set(load_secrets_file(own)) == {"RISK_DESK_SECRET"}


def test_compose_runs_the_kafka_and_redis_majors_the_tests_run():
    image = SERVICES["kafka"]["image"]
    assert image == f"apache/kafka:{KAFKA_VERSION}", "compose and the test broker must be the same Kafka"
    redis_major = SERVICES["redis"]["image"].split(":")[1].split(".")[0]
    out = subprocess.run([redis_server_binary(), "--version"], capture_output=True, text=True).stdout
    tested = re.search(r"v=(\d+)\.", out).group(1)
    assert tested == redis_major, (f"tests run redis-server {tested}.x, compose redis:{redis_major} "
                                   "(install Debian's redis-server 7: scripts/test.sh does as root)")


@pytest.mark.integration
def test_kafka_fixture_with_composes_broker_settings(tmp_path):
    """Our Kafka node, started with compose's broker settings, serves what `topics create` makes."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import ConfigResource
    from kafka.errors import KafkaError

    from finpulse.stack import EmbeddedStack

    from .conftest import require_apache_kafka

    require_apache_kafka()
    props = kafka_properties(env_of("kafka"))
    overrides = {k: v for k, v in props.items() if k not in NODE_LOCAL_PROPERTIES}
    assert overrides["auto.create.topics.enable"] == "false"
    with EmbeddedStack(broker="kafka", log_dir=str(tmp_path), kafka_overrides=overrides) as s:
        # init-topics as compose runs it: its command with its environment (but this broker and cache)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("FINPULSE_")}, **env_of("init-topics"),
               "FINPULSE_KAFKA_BOOTSTRAP": s.kafka_bootstrap, "FINPULSE_CACHE_DIR": str(tmp_path / "cache")}
        done = subprocess.run([sys.executable, "-m", "finpulse.cli", *SERVICES["init-topics"]["command"]], env=env,
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        settings = settings_of("init-topics")
        admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
        try:
            topics = {t["name"]: t for t in admin.describe_topics()}
            raw = settings.topic("news.raw")
            assert len(topics[raw]["partitions"]) == settings.partitions
            configs = admin.describe_configs([ConfigResource("BROKER", "1")], config_filter="all")
            # {resource type: {resource name: {key: {config data}}}}
            (by_name,) = configs.values()
            broker_cfg = {k: (v.get("value") if isinstance(v, dict) else v) for k, v in by_name["1"].items()}
            for key in ("auto.create.topics.enable", "log.retention.hours", "num.partitions", "min.insync.replicas"):
                assert broker_cfg.get(key) == overrides[key], (key, broker_cfg.get(key))
        finally:
            admin.close()
        producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", max_block_ms=5000)
        producer.send(raw, b'{"probe": 1}').get(timeout=30)
        # auto-creation is off, as in compose: a typo'd topic is an error, not a new topic
        with pytest.raises(KafkaError):
            producer.send("no-such-topic.compose", b"x").get(timeout=10)
        producer.close()
        consumer = KafkaConsumer(raw, bootstrap_servers=s.kafka_bootstrap, auto_offset_reset="earliest",
                                 consumer_timeout_ms=20000)
        assert [m.value for m in consumer][:1] == [b'{"probe": 1}']
        consumer.close()


# --- Prometheus and Grafana ------------------------------------------------------------------------

PROMQL_WORDS = {"sum", "max", "min", "avg", "by", "rate", "increase", "histogram_quantile", "le", "without", "on",
                "count", "irate", "up"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (identifiers before ``{``, ``[`` or ``)``, not functions,
    label names or ``by (...)`` lists)."""
    expr = re.sub(r'"[^"]*"', '""', expr)                       # label values
    expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", expr)      # grouping labels
    expr = re.sub(r"\{[^}]*\}", "{}", expr)                     # matchers
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr))
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhd]?", n)}


def test_grafana_dashboard_queries_only_metrics_finpulse_exports():
    from finpulse.core.metrics import metrics

    exported = metrics().names() | {"up"}
    board = json.loads((ROOT / "config" / "grafana" / "dashboards" / "finpulse.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        assert names <= exported, (expr, names - exported)
    # the committed file is what the generator writes
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen", ROOT / "scripts" / "make_grafana_dashboard.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.dashboard() == board
    prov = yaml.safe_load((ROOT / "config/grafana/provisioning/dashboards/finpulse.yml").read_text())
    mounts = volume_targets("grafana")
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert mounts["/var/lib/grafana/dashboards"] == "./config/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./config/grafana/provisioning"


def test_prometheus_scrapes_every_process_and_its_rules_use_exported_metrics():
    from finpulse.core.metrics import metrics

    prom = yaml.safe_load((ROOT / "config" / "prometheus" / "prometheus.yml").read_text())
    ports = {}
    for job in prom["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                ports[name] = sd["port"]
        for sc in job.get("static_configs", []):
            for t in sc["targets"]:
                host, port = t.split(":")
                ports[host] = int(port)
    assert ports["worker"] == settings_of("worker").worker_ops_port
    assert ports["crawler"] == settings_of("crawler").crawler_ops_port
    assert ports["dashboard"] == settings_of("dashboard").serve_port
    for name in ("worker", "crawler"):
        assert settings_of(name).ops_host == "0.0.0.0"  # reachable from the prometheus container
    rules = yaml.safe_load((ROOT / "config" / "prometheus" / "rules.yml").read_text())
    exported = metrics().names() | {"up"}
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert "FinpulseModelDrift" in alerts and "0.25" in alerts["FinpulseModelDrift"]["expr"]
    for r in alerts.values():
        assert metric_names(r["expr"]) <= exported, r["expr"]
    assert set(volume_targets("prometheus")) >= {"/etc/prometheus/prometheus.yml", "/etc/prometheus/rules.yml",
                                                  "/prometheus"}


def test_the_dashboard_binds_to_loopback_on_the_host():
    for name in ("dashboard", "prometheus", "grafana"):
        for port in SERVICES[name]["ports"]:
            assert port.startswith("127.0.0.1:"), (name, port)
    assert "${GRAFANA_ADMIN_PASSWORD:?" in (ROOT / "docker-compose.yml").read_text()
