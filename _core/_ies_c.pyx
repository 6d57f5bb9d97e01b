# cython: language_level=3
"""Compiled IAX2 information element codec (docs/protocol.md §5); twin of ``_ies_py``.

The payload is read through a pointer and a length; every IE length is checked against what is
left before its value is touched.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.bytes cimport PyBytes_GET_SIZE
from cpython.datetime cimport datetime, datetime_new, import_datetime
from cpython.unicode cimport PyUnicode_Check, PyUnicode_DecodeUTF8
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

cdef extern from "Python.h":
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void *PyUnicode_DATA(object o)
    ctypedef struct PyObject
    PyObject **PySequence_Fast_ITEMS(object o)
    void Py_DECREF_P "Py_DECREF"(PyObject *o)
    void Py_INCREF_P "Py_INCREF"(PyObject *o)

cdef extern from *:
    """
    #ifdef Py_GIL_DISABLED
    #define IAXGW_IE_CACHE 0
    #else
    #define IAXGW_IE_CACHE 1
    #endif
    """
    int IAXGW_IE_CACHE

include "_wire.pxi"

import socket

from iaxgw._core.constants import IE_KINDS, ie_name
from iaxgw._core.errors import FrameError

import_datetime()

__all__ = ["build_ies", "decode_datetime", "encode_datetime", "parse_ies"]

cdef enum:
    K_RAW = 0
    K_STRING = 1
    K_U8 = 2
    K_U16 = 3
    K_U32 = 4
    K_EMPTY = 5
    K_OPT_STRING = 6
    K_VERSIONED_U64 = 7
    K_SOCKADDR = 8
    K_DATETIME = 9

cdef unsigned char _kinds[256]
cdef int _k
for _k in range(256):
    _kinds[_k] = <unsigned char>int(IE_KINDS[_k])

cdef bytes _ZERO8 = bytes(8)
cdef bytes _ZERO4 = bytes(4)
# The IE ids 0..255 as int objects (kept alive by the tuple), for the id of a new pair.
cdef tuple _IDS = tuple(range(256))
cdef PyObject *_ids[256]
for _k in range(256):
    _ids[_k] = <PyObject *>_IDS[_k]


# Interning cache of parsed (id, value) pairs, keyed by the raw IE bytes.  Signalling between two
# sites repeats most IEs verbatim (VERSION, FORMAT, CAPABILITY, CODEC_PREFS, USERNAME, empty
# CALLTOKEN, ...), and every value type returned is immutable, so an identical IE can share one
# tuple.  Direct-mapped, IEs of up to CACHE_MAX_VALUE bytes; only with the GIL (the slot update
# is not atomic).
#
# Admission on the second sighting: a missed IE first only leaves its key in its slot (a
# candidate); it is cached when it comes again while it still is the slot's candidate.  A cached
# pair is evicted only by a miss that finds it not hit since the previous competing miss (second
# chance).  So per-call IEs (numbers, names, DATETIME) neither churn the cache nor evict the IEs
# that repeat, and their objects die young with the caller's list instead of lingering in a slot.
cdef enum:
    CACHE_SLOTS = 512
    CACHE_MAX_VALUE = 30

ctypedef struct _Slot:
    PyObject *pair  # the cached pair of ``key``, or NULL: ``key`` (if keylen) is a candidate
    unsigned int keylen  # 0: no key
    unsigned int used  # the pair was hit since the last competing miss
    unsigned char key[CACHE_MAX_VALUE + 2]

cdef _Slot _cache[CACHE_SLOTS]


cdef inline uint64_t _ld64(const unsigned char *p) noexcept nogil:
    cdef uint64_t w
    memcpy(&w, p, 8)
    return w


cdef inline uint64_t _ld32(const unsigned char *p) noexcept nogil:
    cdef uint32_t w
    memcpy(&w, p, 4)
    return w


cdef inline uint64_t _ld16(const unsigned char *p) noexcept nogil:
    cdef uint16_t w
    memcpy(&w, p, 2)
    return w


cdef inline uint64_t _tail(const unsigned char *raw, unsigned int n) noexcept nogil:
    """The bytes of a 2..8-byte ``raw`` packed into one word (reads stay inside raw[0:n])."""
    if n >= 4:
        return _ld32(raw) | (_ld32(raw + n - 4) << 32)
    return _ld16(raw) | (_ld16(raw + n - 2) << 16)


cdef inline unsigned int _slot_of(const unsigned char *raw, unsigned int n) noexcept nogil:
    """Slot of the ``n``-byte raw IE (2 <= n <= CACHE_MAX_VALUE + 2), a word at a time: the
    8-byte words from the start, then the last 8 bytes (overlapping); a collision only costs a
    miss, the key is compared in full."""
    cdef uint64_t h = n * 0x9E3779B97F4A7C15ULL
    cdef unsigned int k = 0
    if n <= 8:
        h = (h ^ _tail(raw, n)) * 0xFF51AFD7ED558CCDULL
    else:
        while k + 8 < n:
            h = (h ^ _ld64(raw + k)) * 0xFF51AFD7ED558CCDULL
            h ^= h >> 29
            k += 8
        h = (h ^ _ld64(raw + n - 8)) * 0xFF51AFD7ED558CCDULL
    h ^= h >> 32
    h *= 0xC4CEB9FE1A85EC53ULL
    return <unsigned int>(h >> 40) & (CACHE_SLOTS - 1)


cdef inline bint _same(const unsigned char *a, const unsigned char *b,
                       unsigned int n) noexcept nogil:
    """a[0:n] == b[0:n] for 2 <= n, comparing words (each read inside [0, n))."""
    cdef unsigned int k = 0
    if n < 8:
        return _tail(a, n) == _tail(b, n)
    while k + 8 < n:
        if _ld64(a + k) != _ld64(b + k):
            return False
        k += 8
    return _ld64(a + n - 8) == _ld64(b + n - 8)


cdef inline void _cache_offer(const unsigned char *raw, unsigned int n, unsigned int slot,
                              tuple pair) noexcept:
    """A miss of the raw IE (``n`` <= CACHE_MAX_VALUE + 2 bytes) in ``slot``, decoded to ``pair``:
    admit it if it is the slot's candidate, else make it the candidate unless the slot holds a
    pair hit since the last competing miss."""
    cdef _Slot *e = &_cache[slot]
    cdef PyObject *old = e.pair
    if old == NULL:
        if e.keylen == n and _same(e.key, raw, n):
            Py_INCREF(pair)
            e.pair = <PyObject *>pair
            e.used = 0
            return
    elif e.used:
        e.used = 0
        return
    e.pair = NULL
    e.keylen = n
    memcpy(e.key, raw, n)
    if old != NULL:
        Py_DECREF_P(old)


def _clear_cache():
    """Empty the IE interning cache (benchmarks of the cold path use this)."""
    cdef int k
    cdef PyObject *old
    for k in range(CACHE_SLOTS):
        old = _cache[k].pair
        _cache[k].pair = NULL
        _cache[k].keylen = 0
        _cache[k].used = 0
        if old != NULL:
            Py_DECREF_P(old)


cdef inline int _width(unsigned int kind) noexcept:
    if kind == K_U8:
        return 1
    if kind == K_U16:
        return 2
    return 4


cdef unsigned char _MDAYS[13]
_MDAYS[:] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


cdef inline bint _valid_datetime(unsigned int value) noexcept nogil:
    """The DATETIME fields make a valid date and time (else datetime() raises ValueError)."""
    cdef unsigned int year = 2000 + (value >> 25)
    cdef unsigned int month = (value >> 21) & 0x0F
    cdef unsigned int day = (value >> 16) & 0x1F
    if month < 1 or month > 12 or day < 1 or day > _MDAYS[month]:
        return False
    if month == 2 and day == 29 and not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        return False
    return ((value >> 11) & 0x1F) < 24 and ((value >> 5) & 0x3F) < 60 and (value & 0x1F) < 30


cdef datetime _decode_datetime(unsigned int value):
    if _valid_datetime(value):
        return datetime_new(2000 + (value >> 25), (value >> 21) & 0x0F,
                            (value >> 16) & 0x1F, (value >> 11) & 0x1F, (value >> 5) & 0x3F,
                            (value & 0x1F) * 2, 0, None)
    try:
        return datetime_new(2000 + (value >> 25), (value >> 21) & 0x0F,
                            (value >> 16) & 0x1F, (value >> 11) & 0x1F, (value >> 5) & 0x3F,
                            (value & 0x1F) * 2, 0, None)
    except ValueError:
        raise FrameError(f"invalid DATETIME fields {value:#010x}") from None


def decode_datetime(value):
    """Unpack a DATETIME u32 (sec/2, min, hour, mday, month, year-2000) into a naive datetime."""
    return _decode_datetime(value)


def encode_datetime(value):
    """Pack a datetime's fields (as given, seconds rounded down to even) into a DATETIME u32."""
    year = value.year - 2000
    if not 0 <= year <= 127:
        raise FrameError(f"DATETIME year {value.year} out of range 2000..2127")
    return (
        (year << 25)
        | (value.month << 21)
        | (value.day << 16)
        | (value.hour << 11)
        | (value.minute << 5)
        | (value.second >> 1)
    )


cdef inline bint _zero(const unsigned char *p, Py_ssize_t n) noexcept:
    cdef Py_ssize_t k
    for k in range(n):
        if p[k]:
            return False
    return True


cdef object _sockaddr(const unsigned char *v, unsigned int ln):
    cdef unsigned int port
    if ln == 16 and v[0] == 2 and v[1] == 0 and _zero(v + 8, 8):
        port = rd16(v + 2)
        return f"{v[4]}.{v[5]}.{v[6]}.{v[7]}", port
    if ln == 28 and v[0] == 10 and v[1] == 0 and _zero(v + 4, 4) and _zero(v + 24, 4):
        port = rd16(v + 2)
        host = socket.inet_ntop(socket.AF_INET6, PyBytes_FromStringAndSize(<const char *>v + 8, 16))
        return host, port
    return PyBytes_FromStringAndSize(<const char *>v, ln)


cdef str _text(const unsigned char *v, unsigned int ln):
    """UTF-8 with surrogateescape; pure ASCII (the usual case) is copied straight in."""
    cdef unsigned int k = 0
    cdef uint64_t acc = 0
    if ln >= 8:
        while k + 8 < ln:
            acc |= _ld64(v + k)
            k += 8
        acc |= _ld64(v + ln - 8)
    elif ln >= 2:
        acc = _tail(v, ln)
    elif ln == 1:
        acc = v[0]
    if acc & 0x8080808080808080ULL:
        return PyUnicode_DecodeUTF8(<const char *>v, ln, "surrogateescape")
    if ln == 0:
        return ""
    cdef str s = PyUnicode_New(ln, 127)
    memcpy(PyUnicode_DATA(s), v, ln)
    return s


cdef Py_ssize_t _count(const unsigned char *p, Py_ssize_t n) except -1:
    """Number of IEs, checking that the lengths tile the payload exactly."""
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t count = 0
    cdef unsigned int ln
    while i < n:
        if n - i < 2:
            raise FrameError("truncated IE header: 1 byte left", i)
        ln = p[i + 1]
        if ln > n - i - 2:
            raise FrameError(
                f"{ie_name(p[i])} length {ln} overruns the payload ({n - i - 2} bytes left)", i
            )
        i += 2 + ln
        count += 1
    return count


cdef inline unsigned int _lookup(const unsigned char *raw, unsigned int n,
                                 PyObject **hit) noexcept:
    """Cache slot of the raw IE (``CACHE_SLOTS`` if it is not cached); ``*hit`` = the cached
    pair (borrowed) or NULL."""
    cdef unsigned int slot
    cdef _Slot *e
    hit[0] = NULL
    if not IAXGW_IE_CACHE or n > CACHE_MAX_VALUE + 2:
        return CACHE_SLOTS
    slot = _slot_of(raw, n)
    e = &_cache[slot]
    if e.pair != NULL and e.keylen == n and _same(e.key, raw, n):
        e.used = 1
        hit[0] = e.pair
    return slot


cdef tuple _pair(const unsigned char *p, Py_ssize_t i):
    """The ``(id, value)`` pair of the IE at ``p[i]``, whose length byte the caller has checked
    against the payload (``p[i + 2 : i + 2 + p[i + 1]]`` is readable)."""
    cdef PyObject *hit
    cdef unsigned int slot = _lookup(p + i, p[i + 1] + 2, &hit)
    if hit != NULL:
        return <tuple>hit
    return _new_pair(p, i, slot)


cdef tuple _new_pair(const unsigned char *p, Py_ssize_t i, unsigned int slot):
    """Decode the IE at ``p[i]`` (length checked by the caller) and cache the pair in ``slot``
    unless that is ``CACHE_SLOTS``."""
    cdef unsigned int ie = p[i]
    cdef unsigned int ln = p[i + 1]
    cdef const unsigned char *v = p + i + 2
    cdef unsigned int kind
    cdef object value
    cdef object key
    cdef object pair
    kind = _kinds[ie]
    if kind == K_STRING:
        value = _text(v, ln)
    elif kind == K_U16:
        if ln != 2:
            raise FrameError(f"{ie_name(ie)} must be 2 bytes, got {ln}", i)
        value = rd16(v)
    elif kind == K_U32:
        if ln != 4:
            raise FrameError(f"{ie_name(ie)} must be 4 bytes, got {ln}", i)
        value = rd32(v)
    elif kind == K_U8:
        if ln != 1:
            raise FrameError(f"{ie_name(ie)} must be 1 bytes, got {ln}", i)
        value = v[0]
    elif kind == K_DATETIME:
        if ln != 4:
            raise FrameError(f"{ie_name(ie)} must be 4 bytes, got {ln}", i)
        try:
            value = _decode_datetime(rd32(v))
        except FrameError as exc:
            raise FrameError(exc.reason, i) from None
    elif kind == K_EMPTY:
        if ln != 0:
            raise FrameError(f"{ie_name(ie)} must be empty, got {ln} bytes", i)
        value = None
    elif kind == K_OPT_STRING:
        value = _text(v, ln) if ln else None
    elif kind == K_VERSIONED_U64:
        if ln and v[0] == 0:
            if ln != 9:
                raise FrameError(f"{ie_name(ie)} version 0 must be 9 bytes, got {ln}", i)
            value = ((<unsigned long long>rd32(v + 1)) << 32) | rd32(v + 5)
        else:
            value = PyBytes_FromStringAndSize(<const char *>v, ln)
    elif kind == K_SOCKADDR:
        value = _sockaddr(v, ln)
    else:
        value = PyBytes_FromStringAndSize(<const char *>v, ln)
    key = <object>_ids[ie]
    pair = PyTuple_New(2)
    Py_INCREF(key)
    PyTuple_SET_ITEM(pair, 0, key)
    Py_INCREF(value)
    PyTuple_SET_ITEM(pair, 1, value)
    if slot != CACHE_SLOTS:
        _cache_offer(p + i, ln + 2, slot, <tuple>pair)
    return <tuple>pair


cdef list _parse_checked(const unsigned char *p, Py_ssize_t n):
    """Structure first (the lengths must tile the payload, as in the twin), then the values."""
    cdef Py_ssize_t count = _count(p, n)
    cdef list out = PyList_New(count)
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t j
    cdef tuple pair
    for j in range(count):
        pair = _pair(p, i)
        Py_INCREF(pair)
        PyList_SET_ITEM(out, j, pair)
        i += 2 + p[i + 1]
    return out


cdef enum:
    STACK_IES = 48


cdef list _parse(const unsigned char *p, Py_ssize_t n):
    """One pass over a well-formed payload of up to STACK_IES IEs; anything else (a structure or
    value error, more IEs) is redone by :func:`_parse_checked`, which reports errors in the
    twin's order."""
    cdef PyObject *items[STACK_IES]
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t j = 0
    cdef Py_ssize_t k
    cdef unsigned int ln, slot
    cdef PyObject *hit
    cdef tuple pair
    cdef list out
    cdef bint failed = False
    try:
        while i < n:
            if j == STACK_IES or n - i < 2:
                break
            ln = p[i + 1]
            if ln > n - i - 2:
                break
            slot = _lookup(p + i, ln + 2, &hit)
            if hit != NULL:
                Py_INCREF_P(hit)
                items[j] = hit
            else:
                pair = _new_pair(p, i, slot)
                Py_INCREF(pair)
                items[j] = <PyObject *>pair
            j += 1
            i += 2 + ln
    except FrameError:
        failed = True
    except BaseException:
        for k in range(j):
            Py_DECREF_P(items[k])
        raise
    if not failed and i == n:
        out = PyList_New(j)
        if j:
            memcpy(PySequence_Fast_ITEMS(out), items, j * sizeof(PyObject *))
        return out
    for k in range(j):
        Py_DECREF_P(items[k])
    return _parse_checked(p, n)


# A plain builtin rather than a Cython function object: the interpreter specialises calls to
# it (per-datagram hot path); the clinic-style docstring keeps inspect.signature working.
@cython.binding(False)
@cython.embedsignature.format("clinic")
def parse_ies(payload):
    """Parse the IEs of an IAX frame payload into ``(id, value)`` pairs in wire order."""
    if PyBytes_CheckExact(payload):
        return _parse(<const unsigned char *>PyBytes_AS_STRING(payload),
                      PyBytes_GET_SIZE(payload))
    cdef Py_buffer view
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        return _parse(<const unsigned char *>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


cdef bytes _uint(int ie, object value, int width):
    if not PyLong_Check(value):
        raise FrameError(f"{ie_name(ie)} needs an int or bytes, not {type(value).__name__}")
    if value < 0 or value >> (8 * width):
        raise FrameError(f"{ie_name(ie)} value {value} does not fit in {8 * width} bits")
    return int(value).to_bytes(width, "big")


cdef bytes _encode_sockaddr(int ie, object value):
    if not (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    ):
        raise FrameError(f"{ie_name(ie)} needs a (host, port) tuple or bytes")
    host = value[0]
    port = value[1]
    if not 0 <= port <= 0xFFFF:
        raise FrameError(f"{ie_name(ie)} port {port} out of range 0..65535")
    try:
        addr4 = socket.inet_pton(socket.AF_INET, host)
    except (OSError, ValueError):
        pass
    else:
        return b"\x02\x00" + int(port).to_bytes(2, "big") + addr4 + _ZERO8
    try:
        addr6 = socket.inet_pton(socket.AF_INET6, host)
    except (OSError, ValueError):
        raise FrameError(f"{ie_name(ie)} host {host!r} is not an IPv4 or IPv6 address") from None
    return b"\x0a\x00" + int(port).to_bytes(2, "big") + _ZERO4 + addr6 + _ZERO4


cdef bytes _encode(int ie, object value):
    if PyBytes_CheckExact(value):
        return <bytes>value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    cdef unsigned int kind = _kinds[ie]
    if kind == K_STRING or kind == K_OPT_STRING:
        if PyUnicode_Check(value):
            return (<str>value).encode("utf-8", "surrogateescape")
        if value is None and kind == K_OPT_STRING:
            return b""
        raise FrameError(f"{ie_name(ie)} needs a str or bytes, not {type(value).__name__}")
    if kind == K_U8 or kind == K_U16 or kind == K_U32:
        return _uint(ie, value, _width(kind))
    if kind == K_EMPTY:
        if value is None:
            return b""
        raise FrameError(f"{ie_name(ie)} needs None or bytes, not {type(value).__name__}")
    if kind == K_VERSIONED_U64:
        return b"\x00" + _uint(ie, value, 8)
    if kind == K_DATETIME:
        if isinstance(value, datetime):
            return int(encode_datetime(value)).to_bytes(4, "big")
        return _uint(ie, value, 4)
    if kind == K_SOCKADDR:
        return _encode_sockaddr(ie, value)
    raise FrameError(f"{ie_name(ie)} needs bytes, not {type(value).__name__}")


def build_ies(items):
    """Encode ``(id, value)`` pairs; the inverse of :func:`parse_ies`."""
    cdef bytearray out = bytearray()
    cdef int overflow = 0
    cdef long long ie
    cdef bytes body
    for item in items:
        try:
            ie_obj, value = item
        except (TypeError, ValueError):
            raise FrameError(f"IE item must be an (id, value) pair, not {item!r}") from None
        if not PyLong_Check(ie_obj):
            raise FrameError(f"IE id {ie_obj!r} is not an int in 0..255")
        ie = PyLong_AsLongLongAndOverflow(ie_obj, &overflow)
        if overflow or ie < 0 or ie > 255:
            raise FrameError(f"IE id {ie_obj!r} is not an int in 0..255")
        body = _encode(<int>ie, value)
        if PyBytes_GET_SIZE(body) > 255:
            raise FrameError(f"{ie_name(ie)} value is {len(body)} bytes, more than 255")
        out.append(<unsigned char>ie)
        out.append(<unsigned char>PyBytes_GET_SIZE(body))
        out += body
    return bytes(out)
