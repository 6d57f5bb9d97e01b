"""Our own CPU use, as a percentage of one core over the last interval (``os.times``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads) so far."""
    t = os.times()
    return t.user + t.system


class CpuMeter:
    """``sample()`` returns the CPU % (100 = one core busy) since the previous sample, or None
    when no wall time has passed.  Both clocks are injectable for tests."""

    __slots__ = ("_clock", "_cpu", "_last_cpu", "_last_wall", "last_pct")

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 cpu: Callable[[], float] = cpu_seconds) -> None:
        self._clock = clock
        self._cpu = cpu
        self._last_wall = clock()
        self._last_cpu = cpu()
        self.last_pct: float | None = None

    def sample(self) -> float | None:
        wall, used = self._clock(), self._cpu()
        dt = wall - self._last_wall
        if dt <= 0:
            return self.last_pct
        pct = 100.0 * max(0.0, used - self._last_cpu) / dt
        self._last_wall, self._last_cpu = wall, used
        self.last_pct = pct
        return pct
