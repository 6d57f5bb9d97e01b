"""Outgoing trunk streams: one per destination IP:port ("tpeer", docs/protocol.md §3.2).

The endpoint (``protocol.Endpoint``) fills each stream's ``TrunkMux`` with voice and flushes
it on the stream's 20 ms grid.
"""

from __future__ import annotations

from iaxgw._core.trunk import TrunkMux
from iaxgw.gateway.iax2.address import Addr
from iaxgw.gateway.iax2.timers import Timer

__all__ = ["TRUNK_GRID_KEEP", "TRUNK_START_PHASE", "TrunkStream"]


#: How long a trunk stream's flush timer keeps its 20 ms grid after the last datagram (s).
TRUNK_GRID_KEEP = 0.2
#: A trunk stream's first flush comes this share of ``trunkfreq`` after the voice that started
#: it, and its grid keeps that phase.  Voice on a 20 ms grid of its own (our media ticker, or a
#: peer's trunk that we echo) then meets flushes half a period away from it: each frame waits
#: the same ~10 ms every time.  A whole period would put both grids on the same instant, where
#: scheduling noise sends a frame out in this flush or the next (20 ms of jitter).
TRUNK_START_PHASE = 0.5


class TrunkStream:
    """One outgoing trunk stream ("tpeer") per destination IP:port (docs/protocol.md §3.2)."""

    __slots__ = ("addr", "epoch", "last_send", "last_ts", "mux", "next_at", "timer")

    def __init__(self, addr: Addr, mux: TrunkMux) -> None:
        self.addr = addr
        self.mux = mux
        self.epoch = -1.0
        self.last_ts = -1
        self.last_send = -1e18
        self.next_at = 0.0
        self.timer: Timer | None = None
