"""Garbage-collector pacing for the media loops that must keep a 20 ms grid (the load
tester's, and ``iaxgw serve``'s: a full collection stopped serve for up to 217 ms at 5,000
calls).

CPython's cyclic collector stops the process for as long as it takes to scan a generation.  A
full (generation 2) collection scans every tracked object: at 2,000 load-test calls that is
90-130 ms, four to six media ticks, and it ran six times in a 40 s run -- by itself enough to put
the p99 send-timing error near 30 ms.  The objects it scans are almost all long-lived (the
modules, the call records), and almost all garbage dies by reference counting anyway.

:class:`GcPacer` therefore turns automatic collection off and collects at moments the loop
chooses (right after a media tick's sends): the young generations when enough was allocated
(``idle``), and once a second (``step``) it moves what has survived into the permanent
generation (``gc.freeze()``, constant time).  Collections then only ever scan objects younger
than a second, and never delay a tick.  Garbage cycles among frozen objects are not found by
those (garbage without cycles is freed by reference counting as always); a full collection with
everything unfrozen runs when the process has grown by ``grow_limit`` bytes since the last one,
and at :meth:`stop`.
"""

from __future__ import annotations

import gc
import os
import time

__all__ = ["GcPacer"]


class GcPacer:
    """Freeze survivors each :meth:`step`; collect fully when the process grew too much."""

    def __init__(self, *, grow_limit: int = 256 << 20) -> None:
        self.grow_limit = grow_limit
        self.active = False
        self.steps = 0
        self.full_collections = 0
        self.full_ms_max = 0.0
        self._baseline = 0
        self._enabled = True

    #: young objects (allocations minus deallocations) that make :meth:`idle` collect
    GEN0_LIMIT = 5000

    def start(self) -> None:
        """A full collection now (before the timing matters), then freeze what is left, and
        from now on collect only when the owner says (``idle``, ``step``)."""
        if self.active:
            return
        self.active = True
        self._enabled = gc.isenabled()
        gc.disable()
        self._full()

    def idle(self) -> None:
        """A moment with slack (right after a media tick's sends): collect the youngest
        generation if enough has been allocated, every tenth time the middle one too -- what
        the automatic collector does, but never in the middle of a tick."""
        if not self.active:
            return
        c0, c1, _c2 = gc.get_count()
        if c0 >= self.GEN0_LIMIT:
            gc.collect(1 if c1 >= 10 else 0)

    def step(self) -> None:
        """Collect the youngest generation and freeze the survivors (at a moment with slack;
        what is older survived a collection already)."""
        if not self.active:
            return
        self.steps += 1
        gc.collect(0)
        gc.freeze()
        rss = _rss_bytes()
        if rss is not None and rss - self._baseline > self.grow_limit:
            self._full()

    def stop(self) -> None:
        """Back to normal collection: unfreeze and collect everything once."""
        if not self.active:
            return
        self.active = False
        gc.unfreeze()
        gc.collect()
        if self._enabled:
            gc.enable()

    def _full(self) -> None:
        t0 = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.full_collections += 1
        self.full_ms_max = max(self.full_ms_max, (time.perf_counter() - t0) * 1000.0)
        self._baseline = _rss_bytes() or 0


def _rss_bytes() -> int | None:
    """This process's resident set size (Linux ``/proc/self/statm``; None elsewhere).  Cheap,
    unlike ``gc.get_freeze_count()``, which walks the whole frozen set (16 ms at 2,000 calls)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


try:
    _PAGE = os.sysconf("SC_PAGE_SIZE")
except (AttributeError, ValueError, OSError):      # pragma: no cover - not POSIX
    _PAGE = 4096
