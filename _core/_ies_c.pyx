# cython: language_level=3
"""Compiled IAX2 information element codec (fact sheet section 5); twin of ``_ies_py``.

The payload is read through a pointer and a length; every IE length is checked against what is
left before its value is touched.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.bytes cimport PyBytes_GET_SIZE
from cpython.datetime cimport datetime, datetime_new, import_datetime
from cpython.unicode cimport PyUnicode_Check, PyUnicode_DecodeUTF8
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.string cimport memcmp, memcpy

cdef extern from "Python.h":
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void *PyUnicode_DATA(object o)
    ctypedef struct PyObject

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


# Interning cache of parsed (id, value) pairs, keyed by the raw IE bytes.  Signalling between two
# sites repeats most IEs verbatim (VERSION, FORMAT, CAPABILITY, CODEC_PREFS, USERNAME, empty
# CALLTOKEN, ...), and every value type returned is immutable, so an identical IE can share one
# tuple.  Direct-mapped, IEs of up to CACHE_MAX_VALUE bytes; only with the GIL (the slot update
# is not atomic).
cdef enum:
    CACHE_SLOTS = 512
    CACHE_MAX_VALUE = 30

ctypedef struct _Slot:
    PyObject *pair
    unsigned int keylen
    unsigned char key[CACHE_MAX_VALUE + 2]

cdef _Slot _cache[CACHE_SLOTS]


cdef inline unsigned int _slot_of(const unsigned char *raw, unsigned int n) noexcept nogil:
    cdef unsigned int h = 2166136261u
    cdef unsigned int k
    for k in range(n):
        h = (h ^ raw[k]) * 16777619u
    return (h ^ (h >> 15)) & (CACHE_SLOTS - 1)


cdef inline object _cache_get(const unsigned char *raw, unsigned int n, unsigned int slot):
    cdef _Slot *e = &_cache[slot]
    if e.pair != NULL and e.keylen == n and memcmp(e.key, raw, n) == 0:
        return <object>e.pair
    return None


cdef inline void _cache_put(const unsigned char *raw, unsigned int n, unsigned int slot,
                            tuple pair) noexcept:
    cdef _Slot *e = &_cache[slot]
    cdef PyObject *old = e.pair
    Py_INCREF(pair)
    e.pair = <PyObject *>pair
    e.keylen = n
    memcpy(e.key, raw, n)
    if old != NULL:
        Py_DECREF(<object>old)


def _clear_cache():
    """Empty the IE interning cache (benchmarks of the cold path use this)."""
    cdef int k
    for k in range(CACHE_SLOTS):
        if _cache[k].pair != NULL:
            Py_DECREF(<object>_cache[k].pair)
            _cache[k].pair = NULL
            _cache[k].keylen = 0


cdef inline int _width(unsigned int kind) noexcept:
    if kind == K_U8:
        return 1
    if kind == K_U16:
        return 2
    return 4


cdef datetime _decode_datetime(unsigned int value):
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
    cdef unsigned int k
    cdef unsigned char acc = 0
    for k in range(ln):
        acc |= v[k]
    if acc >= 0x80:
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


cdef list _parse(const unsigned char *p, Py_ssize_t n):
    cdef Py_ssize_t count = _count(p, n)
    cdef list out = PyList_New(count)
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t j
    cdef unsigned int ie, ln, kind
    cdef const unsigned char *v
    cdef object value
    cdef object key
    cdef object pair
    cdef unsigned int slot = 0
    cdef bint cacheable
    for j in range(count):
        ie = p[i]
        ln = p[i + 1]
        v = p + i + 2
        cacheable = IAXGW_IE_CACHE and ln <= CACHE_MAX_VALUE
        if cacheable:
            slot = _slot_of(p + i, ln + 2)
            pair = _cache_get(p + i, ln + 2, slot)
            if pair is not None:
                Py_INCREF(pair)
                PyList_SET_ITEM(out, j, pair)
                i += 2 + ln
                continue
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
        key = ie
        pair = PyTuple_New(2)
        Py_INCREF(key)
        PyTuple_SET_ITEM(pair, 0, key)
        Py_INCREF(value)
        PyTuple_SET_ITEM(pair, 1, value)
        if cacheable:
            _cache_put(p + i, ln + 2, slot, <tuple>pair)
        Py_INCREF(pair)
        PyList_SET_ITEM(out, j, pair)
        i += 2 + ln
    return out


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
