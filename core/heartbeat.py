"""Liveness files: a long-running process touches its heartbeat file; a health check reads its age.

The worker and the crawler beat every :data:`BEAT_INTERVAL_S` seconds from their event loop, so a
hung loop or a dead process stops the beats and ``finpulse health ROLE`` (the compose health check)
fails once the file is older than its ``--max-age``. Files live under ``<cache>/health/`` and are
named ``<role>.<namespace>``; writes are atomic (write a temporary file, then rename).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from .settings import Settings

#: Seconds between two beats of a healthy process.
BEAT_INTERVAL_S = 10.0
#: Default age (seconds) past which ``finpulse health`` calls a process dead: three missed beats.
DEFAULT_MAX_AGE_S = 3 * BEAT_INTERVAL_S
#: The roles that beat.
ROLES = ("worker", "crawler")


def heartbeat_path(settings: Settings, role: str) -> Path:
    """The heartbeat file of ``role`` in ``settings``' namespace.

    :param settings: gives the cache folder and the namespace.
    :param role: one of :data:`ROLES`.
    :raises ValueError: for an unknown role.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    return settings.cache_path() / "health" / f"{role}.{settings.namespace}"


def beat(path: Path, now: float | None = None) -> None:
    """Write the heartbeat file atomically (its content is the Unix time of the beat).

    :param path: the heartbeat file (its folder is created).
    :param now: the time to record; ``time.time()`` when ``None``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{time.time() if now is None else now:.3f}\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def heartbeat_age(path: Path, now: float | None = None) -> float | None:
    """Seconds since the last beat written to ``path``; ``None`` when there is none (or it is unreadable).

    :param path: the heartbeat file.
    :param now: the current time; ``time.time()`` when ``None``.
    """
    try:
        last = float(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return max(0.0, (time.time() if now is None else now) - last)
