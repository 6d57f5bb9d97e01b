"""Type stubs for ``iaxgw._core._frames_c`` (and its twin ``_frames_py``): IAX2 frames.

Every parser and builder raises :class:`iaxgw._core.errors.FrameError` (a ``ValueError``) for
malformed input or out-of-range values, naming what is wrong and the byte offset.  Parsers take
``bytes``, ``bytearray``, ``memoryview`` or any other contiguous buffer.
"""

Buffer = bytes | bytearray | memoryview

def classify(data: Buffer) -> int:
    """DatagramKind in Asterisk's demux order: < 4 bytes TOO_SHORT; word0 == 0 and word1 bit 15
    VIDEO_MINI; word0 == 0 META; word0 bit 15 FULL (even if < 12 bytes); else MINI."""

def compress_subclass(value: int) -> int:
    """Subclass -> csub byte: < 0x80 raw; power of two 0x80|log2 (log2 <= 63); -1 -> 0xFF."""

def uncompress_subclass(byte: int) -> int:
    """csub byte -> subclass: 0xFF -> -1; C bit (0x80) -> 1 << (byte & 0x3F); else byte."""

class FullFrame:
    """An IAX2 full frame.  Attributes are plain and writable; ``to_bytes`` re-checks ranges.

    Assigning a value that is not an int (or exceeds 64 bits) raises TypeError/OverflowError in
    the compiled class but only FrameError at ``to_bytes`` in the twin.
    """

    scallno: int  # 0..0x7FFF
    dcallno: int  # 0..0x7FFF
    retransmit: bool  # R bit
    ts: int  # u32 ms
    oseqno: int  # u8
    iseqno: int  # u8
    frametype: int  # u8, see constants.FrameType
    csub: int  # raw subclass byte
    payload: bytes
    def __init__(
        self,
        scallno: int,
        dcallno: int,
        ts: int,
        oseqno: int,
        iseqno: int,
        frametype: int,
        csub: int,
        payload: Buffer = b"",
        retransmit: bool = False,
    ) -> None: ...
    @property
    def subclass(self) -> int:
        """Decoded subclass; for VIDEO frames the 0x40 end-of-frame bit is masked off first."""
    @property
    def video_marker(self) -> bool:
        """csub bit 0x40 of a VIDEO frame (end of video frame); False for other frame types."""
    def to_bytes(self) -> bytes:
        """The datagram; exact inverse of :func:`parse_full` (uses the raw ``csub``)."""
    def __eq__(self, other: object) -> bool: ...
    __hash__: None  # type: ignore[assignment]

def parse_full(data: Buffer) -> FullFrame:
    """Parse a full frame (>= 12 bytes, F bit set); the payload is copied to bytes."""

def build_full(
    scallno: int,
    dcallno: int,
    ts: int,
    oseqno: int,
    iseqno: int,
    frametype: int,
    subclass: int,
    payload: Buffer = b"",
    retransmit: bool = False,
) -> bytes:
    """Build a full frame; ``subclass`` goes through :func:`compress_subclass`."""

def parse_mini(data: Buffer) -> tuple[int, int, memoryview]:
    """Voice mini frame -> (source callno 1..0x7FFF, ts16, payload view of ``data``, no copy)."""

def build_mini(callno: int, ts16: int, payload: Buffer) -> bytes:
    """Voice mini frame from callno 1..0x7FFF, ts16 0..0xFFFF and payload."""

def parse_video_mini(data: Buffer) -> tuple[int, int, bool, memoryview]:
    """Video mini frame -> (source callno, ts15, end-of-frame marker, payload view, no copy)."""

def build_video_mini(callno: int, ts15: int, payload: Buffer, marker: bool = False) -> bytes:
    """Video mini frame from callno 1..0x7FFF, ts15 0..0x7FFF, payload and marker."""
