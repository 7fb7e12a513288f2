"""The backtest report: ``report.png``, negative rate and headline volume over event time per scope,
with the alerts and the known events.

One panel per scope that holds data (alerted scopes first, then the busiest), on one time axis that
reads from hours to years: the short window's negative rate, the baseline rate and the rule's
threshold on the left axis; the headlines (and the negative ones) per display bin as bars on the
right axis; fired and resolved alerts as markers; the events of ``--events`` shaded and numbered,
listed under the panels with their outcome. Charts are drawn with matplotlib (the ``report`` extra).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from finpulse.core import rfc3339

DEFAULT_TOP_SCOPES = 12
MAX_PANELS = 24
MAX_VOLUME_BINS = 160
"""Most bars of headline volume across the time axis (the bin width is chosen from the span)."""
VOLUME_BINS_S = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 14 * 86400,
                 28 * 86400, 91 * 86400, 364 * 86400)
MAX_EVENTS_LISTED = 12
_RATE = "tab:blue"
_RATE_THIN = "#9ec5e8"
_EVENT = "#f2c744"


@dataclass(frozen=True)
class ScopeVolume:
    """The non-empty buckets of one scope: what the volume bars are drawn from.

    :param starts: bucket starts, epoch seconds, sorted.
    :param n: articles counted in each bucket.
    :param negative: negative articles in each bucket.
    :param bucket_s: bucket width.
    """

    starts: np.ndarray
    n: np.ndarray
    negative: np.ndarray
    bucket_s: int

    @property
    def total(self) -> int:
        """Articles counted in the scope."""
        return int(self.n.sum())


def volume_bin(span_s: float, bucket_s: int = 60, max_bins: int = MAX_VOLUME_BINS) -> int:
    """The display bin for headline volume: the smallest of :data:`VOLUME_BINS_S` (at least a bucket)
    that cuts ``span_s`` into at most ``max_bins`` bars.

    :param span_s: the time axis' span.
    :param bucket_s: bucket width.
    :param max_bins: most bars.
    """
    for b in VOLUME_BINS_S:
        if b >= bucket_s and span_s / b <= max_bins:
            return b
    return VOLUME_BINS_S[-1]


def bin_label(bin_s: int) -> str:
    """``1 min``, ``15 min``, ``6 h``, ``1 day``, ``2 weeks``, ``13 weeks``, ``52 weeks``.

    :param bin_s: a bin width of :data:`VOLUME_BINS_S`.
    """
    if bin_s < 3600:
        return f"{bin_s // 60} min"
    if bin_s < 86400:
        return f"{bin_s // 3600} h"
    if bin_s < 7 * 86400 or bin_s % (7 * 86400):
        return "1 day" if bin_s == 86400 else f"{bin_s // 86400} days"
    weeks = bin_s // (7 * 86400)
    return "1 week" if weeks == 1 else f"{weeks} weeks"


def binned_volume(vol: ScopeVolume, bin_s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Headlines and negative headlines per display bin (bins aligned on multiples of ``bin_s``).

    :param vol: the scope's non-empty buckets.
    :param bin_s: the display bin.
    :returns: ``(bin starts, headlines, negative headlines)``, only the non-empty bins.
    """
    keys = (vol.starts // bin_s) * bin_s
    uniq, inv = np.unique(keys, return_inverse=True)
    n = np.bincount(inv, weights=vol.n, minlength=len(uniq))
    neg = np.bincount(inv, weights=vol.negative, minlength=len(uniq))
    return uniq, n, neg


def _gapped(ts: np.ndarray, *ys: np.ndarray) -> list[np.ndarray]:
    """Insert a NaN wherever consecutive window ends are further apart than 1.5 times the usual step
    (so lines do not bridge stretches without data)."""
    if len(ts) < 3:
        return [ts, *ys]
    d = np.diff(ts)
    step = float(np.median(d))
    cut = np.flatnonzero(d > 1.5 * step) + 1
    return [np.insert(ts.astype(float), cut, np.nan), *(np.insert(y.astype(float), cut, np.nan) for y in ys)]


def _isolated(y: np.ndarray) -> np.ndarray:
    """Mask of the finite values whose neighbours are both NaN (or missing)."""
    ok = ~np.isnan(y)
    prev = np.concatenate([[False], ok[:-1]])
    nxt = np.concatenate([ok[1:], [False]])
    return ok & ~prev & ~nxt


def _panels(series: Mapping[str, list[dict]], volume: Mapping[str, ScopeVolume], alerts: list[dict]) -> list[str]:
    """Scopes with data, alerted first, then in the series' order (busiest first)."""
    alerted = {a["scope"] for a in alerts}
    order = [sc for sc in series if (sc in volume and volume[sc].total > 0)
             or any(r["count"] or r["baseline_count"] for r in series[sc])]
    panels = [sc for sc in order if sc in alerted] + [sc for sc in order if sc not in alerted]
    return panels[:max(DEFAULT_TOP_SCOPES, min(len({sc for sc in panels if sc in alerted}), MAX_PANELS))]


def _event_lines(evaluation: Mapping[str, Any] | None) -> list[tuple[int, dict]]:
    """The events shown: ``(number, event dict)`` for those in the history span."""
    if not evaluation:
        return []
    return [(i + 1, e) for i, e in enumerate(e for e in evaluation.get("events", ()) if e.get("in_span"))]


def _event_text(num: int, e: Mapping[str, Any], width: int = 110) -> str:
    """One line of the event list: number, name, window and outcome, at most ``width`` characters."""
    start = rfc3339.parse(e["start"]).strftime("%Y-%m-%d %H:%M")
    end = rfc3339.parse(e["end"]).strftime("%Y-%m-%d %H:%M")
    if e.get("caught"):
        first = e.get("first_alert") or {}
        lead = e["lead_time_s"]
        outcome = (f"CAUGHT after {_dur(lead)} ({e.get('alerts', 1)} alert(s), first {first.get('rule')} on "
                   f"{first.get('scope')})")
    else:
        outcome = "missed"
    head = f"E{num}  [{start} – {end}] "
    tail = f": {outcome}"
    room = max(12, width - len(head) - len(tail))
    name = e["event"] if len(e["event"]) <= room else e["event"][:room - 1] + "…"
    line = head + name + tail
    return line if len(line) <= width else line[:width - 1] + "…"


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"



def _duration(seconds: int) -> str:
    """``15 min``, ``6 h``, ``3 d``: a window's width for a panel title."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def write_report(path: str | Path, series: Mapping[str, list[dict]], alerts: list[dict],
                 summary: Mapping[str, Any], *, volume: Mapping[str, ScopeVolume] | None = None) -> None:
    """``report.png``: per scope with data (alerted scopes first), the short window's negative rate,
    the baseline rate and the rule threshold, the headline volume per display bin (bars, right axis),
    the fired / resolved alerts, and the events of ``summary["evaluation"]`` (shaded, numbered and
    listed with their outcome), on one shared time axis.

    :param path: the PNG to write.
    :param series: scope -> rows of the backtest's time series (``ts``, ``rule``, ``count``,
        ``negative_rate``, ``baseline_rate``, ``threshold``...), busiest scope first.
    :param alerts: the alert records.
    :param summary: the backtest summary (``file``, ``mode``, ``produced``, ``alerts_fired``,
        ``alerts_resolved``, ``namespace``, ``event_time``, optional ``evaluation``).
    :param volume: scope -> its non-empty buckets (volume bars; scopes without one get none).
    :raises ImportError: without matplotlib (the ``report`` extra).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    volume = volume or {}
    panels = _panels(series, volume, alerts)
    evaluation = summary.get("evaluation")
    events = _event_lines(evaluation)
    listed = events[:MAX_EVENTS_LISTED]
    ncols = 1 if len(panels) <= 4 else 2
    nrows = max(1, math.ceil(len(panels) / ncols))
    foot = 0.22 * (len(listed) + 1 + (len(events) > len(listed))) + (0.25 if listed else 0)
    fig = Figure(figsize=(8.0 * ncols, 2.1 * nrows + 1.3 + foot), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    mode = "pre-scored" if summary.get("mode") == "scored" else "classified"
    title = (f"finpulse backtest of {Path(str(summary['file'])).name} ({mode}): negative-sentiment rate and volume "
             f"per scope\n{summary['produced']} headlines, alerts: {summary['alerts_fired']} fired, "
             f"{summary['alerts_resolved']} resolved; namespace {summary['namespace']}")
    if evaluation:
        per_day = evaluation.get("unmatched_per_day")
        title += (f"\nevents ({evaluation.get('stream')}): {evaluation['events_caught']}/{evaluation['events_total']}"
                  f" caught; {evaluation['unmatched_alerts']} alert(s) outside every event"
                  f"{f' ({per_day:.3g} per day)' if per_day is not None else ''}")
    fig.suptitle(title, fontsize=11)
    if not panels:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no data was counted", ha="center", va="center")
        ax.set_axis_off()
        fig.savefig(path)
        return

    et = summary.get("event_time") or {}
    all_ts = [r["ts"] for sc in panels for r in series[sc][:1] + series[sc][-1:]]
    t0 = rfc3339.parse(et["first"]).timestamp() if et.get("first") else min(all_ts)
    t1 = rfc3339.parse(et["last"]).timestamp() if et.get("last") else max(all_ts)
    t1 = max(t1, max(all_ts), t0 + 60)
    t0 = min(t0, min(all_ts))
    pad = (t1 - t0) * 0.01
    span = t1 - t0
    bucket_s = next((v.bucket_s for v in volume.values()), 60)
    bin_s = volume_bin(span, bucket_s)

    epoch = date2num(datetime(1970, 1, 1, tzinfo=UTC))

    def num(ts: Any) -> Any:
        """Matplotlib date numbers of epoch seconds (a number or an array; NaN stays NaN)."""
        return ts / 86400.0 + epoch

    gs = fig.add_gridspec(nrows + (1 if listed else 0), ncols,
                          height_ratios=[2.1] * nrows + ([foot] if listed else []))
    axes: list[Any] = []
    for i, scope in enumerate(panels):
        ax = fig.add_subplot(gs[i // ncols, i % ncols], sharex=axes[0] if axes else None)
        axes.append(ax)
        rows = series.get(scope, [])
        # the panel follows the rule that alerted on this scope (else the first rule watching it)
        alerted_rules = [a["rule"] for a in alerts if a["scope"] == scope]
        rule = alerted_rules[0] if alerted_rules and any(r["rule"] == alerted_rules[0] for r in rows) else (
            rows[0]["rule"] if rows else "")
        rows = [r for r in rows if r["rule"] == rule]
        if scope in volume and volume[scope].total:
            ax2 = ax.twinx()
            bs, n, neg = binned_volume(volume[scope], bin_s)
            x = num(bs.astype(float))
            width = bin_s / 86400.0
            ax2.bar(x, n, width=width, align="edge", color="0.8", edgecolor="none", zorder=0)
            ax2.bar(x, neg, width=width, align="edge", color="#e8a09a", edgecolor="none", zorder=0)
            ax2.set_ylim(0, max(1.0, float(n.max())) * 2.6)  # bars fill the lower part of the panel
            ax2.tick_params(labelsize=7, colors="0.4")
            ax2.set_ylabel(f"headlines / {bin_label(bin_s)}", fontsize=7, color="0.4")
            ax.set_zorder(ax2.get_zorder() + 1)
            ax.patch.set_visible(False)
        for _, e in events:
            es, ee = rfc3339.parse(e["start"]).timestamp(), rfc3339.parse(e["end"]).timestamp()
            ax.axvspan(num(es), num(ee), color=_EVENT, alpha=0.35, lw=0, zorder=0)
            if ee - es < span / 300:  # too narrow to see at this scale: mark it with a line too
                ax.axvline(num((es + ee) / 2), color=_EVENT, lw=2.0, alpha=0.8, zorder=0)
        if rows:
            ts = np.array([r["ts"] for r in rows], dtype=float)
            rate = np.array([np.nan if r["negative_rate"] is None else r["negative_rate"] for r in rows])
            base = np.array([np.nan if r["baseline_rate"] is None else r["baseline_rate"] for r in rows])
            # the rate of windows with fewer articles than the rule's min_count is drawn faint
            min_count = rows[0].get("min_count") or 0
            enough = np.where(np.array([r["count"] for r in rows]) >= min_count, rate, np.nan)
            gts, grate, gbase, genough = _gapped(ts, rate, base, enough)
            # short stretches of data (or few points) are invisible as lines on a long axis: add dots
            dots = np.count_nonzero(~np.isnan(rate)) < 400 or len(gts) - len(ts) > 60
            if min_count:
                ax.plot(num(gts), grate, color=_RATE_THIN, lw=0.6, marker="." if dots else None, ms=2)
            ax.plot(num(gts), genough, color=_RATE, lw=1.2, marker="." if dots else None, ms=3)
            lone = _isolated(genough)
            if lone.any():  # single qualifying points draw no line segment: show them as dots
                ax.plot(num(gts[lone]), genough[lone], ls="none", marker=".", ms=4, color=_RATE)
            ax.plot(num(gts), gbase, color="0.45", lw=0.9, ls="--")
            if rows[0]["threshold"] is not None:
                ax.axhline(rows[0]["threshold"], color="tab:red", lw=0.8, ls=":")
        for a in alerts:
            if a["scope"] != scope:
                continue
            fired = a["status"] == "fired"
            ax.plot([num(rfc3339.parse(a["window_end"]).timestamp())], [a["negative_rate"]], ls="none",
                    marker="v" if fired else "o", ms=8, color="tab:red" if fired else "tab:green",
                    markeredgecolor="black", markeredgewidth=0.5, zorder=5)
        window_name = _duration(rows[0]["short_window_s"]) if rows else "no"
        nal = sum(1 for a in alerts if a["scope"] == scope and a["status"] == "fired")
        total = volume[scope].total if scope in volume else None
        ax.set_title(f"{scope}  ({f'{total} headlines, ' if total is not None else ''}{window_name} window"
                     f"{', rule ' + rule if rule else ''}{f', {nal} alert(s)' if nal else ''})",
                     fontsize=9, loc="left")
        ax.set_ylim(-0.03, 1.12)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
        if i % ncols == 0:
            ax.set_ylabel("negative rate", fontsize=8)
        if i < ncols:  # number the events on the top row
            for k, e in events:
                mid = (rfc3339.parse(e["start"]).timestamp() + rfc3339.parse(e["end"]).timestamp()) / 2
                ax.text(num(mid), 1.1, f"E{k}", ha="center", va="top", fontsize=7, fontweight="bold",
                        color="#7a5a00", clip_on=True, bbox={"fc": "white", "ec": "none", "alpha": 0.7, "pad": 0.5})
    axes[0].set_xlim(num(t0 - pad), num(t1 + pad))
    loc = AutoDateLocator(minticks=4, maxticks=10)
    axes[0].xaxis.set_major_locator(loc)
    axes[0].xaxis.set_major_formatter(ConciseDateFormatter(loc))
    last_row_start = (len(panels) - 1) // ncols * ncols
    for i, ax in enumerate(axes):
        bottom = i >= last_row_start or i + ncols >= len(panels)
        ax.tick_params(axis="x", labelbottom=bottom)
        if bottom:
            ax.set_xlabel("event time (UTC)", fontsize=9)
    if listed:
        tax = fig.add_subplot(gs[nrows, :])
        tax.set_axis_off()
        lines = ["known events (the window in which an alert is expected, UTC):"]
        lines += [_event_text(k, e, 112 * ncols) for k, e in listed]
        if len(events) > len(listed):
            lines.append(f"... and {len(events) - len(listed)} more event(s) in summary.json")
        tax.text(0.0, 1.0, "\n".join(lines), ha="left", va="top", fontsize=8, family="monospace",
                 transform=tax.transAxes)
    handles = [Line2D([], [], color=_RATE, lw=1.2, label="negative rate (short window, >= min_count articles)"),
               Line2D([], [], color=_RATE_THIN, lw=1.0, label="negative rate (fewer articles)"),
               Line2D([], [], color="0.45", lw=1.0, ls="--", label="baseline rate"),
               Line2D([], [], color="tab:red", lw=0.8, ls=":", label="rule threshold"),
               Line2D([], [], color="tab:red", marker="v", ls="none", markeredgecolor="black", label="alert fired"),
               Line2D([], [], color="tab:green", marker="o", ls="none", markeredgecolor="black",
                      label="alert resolved"),
               Patch(color="0.8", label=f"headlines / {bin_label(bin_s)} (right axis)"),
               Patch(color="#e8a09a", label="negative headlines")]
    if events:
        handles.append(Patch(color=_EVENT, alpha=0.35, label="known event (expected alert window)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=4 if ncols > 1 else 3, fontsize=8, frameon=False)
    fig.savefig(path)
