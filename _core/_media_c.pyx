# cython: language_level=3
"""The compiled media half of the endpoint (twin: ``_media_py``); API in ``_media_c.pyi``.

The receive paths (trunk datagrams and voice mini frames, with RFC 3550 statistics), the send
paths (many calls' voice into their peers' trunk multiplexers or mini frames at once), and the
voice-timestamp rule they share with ``gateway.iax2.protocol.Endpoint.send_voice``.  Entries are
read and written at C level through the trunk codec's and the probes' ``.pxd``.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.bytes cimport PyBytes_GET_SIZE
from libc.string cimport memcpy

from iaxgw._core._probe_c cimport RxProbe, TxProbe, jitter_next, stamp_write
from iaxgw._core._trunk_c cimport (
    _ENT,
    _ENT_TS,
    _HDR,
    _MAX_CALLNO,
    TrunkMux,
    check_header,
)

include "_wire.pxi"
include "_callno.pxi"

from iaxgw._core.errors import FrameError


cdef extern from "Python.h":
    PyObject* PyDict_GetItem(object d, object key)


# ---------------------------------------------------------------------------------------------
# The trunk receive hot path of the protocol core (gateway/iax2/protocol.py): per entry, find the
# call, unwrap its timestamp, account it (RFC 3550 jitter, loss from timestamp gaps) and hand the
# payload on -- to the media sink, or, for a call that echoes (Echo() on a trunked call), straight
# back into the trunk multiplexer of its peer.  The call record's media fields live in
# ``CallMedia`` (the base class of ``gateway.iax2.calls.Call``) so this loop reads them as C
# fields.  Twin:
# ``_media_py.receive_trunk`` (same rules, same results).

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
        cdef double transit, j
        cdef long long top, gap, ptime
        self.frames += 1
        self.bytes += nbytes
        transit = now * 1000.0 - <double>ts
        if self.frames > 1:
            j = jitter_next(self.jitter, transit, self.prev_transit)
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
    #: voice frames that arrived before the call's first full voice frame, so were discarded
    #: (and VNAKed), as Asterisk discards them (docs/protocol.md, P4)
    cdef public long long rx_early
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
        ts = ms - floor_mod(ms, 20)
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
    cmddata = check_header(p, n)
    trunk_ts = rd32(p + 4)
    hdr = _ENT_TS if cmddata else _ENT
    pos = _HDR
    while pos < n:
        if n - pos < hdr:
            out.truncated = True
            break
        if cmddata:
            length = rd16(p + pos)
            callno = rd16(p + pos + 2) & _MAX_CALLNO
            ts16 = rd16(p + pos + 4)
        else:
            callno = rd16(p + pos) & _MAX_CALLNO
            length = rd16(p + pos + 2)
            ts16 = 0
        start = pos + hdr
        if start + <Py_ssize_t>length > n:
            out.truncated = True
            break
        pos = start + length
        out.entries += 1
        found = PyDict_GetItem(calls, callno_obj(callno))
        if found == NULL or not isinstance(<object>found, CallMedia):
            out.unknown += 1
            continue
        call = <CallMedia>found
        st = call.state
        if call.format_rx == 0 or st > _ST_UP:
            out.inactive += 1
            if call.format_rx == 0:
                call.rx_early += 1
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
        sink(callno_obj(<unsigned int>call.callno), ts,
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
    sink(callno_obj(<unsigned int>call.callno), ts,
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


cpdef double arrival_time(double loop_now, double age, double floor) noexcept:
    """When a datagram of a receive batch arrived: ``loop_now - age`` (``age``: how long it
    waited since the kernel stamped it), never before ``floor`` (the previous datagram's)."""
    cdef double now = loop_now - age
    return floor if now < floor else now


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
            found = PyDict_GetItem(<dict?>calls, callno_obj(((<unsigned int>p[0]) << 8) | p[1]))
            if found == NULL or not isinstance(<object>found, CallMedia):
                break
            call = <CallMedia>found
            state = call.state
            if call.format_rx == 0 or state > _ST_UP:
                break                   # counted, maybe VNAKed, by receive_datagram
            now = arrival_time(loop_now, <double>(<tuple>item)[2], floor)
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
        now = arrival_time(loop_now, <double>(<tuple>item)[2], floor)
        floor = now
        totals.floor = now
        ep = trunk_epoch(epochs, by_addr, addr, now, rd32(p + 4) == 0)
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
                stamp_write(<unsigned char*>PyBytes_AS_STRING(frame) + 4, n,
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
            stamp_write(mux._buf + mux._len - n, n, <unsigned int>stamp)
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
                stamp_write(<unsigned char*>PyBytes_AS_STRING(p), n, <unsigned int>stamp)
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
        callno = (callno_obj(<unsigned int>(probe.callno & _MAX_CALLNO))
                  if 0 <= probe.callno <= _MAX_CALLNO else probe.callno)
        n = len(probe.cycle)
        if n and probe.stamp:
            i = floor_mod((k * 20) // probe.frame_ms + probe.offset, n)
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
