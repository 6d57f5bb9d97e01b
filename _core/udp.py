"""Batched UDP I/O (``recvmmsg``/``sendmmsg`` with kernel receive times) for the datagram server.

Dispatches to the compiled ``_udp_c`` or the pure-Python twin ``_udp_py`` (``IAXGW_NO_EXTENSIONS``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from iaxgw._core._select import load

_impl = load("udp")

if TYPE_CHECKING:
    from iaxgw._core._udp_c import (
        ADDR_CACHE,
        DEFAULT_BATCH,
        GRO_SLOT,
        GSO_MAX_BYTES,
        GSO_MAX_SEGMENTS,
        SLOT,
        UdpIO,
        enable_rx_timestamps,
        gro_default,
        gso_default,
    )
else:
    ADDR_CACHE = _impl.ADDR_CACHE
    DEFAULT_BATCH = _impl.DEFAULT_BATCH
    GSO_MAX_BYTES = _impl.GSO_MAX_BYTES
    GSO_MAX_SEGMENTS = _impl.GSO_MAX_SEGMENTS
    SLOT = _impl.SLOT
    GRO_SLOT = _impl.GRO_SLOT
    gso_default = _impl.gso_default
    gro_default = _impl.gro_default
    UdpIO = _impl.UdpIO
    enable_rx_timestamps = _impl.enable_rx_timestamps

__all__ = ["ADDR_CACHE", "DEFAULT_BATCH", "GRO_SLOT", "GSO_MAX_BYTES", "GSO_MAX_SEGMENTS", "SLOT",
           "UdpIO", "enable_rx_timestamps", "gro_default", "gso_default"]
