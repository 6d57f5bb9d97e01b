"""Outgoing trunk streams: one per destination IP:port ("tpeer", docs/protocol.md §3.2).

A part of ``protocol.Endpoint`` (:class:`TrunkStreams`) that owns the streams and the rules of
sending them: each stream's ``TrunkMux`` collects voice entries and is flushed on the stream's
own ``trunkfreq`` grid, its trunk timestamps counted from the stream's epoch.  It is given the
endpoint's datagram queue (``out``, replaced at each flush), timer queue and counters.  The
endpoint (and the compiled batch sends, which add to ``by_addr``'s muxes directly) fill the
streams; :meth:`TrunkStreams.start` puts a stream that got its first entries on its grid.
"""

from __future__ import annotations

from collections import Counter

from iaxgw._core.constants import TS_SKEW_MS
from iaxgw._core.trunk import TrunkMux
from iaxgw.gateway.conf.model import General
from iaxgw.gateway.iax2.address import Addr
from iaxgw.gateway.iax2.timers import Timer, TimerQueue

__all__ = ["TRUNK_GRID_KEEP", "TRUNK_START_PHASE", "TrunkStream", "TrunkStreams"]


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


class TrunkStreams:
    """The endpoint's outgoing trunk streams by destination, and their flushes."""

    def __init__(self, general: General, out: list[tuple[bytes, Addr]], timers: TimerQueue,
                 stats: Counter[str]) -> None:
        #: streams by destination (the compiled batch sends look streams up here)
        self.by_addr: dict[Addr, TrunkStream] = {}
        #: the flush period (``trunkfreq``, clamped to 10..1000 ms), in seconds
        self.period = min(max(general.trunkfreq, 10), 1000) / 1000.0
        self._mtu = general.trunkmtu
        self._timestamps = general.trunktimestamps
        #: the endpoint's queue of datagrams to send; it hands a fresh one at each flush
        self.out = out
        self._timers = timers
        self._stats = stats

    def stream(self, addr: Addr) -> TrunkStream:
        """The stream towards ``addr``, made on first use."""
        st = self.by_addr.get(addr)
        if st is None:
            st = self.by_addr[addr] = TrunkStream(addr, TrunkMux(self._mtu, self._timestamps))
        return st

    def start(self, st: TrunkStream, now: float) -> None:
        """``st`` got entries: unless it is on its grid already, its first flush comes
        :data:`TRUNK_START_PHASE` of a period from ``now``."""
        if st.timer is None:
            st.next_at = now + self.period * TRUNK_START_PHASE
            st.timer = self._timers.schedule(st.next_at, self.flush, st)

    def flush(self, now: float, st: TrunkStream) -> None:
        """Send what ``st`` holds (its timer): docs/protocol.md §3.2, the trunk ts is ms since
        the stream epoch, snapped to last + trunkfreq within 160 ms, never repeated, 0 only when
        the stream (re)starts after > 5 s idle."""
        st.timer = None
        period = self.period
        mux = st.mux
        if not mux.pending:
            if now - st.last_send < TRUNK_GRID_KEEP:
                # nothing this tick, but the stream is live: keep its grid, so entries that
                # come just after a flush wait for the next tick of the same grid (a restart
                # would move the grid to their arrival and every echo would wait longer)
                st.next_at += period
                if st.next_at <= now:
                    st.next_at = now + period
                st.timer = self._timers.schedule(st.next_at, self.flush, st)
            return
        if st.epoch < 0 or now - st.last_send > 5.0:
            st.epoch = now
            st.last_ts = -1
        ms = int((now - st.epoch) * 1000.0)
        last = st.last_ts
        if last >= 0:
            pred = last + int(period * 1000)
            if -TS_SKEW_MS < ms - pred < TS_SKEW_MS:
                ms = pred
            if ms <= last:
                ms = last + 1
        st.last_ts = ms
        st.last_send = now
        addr = st.addr
        sent = mux.flush(ms & 0xFFFFFFFF)
        self.out += [(dg, addr) for dg in sent]
        self._count(sent)
        st.next_at += period
        if st.next_at <= now:
            st.next_at = now + period
        st.timer = self._timers.schedule(st.next_at, self.flush, st)

    def flush_all(self, now: float) -> int:
        """Flush now every stream that has entries waiting, instead of at its timer; returns
        how many trunk datagrams that queued.  Each stream's timer moves to half a period after
        this flush (where it finds nothing and only keeps the grid): the safety net for voice
        sent outside such calls."""
        out = self.out
        before = len(out)
        half = self.period * TRUNK_START_PHASE
        for st in self.by_addr.values():
            if not st.mux.pending:
                continue
            if st.timer is not None:
                st.timer.alive = False
            self.flush(now, st)
            if st.timer is not None:
                st.timer.alive = False
            st.next_at = now + half
            st.timer = self._timers.schedule(st.next_at, self.flush, st)
        return len(out) - before

    def _count(self, sent: list[bytes]) -> None:
        """One flush of a trunk stream: ``iax2 show stats``'s transmits (Asterisk counts one
        timed transmit per trunk peer and timer tick, empty ones too, and an untimed one each
        time the MTU filled before the tick; ours counts the flushes that sent, and the
        datagrams past the first of a flush the MTU split) and the largest trunk datagram sent
        (bytes)."""
        stats = self._stats
        n = len(sent)
        stats["trunk_datagrams_out"] += n
        stats["trunk_timed"] += 1
        if n > 1:
            stats["trunk_untimed"] += n - 1
        biggest = max(map(len, sent), default=0)
        if biggest > stats["trunk_max_datagram_bytes"]:
            stats["trunk_max_datagram_bytes"] = biggest
