"""Type stubs for ``iaxgw._core._ies_c`` (and its twin ``_ies_py``): IAX2 information elements.

Value types returned by :func:`parse_ies`, by IE kind (``constants.IE_KINDS``):

* STRING (CALLED_NUMBER, USERNAME, CODEC_PREFS, CAUSE, ...): ``str``, UTF-8 decoded with
  ``errors="surrogateescape"`` so any bytes round-trip.
* U8 / U16 / U32: ``int``; the length must be exactly 1 / 2 / 4.
* AUTOANSWER: ``None`` (length must be 0).  MUSICONHOLD: ``None`` if empty, else ``str``.
* CAPABILITY2 / FORMAT2: ``int`` (u64 bitmask) when the version byte is 0 (length must be 9),
  else the raw ``bytes`` (unknown version or empty).
* APPARENT_ADDR: ``(host, port)`` from a canonical 16-byte ``sockaddr_in`` (family 2, host order
  little-endian, zero padding) or 28-byte ``sockaddr_in6`` (family 10, flowinfo and scope 0);
  anything else is kept as raw ``bytes`` so it round-trips.
* DATETIME: naive ``datetime.datetime`` (fields as packed); invalid fields -> FrameError.
* CALLTOKEN, PROVISIONING, AESPROVISIONING, FWBLOCKDATA, ENCKEY, OSPTOKEN, unknown ids:
  ``bytes``.

Errors (FrameError with ``offset`` = start of the offending IE): wrong length of a fixed-size IE,
length overrunning the payload, a single trailing byte.
"""

import datetime
from collections.abc import Iterable

Buffer = bytes | bytearray | memoryview

def parse_ies(payload: Buffer) -> list[tuple[int, object]]:
    """IEs in wire order, repeated IEs kept."""

def build_ies(items: Iterable[tuple[int, object]]) -> bytes:
    """Inverse of :func:`parse_ies`.  Accepts the typed value of each id (``None`` for
    AUTOANSWER/MUSICONHOLD, ``int`` or ``datetime`` for DATETIME, ``(host, port)`` for
    APPARENT_ADDR) and raw bytes-like for any id.  Ints are range-checked for the IE width;
    a value longer than 255 bytes or of the wrong type raises FrameError."""

def decode_datetime(value: int) -> datetime.datetime:
    """Unpack a DATETIME u32 (sec/2 bits 0-4, min 5-10, hour 11-15, mday 16-20, month 21-24,
    year-2000 25-31); invalid fields raise FrameError."""

def encode_datetime(value: datetime.datetime) -> int:
    """Pack a datetime's fields as given (seconds rounded down to even); year 2000..2127."""
