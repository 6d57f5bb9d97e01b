"""Driving a running load test: the asked rate, pause/resume and a graceful stop.

:class:`RunControl` holds what the operator asked and when (``iaxgw ctl`` over the control
socket, or the live screen's hot keys): the attempt rate now, whether new calls are paused, and
every change with its time, which timeseries.csv and summary.json's ``control`` report.  The
load runner reads it (the scheduler's pace) and is told of each change through ``on_change`` /
``on_stop``.  :class:`HotKeys` maps the keys of a terminal onto it; :func:`control_handler`
answers the control socket for a running load test.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from iaxgw.gateway.serve.control import CommandRefused, ControlError

log = logging.getLogger("iaxgw.loadtest")

MIN_RATE = 0.01            # calls/s: the slowest pace `ctl rate` and `-` / `/` go down to
MAX_RATE = 10_000.0        # the same bound as --rate


@dataclass(frozen=True, slots=True)
class ControlChange:
    """One thing the operator did: ``action`` rate|pause|resume|stop, the rate asked after it,
    by whom (``ctl``, ``key``) and when (seconds into the run, and the wall clock)."""

    elapsed_s: float
    unix_time_s: float
    action: str
    rate_cps: float
    paused: bool
    by: str

    def as_dict(self) -> dict[str, Any]:
        from iaxgw.sim.report.report import iso_time

        return {"elapsed_s": round(self.elapsed_s, 3), "time_utc": iso_time(self.unix_time_s),
                "action": self.action, "rate_cps": self.rate_cps, "paused": self.paused,
                "by": self.by}


class RunControl:
    """The asked rate, pause and stop of one run, with their history."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[], None] | None = None,
                 on_stop: Callable[[str], None] | None = None) -> None:
        self.rate = float(rate)
        self.initial_rate = float(rate)
        self.paused = False
        self.stopped_by: str | None = None
        self.changes: list[ControlChange] = []
        self._clock = clock
        self._t0 = clock()
        self._wall0 = time.time()
        self.on_change = on_change
        self.on_stop = on_stop

    def _record(self, action: str, by: str) -> None:
        elapsed = self._clock() - self._t0
        self.changes.append(ControlChange(elapsed, self._wall0 + elapsed, action, self.rate,
                                          self.paused, by))
        log.info("%s: %s (rate %g calls/s%s)", by, action, self.rate,
                 ", paused" if self.paused else "")

    def set_rate(self, rate: float, by: str = "ctl") -> float:
        """Ask for ``rate`` call attempts per second from now on (clamped to its bounds)."""
        if not rate > 0:
            raise CommandRefused(f"rate must be > 0 calls/s, not {rate:g}")
        if self.on_change is not None:
            self.on_change()      # the runner closes the time at the old rate first
        self.rate = round(min(max(float(rate), MIN_RATE), MAX_RATE), 4)
        self._record("rate", by)
        return self.rate

    def scale(self, factor: float, by: str = "key") -> float:
        return self.set_rate(self.rate * factor, by)

    def step(self, delta: float, by: str = "key") -> float:
        return self.set_rate(max(MIN_RATE, self.rate + delta), by)

    def pause(self, by: str = "ctl") -> bool:
        """No new calls until :meth:`resume`; the calls up go on.  False if already paused."""
        return self._set_paused(True, by)

    def resume(self, by: str = "ctl") -> bool:
        """New calls again at the rate asked.  False if not paused."""
        return self._set_paused(False, by)

    def _set_paused(self, paused: bool, by: str) -> bool:
        if self.paused == paused:
            return False
        if self.on_change is not None:
            self.on_change()
        self.paused = paused
        self._record("pause" if paused else "resume", by)
        return True

    def toggle_pause(self, by: str = "key") -> bool:
        """``p``: pause, or resume when paused; returns whether paused now."""
        if not self.pause(by):
            self.resume(by)
        return self.paused

    def stop(self, by: str = "ctl") -> None:
        """Stop gracefully: no new calls, the calls up hung up, the report written."""
        if self.stopped_by is not None:
            return
        self.stopped_by = by
        self._record("stop", by)
        if self.on_stop is not None:
            self.on_stop(by)

    def history(self) -> list[dict[str, Any]]:
        """The rate asked from the start on: one entry at 0 s, then one per change."""
        start = {"elapsed_s": 0.0, "rate_cps": self.initial_rate, "paused": False}
        return [start, *({"elapsed_s": round(c.elapsed_s, 3), "rate_cps": c.rate_cps,
                          "paused": c.paused} for c in self.changes)]

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def summary(self) -> dict[str, Any]:
        """summary.json's ``control``: the rate asked at the start and every change since."""
        return {"initial_rate_cps": self.initial_rate, "rate_cps": self.rate,
                "paused": self.paused, "stopped_by": self.stopped_by,
                "changes": [c.as_dict() for c in self.changes]}


# --- hot keys ---------------------------------------------------------------------------------

#: key -> (what it does, as the live screen's help line says it)
HOT_KEYS: Mapping[str, str] = {"+": "rate +1", "-": "rate -1", "*": "rate x10",
                               "/": "rate /10", "p": "pause/resume", "q": "stop"}
HOT_KEYS_HELP = "keys: +/- rate ±1, * / rate x10 /10, p pause/resume, q stop"


class Controls(Protocol):
    """What the hot keys act on: a run's :class:`RunControl`, or a remote one."""

    def step(self, delta: float, by: str = "key") -> float: ...

    def scale(self, factor: float, by: str = "key") -> float: ...

    def toggle_pause(self, by: str = "key") -> bool: ...

    def stop(self, by: str = "ctl") -> None: ...


def apply_key(control: Controls, key: str) -> bool:
    """One hot key onto ``control``; False for a key that means nothing."""
    actions: dict[str, Callable[[], object]] = {
        "+": lambda: control.step(1.0), "-": lambda: control.step(-1.0),
        "*": lambda: control.scale(10.0), "/": lambda: control.scale(0.1),
        "p": control.toggle_pause, "P": control.toggle_pause,
        "q": lambda: control.stop("key"), "Q": lambda: control.stop("key"),
    }
    action = actions.get(key)
    if action is None:
        return False
    action()
    return True


class HotKeys:
    """Reads single keys from a terminal on stdin (no Enter, no echo) while the run goes.

    Only when stdin is a TTY; the terminal's settings are restored on :meth:`close` (and the
    output's newline handling is left alone, so the live screen draws as before)."""

    def __init__(self, control: Controls, fd: int | None = None) -> None:
        self.control = control
        self.fd = sys.stdin.fileno() if fd is None else fd
        self._saved: list[Any] | None = None
        self._loop: Any = None

    @staticmethod
    def available(fd: int | None = None) -> bool:
        try:
            return os.isatty(sys.stdin.fileno() if fd is None else fd)
        except (OSError, ValueError):
            return False

    def start(self, loop: Any = None) -> None:
        """Single keys from now on: read on ``loop`` as they come, or (no loop) by
        :meth:`wait`."""
        try:
            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd, termios.TCSANOW)
            if loop is not None:
                loop.add_reader(self.fd, self._readable)
        except (OSError, termios.error, ValueError, NotImplementedError) as exc:
            log.info("hot keys off: %s", exc)
            self.close()
            return
        self._loop = loop

    def wait(self, timeout: float) -> None:
        """Without a loop: up to ``timeout`` s for keys, acting on those that come."""
        if self._saved is None:
            time.sleep(timeout)
            return
        with contextlib.suppress(OSError, ValueError):
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if ready:
                self._readable()

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 64)
        except OSError:
            data = b""
        if not data:                   # the terminal went away: no more keys
            self.close()
            return
        for key in data.decode("latin-1"):
            with contextlib.suppress(CommandRefused, ControlError):
                apply_key(self.control, key)

    def close(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.fd)
            self._loop = None
        if self._saved is not None:
            with contextlib.suppress(OSError, termios.error):
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None


# --- the control socket of a load test ------------------------------------------------------


def rate_arg(request: Mapping[str, Any]) -> float:
    """The ``rate`` of a ``ctl rate`` request, in calls/s (``CommandRefused`` if not a number)."""
    value = request.get("rate")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise CommandRefused('rate needs a number of calls per second ("rate": N)')
    try:
        return float(value)
    except ValueError:
        raise CommandRefused(f"rate {value!r} is not a number of calls per second") from None


def drive(control: RunControl, cmd: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """``rate`` / ``pause`` / ``resume`` / ``stop`` onto ``control``; KeyError otherwise.
    ``"by": "key"``: sent for a hot key (a --through client's), recorded as such."""
    by = "key" if request.get("by") == "key" else "ctl"
    if cmd == "rate":
        control.set_rate(rate_arg(request), by)
    elif cmd == "pause":
        control.pause(by)
    elif cmd == "resume":
        control.resume(by)
    elif cmd == "stop":
        control.stop(by)
    else:
        raise KeyError(cmd)
    return {"rate_cps": control.rate, "paused": control.paused,
            "stopping": control.stopped_by is not None}


#: `iaxgw show` on a load test's socket: its endpoint, as serve shows its own (stats: ours)
SHOW_COMMANDS = ("peers", "channels", "netstats", "registry", "users", "peer")


def control_handler(runner: Any) -> Callable[[str, Mapping[str, Any]], Any]:
    """The control socket's handler for a running :class:`~iaxgw.sim.load.loadtest.LoadRunner`:
    ``show`` peers/channels/netstats as serve shows them, ``stats`` with the load test's own
    figures, and the ``ctl`` commands."""
    view = runner.endpoint_view()

    def handle(cmd: str, request: Mapping[str, Any]) -> Any:
        if cmd in SHOW_COMMANDS:
            return view.introspect(cmd, request)
        if cmd == "stats":
            return runner.control_stats()
        if cmd == "originate":
            raise CommandRefused("a load test places its own calls: originate is for a running "
                                 "`iaxgw serve` (its --control socket)")
        return drive(runner.control, cmd, request)

    return handle


def endpoint_stats(endpoint: Any, trunkmtu: int) -> dict[str, Any]:
    from iaxgw.gateway.serve.showrows import endpoint_stat_groups

    return endpoint_stat_groups(endpoint, trunkmtu)
