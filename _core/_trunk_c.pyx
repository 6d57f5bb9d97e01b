# cython: language_level=3
"""Compiled IAX2 trunk (meta) frame codec (docs/protocol.md §3); API in ``_trunk_c.pyi``.

Twin: ``_trunk_py``.  Raw pointers are read only after explicit length checks.  The multiplexer
writes all pending datagrams into one growing C buffer (8-byte header slots reserved) and slices
``bytes`` out of it on ``flush``; it creates no Python object per entry.
"""

cimport cython
from cpython.buffer cimport (
    PyBUF_FORMAT,
    PyBUF_FULL_RO,
    PyBUF_ND,
    PyBUF_SIMPLE,
    PyBUF_STRIDES,
    PyBUF_WRITABLE,
    PyBuffer_IsContiguous,
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
from cpython.list cimport PyList_New
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.string cimport memcmp, memcpy

include "_wire.pxi"
include "_callno.pxi"

from iaxgw._core.errors import FrameError


cdef extern from "Python.h":
    object PyMemoryView_FromObject(object obj)
    Py_buffer* PyMemoryView_GET_BUFFER(object mview)


cdef extern from *:
    """
    static char iaxgw_fmt_B[] = "B";
    """
    char* _FMT_B "iaxgw_fmt_B"


META_TRUNK = 1
HEADER_LEN = 8
ENTRY_LEN = 4
ENTRY_TS_LEN = 6
MAX_PAYLOAD = 0xFFFF
MAX_CALLNO = 0x7FFF
MIN_MTU = 16
MAX_MTU = 0xFFFF


cdef inline long long _as_int(object value, const char* what, long long lo,
                              long long hi) except? -1:
    """``value`` as a C integer in lo..hi; TypeError if not an int, FrameError if out of range."""
    cdef int overflow = 0
    cdef long long v
    if not PyLong_Check(value):
        raise TypeError(f"{what.decode()} must be an int, not {type(value).__name__}")
    v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow or v < lo or v > hi:
        raise FrameError(f"{what.decode()} {value} out of range {lo}..{hi}")
    return v


cdef object _byte_view(object data, str what):
    """A 1-D unsigned-byte memoryview of ``data`` (TypeError / FrameError otherwise)."""
    cdef Py_buffer* b
    if not PyObject_CheckBuffer(data):
        raise TypeError(f"{what} must be a bytes-like object, not {type(data).__name__}")
    mv = PyMemoryView_FromObject(data)
    b = PyMemoryView_GET_BUFFER(mv)
    if not PyBuffer_IsContiguous(b, b'C'):
        raise FrameError(f"{what} buffer is not C-contiguous")
    if b.ndim == 1 and b.itemsize == 1 and b.format != NULL and b.format[0] == b'B' \
            and b.format[1] == 0:
        return mv
    return mv.cast("B")


@cython.freelist(8)
@cython.final
cdef class TrunkFrame:
    """A parsed trunk datagram (see the stub for the meaning of each attribute)."""

    cdef public object trunk_ts
    cdef public bint timestamps
    cdef public list entries
    cdef public bint truncated

    def __init__(self, trunk_ts, bint timestamps, list entries, bint truncated):
        self.trunk_ts = trunk_ts
        self.timestamps = timestamps
        self.entries = entries
        self.truncated = truncated

    def __eq__(self, other):
        cdef TrunkFrame o
        if not isinstance(other, TrunkFrame):
            return NotImplemented
        o = <TrunkFrame>other
        return (self.trunk_ts == o.trunk_ts and self.timestamps == o.timestamps
                and self.truncated == o.truncated and self.entries == o.entries)

    __hash__ = None

    def __repr__(self):
        return (f"TrunkFrame(trunk_ts={self.trunk_ts}, timestamps={self.timestamps}, "
                f"entries={len(self.entries)}, truncated={self.truncated})")


@cython.freelist(64)
@cython.final
@cython.no_gc
@cython.auto_pickle(False)
cdef class PayloadView:
    """Read-only zero-copy view of one trunk entry's payload inside the parsed datagram.

    Behaves like the twin's ``memoryview`` slice for consumers: ``len``, ``bytes()``,
    ``tobytes()``, ``==`` with any bytes-like object, indexing, the buffer protocol (format ``B``),
    ``release()``.  It keeps the datagram (or, for a non-``bytes`` datagram, a memoryview holding
    its buffer export) alive, so the pointer stays valid until ``release``.
    """

    cdef object _owner              # bytes, or our own memoryview of the datagram (never exposed)
    cdef const unsigned char* _ptr  # _owner's data + offset; NULL once released
    cdef Py_ssize_t _len
    cdef Py_ssize_t _shape[1]
    cdef Py_ssize_t _strides[1]
    cdef Py_ssize_t _exports

    def __init__(self, *args, **kwargs):
        raise TypeError("PayloadView objects are created by parse_trunk")

    cdef inline int _check(self) except -1:
        if self._ptr == NULL:
            raise ValueError("operation forbidden on released PayloadView object")
        return 0

    def __getbuffer__(self, Py_buffer* buf, int flags):
        self._check()
        if flags & PyBUF_WRITABLE:
            raise BufferError("PayloadView is read-only")
        self._shape[0] = self._len
        self._strides[0] = 1
        buf.buf = <void*>self._ptr
        buf.obj = self
        buf.len = self._len
        buf.readonly = 1
        buf.itemsize = 1
        buf.format = _FMT_B if flags & PyBUF_FORMAT else NULL
        buf.ndim = 1
        buf.shape = self._shape if (flags & PyBUF_ND) == PyBUF_ND else NULL
        buf.strides = self._strides if (flags & PyBUF_STRIDES) == PyBUF_STRIDES else NULL
        buf.suboffsets = NULL
        buf.internal = NULL
        self._exports += 1

    def __releasebuffer__(self, Py_buffer* buf):
        self._exports -= 1

    def release(self):
        """Drop the reference to the datagram (like ``memoryview.release``)."""
        if self._exports:
            raise BufferError(f"PayloadView has {self._exports} exported buffers")
        self._ptr = NULL
        self._len = 0
        self._owner = None

    def __enter__(self):
        self._check()
        return self

    def __exit__(self, *exc):
        self.release()

    def __len__(self):
        self._check()
        return self._len

    @property
    def nbytes(self):
        self._check()
        return self._len

    @property
    def readonly(self):
        self._check()
        return True

    def __bytes__(self):
        self._check()
        return PyBytes_FromStringAndSize(<const char*>self._ptr, self._len)

    def tobytes(self):
        """The payload as ``bytes`` (a copy)."""
        self._check()
        return PyBytes_FromStringAndSize(<const char*>self._ptr, self._len)

    def hex(self, *args):
        return self.tobytes().hex(*args)

    def __getitem__(self, key):
        cdef Py_ssize_t i
        self._check()
        if PyLong_Check(key):
            i = key
            if i < 0:
                i += self._len
            if i < 0 or i >= self._len:
                raise IndexError("index out of bounds on dimension 1")
            return self._ptr[i]
        return memoryview(self)[key]

    def __eq__(self, other):
        cdef Py_buffer view
        cdef bint equal
        if self._ptr == NULL:
            return self is other
        if not PyObject_CheckBuffer(other):
            return NotImplemented
        try:
            PyObject_GetBuffer(other, &view, PyBUF_FULL_RO)
        except (BufferError, ValueError):
            return NotImplemented
        try:
            if view.ndim > 1 or view.suboffsets != NULL or \
                    not PyBuffer_IsContiguous(&view, b'C') or not _byte_format(view.format):
                return memoryview(self) == other
            equal = view.len == self._len and (
                self._len == 0 or memcmp(view.buf, self._ptr, self._len) == 0)
            return equal
        finally:
            PyBuffer_Release(&view)

    def __hash__(self):
        return hash(self.tobytes())

    def __reduce__(self):
        raise TypeError("cannot pickle 'PayloadView' object")

    def __repr__(self):
        if self._ptr == NULL:
            return "<released PayloadView>"
        return f"<PayloadView {self._len} bytes>"


cdef inline bint _byte_format(const char* f) noexcept:
    if f == NULL:
        return True
    if f[0] == b'@' or f[0] == b'=':
        f += 1
    return (f[0] == b'B' or f[0] == b'b' or f[0] == b'c') and f[1] == 0


cdef inline PayloadView _view(object owner, const unsigned char* p, Py_ssize_t start,
                              Py_ssize_t end):
    cdef PayloadView v = PayloadView.__new__(PayloadView)
    v._owner = owner
    v._ptr = p + start
    v._len = end - start
    return v


cdef int check_header(const unsigned char* p, Py_ssize_t n) except -1:
    """The 8-byte meta trunk header of ``p[:n]``: its cmddata (0 or 1), else FrameError."""
    if n < _HDR:
        raise FrameError(f"trunk datagram too short: {n} bytes, need 8", n)
    if p[0] != 0 or p[1] != 0:
        raise FrameError(
            f"not a meta frame: first word is 0x{rd16(p):04x}, not 0x0000", 0)
    if p[2] & 0x80:
        raise FrameError("not a meta frame: V bit set (video mini frame)", 2)
    if p[2] != 1:
        raise FrameError(f"meta command {p[2]} is not TRUNK (1)", 2)
    if p[3] > 1:
        raise FrameError(f"unknown trunk cmddata 0x{p[3]:02x} (expected 0 or 1)", 3)
    return p[3]


cdef TrunkFrame _parse(object data):
    cdef const unsigned char* p
    cdef Py_ssize_t n, pos, start, end
    cdef unsigned int length, callno
    cdef unsigned char cmddata
    cdef Py_ssize_t hdr
    cdef Py_buffer* b
    cdef object owner
    cdef list entries
    cdef TrunkFrame frame
    cdef bint truncated = False
    if PyBytes_CheckExact(data):
        owner = data
        p = <const unsigned char*>PyBytes_AS_STRING(data)
        n = PyBytes_GET_SIZE(data)
    else:
        owner = _byte_view(data, "trunk datagram")   # holds the export while payloads live
        b = PyMemoryView_GET_BUFFER(owner)
        p = <const unsigned char*>b.buf
        n = b.len
    cmddata = check_header(p, n)
    frame = TrunkFrame.__new__(TrunkFrame)
    frame.trunk_ts = rd32(p + 4)
    frame.timestamps = cmddata
    entries = []
    frame.entries = entries
    hdr = _ENT_TS if cmddata else _ENT
    pos = _HDR
    while pos < n:
        if n - pos < hdr:
            truncated = True
            break
        if cmddata:
            length = rd16(p + pos)
            callno = rd16(p + pos + 2) & _MAX_CALLNO
        else:
            callno = rd16(p + pos) & _MAX_CALLNO
            length = rd16(p + pos + 2)
        start = pos + hdr
        end = start + length
        if end > n:
            truncated = True
            break
        if cmddata:
            entries.append((callno_obj(callno), rd16(p + pos + 4), _view(owner, p, start, end)))
        else:
            entries.append((callno_obj(callno), None, _view(owner, p, start, end)))
        pos = end
    frame.truncated = truncated
    return frame


def parse_trunk(data):
    """Parse one trunk meta datagram; payloads are memoryview slices of ``data``."""
    return _parse(data)


cdef void* grown(void* buf, Py_ssize_t* cap, size_t item, Py_ssize_t first) except NULL:
    """``buf`` (``cap[0]`` items of ``item`` bytes) reallocated to twice as many (``first`` when
    empty); ``cap[0]`` updated.  MemoryError when it cannot be."""
    cdef Py_ssize_t n = cap[0] * 2 if cap[0] else first
    cdef void* nb = PyMem_Realloc(buf, <size_t>n * item)
    if nb == NULL:
        raise MemoryError()
    cap[0] = n
    return nb


cdef class TrunkMux:
    """Buffer voice payloads of many calls; ``flush`` returns the trunk datagrams."""

    # fields and C methods declared in _trunk_c.pxd

    def __cinit__(self):
        self._buf = NULL
        self._starts = NULL

    def __init__(self, mtu=1240, timestamps=False):
        cdef long long m
        if not PyLong_Check(mtu):
            raise TypeError(f"mtu must be an int, not {type(mtu).__name__}")
        m = _as_int(mtu, b"mtu", 0, _MAX_MTU)
        if m != 0 and m < _MIN_MTU:
            raise FrameError(f"mtu {m} out of range: 0 (no limit) or {_MIN_MTU}..{_MAX_MTU}")
        self.mtu = <int>m
        self._timestamps = bool(timestamps)
        self._entry_len = _ENT_TS if self._timestamps else _ENT
        self._len = 0
        self._nstarts = 0
        self._pending = 0
        self._reserve(4096 if m == 0 else 4 * m)

    def __dealloc__(self):
        PyMem_Free(self._buf)
        PyMem_Free(self._starts)

    cdef int _reserve(self, Py_ssize_t need) except -1:
        cdef Py_ssize_t cap = self._cap if self._cap else 1024
        cdef unsigned char* nb
        if need <= self._cap:
            return 0
        while cap < need:
            cap *= 2
        nb = <unsigned char*>PyMem_Realloc(self._buf, cap)
        if nb == NULL:
            raise MemoryError()
        self._buf = nb
        self._cap = cap
        return 0

    cdef int _open_datagram(self) except -1:
        if self._nstarts == self._starts_cap:
            self._starts = <Py_ssize_t*>grown(self._starts, &self._starts_cap,
                                              sizeof(Py_ssize_t), 16)
        self._reserve(self._len + _HDR)
        self._starts[self._nstarts] = self._len
        self._nstarts += 1
        self._len += _HDR
        return 0

    @property
    def timestamps(self):
        return self._timestamps

    @property
    def pending(self):
        return self._pending

    @property
    def pending_bytes(self):
        return self._len

    cdef int _add(self, object callno, object ts, object payload) except -1:
        cdef long long c = _as_int(callno, b"call number", 1, _MAX_CALLNO)
        cdef long long t = _as_int(ts, b"timestamp", 0, 0xFFFFFFFF)
        cdef Py_buffer view
        if PyBytes_CheckExact(payload):
            return self._append(c, t, <const unsigned char*>PyBytes_AS_STRING(payload),
                                PyBytes_GET_SIZE(payload))
        if not PyObject_CheckBuffer(payload):
            raise TypeError(
                f"payload must be a bytes-like object, not {type(payload).__name__}")
        try:
            PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        except (BufferError, ValueError):
            raise FrameError("payload buffer is not C-contiguous") from None
        try:
            return self._append(c, t, <const unsigned char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef int _append(self, long long c, long long t, const unsigned char* src,
                     Py_ssize_t n) except -1:
        cdef Py_ssize_t size
        cdef unsigned char* dst
        if n > _MAX_PAYLOAD:
            raise FrameError(f"payload of {n} bytes exceeds 65535")
        size = self._entry_len + n
        if self.mtu:
            if _HDR + size > self.mtu:
                raise FrameError(
                    f"trunk entry of {size} bytes does not fit in mtu {self.mtu} "
                    f"with the 8-byte header")
        self._reserve(self._len + _HDR + size)
        if self.mtu and self._nstarts and \
                self._len - self._starts[self._nstarts - 1] + size >= self.mtu:
            self._open_datagram()
        if not self._nstarts:
            self._open_datagram()
        dst = self._buf + self._len
        if self._timestamps:
            wr16(dst, <unsigned int>n)
            wr16(dst + 2, <unsigned int>c)
            wr16(dst + 4, <unsigned int>(t & 0xFFFF))
        else:
            wr16(dst, <unsigned int>c)
            wr16(dst + 2, <unsigned int>n)
        memcpy(dst + self._entry_len, src, n)
        self._len += size
        self._pending += 1
        return 0

    def add(self, callno, ts, payload):
        """Buffer one payload for call ``callno`` with that call's full timestamp ``ts``."""
        self._add(callno, ts, payload)

    def flush(self, trunk_ts):
        """Return the buffered datagrams stamped ``trunk_ts`` and clear the buffer."""
        cdef long long t = _as_int(trunk_ts, b"trunk timestamp", 0, 0xFFFFFFFF)
        cdef Py_ssize_t i, start, end
        cdef unsigned char* h
        cdef list out
        if not self._pending:
            return []
        out = PyList_New(0)
        for i in range(self._nstarts):
            start = self._starts[i]
            end = self._starts[i + 1] if i + 1 < self._nstarts else self._len
            h = self._buf + start
            h[0] = 0
            h[1] = 0
            h[2] = 1
            h[3] = 1 if self._timestamps else 0
            h[4] = (t >> 24) & 0xFF
            h[5] = (t >> 16) & 0xFF
            h[6] = (t >> 8) & 0xFF
            h[7] = t & 0xFF
            out.append(PyBytes_FromStringAndSize(<char*>h, end - start))
        self._len = 0
        self._nstarts = 0
        self._pending = 0
        return out


def pack_trunk(entries, trunk_ts, timestamps=False, mtu=1240):
    """Build the trunk datagrams for ``entries`` = ``(callno, ts, payload)`` in order."""
    cdef TrunkMux mux
    _as_int(trunk_ts, b"trunk timestamp", 0, 0xFFFFFFFF)
    mux = TrunkMux(mtu, timestamps)
    for callno, ts, payload in entries:
        mux._add(callno, ts, payload)
    return mux.flush(trunk_ts)


@cython.final
cdef class TrunkDemux:
    """``feed`` = ``parse_trunk`` plus counters (datagrams, entries, truncated, errors)."""

    cdef public Py_ssize_t datagrams
    cdef public Py_ssize_t entries
    cdef public Py_ssize_t truncated
    cdef public Py_ssize_t errors

    def feed(self, data):
        cdef TrunkFrame frame
        try:
            frame = _parse(data)
        except FrameError:
            self.errors += 1
            raise
        self.datagrams += 1
        self.entries += len(frame.entries)
        if frame.truncated:
            self.truncated += 1
        return frame


def trunk_entry_stats(data):
    """``(entries, payload bytes)`` of a meta trunk datagram, counting whole entries up to the
    first truncated one (no other checks: a load tester's traffic counter, not a parser)."""
    cdef long long count = 0, payload = 0
    if not PyBytes_CheckExact(data):
        data = bytes(data)
    entry_totals(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                 &count, &payload)
    return count, payload


cdef void entry_totals(const unsigned char* p, Py_ssize_t n, long long* count,
                       long long* payload) noexcept:
    """Add the whole entries of a trunk datagram (up to the first truncated one) and their
    payload bytes to ``count`` and ``payload``; nothing when shorter than the header."""
    cdef Py_ssize_t pos = _HDR, hdr
    cdef unsigned int length
    if n < _HDR:
        return
    hdr = _ENT_TS if p[3] & 1 else _ENT
    while pos + hdr <= n:
        length = rd16(p + pos) if p[3] & 1 else rd16(p + pos + 2)
        pos += hdr + <Py_ssize_t>length
        if pos > n:
            break
        count[0] += 1
        payload[0] += length
