"""Typed API of the G.711 codec, shared by ``_g711_c`` (Cython) and ``_g711_py`` (numpy twin).

Bit-exact with CPython ``audioop`` (lin2ulaw/ulaw2lin/lin2alaw/alaw2lin, width 2) for every input.
Transcoding is decode-then-encode through 256-entry tables, i.e. equal to
``audioop.lin2alaw(audioop.ulaw2lin(x, 2), 2)`` (and the reverse).

Inputs: ``pcm`` is 16-bit signed native-endian samples, given as any C-contiguous bytes-like object
(bytes, bytearray, memoryview, array('h'), numpy int16 or uint8 array); an odd byte length raises
``FrameError``.  ``data`` is 8-bit codes (any C-contiguous buffer with 1-byte items).

``out``: when given, the result is written into this writable C-contiguous buffer (it must hold at
least the result; extra bytes are left alone) and the number of bytes written is returned instead of
a new ``bytes``.  ``out`` must not overlap the input, except ``out is data`` for the transcoders.

Errors: ``TypeError`` for non-buffers, buffers of another item type (e.g. float32, big-endian int16)
and a read-only ``out``; ``FrameError`` (a ``ValueError``) for an odd PCM length, a non-contiguous
buffer or an ``out`` that is too small.
"""

from typing import overload

import numpy as np
import numpy.typing as npt

Buffer = bytes | bytearray | memoryview | npt.NDArray[np.int16] | npt.NDArray[np.uint8]
WritableBuffer = bytearray | memoryview | npt.NDArray[np.int16] | npt.NDArray[np.uint8]

@overload
def ulaw_encode(pcm: Buffer, out: None = None) -> bytes: ...
@overload
def ulaw_encode(pcm: Buffer, out: WritableBuffer) -> int: ...
@overload
def alaw_encode(pcm: Buffer, out: None = None) -> bytes: ...
@overload
def alaw_encode(pcm: Buffer, out: WritableBuffer) -> int: ...
@overload
def ulaw_decode(data: Buffer, out: None = None) -> bytes: ...
@overload
def ulaw_decode(data: Buffer, out: WritableBuffer) -> int: ...
@overload
def alaw_decode(data: Buffer, out: None = None) -> bytes: ...
@overload
def alaw_decode(data: Buffer, out: WritableBuffer) -> int: ...
@overload
def ulaw_to_alaw(data: Buffer, out: None = None) -> bytes: ...
@overload
def ulaw_to_alaw(data: Buffer, out: WritableBuffer) -> int: ...
@overload
def alaw_to_ulaw(data: Buffer, out: None = None) -> bytes: ...
@overload
def alaw_to_ulaw(data: Buffer, out: WritableBuffer) -> int: ...
