"""Typed API of the media half of the endpoint, shared by ``_media_c`` (Cython) and ``_media_py``
(twin)."""

import builtins
from collections.abc import Callable
from typing import Any

from iaxgw._core._probe_c import RxProbe, TxProbe
from iaxgw._core._trunk_c import TrunkMux

class RxStats:
    """Receive statistics of one call's voice stream (RFC 3550 jitter, loss from ts gaps)."""

    FIELDS: tuple[str, ...]
    frames: int
    bytes: int
    max_ts: int
    jitter: float
    jitter_max: float
    prev_transit: float
    lost: int
    ooo: int
    dup: int
    dropped: int
    ptime: int
    def __init__(self) -> None: ...
    def update(self, ts: int, nbytes: int, now: float) -> None: ...
    @property
    def loss_pct(self) -> int: ...

class CallMedia:
    """The media fields of a call record (base class of ``gateway.iax2.calls.Call``)."""

    callno: int
    state: Any
    addr: Any
    start: float
    codec: int
    format_rx: int
    svoiceformat: int
    rx_last: int
    last_voice_ts: int
    last_full_voice_ts: int
    nextpred: int
    lastsent: int
    tx_frames: int
    rx_early: int
    trunk: bool
    echo: bool
    rx: RxStats
    probe: RxProbe | None
    def __init__(self, *args: object, **kwargs: object) -> None: ...

def receive_trunk(data: bytes, calls: dict[int, Any], epoch: float, now: float,
                  sink: Callable[[int, int, bytes, float], object],
                  echo_mux: TrunkMux | None = None
                  ) -> tuple[int, int, int, int, bool, list[Any]]: ...

def next_voice_ts(call: CallMedia, now: float) -> int: ...

def voice_sent(call: CallMedia, ts: int, length: int) -> None: ...

def receive_mini(call: CallMedia, data: builtins.bytes, now: float,
                 sink: Callable[[int, int, bytes, float], object],
                 out: list[Any] | None = None) -> bool: ...

class TrunkRunTotals:
    index: int
    floor: float
    datagrams: int
    entries: int
    unknown: int
    inactive: int
    truncated: int
    mini: int
    mini_out: int
    def __init__(self, index: int = 0, floor: float = 0.0) -> None: ...

def receive_media_run(batch: list[tuple[builtins.bytes, Any, float]], loop_now: float,
                      by_addr: dict[Any, Any], epochs: dict[Any, float], sink: Any,
                      trunks: dict[Any, Any], echo_used: bool, max_datagram: int,
                      totals: TrunkRunTotals, acc: list[Any], out: list[Any] | None) -> None: ...

TRUNK_EPOCHS_MAX: int

def arrival_time(loop_now: float, age: float, floor: float) -> float: ...

def trunk_epoch(epochs: dict[Any, float], by_addr: dict[Any, Any], addr: Any, now: float,
                reset: bool) -> float: ...

def send_trunk_voice(calls: dict[int, Any], items: list[tuple[int, bytes]], now: float,
                     trunks: dict[Any, Any], out: list[Any] | None = None
                     ) -> tuple[list[tuple[int, bytes]], list[Any]]: ...
def tx_tick_send(probes: list[TxProbe], probe_now: float, calls: dict[int, Any], now: float,
                 trunks: dict[Any, Any], out: list[Any] | None = None
                 ) -> tuple[list[tuple[int, bytes]], list[Any]]: ...
