"""Pure-Python twin of ``_ies_c``: IAX2 information elements (docs/protocol.md §5).

Same API and the same error messages as the compiled module; see ``_ies_c.pyi``.
"""

from __future__ import annotations

import datetime
import socket
from collections.abc import Iterable
from typing import Any

from iaxgw._core.constants import IE_KINDS, IEKind, ie_name
from iaxgw._core.errors import FrameError

__all__ = ["build_ies", "decode_datetime", "encode_datetime", "parse_ies"]

_KINDS = tuple(int(k) for k in IE_KINDS)
_RAW = int(IEKind.RAW)
_STRING = int(IEKind.STRING)
_U8 = int(IEKind.U8)
_U16 = int(IEKind.U16)
_U32 = int(IEKind.U32)
_EMPTY = int(IEKind.EMPTY)
_OPT_STRING = int(IEKind.OPT_STRING)
_VERSIONED_U64 = int(IEKind.VERSIONED_U64)
_SOCKADDR = int(IEKind.SOCKADDR)
_DATETIME = int(IEKind.DATETIME)
_WIDTH = {_U8: 1, _U16: 2, _U32: 4, _DATETIME: 4}
_ZERO8 = bytes(8)
_ZERO4 = bytes(4)


def decode_datetime(value: int) -> datetime.datetime:
    """Unpack a DATETIME u32 (sec/2, min, hour, mday, month, year-2000) into a naive datetime."""
    try:
        return datetime.datetime(
            2000 + (value >> 25),
            (value >> 21) & 0x0F,
            (value >> 16) & 0x1F,
            (value >> 11) & 0x1F,
            (value >> 5) & 0x3F,
            (value & 0x1F) * 2,
        )
    except ValueError:
        raise FrameError(f"invalid DATETIME fields {value:#010x}") from None


def encode_datetime(value: datetime.datetime) -> int:
    """Pack a datetime's fields (as given, seconds rounded down to even) into a DATETIME u32."""
    year = value.year - 2000
    if not 0 <= year <= 127:
        raise FrameError(f"DATETIME year {value.year} out of range 2000..2127")
    return (
        (year << 25)
        | (value.month << 21)
        | (value.day << 16)
        | (value.hour << 11)
        | (value.minute << 5)
        | (value.second >> 1)
    )


def _sockaddr(v: bytes) -> tuple[str, int] | bytes:
    ln = len(v)
    family = v[0] | v[1] << 8 if ln >= 2 else -1
    port = v[2] << 8 | v[3] if ln >= 4 else 0
    if ln == 16 and family == 2 and v[8:16] == _ZERO8:
        return socket.inet_ntop(socket.AF_INET, v[4:8]), port
    if ln == 28 and family == 10 and v[4:8] == _ZERO4 and v[24:28] == _ZERO4:
        return socket.inet_ntop(socket.AF_INET6, v[8:24]), port
    return v


def parse_ies(payload: Any) -> list[tuple[int, object]]:
    """Parse the IEs of an IAX frame payload into ``(id, value)`` pairs in wire order."""
    data = bytes(payload)
    n = len(data)
    out: list[tuple[int, object]] = []
    # Structure first (the lengths must tile the payload), then the values.
    i = 0
    while i < n:
        if n - i < 2:
            raise FrameError("truncated IE header: 1 byte left", i)
        ln = data[i + 1]
        if ln > n - i - 2:
            raise FrameError(
                f"{ie_name(data[i])} length {ln} overruns the payload ({n - i - 2} bytes left)", i
            )
        i += 2 + ln
    i = 0
    while i < n:
        ie = data[i]
        ln = data[i + 1]
        v = data[i + 2 : i + 2 + ln]
        kind = _KINDS[ie]
        value: object
        if kind == _STRING:
            value = v.decode("utf-8", "surrogateescape")
        elif kind in (_U8, _U16, _U32, _DATETIME):
            if ln != _WIDTH[kind]:
                raise FrameError(f"{ie_name(ie)} must be {_WIDTH[kind]} bytes, got {ln}", i)
            value = int.from_bytes(v, "big")
            if kind == _DATETIME:
                try:
                    value = decode_datetime(value)
                except FrameError as exc:
                    raise FrameError(exc.reason, i) from None
        elif kind == _EMPTY:
            if ln != 0:
                raise FrameError(f"{ie_name(ie)} must be empty, got {ln} bytes", i)
            value = None
        elif kind == _OPT_STRING:
            value = v.decode("utf-8", "surrogateescape") if ln else None
        elif kind == _VERSIONED_U64:
            if ln and v[0] == 0:
                if ln != 9:
                    raise FrameError(f"{ie_name(ie)} version 0 must be 9 bytes, got {ln}", i)
                value = int.from_bytes(v[1:], "big")
            else:
                value = v
        elif kind == _SOCKADDR:
            value = _sockaddr(v)
        else:
            value = v
        out.append((ie, value))
        i += 2 + ln
    return out


def _uint(ie: int, value: Any, width: int) -> bytes:
    if not isinstance(value, int):
        raise FrameError(f"{ie_name(ie)} needs an int or bytes, not {type(value).__name__}")
    if not 0 <= value < 1 << (8 * width):
        raise FrameError(f"{ie_name(ie)} value {value} does not fit in {8 * width} bits")
    return int(value).to_bytes(width, "big")


def _encode_sockaddr(ie: int, value: Any) -> bytes:
    if not (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    ):
        raise FrameError(f"{ie_name(ie)} needs a (host, port) tuple or bytes")
    host: str = value[0]
    port: int = value[1]
    if not 0 <= port <= 0xFFFF:
        raise FrameError(f"{ie_name(ie)} port {port} out of range 0..65535")
    try:
        addr4 = socket.inet_pton(socket.AF_INET, host)
    except (OSError, ValueError):
        pass
    else:
        return b"\x02\x00" + port.to_bytes(2, "big") + addr4 + _ZERO8
    try:
        addr6 = socket.inet_pton(socket.AF_INET6, host)
    except (OSError, ValueError):
        raise FrameError(f"{ie_name(ie)} host {host!r} is not an IPv4 or IPv6 address") from None
    return b"\x0a\x00" + port.to_bytes(2, "big") + _ZERO4 + addr6 + _ZERO4


def _encode(ie: int, value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    kind = _KINDS[ie]
    if kind in (_STRING, _OPT_STRING):
        if isinstance(value, str):
            return value.encode("utf-8", "surrogateescape")
        if value is None and kind == _OPT_STRING:
            return b""
        raise FrameError(f"{ie_name(ie)} needs a str or bytes, not {type(value).__name__}")
    if kind in (_U8, _U16, _U32):
        return _uint(ie, value, _WIDTH[kind])
    if kind == _EMPTY:
        if value is None:
            return b""
        raise FrameError(f"{ie_name(ie)} needs None or bytes, not {type(value).__name__}")
    if kind == _VERSIONED_U64:
        return b"\x00" + _uint(ie, value, 8)
    if kind == _DATETIME:
        if isinstance(value, datetime.datetime):
            return encode_datetime(value).to_bytes(4, "big")
        return _uint(ie, value, 4)
    if kind == _SOCKADDR:
        return _encode_sockaddr(ie, value)
    raise FrameError(f"{ie_name(ie)} needs bytes, not {type(value).__name__}")


def build_ies(items: Iterable[tuple[int, object]]) -> bytes:
    """Encode ``(id, value)`` pairs; the inverse of :func:`parse_ies`."""
    out = bytearray()
    for item in items:
        try:
            ie, value = item
        except (TypeError, ValueError):
            raise FrameError(f"IE item must be an (id, value) pair, not {item!r}") from None
        if not isinstance(ie, int) or not 0 <= ie <= 255:
            raise FrameError(f"IE id {ie!r} is not an int in 0..255")
        body = _encode(ie, value)
        if len(body) > 255:
            raise FrameError(f"{ie_name(ie)} value is {len(body)} bytes, more than 255")
        out.append(ie)
        out.append(len(body))
        out += body
    return bytes(out)
