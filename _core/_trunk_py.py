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
