"""Where ``finpulse stack up`` records its running development stack, and how others find it.

The app layer writes the state file (:mod:`finpulse.stack`); the worker, the CLI and the crawler
read it when ``FINPULSE_KAFKA_BOOTSTRAP`` / ``FINPULSE_REDIS_URL`` are empty.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .settings import Settings


def state_file() -> Path:
    """The state file: ``FINPULSE_STACK_STATE``, else ``~/.cache/finpulse/stack.json`` (read at each call)."""
    return Path(os.environ.get("FINPULSE_STACK_STATE") or Path.home() / ".cache" / "finpulse" / "stack.json")


def running_stack() -> dict[str, Any] | None:
    """The recorded stack (``kafka_bootstrap``, ``redis_url``, ``pids``, ``log_dir``), or ``None``."""
    path = state_file()
    if not path.exists():
        return None
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def _resolve(given: str, field: str, what: str, env: str) -> str:
    if given:
        return given
    state = running_stack()
    if state is not None:
        return str(state[field])
    raise RuntimeError(f"no {what} configured: set {env} or run `finpulse stack up`")


def resolve_bootstrap(settings: Settings) -> str:
    """The Kafka bootstrap: the setting, else the running ``finpulse stack up`` stack.

    :raises RuntimeError: when neither is available, saying what to do.
    """
    return _resolve(settings.kafka_bootstrap, "kafka_bootstrap", "Kafka", "FINPULSE_KAFKA_BOOTSTRAP")


def resolve_redis_url(settings: Settings) -> str:
    """The Redis URL: the setting, else the running ``finpulse stack up`` stack.

    :raises RuntimeError: when neither is available, saying what to do.
    """
    return _resolve(settings.redis_url, "redis_url", "Redis", "FINPULSE_REDIS_URL")
