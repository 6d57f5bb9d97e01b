"""The media half of the endpoint: receive and send paths of voice, and their statistics.

Dispatches to the compiled ``_media_c`` or the pure-Python ``_media_py`` (``IAXGW_NO_EXTENSIONS``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from iaxgw._core._select import load

_impl = load("media")

if TYPE_CHECKING:
    from iaxgw._core._media_c import (
        TRUNK_EPOCHS_MAX,
        CallMedia,
        RxStats,
        TrunkRunTotals,
        arrival_time,
        next_voice_ts,
        receive_media_run,
        receive_mini,
        receive_trunk,
        send_trunk_voice,
        trunk_epoch,
        tx_tick_send,
        voice_sent,
    )
else:
    TRUNK_EPOCHS_MAX = _impl.TRUNK_EPOCHS_MAX
    CallMedia = _impl.CallMedia
    RxStats = _impl.RxStats
    TrunkRunTotals = _impl.TrunkRunTotals
    arrival_time = _impl.arrival_time
    next_voice_ts = _impl.next_voice_ts
    receive_media_run = _impl.receive_media_run
    receive_mini = _impl.receive_mini
    receive_trunk = _impl.receive_trunk
    send_trunk_voice = _impl.send_trunk_voice
    trunk_epoch = _impl.trunk_epoch
    tx_tick_send = _impl.tx_tick_send
    voice_sent = _impl.voice_sent

__all__ = [
    "TRUNK_EPOCHS_MAX",
    "CallMedia",
    "RxStats",
    "TrunkRunTotals",
    "arrival_time",
    "next_voice_ts",
    "receive_media_run",
    "receive_mini",
    "receive_trunk",
    "send_trunk_voice",
    "trunk_epoch",
    "tx_tick_send",
    "voice_sent",
]
