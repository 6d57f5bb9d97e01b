"""PNG plots of a load test for ``--report DIR`` (matplotlib, the optional ``plots`` extra).

- ``calls_over_time.png``: answered calls up and call attempts per second;
- ``failures_over_time.png``: failed calls per second, stacked by cause;
- ``quality_over_time.png``: loss in each second, median jitter and median MOS of the calls up;
- ``cdfs.png``: the distribution over the calls of MOS, jitter, loss and setup time.

Every title carries the run's parameters (``run_title``).  A figure not measured is left out
(a gap, or "not measured" on an empty panel), never drawn as 0.  The object API is used (no
pyplot global state, no display).
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from iaxgw.gateway.safefs import write_file_atomic
from iaxgw.sim.load.metrics import CallRecord

PLOTS_HINT = "PNG plots need matplotlib: pip install 'iaxgw[plots]'"
PLOT_FILES = ("calls_over_time.png", "failures_over_time.png", "quality_over_time.png",
              "cdfs.png")


class PlotsUnavailable(RuntimeError):
    """matplotlib is not installed."""


def run_title(summary: Mapping[str, Any]) -> str:
    """One line naming the run: who called whom, how many calls at what rate and for how long,
    codec, transport, media, and when it started."""
    lt: Mapping[str, Any] = summary.get("loadtest") or {}
    parts = []
    if lt.get("role") or lt.get("peer"):
        parts.append(f"{lt.get('role', '?')} -> {lt.get('peer', '?')} ({lt.get('target', '?')})")
    if lt.get("calls") is not None:
        parts.append(f"{lt['calls']} calls")
    if lt.get("rate_cps") is not None:
        parts.append(f"{lt['rate_cps']:g} cps")
    if lt.get("total") is not None:
        parts.append(f"{lt['total']} attempts")
    duration = lt.get("duration_s")
    if isinstance(duration, list | tuple) and duration:
        lo, hi = duration[0], duration[-1]
        parts.append(f"hold {lo:g} s" if lo == hi else f"hold {lo:g}-{hi:g} s")
    if summary.get("codec"):
        parts.append(str(summary["codec"]))
    if lt.get("media"):
        parts.append(f"media {lt['media']}")
    exts = lt.get("extens")
    if exts:
        parts.append("exten " + ",".join(str(e) for e in exts[:3]) + (",..." if len(exts) > 3
                                                                        else ""))
    if summary.get("started_at"):
        parts.append(str(summary["started_at"])[:19].replace("T", " ") + " UTC")
    return "iaxgw loadtest: " + ", ".join(parts) if parts else "iaxgw loadtest"


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_file_atomic(path, buf.getvalue())
    return path


def _figure(title: str, what: str, **kw: Any) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotsUnavailable(PLOTS_HINT) from exc
    fig = Figure(layout="constrained", **kw)
    width = int(kw.get("figsize", (9, 4))[0] * 12)     # characters that fit at fontsize 9
    fig.suptitle(what + "\n" + textwrap.fill(title, width), fontsize=9)
    return fig


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def write_plots(directory: Path, records: Sequence[CallRecord],
                rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any],
                failures: Mapping[str, Mapping[int, int]] | None = None) -> list[Path]:
    """The four PNGs (``PLOT_FILES``); raises PlotsUnavailable without matplotlib.
    ``failures``: cause -> {second of the run -> failed calls} (``LoadStats.failures``)."""
    title = run_title(summary)

    def col(name: str) -> list[float]:
        return [math.nan if r.get(name) is None else float(r[name]) for r in rows]

    t = col("time_s")
    return [
        _calls_plot(directory / PLOT_FILES[0], title, t, col),
        _failures_plot(directory / PLOT_FILES[1], title, failures or {},
                       max((x for x in t if not math.isnan(x)), default=0.0)),
        _quality_plot(directory / PLOT_FILES[2], title, t, col),
        _cdf_plot(directory / PLOT_FILES[3], title, records),
    ]


def _calls_plot(path: Path, title: str, t: list[float],
                col: Callable[[str], list[float]]) -> Path:
    fig = _figure(title, "Calls up and attempts", figsize=(9, 4.5))
    ax = fig.add_subplot()
    ax2 = ax.twinx()
    ax2.bar(t, col("attempts"), width=0.8, alpha=0.3, color="tab:orange",
            label="attempts (NEW sent) per s")
    ax2.set_ylabel("attempts per second")
    ax.plot(t, col("calls_up"), color="tab:blue", label="answered calls up")
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("calls up")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    lines = ax.get_legend_handles_labels()
    bars = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + bars[0], lines[1] + bars[1], loc="upper right")
    return _save(fig, path)


def _failures_plot(path: Path, title: str, failures: Mapping[str, Mapping[int, int]],
                   t_end: float) -> Path:
    from matplotlib.ticker import MaxNLocator

    fig = _figure(title, "Failed calls by cause (second the call ended)", figsize=(9, 4.5))
    ax = fig.add_subplot()
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("failed calls per second")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    causes = sorted(failures, key=lambda c: -sum(failures[c].values()))
    if not causes:
        _empty(ax, "no failed calls")
        return _save(fig, path)
    seconds = sorted({s for per in failures.values() for s in per})
    bottom = [0.0] * len(seconds)
    for cause in causes:
        counts = [float(failures[cause].get(s, 0)) for s in seconds]
        total = int(sum(counts))
        ax.bar(seconds, counts, width=0.8, bottom=bottom, label=f"{cause}: {total}")
        bottom = [b + c for b, c in zip(bottom, counts)]
    ax.set_xlim(-0.6, max(t_end, seconds[-1]) + 0.6)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _save(fig, path)


def _quality_plot(path: Path, title: str, t: list[float],
                  col: Callable[[str], list[float]]) -> Path:
    fig = _figure(title, "Loss, jitter and MOS over time", figsize=(9, 7))
    loss_ax, jit_ax, mos_ax = fig.subplots(3, 1, sharex=True)
    for ax, name, label, color in (
            (loss_ax, "loss_pct", "loss in the second (%)", "tab:red"),
            (jit_ax, "jitter_p50_ms", "jitter, median of calls up (ms)", "tab:blue"),
            (mos_ax, "mos_p50", "MOS, median of calls up", "tab:green")):
        values = col(name)
        ax.set_ylabel(label, fontsize=8)
        if all(math.isnan(v) for v in values):
            _empty(ax, "not measured")
            continue
        ax.plot(t, values, color=color, marker=".", markersize=3, linewidth=1)
    loss_ax.set_ylim(bottom=0)
    jit_ax.set_ylim(bottom=0)
    mos_ax.set_ylim(1.0, 4.6)
    mos_ax.set_xlabel("time since start (s)")
    return _save(fig, path)


def _cdf(ax: Any, values: Sequence[float], label: str, unit: str, n_calls: int) -> None:
    ax.set_xlabel(f"{label} ({unit})" if unit else label)
    ax.set_ylabel("share of calls")
    if not values:
        _empty(ax, f"{label}: not measured")
        return
    xs = sorted(values)
    n = len(xs)
    # from 0 at the lowest value, so a distribution of one value still draws its rise
    ax.step([xs[0], *xs], [0.0, *((i + 1) / n for i in range(n))], where="post")
    if xs[0] > 0 and xs[-1] / xs[0] > 50:
        ax.set_xscale("log")           # a tail (retransmitted setups) would flatten the rest
    ax.set_ylim(0, 1.02)
    mid = xs[(n - 1) // 2]
    ax.set_title(f"{label}: {n} of {n_calls} calls measured, median {mid:.3g}", fontsize=9)
    ax.grid(alpha=0.3)


def _cdf_plot(path: Path, title: str, records: Sequence[CallRecord]) -> Path:
    fig = _figure(title, "Per-call distributions (CDF)", figsize=(10, 7.5))
    (mos_ax, jit_ax), (loss_ax, setup_ax) = fig.subplots(2, 2)
    answered = [r for r in records if r.answer_ms is not None]
    n = len(answered)
    _cdf(mos_ax, [r.mos for r in answered if r.mos is not None], "MOS", "", n)
    _cdf(jit_ax, [r.jitter_ms for r in answered if r.jitter_ms is not None], "jitter", "ms", n)
    _cdf(loss_ax, [r.loss_pct for r in answered if r.loss_pct is not None], "loss", "%", n)
    _cdf(setup_ax, [r.answer_ms for r in answered if r.answer_ms is not None],
         "setup NEW -> ANSWER", "ms", n)
    mos = [r.mos for r in answered if r.mos is not None]
    if mos:     # the scale tops out at 4.5 (G.711 without loss: 4.41); room left of the lowest
        mos_ax.set_xlim(max(1.0, min(mos) - 0.25), 4.5)
    return _save(fig, path)
