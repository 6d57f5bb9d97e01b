# The C-level interface of the load-tester probes (``_probe_c.pyx``), for the compiled media half
# of the endpoint (``_media_c``): it counts and stamps each probe's frame as it writes it into a
# trunk entry or mini frame, and feeds received entries to a call's ``RxProbe`` without a Python
# call.

cdef enum:
    _STAMP_WIN = 1024       # STAMP_WINDOW


cdef struct Kept:
    # one frame kept for the audio analysis (RxProbe.pending), without Python objects when it is
    # a stamped frame of ours: its payload is the cycle's payload ``idx`` with stamp ``stamp``
    long long ts
    double arrival
    long long idx           # -1: the payload is the next one in RxProbe._kept_objs
    unsigned int stamp


cdef inline int stamp_write(unsigned char* p, Py_ssize_t n, unsigned int value) noexcept:
    """Write the 16-bit frame stamp ``value`` into ``p[:n]`` (``n`` >= 16; see stamp_payload)."""
    cdef int j
    cdef Py_ssize_t pos
    for j in range(16):
        pos = (2 * j + 1) * n // 32
        p[pos] = (p[pos] & 0xFE) | ((value >> j) & 1)
    return 0


cdef inline double jitter_next(double jitter, double transit, double prev_transit) noexcept nogil:
    """RFC 3550 interarrival jitter (§6.4.1, A.8) after one more packet: J += (|D| - J) / 16,
    D the change in relative transit time since the previous packet (ms).  The one copy of
    the rule in the compiled core: the probes' and the media half's statistics use it."""
    cdef double d = transit - prev_transit
    if d < 0.0:
        d = -d
    return jitter + (d - jitter) * 0.0625


cdef class TxProbe:
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

    cdef int _sent_at(self, double now) except -1
    cdef int _count_frame(self, long long i, Py_ssize_t nbytes, double now) except -1
    cdef object _take(self, long long ts_ms, double now)


cdef class RxProbe:
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
    cdef Kept* _kept               # frames kept since, oldest first
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

    cdef int _build_pending(self) except -1
    cdef int _keep(self, long long ts, double arrival, long long idx, unsigned int stamp,
                   object payload) except -1
    cdef long long _stamp_rx(self, double arrival, const unsigned char* p, Py_ssize_t size,
                             unsigned int* stamp) except -2
    cdef int _rx(self, long long ts, double arrival, object payload, const unsigned char* p,
                 Py_ssize_t nbytes, bint seq) except -1
