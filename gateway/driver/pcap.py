"""A minimal pcap writer (and reader, for tests) for the datagrams a gateway sends and receives.

Each UDP payload is wrapped in synthesised Ethernet + IPv4 or IPv6 + UDP headers carrying the
real addresses and ports, so Wireshark/tshark decode it as IAX2 (UDP 4569) exactly as if it had
been captured on the wire.  Classic pcap format (not pcapng), microsecond timestamps,
LINKTYPE_ETHERNET (or raw IP, LINKTYPE_RAW).
"""

from __future__ import annotations

import heapq
import ipaddress
import os
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from iaxgw.gateway.iax2.address import Addr
from iaxgw.gateway.safefs import create_private_file

PCAP_MAGIC = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
SNAPLEN = 65535
#: the largest record a reader accepts (dumpcap's default snap length; ours is SNAPLEN)
MAX_RECORD = 262144

_GLOBAL_HDR = struct.Struct("<IHHiIII")
_REC_HDR = struct.Struct("<IIII")
_ETH_HDR = struct.Struct("!6s6sH")
_IPV4_HDR = struct.Struct("!BBHHHBBH4s4s")
_UDP_HDR = struct.Struct("!HHHH")
_IPV6_HDR = struct.Struct("!IHBB16s16s")
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_IPPROTO_UDP = 17
# Locally administered MACs: the capture has no real link layer.
_MAC_LOCAL = bytes.fromhex("020000000001")
_MAC_REMOTE = bytes.fromhex("020000000002")
#: How far (s) a record may be out of time order in one part and still be put in order by
#: :meth:`PcapWriter.merge`: receive batches are stamped a few ms back, rarely more.
MERGE_WINDOW_S = 0.5


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_ipv4_udp(src: Addr, dst: Addr, payload: bytes, ident: int = 0) -> bytes:
    """An IPv4 packet (header checksum filled in) carrying one UDP datagram."""
    udp_len = _UDP_HDR.size + len(payload)
    total_len = 20 + udp_len
    if total_len > 0xFFFF:
        raise ValueError(f"datagram too large for IPv4: {len(payload)} bytes")
    saddr = ipaddress.IPv4Address(src[0]).packed
    daddr = ipaddress.IPv4Address(dst[0]).packed
    hdr = _IPV4_HDR.pack(0x45, 0, total_len, ident & 0xFFFF, 0x4000, 64, _IPPROTO_UDP, 0,
                         saddr, daddr)
    hdr = hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]
    # UDP checksum 0 = "not computed", valid for IPv4 and ignored by dissectors.
    udp = _UDP_HDR.pack(src[1], dst[1], udp_len, 0)
    return hdr + udp + payload


def build_ipv6_udp(src: Addr, dst: Addr, payload: bytes) -> bytes:
    """An IPv6 packet carrying one UDP datagram, its checksum computed over the pseudo-header
    (RFC 8200 section 8.1: mandatory over IPv6)."""
    udp_len = _UDP_HDR.size + len(payload)
    if udp_len > 0xFFFF:
        raise ValueError(f"datagram too large for a UDP length: {len(payload)} bytes")
    saddr = ipaddress.IPv6Address(src[0]).packed
    daddr = ipaddress.IPv6Address(dst[0]).packed
    pseudo = saddr + daddr + struct.pack("!I3xB", udp_len, _IPPROTO_UDP)
    udp = _UDP_HDR.pack(src[1], dst[1], udp_len, 0)
    checksum = _checksum(pseudo + udp + payload) or 0xFFFF
    udp = _UDP_HDR.pack(src[1], dst[1], udp_len, checksum)
    hdr = _IPV6_HDR.pack(6 << 28, udp_len, _IPPROTO_UDP, 64, saddr, daddr)
    return hdr + udp + payload


def build_ip_udp(src: Addr, dst: Addr, payload: bytes, ident: int = 0) -> tuple[bytes, int]:
    """(packet, ethertype): IPv6 when the addresses are IPv6, else IPv4."""
    if ":" in src[0]:
        return build_ipv6_udp(src, dst, payload), _ETHERTYPE_IPV6
    return build_ipv4_udp(src, dst, payload, ident), _ETHERTYPE_IPV4


class PcapWriter:
    """Append datagrams to a pcap file; safe to call from the event loop only (one writer).

    ``write(direction, data, local, remote, when)``: ``direction`` is ``"tx"`` (local -> remote)
    or ``"rx"`` (remote -> local); ``when`` is wall-clock seconds (default: now).
    """

    def __init__(self, path: str | Path, linktype: int = LINKTYPE_ETHERNET) -> None:
        if linktype not in (LINKTYPE_ETHERNET, LINKTYPE_RAW):
            raise ValueError(f"unsupported linktype {linktype}")
        self.path = Path(path)
        self.linktype = linktype
        # created 0600, never through a link: the capture holds the md5 challenges and
        # responses of the calls (a weak secret can be found from them offline)
        self._fh: BinaryIO | None = os.fdopen(create_private_file(self.path), "wb")
        self._fh.write(_GLOBAL_HDR.pack(PCAP_MAGIC, 2, 4, 0, 0, SNAPLEN, linktype))
        self._fh.flush()
        self._ident = 0
        self._lock = threading.Lock()
        self.count = 0

    def write(self, direction: str, data: bytes, local: Addr, remote: Addr,
              when: float | None = None) -> None:
        if direction == "tx":
            src, dst, smac, dmac = local, remote, _MAC_LOCAL, _MAC_REMOTE
        elif direction == "rx":
            src, dst, smac, dmac = remote, local, _MAC_REMOTE, _MAC_LOCAL
        else:
            raise ValueError(f"direction must be 'tx' or 'rx', not {direction!r}")
        try:
            packet, ethertype = build_ip_udp(src, dst, bytes(data), self._ident)
        except (ipaddress.AddressValueError, ValueError):
            return  # a local and a remote address of different families: nothing to write
        self._ident += 1
        if self.linktype == LINKTYPE_ETHERNET:
            packet = _ETH_HDR.pack(dmac, smac, ethertype) + packet
        t = time.time() if when is None else when
        sec = int(t)
        usec = round((t - sec) * 1_000_000)
        if usec >= 1_000_000:
            sec, usec = sec + 1, usec - 1_000_000
        with self._lock:
            if self._fh is None:
                return
            self._fh.write(_REC_HDR.pack(sec, usec, len(packet), len(packet)) + packet)
            self.count += 1

    def merge(self, parts: Sequence[str | Path], window: float = MERGE_WINDOW_S) -> int:
        """Append every record of the pcap files ``parts`` (ours, of the same link type) in
        time order, byte for byte: one capture of a run that several processes captured
        (``loadtest --pcap`` with shards).  A part is not strictly in time order itself (a
        received datagram is stamped with its arrival time when it is read, after datagrams sent
        since), so records are held back ``window`` seconds and sorted; one later than that is
        still written, out of order.  Streams: the records of one window in memory.  Returns the
        number of records; ValueError if a part is not such a file."""
        streams = [_raw_records(p, self.linktype) for p in parts]
        held: list[tuple[int, int, bytes]] = []
        n = 0
        span = round(window * 1_000_000)
        with self._lock:
            fh = self._fh
            if fh is None:
                raise ValueError(f"{self.path}: closed")
            for usec, record in heapq.merge(*streams, key=lambda r: r[0]):
                heapq.heappush(held, (usec, n, record))
                n += 1
                while held[0][0] < usec - span:
                    fh.write(heapq.heappop(held)[2])
            while held:
                fh.write(heapq.heappop(held)[2])
            self.count += n
        return n

    def flush(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class PcapRecord:
    """One UDP datagram read back from a pcap file."""

    time: float
    src: Addr
    dst: Addr
    payload: bytes


def _records(path: str | Path, linktype: int | None = None
             ) -> Iterator[tuple[int, int, int, bytes, bytes]]:
    """``(link type, sec, usec, record header, packet)`` of each record of a classic
    little-endian microsecond pcap (of ``linktype``, if given); a cut-off last record (a process
    killed mid-write) ends it.  ValueError if it is not such a file."""
    with open(path, "rb") as fh:
        hdr = fh.read(_GLOBAL_HDR.size)
        if len(hdr) < _GLOBAL_HDR.size:
            raise ValueError(f"{path}: not a pcap file (short header)")
        magic, _vmaj, _vmin, _tz, _sig, _snap, kind = _GLOBAL_HDR.unpack(hdr)
        if magic != PCAP_MAGIC:
            raise ValueError(f"{path}: not a little-endian microsecond pcap (magic {magic:#x})")
        if linktype is not None and kind != linktype:
            raise ValueError(f"{path}: a pcap file of link type {kind}, not {linktype}")
        while True:
            rec = fh.read(_REC_HDR.size)
            if len(rec) < _REC_HDR.size:
                return
            sec, usec, incl, _orig = _REC_HDR.unpack(rec)
            if incl > MAX_RECORD:
                raise ValueError(f"{path}: a record of {incl} bytes")
            pkt = fh.read(incl)
            if len(pkt) < incl:
                return
            yield kind, sec, usec, rec, pkt


def _raw_records(path: str | Path, linktype: int) -> Iterator[tuple[int, bytes]]:
    """``(time in microseconds, record header + packet)`` of each record of one of our pcap
    files."""
    for _kind, sec, usec, rec, pkt in _records(path, linktype):
        yield sec * 1_000_000 + usec, rec + pkt


def read_pcap(path: str | Path) -> Iterator[PcapRecord]:
    """Yield the UDP datagrams (IPv4 and IPv6) of a classic little-endian pcap (Ethernet or
    raw IP)."""
    for linktype, sec, usec, _rec, pkt in _records(path):
        if linktype == LINKTYPE_ETHERNET:
            if len(pkt) < 14 or struct.unpack("!H", pkt[12:14])[0] not in (
                    _ETHERTYPE_IPV4, _ETHERTYPE_IPV6):
                continue
            pkt = pkt[14:]
        udp = _udp_of(pkt)
        if udp is not None:
            src, dst, payload = udp
            yield PcapRecord(sec + usec / 1e6, src, dst, payload)


def _udp_of(pkt: bytes) -> tuple[Addr, Addr, bytes] | None:
    """(source, destination, payload) of an IPv4 or IPv6 packet carrying UDP, else None."""
    version = pkt[0] >> 4 if pkt else 0
    if version == 4 and len(pkt) >= 20 and pkt[9] == _IPPROTO_UDP:
        ihl = (pkt[0] & 0x0F) * 4
        saddr = str(ipaddress.IPv4Address(pkt[12:16]))
        daddr = str(ipaddress.IPv4Address(pkt[16:20]))
    elif version == 6 and len(pkt) >= 48 and pkt[6] == _IPPROTO_UDP:
        ihl = 40
        saddr = str(ipaddress.IPv6Address(pkt[8:24]))
        daddr = str(ipaddress.IPv6Address(pkt[24:40]))
    else:
        return None
    sport, dport, ulen, _ = _UDP_HDR.unpack(pkt[ihl:ihl + 8])
    return (saddr, sport), (daddr, dport), pkt[ihl + 8:ihl + ulen]
