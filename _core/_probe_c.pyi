"""Typed API of the load-tester probes, shared by ``_probe_c`` (Cython) and ``_probe_py`` (twin)."""

import builtins
from typing import Any

from iaxgw._core._trunk_c import Buffer

class RxProbe:
    """The load tester's receive accounting of one call (jitter, loss window, payloads)."""

    frames: int
    bytes: int
    duplicates: int
    out_of_order: int
    max_ts: int
    min_ts: int
    last: int
    frame_ms: int
    dropped: int
    jitter: float
    jitter_max: float
    jitter_sum: float
    transit: float
    t_first: float
    t_last: float
    mask: int
    pending: list[tuple[int, float, builtins.bytes]] | None
    @property
    def pending_count(self) -> int: ...
    limit: int
    own: frozenset[builtins.bytes] | None
    first: builtins.bytes | None
    strays: list[builtins.bytes]
    firsts: list[float]
    exact_lost: bool
    seq_frames: int
    stamp_cycle: list[builtins.bytes] | None
    stamp_offset: int
    s_frames: int
    s_dup: int
    s_ooo: int
    s_lo: int
    s_hi: int
    s_strays: int
    s_jitter: float
    s_jitter_max: float
    s_jitter_sum: float
    s_transit: float
    def __init__(self, frame_ms: int = 20, keep: bool = True, limit: int = 300) -> None: ...
    def on_rx(self, ts: int, arrival: float, payload: builtins.bytes, seq: bool = False
              ) -> int: ...
    def take_exact(self) -> tuple[list[builtins.bytes], list[float], bool]: ...

class TxProbe:
    callno: int
    k: int
    cycle: list[builtins.bytes]
    offset: int
    frame_ms: int
    frames: int
    bytes: int
    t_first: float
    t_last: float
    sent: bool
    marks: Any
    stamp: bool
    def __init__(self, cycle: list[builtins.bytes] | None = None, frame_ms: int = 20,
                 marks: Any = None, offset: int = 0) -> None: ...
    def take(self, ts_ms: int, now: float) -> builtins.bytes: ...
    def count(self, nbytes: int, now: float) -> None: ...

STAMP_BITS: int
STAMP_MIN_LEN: int
STAMP_WINDOW: int

def stamp_payload(payload: Buffer, value: int) -> builtins.bytes: ...
def read_stamp(payload: Buffer) -> int: ...
def unstamp(payload: Buffer) -> builtins.bytes: ...
def stamp_matches(payload: Buffer, original: Buffer) -> bool: ...

def tx_tick(probes: list[TxProbe], now: float) -> list[tuple[int, builtins.bytes]]: ...

def datagram_census(items: list[Any]) -> tuple[int, int, int, int, int, int, int, int, int]: ...
