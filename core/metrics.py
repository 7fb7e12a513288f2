"""Prometheus metrics of every finpulse process (names in one place, like the Redis keys).

Each process (worker, crawler, ``finpulse serve``) serves its own ``/metrics`` from its own registry
(:func:`metrics`), built on first use (nothing at import time). Names start with ``finpulse_``, use
base units (seconds) and end counters in ``_total`` (the client library adds it), following
Prometheus' naming conventions. ``docs/operations.md`` lists them with their labels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

#: Histogram buckets (seconds) of batch and inference durations: 1 ms .. 30 s.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Histogram buckets (seconds) of the end-to-end lag: 10 ms .. 1 h.
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


@dataclass(frozen=True)
class Metrics:
    """The metric families of a finpulse process, in one registry."""

    registry: Any
    headlines_classified: Any
    headlines_dead_lettered: Any
    headlines_counted: Any
    headlines_duplicate: Any
    headlines_late: Any
    batch_duration: Any
    inference_duration: Any
    end_to_end_lag: Any
    consumer_lag: Any
    alerts: Any
    alerts_silenced: Any
    webhook_attempts: Any
    crawler_fetches: Any
    crawler_headlines: Any
    model_info: Any
    model_drift: Any
    model_monitored: Any
    model_shadow: Any

    def names(self) -> set[str]:
        """Every sample name this registry can expose (``finpulse_..._total``, ``_bucket``...)."""
        out: set[str] = set()
        for family in self.registry.collect():
            out.add(family.name)
            kind = family.type
            if kind == "counter":
                out |= {f"{family.name}_total", f"{family.name}_created"}
            elif kind == "histogram":
                out |= {f"{family.name}_{s}" for s in ("bucket", "count", "sum", "created")}
            elif kind == "info":
                out.add(f"{family.name}_info")
        return out


@functools.cache
def metrics() -> Metrics:
    """This process's metrics (built on first use, then the same object)."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    r = CollectorRegistry()
    return Metrics(
        registry=r,
        headlines_classified=Counter("finpulse_headlines_classified", "Headlines classified and published to "
                                     "news.scored", registry=r),
        headlines_dead_lettered=Counter("finpulse_headlines_dead_lettered", "Messages sent to a dead-letter topic",
                                        ["stage", "reason"], registry=r),
        headlines_counted=Counter("finpulse_headlines_counted", "Scored headlines counted in the windows for the "
                                  "first time", registry=r),
        headlines_duplicate=Counter("finpulse_headlines_duplicate", "Scored headlines already counted "
                                    "(redelivery) or syndicated copies", ["kind"], registry=r),
        headlines_late=Counter("finpulse_headlines_late", "Headlines counted later than the late allowance",
                               registry=r),
        batch_duration=Histogram("finpulse_batch_duration_seconds", "Time to process one micro-batch, by stage",
                                 ["stage"], buckets=DURATION_BUCKETS, registry=r),
        inference_duration=Histogram("finpulse_inference_duration_seconds", "Model inference time of one batch",
                                     buckets=DURATION_BUCKETS, registry=r),
        end_to_end_lag=Histogram("finpulse_end_to_end_lag_seconds", "From a headline's append to news.raw to "
                                 "its count in the windows", buckets=LAG_BUCKETS, registry=r),
        consumer_lag=Gauge("finpulse_consumer_lag_seconds", "Age of the newest message of the last batch "
                           "processed, by topic (how far behind the log head the worker reads)", ["topic"],
                           registry=r),
        alerts=Counter("finpulse_alerts", "Alert records produced", ["status", "severity"], registry=r),
        alerts_silenced=Counter("finpulse_alerts_silenced", "Alert records not delivered because of a silence",
                                registry=r),
        webhook_attempts=Counter("finpulse_webhook_attempts", "Webhook delivery attempts by outcome",
                                 ["endpoint", "outcome"], registry=r),
        crawler_fetches=Counter("finpulse_crawler_fetches", "Feed fetches by outcome", ["outcome"], registry=r),
        crawler_headlines=Counter("finpulse_crawler_headlines", "Crawled items by verdict (new, duplicate, "
                                  "near_duplicate, invalid)", ["verdict"], registry=r),
        model_info=Gauge("finpulse_model_info", "The model version scoring in this process (value 1)",
                         ["version"], registry=r),
        model_drift=Gauge("finpulse_model_drift_psi", "Population stability index of the recent predictions "
                          "against the reference of the model version in force", ["kind"], registry=r),
        model_monitored=Gauge("finpulse_model_monitored_headlines", "Headlines in the drift comparison",
                              ["window"], registry=r),
        model_shadow=Counter("finpulse_model_shadow_headlines", "Headlines scored by the shadow model version: "
                             "compared (result=compared) and agreeing with the published labels "
                             "(result=topic_agrees, sentiment_agrees)", ["shadow", "result"], registry=r),
    )
