"""The live load-test screen (rich) and the final summary table.

:class:`LiveScreen` redraws a :class:`~iaxgw.sim.report.report.Snapshot` in place when stdout is a
terminal; otherwise it prints one compact line per update (or nothing with ``quiet``), so logs
and CI output stay readable.  :func:`print_summary` prints a ``summary.json`` dictionary.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from iaxgw.sim.load.loadtest_control import HOT_KEYS_HELP
from iaxgw.sim.report.report import Snapshot


def _figure(v: float | None, fmt: str = ".1f", unit: str = "") -> str:
    """A figure as the screen shows it: "-" while there is none yet."""
    return "-" if v is None else f"{v:{fmt}}{unit}"


def _na(v: float | None, fmt: str = ".1f", unit: str = "") -> str:
    """A figure that may not be measurable (loss, MOS): None shows as n/a, never as 0."""
    return "n/a" if v is None else f"{v:{fmt}}{unit}"


_LOSS_METHODS = {"stamp": "round trip, by frame stamp", "timestamps": "by the far end's timestamps",
                 "mixed": "stamps and timestamps"}


def _loss_row(summary: dict[str, Any]) -> str:
    calls = summary.get("loss_calls") or {}
    method = summary.get("loss_method")
    text = _na(summary.get("loss_pct"), ".2f", " %")
    if method:
        text += f" ({_LOSS_METHODS.get(method, method)})"
    if calls.get("not_measurable"):
        text += (f"; not measurable on {calls['not_measurable']} call(s): an echo that was not "
                 "bit-exact, or frames without timestamps of their own")
    fwd, ret = summary.get("loss_forward_pct"), summary.get("loss_return_pct")
    if summary.get("loss_pct") is not None:
        if fwd is not None:
            text += f"; forward {fwd:.2f} % (far end's receive reports), return " + \
                _na(ret, ".2f", " %")
        elif method == "stamp":
            text += "; forward/return n/a (the far end's receive reports count nothing)"
    imp = summary.get("impair") or {}
    dropped = [f"{d} {imp[d]['voice']['loss_pct']:.2f} %" for d in ("send", "recv")
               if (imp.get(d) or {}).get("voice", {}).get("loss_pct") is not None]
    if dropped:
        text += f"; --impair dropped voice frames: {', '.join(dropped)}"
    return text


def _causes(causes: dict[str, int], limit: int = 4) -> str:
    if not causes:
        return "-"
    top = sorted(causes.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{k} {v}" for k, v in top[:limit])
    return text + (f", +{len(top) - limit} more" if len(top) > limit else "")


def _asked(snap: Snapshot) -> str:
    if snap.rate_asked is None:
        return "-"
    return f"{snap.rate_asked:g}/s" + (" PAUSED (no new calls)" if snap.paused else "")


def render(snap: Snapshot, title: str = "iaxgw loadtest", capped: str | None = None,
           keys: bool = False) -> Table:
    """The live screen as a rich renderable (``keys``: with the hot keys' help line)."""
    target = f" / {snap.target}" if snap.target is not None else ""
    t = Table(title=f"{title}  {snap.elapsed_s:,.0f} s", show_header=False, box=None,
              padding=(0, 2), title_justify="left")
    t.add_column(style="bold cyan", no_wrap=True)
    t.add_column(no_wrap=True)
    t.add_column(style="bold cyan", no_wrap=True)
    t.add_column(no_wrap=True)
    t.add_row("calls up", f"{snap.calls_up}{target}", "setting up", str(snap.setting_up))
    t.add_row("attempts", f"{snap.attempts} ({_figure(snap.attempt_rate)}/s)",
              "answered", str(snap.answered))
    t.add_row("rate asked", Text(_asked(snap), style="yellow" if snap.paused else ""), "", "")
    t.add_row("failed", str(snap.failed), "by cause", _causes(snap.causes))
    t.add_row("setup p50", _figure(snap.setup_p50_ms, ".0f", " ms"),
              "setup p95", _figure(snap.setup_p95_ms, ".0f", " ms"))
    t.add_row("jitter p50", _figure(snap.jitter_p50_ms, ".1f", " ms"),
              "jitter max", _figure(snap.jitter_max_ms, ".1f", " ms"))
    t.add_row("loss", _na(snap.loss_pct, ".2f", " %"), "rtt p50",
              _figure(snap.rtt_p50_ms, ".0f", " ms"))
    t.add_row("MOS p50", _na(snap.mos_p50, ".2f"), "MOS min", _na(snap.mos_min, ".2f"))
    t.add_row("tx/rx pps", f"{_figure(snap.tx_pps, ',.0f')} / {_figure(snap.rx_pps, ',.0f')}",
              "CPU", _figure(snap.cpu_pct, ".0f", " %"))
    if capped:
        t.add_row("capped by", Text(capped, style="yellow"), "", "")
    a = snap.audio
    if a:
        t.add_row("audio", f"verified {a.get('verified', 0)}",
                  "problems", f"crossed {a.get('crossed', 0)}, one-way {a.get('one_way', 0)}, "
                              f"silent {a.get('silent', 0)}")
    if keys:
        t.caption = HOT_KEYS_HELP
        t.caption_justify = "left"
    return t


def compact_line(snap: Snapshot, capped: str | None = None) -> str:
    """One log line per interval for non-terminal output."""
    target = f"/{snap.target}" if snap.target is not None else ""
    cap = f" capped-by={capped!r}" if capped else ""
    return (f"t={snap.elapsed_s:.0f}s up={snap.calls_up}{target} att={snap.attempts} "
            f"rate={_figure(snap.attempt_rate)}/s ans={snap.answered} fail={snap.failed} "
            f"setup50={_figure(snap.setup_p50_ms, '.0f')}ms jit50={_figure(snap.jitter_p50_ms)}ms "
            f"loss={_na(snap.loss_pct, '.2f', '%')} mos50={_na(snap.mos_p50, '.2f')} "
            f"mosmin={_na(snap.mos_min, '.2f')} cpu={_figure(snap.cpu_pct, '.0f')}%{cap}"
            + (f" asked={snap.rate_asked:g}/s" if snap.rate_asked is not None else "")
            + (" paused" if snap.paused else ""))


class LiveScreen:
    """``start()``, ``update(snapshot)`` (about once a second), ``stop()``; or a context manager.

    On a terminal the screen is a ``rich.live.Live`` refreshed ``refresh_per_second`` times a
    second.  Elsewhere each update prints :func:`compact_line` (``lines=False`` prints nothing).
    ``quiet`` shows nothing at all (the caller prints the final summary)."""

    def __init__(self, console: Console | None = None, *, quiet: bool = False,
                 refresh_per_second: float = 2.0, lines: bool = True,
                 title: str = "iaxgw loadtest") -> None:
        self.console = console or Console()
        self.quiet = quiet
        self.lines = lines
        self.title = title
        self.refresh_per_second = refresh_per_second
        self._live: Live | None = None
        self.last: Snapshot | None = None
        #: what holds the load test's ramp back now, set by the runner before each update
        self.capped: str | None = None
        #: the hot keys are on (stdin a terminal): the screen shows their help line
        self.keys_help = False

    @property
    def interactive(self) -> bool:
        return self.console.is_terminal and not self.quiet

    def start(self) -> None:
        if self.interactive and self._live is None:
            self._live = Live(Text("starting ..."), console=self.console,
                              refresh_per_second=self.refresh_per_second, transient=False)
            self._live.start()

    def update(self, snap: Snapshot) -> None:
        self.last = snap
        if self.quiet:
            return
        if self._live is not None:
            self._live.update(render(snap, self.title, self.capped, self.keys_help),
                              refresh=True)
        elif self.lines:
            self.console.print(compact_line(snap, self.capped), highlight=False, soft_wrap=True)

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __enter__(self) -> LiveScreen:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _pct_row(d: dict[str, Any] | None, unit: str, fmt: str = ".1f") -> str:
    if not d:
        return "-"
    return ("  ".join(f"{k} {_figure(d.get(k), fmt)}" for k in ("p50", "p95", "p99", "max"))
            + f" {unit}")


def summary_table(summary: dict[str, Any]) -> Group:
    """The final summary (a ``summary.json`` dictionary) as rich renderables."""
    t = Table(title="iaxgw loadtest summary", show_header=False, title_justify="left")
    t.add_column(style="bold cyan", no_wrap=True)
    t.add_column()
    target = summary.get("target_calls")
    t.add_row("calls", f"attempted {summary.get('attempted')}, answered "
                       f"{summary.get('answered')}, failed {summary.get('failed')}"
                       + (f", target {target}" if target is not None else "")
                       + (f", max up {summary.get('max_concurrent')}"
                          if summary.get("max_concurrent") is not None else ""))
    t.add_row("setup (NEW->ANSWER)", _pct_row(summary.get("setup_ms"), "ms", ".0f"))
    t.add_row("jitter", _pct_row(summary.get("jitter_ms"), "ms"))
    t.add_row("echo RTT", _pct_row(summary.get("rtt_ms"), "ms", ".0f"))
    t.add_row("loss", _loss_row(summary))
    mos = summary.get("mos") or {}
    t.add_row("MOS", f"p50 {_na(mos.get('p50'), '.2f')}  min {_na(mos.get('min'), '.2f')}")
    audio = summary.get("audio") or {}
    if audio.get("checked") is not None:
        t.add_row("audio", f"checked {audio.get('checked')}: verified {audio.get('verified')}, "
                           f"crossed {audio.get('crossed')}, one-way {audio.get('one_way')}, "
                           f"silent {audio.get('silent')}")
    trunk = summary.get("trunk") or {}
    dps, bpc = trunk.get("datagrams_per_s") or {}, trunk.get("bytes_per_call_s") or {}
    if dps.get("tx") is not None or dps.get("rx") is not None:
        t.add_row("datagrams/s",
                  f"tx {_figure(dps.get('tx'), ',.0f')}  rx {_figure(dps.get('rx'), ',.0f')}")
        t.add_row("bytes/call/s",
                  f"tx {_figure(bpc.get('tx'), ',.0f')}  rx {_figure(bpc.get('rx'), ',.0f')}")
    t.add_row("CPU", _figure(summary.get("cpu_pct"), ".0f", " %"))
    tg = summary.get("targets") or {}
    if tg:
        rate, calls = tg.get("rate") or {}, tg.get("calls") or {}
        line = (f"rate {_na(rate.get('achieved'))}/s of {_figure(rate.get('asked'), 'g')}/s, calls "
                f"up {calls.get('peak')} of {calls.get('asked')}: "
                + ("reached" if tg.get("met") else "NOT reached"))
        t.add_row("targets", line)
        for c in tg.get("capped_by") or []:
            t.add_row("capped by", f"{c.get('detail')} (waited {_na(c.get('waited_s'))} s)")
    st = (summary.get("loadtest") or {}).get("send_timing") or {}
    if st.get("ticks"):
        t.add_row("send timing", f"tick late p50 {_figure(st.get('late_p50_ms'), '.2f')}  p99 "
                                 f"{_figure(st.get('late_p99_ms'), '.2f')}  max "
                                 f"{_figure(st.get('late_max_ms'), '.1f')} ms; sends p99 "
                                 f"{_figure(st.get('work_p99_ms'), '.2f')} ms/tick")
    causes = summary.get("causes") or {}
    parts: list[Table] = [t]
    if causes:
        c = Table(title="failures by cause", title_justify="left")
        c.add_column("cause")
        c.add_column("calls", justify="right")
        for k, v in sorted(causes.items(), key=lambda kv: (-kv[1], kv[0])):
            c.add_row(k, str(v))
        parts.append(c)
    return Group(*parts)


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    (console or Console()).print(summary_table(summary))
