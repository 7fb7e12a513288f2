"""Scoring a backtest's alerts against known events (``finpulse backtest --events EVENTS.csv``).

An events file lists real events inside history streams, with the window in which a risk analyst
expects to be told (columns ``stream,event,start,end`` and free-text ones such as ``what an analyst
expects``, ``public record``; ``stream`` is optional). See ``docs/backtest.md``.

Matching rule: an **incident** is one ``alert_id`` and its time is the ``window_end`` of its first
``fired`` record (an escalation is a later ``fired`` record of the same ``alert_id`` and does not
count again; ``resolved`` records are ignored). An incident matches an event when its time lies in
``[start, end + grace]`` (both ends included; ``grace`` is 0 by default). An event is caught when at
least one incident matches it; its lead time is the first matching incident's time minus the event's
start (seconds, never negative: an alert before the window does not count). Incidents that match no
event are *unmatched*; ``unmatched_per_day`` divides their number by the days of history covered (the
span from the first to the last headline's event time).

Everything here is pure: no file is read except by :func:`load_events`, nothing touches Redis or Kafka.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finpulse.core import rfc3339

from .exceptions import AppError

DAY_S = 86400.0
MAX_UNMATCHED_LISTED = 1000
"""Most unmatched incidents listed in :meth:`Evaluation.as_dict` (all are counted)."""
_COMPRESSED = (".gz",)


class EventsError(AppError, ValueError):
    """An events file that cannot be read (missing columns, bad times, end before start)."""


@dataclass(frozen=True)
class Event:
    """A known event and the window in which an analyst expects an alert.

    :param name: the ``event`` column.
    :param start: window start, epoch seconds (UTC).
    :param end: window end, epoch seconds (UTC, ``>= start``).
    :param stream: the ``stream`` column (``None`` when the file has none or the cell is empty).
    :param expects: the ``what an analyst expects`` column (free text, may be empty).
    :param record: the ``public record`` column (free text, may be empty).
    :param line: 1-based physical line in the events file (0 when built in code).
    """

    name: str
    start: float
    end: float
    stream: str | None = None
    expects: str = ""
    record: str = ""
    line: int = 0


@dataclass(frozen=True)
class Incident:
    """One alert (``alert_id``) as scored: its first ``fired`` record.

    :param alert_id: the alert's id.
    :param time: ``window_end`` of the first ``fired`` record, epoch seconds.
    :param record: that record (rule, scope, severity, counts...).
    """

    alert_id: str
    time: float
    record: Mapping[str, Any]

    def brief(self) -> dict[str, Any]:
        """The fields a summary lists: ``alert_id``, ``window_end``, ``rule``, ``scope``, ``severity``."""
        return {"alert_id": self.alert_id, "window_end": self.record.get("window_end"),
                "rule": self.record.get("rule"), "scope": self.record.get("scope"),
                "severity": self.record.get("severity")}


@dataclass(frozen=True)
class EventResult:
    """How one event was scored.

    :param event: the event.
    :param in_span: the event's window overlaps the history span (events outside it are listed but
        not counted in ``events_total``: the data cannot catch them).
    :param matches: the incidents that match it, earliest first.
    """

    event: Event
    in_span: bool
    matches: tuple[Incident, ...] = ()

    @property
    def caught(self) -> bool:
        """At least one incident matches."""
        return bool(self.matches)

    @property
    def first(self) -> Incident | None:
        """The earliest matching incident."""
        return self.matches[0] if self.matches else None

    @property
    def lead_time_s(self) -> float | None:
        """Seconds from the event's start to the first matching incident (``None`` when not caught)."""
        return None if self.first is None else round(self.first.time - self.event.start, 3)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``event``, ``start``, ``end``, ``in_span``, ``caught``, ``lead_time_s``,
        ``first_alert_id``, ``first_alert``, ``alerts`` (matching incidents) and ``alert_ids``."""
        return {"event": self.event.name, "start": rfc3339.format(self.event.start),
                "end": rfc3339.format(self.event.end), "in_span": self.in_span, "caught": self.caught,
                "lead_time_s": self.lead_time_s,
                "first_alert_id": self.first.alert_id if self.first else None,
                "first_alert": self.first.brief() if self.first else None,
                "alerts": len(self.matches), "alert_ids": [m.alert_id for m in self.matches]}


@dataclass(frozen=True)
class Evaluation:
    """Alerts scored against events over a span of history.

    :param events: one result per event, in the events' order.
    :param unmatched: incidents that match no event, oldest first.
    :param incidents: every incident (distinct fired ``alert_id``), oldest first.
    :param span_start: first headline's event time, epoch seconds.
    :param span_end: last headline's event time, epoch seconds.
    :param grace_s: the grace after an event's end.
    """

    events: tuple[EventResult, ...]
    unmatched: tuple[Incident, ...]
    incidents: tuple[Incident, ...]
    span_start: float
    span_end: float
    grace_s: float = 0.0

    @property
    def days(self) -> float:
        """Days of history covered (``(span_end - span_start) / 86400``)."""
        return max(0.0, self.span_end - self.span_start) / DAY_S

    @property
    def unmatched_per_day(self) -> float | None:
        """Unmatched incidents per day of history (``None`` for a history shorter than a second)."""
        return len(self.unmatched) / self.days if self.span_end - self.span_start >= 1 else None

    @property
    def events_total(self) -> int:
        """Events whose window overlaps the history span."""
        return sum(r.in_span for r in self.events)

    @property
    def events_caught(self) -> int:
        """Events in the span with at least one matching incident."""
        return sum(r.in_span and r.caught for r in self.events)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for ``summary.json``'s ``evaluation``."""
        leads = [r.lead_time_s for r in self.events if r.in_span and r.lead_time_s is not None]
        per_day = self.unmatched_per_day
        return {
            "grace_s": self.grace_s,
            "events": [r.as_dict() for r in self.events],
            "events_caught": self.events_caught,
            "events_total": self.events_total,
            "events_outside_span": sum(not r.in_span for r in self.events),
            "median_lead_time_s": _median(leads),
            "incidents": len(self.incidents),
            "matched_alerts": len(self.incidents) - len(self.unmatched),
            "unmatched_alerts": len(self.unmatched),
            "unmatched": [i.brief() for i in self.unmatched[:MAX_UNMATCHED_LISTED]],
            "unmatched_per_day": None if per_day is None else float(f"{per_day:.4g}"),
            "days": round(self.days, 4),
        }


def stream_name(path: str | Path) -> str:
    """The stream a history file holds: its name without ``.gz`` and without its last suffix
    (``covid_2020-03_guardian_bbc.csv.gz`` -> ``covid_2020-03_guardian_bbc``).

    :param path: the history file.
    """
    name = Path(path).name
    for ext in _COMPRESSED:
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
    return Path(name).stem


def _time(value: str | None, what: str, line: int) -> float:
    try:
        return rfc3339.parse(value).timestamp()
    except ValueError as exc:
        raise EventsError(f"line {line}: {what} {exc}") from None


def load_events(path: str | Path, stream: str | None = None) -> list[Event]:
    """Read an events CSV: ``event``, ``start``, ``end`` (RFC 3339 with an offset, or ISO 8601 with
    one, e.g. ``2020-03-08 18:00:00+00:00``), optional ``stream``, ``what an analyst expects`` and
    ``public record``; other columns are ignored. Column names are matched without regard to case
    and surrounding spaces.

    :param path: the CSV file (UTF-8, a BOM is accepted).
    :param stream: keep only the events of this stream (the history file's stem, see
        :func:`stream_name`); events with an empty ``stream`` cell, or every event when the file has
        no ``stream`` column, apply to any stream. ``None``: keep all.
    :returns: the events in file order.
    :raises EventsError: missing columns, an empty name, an unparsable time, ``end`` before ``start``.
    :raises FileNotFoundError: no such file.
    """
    out: list[Event] = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        cols = {(c or "").strip().lower(): c for c in reader.fieldnames or ()}
        missing = [c for c in ("event", "start", "end") if c not in cols]
        if missing:
            raise EventsError(f"{path}: missing column(s) {', '.join(missing)} (have: {', '.join(cols) or 'none'})")

        def cell(row: Mapping[str, Any], name: str) -> str:
            v = row.get(cols[name]) if name in cols else None
            return v.strip() if isinstance(v, str) else ""

        for row in reader:
            line = reader.line_num
            if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue  # blank line
            name = cell(row, "event")
            if not name:
                raise EventsError(f"{path} line {line}: empty event name")
            start = _time(cell(row, "start"), "start", line)
            end = _time(cell(row, "end"), "end", line)
            if end < start:
                raise EventsError(f"{path} line {line}: end {cell(row, 'end')} is before start {cell(row, 'start')}")
            ev_stream = cell(row, "stream") or None
            if stream is not None and ev_stream is not None and ev_stream != stream:
                continue
            out.append(Event(name=name, start=start, end=end, stream=ev_stream,
                             expects=cell(row, "what an analyst expects"), record=cell(row, "public record"),
                             line=line))
    return out


def incidents(alerts: Iterable[Mapping[str, Any]]) -> list[Incident]:
    """One :class:`Incident` per distinct ``alert_id`` that has a ``fired`` record, oldest first (ties
    by ``alert_id``); its time is the earliest fired ``window_end`` (escalations do not count again).

    :param alerts: alert records (``alert_id``, ``status``, ``window_end`` RFC 3339...), any order.
    :raises ValueError: a fired record without a parsable ``window_end``.
    """
    first: dict[str, Incident] = {}
    for a in alerts:
        if a.get("status") != "fired":
            continue
        aid = str(a.get("alert_id"))
        t = rfc3339.parse(a.get("window_end")).timestamp()
        if aid not in first or t < first[aid].time:
            first[aid] = Incident(alert_id=aid, time=t, record=a)
    return sorted(first.values(), key=lambda i: (i.time, i.alert_id))


def score_alerts(alerts: Iterable[Mapping[str, Any]], events: Sequence[Event], span_start: float, span_end: float,
                 *, grace_s: float = 0.0) -> Evaluation:
    """Score alert records against events (see the module docstring for the matching rule).

    :param alerts: alert records as in ``alerts.jsonl`` (``fired`` and ``resolved``, any order).
    :param events: the events (e.g. from :func:`load_events`).
    :param span_start: first headline's event time, epoch seconds.
    :param span_end: last headline's event time, epoch seconds.
    :param grace_s: seconds after an event's end during which an alert still matches it (>= 0).
    :returns: an :class:`Evaluation`.
    :raises ValueError: a negative grace, ``span_end`` before ``span_start``.
    """
    if grace_s < 0:
        raise ValueError(f"grace_s must be >= 0, got {grace_s}")
    if span_end < span_start:
        raise ValueError("span_end is before span_start")
    incs = incidents(alerts)
    matched: set[str] = set()
    results = []
    for ev in events:
        hits = tuple(i for i in incs if ev.start <= i.time <= ev.end + grace_s)
        matched.update(i.alert_id for i in hits)
        results.append(EventResult(event=ev, in_span=ev.start <= span_end and ev.end >= span_start, matches=hits))
    unmatched = tuple(i for i in incs if i.alert_id not in matched)
    return Evaluation(events=tuple(results), unmatched=unmatched, incidents=tuple(incs), span_start=span_start,
                      span_end=span_end, grace_s=float(grace_s))


def _median(xs: Sequence[float]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else round((s[mid - 1] + s[mid]) / 2, 3)


def format_duration(seconds: float | None) -> str:
    """Short human form: ``45s``, ``12m``, ``3.5h``, ``2.1d`` (``-`` for ``None``).

    :param seconds: a duration.
    """
    if seconds is None:
        return "-"
    a = abs(seconds)
    if a < 60:
        return f"{seconds:.0f}s"
    if a < 3600:
        return f"{seconds / 60:.0f}m"
    if a < DAY_S:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / DAY_S:.1f}d"
