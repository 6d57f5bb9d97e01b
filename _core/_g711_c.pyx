# cython: language_level=3
"""Compiled G.711 codec: lookup tables computed at import, raw-buffer loops, GIL released on bulk.

API, input types and errors: see ``_g711_c.pyi``.  The pure-Python twin is ``_g711_py``.
"""

from cpython.buffer cimport (
    PyBUF_C_CONTIGUOUS,
    PyBUF_FORMAT,
    PyBuffer_Release,
    PyObject_CheckBuffer,
    PyObject_GetBuffer,
)
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from libc.stdint cimport int16_t, uint8_t, uint16_t
from libc.string cimport memcpy, strcmp

from iaxgw._core.errors import FrameError


cdef extern from *:
    """
    #if PY_BIG_ENDIAN
    #define IAXGW_NATIVE_I16_EXPLICIT ">h"
    #else
    #define IAXGW_NATIVE_I16_EXPLICIT "<h"
    #endif
    #if PY_LITTLE_ENDIAN && (defined(__SSE2__) || defined(_M_X64))
    #include <emmintrin.h>
    #define IAXGW_STREAM_DECODE 1
    #else
    #define IAXGW_STREAM_DECODE 0
    #endif

    /* Decode codes src[0:n] into 16-byte-aligned dst[0:2n] with non-temporal 16-byte stores
       (8 samples each): a bulk result bigger than the caches is written without first reading
       its lines in.  Returns how many samples were done (a multiple of 8; 0 without SSE2). */
    static Py_ssize_t iaxgw_decode_stream(const uint8_t *src, uint8_t *dst, Py_ssize_t n,
                                          const int16_t *table) {
    #if IAXGW_STREAM_DECODE
        const uint16_t *t = (const uint16_t *)table;
        Py_ssize_t i = 0;
        uint64_t c, lo, hi;
        for (; i + 8 <= n; i += 8) {
            memcpy(&c, src + i, 8);
            lo = (uint64_t)t[c & 0xFF] | ((uint64_t)t[(c >> 8) & 0xFF] << 16)
                 | ((uint64_t)t[(c >> 16) & 0xFF] << 32) | ((uint64_t)t[(c >> 24) & 0xFF] << 48);
            hi = (uint64_t)t[(c >> 32) & 0xFF] | ((uint64_t)t[(c >> 40) & 0xFF] << 16)
                 | ((uint64_t)t[(c >> 48) & 0xFF] << 32) | ((uint64_t)t[c >> 56] << 48);
            _mm_stream_si128((__m128i *)(dst + 2 * i),
                             _mm_set_epi64x((long long)hi, (long long)lo));
        }
        _mm_sfence();
        return i;
    #else
        (void)src; (void)dst; (void)n; (void)table;
        return 0;
    #endif
    }
    """
    const char* IAXGW_NATIVE_I16_EXPLICIT
    Py_ssize_t iaxgw_decode_stream(const uint8_t *src, uint8_t *dst, Py_ssize_t n,
                                   const int16_t *table) noexcept nogil


# Bulk loops at or above this many input bytes run without the GIL.
cdef enum:
    _NOGIL_BYTES = 16384
    # Bulk decodes of at least this many samples (a 1 MiB result) use non-temporal stores.
    _STREAM_SAMPLES = 524288

cdef uint8_t _ULAW_ENC[65536]
cdef uint8_t _ALAW_ENC[65536]
cdef int16_t _ULAW_DEC[256]
cdef int16_t _ALAW_DEC[256]
cdef uint8_t _ULAW_TO_ALAW[256]
cdef uint8_t _ALAW_TO_ULAW[256]


cdef inline int _bit_length(int v) noexcept nogil:
    cdef int n = 0
    while v:
        v >>= 1
        n += 1
    return n


cdef uint8_t _ulaw_code(int sample) noexcept nogil:
    # G.711 µ-law as audioop applies it: top 14 bits, clip 8159, bias 33, 8 segments
    cdef int value = sample >> 2
    cdef int mask, magnitude, segment
    if value < 0:
        magnitude = -value
        mask = 0x7F
    else:
        magnitude = value
        mask = 0xFF
    if magnitude > 8159:
        magnitude = 8159
    magnitude += 33
    segment = _bit_length(magnitude) - 6
    if segment < 0:
        segment = 0
    if segment >= 8:
        return <uint8_t>(0x7F ^ mask)
    return <uint8_t>(((segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)) ^ mask)


cdef uint8_t _alaw_code(int sample) noexcept nogil:
    # G.711 A-law as audioop applies it: top 13 bits, even-bit inversion (0x55)
    cdef int value = sample >> 3
    cdef int mask, segment, step
    if value >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        value = -value - 1
    segment = _bit_length(value) - 5
    if segment < 0:
        segment = 0
    if segment >= 8:
        return <uint8_t>(0x7F ^ mask)
    if segment < 2:
        step = value >> 1
    else:
        step = value >> segment
    return <uint8_t>(((segment << 4) | (step & 0x0F)) ^ mask)


cdef int16_t _ulaw_sample(int code) noexcept nogil:
    cdef int inv = ~code & 0xFF
    cdef int magnitude = (((inv & 0x0F) << 3) + 0x84) << ((inv >> 4) & 0x07)
    if inv & 0x80:
        return <int16_t>(0x84 - magnitude)
    return <int16_t>(magnitude - 0x84)


cdef int16_t _alaw_sample(int code) noexcept nogil:
    cdef int value = code ^ 0x55
    cdef int segment = (value >> 4) & 0x07
    cdef int magnitude = (value & 0x0F) << 4
    if segment == 0:
        magnitude += 8
    else:
        magnitude = (magnitude + 0x108) << (segment - 1)
    if value & 0x80:
        return <int16_t>magnitude
    return <int16_t>(-magnitude)


cdef void _build_tables() noexcept nogil:
    cdef int i, s
    for i in range(65536):
        s = i - 65536 if i >= 32768 else i
        _ULAW_ENC[i] = _ulaw_code(s)
        _ALAW_ENC[i] = _alaw_code(s)
    for i in range(256):
        _ULAW_DEC[i] = _ulaw_sample(i)
        _ALAW_DEC[i] = _alaw_sample(i)
    for i in range(256):
        _ULAW_TO_ALAW[i] = _ALAW_ENC[<uint16_t>_ULAW_DEC[i]]
        _ALAW_TO_ULAW[i] = _ULAW_ENC[<uint16_t>_ALAW_DEC[i]]


_build_tables()


# ---- loops: callers have checked that src holds n units and dst the whole result ----

cdef void _encode_loop(const uint8_t* src, uint8_t* dst, Py_ssize_t n,
                       const uint8_t* table) noexcept nogil:
    cdef Py_ssize_t i
    cdef uint16_t s
    for i in range(n):
        memcpy(&s, src + 2 * i, 2)
        dst[i] = table[s]


cdef void _decode_loop(const uint8_t* src, uint8_t* dst, Py_ssize_t n,
                       const int16_t* table, bint fresh) noexcept nogil:
    cdef Py_ssize_t i
    cdef Py_ssize_t done
    cdef int16_t* d16
    if (<size_t>dst) & 1:
        for i in range(n):
            memcpy(dst + 2 * i, &table[src[i]], 2)
        return
    d16 = <int16_t*>dst  # 2-aligned output (always for new bytes objects)
    if fresh and n >= _STREAM_SAMPLES:
        i = 0
        while (<size_t>(dst + 2 * i)) & 15:  # up to 7 samples to a 16-byte boundary
            d16[i] = table[src[i]]
            i += 1
        done = iaxgw_decode_stream(src + i, dst + 2 * i, n - i, table)
        src += i + done
        d16 += i + done
        n -= i + done
    for i in range(n):
        d16[i] = table[src[i]]


cdef void _map_loop(const uint8_t* src, uint8_t* dst, Py_ssize_t n,
                    const uint8_t* table) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        dst[i] = table[src[i]]


# ---- buffer handling ----

cdef enum _Kind:
    ENCODE = 0
    DECODE = 1
    MAP = 2


cdef inline bint _byte_format(const char* f) noexcept:
    if f == NULL:
        return True
    if f[0] == b'@' or f[0] == b'=':
        f += 1
    return (f[0] == b'B' or f[0] == b'b' or f[0] == b'c') and f[1] == 0


cdef inline bint _native_i16_format(const char* f) noexcept:
    if strcmp(f, IAXGW_NATIVE_I16_EXPLICIT) == 0:
        return True
    if f[0] == b'@' or f[0] == b'=':
        f += 1
    return f[0] == b'h' and f[1] == 0


cdef int _get_input(object obj, Py_buffer* view, bint pcm) except -1:
    """Acquire a C-contiguous view of ``obj`` and check its item type."""
    if not PyObject_CheckBuffer(obj):
        what = "pcm" if pcm else "data"
        raise TypeError(f"{what} must be a bytes-like object, not {type(obj).__name__}")
    try:
        PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
    except (BufferError, ValueError):
        what = "pcm" if pcm else "data"
        raise FrameError(f"{what} buffer is not C-contiguous") from None
    if view.itemsize == 1 and _byte_format(view.format):
        return 0
    if pcm and view.itemsize == 2 and _native_i16_format(view.format):
        return 0
    fmt = (<bytes>view.format).decode("ascii", "replace")
    PyBuffer_Release(view)
    if pcm:
        raise TypeError(f"pcm must be bytes-like or native int16, not a buffer of format {fmt!r}")
    raise TypeError(f"data must be bytes-like (8-bit codes), not a buffer of format {fmt!r}")


cdef int _get_out(object out, Py_buffer* view, Py_ssize_t need) except -1:
    if not PyObject_CheckBuffer(out):
        raise TypeError(f"out must be a writable buffer, not {type(out).__name__}")
    try:
        PyObject_GetBuffer(out, view, PyBUF_C_CONTIGUOUS)
    except (BufferError, ValueError):
        raise FrameError("out buffer is not C-contiguous") from None
    if view.readonly:
        PyBuffer_Release(view)
        raise TypeError("out must be a writable buffer")
    if view.len < need:
        have = view.len
        PyBuffer_Release(view)
        raise FrameError(f"out holds {have} bytes, {need} needed")
    return 0


cdef inline void _run(int kind, const uint8_t* src, uint8_t* dst, Py_ssize_t n,
                      const void* table, bint fresh) noexcept nogil:
    # fresh: dst is a new bytes object (not in any cache yet), not a caller's ``out``
    if kind == ENCODE:
        _encode_loop(src, dst, n, <const uint8_t*>table)
    elif kind == DECODE:
        _decode_loop(src, dst, n, <const int16_t*>table, fresh)
    else:
        _map_loop(src, dst, n, <const uint8_t*>table)


cdef object _convert(object data, object out, int kind, const void* table):
    cdef Py_buffer inview
    cdef Py_buffer outview
    cdef const uint8_t* src
    cdef uint8_t* dst
    cdef Py_ssize_t nbytes, n, need
    cdef bint held = False
    cdef bytes result
    if PyBytes_CheckExact(data):
        src = <const uint8_t*>PyBytes_AS_STRING(data)
        nbytes = PyBytes_GET_SIZE(data)
    else:
        _get_input(data, &inview, kind == ENCODE)
        held = True
        src = <const uint8_t*>inview.buf
        nbytes = inview.len
    try:
        if kind == ENCODE:
            if nbytes & 1:
                raise FrameError(
                    f"pcm has an odd length of {nbytes} bytes (16-bit samples)")
            n = nbytes >> 1
            need = n
        elif kind == DECODE:
            n = nbytes
            need = 2 * n
        else:
            n = nbytes
            need = n
        if out is None:
            result = PyBytes_FromStringAndSize(NULL, need)
            dst = <uint8_t*>PyBytes_AS_STRING(result)
            if nbytes >= _NOGIL_BYTES:
                with nogil:
                    _run(kind, src, dst, n, table, True)
            else:
                _run(kind, src, dst, n, table, True)
            return result
        _get_out(out, &outview, need)
        try:
            dst = <uint8_t*>outview.buf
            if nbytes >= _NOGIL_BYTES:
                with nogil:
                    _run(kind, src, dst, n, table, False)
            else:
                _run(kind, src, dst, n, table, False)
        finally:
            PyBuffer_Release(&outview)
        return need
    finally:
        if held:
            PyBuffer_Release(&inview)


def ulaw_encode(pcm, out=None):
    """16-bit native PCM -> µ-law codes (bytes, or bytes written into ``out``)."""
    return _convert(pcm, out, ENCODE, _ULAW_ENC)


def alaw_encode(pcm, out=None):
    """16-bit native PCM -> A-law codes (bytes, or bytes written into ``out``)."""
    return _convert(pcm, out, ENCODE, _ALAW_ENC)


def ulaw_decode(data, out=None):
    """µ-law codes -> 16-bit native PCM (bytes, or bytes written into ``out``)."""
    return _convert(data, out, DECODE, _ULAW_DEC)


def alaw_decode(data, out=None):
    """A-law codes -> 16-bit native PCM (bytes, or bytes written into ``out``)."""
    return _convert(data, out, DECODE, _ALAW_DEC)


def ulaw_to_alaw(data, out=None):
    """µ-law codes -> A-law codes, equal to encoding the decoded samples."""
    return _convert(data, out, MAP, _ULAW_TO_ALAW)


def alaw_to_ulaw(data, out=None):
    """A-law codes -> µ-law codes, equal to encoding the decoded samples."""
    return _convert(data, out, MAP, _ALAW_TO_ULAW)
