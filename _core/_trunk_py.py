"""Pure-Python twin of the IAX2 trunk (meta) frame codec; see ``_trunk_c.pyi`` for the API.

Wire layout (docs/protocol.md §3; Asterisk ``ast_iax2_meta_hdr`` + ``ast_iax2_meta_trunk_hdr``)::

    0-1  0x0000                      (meta frame marker)
    2    V:1 | metacmd:7             must be exactly 0x01 (TRUNK); V set = video mini frame
    3    cmddata                     0 = entries without timestamps, 1 = with 16-bit timestamps
    4-7  u32 trunk timestamp
    8..  entries until the end of the datagram:
         cmddata 0: callno:u16 · len:u16 · payload[len]
         cmddata 1: len:u16 · callno:u16 · ts:u16 · payload[len]

Asterisk accepts only cmddata 0 or 1 (anything else: "unknown meta trunk cmd", dropped) and stops
at the first entry whose header or payload runs past the datagram.  The call number is taken with
its top bit masked (``callno & 0x7FFF``), as Asterisk does.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

from iaxgw._core.constants import TS_SKEW_MS, UNWRAP_MS, CallState
from iaxgw._core.errors import FrameError

META_TRUNK = 1
HEADER_LEN = 8
ENTRY_LEN = 4
ENTRY_TS_LEN = 6
MAX_PAYLOAD = 0xFFFF
MAX_CALLNO = 0x7FFF
MIN_MTU = 16
MAX_MTU = 0xFFFF

_HDR = struct.Struct(">HBBI")
_MINI_HDR = struct.Struct(">HH")
_U16X2 = struct.Struct(">HH")
_U16X3 = struct.Struct(">HHH")

Buffer = bytes | bytearray | memoryview
Entry = tuple[int, int | None, memoryview]


class TrunkFrame:
    """One parsed trunk datagram: ``trunk_ts``, ``timestamps``, ``entries``, ``truncated``."""

    __slots__ = ("entries", "timestamps", "truncated", "trunk_ts")

    def __init__(
        self, trunk_ts: int, timestamps: bool, entries: list[Entry], truncated: bool
    ) -> None:
        self.trunk_ts = trunk_ts
        self.timestamps = timestamps
        self.entries = entries
        self.truncated = truncated

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrunkFrame):
            return NotImplemented
        return (
            self.trunk_ts == other.trunk_ts
            and self.timestamps == other.timestamps
            and self.truncated == other.truncated
            and self.entries == other.entries
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"TrunkFrame(trunk_ts={self.trunk_ts}, timestamps={self.timestamps}, "
            f"entries={len(self.entries)}, truncated={self.truncated})"
        )


def _byte_view(data: object, what: str) -> memoryview:
    try:
        mv = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{what} must be a bytes-like object, not {type(data).__name__}"
        ) from None
    if not mv.c_contiguous:
        raise FrameError(f"{what} buffer is not C-contiguous")
    if mv.format == "B" and mv.ndim == 1:
        return mv
    return mv.cast("B")


def _check_u32(value: object, what: str) -> int:
    if not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value <= 0xFFFFFFFF:
        raise FrameError(f"{what} {value} out of range 0..4294967295")
    return value


def parse_trunk(data: Buffer) -> TrunkFrame:
    """Parse one trunk meta datagram; payloads are views into ``data`` (no copy)."""
    mv = _byte_view(data, "trunk datagram")
    n = len(mv)
    if n < HEADER_LEN:
        raise FrameError(f"trunk datagram too short: {n} bytes, need 8", n)
    zeros, metacmd, cmddata, trunk_ts = _HDR.unpack_from(mv, 0)
    if zeros != 0:
        raise FrameError(f"not a meta frame: first word is 0x{zeros:04x}, not 0x0000", 0)
    if metacmd & 0x80:
        raise FrameError("not a meta frame: V bit set (video mini frame)", 2)
    if metacmd != META_TRUNK:
        raise FrameError(f"meta command {metacmd} is not TRUNK (1)", 2)
    if cmddata > 1:
        raise FrameError(f"unknown trunk cmddata 0x{cmddata:02x} (expected 0 or 1)", 3)
    entries: list[Entry] = []
    pos = HEADER_LEN
    truncated = False
    if cmddata:
        while pos < n:
            if n - pos < ENTRY_TS_LEN:
                truncated = True
                break
            length, callno, ts = _U16X3.unpack_from(mv, pos)
            start = pos + ENTRY_TS_LEN
            end = start + length
            if end > n:
                truncated = True
                break
            entries.append((callno & MAX_CALLNO, ts, mv[start:end]))
            pos = end
    else:
        while pos < n:
            if n - pos < ENTRY_LEN:
                truncated = True
                break
            callno, length = _U16X2.unpack_from(mv, pos)
            start = pos + ENTRY_LEN
            end = start + length
            if end > n:
                truncated = True
                break
            entries.append((callno & MAX_CALLNO, None, mv[start:end]))
            pos = end
    return TrunkFrame(trunk_ts, bool(cmddata), entries, truncated)


class TrunkMux:
    """Buffers voice payloads of many calls and emits trunk datagrams on ``flush``.

    A new datagram is started when the current one (header and entries) plus the next entry
    would reach ``mtu`` bytes; every datagram is therefore at most ``mtu`` bytes.  An entry that
    alone would exceed ``mtu`` raises ``FrameError`` in ``add``.  ``mtu = 0`` means no limit.
    """

    __slots__ = ("_bodies", "_cur", "_entry_len", "_pending", "_timestamps", "mtu")

    def __init__(self, mtu: int = 1240, timestamps: bool = False) -> None:
        if not isinstance(mtu, int):
            raise TypeError(f"mtu must be an int, not {type(mtu).__name__}")
        if mtu != 0 and not MIN_MTU <= mtu <= MAX_MTU:
            raise FrameError(f"mtu {mtu} out of range: 0 (no limit) or {MIN_MTU}..{MAX_MTU}")
        self.mtu = mtu
        self._timestamps = bool(timestamps)
        self._entry_len = ENTRY_TS_LEN if self._timestamps else ENTRY_LEN
        self._bodies: list[bytearray] = []
        self._cur = bytearray()
        self._pending = 0

    @property
    def timestamps(self) -> bool:
        return self._timestamps

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def pending_bytes(self) -> int:
        total = sum(len(b) + HEADER_LEN for b in self._bodies)
        if self._cur:
            total += len(self._cur) + HEADER_LEN
        return total

    def add(self, callno: int, ts: int, payload: Buffer) -> None:
        if not isinstance(callno, int):
            raise TypeError(f"callno must be an int, not {type(callno).__name__}")
        if not 1 <= callno <= MAX_CALLNO:
            raise FrameError(f"call number {callno} out of range 1..32767")
        _check_u32(ts, "timestamp")
        mv = _byte_view(payload, "payload")
        length = len(mv)
        if length > MAX_PAYLOAD:
            raise FrameError(f"payload of {length} bytes exceeds 65535")
        size = self._entry_len + length
        mtu = self.mtu
        if mtu:
            if HEADER_LEN + size > mtu:
                raise FrameError(
                    f"trunk entry of {size} bytes does not fit in mtu {mtu} with the 8-byte header"
                )
            if self._cur and HEADER_LEN + len(self._cur) + size >= mtu:
                self._bodies.append(self._cur)
                self._cur = bytearray()
        cur = self._cur
        if self._timestamps:
            cur += _U16X3.pack(length, callno, ts & 0xFFFF)
        else:
            cur += _U16X2.pack(callno, length)
        cur += mv
        self._pending += 1

    def flush(self, trunk_ts: int) -> list[bytes]:
        _check_u32(trunk_ts, "trunk timestamp")
        if not self._pending:
            return []
        header = _HDR.pack(0, META_TRUNK, 1 if self._timestamps else 0, trunk_ts)
        bodies = self._bodies
        if self._cur:
            bodies.append(self._cur)
        out = [header + bytes(b) for b in bodies]
        self._bodies = []
        self._cur = bytearray()
        self._pending = 0
        return out


def pack_trunk(
    entries: Iterable[tuple[int, int, Buffer]],
    trunk_ts: int,
    timestamps: bool = False,
    mtu: int = 1240,
) -> list[bytes]:
    """Build the trunk datagrams for ``entries`` = ``(callno, ts, payload)`` in order."""
    _check_u32(trunk_ts, "trunk timestamp")
    mux = TrunkMux(mtu, timestamps)
    for callno, ts, payload in entries:
        mux.add(callno, ts, payload)
    return mux.flush(trunk_ts)


class TrunkDemux:
    """Parses trunk datagrams and keeps counters: datagrams, entries, truncated, errors."""

    __slots__ = ("datagrams", "entries", "errors", "truncated")

    def __init__(self) -> None:
        self.datagrams = 0
        self.entries = 0
        self.truncated = 0
        self.errors = 0

    def feed(self, data: Buffer) -> TrunkFrame:
        try:
            frame = parse_trunk(data)
        except FrameError:
            self.errors += 1
            raise
        self.datagrams += 1
        self.entries += len(frame.entries)
        if frame.truncated:
            self.truncated += 1
        return frame


# ---------------------------------------------------------------------------------------------
# The trunk receive hot path of the protocol core (twin of the compiled section of the same
# name): per entry, find the call, unwrap its timestamp, account it and hand the payload to the
# media sink, or, for a call that echoes, straight back into the trunk multiplexer of its peer.

_TS_SKEW_MS = TS_SKEW_MS
_UNWRAP_MS = UNWRAP_MS
_ST_ACCEPTED = int(CallState.ACCEPTED)
_ST_UP = int(CallState.UP)
_BPMS = {0x40: 16, 0x8000: 32}


class RxStats:
    """Receive statistics of one call's voice stream (RFC 3550 jitter, loss from ts gaps)."""

    __slots__ = ("bytes", "dropped", "dup", "frames", "jitter", "jitter_max", "lost", "max_ts",
                 "ooo", "prev_transit", "ptime")
    FIELDS = __slots__

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0
        self.max_ts = -1
        self.jitter = 0.0
        self.jitter_max = 0.0
        self.prev_transit = 0.0
        self.lost = 0
        self.ooo = 0
        self.dup = 0
        self.dropped = 0
        self.ptime = 20

    def update(self, ts: int, nbytes: int, now: float) -> None:
        """Account one received voice frame with (unwrapped) ``ts`` arriving at ``now``."""
        self.frames += 1
        self.bytes += nbytes
        transit = now * 1000.0 - ts
        if self.frames > 1:
            d = transit - self.prev_transit
            if d < 0:
                d = -d
            j = self.jitter + (d - self.jitter) * 0.0625
            self.jitter = j
            if j > self.jitter_max:
                self.jitter_max = j
        self.prev_transit = transit
        top = self.max_ts
        if ts > top:
            if top >= 0:
                ptime = self.ptime
                if ptime > 0:
                    gap = ts - top - ptime
                    if gap >= ptime:
                        self.lost += gap // ptime
            self.max_ts = ts
        elif ts == top:
            self.dup += 1
        else:
            self.ooo += 1
            if self.lost:
                self.lost -= 1

    @property
    def loss_pct(self) -> int:
        total = self.frames + self.lost
        return (self.lost * 100) // total if total else 0


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


class TxProbe:
    """The load tester's send side of one call (see ``_trunk_c.TxProbe``)."""

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
    """One media tick over ``TxProbe``s (see ``_trunk_c.tx_tick``)."""
    items = []
    for probe in probes:
        k = probe.k
        probe.k = k + 1
        items.append((probe.callno, probe.take(k * 20, now)))
    return items


def datagram_census(items: list[Any]) -> tuple[int, int, int, int, int, int, int, int, int]:
    """A load tester's traffic counters for a list of datagrams (see ``_trunk_c``)."""
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


def trunk_entry_stats(data: Buffer) -> tuple[int, int]:
    """``(entries, payload bytes)`` of a meta trunk datagram (see ``_trunk_c``)."""
    data = bytes(data)
    n = len(data)
    if n < HEADER_LEN:
        return 0, 0
    with_ts = data[3] & 1
    hdr = ENTRY_TS_LEN if with_ts else ENTRY_LEN
    pos, count, payload = HEADER_LEN, 0, 0
    while pos + hdr <= n:
        length = (data[pos] << 8 | data[pos + 1]) if with_ts else (data[pos + 2] << 8
                                                                    | data[pos + 3])
        pos += hdr + length
        if pos > n:
            break
        count += 1
        payload += length
    return count, payload


class RxProbe:
    """The load tester's receive accounting of one call (see ``_trunk_c.RxProbe``)."""

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
            d = abs(transit - self.s_transit)
            j = self.s_jitter + (d - self.s_jitter) * 0.0625
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
            d = abs(transit - self.transit)
            j = self.jitter + (d - self.jitter) * 0.0625
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
        """``(strays, firsts, lost)`` since the last call, and start afresh (see ``_trunk_c``)."""
        out = (self.strays, self.firsts, self.exact_lost)
        self.strays = []
        self.firsts = []
        self.exact_lost = False
        return out


_MASK64 = (1 << 64) - 1


class CallMedia:
    """The media fields of a call record (base class of ``gateway.iax2.calls.Call``)."""

    __slots__ = ("addr", "callno", "codec", "echo", "format_rx", "last_full_voice_ts",
                 "last_voice_ts", "lastsent", "nextpred", "probe", "rx", "rx_last", "start",
                 "state", "svoiceformat", "trunk", "tx_frames")

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.callno = 0
        self.state: object = 0
        self.addr: object = None
        self.start = 0.0
        self.codec = 0
        self.format_rx = 0
        self.svoiceformat = 0
        self.rx_last = 0
        self.last_voice_ts = -1
        self.last_full_voice_ts = 0
        self.nextpred = 0
        self.lastsent = 0
        self.tx_frames = 0
        self.trunk = False
        self.echo = False
        self.rx = RxStats()
        self.probe: RxProbe | None = None


def next_voice_ts(call: CallMedia, now: float) -> int:
    """The timestamp of ``call``'s next voice payload sent at ``now``: the predicted one while
    within the skew, else now snapped down to 20 ms (never repeating the last)."""
    ms = int((now - call.start) * 1000.0)
    pred = call.nextpred
    if call.last_voice_ts < 0 or not -_TS_SKEW_MS <= ms - pred <= _TS_SKEW_MS:
        ts = ms - ms % 20
        return call.last_voice_ts + 20 if ts <= call.last_voice_ts else ts
    return pred


def voice_sent(call: CallMedia, ts: int, length: int) -> None:
    """Account one voice payload of ``length`` bytes sent with ``ts``."""
    call.nextpred = ts + length // _BPMS.get(call.codec, 8)
    call.last_voice_ts = ts
    call.tx_frames += 1
    call.lastsent = ts


def receive_trunk(data: Buffer, calls: dict[int, CallMedia], epoch: float, now: float,
                  sink: object, echo_mux: TrunkMux | None = None
                  ) -> tuple[int, int, int, int, bool, list[CallMedia]]:
    """Account and deliver the entries of one trunk datagram (see ``_trunk_c.receive_trunk``)."""
    frame = parse_trunk(bytes(data))
    trunk_ts = frame.trunk_ts
    unknown = inactive = echoed = 0
    vnak: list[CallMedia] = []
    deliver = sink
    for callno, ts16, view in frame.entries:
        call = calls.get(callno)
        if not isinstance(call, CallMedia):
            unknown += 1
            continue
        st = call.state
        if not call.format_rx or st > _ST_UP:  # type: ignore[operator]
            inactive += 1
            if not call.format_rx:
                vnak.append(call)
            continue
        last = call.rx_last
        if ts16 is not None:
            ts = (last & 0xFFFF0000) | ts16
            if ts < last - _UNWRAP_MS:
                ts += 0x10000
            elif ts > last + _UNWRAP_MS and ts >= 0x10000:
                ts -= 0x10000
        else:
            ts = trunk_ts + int((epoch - call.start) * 1000.0)
            if ts < 0:
                ts = 0
        if ts > last:
            call.rx_last = ts
        length = len(view)
        if call.rx is not None:
            call.rx.update(ts, length, now)
        mux = echo_mux
        if (mux is not None and call.echo and call.trunk and call.svoiceformat == call.codec
                and _ST_ACCEPTED <= st <= _ST_UP  # type: ignore[operator]
                and (mux.mtu == 0 or HEADER_LEN + (ENTRY_TS_LEN if mux.timestamps
                                                   else ENTRY_LEN) + length <= mux.mtu)):
            # gateway.iax2.protocol.Endpoint.send_voice (its trunk branch), for the echoed payload
            out_ts = next_voice_ts(call, now)
            if 0 <= out_ts <= 0xFFFFFFFF:
                voice_sent(call, out_ts, length)
                mux.add(call.callno, out_ts, view)
                echoed += 1
                continue
        if call.probe is not None:
            call.probe.on_rx(ts, now, view.tobytes(), ts16 is None)
            continue
        deliver(call.callno, ts, view.tobytes(), now)  # type: ignore[operator]
    return len(frame.entries), unknown, inactive, echoed, frame.truncated, vnak


def _mini_frame(callno: int, ts: int, payload: bytes) -> bytes:
    return _MINI_HDR.pack(callno & 0x7FFF, ts & 0xFFFF) + payload


def _mini_ok(call: CallMedia, ts: int) -> bool:
    return (call.svoiceformat == call.codec and call.last_voice_ts >= 0
            and (ts >> 16) - (call.last_voice_ts >> 16) < 2)


def _receive_mini(call: CallMedia, data: bytes, now: float, sink: Any,
                  out: list[Any] | None) -> bool:
    """The mini-frame branch of ``receive_datagram`` (see ``_trunk_c._receive_mini``)."""
    last = call.rx_last
    ts = (last & 0xFFFF0000) | (data[2] << 8) | data[3]
    if ts < last - _UNWRAP_MS:
        ts += 0x10000
    elif ts > last + _UNWRAP_MS and ts >= 0x10000:
        ts -= 0x10000
    if ts > last:
        call.rx_last = ts
    payload = data[4:]
    length = len(payload)
    if call.rx is not None:
        call.rx.update(ts, length, now)
    if call.echo and not call.trunk and out is not None \
            and _ST_ACCEPTED <= call.state <= _ST_UP:  # type: ignore[operator]
        ets = next_voice_ts(call, now)
        if 0 <= ets <= 0xFFFFFFFF and _mini_ok(call, ets):
            voice_sent(call, ets, length)
            out.append((_mini_frame(call.callno, ets, payload), call.addr))
            return True
    if call.probe is not None:
        call.probe.on_rx(ts, now, payload, False)
        return False
    sink(call.callno, ts, payload, now)
    return False


def receive_mini(call: CallMedia, data: bytes, now: float, sink: Any,
                 out: list[Any] | None = None) -> bool:
    """``receive_datagram``'s mini-frame branch for an active call (see ``_trunk_c``)."""
    data = bytes(data)
    if len(data) < 4:
        raise FrameError("mini frame shorter than 4 bytes")
    return _receive_mini(call, data, now, sink, out)


class TrunkRunTotals:
    """What ``receive_media_run`` took (see ``_trunk_c.TrunkRunTotals``)."""

    __slots__ = ("datagrams", "entries", "floor", "inactive", "index", "mini", "mini_out",
                 "truncated", "unknown")

    def __init__(self, index: int = 0, floor: float = 0.0) -> None:
        self.index = index
        self.floor = floor
        self.datagrams = 0
        self.entries = 0
        self.unknown = 0
        self.inactive = 0
        self.truncated = 0
        self.mini = 0
        self.mini_out = 0


#: Receive epochs kept for trunk sources without calls, at most (see ``trunk_epoch``).
TRUNK_EPOCHS_MAX = 4096


def trunk_epoch(epochs: dict[Any, float], by_addr: dict[Any, Any], addr: Any, now: float,
                reset: bool) -> float:
    """The receive epoch of ``addr``'s trunk stream (see ``_trunk_c.trunk_epoch``)."""
    ep = epochs.get(addr)
    if ep is not None and not reset:
        return ep
    if ep is None and len(epochs) >= TRUNK_EPOCHS_MAX:
        if not by_addr.get(addr):
            return now
        for a in [a for a in epochs if not by_addr.get(a)]:
            del epochs[a]
    epochs[addr] = now
    return now


def receive_media_run(batch: list[tuple[bytes, Any, float]], loop_now: float,
                      by_addr: dict[Any, Any], epochs: dict[Any, float], sink: object,
                      trunks: dict[Any, Any], echo_used: bool, max_datagram: int,
                      totals: TrunkRunTotals, acc: list[Any], out: list[Any] | None) -> None:
    """The server's batch from ``totals.index``: trunk datagrams and mini frames of active
    calls (see ``_trunk_c.receive_media_run``)."""
    i, n = totals.index, len(batch)
    floor = totals.floor
    while i < n:
        data, addr, age = batch[i]
        if type(data) is not bytes:
            break
        size = len(data)
        if size < 4 or size > max_datagram:
            break
        if data[0] < 0x80 and (data[0] or data[1]):
            calls = by_addr.get(addr)
            if calls is None:
                break
            call = calls.get((data[0] << 8) | data[1])
            if not isinstance(call, CallMedia) or not call.format_rx \
                    or call.state > _ST_UP:  # type: ignore[operator]
                break
            now = loop_now - age
            if now < floor:
                now = floor
            floor = now
            totals.floor = now
            echoed = _receive_mini(call, data, now, sink, out)
            i += 1
            totals.index = i
            totals.mini += 1
            if echoed:
                totals.mini_out += 1
            continue
        if size < HEADER_LEN or data[0] != 0 or data[1] != 0 or data[2] != 1 or data[3] > 1:
            break
        calls = by_addr.get(addr)
        st = None
        if echo_used:
            st = trunks.get(addr)
            if st is None and calls:
                break
        now = loop_now - age
        if now < floor:
            now = floor
        floor = now
        totals.floor = now
        ep = trunk_epoch(epochs, by_addr, addr, now, int.from_bytes(data[4:8], "big") == 0)
        mux = st.mux if st is not None else None
        entries, unknown, inactive, echoed_n, truncated, vnak = receive_trunk(
            data, calls if calls is not None else {}, ep, now, sink, mux)
        i += 1
        totals.index = i
        totals.datagrams += 1
        totals.entries += entries
        totals.unknown += unknown
        totals.inactive += inactive
        if truncated:
            totals.truncated += 1
        if vnak or (echoed_n and st is not None and st.timer is None):
            acc.append((addr, now, vnak, echoed_n))


def send_trunk_voice(calls: dict[int, CallMedia], items: list[tuple[int, bytes]], now: float,
                     trunks: dict[object, object], out: list[Any] | None = None
                     ) -> tuple[list[tuple[int, bytes]], list[object]]:
    """The trunk (and with ``out``, the mini) branch of ``send_voice`` for many calls (see
    ``_trunk_c.send_trunk_voice``)."""
    rest: list[tuple[int, bytes]] = []
    streams: list[object] = []
    seen: set[int] = set()
    for item in items:
        callno, payload = item
        call = calls.get(callno)
        if not isinstance(call, CallMedia) or type(payload) is not bytes:
            rest.append(item)
            continue
        st = call.state
        if not call.trunk and out is not None \
                and _ST_ACCEPTED <= st <= _ST_UP:  # type: ignore[operator]
            ts = next_voice_ts(call, now)
            if 0 <= ts <= 0xFFFFFFFF and _mini_ok(call, ts):
                voice_sent(call, ts, len(payload))
                out.append((_mini_frame(call.callno, ts, payload), call.addr))
            else:
                rest.append(item)
            continue
        if not (call.trunk and _ST_ACCEPTED <= st <= _ST_UP  # type: ignore[operator]
                and call.svoiceformat == call.codec and call.last_voice_ts >= 0):
            rest.append(item)
            continue
        stream = trunks.get(call.addr)
        mux = getattr(stream, "mux", None)
        if not isinstance(mux, TrunkMux):
            rest.append(item)
            continue
        n = len(payload)
        if mux.mtu and HEADER_LEN + (ENTRY_TS_LEN if mux.timestamps else ENTRY_LEN) + n > mux.mtu:
            rest.append(item)
            continue
        ts = next_voice_ts(call, now)
        if not 0 <= ts <= 0xFFFFFFFF:
            rest.append(item)
            continue
        mux.add(call.callno, ts, payload)
        voice_sent(call, ts, n)
        if id(stream) not in seen:
            seen.add(id(stream))
            streams.append(stream)
    return rest, streams


def tx_tick_send(probes: list[TxProbe], probe_now: float, calls: dict[int, CallMedia],
                 now: float, trunks: dict[object, object], out: list[Any] | None = None
                 ) -> tuple[list[tuple[int, bytes]], list[object]]:
    """One media tick sent (see ``_trunk_c.tx_tick_send``): what ``tx_tick`` then
    ``send_trunk_voice`` do."""
    return send_trunk_voice(calls, tx_tick(probes, probe_now), now, trunks, out)
