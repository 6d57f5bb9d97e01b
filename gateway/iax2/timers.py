"""The sans-IO endpoint's timers: a queue it owns, with no clock of its own.

The endpoint schedules work at a loop time (``schedule``) and the driver asks when to wake it
(``deadline``) and then fires what is due (``fire_due``).  Two heaps:

* *hard* timers run at the first ``fire_due`` at or after their time (retransmissions,
  trunk flushes, autokill);
* *soft* timers may run up to ``soft_slack`` late (PING, LAGRQ, qualify, registration
  refresh): they run at any ``fire_due`` at or after their time (with a trunk running, the
  next flush), and ``deadline`` asks for a wake-up of their own only ``soft_slack`` after it.
  At 200 calls those are about 30 timers a second which, each at its own moment, would cost a
  wake-up apiece.

A cancelled timer stays in its heap, marked dead, until it reaches the top (cancelling is
O(1)).  Heap entries are ``(when, seq, timer)``: the sequence number keeps timers of the same
moment in the order they were made, and the tuples compare in C without reaching the timer.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

__all__ = ["Timer", "TimerFn", "TimerQueue"]

#: What a timer runs: ``fn(now, arg)``.
TimerFn = Callable[[float, Any], None]
#: Timers fired by one ``fire_due`` at most, per heap (a bound, not a limit met in practice).
MAX_FIRED_PER_CALL = 100_000


class Timer:
    """One scheduled call of ``fn(now, arg)`` at loop time ``when``; ``cancel`` makes it a
    no-op (idempotent)."""

    __slots__ = ("alive", "arg", "fn", "when")

    def __init__(self, when: float, fn: TimerFn, arg: Any) -> None:
        self.when = when
        self.fn = fn
        self.arg = arg
        self.alive = True

    def cancel(self) -> None:
        self.alive = False

    def __repr__(self) -> str:
        name = getattr(self.fn, "__name__", type(self.fn).__name__)
        return f"<Timer {name} at {self.when:.3f}{'' if self.alive else ' cancelled'}>"


class TimerQueue:
    """The hard and soft timers of one endpoint (module doc)."""

    __slots__ = ("_hard", "_seq", "_soft", "soft_slack")

    def __init__(self, soft_slack: float) -> None:
        self.soft_slack = soft_slack
        self._hard: list[tuple[float, int, Timer]] = []
        self._soft: list[tuple[float, int, Timer]] = []
        self._seq = 0

    def schedule(self, when: float, fn: TimerFn, arg: Any) -> Timer:
        """A hard timer: ``fn(now, arg)`` at the first ``fire_due`` at or after ``when``."""
        t = Timer(when, fn, arg)
        self._seq += 1
        heapq.heappush(self._hard, (when, self._seq, t))
        return t

    def schedule_soft(self, when: float, fn: TimerFn, arg: Any) -> Timer:
        """A soft timer: may run up to ``soft_slack`` after ``when`` (module doc)."""
        t = Timer(when, fn, arg)
        self._seq += 1
        heapq.heappush(self._soft, (when, self._seq, t))
        return t

    def deadline(self) -> float | None:
        """When ``fire_due`` should next run (loop time), or None when nothing is scheduled."""
        hard, soft = self._hard, self._soft
        while hard and not hard[0][2].alive:
            heapq.heappop(hard)
        while soft and not soft[0][2].alive:
            heapq.heappop(soft)
        first: float | None = hard[0][0] if hard else None
        if not soft:
            return first
        late = soft[0][0] + self.soft_slack
        return first if first is not None and first < late else late

    def fire_due(self, now: float) -> None:
        """Run every live timer due at ``now``, hard ones first, each in time order; a timer
        scheduled by one that runs fires in this call when it is due too."""
        for heap in (self._hard, self._soft):
            for _ in range(MAX_FIRED_PER_CALL):
                if not heap or heap[0][0] > now:
                    break
                t = heapq.heappop(heap)[2]
                if t.alive:
                    t.alive = False
                    t.fn(now, t.arg)

    def live(self) -> list[Timer]:
        """The timers not yet fired nor cancelled (for tests and introspection)."""
        return [t for heap in (self._hard, self._soft) for _w, _s, t in heap if t.alive]

    def live_soft(self) -> list[Timer]:
        """The soft timers not yet fired nor cancelled."""
        return [t for _w, _s, t in self._soft if t.alive]

    def __len__(self) -> int:
        """Entries held, cancelled ones not yet dropped included (a bound on memory)."""
        return len(self._hard) + len(self._soft)

    def clear(self) -> None:
        self._hard.clear()
        self._soft.clear()
