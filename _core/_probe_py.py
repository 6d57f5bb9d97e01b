"""Pure-Python twin of the load-tester probes; see ``_probe_c.pyi`` for the API.

The payload stamps of the echo test, the send side (``TxProbe``, ``tx_tick``) and the receive
side (``RxProbe``) of one load-test call, and the traffic census of a batch of datagrams.
"""

from __future__ import annotations

from typing import Any

from iaxgw._core._trunk_py import HEADER_LEN, Buffer, trunk_entry_stats

# ---------------------------------------------------------------------------------------------
# Frame stamps of the load tester's echo test: a 16-bit frame counter in the least significant
# bits of 16 fixed bytes of a G.711 payload (one quantisation step on 16 of 160 samples:
# inaudible, and the tone-pair signature is untouched).  An echo that passes payloads through
# bit for bit (Asterisk's Echo(), a native bridge) brings the counter back: every frame is told
# apart, so loss, duplicates and reordering are counted exactly whatever the timestamps say.

STAMP_BITS = 16
STAMP_MIN_LEN = 16       # shorter payloads are not stamped
STAMP_WINDOW = 1024      # frames behind the newest counter in which a duplicate is still told


def _stamp_positions(n: int) -> list[int]:
    return [(2 * j + 1) * n // 32 for j in range(STAMP_BITS)]


def stamp_payload(payload: Buffer, value: int) -> bytes:
    """``payload`` with ``value & 0xFFFF`` in the low bits of its 16 stamp bytes (bit j in byte
    ``(2j + 1) * len // 32``); a payload under 16 bytes is returned unchanged."""
    out = bytearray(payload)
    n = len(out)
    if n < STAMP_MIN_LEN:
        return bytes(out)
    for j, pos in enumerate(_stamp_positions(n)):
        out[pos] = (out[pos] & 0xFE) | ((value >> j) & 1)
    return bytes(out)


def read_stamp(payload: Buffer) -> int:
    """The 16-bit stamp of ``payload``; -1 when it is too short to carry one."""
    data = bytes(payload)
    n = len(data)
    if n < STAMP_MIN_LEN:
        return -1
    value = 0
    for j, pos in enumerate(_stamp_positions(n)):
        value |= (data[pos] & 1) << j
    return value


def unstamp(payload: Buffer) -> bytes:
    """``payload`` with the low bits of its stamp bytes cleared (compare with an unstamped
    frame the same way)."""
    return stamp_payload(payload, 0)


def stamp_matches(payload: Buffer, original: Buffer) -> bool:
    """``payload`` is ``original`` with some stamp: equal but for the stamp bits."""
    a, b = bytes(payload), bytes(original)
    if len(a) != len(b):
        return False
    if len(a) < STAMP_MIN_LEN:
        return a == b
    return unstamp(a) == unstamp(b)


def jitter_next(jitter: float, transit: float, prev_transit: float) -> float:
    """RFC 3550 interarrival jitter after one more packet (see ``_probe_c.pxd``)."""
    return jitter + (abs(transit - prev_transit) - jitter) * 0.0625


class TxProbe:
    """The load tester's send side of one call (see ``_probe_c.TxProbe``)."""

    __slots__ = ("bytes", "callno", "cycle", "frame_ms", "frames", "k", "marks", "offset",
                 "sent", "stamp", "t_first", "t_last")

    def __init__(self, cycle: list[bytes] | None = None, frame_ms: int = 20,
                 marks: Any = None, offset: int = 0) -> None:
        if frame_ms < 1:
            raise ValueError(f"frame_ms must be >= 1, got {frame_ms}")
        self.cycle: list[bytes] = cycle if cycle is not None else []
        self.frame_ms = frame_ms
        self.marks = marks
        self.offset = offset
        self.callno = 0
        self.k = 0
        self.frames = 0
        self.bytes = 0
        self.t_first = 0.0
        self.t_last = 0.0
        self.sent = False
        self.stamp = False

    def take(self, ts_ms: int, now: float) -> bytes:
        n = len(self.cycle)
        if not n:
            self.count(0, now)
            return b""
        i = (ts_ms // self.frame_ms + self.offset) % n
        if i == 0 and self.marks is not None:
            self.marks.append(now)
        payload = self.cycle[i]
        if self.stamp and len(payload) >= STAMP_MIN_LEN:
            payload = stamp_payload(payload, ts_ms // self.frame_ms)
        self.count(len(payload), now)
        return payload

    def count(self, nbytes: int, now: float) -> None:
        self.frames += 1
        self.bytes += nbytes
        self.t_last = now
        if not self.sent:
            self.sent = True
            self.t_first = now


def tx_tick(probes: list[TxProbe], now: float) -> list[tuple[int, bytes]]:
    """One media tick over ``TxProbe``s (see ``_probe_c.tx_tick``)."""
    items = []
    for probe in probes:
        k = probe.k
        probe.k = k + 1
        items.append((probe.callno, probe.take(k * 20, now)))
    return items


def datagram_census(items: list[Any]) -> tuple[int, int, int, int, int, int, int, int, int]:
    """A load tester's traffic counters for a list of datagrams (see ``_probe_c``)."""
    full = full_b = mini = mini_b = trunk = trunk_b = entries = entry_b = no_ts = 0
    for item in items:
        data = bytes(item[0])
        n = len(data)
        if n < 4:
            continue
        if data[0] & 0x80:
            full += 1
            full_b += n
        elif data[0] == 0 and data[1] == 0 and not data[2] & 0x80:
            trunk += 1
            trunk_b += n
            if not data[3] & 1:
                no_ts += 1
            if n < HEADER_LEN:
                continue
            count, payload = trunk_entry_stats(data)
            entries += count
            entry_b += payload
        else:
            mini += 1
            mini_b += n
    return full, full_b, mini, mini_b, trunk, trunk_b, entries, entry_b, no_ts


_MASK64 = (1 << 64) - 1


class RxProbe:
    """The load tester's receive accounting of one call (see ``_probe_c.RxProbe``)."""

    __slots__ = ("_ring", "bytes", "dropped", "duplicates", "exact_lost", "first", "firsts",
                 "frame_ms", "frames", "jitter", "jitter_max", "jitter_sum", "last", "limit",
                 "mask", "max_ts", "min_ts", "out_of_order", "own", "pending", "s_dup",
                 "s_frames", "s_hi", "s_jitter", "s_jitter_max", "s_jitter_sum", "s_lo", "s_ooo",
                 "s_strays", "s_transit", "seq_frames", "stamp_cycle", "stamp_offset",
                 "strays", "t_first", "t_last", "transit")

    def __init__(self, frame_ms: int = 20, keep: bool = True, limit: int = 300) -> None:
        if frame_ms < 1:
            raise ValueError(f"frame_ms must be >= 1, got {frame_ms}")
        self.frame_ms = frame_ms
        self.pending: list[tuple[int, float, bytes]] | None = [] if keep else None
        self.limit = limit if limit > 1 else 2
        self.own: frozenset[bytes] | None = None
        self.first: bytes | None = None
        self.strays: list[bytes] = []
        self.firsts: list[float] = []
        self.exact_lost = False
        self.last = -1
        self.frames = self.bytes = self.duplicates = self.out_of_order = 0
        self.max_ts = self.min_ts = self.dropped = 0
        self.jitter = self.jitter_max = self.jitter_sum = self.transit = 0.0
        self.t_first = self.t_last = 0.0
        self.mask = 0
        self.seq_frames = 0
        self.stamp_cycle: list[bytes] | None = None
        self.stamp_offset = 0
        self.s_frames = self.s_dup = self.s_ooo = self.s_lo = self.s_hi = self.s_strays = 0
        self.s_jitter = self.s_jitter_max = self.s_jitter_sum = self.s_transit = 0.0
        self._ring = bytearray(STAMP_WINDOW)

    def _stamp_rx(self, arrival: float, payload: bytes) -> int:
        """The stamp accounting of one frame; its cycle index, or -1 (not one of our frames)."""
        cycle = self.stamp_cycle
        assert cycle is not None
        v = read_stamp(payload)
        n = len(cycle)
        if v < 0 or not n:
            return -1
        hi = self.s_hi
        if self.s_frames:
            k = (hi & ~0xFFFF) | v
            if k > hi + 0x8000:
                k -= 0x10000
            elif k < hi - 0x8000:
                k += 0x10000
            if k < 0:
                return -1
        else:
            k = v
        idx = (k + self.stamp_offset) % n
        if not stamp_matches(payload, cycle[idx]):
            return -1
        ring = self._ring
        transit = arrival * 1000.0 - k * self.frame_ms
        if not self.s_frames:
            self.s_lo = self.s_hi = k
            ring[k % STAMP_WINDOW] = 1
        else:
            j = jitter_next(self.s_jitter, transit, self.s_transit)
            self.s_jitter = j
            self.s_jitter_sum += j
            if j > self.s_jitter_max:
                self.s_jitter_max = j
            if k > hi:
                if k - hi >= STAMP_WINDOW:
                    ring[:] = bytes(STAMP_WINDOW)
                else:
                    for c in range(hi + 1, k):
                        ring[c % STAMP_WINDOW] = 0
                ring[k % STAMP_WINDOW] = 1
                self.s_hi = k
            elif k > hi - STAMP_WINDOW:
                if ring[k % STAMP_WINDOW]:
                    self.s_dup += 1
                else:
                    ring[k % STAMP_WINDOW] = 1
                    self.s_ooo += 1
            else:
                self.s_ooo += 1
            if k < self.s_lo:
                self.s_lo = k
        self.s_transit = transit
        self.s_frames += 1
        return idx

    def on_rx(self, ts: int, arrival: float, payload: bytes, seq: bool = False) -> int:
        if seq:
            self.seq_frames += 1
            if self.last >= 0:
                ts = self.last + self.frame_ms
        if ts > self.last:
            self.last = ts
        self.frames += 1
        n = self.frames
        self.bytes += len(payload)
        self.t_last = arrival
        transit = arrival * 1000.0 - ts
        if n == 1:
            self.t_first = arrival
            self.max_ts = self.min_ts = ts
            self.mask = 1
        else:
            j = jitter_next(self.jitter, transit, self.transit)
            self.jitter = j
            self.jitter_sum += j
            if j > self.jitter_max:
                self.jitter_max = j
            fm = self.frame_ms
            hi = self.max_ts
            if ts > hi:
                k = (ts - hi + (fm >> 1)) // fm
                self.mask = ((self.mask << k) | 1) & _MASK64 if k < 64 else 1
                self.max_ts = ts
            else:
                i = (hi - ts + (fm >> 1)) // fm
                if i < 64:
                    bit = 1 << i
                    if self.mask & bit:
                        self.duplicates += 1
                    else:
                        self.mask |= bit
                        self.out_of_order += 1
                else:
                    self.out_of_order += 1
                if ts < self.min_ts:
                    self.min_ts = ts
        self.transit = transit
        idx = 0
        if self.stamp_cycle is not None:
            idx = self._stamp_rx(arrival, payload)
            if idx < 0:
                self.s_strays += 1
        pend = self.pending
        if pend is not None:
            pend.append((ts, arrival, payload))
            if self.stamp_cycle is not None:
                if idx < 0:
                    self.strays.append(payload)
                elif idx == 0:
                    self.firsts.append(arrival)
            elif self.own is not None:
                if payload not in self.own:
                    self.strays.append(payload)
                elif self.first is not None and payload == self.first:
                    self.firsts.append(arrival)
            if len(pend) >= self.limit:
                k = self.limit // 2
                del pend[:k]
                self.dropped += k
                self.exact_lost = True
        return ts

    @property
    def pending_count(self) -> int:
        """``len(pending)`` (0 when nothing is kept)."""
        return len(self.pending) if self.pending is not None else 0

    def take_exact(self) -> tuple[list[bytes], list[float], bool]:
        """``(strays, firsts, lost)`` since the last call, and start afresh (see ``_probe_c``)."""
        out = (self.strays, self.firsts, self.exact_lost)
        self.strays = []
        self.firsts = []
        self.exact_lost = False
        return out
