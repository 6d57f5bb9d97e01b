"""Pure-Python twin of ``_udp_c``: batched UDP I/O over ``socket.recvmsg`` / ``sendto``.

Same contract as the compiled module (see ``_udp_c.pyx``): ``recv()`` returns up to ``batch``
waiting datagrams with their age since the kernel stamped them (``SO_TIMESTAMPNS``), ``send()``
stops at the first datagram that would block and skips (and counts) the ones the kernel refuses.
"""

from __future__ import annotations

import os
import socket as _socket
import struct
import time
from typing import Any

SLOT = 4352
GRO_SLOT = 65536
DEFAULT_BATCH = 64
ADDR_CACHE = 4096
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 63000

__all__ = ["ADDR_CACHE", "DEFAULT_BATCH", "GRO_SLOT", "GSO_MAX_BYTES", "GSO_MAX_SEGMENTS", "SLOT",
           "UdpIO", "enable_rx_timestamps", "gro_default", "gso_default"]

_UDP_SEGMENT = getattr(_socket, "UDP_SEGMENT", 103)
_UDP_GRO = getattr(_socket, "UDP_GRO", 104)
_GRO_SIZE = struct.Struct("@i")
_SEG = struct.Struct("@H")
_NO_GSO_ERRNOS = frozenset(getattr(os, name) for name in
                           ("EIO", "EINVAL", "EMSGSIZE", "EOPNOTSUPP", "ENOPROTOOPT")
                           if hasattr(os, name))


def gso_default() -> bool:
    """As compiled: segment on send unless ``IAXGW_NO_GSO`` is set (Linux only)."""
    import sys
    return sys.platform.startswith("linux") and os.environ.get("IAXGW_NO_GSO", "") in ("", "0")

def gro_default() -> bool:
    """As compiled: coalesced receives unless ``IAXGW_NO_GRO`` is set (Linux only)."""
    import sys
    return sys.platform.startswith("linux") and os.environ.get("IAXGW_NO_GRO", "") in ("", "0")


# Linux's value where the socket module does not name it (Python < 3.13)
_SO_TIMESTAMPNS = getattr(_socket, "SO_TIMESTAMPNS", 35 if _socket.__dict__.get("AF_NETLINK")
                          else None)
_SCM_TIMESTAMPNS = getattr(_socket, "SCM_TIMESTAMPNS", _SO_TIMESTAMPNS)
_TIMESPEC = struct.Struct("@qq")
_ANC = _socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(_socket, "CMSG_SPACE") else 0
_WOULD_BLOCK = (BlockingIOError, InterruptedError)


def enable_rx_timestamps(sock: _socket.socket) -> bool:
    """Ask the kernel to stamp every received datagram (``SO_TIMESTAMPNS``); False if it can't."""
    if _SO_TIMESTAMPNS is None:
        return False
    try:
        sock.setsockopt(_socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


class UdpIO:
    """Batched receive and send on one non-blocking UDP socket."""

    def __init__(self, sock: _socket.socket, batch: int = DEFAULT_BATCH,
                 gso: bool | None = None, gro: bool | None = None) -> None:
        if not 1 <= batch <= 1024:
            raise ValueError(f"batch must be 1..1024, got {batch}")
        if (sock.family not in (_socket.AF_INET, _socket.AF_INET6)
                or sock.type != _socket.SOCK_DGRAM):
            raise ValueError("UdpIO needs an AF_INET or AF_INET6 datagram socket")
        self._sock = sock
        self._batch = batch
        self._v6 = sock.family == _socket.AF_INET6
        self._family = sock.family
        self.timestamps = enable_rx_timestamps(sock)
        self.send_errors = 0
        self.last_send_error: str | None = None
        self.gso = gso_default() if gso is None else bool(gso)
        self.gso_datagrams = 0
        # set either way, as compiled: the option stays with the socket
        want_gro = gro_default() if gro is None else bool(gro)
        self.gro = False
        try:
            sock.setsockopt(_socket.IPPROTO_UDP, _UDP_GRO, 1 if want_gro else 0)
            self.gro = want_gro
        except OSError:
            pass
        self.gro_datagrams = 0
        self._slot = GRO_SLOT if self.gro else SLOT
        self._anc = _ANC + (_socket.CMSG_SPACE(_GRO_SIZE.size) if self.gro else 0)

    @property
    def batch(self) -> int:
        return self._batch

    @property
    def socket(self) -> _socket.socket:
        return self._sock

    def recv(self) -> list[tuple[bytes, tuple[str, int], float]]:
        out: list[tuple[bytes, tuple[str, int], float]] = []
        sock = self._sock
        stamps: list[float] = []
        slot, gro = self._slot, self.gro
        for _ in range(self._batch):
            try:
                data, anc, _flags, addr = sock.recvmsg(slot, self._anc, _socket.MSG_DONTWAIT)
            except _WOULD_BLOCK:
                break
            except OSError:
                if out:
                    break
                raise
            stamp = -1.0
            seg = 0
            for level, kind, blob in anc:
                if (level == _socket.SOL_SOCKET and kind == _SCM_TIMESTAMPNS
                        and len(blob) >= _TIMESPEC.size):
                    sec, nsec = _TIMESPEC.unpack_from(blob)
                    stamp = sec + nsec * 1e-9
                elif (gro and level == _socket.IPPROTO_UDP and kind == _UDP_GRO
                        and len(blob) >= _GRO_SIZE.size):
                    seg = max(0, _GRO_SIZE.unpack_from(blob)[0])
            data = data[:slot]
            name = (str(addr[0]), int(addr[1]))
            if 0 < seg < len(data):     # coalesced: the datagrams, seg bytes each
                for off in range(0, len(data), seg):
                    stamps.append(stamp)
                    out.append((data[off:off + seg], name, 0.0))
                    self.gro_datagrams += 1
            else:
                stamps.append(stamp)
                out.append((data, name, 0.0))
        if out:
            now_real = time.time()
            out = [(d, a, now_real - s if 0.0 < s < now_real else 0.0)
                   for (d, a, _), s in zip(out, stamps, strict=True)]
        return out

    def _target(self, addr: Any) -> tuple[str, int]:
        host, port = addr[0], addr[1]
        if not isinstance(host, str) or not isinstance(port, int):
            raise TypeError
        if not 0 <= port <= 0xFFFF:
            raise ValueError(port)
        if self._v6 and ":" not in host:
            host = "::ffff:" + host        # an IPv4 peer on a dual-stack socket
        try:                                     # numeric addresses only, as compiled
            _socket.inet_pton(self._family, host)
        except OSError:
            raise ValueError(host) from None
        return host, port

    def _run(self, items: list[tuple[Any, Any]], i: int, seg: int, addr: Any) -> int:
        """How many of ``items[i:]`` one segmented send can carry (as compiled)."""
        n, cnt, total = len(items), 1, seg
        while i + cnt < n and cnt < GSO_MAX_SEGMENTS and cnt < self._batch:
            d2, a2 = items[i + cnt]
            if not isinstance(d2, bytes):
                break
            size = len(d2)
            if size == 0 or size > seg or total + size > GSO_MAX_BYTES or a2 != addr:
                break
            cnt += 1
            total += size
            if size < seg:
                break
        return cnt

    def send(self, items: list[tuple[Any, Any]], start: int = 0) -> int:
        if start < 0:
            raise ValueError("start must be >= 0")
        sock = self._sock
        n = len(items)
        i = start
        while i < n:
            data, addr = items[i]
            cnt = 1
            try:
                target = self._target(addr)
                seg = len(data)
                if self.gso and 0 < seg <= 0xFFFF:
                    cnt = self._run(items, i, seg, addr)
                if cnt > 1:
                    try:
                        sock.sendmsg([bytes(d) for d, _ in items[i:i + cnt]],
                                     [(_socket.IPPROTO_UDP, _UDP_SEGMENT, _SEG.pack(seg))],
                                     _socket.MSG_DONTWAIT, target)
                    except OSError as exc:
                        if exc.errno in _NO_GSO_ERRNOS:
                            self.gso = False    # no segmentation here: one by one
                            continue
                        raise
                    self.gso_datagrams += cnt
                else:
                    sock.sendto(data, target)
            except _WOULD_BLOCK:
                return i
            except OSError as exc:
                if exc.errno == getattr(os, "ENOBUFS", 105):
                    return i
                self.send_errors += 1
                self.last_send_error = f"{addr!r}: {exc.strerror or exc}"
                cnt = 1
            except (TypeError, ValueError, IndexError, UnicodeError, OverflowError):
                self.send_errors += 1
                self.last_send_error = f"cannot send to {addr!r}"
                cnt = 1
            i += cnt
        return n
