"""Typed API of the batched UDP I/O, shared by ``_udp_c`` (Cython) and ``_udp_py`` (twin)."""

import socket
from typing import Any

SLOT: int
GRO_SLOT: int
DEFAULT_BATCH: int
ADDR_CACHE: int
GSO_MAX_SEGMENTS: int
GSO_MAX_BYTES: int

def gso_default() -> bool: ...

def gro_default() -> bool: ...

def enable_rx_timestamps(sock: socket.socket) -> bool: ...

class UdpIO:
    timestamps: bool
    send_errors: int
    last_send_error: str | None
    gso: bool
    gso_datagrams: int
    gro: bool
    gro_datagrams: int
    def __init__(self, sock: socket.socket, batch: int = ..., gso: bool | None = ...,
                 gro: bool | None = ...) -> None: ...
    @property
    def batch(self) -> int: ...
    @property
    def socket(self) -> socket.socket: ...
    def recv(self) -> list[tuple[bytes, tuple[str, int], float]]: ...
    def send(self, items: list[tuple[Any, Any]], start: int = 0) -> int: ...
