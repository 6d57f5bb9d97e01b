"""Pure-Python twin of ``_frames_c``: IAX2 full, mini and video mini frames.

Wire layout: docs/protocol.md §1, §2, §8.  Same API and the same error messages as the compiled
module; see ``_frames_c.pyi``.
"""

from __future__ import annotations

import struct
from typing import Any

from iaxgw._core.errors import FrameError

__all__ = [
    "FullFrame",
    "build_full",
    "build_mini",
    "build_video_mini",
    "classify",
    "compress_subclass",
    "parse_full",
    "parse_mini",
    "parse_video_mini",
    "uncompress_subclass",
]

_FULL = struct.Struct(">HHIBBBB")
_MINI = struct.Struct(">HH")
_VMINI = struct.Struct(">HHH")

_TOO_SHORT = 0
_KIND_FULL = 1
_KIND_MINI = 2
_KIND_VIDEO_MINI = 3
_KIND_META = 4
_VIDEO = 3


def _view(data: Any) -> memoryview:
    """A flat byte view of ``data`` (bytes, bytearray, memoryview or other buffer)."""
    mv = memoryview(data)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    return mv


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if not isinstance(value, int):
        raise FrameError(f"{name} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise FrameError(f"{name} {value} out of range {lo}..{hi}")
    return int(value)


def _check_payload(payload: Any) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(_view(payload))
    raise FrameError(f"payload must be bytes-like, not {type(payload).__name__}")


def classify(data: Any) -> int:
    """The DatagramKind of a received datagram, in Asterisk's demux order."""
    mv = _view(data)
    if len(mv) < 4:
        return _TOO_SHORT
    if mv[0] == 0 and mv[1] == 0:
        return _KIND_VIDEO_MINI if mv[2] & 0x80 else _KIND_META
    if mv[0] & 0x80:
        return _KIND_FULL
    return _KIND_MINI


def compress_subclass(value: int) -> int:
    """Encode a subclass as the csub byte: < 0x80 raw, power of two as 0x80|log2, -1 as 0xFF."""
    if not isinstance(value, int):
        raise FrameError(f"subclass must be an int, not {type(value).__name__}")
    if value == -1:
        return 0xFF
    if value < 0:
        raise FrameError(f"subclass {value} cannot be encoded (negative)")
    if value < 0x80:
        return int(value)
    if value & (value - 1):
        raise FrameError(f"subclass {value:#x} cannot be encoded (>= 0x80 and not a power of two)")
    shift = value.bit_length() - 1
    if shift > 0x3F:
        raise FrameError(f"subclass {value:#x} cannot be encoded (shift {shift} > 63)")
    return 0x80 | shift


def uncompress_subclass(byte: int) -> int:
    """Decode a csub byte: 0xFF -> -1, C bit -> 1 << (byte & 0x3F), else the byte itself."""
    if not isinstance(byte, int):
        raise FrameError(f"csub must be an int, not {type(byte).__name__}")
    if not 0 <= byte <= 0xFF:
        raise FrameError(f"csub {byte} out of range 0..255")
    if byte == 0xFF:
        return -1
    if byte & 0x80:
        return 1 << (byte & 0x3F)
    return int(byte)


class FullFrame:
    """A parsed or to-be-sent IAX2 full frame; ``csub`` is the raw subclass byte."""

    __slots__ = (
        "csub",
        "dcallno",
        "frametype",
        "iseqno",
        "oseqno",
        "payload",
        "retransmit",
        "scallno",
        "ts",
    )
    __hash__ = None  # type: ignore[assignment]

    scallno: int
    dcallno: int
    retransmit: bool
    ts: int
    oseqno: int
    iseqno: int
    frametype: int
    csub: int
    payload: bytes

    def __init__(
        self,
        scallno: int,
        dcallno: int,
        ts: int,
        oseqno: int,
        iseqno: int,
        frametype: int,
        csub: int,
        payload: bytes | bytearray | memoryview = b"",
        retransmit: bool = False,
    ) -> None:
        self.scallno = _check_int("scallno", scallno, 0, 0x7FFF)
        self.dcallno = _check_int("dcallno", dcallno, 0, 0x7FFF)
        self.ts = _check_int("ts", ts, 0, 0xFFFFFFFF)
        self.oseqno = _check_int("oseqno", oseqno, 0, 0xFF)
        self.iseqno = _check_int("iseqno", iseqno, 0, 0xFF)
        self.frametype = _check_int("frametype", frametype, 0, 0xFF)
        self.csub = _check_int("csub", csub, 0, 0xFF)
        self.payload = _check_payload(payload)
        self.retransmit = bool(retransmit)

    @property
    def subclass(self) -> int:
        """The decoded subclass (for VIDEO frames without the end-of-frame marker bit)."""
        if self.frametype == _VIDEO:
            return uncompress_subclass(self.csub & 0xBF)
        return uncompress_subclass(self.csub)

    @property
    def video_marker(self) -> bool:
        """End-of-frame marker of a VIDEO frame (csub bit 0x40); False for other types."""
        return self.frametype == _VIDEO and bool(self.csub & 0x40)

    def to_bytes(self) -> bytes:
        """Serialize; the exact inverse of :func:`parse_full`."""
        scallno = _check_int("scallno", self.scallno, 0, 0x7FFF)
        dcallno = _check_int("dcallno", self.dcallno, 0, 0x7FFF)
        ts = _check_int("ts", self.ts, 0, 0xFFFFFFFF)
        oseqno = _check_int("oseqno", self.oseqno, 0, 0xFF)
        iseqno = _check_int("iseqno", self.iseqno, 0, 0xFF)
        frametype = _check_int("frametype", self.frametype, 0, 0xFF)
        csub = _check_int("csub", self.csub, 0, 0xFF)
        payload = _check_payload(self.payload)
        word1 = dcallno | 0x8000 if self.retransmit else dcallno
        return _FULL.pack(scallno | 0x8000, word1, ts, oseqno, iseqno, frametype, csub) + payload

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FullFrame):
            return NotImplemented
        return (
            self.scallno == other.scallno
            and self.dcallno == other.dcallno
            and self.ts == other.ts
            and self.oseqno == other.oseqno
            and self.iseqno == other.iseqno
            and self.frametype == other.frametype
            and self.csub == other.csub
            and self.payload == other.payload
            and bool(self.retransmit) == bool(other.retransmit)
        )

    def __repr__(self) -> str:
        return (
            f"FullFrame(scallno={self.scallno}, dcallno={self.dcallno}, ts={self.ts}, "
            f"oseqno={self.oseqno}, iseqno={self.iseqno}, frametype={self.frametype}, "
            f"csub={self.csub:#04x}, payload={self.payload!r}, "
            f"retransmit={bool(self.retransmit)})"
        )


def parse_full(data: Any) -> FullFrame:
    """Parse a full frame datagram; the payload is copied to ``bytes``."""
    mv = _view(data)
    n = len(mv)
    if n < 12:
        raise FrameError(f"full frame needs a 12-byte header, got {n} bytes", 0)
    w0, w1, ts, oseq, iseq, ftype, csub = _FULL.unpack_from(mv)
    if not w0 & 0x8000:
        raise FrameError("F bit clear: not a full frame", 0)
    f = FullFrame.__new__(FullFrame)
    f.scallno = w0 & 0x7FFF
    f.dcallno = w1 & 0x7FFF
    f.retransmit = bool(w1 & 0x8000)
    f.ts = ts
    f.oseqno = oseq
    f.iseqno = iseq
    f.frametype = ftype
    f.csub = csub
    f.payload = bytes(mv[12:])
    return f


def build_full(
    scallno: int,
    dcallno: int,
    ts: int,
    oseqno: int,
    iseqno: int,
    frametype: int,
    subclass: int,
    payload: bytes | bytearray | memoryview = b"",
    retransmit: bool = False,
) -> bytes:
    """Build a full frame datagram; ``subclass`` is encoded with :func:`compress_subclass`."""
    s = _check_int("scallno", scallno, 0, 0x7FFF)
    d = _check_int("dcallno", dcallno, 0, 0x7FFF)
    t = _check_int("ts", ts, 0, 0xFFFFFFFF)
    o = _check_int("oseqno", oseqno, 0, 0xFF)
    i = _check_int("iseqno", iseqno, 0, 0xFF)
    ft = _check_int("frametype", frametype, 0, 0xFF)
    csub = compress_subclass(subclass)
    body = _check_payload(payload)
    if retransmit:
        d |= 0x8000
    return _FULL.pack(s | 0x8000, d, t, o, i, ft, csub) + body


def parse_mini(data: Any) -> tuple[int, int, memoryview]:
    """Parse a voice mini frame: (source callno, ts16, payload view without copy)."""
    mv = _view(data)
    n = len(mv)
    if n < 4:
        raise FrameError(f"mini frame needs a 4-byte header, got {n} bytes", 0)
    w0, ts16 = _MINI.unpack_from(mv)
    if w0 & 0x8000:
        raise FrameError("F bit set: not a mini frame", 0)
    if w0 == 0:
        raise FrameError("mini frame with call number 0", 0)
    return w0, ts16, mv[4:]


def build_mini(callno: int, ts16: int, payload: bytes | bytearray | memoryview) -> bytes:
    """Build a voice mini frame."""
    c = _check_int("callno", callno, 1, 0x7FFF)
    t = _check_int("ts16", ts16, 0, 0xFFFF)
    return _MINI.pack(c, t) + _check_payload(payload)


def parse_video_mini(data: Any) -> tuple[int, int, bool, memoryview]:
    """Parse a video mini frame: (source callno, ts15, end-of-frame marker, payload view)."""
    mv = _view(data)
    n = len(mv)
    if n < 6:
        raise FrameError(f"video mini frame needs a 6-byte header, got {n} bytes", 0)
    w0, w1, w2 = _VMINI.unpack_from(mv)
    if w0 != 0:
        raise FrameError("video mini frame must start with 0x0000", 0)
    if not w1 & 0x8000:
        raise FrameError("video mini frame needs bit 15 of word 1 set (else a meta frame)", 2)
    if not w1 & 0x7FFF:
        raise FrameError("video mini frame with call number 0", 2)
    return w1 & 0x7FFF, w2 & 0x7FFF, bool(w2 & 0x8000), mv[6:]


def build_video_mini(
    callno: int, ts15: int, payload: bytes | bytearray | memoryview, marker: bool = False
) -> bytes:
    """Build a video mini frame (ts is the low 15 bits; ``marker`` = end of video frame)."""
    c = _check_int("callno", callno, 1, 0x7FFF)
    t = _check_int("ts15", ts15, 0, 0x7FFF)
    if marker:
        t |= 0x8000
    return _VMINI.pack(0, c | 0x8000, t) + _check_payload(payload)
