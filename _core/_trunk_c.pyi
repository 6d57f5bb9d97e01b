"""Typed API of the trunk codec, shared by ``_trunk_c`` (Cython) and ``_trunk_py`` (twin).

Trunk meta datagram (docs/protocol.md §3): ``00 00 | 01 | cmddata | trunk_ts:u32`` then entries.
cmddata 0: ``callno:u16 len:u16 payload``; cmddata 1: ``len:u16 callno:u16 ts:u16 payload``.

Errors: malformed datagrams and out-of-range values raise ``iaxgw._core.errors.FrameError``
(a ``ValueError`` with ``.offset``); objects that are not bytes-like / not ints raise ``TypeError``.
"""

import builtins
from collections.abc import Callable, Iterable
from typing import Any

class PayloadView:
    """Read-only zero-copy view of one entry's payload inside the parsed datagram (compiled core;
    the twin returns a ``memoryview`` slice, which behaves the same for these uses).

    ``len``, ``bytes()``, ``tobytes()``, ``hex()``, indexing, ``==`` with any bytes-like object,
    the buffer protocol (read-only, format ``B``: ``memoryview(p)``, G.711 codecs, ``mux.add``),
    ``release()`` and ``with``.  Not picklable.
    """

    @property
    def nbytes(self) -> int: ...
    @property
    def readonly(self) -> bool: ...
    def __len__(self) -> int: ...
    def __bytes__(self) -> bytes: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def tobytes(self) -> bytes: ...
    def hex(self, *args: object) -> str: ...
    def __getitem__(self, key: int) -> int: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...
    def release(self) -> None: ...
    def __enter__(self) -> PayloadView: ...
    def __exit__(self, *exc: object) -> None: ...

Payload = memoryview | PayloadView
Buffer = bytes | bytearray | memoryview | PayloadView

META_TRUNK: int
HEADER_LEN: int
ENTRY_LEN: int
ENTRY_TS_LEN: int
MAX_PAYLOAD: int
MAX_CALLNO: int
MIN_MTU: int
MAX_MTU: int

class TrunkFrame:
    """A parsed trunk datagram.

    ``entries`` holds ``(callno, ts16 or None, payload)`` in wire order; ``callno`` has its top
    bit masked off (as Asterisk does); payloads are views into the input without copying it
    (``PayloadView`` in the compiled core, ``memoryview`` in the twin; keep the input unchanged
    while you use them — each view keeps it alive).  ``truncated`` is True when parsing
    stopped at an entry whose header or payload runs past the end; the entries before it are kept.
    """

    trunk_ts: int
    timestamps: bool
    entries: list[tuple[int, int | None, Payload]]
    truncated: bool
    def __init__(
        self,
        trunk_ts: int,
        timestamps: bool,
        entries: list[tuple[int, int | None, Payload]],
        truncated: bool,
    ) -> None: ...
    def __eq__(self, other: object) -> bool: ...

def parse_trunk(data: Buffer) -> TrunkFrame:
    """Parse one trunk datagram.

    FrameError when it is not a trunk meta frame: shorter than 8 bytes, first word not zero,
    V bit set (video mini), metacmd not 1, or cmddata not 0/1 (Asterisk drops those).
    """

class TrunkMux:
    """Buffer voice payloads of many calls; ``flush`` returns the trunk datagrams.

    Splitting: before an entry is appended, a new datagram is started when the current one
    (8-byte header + entries) plus the new entry would reach ``mtu`` bytes (Asterisk's ``>=``
    rule), so every datagram is at most ``mtu`` bytes; at mtu 1240 with 160-byte payloads that
    is 8 + 7 × 164 = 1156 bytes.  ``mtu`` is 0 (no limit) or 16..65535.
    """

    mtu: int
    def __init__(self, mtu: int = 1240, timestamps: bool = False) -> None: ...
    @property
    def timestamps(self) -> bool: ...
    @property
    def pending(self) -> int:
        """Number of entries buffered."""
    @property
    def pending_bytes(self) -> int:
        """Total size in bytes of the datagrams ``flush`` would return now (headers included)."""
    def add(self, callno: int, ts: int, payload: Buffer) -> None:
        """Buffer one payload; callno 1..32767, ts 0..2**32-1 (low 16 bits sent with timestamps).

        FrameError for out-of-range values, a payload over 65535 bytes or an entry that alone
        does not fit in ``mtu``; nothing is buffered then.
        """
    def flush(self, trunk_ts: int) -> list[bytes]:
        """Return the buffered datagrams, all stamped ``trunk_ts`` (u32), and clear the buffer.

        Returns ``[]`` when nothing is pending.
        """

def pack_trunk(
    entries: Iterable[tuple[int, int, Buffer]],
    trunk_ts: int,
    timestamps: bool = False,
    mtu: int = 1240,
) -> list[bytes]:
    """``TrunkMux(mtu, timestamps)``; ``add`` each ``(callno, ts, payload)``; then ``flush``."""

class TrunkDemux:
    """``feed`` = ``parse_trunk`` plus counters.

    ``datagrams`` parsed, ``entries`` returned, ``truncated`` datagrams that stopped at a truncated
    entry, ``errors`` FrameErrors raised (the error is re-raised).
    """

    datagrams: int
    entries: int
    truncated: int
    errors: int
    def __init__(self) -> None: ...
    def feed(self, data: Buffer) -> TrunkFrame: ...

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

def trunk_entry_stats(data: builtins.bytes) -> tuple[int, int]: ...

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

def trunk_epoch(epochs: dict[Any, float], by_addr: dict[Any, Any], addr: Any, now: float,
                reset: bool) -> float: ...

def send_trunk_voice(calls: dict[int, Any], items: list[tuple[int, bytes]], now: float,
                     trunks: dict[Any, Any], out: list[Any] | None = None
                     ) -> tuple[list[tuple[int, bytes]], list[Any]]: ...
def tx_tick_send(probes: list[TxProbe], probe_now: float, calls: dict[int, Any], now: float,
                 trunks: dict[Any, Any], out: list[Any] | None = None
                 ) -> tuple[list[tuple[int, bytes]], list[Any]]: ...
