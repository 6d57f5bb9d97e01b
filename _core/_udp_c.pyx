# cython: language_level=3
"""Batched UDP I/O for the datagram server: ``recvmmsg``/``sendmmsg`` with kernel receive times.

One :class:`UdpIO` wraps a bound, non-blocking UDP socket (IPv4 or IPv6).  ``recv()`` takes up to
``batch`` datagrams in one system call, each with its age (how long it waited in the socket since
the kernel stamped it, ``SO_TIMESTAMPNS``), so a driver that reads in bursts still hands the
protocol core the true arrival time.  ``send(items, start)`` sends a list of ``(data, addr)`` in
as few system calls as the kernel allows and stops at the first one that would block.

Memory safety: the receive slots are one allocation of ``batch`` x ``SLOT`` bytes owned by the
object; every length the kernel reports is clamped to the slot before it is copied out, and every
control message is bounds-checked against the control buffer by the CMSG macros.

The pure-Python twin is ``_udp_py`` (``socket.recvmsg`` / ``sendto``), behaviourally identical.
"""

from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_Check,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.string cimport memset

import socket as _socket

cdef extern from *:
    """
    #include <sys/socket.h>
    #include <netinet/in.h>
    #include <arpa/inet.h>
    #include <errno.h>
    #include <string.h>
    #include <time.h>

    #define IAXGW_CTRL 128
    #ifndef UDP_GRO
    #define UDP_GRO 104
    #endif
    #ifndef UDP_SEGMENT
    #define UDP_SEGMENT 103
    #endif
    #define IAXGW_GSO_CTRL 32

    /* One send header over `niov` datagrams of the same destination that the kernel cuts into
       `seg`-byte datagrams (UDP generic segmentation offload; the last may be shorter). */
    static void iaxgw_fill_gso(struct mmsghdr* m, struct iovec* iov, unsigned int niov,
                               const void* sa, socklen_t salen, unsigned char* ctrl,
                               unsigned short seg) {
        struct cmsghdr* c;
        memset(&m->msg_hdr, 0, sizeof(struct msghdr));
        memset(ctrl, 0, IAXGW_GSO_CTRL);
        m->msg_hdr.msg_name = (void*)sa;
        m->msg_hdr.msg_namelen = salen;
        m->msg_hdr.msg_iov = iov;
        m->msg_hdr.msg_iovlen = niov;
        m->msg_hdr.msg_control = ctrl;
        m->msg_hdr.msg_controllen = CMSG_SPACE(sizeof(unsigned short));
        c = CMSG_FIRSTHDR(&m->msg_hdr);
        c->cmsg_level = IPPROTO_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(unsigned short));
        memcpy(CMSG_DATA(c), &seg, sizeof(seg));
        m->msg_len = 0;
    }

    static void iaxgw_set_iov(struct iovec* iov, const char* buf, size_t len) {
        iov->iov_base = (void*)buf;
        iov->iov_len = len;
    }

    /* Prepare n receive headers over the slots and call recvmmsg; -errno on failure. */
    static int iaxgw_recv(int fd, struct mmsghdr* msgs, struct iovec* iov,
                          struct sockaddr_storage* addrs, unsigned char* ctrl,
                          unsigned char* data, size_t slot, unsigned int n) {
        unsigned int i;
        int got;
        for (i = 0; i < n; i++) {
            iov[i].iov_base = data + (size_t)i * slot;
            iov[i].iov_len = slot;
            memset(&msgs[i].msg_hdr, 0, sizeof(struct msghdr));
            msgs[i].msg_hdr.msg_name = &addrs[i];
            msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_control = ctrl + (size_t)i * IAXGW_CTRL;
            msgs[i].msg_hdr.msg_controllen = IAXGW_CTRL;
            msgs[i].msg_len = 0;
        }
        do {
            got = recvmmsg(fd, msgs, n, MSG_DONTWAIT, NULL);
        } while (got < 0 && errno == EINTR);
        return got < 0 ? -errno : got;
    }

    /* The SCM_TIMESTAMPNS of one received message (CLOCK_REALTIME, s), or -1. */
    static double iaxgw_rx_time(struct msghdr* h) {
        struct cmsghdr* c;
        struct timespec ts;
        for (c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS
                    && c->cmsg_len >= CMSG_LEN(sizeof(struct timespec))) {
                memcpy(&ts, CMSG_DATA(c), sizeof(ts));
                return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
            }
        }
        return -1.0;
    }

    /* The UDP_GRO segment size of one received message (the datagrams it coalesces are that
       long, the last may be shorter), or 0 when it is one datagram. */
    static int iaxgw_gro_size(struct msghdr* h) {
        struct cmsghdr* c;
        int v;
        for (c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
            if (c->cmsg_level == IPPROTO_UDP && c->cmsg_type == UDP_GRO
                    && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
                memcpy(&v, CMSG_DATA(c), sizeof(v));
                return v > 0 ? v : 0;
            }
        }
        return 0;
    }

    static int iaxgw_set_gro(int fd, int on) {
        return setsockopt(fd, IPPROTO_UDP, UDP_GRO, &on, sizeof(on)) == 0;
    }

    static int iaxgw_enable_timestamps(int fd) {
    #ifdef SO_TIMESTAMPNS
        int one = 1;
        return setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)) == 0;
    #else
        (void)fd;
        return 0;
    #endif
    }

    static double iaxgw_realtime(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    }

    static int iaxgw_sendmmsg(int fd, struct mmsghdr* msgs, unsigned int n) {
        int sent;
        do {
            sent = sendmmsg(fd, msgs, n, MSG_DONTWAIT);
        } while (sent < 0 && errno == EINTR);
        return sent < 0 ? -errno : sent;
    }

    /* Fill one send header; the address is already a sockaddr in `sa` (len bytes). */
    static void iaxgw_fill_send(struct mmsghdr* m, struct iovec* iov, const char* buf, size_t len,
                                const void* sa, socklen_t salen) {
        iov->iov_base = (void*)buf;
        iov->iov_len = len;
        memset(&m->msg_hdr, 0, sizeof(struct msghdr));
        m->msg_hdr.msg_name = (void*)sa;
        m->msg_hdr.msg_namelen = salen;
        m->msg_hdr.msg_iov = iov;
        m->msg_hdr.msg_iovlen = 1;
        m->msg_len = 0;
    }

    /* sockaddr -> (family, text address, port); 0 on success. */
    static int iaxgw_sa_text(const struct sockaddr_storage* ss, char* out, size_t outlen,
                             unsigned int* port) {
        if (ss->ss_family == AF_INET) {
            const struct sockaddr_in* a = (const struct sockaddr_in*)ss;
            *port = ntohs(a->sin_port);
            return inet_ntop(AF_INET, &a->sin_addr, out, (socklen_t)outlen) ? 0 : -1;
        }
        if (ss->ss_family == AF_INET6) {
            const struct sockaddr_in6* a = (const struct sockaddr_in6*)ss;
            *port = ntohs(a->sin6_port);
            return inet_ntop(AF_INET6, &a->sin6_addr, out, (socklen_t)outlen) ? 0 : -1;
        }
        return -1;
    }

    /* A cache key for a sockaddr: IPv4 only (address and port in 48 bits), else -1. */
    static long long iaxgw_sa_key(const struct sockaddr_storage* ss) {
        if (ss->ss_family == AF_INET) {
            const struct sockaddr_in* a = (const struct sockaddr_in*)ss;
            return ((long long)ntohl(a->sin_addr.s_addr) << 16) | (long long)ntohs(a->sin_port);
        }
        return -1;
    }

    /* Text address + port -> sockaddr of `family` in `ss`; its length, or 0 if not parseable. */
    static socklen_t iaxgw_text_sa(int family, const char* host, unsigned int port,
                                   struct sockaddr_storage* ss) {
        memset(ss, 0, sizeof(*ss));
        if (family == AF_INET) {
            struct sockaddr_in* a = (struct sockaddr_in*)ss;
            a->sin_family = AF_INET;
            a->sin_port = htons((unsigned short)port);
            return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? sizeof(*a) : 0;
        }
        if (family == AF_INET6) {
            struct sockaddr_in6* a = (struct sockaddr_in6*)ss;
            a->sin6_family = AF_INET6;
            a->sin6_port = htons((unsigned short)port);
            if (inet_pton(AF_INET6, host, &a->sin6_addr) == 1)
                return sizeof(*a);
            /* an IPv4 peer on a dual-stack socket */
            {
                struct in_addr v4;
                if (inet_pton(AF_INET, host, &v4) == 1) {
                    a->sin6_addr.s6_addr[10] = 0xff;
                    a->sin6_addr.s6_addr[11] = 0xff;
                    memcpy(&a->sin6_addr.s6_addr[12], &v4, 4);
                    return sizeof(*a);
                }
            }
            return 0;
        }
        return 0;
    }
    """
    ctypedef unsigned int socklen_t
    struct sockaddr_storage:
        unsigned short ss_family
    struct iovec:
        pass
    struct msghdr:
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int IAXGW_CTRL
    int IAXGW_GSO_CTRL
    int EIO
    int EINVAL
    int EMSGSIZE
    int EOPNOTSUPP
    int ENOPROTOOPT
    int MSG_TRUNC
    int AF_INET
    int AF_INET6
    int EAGAIN
    int EWOULDBLOCK
    int ENOBUFS
    int iaxgw_recv(int fd, mmsghdr* msgs, iovec* iov, sockaddr_storage* addrs,
                   unsigned char* ctrl, unsigned char* data, size_t slot,
                   unsigned int n) nogil
    double iaxgw_rx_time(msghdr* h) nogil
    int iaxgw_gro_size(msghdr* h) nogil
    int iaxgw_set_gro(int fd, int on) nogil
    double iaxgw_realtime() nogil
    int iaxgw_enable_timestamps(int fd) nogil
    int iaxgw_sendmmsg(int fd, mmsghdr* msgs, unsigned int n) nogil
    void iaxgw_fill_send(mmsghdr* m, iovec* iov, const char* buf, size_t length,
                         const void* sa, socklen_t salen) nogil
    void iaxgw_fill_gso(mmsghdr* m, iovec* iov, unsigned int niov, const void* sa,
                        socklen_t salen, unsigned char* ctrl, unsigned short seg) nogil
    void iaxgw_set_iov(iovec* iov, const char* buf, size_t length) nogil
    int iaxgw_sa_text(const sockaddr_storage* ss, char* out, size_t outlen,
                      unsigned int* port) nogil
    long long iaxgw_sa_key(const sockaddr_storage* ss) nogil
    socklen_t iaxgw_text_sa(int family, const char* host, unsigned int port,
                            sockaddr_storage* ss) nogil


#: Bytes per receive slot: more than the largest datagram the protocol core accepts (4,096), so
#: an oversize datagram still reaches it (and is dropped there, counted) rather than arriving cut
#: to a plausible length.
cdef enum:
    _SLOT = 4352
SLOT = _SLOT
#: Bytes per receive slot with receive offload (``UDP_GRO``): a message may then carry up to 64
#: datagrams that a peer sent as one segmented buffer (``UDP_SEGMENT``, at most ``GSO_MAX_BYTES``
#: here, 64 KiB in the kernel), handed over whole instead of cut back into 64 socket buffers.
cdef enum:
    _GRO_SLOT = 65536
GRO_SLOT = _GRO_SLOT
#: Datagrams per system call (receive and send).
DEFAULT_BATCH = 64
#: Distinct peer addresses remembered (received-address tuples, destination sockaddrs).
ADDR_CACHE = 4096
#: Generic segmentation offload on send (``UDP_SEGMENT``): consecutive datagrams to one address,
#: all of one size but the last, leave as one buffer that the kernel cuts back into the same
#: datagrams -- one pass through the IP stack instead of one per datagram (a trunk flush is many
#: full ``trunkmtu`` datagrams to one peer).  At most this many per buffer, this many bytes.
cdef enum:
    _GSO_MAX_SEGMENTS = 64
    _GSO_MAX_BYTES = 63000
GSO_MAX_SEGMENTS = _GSO_MAX_SEGMENTS
GSO_MAX_BYTES = _GSO_MAX_BYTES

__all__ = ["ADDR_CACHE", "DEFAULT_BATCH", "GRO_SLOT", "GSO_MAX_BYTES", "GSO_MAX_SEGMENTS", "SLOT",
           "UdpIO", "enable_rx_timestamps", "gro_default", "gso_default"]


def gso_default():
    """Whether new :class:`UdpIO` objects segment on send: yes unless ``IAXGW_NO_GSO`` is set
    (to anything but ``0``) or the platform has no ``UDP_SEGMENT`` (then the first send that the
    kernel refuses turns it off for that socket)."""
    import os
    import sys
    return sys.platform.startswith("linux") and os.environ.get("IAXGW_NO_GSO", "") in ("", "0")


def gro_default():
    """Whether new :class:`UdpIO` objects take coalesced receives (``UDP_GRO``): yes on Linux
    unless ``IAXGW_NO_GRO`` is set (to anything but ``0``); a kernel without it refuses the
    option and the socket reads datagram by datagram."""
    import os
    import sys
    return sys.platform.startswith("linux") and os.environ.get("IAXGW_NO_GRO", "") in ("", "0")


def enable_rx_timestamps(sock):
    """Ask the kernel to stamp every received datagram (``SO_TIMESTAMPNS``); False if it can't."""
    return bool(iaxgw_enable_timestamps(sock.fileno()))


cdef class UdpIO:
    """Batched receive and send on one non-blocking UDP socket (see the module docstring)."""

    cdef object _sock
    cdef int _fd
    cdef int _family
    cdef unsigned int _batch
    cdef mmsghdr* _msgs
    cdef iovec* _iov
    cdef sockaddr_storage* _addrs
    cdef unsigned char* _ctrl
    cdef unsigned char* _data
    cdef unsigned char* _sctrl
    cdef unsigned int* _counts
    cdef dict _rx_names          # IPv4 key -> (host, port)
    cdef dict _tx_names          # (host, port) -> sockaddr bytes
    cdef readonly bint timestamps
    cdef public unsigned long long send_errors
    cdef public object last_send_error
    #: segment runs of equal-size datagrams on send (see GSO_MAX_SEGMENTS); turned off for good
    #: when the kernel refuses a segmented send
    cdef public bint gso
    #: datagrams that left in segmented buffers
    cdef public unsigned long long gso_datagrams
    #: receives are coalesced (UDP_GRO on): a message may carry several datagrams
    cdef readonly bint gro
    #: datagrams that arrived in coalesced messages
    cdef public unsigned long long gro_datagrams
    cdef Py_ssize_t _slot

    def __cinit__(self, sock, unsigned int batch=DEFAULT_BATCH, *args, **kwargs):
        if batch < 1 or batch > 1024:
            raise ValueError(f"batch must be 1..1024, got {batch}")
        self._batch = batch
        self._msgs = <mmsghdr*>PyMem_Malloc(batch * sizeof(mmsghdr))
        self._iov = <iovec*>PyMem_Malloc(batch * sizeof(iovec))
        self._addrs = <sockaddr_storage*>PyMem_Malloc(batch * sizeof(sockaddr_storage))
        self._ctrl = <unsigned char*>PyMem_Malloc(batch * <size_t>IAXGW_CTRL)
        self._data = NULL           # sized in __init__ (by whether receives are coalesced)
        self._sctrl = <unsigned char*>PyMem_Malloc(batch * <size_t>IAXGW_GSO_CTRL)
        self._counts = <unsigned int*>PyMem_Malloc(batch * sizeof(unsigned int))
        if (self._msgs == NULL or self._iov == NULL or self._addrs == NULL
                or self._ctrl == NULL or self._sctrl == NULL
                or self._counts == NULL):
            raise MemoryError()
        memset(self._msgs, 0, batch * sizeof(mmsghdr))

    def __init__(self, sock, unsigned int batch=DEFAULT_BATCH, gso=None, gro=None):
        fam = sock.family
        if fam not in (_socket.AF_INET, _socket.AF_INET6) or sock.type != _socket.SOCK_DGRAM:
            raise ValueError("UdpIO needs an AF_INET or AF_INET6 datagram socket")
        self._sock = sock
        self._fd = sock.fileno()
        self._family = AF_INET if fam == _socket.AF_INET else AF_INET6
        self._rx_names = {}
        self._tx_names = {}
        self.timestamps = enable_rx_timestamps(sock)
        self.send_errors = 0
        self.last_send_error = None
        self.gso = gso_default() if gso is None else bool(gso)
        self.gso_datagrams = 0
        # set either way: the option stays with the socket, and a reader that does not cut
        # coalesced messages must not get them
        want_gro = gro_default() if gro is None else bool(gro)
        self.gro = bool(iaxgw_set_gro(self._fd, 1 if want_gro else 0)) and want_gro
        self.gro_datagrams = 0
        self._slot = _GRO_SLOT if self.gro else _SLOT
        PyMem_Free(self._data)
        self._data = <unsigned char*>PyMem_Malloc(self._batch * <size_t>self._slot)
        if self._data == NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self._msgs)
        PyMem_Free(self._iov)
        PyMem_Free(self._addrs)
        PyMem_Free(self._ctrl)
        PyMem_Free(self._data)
        PyMem_Free(self._sctrl)
        PyMem_Free(self._counts)

    @property
    def batch(self):
        return self._batch

    @property
    def socket(self):
        return self._sock

    cdef object _name(self, sockaddr_storage* ss):
        cdef long long key = iaxgw_sa_key(ss)
        cdef char text[64]
        cdef unsigned int port = 0
        if key >= 0:
            name = self._rx_names.get(key)
            if name is not None:
                return name
        if iaxgw_sa_text(ss, text, sizeof(text), &port) != 0:
            return ("?", 0)
        name = (text.decode("ascii"), port)
        if key >= 0:
            if len(self._rx_names) >= ADDR_CACHE:
                self._rx_names.clear()
            self._rx_names[key] = name
        return name

    def recv(self):
        """The waiting datagrams as ``[(data, (host, port), age_s), ...]``, from up to ``batch``
        messages (with ``gro``, a message may carry several datagrams of one sender, all with
        its age); ``[]`` when none is waiting.  ``age_s`` is how long each waited since the
        kernel stamped it (0.0 without timestamps).  Raises OSError for a socket error other
        than "would block"."""
        cdef int got, i, seg
        cdef Py_ssize_t length, off, n, slot = self._slot
        cdef double stamp, now_real
        cdef list out
        cdef const char* base
        if self._data == NULL:
            raise RuntimeError("UdpIO is not initialised")
        with nogil:
            got = iaxgw_recv(self._fd, self._msgs, self._iov, self._addrs, self._ctrl,
                             self._data, <size_t>slot, self._batch)
            now_real = iaxgw_realtime()
        if got < 0:
            if -got == EAGAIN or -got == EWOULDBLOCK:
                return []
            raise OSError(-got, _strerror(-got))
        out = []
        for i in range(got):
            length = <Py_ssize_t>self._msgs[i].msg_len
            if length > slot:                   # never trust a length beyond the slot
                length = slot
            base = <const char*>(self._data + <size_t>i * <size_t>slot)
            stamp = iaxgw_rx_time(&self._msgs[i].msg_hdr)
            age = now_real - stamp if stamp > 0.0 and now_real > stamp else 0.0
            name = self._name(&self._addrs[i])
            seg = iaxgw_gro_size(&self._msgs[i].msg_hdr) if self.gro else 0
            if 0 < seg < length:
                # coalesced: cut back into the datagrams, seg bytes each (the last may be less)
                off = 0
                while off < length:
                    n = length - off
                    if n > seg:
                        n = seg
                    out.append((PyBytes_FromStringAndSize(base + off, n), name, age))
                    off += n
                    self.gro_datagrams += 1
            else:
                out.append((PyBytes_FromStringAndSize(base, length), name, age))
        return out

    cdef object _sockaddr(self, object addr):
        sa = self._tx_names.get(addr)
        if sa is not None:
            return sa
        cdef sockaddr_storage ss
        cdef socklen_t n
        host, port = addr[0], addr[1]
        if not isinstance(host, str) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
            return None
        hb = host.encode("ascii", "replace")
        n = iaxgw_text_sa(self._family, hb, port, &ss)
        if n == 0:
            return None
        sa = PyBytes_FromStringAndSize(<char*>&ss, n)
        if len(self._tx_names) >= ADDR_CACHE:
            self._tx_names.clear()
        self._tx_names[(host, port)] = sa
        return sa

    def send(self, list items, Py_ssize_t start=0):
        """Send ``items[start:]`` (each ``(data: bytes, (host, port))``); returns the index of
        the first one not sent because the socket would block (``len(items)`` when all went).
        A datagram the kernel refuses for another reason (or with an unusable address) is
        skipped and counted in ``send_errors`` / ``last_send_error``.

        With ``gso``, a run of consecutive datagrams to one address whose sizes are all equal
        (the last may be shorter) goes as one segmented buffer; the receiver gets the same
        datagrams in the same order either way."""
        cdef Py_ssize_t n = len(items)
        cdef Py_ssize_t i = start
        cdef Py_ssize_t j, k
        cdef unsigned int m, niov, cnt, bmax = self._batch
        cdef size_t seg, total, length
        cdef int sent, err
        cdef list keep
        if start < 0:
            raise ValueError("start must be >= 0")
        while i < n:
            m = 0
            niov = 0
            keep = []           # the bytes and sockaddrs the headers point into
            j = i
            while j < n and m < bmax and niov < bmax:
                item = items[j]
                data = item[0]
                if not PyBytes_Check(data):
                    data = bytes(data)
                sa = self._sockaddr(item[1])
                if sa is None:
                    if m == 0:       # nothing batched before it: skip it now
                        self.send_errors += 1
                        self.last_send_error = f"cannot send to {item[1]!r}"
                        j += 1
                        i = j
                        continue
                    break
                keep.append(data)
                keep.append(sa)
                seg = <size_t>PyBytes_GET_SIZE(data)
                iaxgw_set_iov(&self._iov[niov], PyBytes_AS_STRING(data), seg)
                cnt = 1
                if self.gso and 0 < seg <= 0xFFFF:
                    total = seg
                    k = j + 1
                    while k < n and cnt < _GSO_MAX_SEGMENTS and niov + cnt < bmax:
                        nxt = items[k]
                        d2 = nxt[0]
                        if not PyBytes_Check(d2):
                            break
                        length = <size_t>PyBytes_GET_SIZE(d2)
                        if length == 0 or length > seg or total + length > _GSO_MAX_BYTES:
                            break
                        if self._sockaddr(nxt[1]) is not sa:
                            break
                        keep.append(d2)
                        iaxgw_set_iov(&self._iov[niov + cnt], PyBytes_AS_STRING(d2), length)
                        cnt += 1
                        total += length
                        k += 1
                        if length < seg:
                            break       # a shorter datagram ends the run
                if cnt > 1:
                    iaxgw_fill_gso(&self._msgs[m], &self._iov[niov], cnt, PyBytes_AS_STRING(sa),
                                   <socklen_t>PyBytes_GET_SIZE(sa),
                                   self._sctrl + <size_t>m * IAXGW_GSO_CTRL,
                                   <unsigned short>seg)
                else:
                    iaxgw_fill_send(&self._msgs[m], &self._iov[niov], PyBytes_AS_STRING(data),
                                    seg, PyBytes_AS_STRING(sa), <socklen_t>PyBytes_GET_SIZE(sa))
                self._counts[m] = cnt
                niov += cnt
                m += 1
                j += cnt
            if m == 0:
                break
            with nogil:
                sent = iaxgw_sendmmsg(self._fd, self._msgs, m)
            if sent < 0:
                err = -sent
                if err == EAGAIN or err == EWOULDBLOCK or err == ENOBUFS:
                    return i
                if self._counts[0] > 1 and (err == EIO or err == EINVAL or err == EMSGSIZE
                                            or err == EOPNOTSUPP or err == ENOPROTOOPT):
                    self.gso = False    # no segmentation here: send them one by one
                    continue
                # the first datagram of the batch failed: skip it, go on with the rest
                self.send_errors += 1
                self.last_send_error = f"{items[i][1]!r}: {_strerror(err)}"
                i += 1
                continue
            for k in range(sent):
                cnt = self._counts[k]
                i += cnt
                if cnt > 1:
                    self.gso_datagrams += cnt
        return n


cdef str _strerror(int err):
    import os
    return os.strerror(err)
