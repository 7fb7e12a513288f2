"""Webhook bodies of alert records: the ``json`` record and the Slack incoming-webhook message.

Holds :data:`FORMATS` (the endpoint formats), :func:`slack_payload`, :func:`render_body` and
:func:`webhook_id_of`. Pure functions; signing is :mod:`finpulse.alerts.signing`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .rules import make_event_id

FORMATS = ("json", "slack")


def _slack_escape(text: Any) -> str:
    """Escape ``&``, ``<`` and ``>`` for Slack mrkdwn.

    :param text: any value (converted with ``str``).
    """
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(alert: Mapping[str, Any]) -> dict[str, Any]:
    """Slack incoming-webhook message (``text`` fallback plus Block Kit ``blocks``) for an alert.

    :param alert: an alert record.
    """
    status = alert.get("status", "?")
    sev = alert.get("severity", "?")
    rate = float(alert.get("negative_rate") or 0.0)
    base = float(alert.get("baseline_rate") or 0.0)
    icon = ":white_check_mark:" if status == "resolved" else (":rotating_light:" if sev == "critical" else ":warning:")
    head = f"{'RESOLVED' if status == 'resolved' else sev.upper()}: negative news {alert.get('scope', '?')}"
    text = (f"{icon} {head} - {rate:.0%} negative ({alert.get('negative_count', 0)}/{alert.get('count', 0)}) "
            f"vs baseline {base:.0%}, rule {alert.get('rule', '?')}")
    lines = []
    for h in alert.get("top_headlines") or []:
        title = _slack_escape(h.get("title") or "(untitled)")[:200]
        url = h.get("url")
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            link = f"<{url.replace('|', '%7C').replace('>', '%3E')}|{title}>"
        else:
            link = title
        src = f" - {_slack_escape(h['source'])}" if h.get("source") else ""
        lines.append(f"• {link}{src} ({float(h.get('sentiment_score', 0)):+.2f})")
    counts = f"{alert.get('negative_count', 0)}/{alert.get('count', 0)}"
    window = f"{alert.get('window_start', '?')} – {alert.get('window_end', '?')}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": head[:150]}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*Negative rate*\n{rate:.0%} ({counts})"},
            {"type": "mrkdwn", "text": f"*Baseline*\n{base:.0%}"},
            {"type": "mrkdwn", "text": f"*Window*\n{window}"},
            {"type": "mrkdwn", "text": f"*Rule*\n{_slack_escape(alert.get('rule', '?'))}"},
        ]},
    ]
    if lines:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:2900]}})
    footer = f"alert {alert.get('alert_id', '?')} · {status}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": footer}]})
    return {"text": _slack_escape(text), "blocks": blocks}


def render_body(alert: Mapping[str, Any], fmt: str) -> str:
    """The request body of an alert for an endpoint format.

    :param alert: an alert record.
    :param fmt: ``json`` (compact JSON of the record, UTF-8) or ``slack``.
    """
    payload = slack_payload(alert) if fmt == "slack" else alert
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=(fmt == "json"))


def webhook_id_of(alert: Mapping[str, Any]) -> str:
    """The ``webhook-id`` of an alert record: its ``event_id`` (unique per alert, status, severity).

    :param alert: an alert record.
    """
    eid = alert.get("event_id")
    if isinstance(eid, str) and eid:
        return eid
    return make_event_id(alert["alert_id"], alert["status"], alert.get("severity", ""))
