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
from cpython.long cimport PyLong_Check
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.ref cimport Py_INCREF
from libc.string cimport memcmp, memcpy, memmove, memset

from iaxgw._core.errors import FrameError


cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object obj, int* overflow) except? -1
    object PyMemoryView_FromObject(object obj)
    Py_buffer* PyMemoryView_GET_BUFFER(object mview)
    void PyObject_GC_UnTrack(object op)


cdef extern from *:
    """
    static char iaxgw_fmt_B[] = "B";
    #ifdef Py_GIL_DISABLED
    #define IAXGW_CALLNO_CACHE 0
    #else
    #define IAXGW_CALLNO_CACHE 1
    #endif
    """
    char* _FMT_B "iaxgw_fmt_B"
    int IAXGW_CALLNO_CACHE
    ctypedef struct PyObject
    PyObject* PyDict_GetItem(object d, object key)


# Call numbers repeat in every datagram of a trunk (one entry per call per 20 ms), so their int
# objects are interned here: one slot per 15-bit call number, filled on first use (with the GIL
# only, the fill is not atomic).  At most 32,768 small ints, a bounded ~1 MB.
cdef PyObject* _callnos[0x8000]     # indexed by callno & 0x7FFF


cdef inline object _callno_obj(unsigned int callno):
    cdef object o
    if not IAXGW_CALLNO_CACHE:
        return callno
    callno &= 0x7FFF
    if _callnos[callno] == NULL:
        o = callno
        Py_INCREF(o)
        _callnos[callno] = <PyObject*>o
    return <object>_callnos[callno]


META_TRUNK = 1
HEADER_LEN = 8
ENTRY_LEN = 4
ENTRY_TS_LEN = 6
MAX_PAYLOAD = 0xFFFF
MAX_CALLNO = 0x7FFF
MIN_MTU = 16
MAX_MTU = 0xFFFF

cdef enum:
    _HDR = 8
    _ENT = 4
    _ENT_TS = 6
    _MAX_PAYLOAD = 0xFFFF
    _MAX_CALLNO = 0x7FFF
    _MIN_MTU = 16
    _MAX_MTU = 0xFFFF


cdef inline unsigned int _rd16(const unsigned char* p) noexcept nogil:
    return (<unsigned int>p[0] << 8) | p[1]


cdef inline unsigned int _rd32(const unsigned char* p) noexcept nogil:
    return ((<unsigned int>p[0] << 24) | (<unsigned int>p[1] << 16)
            | (<unsigned int>p[2] << 8) | p[3])


cdef inline void _wr16(unsigned char* p, unsigned int v) noexcept nogil:
    p[0] = (v >> 8) & 0xFF
    p[1] = v & 0xFF


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


cdef int _check_header(const unsigned char* p, Py_ssize_t n) except -1:
    """The 8-byte meta trunk header of ``p[:n]``: its cmddata (0 or 1), else FrameError."""
    if n < _HDR:
        raise FrameError(f"trunk datagram too short: {n} bytes, need 8", n)
    if p[0] != 0 or p[1] != 0:
        raise FrameError(
            f"not a meta frame: first word is 0x{_rd16(p):04x}, not 0x0000", 0)
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
    cmddata = _check_header(p, n)
    frame = TrunkFrame.__new__(TrunkFrame)
    frame.trunk_ts = _rd32(p + 4)
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
            length = _rd16(p + pos)
            callno = _rd16(p + pos + 2) & _MAX_CALLNO
        else:
            callno = _rd16(p + pos) & _MAX_CALLNO
            length = _rd16(p + pos + 2)
        start = pos + hdr
        end = start + length
        if end > n:
            truncated = True
            break
        if cmddata:
            entries.append((_callno_obj(callno), _rd16(p + pos + 4), _view(owner, p, start, end)))
        else:
            entries.append((_callno_obj(callno), None, _view(owner, p, start, end)))
        pos = end
    frame.truncated = truncated
    return frame


def parse_trunk(data):
    """Parse one trunk meta datagram; payloads are memoryview slices of ``data``."""
    return _parse(data)


@cython.final
cdef void* _grown(void* buf, Py_ssize_t* cap, size_t item, Py_ssize_t first) except NULL:
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

    cdef unsigned char* _buf
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _len          # bytes used in _buf: all datagrams, header slots included
    cdef Py_ssize_t* _starts      # offset of each datagram in _buf
    cdef Py_ssize_t _nstarts
    cdef Py_ssize_t _starts_cap
    cdef Py_ssize_t _pending
    cdef Py_ssize_t _entry_len
    cdef readonly int mtu
    cdef bint _timestamps

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
            self._starts = <Py_ssize_t*>_grown(self._starts, &self._starts_cap,
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
            _wr16(dst, <unsigned int>n)
            _wr16(dst + 2, <unsigned int>c)
            _wr16(dst + 4, <unsigned int>(t & 0xFFFF))
        else:
            _wr16(dst, <unsigned int>c)
            _wr16(dst + 2, <unsigned int>n)
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


# ---------------------------------------------------------------------------------------------
# The trunk receive hot path of the protocol core (gateway/iax2/protocol.py): per entry, find the
# call, unwrap its timestamp, account it (RFC 3550 jitter, loss from timestamp gaps) and hand the
# payload on -- to the media sink, or, for a call that echoes (Echo() on a trunked call), straight
# back into the trunk multiplexer of its peer.  The call record's media fields live in
# ``CallMedia`` (the base class of ``gateway.iax2.calls.Call``) so this loop reads them as C
# fields.  Twin:
# ``_trunk_py.receive_trunk`` (same rules, same results).

cdef enum:
    # C copies of _core.constants TS_SKEW_MS, UNWRAP_MS and CallState.ACCEPTED / UP (the twin
    # reads those; tests/test_core_cross.py holds the two to the same results)
    _TS_SKEW_MS = 160
    _UNWRAP_MS = 50000
    _ST_ACCEPTED = 3
    _ST_UP = 4


cdef class RxStats:
    """Receive statistics of one call's voice stream (RFC 3550 jitter, loss from ts gaps)."""

    cdef public long long frames
    cdef public long long bytes
    cdef public long long max_ts
    cdef public double jitter
    cdef public double jitter_max
    cdef public double prev_transit
    cdef public long long lost
    cdef public long long ooo
    cdef public long long dup
    cdef public long long dropped
    cdef public long long ptime

    FIELDS = ("bytes", "dropped", "dup", "frames", "jitter", "jitter_max", "lost", "max_ts",
              "ooo", "prev_transit", "ptime")

    def __init__(self):
        self.frames = 0
        self.bytes = 0
        self.max_ts = -1
        self.jitter = 0.0
        self.jitter_max = 0.0
        self.prev_transit = 0.0
        self.lost = 0
        self.ooo = 0
        self.dup = 0
        self.dropped = 0
        self.ptime = 20

    cdef inline void _update(self, long long ts, long long nbytes, double now) noexcept:
        cdef double transit, d, j
        cdef long long top, gap, ptime
        self.frames += 1
        self.bytes += nbytes
        transit = now * 1000.0 - <double>ts
        if self.frames > 1:
            d = transit - self.prev_transit
            if d < 0:
                d = -d
            j = self.jitter + (d - self.jitter) * 0.0625
            self.jitter = j
            if j > self.jitter_max:
                self.jitter_max = j
        self.prev_transit = transit
        top = self.max_ts
        if ts > top:
            if top >= 0:
                ptime = self.ptime
                if ptime > 0:
                    gap = ts - top - ptime
                    if gap >= ptime:
                        self.lost += gap // ptime
            self.max_ts = ts
        elif ts == top:
            self.dup += 1
        else:
            self.ooo += 1
            if self.lost:
                self.lost -= 1

    def update(self, ts, nbytes, double now):
        """Account one received voice frame with (unwrapped) ``ts`` arriving at ``now``."""
        self._update(ts, nbytes, now)

    @property
    def loss_pct(self):
        cdef long long total = self.frames + self.lost
        return (self.lost * 100) // total if total else 0


def trunk_entry_stats(data):
    """``(entries, payload bytes)`` of a meta trunk datagram, counting whole entries up to the
    first truncated one (no other checks: a load tester's traffic counter, not a parser)."""
    cdef long long count = 0, payload = 0
    if not PyBytes_CheckExact(data):
        data = bytes(data)
    _entry_totals(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                  &count, &payload)
    return count, payload


cdef void _entry_totals(const unsigned char* p, Py_ssize_t n, long long* count,
                        long long* payload) noexcept:
    """Add the whole entries of a trunk datagram (up to the first truncated one) and their
    payload bytes to ``count`` and ``payload``; nothing when shorter than the header."""
    cdef Py_ssize_t pos = _HDR, hdr
    cdef unsigned int length
    if n < _HDR:
        return
    hdr = _ENT_TS if p[3] & 1 else _ENT
    while pos + hdr <= n:
        length = _rd16(p + pos) if p[3] & 1 else _rd16(p + pos + 2)
        pos += hdr + <Py_ssize_t>length
        if pos > n:
            break
        count[0] += 1
        payload[0] += length


# Frame stamps of the load tester's echo test (twin: ``_trunk_py.stamp_payload``): a 16-bit
# frame counter in the least significant bits of 16 fixed bytes of a G.711 payload, bit j in
# byte (2j + 1) * len // 32.  An echo that passes payloads through bit for bit brings it back.

STAMP_BITS = 16
STAMP_MIN_LEN = 16
STAMP_WINDOW = 1024

cdef enum:
    _STAMP_WIN = 1024


cdef inline int _stamp_write(unsigned char* p, Py_ssize_t n, unsigned int value) noexcept:
    cdef int j
    cdef Py_ssize_t pos
    for j in range(16):
        pos = (2 * j + 1) * n // 32
        p[pos] = (p[pos] & 0xFE) | ((value >> j) & 1)
    return 0


cdef inline long _stamp_read(const unsigned char* p, Py_ssize_t n) noexcept:
    cdef int j
    cdef long value = 0
    if n < 16:
        return -1
    for j in range(16):
        value |= <long>(p[(2 * j + 1) * n // 32] & 1) << j
    return value


cdef inline bint _stamp_same(const unsigned char* a, const unsigned char* b,
                             Py_ssize_t n) noexcept:
    """``a`` and ``b`` (``n`` >= 16 bytes each) are equal but for the stamp bits."""
    cdef int j
    cdef Py_ssize_t pos, prev = 0
    for j in range(16):
        pos = (2 * j + 1) * n // 32
        if pos > prev and memcmp(a + prev, b + prev, pos - prev) != 0:
            return False
        if (a[pos] ^ b[pos]) & 0xFE:
            return False
        prev = pos + 1
    return prev >= n or memcmp(a + prev, b + prev, n - prev) == 0


cdef inline bytes _as_bytes(object data):
    return data if PyBytes_CheckExact(data) else bytes(data)


cdef bytes _stamped(bytes payload, unsigned int value):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
    cdef bytes out
    if n < 16:
        return payload
    out = PyBytes_FromStringAndSize(PyBytes_AS_STRING(payload), n)
    _stamp_write(<unsigned char*>PyBytes_AS_STRING(out), n, value)
    return out


def stamp_payload(payload, value):
    """``payload`` with ``value & 0xFFFF`` in the low bits of its 16 stamp bytes; a payload
    under 16 bytes is returned unchanged."""
    cdef bytes b = _as_bytes(payload)
    return _stamped(b, <unsigned int>(value & 0xFFFF))


def read_stamp(payload):
    """The 16-bit stamp of ``payload``; -1 when it is too short to carry one."""
    cdef bytes b = _as_bytes(payload)
    return _stamp_read(<const unsigned char*>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))


def unstamp(payload):
    """``payload`` with the low bits of its stamp bytes cleared."""
    cdef bytes b = _as_bytes(payload)
    return _stamped(b, 0) if PyBytes_GET_SIZE(b) >= 16 else b


def stamp_matches(payload, original):
    """``payload`` is ``original`` with some stamp: equal but for the stamp bits."""
    cdef bytes a = _as_bytes(payload)
    cdef bytes b = _as_bytes(original)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(a)
    if n != PyBytes_GET_SIZE(b):
        return False
    if n < 16:
        return a == b
    return _stamp_same(<const unsigned char*>PyBytes_AS_STRING(a),
                       <const unsigned char*>PyBytes_AS_STRING(b), n)


cdef class TxProbe:
    """The load tester's send side of one call (``sim.load.metrics.CallStats``): the payload cycle
    it sends (``cycle``; frame ``k`` sends ``cycle[(k * 20 // frame_ms + offset) % len]``), the
    frames and bytes sent, the first and last send times, and ``marks`` (a ``deque``): when
    each cycle started.  ``tx_tick`` builds a whole media tick from these without a Python
    call per call."""

    cdef public long long callno
    cdef public long long k
    cdef public list cycle
    cdef public long long offset
    cdef public long long frame_ms
    cdef public long long frames
    cdef public long long bytes
    cdef public double t_first
    cdef public double t_last
    cdef public bint sent
    cdef public object marks
    #: stamp every payload with its frame counter (``ts_ms // frame_ms``), see stamp_payload
    cdef public bint stamp

    def __init__(self, list cycle=None, long long frame_ms=20, marks=None,
                 long long offset=0):
        if frame_ms < 1:
            raise ValueError(f"frame_ms must be >= 1, got {frame_ms}")
        self.cycle = cycle if cycle is not None else []
        self.frame_ms = frame_ms
        self.marks = marks
        self.offset = offset

    cdef int _sent_at(self, double now) except -1:
        self.frames += 1
        self.t_last = now
        if not self.sent:
            self.sent = True
            self.t_first = now
        return 0

    cdef int _count_frame(self, long long i, Py_ssize_t nbytes, double now) except -1:
        """Count the frame of cycle index ``i`` (``nbytes`` long) sent at ``now``."""
        self._sent_at(now)
        if i == 0 and self.marks is not None:
            self.marks.append(now)
        self.bytes += nbytes
        return 0

    cdef object _take(self, long long ts_ms, double now):
        cdef Py_ssize_t n = len(self.cycle)
        cdef long long i
        cdef object payload
        if not n:
            self._sent_at(now)
            return b""
        i = _floor_mod(ts_ms // self.frame_ms + self.offset, n)
        payload = self.cycle[i]
        if self.stamp and PyBytes_CheckExact(payload) and PyBytes_GET_SIZE(payload) >= 16:
            payload = _stamped(<bytes>payload,
                               <unsigned int>((ts_ms // self.frame_ms) & 0xFFFF))
        self._count_frame(i, len(payload), now)
        return payload

    def take(self, long long ts_ms, double now):
        """Count one frame sent at ``now`` for media time ``ts_ms`` and return its payload."""
        return self._take(ts_ms, now)

    def count(self, Py_ssize_t nbytes, double now):
        """Count a frame whose payload the caller made."""
        self.frames += 1
        self.bytes += nbytes
        self.t_last = now
        if not self.sent:
            self.sent = True
            self.t_first = now


def tx_tick(list probes, double now):
    """One media tick: for each ``TxProbe``, its next frame (``k``, advanced) counted and
    ``(callno, payload)`` in the returned list."""
    cdef list items = []
    cdef TxProbe probe
    cdef long long k
    for obj in probes:
        probe = <TxProbe?>obj
        k = probe.k
        probe.k = k + 1
        items.append((_callno_obj(<unsigned int>(probe.callno & _MAX_CALLNO))
                      if 0 <= probe.callno <= _MAX_CALLNO else probe.callno,
                      probe._take(k * 20, now)))
    return items


def datagram_census(list items):
    """A load tester's traffic counters for a list of datagrams (tuples whose first item is the
    datagram: a receive batch ``(data, addr, age)`` or a send list ``(data, addr)``):
    ``(full, full_bytes, mini, mini_bytes, trunk, trunk_bytes, entries, entry_bytes, no_ts)``
    -- full frames, voice mini frames (anything else that is not a trunk datagram counts as
    mini, as the per-datagram counter does), trunk datagrams with their entries and entries'
    payload bytes (``trunk_entry_stats``), and the trunk datagrams without entry timestamps.
    Datagrams under 4 bytes are skipped."""
    cdef long long full = 0, full_b = 0, mini = 0, mini_b = 0, trunk = 0, trunk_b = 0
    cdef long long entries = 0, entry_b = 0, no_ts = 0
    cdef Py_ssize_t n
    cdef const unsigned char* p
    cdef object data
    for item in items:
        data = (<tuple?>item)[0]
        if not PyBytes_CheckExact(data):
            data = bytes(data)
        p = <const unsigned char*>PyBytes_AS_STRING(data)
        n = PyBytes_GET_SIZE(data)
        if n < 4:
            continue
        if p[0] & 0x80:
            full += 1
            full_b += n
        elif p[0] == 0 and p[1] == 0 and not p[2] & 0x80:
            trunk += 1
            trunk_b += n
            if not p[3] & 1:
                no_ts += 1
            _entry_totals(p, n, &entries, &entry_b)
        else:
            mini += 1
            mini_b += n
    return full, full_b, mini, mini_b, trunk, trunk_b, entries, entry_b, no_ts


cdef struct _Kept:
    # one frame kept for the audio analysis (RxProbe.pending), without Python objects when it is
    # a stamped frame of ours: its payload is the cycle's payload ``idx`` with stamp ``stamp``
    long long ts
    double arrival
    long long idx           # -1: the payload is the next one in RxProbe._kept_objs
    unsigned int stamp


cdef class RxProbe:
    """The load tester's receive accounting of one call (``sim.load.metrics.CallStats``): RFC 3550
    interarrival jitter (its running value, maximum and sum), a 64-frame window of received
    media timestamps for duplicates, reordering and loss, and the payloads kept for the audio
    analysis.  ``receive_trunk`` feeds it straight from the datagram for a call whose ``probe``
    is set, so a trunked load test pays no Python call per entry.

    ``seq``: the entry has no timestamp of its own (a trunk without per-entry timestamps): its
    media time is the previous one plus ``frame_ms``.  ``pending`` (None: keep nothing) holds
    ``(ts, arrival, payload)`` (tuples the garbage collector does not track); when it reaches
    ``limit`` its oldest half is dropped and counted in ``dropped`` (the reader analyses it long
    before, unless it falls behind).  The frames kept since ``pending`` was last read are held
    in a C array and become those tuples when it is read: a stamped frame of ours (see
    ``stamp_cycle``) is kept as its cycle index and stamp, no object at all, its payload made
    again (bit for bit: the stamp bits are all it may differ in) only if it is read;
    ``pending_count`` counts them without building anything."""

    cdef public long long frames
    cdef public long long bytes
    cdef public long long duplicates
    cdef public long long out_of_order
    cdef public long long max_ts
    cdef public long long min_ts
    cdef public long long last
    cdef public long long frame_ms
    cdef public long long dropped
    cdef public double jitter
    cdef public double jitter_max
    cdef public double jitter_sum
    cdef public double transit
    cdef public double t_first
    cdef public double t_last
    cdef public unsigned long long mask
    cdef list _pend                 # pending as built so far (None: keep nothing)
    cdef _Kept* _kept               # frames kept since, oldest first
    cdef Py_ssize_t _nkept
    cdef Py_ssize_t _kept_cap
    cdef list _kept_objs            # payloads of the kept frames without a cycle index
    cdef public Py_ssize_t limit
    #: exact-echo bookkeeping (set ``own``, a frozenset of the payloads we send, and ``first``):
    #: kept payloads that are not ours, arrival times of ``first``, and whether kept frames were
    #: dropped since ``take_exact``
    cdef public frozenset own
    cdef public bytes first
    cdef public list strays
    cdef public list firsts
    cdef public bint exact_lost
    #: frames that came without a timestamp of their own (``seq``)
    cdef public long long seq_frames
    #: stamp accounting (set ``stamp_cycle``, the unstamped payloads the TxProbe sends, and its
    #: ``stamp_offset``; it then replaces ``own``/``first``): frames that carried one of our
    #: stamps on the right payload (``s_frames``, duplicates and late ones among them), the
    #: lowest and highest frame counter, the frames that did not (``s_strays``), and the RFC
    #: 3550 jitter of the round trip (transit = arrival - counter x frame_ms)
    cdef list _cycle
    cdef public long long stamp_offset
    cdef public long long s_frames
    cdef public long long s_dup
    cdef public long long s_ooo
    cdef public long long s_lo
    cdef public long long s_hi
    cdef public long long s_strays
    cdef public double s_jitter
    cdef public double s_jitter_max
    cdef public double s_jitter_sum
    cdef public double s_transit
    cdef unsigned char _ring[_STAMP_WIN]

    def __init__(self, long long frame_ms=20, bint keep=True, Py_ssize_t limit=300):
        if frame_ms < 1:
            raise ValueError(f"frame_ms must be >= 1, got {frame_ms}")
        self.frame_ms = frame_ms
        self._pend = [] if keep else None
        self._kept_objs = []
        self.limit = limit if limit > 1 else 2
        self.last = -1
        self.strays = []
        self.firsts = []

    def __dealloc__(self):
        PyMem_Free(self._kept)

    @property
    def pending(self):
        """The kept frames ``[(ts, arrival, payload), ...]`` (None: ``keep`` was false); the same
        list each time, the frames kept since the last read appended to it."""
        self._build_pending()
        return self._pend

    @pending.setter
    def pending(self, value):
        if value is not None and not isinstance(value, list):
            raise TypeError(f"pending must be a list or None, not {type(value).__name__}")
        self._nkept = 0
        self._kept_objs = []
        self._pend = value

    @property
    def pending_count(self):
        """``len(pending)`` without building it (0 when nothing is kept)."""
        return len(self._pend) + self._nkept if self._pend is not None else 0

    @property
    def stamp_cycle(self):
        return self._cycle

    @stamp_cycle.setter
    def stamp_cycle(self, value):
        if value is not None and not isinstance(value, list):
            raise TypeError(f"stamp_cycle must be a list or None, not {type(value).__name__}")
        self._build_pending()           # kept frames refer to the cycle they matched
        self._cycle = value

    cdef int _build_pending(self) except -1:
        """The kept frames appended to ``_pend`` as tuples."""
        cdef Py_ssize_t i, j = 0
        cdef _Kept* r
        cdef list cycle = self._cycle
        cdef object payload, orig
        if not self._nkept:
            return 0
        for i in range(self._nkept):
            r = &self._kept[i]
            if r.idx < 0:
                payload = self._kept_objs[j]
                j += 1
            else:
                orig = cycle[r.idx] if cycle is not None and r.idx < len(cycle) else None
                if not PyBytes_CheckExact(orig) or PyBytes_GET_SIZE(orig) < 16:
                    raise RuntimeError("stamp_cycle was changed in place while frames that "
                                       "matched it were kept")
                payload = _stamped(<bytes>orig, r.stamp)
            item = (r.ts, r.arrival, payload)
            PyObject_GC_UnTrack(item)
            self._pend.append(item)
        self._nkept = 0
        self._kept_objs = []
        return 0

    cdef int _keep(self, long long ts, double arrival, long long idx, unsigned int stamp,
                   object payload) except -1:
        """Keep a frame (``idx`` >= 0: cycle index of a stamped frame of ours; else ``payload``),
        then drop the oldest half of what is kept when it reaches ``limit``."""
        cdef _Kept* nk
        cdef Py_ssize_t k, old, objs = 0, i
        if self._nkept == self._kept_cap:
            self._kept = <_Kept*>_grown(self._kept, &self._kept_cap, sizeof(_Kept), 64)
        nk = &self._kept[self._nkept]
        nk.ts = ts
        nk.arrival = arrival
        nk.idx = idx
        nk.stamp = stamp
        self._nkept += 1
        if idx < 0:
            self._kept_objs.append(payload)
        if len(self._pend) + self._nkept < self.limit:
            return 0
        k = self.limit // 2
        old = min(k, len(self._pend))
        del self._pend[:old]
        if k > old:
            for i in range(k - old):
                objs += self._kept[i].idx < 0
            del self._kept_objs[:objs]
            memmove(self._kept, self._kept + (k - old), (self._nkept - (k - old)) * sizeof(_Kept))
            self._nkept -= k - old
        self.dropped += k
        self.exact_lost = True
        return 0

    def take_exact(self):
        """``(strays, firsts, lost)`` since the last call (see the fields), and start afresh:
        for the reader that takes ``pending`` at the same moment."""
        out = (self.strays, self.firsts, self.exact_lost)
        self.strays = []
        self.firsts = []
        self.exact_lost = False
        return out

    cdef long long _stamp_rx(self, double arrival, const unsigned char* p, Py_ssize_t size,
                             unsigned int* stamp) except -2:
        """The stamp accounting of one frame (``p``: its ``size`` bytes, NULL: not a ``bytes``
        payload); its cycle index, or -1 (not one of our frames); its stamp into ``stamp``."""
        cdef list cycle = self._cycle
        cdef Py_ssize_t n = len(cycle)
        cdef long v
        cdef long long hi = self.s_hi, k, idx, c
        cdef object orig
        cdef double transit, d, j
        if not n or p == NULL:
            return -1
        v = _stamp_read(p, size)
        if v < 0:
            return -1
        stamp[0] = <unsigned int>v
        if self.s_frames:
            k = (hi & ~(<long long>0xFFFF)) | v
            if k > hi + 0x8000:
                k -= 0x10000
            elif k < hi - 0x8000:
                k += 0x10000
            if k < 0:
                return -1
        else:
            k = v
        idx = _floor_mod(k + self.stamp_offset, n)
        orig = cycle[idx]
        if not PyBytes_CheckExact(orig) or PyBytes_GET_SIZE(orig) != size \
                or not _stamp_same(p, <const unsigned char*>PyBytes_AS_STRING(orig), size):
            return -1
        transit = arrival * 1000.0 - <double>(k * self.frame_ms)
        if not self.s_frames:
            self.s_lo = k
            self.s_hi = k
            self._ring[k % _STAMP_WIN] = 1
        else:
            d = transit - self.s_transit
            if d < 0.0:
                d = -d
            j = self.s_jitter + (d - self.s_jitter) * 0.0625
            self.s_jitter = j
            self.s_jitter_sum += j
            if j > self.s_jitter_max:
                self.s_jitter_max = j
            if k > hi:
                if k - hi >= _STAMP_WIN:
                    memset(self._ring, 0, _STAMP_WIN)
                else:
                    c = hi + 1
                    while c < k:
                        self._ring[c % _STAMP_WIN] = 0
                        c += 1
                self._ring[k % _STAMP_WIN] = 1
                self.s_hi = k
            elif k > hi - _STAMP_WIN:
                if self._ring[k % _STAMP_WIN]:
                    self.s_dup += 1
                else:
                    self._ring[k % _STAMP_WIN] = 1
                    self.s_ooo += 1
            else:
                self.s_ooo += 1
            if k < self.s_lo:
                self.s_lo = k
        self.s_transit = transit
        self.s_frames += 1
        return idx

    cdef int _rx(self, long long ts, double arrival, object payload, const unsigned char* p,
                 Py_ssize_t nbytes, bint seq) except -1:
        """One frame: ``payload`` (None: made from ``p``, ``nbytes`` long, only if it has to
        be kept as an object); ``p`` its bytes when it is a ``bytes`` payload, else NULL."""
        cdef long long n, fm, hi, k, i
        cdef long long idx = -1
        cdef unsigned int stamp = 0
        cdef double transit, d, j
        cdef unsigned long long bit
        if seq:
            self.seq_frames += 1
            if self.last >= 0:
                ts = self.last + self.frame_ms
        if ts > self.last:
            self.last = ts
        self.frames += 1
        n = self.frames
        self.bytes += nbytes
        self.t_last = arrival
        transit = arrival * 1000.0 - <double>ts
        if n == 1:
            self.t_first = arrival
            self.max_ts = ts
            self.min_ts = ts
            self.mask = 1
        else:
            d = transit - self.transit
            if d < 0.0:
                d = -d
            j = self.jitter + (d - self.jitter) * 0.0625
            self.jitter = j
            self.jitter_sum += j
            if j > self.jitter_max:
                self.jitter_max = j
            fm = self.frame_ms
            hi = self.max_ts
            if ts > hi:
                k = (ts - hi + (fm >> 1)) // fm
                self.mask = ((self.mask << k) | 1) if k < 64 else 1
                self.max_ts = ts
            else:
                i = (hi - ts + (fm >> 1)) // fm
                if i < 64:
                    bit = (<unsigned long long>1) << i
                    if self.mask & bit:
                        self.duplicates += 1
                    else:
                        self.mask |= bit
                        self.out_of_order += 1
                else:
                    self.out_of_order += 1
                if ts < self.min_ts:
                    self.min_ts = ts
        self.transit = transit
        if self._cycle is not None:
            idx = self._stamp_rx(arrival, p, nbytes, &stamp)
            if idx < 0:
                self.s_strays += 1
        if self._pend is None:
            return 0
        if idx >= 0:
            if idx == 0:
                self.firsts.append(arrival)
            return self._keep(ts, arrival, idx, stamp, None)
        if payload is None:
            payload = PyBytes_FromStringAndSize(<const char*>p, nbytes)
        if self._cycle is not None:
            self.strays.append(payload)
        elif self.own is not None:
            # checked now, while the payload is in the cache (the batch check later read
            # every payload again: 9 % of the load tester at 100,000 frames a second)
            if payload not in self.own:
                self.strays.append(payload)
            elif self.first is not None and payload == self.first:
                self.firsts.append(arrival)
        return self._keep(ts, arrival, -1, 0, payload)

    def on_rx(self, long long ts, double arrival, payload, bint seq=False):
        """One received voice frame: media timestamp ``ts`` (ms, unwrapped), local arrival time
        (s).  Returns the timestamp it was counted at (``seq``: the previous one + frame_ms)."""
        cdef const unsigned char* p = NULL
        if PyBytes_CheckExact(payload):
            p = <const unsigned char*>PyBytes_AS_STRING(payload)
        self._rx(ts, arrival, payload, p, len(payload), seq)
        return self.last if seq else ts


cdef class CallMedia:
    """The media fields of a call record (base class of ``gateway.iax2.calls.Call``)."""

    cdef public long long callno
    cdef public object state
    cdef public object addr
    cdef public double start
    cdef public long long codec
    cdef public long long format_rx
    cdef public long long svoiceformat
    cdef public long long rx_last
    cdef public long long last_voice_ts
    cdef public long long last_full_voice_ts
    cdef public long long nextpred
    cdef public long long lastsent
    cdef public long long tx_frames
    cdef public bint trunk
    cdef public bint echo
    cdef public RxStats rx
    #: the load tester's RxProbe for this call: entries go to it, not to the sink
    cdef public RxProbe probe

    def __cinit__(self, *args, **kwargs):
        self.state = 0
        self.addr = None
        self.last_voice_ts = -1
        self.rx = RxStats()


cdef inline long long _floor_mod(long long a, long long m) noexcept:
    cdef long long r = a % m
    return r + m if r < 0 else r


cdef inline long long _bytes_per_ms(long long fmt) noexcept:
    # bytes per millisecond of the codecs we pace (the twin's _BPMS): 16-bit linear at 8 and
    # 16 kHz, else one byte per sample at 8 kHz
    if fmt == 0x40:
        return 16
    if fmt == 0x8000:
        return 32
    return 8


cdef inline long long _next_voice_ts(CallMedia call, double now) noexcept:
    """send_voice's timestamp for a call's next voice payload sent at ``now``: the predicted one
    while within the skew, else now snapped down to 20 ms (never repeating the last)."""
    cdef long long ms = <long long>((now - call.start) * 1000.0)
    cdef long long pred = call.nextpred
    cdef long long ts
    if call.last_voice_ts < 0 or not -_TS_SKEW_MS <= ms - pred <= _TS_SKEW_MS:
        ts = ms - _floor_mod(ms, 20)
        if ts <= call.last_voice_ts:
            ts = call.last_voice_ts + 20
        return ts
    return pred


cdef inline void _voice_sent(CallMedia call, long long ts, Py_ssize_t length) noexcept:
    call.nextpred = ts + length // _bytes_per_ms(call.codec)
    call.last_voice_ts = ts
    call.tx_frames += 1
    call.lastsent = ts


def next_voice_ts(CallMedia call, double now):
    """The timestamp of ``call``'s next voice payload sent at ``now`` (``Endpoint.send_voice``
    takes it from here: the rule lives once per implementation)."""
    return _next_voice_ts(call, now)


def voice_sent(CallMedia call, long long ts, Py_ssize_t length):
    """Account one voice payload of ``length`` bytes sent with ``ts`` (its successor's
    predicted timestamp, the last voice and full timestamps, the frame count)."""
    _voice_sent(call, ts, length)


cdef struct _TrunkCounts:
    long long entries
    long long unknown
    long long inactive
    long long echoed
    bint truncated


cdef list _receive_trunk(object data, dict calls, double epoch, double now, object sink,
                         TrunkMux mux, _TrunkCounts* out):
    """``receive_trunk`` on a ``bytes`` datagram: counts into ``out``, returns the calls to VNAK
    (or None)."""
    cdef const unsigned char* p
    cdef Py_ssize_t n, pos, start, hdr
    cdef unsigned int length, callno, ts16
    cdef unsigned char cmddata
    cdef long long trunk_ts, ts, last, st
    cdef PyObject* found
    cdef CallMedia call
    cdef list vnak = None
    out.entries = 0
    out.unknown = 0
    out.inactive = 0
    out.echoed = 0
    out.truncated = False
    p = <const unsigned char*>PyBytes_AS_STRING(data)
    n = PyBytes_GET_SIZE(data)
    cmddata = _check_header(p, n)
    trunk_ts = _rd32(p + 4)
    hdr = _ENT_TS if cmddata else _ENT
    pos = _HDR
    while pos < n:
        if n - pos < hdr:
            out.truncated = True
            break
        if cmddata:
            length = _rd16(p + pos)
            callno = _rd16(p + pos + 2) & _MAX_CALLNO
            ts16 = _rd16(p + pos + 4)
        else:
            callno = _rd16(p + pos) & _MAX_CALLNO
            length = _rd16(p + pos + 2)
            ts16 = 0
        start = pos + hdr
        if start + <Py_ssize_t>length > n:
            out.truncated = True
            break
        pos = start + length
        out.entries += 1
        found = PyDict_GetItem(calls, _callno_obj(callno))
        if found == NULL or not isinstance(<object>found, CallMedia):
            out.unknown += 1
            continue
        call = <CallMedia>found
        st = call.state
        if call.format_rx == 0 or st > _ST_UP:
            out.inactive += 1
            if call.format_rx == 0:
                if vnak is None:
                    vnak = []
                vnak.append(call)
            continue
        last = call.rx_last
        if cmddata:
            ts = (last & 0xFFFF0000) | ts16
            if ts < last - _UNWRAP_MS:
                ts += 0x10000
            elif ts > last + _UNWRAP_MS and ts >= 0x10000:
                ts -= 0x10000
        else:
            # ms since the call began of this trunk timestamp (as int() in the twin)
            ts = trunk_ts + <long long>((epoch - call.start) * 1000.0)
            if ts < 0:
                ts = 0
        if ts > last:
            call.rx_last = ts
        if call.rx is not None:
            call.rx._update(ts, length, now)
        if (mux is not None and call.echo and call.trunk and call.svoiceformat == call.codec
                and _ST_ACCEPTED <= st <= _ST_UP
                and (mux.mtu == 0 or _HDR + mux._entry_len + <Py_ssize_t>length <= mux.mtu)):
            # gateway.iax2.protocol.Endpoint.send_voice (its trunk branch), for the echoed payload
            ts = _next_voice_ts(call, now)
            if 0 <= ts <= 0xFFFFFFFF:
                _voice_sent(call, ts, length)
                mux._append(call.callno, ts, p + start, length)
                out.echoed += 1
                continue
        if call.probe is not None:
            call.probe._rx(ts, now, None, p + start, length, not cmddata)
            continue
        sink(_callno_obj(<unsigned int>call.callno), ts,
             PyBytes_FromStringAndSize(<const char*>(p + start), length), now)
    return vnak


cpdef tuple receive_trunk(data, dict calls, double epoch, double now, sink, echo_mux=None):
    """Account and deliver the entries of one trunk datagram (see the section comment).

    ``calls``: call number -> call record (``CallMedia``) of the datagram's source; ``epoch``:
    when that source's trunk timestamps were 0 (loop clock); ``sink(callno, ts, payload, now)``
    gets each payload not echoed; ``echo_mux``: the ``TrunkMux`` towards the source, for calls
    whose ``echo`` is set.  Returns ``(entries, unknown, inactive, echoed, truncated, vnak)``,
    ``vnak`` the calls that got media before their first full voice frame.  A malformed header
    raises ``FrameError`` (as ``parse_trunk``)."""
    cdef _TrunkCounts c
    cdef TrunkMux mux = None
    if echo_mux is not None:
        mux = <TrunkMux?>echo_mux
    if not PyBytes_CheckExact(data):
        data = bytes(data)
    vnak = _receive_trunk(data, calls, epoch, now, sink, mux, &c)
    return c.entries, c.unknown, c.inactive, c.echoed, c.truncated, vnak if vnak is not None else []


cdef object _mini_frame(long long callno, long long ts, const unsigned char* payload,
                        Py_ssize_t n):
    """A voice mini frame (source call number, low 16 bits of ``ts``, payload)."""
    cdef object frame = PyBytes_FromStringAndSize(NULL, 4 + n)
    cdef unsigned char* q = <unsigned char*>PyBytes_AS_STRING(frame)
    q[0] = <unsigned char>((callno >> 8) & 0x7F)
    q[1] = <unsigned char>(callno & 0xFF)
    q[2] = <unsigned char>((ts >> 8) & 0xFF)
    q[3] = <unsigned char>(ts & 0xFF)
    if n:
        memcpy(q + 4, payload, <size_t>n)
    return frame


cdef inline bint _mini_ok(CallMedia call, long long ts) noexcept:
    """send_voice would send ``ts`` as a mini frame (not a full frame: same format as the last
    full voice frame, and the timestamp's upper 16 bits not moved on by two or more)."""
    return (call.svoiceformat == call.codec and call.last_voice_ts >= 0
            and (ts >> 16) - (call.last_voice_ts >> 16) < 2)


cdef bint _receive_mini(CallMedia call, const unsigned char* p, Py_ssize_t size, double now,
                        object sink, list out) except -1:
    """The mini-frame branch of ``Endpoint.receive_datagram`` for an active call: timestamp
    unwrap, receive statistics, then the payload echoed back as a mini frame into ``out``
    (``call.echo``, not trunked), to the call's probe, or to ``sink``.  True when echoed."""
    cdef long long last = call.rx_last
    cdef long long ts = (last & 0xFFFF0000) | (<long long>p[2] << 8) | p[3]
    cdef long long st, ets
    cdef Py_ssize_t length = size - 4
    if ts < last - _UNWRAP_MS:
        ts += 0x10000
    elif ts > last + _UNWRAP_MS and ts >= 0x10000:
        ts -= 0x10000
    if ts > last:
        call.rx_last = ts
    if call.rx is not None:
        call.rx._update(ts, length, now)
    if call.echo and not call.trunk and out is not None:
        st = call.state
        if _ST_ACCEPTED <= st <= _ST_UP:
            ets = _next_voice_ts(call, now)
            if 0 <= ets <= 0xFFFFFFFF and _mini_ok(call, ets):
                _voice_sent(call, ets, length)
                out.append((_mini_frame(call.callno, ets, p + 4, length), call.addr))
                return True
    if call.probe is not None:
        call.probe._rx(ts, now, None, p + 4, length, False)
        return False
    sink(_callno_obj(<unsigned int>call.callno), ts,
         PyBytes_FromStringAndSize(<const char*>(p + 4), length), now)
    return False


def receive_mini(CallMedia call, data, double now, sink, list out=None):
    """``Endpoint.receive_datagram``'s mini-frame branch after the call was found active (see
    ``_receive_mini``): ``data`` the whole mini frame (at least 4 bytes).  True when echoed."""
    if not PyBytes_CheckExact(data):
        data = bytes(data)
    if PyBytes_GET_SIZE(data) < 4:
        raise FrameError("mini frame shorter than 4 bytes")
    return _receive_mini(call, <const unsigned char*>PyBytes_AS_STRING(data),
                         PyBytes_GET_SIZE(data), now, sink, out)


cdef class TrunkRunTotals:
    """What ``receive_media_run`` took: ``index`` (the next datagram of the batch), ``floor``
    (the last arrival time), the trunk datagrams and their entries, the entries of unknown and
    not (yet) active calls and the truncated datagrams among them, the mini frames taken and
    the mini frames echoed back.  Updated as it goes, so a caller that catches an exception
    knows which datagram raised (``index``)."""

    cdef public Py_ssize_t index
    cdef public double floor
    cdef public long long datagrams
    cdef public long long entries
    cdef public long long unknown
    cdef public long long inactive
    cdef public long long truncated
    cdef public long long mini
    cdef public long long mini_out

    def __init__(self, Py_ssize_t index=0, double floor=0.0):
        self.index = index
        self.floor = floor
        self.datagrams = 0
        self.entries = 0
        self.unknown = 0
        self.inactive = 0
        self.truncated = 0
        self.mini = 0
        self.mini_out = 0


#: Receive epochs kept for trunk sources without calls, at most (see ``trunk_epoch``).
TRUNK_EPOCHS_MAX = 4096
cdef Py_ssize_t _EPOCHS_MAX = TRUNK_EPOCHS_MAX


cpdef double trunk_epoch(dict epochs, dict by_addr, object addr, double now, bint reset):
    """The receive epoch of ``addr``'s trunk stream: the arrival time of its first datagram,
    or of the last one with trunk timestamp 0 (``reset``: the sender restarted its stream).

    A source with calls always keeps its epoch (its calls' timestamps hang on it).  Sources
    without calls (strangers, ended trunks) are kept while the table has fewer than
    ``TRUNK_EPOCHS_MAX`` entries; when it is full they are evicted to make room for a source
    with calls, and a stranger's datagram just uses its own arrival time."""
    cdef object ep = epochs.get(addr)
    if ep is not None and not reset:
        return <double>ep
    if ep is None and len(epochs) >= _EPOCHS_MAX:
        if not by_addr.get(addr):
            return now
        for a in [a for a in epochs if not by_addr.get(a)]:
            del epochs[a]
    epochs[addr] = now
    return now


def receive_media_run(list batch, double loop_now, dict by_addr, dict epochs, sink, dict trunks,
                      bint echo_used, Py_ssize_t max_datagram, TrunkRunTotals totals, list acc,
                      list out):
    """The server's batch of received datagrams ``(data, addr, age_s)``, from
    ``totals.index``: each is stamped ``loop_now - age_s`` (never before ``totals.floor``, never
    before the previous one), and consecutive media datagrams are taken here:

    - well-formed trunk datagrams (``00 00 01``, 8..``max_datagram`` bytes, header valid) go
      through ``receive_trunk`` with their source's calls (``by_addr``), trunk epoch
      (``epochs``, set to the arrival time when missing or when the trunk timestamp is 0) and
      echo stream (``trunks``, when ``echo_used``);
    - voice mini frames of an active call of their source (``Endpoint.receive_datagram``'s
      mini branch): an echoing call's payload goes back as a mini frame into ``out``.

    Stops before any other datagram (full frames, mini frames of unknown or inactive calls,
    malformed ones) or one whose source needs an echo stream made.  Counts go to ``totals``; a
    trunk datagram whose outcome needs the caller -- calls to VNAK, or echoed entries while its
    stream's flush ``timer`` is None -- is appended to ``acc`` as ``(addr, now, vnak, echoed)``."""
    cdef Py_ssize_t i = totals.index, n = len(batch), size
    cdef const unsigned char* p
    cdef double now, floor = totals.floor
    cdef object item, data, addr, calls, st, ep
    cdef TrunkMux mux
    cdef _TrunkCounts c
    cdef list vnak
    cdef dict no_calls = {}
    cdef PyObject* found
    cdef CallMedia call
    cdef long long state
    cdef bint echoed
    while i < n:
        item = batch[i]
        data = (<tuple?>item)[0]
        if not PyBytes_CheckExact(data):
            break
        size = PyBytes_GET_SIZE(data)
        if size < 4 or size > max_datagram:
            break
        p = <const unsigned char*>PyBytes_AS_STRING(data)
        addr = (<tuple>item)[1]
        if p[0] < 0x80 and (p[0] or p[1]):
            # a voice mini frame
            calls = by_addr.get(addr)
            if calls is None:
                break
            found = PyDict_GetItem(<dict?>calls, _callno_obj(((<unsigned int>p[0]) << 8) | p[1]))
            if found == NULL or not isinstance(<object>found, CallMedia):
                break
            call = <CallMedia>found
            state = call.state
            if call.format_rx == 0 or state > _ST_UP:
                break                   # counted, maybe VNAKed, by receive_datagram
            now = loop_now - <double>(<tuple>item)[2]
            if now < floor:
                now = floor
            floor = now
            totals.floor = now
            echoed = _receive_mini(call, p, size, now, sink, out)
            i += 1
            totals.index = i
            totals.mini += 1
            if echoed:
                totals.mini_out += 1
            continue
        if size < _HDR or p[0] != 0 or p[1] != 0 or p[2] != 1 or p[3] > 1:
            break
        calls = by_addr.get(addr)
        st = None
        if echo_used:
            st = trunks.get(addr)
            if st is None and calls:
                break               # the caller makes the echo stream
        now = loop_now - <double>(<tuple>item)[2]
        if now < floor:
            now = floor
        floor = now
        totals.floor = now
        ep = trunk_epoch(epochs, by_addr, addr, now, _rd32(p + 4) == 0)
        mux = <TrunkMux?>st.mux if st is not None else None
        vnak = _receive_trunk(data, <dict?>calls if calls is not None else no_calls,
                              <double>ep, now, sink, mux, &c)
        i += 1
        totals.index = i
        totals.datagrams += 1
        totals.entries += c.entries
        totals.unknown += c.unknown
        totals.inactive += c.inactive
        if c.truncated:
            totals.truncated += 1
        if vnak is not None or (c.echoed and st is not None and st.timer is None):
            acc.append((addr, now, vnak if vnak is not None else [], c.echoed))


cdef class _SendPass:
    """State of one batched send (``send_trunk_voice``, ``tx_tick_send``): the lists handed
    back, and the last call's peer address with its stream and mux, so a run of calls to one
    peer (every call of a load test) looks its stream up once."""

    cdef dict calls
    cdef dict trunks
    cdef list out
    cdef double now
    cdef list rest
    cdef list streams
    cdef set seen
    cdef object last_addr
    cdef object last_stream
    cdef TrunkMux last_mux
    cdef object last_listed
    cdef bint have_last

    def __cinit__(self, dict calls, dict trunks, list out, double now):
        self.calls = calls
        self.trunks = trunks
        self.out = out
        self.now = now
        self.rest = []
        self.streams = []
        self.seen = set()

    cdef TrunkMux _mux_of(self, object addr):
        """The ``TrunkMux`` of ``addr``'s stream (None: no stream, or not a TrunkMux); the
        stream is kept in ``last_stream``."""
        cdef object stream, m
        if self.have_last and addr is self.last_addr:
            return self.last_mux
        stream = self.trunks.get(addr)
        m = stream.mux if stream is not None else None
        self.have_last = True
        self.last_addr = addr
        self.last_stream = stream
        self.last_mux = <TrunkMux>m if stream is not None and type(m) is TrunkMux else None
        return self.last_mux

    cdef int _listed(self) except -1:
        """The current stream (``last_stream``) received an entry: listed once."""
        cdef object stream = self.last_stream
        if stream is self.last_listed:
            return 0
        self.last_listed = stream
        if id(stream) not in self.seen:
            self.seen.add(id(stream))
            self.streams.append(stream)
        return 0

    cdef int send(self, object callno, object payload, const unsigned char* buf, Py_ssize_t n,
                  long stamp, object item=None) except -1:
        """send_voice's trunk (and mini) branch for one payload: ``buf``/``n`` its bytes when
        it is a ``bytes`` object (``buf`` NULL otherwise), written with frame stamp ``stamp``
        (-1: as they are; see ``stamp_payload``).  ``payload`` is the object to hand back in
        ``rest`` (None: made from ``buf`` and ``stamp`` when needed), or ``item`` itself when
        given."""
        cdef PyObject* found = PyDict_GetItem(self.calls, callno)
        cdef CallMedia call
        cdef TrunkMux mux
        cdef long long st, ts
        cdef object frame
        if found == NULL or not isinstance(<object>found, CallMedia) or buf == NULL:
            return self._defer(callno, payload, buf, n, stamp, item)
        call = <CallMedia>found
        st = call.state
        if not call.trunk and self.out is not None and _ST_ACCEPTED <= st <= _ST_UP:
            ts = _next_voice_ts(call, self.now)
            if not (0 <= ts <= 0xFFFFFFFF and _mini_ok(call, ts)):
                return self._defer(callno, payload, buf, n, stamp, item)
            _voice_sent(call, ts, n)
            frame = _mini_frame(call.callno, ts, buf, n)
            if stamp >= 0:
                _stamp_write(<unsigned char*>PyBytes_AS_STRING(frame) + 4, n,
                             <unsigned int>stamp)
            self.out.append((frame, call.addr))
            return 0
        if not (call.trunk and _ST_ACCEPTED <= st <= _ST_UP and call.svoiceformat == call.codec
                and call.last_voice_ts >= 0):
            return self._defer(callno, payload, buf, n, stamp, item)
        mux = self._mux_of(call.addr)
        if mux is None or (mux.mtu and _HDR + mux._entry_len + n > mux.mtu):
            return self._defer(callno, payload, buf, n, stamp, item)
        ts = _next_voice_ts(call, self.now)
        if ts < 0 or ts > 0xFFFFFFFF:
            return self._defer(callno, payload, buf, n, stamp, item)
        mux._append(call.callno, ts, buf, n)
        if stamp >= 0:
            _stamp_write(mux._buf + mux._len - n, n, <unsigned int>stamp)
        _voice_sent(call, ts, n)
        self._listed()
        return 0

    cdef int _defer(self, object callno, object payload, const unsigned char* buf,
                    Py_ssize_t n, long stamp, object item) except -1:
        """Left to the caller's ``send_voice``: ``item``, else ``(callno, payload)``, into
        ``rest``."""
        cdef object p = payload
        if item is not None:
            self.rest.append(item)
            return 0
        if p is None:
            p = PyBytes_FromStringAndSize(<const char*>buf, n)
            if stamp >= 0:
                _stamp_write(<unsigned char*>PyBytes_AS_STRING(p), n, <unsigned int>stamp)
        self.rest.append((callno, p))
        return 0


def send_trunk_voice(dict calls, list items, double now, dict trunks, list out=None):
    """The trunk branch of ``gateway.iax2.protocol.Endpoint.send_voice`` for many calls at once:
    ``items`` = ``[(callno, payload), ...]``; each call that is up (or accepted), trunked and
    past its first full voice frame in this codec gets the next timestamp (send_voice's rules)
    and its payload goes into the ``TrunkMux`` of its peer's stream (``trunks[call.addr].mux``).
    With ``out`` (a list), its mini branch too: a call that is not trunked and whose frame
    would be a mini frame gets it appended to ``out`` as ``(frame, addr)``.  Returns
    ``(rest, streams)``: the items not handled here (the caller sends them one by one), and the
    streams that received entries (each once)."""
    cdef _SendPass sp = _SendPass(calls, trunks, out, now)
    cdef const unsigned char* buf
    for item in items:
        callno, payload = item
        if PyBytes_CheckExact(payload):
            buf = <const unsigned char*>PyBytes_AS_STRING(payload)
            sp.send(callno, payload, buf, PyBytes_GET_SIZE(payload), -1, item)
        else:
            sp.rest.append(item)
    return sp.rest, sp.streams


def tx_tick_send(list probes, double probe_now, dict calls, double now, dict trunks,
                 list out=None):
    """``send_trunk_voice(calls, tx_tick(probes, probe_now), now, trunks, out)`` in one pass:
    each probe's frame is counted as ``tx_tick`` counts it and written (stamped) straight into
    its trunk entry or mini frame; no ``(callno, payload)`` list and no stamped copy of each
    payload is made, except for the frames handed back in ``rest``.  Returns ``(rest,
    streams)`` as ``send_trunk_voice``."""
    cdef _SendPass sp = _SendPass(calls, trunks, out, now)
    cdef TxProbe probe
    cdef long long k, i
    cdef Py_ssize_t n
    cdef object callno, payload
    for obj in probes:
        probe = <TxProbe?>obj
        k = probe.k
        probe.k = k + 1
        callno = (_callno_obj(<unsigned int>(probe.callno & _MAX_CALLNO))
                  if 0 <= probe.callno <= _MAX_CALLNO else probe.callno)
        n = len(probe.cycle)
        if n and probe.stamp:
            i = _floor_mod((k * 20) // probe.frame_ms + probe.offset, n)
            payload = probe.cycle[i]
            if PyBytes_CheckExact(payload) and PyBytes_GET_SIZE(payload) >= 16:
                # the stamp goes into the entry or mini frame itself (see stamp_payload)
                probe._count_frame(i, PyBytes_GET_SIZE(payload), probe_now)
                sp.send(callno, None, <const unsigned char*>PyBytes_AS_STRING(payload),
                        PyBytes_GET_SIZE(payload),
                        <long>(((k * 20) // probe.frame_ms) & 0xFFFF))
                continue
        payload = probe._take(k * 20, probe_now)
        if PyBytes_CheckExact(payload):
            sp.send(callno, payload, <const unsigned char*>PyBytes_AS_STRING(payload),
                    PyBytes_GET_SIZE(payload), -1)
        else:
            sp.rest.append((callno, payload))
    return sp.rest, sp.streams
