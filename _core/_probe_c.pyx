# cython: language_level=3
"""Compiled load-tester probes (twin: ``_probe_py``); API in ``_probe_c.pyi``.

The payload stamps of the echo test, the send side (``TxProbe``, ``tx_tick``) and the receive
side (``RxProbe``) of one load-test call, and the traffic census of a batch of datagrams.  The
media half of the endpoint (``_media_c``) drives them at C level through ``_probe_c.pxd``.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.bytes cimport PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free
from libc.string cimport memcmp, memmove, memset

from iaxgw._core._trunk_c cimport _MAX_CALLNO, entry_totals, grown

include "_wire.pxi"
include "_callno.pxi"


cdef extern from "Python.h":
    void PyObject_GC_UnTrack(object op)


# Frame stamps of the load tester's echo test (twin: ``_probe_py.stamp_payload``): a 16-bit
# frame counter in the least significant bits of 16 fixed bytes of a G.711 payload, bit j in
# byte (2j + 1) * len // 32.  An echo that passes payloads through bit for bit brings it back.

STAMP_BITS = 16
STAMP_MIN_LEN = 16
STAMP_WINDOW = 1024


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
    stamp_write(<unsigned char*>PyBytes_AS_STRING(out), n, value)
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

    # fields and C methods declared in _probe_c.pxd

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
        i = floor_mod(ts_ms // self.frame_ms + self.offset, n)
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
        items.append((callno_obj(<unsigned int>(probe.callno & _MAX_CALLNO))
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
            entry_totals(p, n, &entries, &entry_b)
        else:
            mini += 1
            mini_b += n
    return full, full_b, mini, mini_b, trunk, trunk_b, entries, entry_b, no_ts


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

    # fields and C methods declared in _probe_c.pxd

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
        cdef Kept* r
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
        cdef Kept* nk
        cdef Py_ssize_t k, old, objs = 0, i
        if self._nkept == self._kept_cap:
            self._kept = <Kept*>grown(self._kept, &self._kept_cap, sizeof(Kept), 64)
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
            memmove(self._kept, self._kept + (k - old), (self._nkept - (k - old)) * sizeof(Kept))
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
        cdef double transit, j
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
        idx = floor_mod(k + self.stamp_offset, n)
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
            j = jitter_next(self.s_jitter, transit, self.s_transit)
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
        cdef double transit, j
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
            j = jitter_next(self.jitter, transit, self.transit)
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
