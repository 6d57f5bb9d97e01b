"""Pure-Python (numpy lookup table) twin of the G.711 codec; see ``_g711_c.pyi`` for the API.

The tables are computed here at import from the G.711 segment rules, in the form CPython's
``audioop`` applies them (µ-law on the top 14 bits of a 16-bit sample with bias 33 and clip 8159,
A-law on the top 13 bits); the tests check them against ``audioop`` for every input.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import numpy.typing as npt

from iaxgw._core.errors import FrameError

_NATIVE_I16 = {"h", "@h", "=h", "<h" if sys.byteorder == "little" else ">h"}
_BYTE_FORMATS = {"B", "b", "c", "@B", "=B", "@b", "=b"}


def ulaw_encode_sample(sample: int) -> int:
    """µ-law code of one signed 16-bit sample (segment algorithm, no table)."""
    value = sample >> 2  # 14-bit two's complement
    if value < 0:
        magnitude, mask = -value, 0x7F
    else:
        magnitude, mask = value, 0xFF
    magnitude = min(magnitude, 8159) + 33
    segment = max(0, magnitude.bit_length() - 6)
    if segment >= 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)) ^ mask


def alaw_encode_sample(sample: int) -> int:
    """A-law code of one signed 16-bit sample (segment algorithm, no table)."""
    value = sample >> 3  # 13-bit two's complement
    if value >= 0:
        mask = 0xD5
    else:
        mask, value = 0x55, -value - 1
    segment = max(0, value.bit_length() - 5)
    if segment >= 8:
        return 0x7F ^ mask
    step = value >> 1 if segment < 2 else value >> segment
    return ((segment << 4) | (step & 0x0F)) ^ mask


def ulaw_decode_sample(code: int) -> int:
    """Signed 16-bit sample of one µ-law code."""
    inv = ~code & 0xFF
    magnitude = (((inv & 0x0F) << 3) + 0x84) << ((inv >> 4) & 0x07)
    return 0x84 - magnitude if inv & 0x80 else magnitude - 0x84


def alaw_decode_sample(code: int) -> int:
    """Signed 16-bit sample of one A-law code."""
    value = code ^ 0x55
    segment = (value >> 4) & 0x07
    magnitude = (value & 0x0F) << 4
    if segment == 0:
        magnitude += 8
    else:
        magnitude = (magnitude + 0x108) << (segment - 1)
    return magnitude if value & 0x80 else -magnitude


def _build() -> tuple[npt.NDArray[np.uint8], ...]:
    # encode tables are indexed by the sample's bit pattern as uint16
    samples = [i - 0x10000 if i & 0x8000 else i for i in range(0x10000)]
    enc_u = np.array([ulaw_encode_sample(s) for s in samples], dtype=np.uint8)
    enc_a = np.array([alaw_encode_sample(s) for s in samples], dtype=np.uint8)
    return enc_u, enc_a


ULAW_ENCODE: npt.NDArray[np.uint8]
ALAW_ENCODE: npt.NDArray[np.uint8]
ULAW_ENCODE, ALAW_ENCODE = _build()
ULAW_DECODE: npt.NDArray[np.int16] = np.array(
    [ulaw_decode_sample(c) for c in range(256)], dtype=np.int16
)
ALAW_DECODE: npt.NDArray[np.int16] = np.array(
    [alaw_decode_sample(c) for c in range(256)], dtype=np.int16
)
# Transcoding = decode then encode, so it matches audioop's lin2alaw(ulaw2lin(x)) exactly.
ULAW_TO_ALAW: npt.NDArray[np.uint8] = ALAW_ENCODE[ULAW_DECODE.view(np.uint16)]
ALAW_TO_ULAW: npt.NDArray[np.uint8] = ULAW_ENCODE[ALAW_DECODE.view(np.uint16)]
for _t in (ULAW_ENCODE, ALAW_ENCODE, ULAW_DECODE, ALAW_DECODE, ULAW_TO_ALAW, ALAW_TO_ULAW):
    _t.flags.writeable = False


def _view(obj: object, what: str) -> memoryview:
    try:
        mv = memoryview(obj)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be a bytes-like object, not {type(obj).__name__}") from None
    if not mv.c_contiguous:
        raise FrameError(f"{what} buffer is not C-contiguous")
    return mv


def _pcm_u16(pcm: object) -> npt.NDArray[np.uint16]:
    mv = _view(pcm, "pcm")
    if mv.itemsize == 1 and mv.format in _BYTE_FORMATS:
        if mv.nbytes & 1:
            raise FrameError(f"pcm has an odd length of {mv.nbytes} bytes (16-bit samples)")
    elif not (mv.itemsize == 2 and mv.format in _NATIVE_I16):
        raise TypeError(
            f"pcm must be bytes-like or native int16, not a buffer of format {mv.format!r}"
        )
    return np.frombuffer(mv, dtype=np.uint16)


def _codes(data: object) -> npt.NDArray[np.uint8]:
    mv = _view(data, "data")
    if not (mv.itemsize == 1 and mv.format in _BYTE_FORMATS):
        raise TypeError(
            f"data must be bytes-like (8-bit codes), not a buffer of format {mv.format!r}"
        )
    return np.frombuffer(mv, dtype=np.uint8)


def _out(out: object, nbytes: int, dtype: type[np.generic]) -> npt.NDArray[np.generic]:
    mv = _view(out, "out")
    if mv.readonly:
        raise TypeError("out must be a writable buffer")
    if mv.nbytes < nbytes:
        raise FrameError(f"out holds {mv.nbytes} bytes, {nbytes} needed")
    raw = np.frombuffer(mv.cast("B") if mv.format != "B" else mv, dtype=np.uint8, count=nbytes)
    return raw.view(dtype)


def _apply(
    table: npt.NDArray[Any],
    idx: npt.NDArray[Any],
    out: object,
    nbytes: int,
) -> bytes | int:
    if out is None:
        return bytes(table[idx].tobytes())
    dst = _out(out, nbytes, table.dtype.type)
    np.take(table, idx, out=dst)
    return nbytes


def ulaw_encode(pcm: object, out: object = None) -> bytes | int:
    idx = _pcm_u16(pcm)
    return _apply(ULAW_ENCODE, idx, out, idx.size)


def alaw_encode(pcm: object, out: object = None) -> bytes | int:
    idx = _pcm_u16(pcm)
    return _apply(ALAW_ENCODE, idx, out, idx.size)


def ulaw_decode(data: object, out: object = None) -> bytes | int:
    idx = _codes(data)
    return _apply(ULAW_DECODE, idx, out, 2 * idx.size)


def alaw_decode(data: object, out: object = None) -> bytes | int:
    idx = _codes(data)
    return _apply(ALAW_DECODE, idx, out, 2 * idx.size)


def ulaw_to_alaw(data: object, out: object = None) -> bytes | int:
    idx = _codes(data)
    return _apply(ULAW_TO_ALAW, idx, out, idx.size)


def alaw_to_ulaw(data: object, out: object = None) -> bytes | int:
    idx = _codes(data)
    return _apply(ALAW_TO_ULAW, idx, out, idx.size)
