"""IAX2 trunk (meta) frames: multiplexer, parser and demultiplexer (docs/protocol.md §3).

Dispatches to the compiled ``_trunk_c`` or the pure-Python ``_trunk_py`` (``IAXGW_NO_EXTENSIONS``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from iaxgw._core._select import load

_impl = load("trunk")

if TYPE_CHECKING:
    from iaxgw._core._trunk_c import (
        ENTRY_LEN,
        ENTRY_TS_LEN,
        HEADER_LEN,
        MAX_CALLNO,
        MAX_PAYLOAD,
        META_TRUNK,
        TrunkDemux,
        TrunkFrame,
        TrunkMux,
        pack_trunk,
        parse_trunk,
        trunk_entry_stats,
    )
else:
    ENTRY_LEN = _impl.ENTRY_LEN
    ENTRY_TS_LEN = _impl.ENTRY_TS_LEN
    HEADER_LEN = _impl.HEADER_LEN
    MAX_CALLNO = _impl.MAX_CALLNO
    MAX_PAYLOAD = _impl.MAX_PAYLOAD
    META_TRUNK = _impl.META_TRUNK
    TrunkDemux = _impl.TrunkDemux
    TrunkFrame = _impl.TrunkFrame
    TrunkMux = _impl.TrunkMux
    pack_trunk = _impl.pack_trunk
    parse_trunk = _impl.parse_trunk
    trunk_entry_stats = _impl.trunk_entry_stats

__all__ = [
    "ENTRY_LEN",
    "ENTRY_TS_LEN",
    "HEADER_LEN",
    "MAX_CALLNO",
    "MAX_PAYLOAD",
    "META_TRUNK",
    "TrunkDemux",
    "TrunkFrame",
    "TrunkMux",
    "pack_trunk",
    "parse_trunk",
    "trunk_entry_stats",
]
