"""Long-lived resources of a worker process: classifier, Redis, window store, detector, delivery.

Built by :func:`finpulse.stream.app.create_app` when a worker starts; the classifier, Redis client,
store, detector and delivery service are created lazily on first use inside the worker's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from finpulse.alerts.config import load_config
from finpulse.alerts.detector import Detector
from finpulse.alerts.history import AlertHistory
from finpulse.alerts.store import WindowStore
from finpulse.core.connections import async_redis
from finpulse.core.settings import Settings
from finpulse.core.stackstate import resolve_bootstrap, resolve_redis_url
from finpulse.models import Classifier

from .delivery import DeliveryService
from .monitoring import ModelMonitor

log = logging.getLogger(__name__)


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
        self._alerts_config = None
        self._delivery: DeliveryService | None = None
        self._logwatch: Any = None
        self._monitor: ModelMonitor | None = None
        self._history: AlertHistory | None = None
        self.ops: Any = None  # the operations server (stream/agents.py: serve_operations)
        self._lock = asyncio.Lock()

    async def classifier(self):
        """The :class:`finpulse.models.Classifier` (loaded in the inference thread on first call)."""
        if self._classifier is None:
            async with self._lock:
                if self._classifier is None:
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
            self._redis = async_redis(resolve_redis_url(self.settings))
        return self._redis

    async def store(self):
        """The :class:`finpulse.alerts.store.WindowStore` of this namespace."""
        if self._store is None:
            self._store = WindowStore.from_settings(await self.redis(), self.settings)
        return self._store

    async def detector(self):
        """The :class:`finpulse.alerts.detector.Detector` with the rules of ``settings.rules_file``."""
        if self._detector is None:
            clf = await self.classifier()
            self._detector = Detector.from_config(await self.store(), self.alerts_config(),
                                                  model_version=clf.model_version)
        return self._detector

    async def monitor(self) -> ModelMonitor:
        """The :class:`finpulse.stream.monitoring.ModelMonitor` of this namespace."""
        if self._monitor is None:
            self._monitor = ModelMonitor(await self.redis(), self.settings.namespace)
        return self._monitor

    async def history(self) -> AlertHistory:
        """The :class:`finpulse.alerts.history.AlertHistory` of this namespace."""
        if self._history is None:
            self._history = AlertHistory(await self.redis(), self.settings.namespace)
        return self._history

    def model_loaded(self) -> bool:
        """Whether the classifier is loaded (a readiness condition of the worker)."""
        return self._classifier is not None

    def alerts_config(self):
        """Rules and webhook endpoints of ``settings.rules_file`` (secrets resolved)."""
        if self._alerts_config is None:
            self._alerts_config = load_config(self.settings.rules_file,
                                              secrets_file=self.settings.webhook_secrets_file or None)
        return self._alerts_config

    async def delivery(self) -> DeliveryService:
        """The process's :class:`finpulse.stream.delivery.DeliveryService` (created on first use)."""
        if self._delivery is None:
            self._delivery = DeliveryService(self.settings.namespace, await self.redis(), self.alerts_config(),
                                             infra_retry_s=self.settings.infra_retry_s)
        return self._delivery

    async def logwatch(self):
        """The :class:`finpulse.stream.logwatch.LogWatch` of this worker (created on first use)."""
        if self._logwatch is None:
            from .logwatch import LogWatch

            settings = self.settings.with_overrides(kafka_bootstrap=resolve_bootstrap(self.settings))
            self._logwatch = LogWatch(settings, await self.redis())
        return self._logwatch

    def stop_delivery(self) -> None:
        """Stop the delivery loop after its current attempt, if one was started (worker shutdown)."""
        if self._delivery is not None:
            self._delivery.stop()

    async def close(self) -> None:
        """Close the operations server, the Redis client, the log watch's admin client and the
        inference thread."""
        if self.ops is not None:
            await self.ops.close()
        if self._logwatch is not None:
            self._logwatch.close()
        if self._redis is not None:
            await self._redis.aclose()
        self.executor.shutdown(wait=False)


def worker_env_summary(settings: Settings) -> str:
    """One log line describing where this worker reads and writes."""
    return (f"namespace={settings.namespace} group={settings.group_id} raw={settings.topic(settings.topic_raw)} "
            f"inference={settings.infer_workers}x{settings.infer_threads_resolved()} threads "
            f"spinning={settings.infer_spinning} pid={os.getpid()}")
