"""``--control PATH`` for a load test over several shards: one control socket, in the parent.

A one-process load test answers ``iaxgw ctl`` on its own socket
(:func:`~iaxgw.sim.load.loadtest_control.control_handler`).  Over several shards the parent
serves that socket instead, so the operator still drives one run:

- ``ctl rate`` / ``pause`` / ``resume`` / ``stop`` are recorded in the parent's
  :class:`~iaxgw.sim.load.loadtest_control.RunControl` (its history is the merged summary's
  ``control``) and passed on to every shard running: each gets its share of the rate, the same
  share of the calls it was given at the start;
- ``stats`` (``iaxgw show stats``) answers with the run's merged figures of the last second
  and the shards running;
- ``show`` is refused: each shard has an endpoint of its own (``--report`` keeps each shard's).

The socket is served by an asyncio loop on a thread of its own; the shard lines it writes go
through :meth:`Shard.send <iaxgw.sim.scale.shards.Shard.send>`, which is safe across threads.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from iaxgw.gateway.serve.control import CommandRefused, ControlError, ControlServer
from iaxgw.sim.load.loadtest_control import MIN_RATE, SHOW_COMMANDS, RunControl, drive, rate_arg


class ShardLine(Protocol):
    """What the control needs of a shard: whether it still runs, and a way to tell it."""

    def send(self, line: str) -> None: ...

    def running(self) -> bool: ...


def rate_shares(calls: Sequence[int]) -> list[float]:
    """Each shard's share of the run's rate: its share of the calls (as ``shard_options``
    splits the rate at the start)."""
    total = sum(calls)
    return [c / total for c in calls] if total else [1.0 / len(calls)] * len(calls)


def shard_rate_line(rate: float, share: float) -> str:
    """The line that asks a shard for its ``share`` of ``rate`` calls/s."""
    return f"rate {rate * share!r}"


class ShardControl:
    """The parent's control socket over ``shards`` (see the module docstring)."""

    def __init__(self, path: str, shards: Sequence[ShardLine], shares: Sequence[float],
                 rate: float, last_second: Callable[[], Mapping[str, Any] | None]) -> None:
        self.path = path
        self.shards = list(shards)
        self.shares = list(shares)
        self.control = RunControl(rate, on_stop=self._stopped)
        self._last_second = last_second
        self._t0 = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: str | None = None
        self._sent = (self.control.rate, False)     # the rate and pause the shards were told

    # -- the socket ---------------------------------------------------------------------------

    def start(self) -> None:
        """Listen at ``path``; ``ControlError`` when it cannot (the run does not start)."""
        self._thread = threading.Thread(target=self._serve, name="shard-control", daemon=True)
        self._thread.start()
        self._ready.wait(10.0)
        if self._error is not None:
            self._thread.join(5.0)
            raise ControlError(self._error)

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        server = ControlServer(self.path, self.handle)
        try:
            loop.run_until_complete(server.start())
        except ControlError as exc:
            self._error = str(exc)
            self._ready.set()
            loop.close()
            return
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(server.close())
            loop.close()

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5.0)
        self._loop = None

    # -- the commands -------------------------------------------------------------------------

    def handle(self, cmd: str, request: Mapping[str, Any]) -> Any:
        if cmd in SHOW_COMMANDS:
            raise CommandRefused(f"show {cmd}: this load test runs over {len(self.shards)} "
                                 "shards, each with an endpoint of its own; `iaxgw show stats` "
                                 "has the merged figures, --report each shard's")
        if cmd == "stats":
            return self.stats()
        if cmd == "originate":
            raise CommandRefused("a load test places its own calls: originate is for a running "
                                 "`iaxgw serve` (its --control socket)")
        if cmd == "rate":
            self._check_rate(rate_arg(request))
        answer = drive(self.control, cmd, request)
        self._push()
        return answer

    def stats(self) -> dict[str, Any]:
        """``iaxgw show stats``: the run's state as one process reports its own (``loadtest``),
        from the merged seconds, and the last merged second itself."""
        c = self.control
        row = dict(self._last_second() or {})
        return {"loadtest": {"elapsed_s": round(time.monotonic() - self._t0, 1),
                             "rate_asked_cps": c.rate, "paused": c.paused,
                             "stopping": c.stopped_by is not None,
                             "attempts": row.get("attempts_total"),
                             "calls_up": row.get("calls_up"),
                             "shards": len(self.shards),
                             "shards_running": sum(1 for sh in self.shards if sh.running())},
                "last_second": row}

    def _check_rate(self, rate: float) -> None:
        """Refuse a rate some shard could not be given: its share under the lowest rate a
        load test takes (it would clamp it up and the run would go faster than recorded)."""
        low = min(self.shares) * rate
        if low < MIN_RATE:
            need = MIN_RATE / min(self.shares)
            raise CommandRefused(f"rate {rate:g} calls/s over {len(self.shards)} shards gives "
                                 f"one {low:.4g}/s, under the {MIN_RATE:g}/s a shard takes: "
                                 f"ask at least {need:.4g} calls/s")

    def _push(self) -> None:
        """What changed of the rate and pause asked, to every shard running (a rate each its
        share); a shard records only what changed, as a one-process run would."""
        c = self.control
        lines = []
        if c.rate != self._sent[0]:
            lines.append("rate")
        if c.paused != self._sent[1]:
            lines.append("pause" if c.paused else "resume")
        self._sent = (c.rate, c.paused)
        for sh, share in zip(self.shards, self.shares, strict=True):
            if sh.running():
                for what in lines:
                    sh.send(shard_rate_line(c.rate, share) if what == "rate" else what)

    def _stopped(self, by: str) -> None:
        for sh in self.shards:
            if sh.running():
                sh.send(f"halt {by}")
