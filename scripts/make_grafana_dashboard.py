"""Write config/grafana/dashboards/finpulse.json, the Grafana dashboard compose provisions.

Each panel is one line of the table below (title, unit, PromQL); tests/test_compose.py checks that
every metric a query names is one finpulse exports. Run it after changing the table.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "config" / "grafana" / "dashboards" / "finpulse.json"

# (title, unit, [(legend, PromQL)])
PANELS = [
    ("Headlines classified / counted per second", "ops", [
        ("classified", "sum(rate(finpulse_headlines_classified_total[5m]))"),
        ("counted", "sum(rate(finpulse_headlines_counted_total[5m]))")]),
    ("End-to-end lag (news.raw append -> counted), p50 / p95", "s", [
        ("p50", "histogram_quantile(0.5, sum by (le) (rate(finpulse_end_to_end_lag_seconds_bucket[5m])))"),
        ("p95", "histogram_quantile(0.95, sum by (le) (rate(finpulse_end_to_end_lag_seconds_bucket[5m])))")]),
    ("Consumer lag by topic (age of the newest message processed)", "s", [
        ("{{topic}}", "max by (topic) (finpulse_consumer_lag_seconds)")]),
    ("Batch duration p95 by stage", "s", [
        ("{{stage}}", "histogram_quantile(0.95, sum by (le, stage) (rate(finpulse_batch_duration_seconds_bucket[5m])))")]),
    ("Inference duration p95 (one batch)", "s", [
        ("p95", "histogram_quantile(0.95, sum by (le) (rate(finpulse_inference_duration_seconds_bucket[5m])))")]),
    ("Dead letters per second by reason", "ops", [
        ("{{stage}} {{reason}}", "sum by (stage, reason) (rate(finpulse_headlines_dead_lettered_total[15m]))")]),
    ("Duplicates and late headlines per second", "ops", [
        ("{{kind}}", "sum by (kind) (rate(finpulse_headlines_duplicate_total[15m]))"),
        ("late", "sum(rate(finpulse_headlines_late_total[15m]))")]),
    ("Alerts by severity and status (per hour)", "short", [
        ("{{status}} {{severity}}", "sum by (status, severity) (increase(finpulse_alerts_total[1h]))"),
        ("silenced", "sum(increase(finpulse_alerts_silenced_total[1h]))")]),
    ("Webhook attempts by outcome (per minute)", "short", [
        ("{{endpoint}} {{outcome}}", "sum by (endpoint, outcome) (rate(finpulse_webhook_attempts_total[5m])) * 60")]),
    ("Crawler fetches by outcome (per minute)", "short", [
        ("{{outcome}}", "sum by (outcome) (rate(finpulse_crawler_fetches_total[15m])) * 60"),
        ("new headlines", "sum(rate(finpulse_crawler_headlines_total{verdict=\"new\"}[15m])) * 60")]),
    ("Model drift (PSI against the version's reference; >= 0.25 alerts)", "short", [
        ("{{kind}}", "max by (kind) (finpulse_model_drift_psi)")]),
    ("Model version in force", "short", [
        ("{{version}}", "max by (version) (finpulse_model_info)")]),
]


def panel(i: int, title: str, unit: str, targets: list[tuple[str, str]]) -> dict:
    return {
        "id": i + 1, "type": "timeseries", "title": title, "datasource": {"type": "prometheus", "uid": "prometheus"},
        "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": chr(65 + k), "expr": expr, "legendFormat": legend,
                     "datasource": {"type": "prometheus", "uid": "prometheus"}}
                    for k, (legend, expr) in enumerate(targets)],
    }


def dashboard() -> dict:
    return {"uid": "finpulse", "title": "finpulse", "schemaVersion": 41, "version": 1, "editable": False,
            "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "tags": ["finpulse"],
            "panels": [panel(i, *p) for i, p in enumerate(PANELS)]}


if __name__ == "__main__":
    OUT.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} ({len(PANELS)} panels)")
