"""The backtest report: ``report.png``, negative rate over event time per scope, with the alerts.

Charts are drawn with matplotlib (the ``report`` extra).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from finpulse.core import rfc3339

DEFAULT_TOP_SCOPES = 12
MAX_PANELS = 24


def write_report(path: str | Path, series: Mapping[str, list[dict]], alerts: list[dict],
                 summary: Mapping[str, Any]) -> None:
    """``report.png``: negative rate over event time for the busiest scopes (alerted scopes first),
    one panel each on a shared time axis, with the baseline rate, the rule threshold and the
    fired / resolved alerts.

    :raises ImportError: without matplotlib (the ``report`` extra).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    alerted = {a["scope"] for a in alerts}
    order = list(series)  # busiest first
    panels = [sc for sc in order if sc in alerted] + [sc for sc in order if sc not in alerted]
    panels = panels[:max(DEFAULT_TOP_SCOPES, min(len(alerted), MAX_PANELS))]
    ncols = 1 if len(panels) <= 4 else 2
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig = Figure(figsize=(7.5 * ncols, 1.9 * nrows + 1.0), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    mode = "pre-scored" if summary.get("mode") == "scored" else "classified"
    fig.suptitle(f"finpulse backtest of {Path(str(summary['file'])).name} ({mode}): negative-sentiment rate per scope\n"
                 f"{summary['produced']} headlines, alerts: {summary['alerts_fired']} fired, "
                 f"{summary['alerts_resolved']} resolved; namespace {summary['namespace']}",
                 fontsize=11)
    if not panels:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no data was counted", ha="center", va="center")
        ax.set_axis_off()
        fig.savefig(path)
        return
    axes = fig.subplots(nrows, ncols, sharex=True, squeeze=False)
    dt = lambda ts: datetime.fromtimestamp(ts, UTC)  # noqa: E731
    for i, ax in enumerate(axes.flat):
        if i >= len(panels):
            ax.set_visible(False)
            continue
        scope = panels[i]
        rows = series[scope]
        rule = rows[0]["rule"]
        rows = [r for r in rows if r["rule"] == rule]
        xs = [dt(r["ts"]) for r in rows]
        ax.plot(xs, [r["negative_rate"] if r["negative_rate"] is not None else float("nan") for r in rows],
                color="tab:blue", lw=1.2)
        ax.plot(xs, [r["baseline_rate"] if r["baseline_rate"] is not None else float("nan") for r in rows],
                color="0.45", lw=1.0, ls="--")
        if rows[0]["threshold"] is not None:
            ax.axhline(rows[0]["threshold"], color="tab:red", lw=0.8, ls=":")
        for a in alerts:
            if a["scope"] != scope:
                continue
            fired = a["status"] == "fired"
            ax.plot([dt(rfc3339.parse(a["window_end"]).timestamp())], [a["negative_rate"]], ls="none",
                    marker="v" if fired else "o", ms=8, color="tab:red" if fired else "tab:green",
                    markeredgecolor="black", markeredgewidth=0.5, zorder=5)
        w_min = rows[0]["short_window_s"] // 60
        nal = sum(1 for a in alerts if a["scope"] == scope and a["status"] == "fired")
        ax.set_title(f"{scope}  ({w_min} min window{', rule ' + rule if rule else ''}"
                     f"{f', {nal} alert(s)' if nal else ''})", fontsize=9, loc="left")
        ax.set_ylim(-0.03, 1.05)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
        if i % ncols == 0:
            ax.set_ylabel("negative rate", fontsize=8)
    for ax in axes[-1]:
        if ax.get_visible():
            loc = AutoDateLocator()
            ax.xaxis.set_major_locator(loc)
            ax.xaxis.set_major_formatter(ConciseDateFormatter(loc))
            ax.set_xlabel("event time (UTC)", fontsize=9)
    if len(panels) % ncols and nrows > 1:  # the last column's bottom panel is hidden: label the one above
        ax = axes[-2][-1]
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_xlabel("event time (UTC)", fontsize=9)
    handles = [Line2D([], [], color="tab:blue", lw=1.2, label="negative rate (short window)"),
               Line2D([], [], color="0.45", lw=1.0, ls="--", label="baseline rate"),
               Line2D([], [], color="tab:red", lw=0.8, ls=":", label="rule threshold"),
               Line2D([], [], color="tab:red", marker="v", ls="none", markeredgecolor="black", label="alert fired"),
               Line2D([], [], color="tab:green", marker="o", ls="none", markeredgecolor="black",
                      label="alert resolved")]
    fig.legend(handles=handles, loc="outside lower center", ncol=5, fontsize=8, frameon=False)
    fig.savefig(path)
