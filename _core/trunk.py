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
        STAMP_BITS,
        STAMP_MIN_LEN,
        STAMP_WINDOW,
        CallMedia,
        RxProbe,
        RxStats,
        TrunkDemux,
        TrunkFrame,
        TrunkMux,
        TrunkRunTotals,
        TxProbe,
        datagram_census,
        next_voice_ts,
        pack_trunk,
        parse_trunk,
        read_stamp,
        receive_media_run,
        receive_mini,
        receive_trunk,
        send_trunk_voice,
        stamp_matches,
        stamp_payload,
        trunk_entry_stats,
        trunk_epoch,
        tx_tick,
        tx_tick_send,
        unstamp,
        voice_sent,
    )
else:
    META_TRUNK = _impl.META_TRUNK
    HEADER_LEN = _impl.HEADER_LEN
    ENTRY_LEN = _impl.ENTRY_LEN
    ENTRY_TS_LEN = _impl.ENTRY_TS_LEN
    MAX_PAYLOAD = _impl.MAX_PAYLOAD
    MAX_CALLNO = _impl.MAX_CALLNO
    TrunkFrame = _impl.TrunkFrame
    TrunkMux = _impl.TrunkMux
    TrunkRunTotals = _impl.TrunkRunTotals
    TxProbe = _impl.TxProbe
    tx_tick = _impl.tx_tick
    tx_tick_send = _impl.tx_tick_send
    STAMP_BITS = _impl.STAMP_BITS
    STAMP_MIN_LEN = _impl.STAMP_MIN_LEN
    STAMP_WINDOW = _impl.STAMP_WINDOW
    stamp_payload = _impl.stamp_payload
    read_stamp = _impl.read_stamp
    unstamp = _impl.unstamp
    stamp_matches = _impl.stamp_matches
    datagram_census = _impl.datagram_census
    TrunkDemux = _impl.TrunkDemux
    pack_trunk = _impl.pack_trunk
    parse_trunk = _impl.parse_trunk
    RxStats = _impl.RxStats
    RxProbe = _impl.RxProbe
    CallMedia = _impl.CallMedia
    receive_trunk = _impl.receive_trunk
    receive_media_run = _impl.receive_media_run
    trunk_epoch = _impl.trunk_epoch
    receive_mini = _impl.receive_mini
    next_voice_ts = _impl.next_voice_ts
    voice_sent = _impl.voice_sent
    send_trunk_voice = _impl.send_trunk_voice
    trunk_entry_stats = _impl.trunk_entry_stats

__all__ = [
    "ENTRY_LEN",
    "ENTRY_TS_LEN",
    "HEADER_LEN",
    "MAX_CALLNO",
    "MAX_PAYLOAD",
    "META_TRUNK",
    "STAMP_BITS",
    "STAMP_MIN_LEN",
    "STAMP_WINDOW",
    "CallMedia",
    "RxProbe",
    "RxStats",
    "TrunkDemux",
    "TrunkFrame",
    "TrunkMux",
    "TrunkRunTotals",
    "TxProbe",
    "datagram_census",
    "next_voice_ts",
    "pack_trunk",
    "parse_trunk",
    "read_stamp",
    "receive_media_run",
    "receive_mini",
    "receive_trunk",
    "send_trunk_voice",
    "stamp_matches",
    "stamp_payload",
    "trunk_entry_stats",
    "trunk_epoch",
    "tx_tick",
    "tx_tick_send",
    "unstamp",
    "voice_sent",
]
