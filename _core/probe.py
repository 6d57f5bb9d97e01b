"""The load tester's probes: payload stamps, per-call send and receive accounting, traffic census.

Dispatches to the compiled ``_probe_c`` or the pure-Python ``_probe_py`` (``IAXGW_NO_EXTENSIONS``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from iaxgw._core._select import load

_impl = load("probe")

if TYPE_CHECKING:
    from iaxgw._core._probe_c import (
        STAMP_BITS,
        STAMP_MIN_LEN,
        STAMP_WINDOW,
        RxProbe,
        TxProbe,
        datagram_census,
        read_stamp,
        stamp_matches,
        stamp_payload,
        tx_tick,
        unstamp,
    )
else:
    STAMP_BITS = _impl.STAMP_BITS
    STAMP_MIN_LEN = _impl.STAMP_MIN_LEN
    STAMP_WINDOW = _impl.STAMP_WINDOW
    RxProbe = _impl.RxProbe
    TxProbe = _impl.TxProbe
    datagram_census = _impl.datagram_census
    read_stamp = _impl.read_stamp
    stamp_matches = _impl.stamp_matches
    stamp_payload = _impl.stamp_payload
    tx_tick = _impl.tx_tick
    unstamp = _impl.unstamp

__all__ = [
    "STAMP_BITS",
    "STAMP_MIN_LEN",
    "STAMP_WINDOW",
    "RxProbe",
    "TxProbe",
    "datagram_census",
    "read_stamp",
    "stamp_matches",
    "stamp_payload",
    "tx_tick",
    "unstamp",
]
