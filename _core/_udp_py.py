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
DEFAULT_BATCH = 64
ADDR_CACHE = 4096

__all__ = ["ADDR_CACHE", "DEFAULT_BATCH", "SLOT", "UdpIO", "enable_rx_timestamps"]

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

    def __init__(self, sock: _socket.socket, batch: int = DEFAULT_BATCH) -> None:
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
        for _ in range(self._batch):
            try:
                data, anc, _flags, addr = sock.recvmsg(SLOT, _ANC, _socket.MSG_DONTWAIT)
            except _WOULD_BLOCK:
                break
            except OSError:
                if out:
                    break
                raise
            stamp = -1.0
            for level, kind, blob in anc:
                if (level == _socket.SOL_SOCKET and kind == _SCM_TIMESTAMPNS
                        and len(blob) >= _TIMESPEC.size):
                    sec, nsec = _TIMESPEC.unpack_from(blob)
                    stamp = sec + nsec * 1e-9
            stamps.append(stamp)
            out.append((data[:SLOT], (str(addr[0]), int(addr[1])), 0.0))
        if out:
            now_real = time.time()
            out = [(d, a, now_real - s if 0.0 < s < now_real else 0.0)
                   for (d, a, _), s in zip(out, stamps, strict=True)]
        return out

    def send(self, items: list[tuple[Any, Any]], start: int = 0) -> int:
        if start < 0:
            raise ValueError("start must be >= 0")
        sock = self._sock
        n = len(items)
        i = start
        while i < n:
            data, addr = items[i]
            try:
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
                sock.sendto(data, (host, port))
            except _WOULD_BLOCK:
                return i
            except OSError as exc:
                if exc.errno == getattr(os, "ENOBUFS", 105):
                    return i
                self.send_errors += 1
                self.last_send_error = f"{addr!r}: {exc.strerror or exc}"
            except (TypeError, ValueError, IndexError, UnicodeError, OverflowError):
                self.send_errors += 1
                self.last_send_error = f"cannot send to {addr!r}"
            i += 1
        return n
