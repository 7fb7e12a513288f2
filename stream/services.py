"""Long-lived resources of a worker process: classifier, Redis, window store, detector, delivery.

Created lazily on first use inside the worker's event loop, so importing :mod:`stream.app` is cheap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from finpulse.settings import Settings

log = logging.getLogger("finpulse.worker")


def resolve_bootstrap(settings: Settings) -> str:
    """The Kafka bootstrap: the setting, else the running ``finpulse stack up`` stack.

    :raises RuntimeError: when neither is available, saying what to do.
    """
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    from finpulse.stack import STATE_FILE

    if STATE_FILE.exists():
        return json.loads(STATE_FILE.read_text())["kafka_bootstrap"]
    raise RuntimeError("no Kafka configured: set FINPULSE_KAFKA_BOOTSTRAP or run `finpulse stack up`")


def resolve_redis_url(settings: Settings) -> str:
    """The Redis URL: the setting, else the running ``finpulse stack up`` stack."""
    if settings.redis_url:
        return settings.redis_url
    from finpulse.stack import STATE_FILE

    if STATE_FILE.exists():
        return json.loads(STATE_FILE.read_text())["redis_url"]
    raise RuntimeError("no Redis configured: set FINPULSE_REDIS_URL or run `finpulse stack up`")


class Services:
    """Lazily built per-process resources.

    :param settings: the worker's settings.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.executor = ThreadPoolExecutor(max_workers=settings.infer_workers, thread_name_prefix="finpulse-infer")
        self._classifier = None
        self._redis = None
        self._store = None
        self._detector = None
        self._lock = asyncio.Lock()

    async def classifier(self):
        """The :class:`models.Classifier` (loaded in the inference thread on first call)."""
        if self._classifier is None:
            async with self._lock:
                if self._classifier is None:
                    from models import Classifier

                    loop = asyncio.get_running_loop()
                    self._classifier = await loop.run_in_executor(
                        self.executor,
                        lambda: Classifier(self.settings.model_dir or None, device=self.settings.device,
                                           batch_size=self.settings.batch_max,
                                           threads=self.settings.infer_threads_resolved(),
                                           spinning=self.settings.infer_spinning))
        return self._classifier

    async def redis(self):
        """A ``redis.asyncio.Redis`` client for the configured URL."""
        if self._redis is None:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(resolve_redis_url(self.settings))
        return self._redis

    async def store(self):
        """The :class:`alerts.store.WindowStore` of this namespace."""
        if self._store is None:
            from alerts.store import WindowStore

            self._store = WindowStore.from_settings(await self.redis(), self.settings)
        return self._store

    async def detector(self):
        """The :class:`alerts.detector.Detector` with the rules of ``settings.rules_file``."""
        if self._detector is None:
            from alerts.detector import Detector

            clf = await self.classifier()
            self._detector = Detector.from_config(await self.store(), self.alerts_config(),
                                                  model_version=clf.model_version)
        return self._detector

    def alerts_config(self):
        """Rules and webhook endpoints of ``settings.rules_file`` (secrets resolved)."""
        if getattr(self, "_alerts_config", None) is None:
            from alerts.rules import load_config

            self._alerts_config = load_config(self.settings.rules_file,
                                              secrets_file=self.settings.webhook_secrets_file or None)
        return self._alerts_config

    async def close(self) -> None:
        """Close the Redis client and the inference thread."""
        if self._redis is not None:
            await self._redis.aclose()
        self.executor.shutdown(wait=False)


def worker_env_summary(settings: Settings) -> str:
    """One log line describing where this worker reads and writes."""
    return (f"namespace={settings.namespace} group={settings.group_id} raw={settings.topic(settings.topic_raw)} "
            f"inference={settings.infer_workers}x{settings.infer_threads_resolved()} threads "
            f"spinning={settings.infer_spinning} pid={os.getpid()}")
