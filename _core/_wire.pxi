# Shared helpers of the compiled core: big-endian reads/writes on raw byte pointers, checked
# integer conversion and a floor modulo.  Callers check lengths before every read.

from cpython.long cimport PyLong_Check

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object obj, int *overflow) except? -1


cdef inline unsigned int rd16(const unsigned char *p) noexcept nogil:
    return (<unsigned int>p[0] << 8) | p[1]


cdef inline unsigned int rd32(const unsigned char *p) noexcept nogil:
    return ((<unsigned int>p[0] << 24) | (<unsigned int>p[1] << 16)
            | (<unsigned int>p[2] << 8) | p[3])


cdef inline void wr16(unsigned char *p, unsigned int v) noexcept nogil:
    p[0] = (v >> 8) & 0xFF
    p[1] = v & 0xFF


cdef inline void wr32(unsigned char *p, unsigned int v) noexcept nogil:
    p[0] = (v >> 24) & 0xFF
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


cdef inline long long floor_mod(long long a, long long m) noexcept nogil:
    """``a`` modulo ``m`` (> 0) rounded towards minus infinity, as Python's ``%``."""
    cdef long long r = a % m
    return r + m if r < 0 else r
