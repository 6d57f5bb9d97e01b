"""Typed API of the trunk codec, shared by ``_trunk_c`` (Cython) and ``_trunk_py`` (twin).

Trunk meta datagram (docs/protocol.md §3): ``00 00 | 01 | cmddata | trunk_ts:u32`` then entries.
cmddata 0: ``callno:u16 len:u16 payload``; cmddata 1: ``len:u16 callno:u16 ts:u16 payload``.

Errors: malformed datagrams and out-of-range values raise ``iaxgw._core.errors.FrameError``
(a ``ValueError`` with ``.offset``); objects that are not bytes-like / not ints raise ``TypeError``.
"""

import builtins
from collections.abc import Iterable

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

def trunk_entry_stats(data: builtins.bytes) -> tuple[int, int]: ...
