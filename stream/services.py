"""Long-lived resources of a worker process: classifier, Redis, window store, detector, delivery.

Built by :func:`finpulse.stream.app.create_app` when a worker starts; the classifier, Redis client,
store, detector and delivery service are created lazily on first use inside the worker's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
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
from finpulse.models.lifecycle import ModelControl
from finpulse.models.registry import ModelRegistry

from .delivery import DeliveryService
from .monitoring import ModelMonitor

log = logging.getLogger(__name__)

MODEL_RETRY_S = 30
"""Seconds between attempts to load a model version that failed to load."""


class Services:
    """Lazily built per-process resources.

    :param settings: the worker's settings.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.executor = ThreadPoolExecutor(max_workers=settings.infer_workers, thread_name_prefix="finpulse-infer")
        self.registry = ModelRegistry.from_settings(settings)
        self._models: dict[str, Classifier] = {}
        self._current: str | None = None
        self._previous: str | None = None
        self._load_failed: dict[str, float] = {}  # version -> when loading it last failed (monotonic)
        self._control: ModelControl | None = None
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

    async def classifier(self) -> Classifier:
        """The classifier of the version in force (loaded in the inference thread on first call).

        The first call loads the pinned version (``settings.model_version``), else the version in
        force in Redis (:mod:`finpulse.models.lifecycle`); later calls return the current one.
        """
        if self._current is None:
            async with self._lock:
                if self._current is None:
                    version = self.settings.model_version or (await (await self.control()).state())[0]
                    await self._load(version)
                    self._current = version
                    log.info("model version in force: %s%s", version,
                             " (pinned by FINPULSE_MODEL_VERSION)" if self.settings.model_version else "")
        return self._models[self._current]

    async def control(self) -> ModelControl:
        """The shared model-version setting of this namespace."""
        if self._control is None:
            base = await asyncio.get_running_loop().run_in_executor(self.executor, self.registry.base_version)
            self._control = ModelControl(await self.redis(), self.settings.namespace, base)
        return self._control

    async def scoring_models(self) -> tuple[Classifier, Classifier | None]:
        """The classifiers for the next batch: the version in force and the shadow version (or ``None``).

        Reads the shared setting (one Redis round trip) unless the version is pinned; a promoted or
        rolled-back version is loaded here, so the worker switches at this batch. A version that
        cannot be loaded (missing from this host's model directory, files not matching the
        manifest) is logged as an error once and the current version keeps scoring.
        """
        clf = await self.classifier()
        if self.settings.model_version:
            return clf, None
        active, shadow = await (await self.control()).state()
        if active != self._current:
            if await self._try_load(active, "in force"):
                log.warning("model version in force: %s -> %s (switched at this batch)", self._current, active)
                self._previous, self._current = self._current, active
                clf = self._models[active]
        shadow_clf = None
        if shadow and shadow != self._current and await self._try_load(shadow, "shadow"):
            shadow_clf = self._models[shadow]
        keep = {self._current, self._previous, shadow}
        for v in [v for v in self._models if v not in keep]:
            del self._models[v]  # at most the version in force, the one before it and the shadow
        return clf, shadow_clf

    async def _try_load(self, version: str, role: str) -> bool:
        """Load ``version`` unless loaded; a failure is logged once and retried at most every
        :data:`MODEL_RETRY_S` (the version may be copied into the model directory later)."""
        if version in self._models:
            return True
        failed_at = self._load_failed.get(version)
        if failed_at is not None and time.monotonic() - failed_at < MODEL_RETRY_S:
            return False
        try:
            await self._load(version)
        except Exception as exc:  # noqa: BLE001 - any load failure keeps the current model scoring
            if failed_at is None:
                log.error("cannot load model version %s (%s): %s; still scoring with %s (retrying every %d s)",
                          version, role, exc, self._current, MODEL_RETRY_S)
            self._load_failed[version] = time.monotonic()
            return False
        if failed_at is not None:
            log.warning("model version %s loaded after earlier failures", version)
            del self._load_failed[version]
        return True

    async def _load(self, version: str) -> None:
        def build() -> Classifier:
            path = self.registry.get(version).path  # checks every file's sha256 once
            return Classifier(path, verify=False, device=self.settings.device, batch_size=self.settings.batch_max,
                              threads=self.settings.infer_threads_resolved(), spinning=self.settings.infer_spinning)

        self._models[version] = await asyncio.get_running_loop().run_in_executor(self.executor, build)

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
        return self._current is not None

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
