# Interned call-number ints for the per-entry paths of the compiled core.  Call numbers repeat in
# every datagram of a trunk (one entry per call per 20 ms), so their int objects are made once:
# one slot per 15-bit call number, filled on first use (with the GIL only, the fill is not
# atomic).  Each module that includes this keeps its own table, so the lookup stays inline: at
# most 32,768 small ints per module, a bounded ~1 MB.

from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF

cdef extern from *:
    """
    #ifdef Py_GIL_DISABLED
    #define IAXGW_CALLNO_CACHE 0
    #else
    #define IAXGW_CALLNO_CACHE 1
    #endif
    """
    int IAXGW_CALLNO_CACHE


cdef PyObject* _callnos[0x8000]     # indexed by callno & 0x7FFF


cdef inline object callno_obj(unsigned int callno):
    """The interned int object of a 15-bit call number."""
    cdef object o
    if not IAXGW_CALLNO_CACHE:
        return callno
    callno &= 0x7FFF
    if _callnos[callno] == NULL:
        o = callno
        Py_INCREF(o)
        _callnos[callno] = <PyObject*>o
    return <object>_callnos[callno]
