# The C-level interface of the compiled trunk codec (``_trunk_c.pyx``), for the compiled modules
# above it: the load-tester probes (``_probe_c``) and the media half of the endpoint
# (``_media_c``) write entries into a ``TrunkMux`` and walk trunk datagrams without a Python call.

cdef enum:
    # header and entry sizes of a meta trunk datagram (docs/protocol.md §3), and the limits
    _HDR = 8
    _ENT = 4
    _ENT_TS = 6
    _MAX_PAYLOAD = 0xFFFF
    _MAX_CALLNO = 0x7FFF
    _MIN_MTU = 16
    _MAX_MTU = 0xFFFF


cdef int check_header(const unsigned char* p, Py_ssize_t n) except -1
cdef void entry_totals(const unsigned char* p, Py_ssize_t n, long long* count,
                       long long* payload) noexcept
cdef void* grown(void* buf, Py_ssize_t* cap, size_t item, Py_ssize_t first) except NULL


cdef class TrunkMux:
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

    cdef int _reserve(self, Py_ssize_t need) except -1
    cdef int _open_datagram(self) except -1
    cdef int _add(self, object callno, object ts, object payload) except -1
    cdef int _append(self, long long c, long long t, const unsigned char* src,
                     Py_ssize_t n) except -1
