"""Wiring of webhook delivery into the worker: enqueue from the ``alerts`` topic, deliver in a task.

Delivery runs in its own asyncio task with its own HTTP session, never in the classify path; its
state (due times, attempts) is in Redis (:mod:`finpulse.alerts.queue`), so a restart resumes it.
"""

from __future__ import annotations

import asyncio
import logging

from finpulse.alerts.netguard import guarded_session
from finpulse.alerts.queue import DeliveryQueue
from finpulse.alerts.sender import Deliverer, internal_hosts
from finpulse.alerts.silences import Silences
from finpulse.core.metrics import metrics

from .resilience import retry_infra

log = logging.getLogger(__name__)


class DeliveryService:
    """Queue + deliverer of one worker process.

    :param namespace: run namespace (Redis key prefix).
    :param redis: a ``redis.asyncio.Redis``.
    :param config: the :class:`finpulse.alerts.config.AlertsConfig` (endpoints and retry policy).
    :param infra_retry_s: how long Redis may be unavailable at start before the worker stops
        (``Settings.infra_retry_s``).
    """

    def __init__(self, namespace: str, redis, config, infra_retry_s: float = 60.0):
        self.config = config
        self.infra_retry_s = infra_retry_s
        self.queue = DeliveryQueue(redis, namespace)
        self.silences = Silences(redis, namespace)
        self.stop_event = asyncio.Event()

    async def enqueue(self, alert: dict) -> list[str]:
        """Queue ``alert`` for every endpoint whose filters accept it (idempotent per webhook-id), unless a
        silence holds it back (:mod:`finpulse.alerts.silences`: recorded, not delivered)."""
        silence = await self.silences.silencing(alert)
        if silence is not None:
            log.info("alert %s %s not delivered: silenced (%s until %s, by %s)", alert.get("alert_id"),
                     alert.get("status"), silence["target"], silence["until"], silence["by"])
            metrics().alerts_silenced.inc()
            return []
        queued = await self.queue.enqueue(alert, self.config.endpoints)
        if queued:
            log.info("alert %s %s queued for %s", alert.get("alert_id"), alert.get("status"), ", ".join(queued))
        return queued

    async def run(self, on_dead) -> None:
        """Deliver due webhooks until :meth:`stop`; ``on_dead`` receives final failures."""
        names = [e.name for e in self.config.endpoints]
        retired = await retry_infra(lambda: self.queue.reconcile(names), what="webhook queue in Redis",
                                    give_up_after_s=self.infra_retry_s)
        for name in retired:
            log.warning("endpoint %s is no longer configured: its queued webhooks expire in %d days unless it is "
                        "configured again", name, self.queue.keep_s // 86400)
        if not self.config.endpoints:
            log.info("no webhook endpoints configured; alerts stay on the alerts topic")
            return
        # connections to private / loopback / link-local addresses only for endpoints marked internal
        async with guarded_session(internal_hosts(self.config.endpoints)) as session:
            deliverer = Deliverer(self.queue, self.config.endpoints, session, on_dead, policy=self.config.retry)
            await deliverer.run_forever(self.stop_event, poll_s=0.5)

    def stop(self) -> None:
        """Let the delivery loop finish its current attempt and return (worker shutdown)."""
        self.stop_event.set()
