# cython: language_level=3
"""Compiled IAX2 frame codec (docs/protocol.md §1, §2, §8); twin of ``_frames_py``.

Inputs are read through a pointer and a length with explicit checks before every read.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_IsContiguous, PyBuffer_Release
from cpython.buffer cimport PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.bytes cimport PyBytes_GET_SIZE
from libc.string cimport memcpy

include "_wire.pxi"

from iaxgw._core.errors import FrameError

cdef extern from "Python.h":
    Py_buffer *PyMemoryView_GET_BUFFER(object mview)

__all__ = [
    "FullFrame",
    "build_full",
    "build_mini",
    "build_video_mini",
    "classify",
    "compress_subclass",
    "parse_full",
    "parse_mini",
    "parse_video_mini",
    "uncompress_subclass",
]

cdef enum:
    KIND_TOO_SHORT = 0
    KIND_FULL = 1
    KIND_MINI = 2
    KIND_VIDEO_MINI = 3
    KIND_META = 4
    TYPE_VIDEO = 3


cdef long long _ival(str name, object value, long long lo, long long hi) except? -1:
    cdef int overflow = 0
    cdef long long v
    if not PyLong_Check(value):
        raise FrameError(f"{name} must be an int, not {type(value).__name__}")
    v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow or v < lo or v > hi:
        raise FrameError(f"{name} {value} out of range {lo}..{hi}")
    return v


cdef inline bytes _payload(object payload):
    if PyBytes_CheckExact(payload):
        return <bytes>payload
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(_view(payload))
    raise FrameError(f"payload must be bytes-like, not {type(payload).__name__}")


cdef memoryview _view(object data):
    """A flat, contiguous, format-'B' memoryview of ``data``."""
    cdef memoryview mv
    cdef Py_buffer *b
    if type(data) is memoryview:
        mv = <memoryview>data
    else:
        mv = memoryview(data)
    b = PyMemoryView_GET_BUFFER(mv)
    if (b.ndim != 1 or not PyBuffer_IsContiguous(b, b'C')
            or (b.format != NULL and not (b.format[0] == b'B' and b.format[1] == 0))):
        mv = mv.cast("B")
    return mv


cdef inline int _get(object data, Py_buffer *view) except -1:
    """Fill ``view`` (buf, len) for ``data``; returns 1 if it must be released."""
    if PyBytes_CheckExact(data):
        view.buf = PyBytes_AS_STRING(data)
        view.len = PyBytes_GET_SIZE(data)
        return 0
    PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
    return 1


def classify(data):
    """The DatagramKind of a received datagram, in Asterisk's demux order."""
    cdef Py_buffer view
    cdef int rel = _get(data, &view)
    cdef const unsigned char *p = <const unsigned char *>view.buf
    cdef int kind
    if view.len < 4:
        kind = KIND_TOO_SHORT
    elif p[0] == 0 and p[1] == 0:
        kind = KIND_VIDEO_MINI if p[2] & 0x80 else KIND_META
    elif p[0] & 0x80:
        kind = KIND_FULL
    else:
        kind = KIND_MINI
    if rel:
        PyBuffer_Release(&view)
    return kind


def compress_subclass(value):
    """Encode a subclass as the csub byte: < 0x80 raw, power of two as 0x80|log2, -1 as 0xFF."""
    cdef int overflow = 0
    cdef long long v
    cdef int shift
    if not PyLong_Check(value):
        raise FrameError(f"subclass must be an int, not {type(value).__name__}")
    v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow < 0 or (not overflow and v < -1):
        raise FrameError(f"subclass {value} cannot be encoded (negative)")
    if not overflow:
        if v == -1:
            return 0xFF
        if v < 0x80:
            return <int>v
        if v & (v - 1):
            raise FrameError(
                f"subclass {value:#x} cannot be encoded (>= 0x80 and not a power of two)")
        shift = 0
        while v > 1:
            v >>= 1
            shift += 1
        return 0x80 | shift
    if value & (value - 1):
        raise FrameError(f"subclass {value:#x} cannot be encoded (>= 0x80 and not a power of two)")
    shift_obj = value.bit_length() - 1
    if shift_obj > 0x3F:
        raise FrameError(f"subclass {value:#x} cannot be encoded (shift {shift_obj} > 63)")
    return 0x80 | shift_obj


cdef inline object _uncompress(unsigned int b):
    if b == 0xFF:
        return -1
    if b & 0x80:
        return (<unsigned long long>1) << (b & 0x3F)
    return <int>b


def uncompress_subclass(byte):
    """Decode a csub byte: 0xFF -> -1, C bit -> 1 << (byte & 0x3F), else the byte itself."""
    return _uncompress(<unsigned int>_ival("csub", byte, 0, 0xFF))


@cython.final
@cython.freelist(64)
cdef class FullFrame:
    """A parsed or to-be-sent IAX2 full frame; ``csub`` is the raw subclass byte."""

    cdef public long long scallno
    cdef public long long dcallno
    cdef public long long ts
    cdef public long long oseqno
    cdef public long long iseqno
    cdef public long long frametype
    cdef public long long csub
    cdef public bytes payload
    cdef public bint retransmit

    def __init__(self, scallno, dcallno, ts, oseqno, iseqno, frametype, csub,
                 payload=b"", retransmit=False):
        self.scallno = _ival("scallno", scallno, 0, 0x7FFF)
        self.dcallno = _ival("dcallno", dcallno, 0, 0x7FFF)
        self.ts = _ival("ts", ts, 0, 0xFFFFFFFF)
        self.oseqno = _ival("oseqno", oseqno, 0, 0xFF)
        self.iseqno = _ival("iseqno", iseqno, 0, 0xFF)
        self.frametype = _ival("frametype", frametype, 0, 0xFF)
        self.csub = _ival("csub", csub, 0, 0xFF)
        self.payload = _payload(payload)
        self.retransmit = bool(retransmit)

    @property
    def subclass(self):
        """The decoded subclass (for VIDEO frames without the end-of-frame marker bit)."""
        cdef unsigned int b = <unsigned int>_ival("csub", self.csub, 0, 0xFF)
        if self.frametype == TYPE_VIDEO:
            return _uncompress(b & 0xBF)
        return _uncompress(b)

    @property
    def video_marker(self):
        """End-of-frame marker of a VIDEO frame (csub bit 0x40); False for other types."""
        return self.frametype == TYPE_VIDEO and (self.csub & 0x40) != 0

    def to_bytes(self):
        """Serialize; the exact inverse of :func:`parse_full`."""
        _ival("scallno", self.scallno, 0, 0x7FFF)
        _ival("dcallno", self.dcallno, 0, 0x7FFF)
        _ival("ts", self.ts, 0, 0xFFFFFFFF)
        _ival("oseqno", self.oseqno, 0, 0xFF)
        _ival("iseqno", self.iseqno, 0, 0xFF)
        _ival("frametype", self.frametype, 0, 0xFF)
        _ival("csub", self.csub, 0, 0xFF)
        cdef bytes body = _payload(self.payload)
        return _build_full(self.scallno, self.dcallno, self.ts, self.oseqno, self.iseqno,
                           self.frametype, self.csub, body, self.retransmit)

    def __eq__(self, other):
        if not isinstance(other, FullFrame):
            return NotImplemented
        cdef FullFrame o = <FullFrame>other
        return (self.scallno == o.scallno and self.dcallno == o.dcallno and self.ts == o.ts
                and self.oseqno == o.oseqno and self.iseqno == o.iseqno
                and self.frametype == o.frametype and self.csub == o.csub
                and self.payload == o.payload and self.retransmit == o.retransmit)

    __hash__ = None

    def __repr__(self):
        return (
            f"FullFrame(scallno={self.scallno}, dcallno={self.dcallno}, ts={self.ts}, "
            f"oseqno={self.oseqno}, iseqno={self.iseqno}, frametype={self.frametype}, "
            f"csub={self.csub:#04x}, payload={self.payload!r}, "
            f"retransmit={bool(self.retransmit)})"
        )


cdef bytes _build_full(long long scallno, long long dcallno, long long ts, long long oseqno,
                       long long iseqno, long long frametype, long long csub, bytes body,
                       bint retransmit):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(body)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 12 + n)
    cdef unsigned char *q = <unsigned char *>PyBytes_AS_STRING(out)
    wr16(q, <unsigned int>scallno | 0x8000)
    wr16(q + 2, <unsigned int>dcallno | (0x8000 if retransmit else 0))
    wr32(q + 4, <unsigned int>ts)
    q[8] = <unsigned char>oseqno
    q[9] = <unsigned char>iseqno
    q[10] = <unsigned char>frametype
    q[11] = <unsigned char>csub
    if n:
        memcpy(q + 12, PyBytes_AS_STRING(body), n)
    return out


cdef FullFrame _parse_full(const unsigned char *p, Py_ssize_t n):
    if n < 12:
        raise FrameError(f"full frame needs a 12-byte header, got {n} bytes", 0)
    if not p[0] & 0x80:
        raise FrameError("F bit clear: not a full frame", 0)
    cdef FullFrame f = FullFrame.__new__(FullFrame)
    f.scallno = rd16(p) & 0x7FFF
    f.dcallno = rd16(p + 2) & 0x7FFF
    f.retransmit = (p[2] & 0x80) != 0
    f.ts = rd32(p + 4)
    f.oseqno = p[8]
    f.iseqno = p[9]
    f.frametype = p[10]
    f.csub = p[11]
    f.payload = PyBytes_FromStringAndSize(<const char *>p + 12, n - 12)
    return f


# A plain builtin rather than a Cython function object: the interpreter specialises calls to
# it (per-datagram hot path); the clinic-style docstring keeps inspect.signature working.
@cython.binding(False)
@cython.embedsignature.format("clinic")
def parse_full(data):
    """Parse a full frame datagram; the payload is copied to ``bytes``."""
    if PyBytes_CheckExact(data):
        return _parse_full(<const unsigned char *>PyBytes_AS_STRING(data),
                           PyBytes_GET_SIZE(data))
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return _parse_full(<const unsigned char *>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


def build_full(scallno, dcallno, ts, oseqno, iseqno, frametype, subclass, payload=b"",
               retransmit=False):
    """Build a full frame datagram; ``subclass`` is encoded with :func:`compress_subclass`."""
    cdef long long s = _ival("scallno", scallno, 0, 0x7FFF)
    cdef long long d = _ival("dcallno", dcallno, 0, 0x7FFF)
    cdef long long t = _ival("ts", ts, 0, 0xFFFFFFFF)
    cdef long long o = _ival("oseqno", oseqno, 0, 0xFF)
    cdef long long i = _ival("iseqno", iseqno, 0, 0xFF)
    cdef long long ft = _ival("frametype", frametype, 0, 0xFF)
    cdef long long csub = compress_subclass(subclass)
    cdef bytes body = _payload(payload)
    return _build_full(s, d, t, o, i, ft, csub, body, bool(retransmit))


def parse_mini(data):
    """Parse a voice mini frame: (source callno, ts16, payload view without copy)."""
    cdef memoryview mv = _view(data)
    cdef Py_buffer *b = PyMemoryView_GET_BUFFER(mv)
    cdef const unsigned char *p = <const unsigned char *>b.buf
    cdef Py_ssize_t n = b.len
    if n < 4:
        raise FrameError(f"mini frame needs a 4-byte header, got {n} bytes", 0)
    cdef unsigned int w0 = rd16(p)
    if w0 & 0x8000:
        raise FrameError("F bit set: not a mini frame", 0)
    if w0 == 0:
        raise FrameError("mini frame with call number 0", 0)
    return w0, rd16(p + 2), mv[4:]


def build_mini(callno, ts16, payload):
    """Build a voice mini frame."""
    cdef long long c = _ival("callno", callno, 1, 0x7FFF)
    cdef long long t = _ival("ts16", ts16, 0, 0xFFFF)
    cdef bytes body = _payload(payload)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(body)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 4 + n)
    cdef unsigned char *q = <unsigned char *>PyBytes_AS_STRING(out)
    wr16(q, <unsigned int>c)
    wr16(q + 2, <unsigned int>t)
    if n:
        memcpy(q + 4, PyBytes_AS_STRING(body), n)
    return out


def parse_video_mini(data):
    """Parse a video mini frame: (source callno, ts15, end-of-frame marker, payload view)."""
    cdef memoryview mv = _view(data)
    cdef Py_buffer *b = PyMemoryView_GET_BUFFER(mv)
    cdef const unsigned char *p = <const unsigned char *>b.buf
    cdef Py_ssize_t n = b.len
    if n < 6:
        raise FrameError(f"video mini frame needs a 6-byte header, got {n} bytes", 0)
    if rd16(p) != 0:
        raise FrameError("video mini frame must start with 0x0000", 0)
    cdef unsigned int w1 = rd16(p + 2)
    cdef unsigned int w2 = rd16(p + 4)
    if not w1 & 0x8000:
        raise FrameError("video mini frame needs bit 15 of word 1 set (else a meta frame)", 2)
    if not w1 & 0x7FFF:
        raise FrameError("video mini frame with call number 0", 2)
    return w1 & 0x7FFF, w2 & 0x7FFF, (w2 & 0x8000) != 0, mv[6:]


def build_video_mini(callno, ts15, payload, marker=False):
    """Build a video mini frame (ts is the low 15 bits; ``marker`` = end of video frame)."""
    cdef long long c = _ival("callno", callno, 1, 0x7FFF)
    cdef long long t = _ival("ts15", ts15, 0, 0x7FFF)
    cdef bytes body = _payload(payload)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(body)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 6 + n)
    cdef unsigned char *q = <unsigned char *>PyBytes_AS_STRING(out)
    wr16(q, 0)
    wr16(q + 2, <unsigned int>c | 0x8000)
    wr16(q + 4, <unsigned int>t | (0x8000 if marker else 0))
    if n:
        memcpy(q + 6, PyBytes_AS_STRING(body), n)
    return out
