"""A minimal pcap writer (and reader, for tests) for the datagrams a gateway sends and receives.

Each UDP payload is wrapped in synthesised Ethernet + IPv4 + UDP headers carrying the real
addresses and ports, so Wireshark/tshark decode it as IAX2 (UDP 4569) exactly as if it had been
captured on the wire.  Classic pcap format (not pcapng), microsecond timestamps, LINKTYPE_ETHERNET.
"""

from __future__ import annotations

import ipaddress
import os
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from iaxgw.gateway.safefs import create_private_file

PCAP_MAGIC = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
SNAPLEN = 65535

_GLOBAL_HDR = struct.Struct("<IHHiIII")
_REC_HDR = struct.Struct("<IIII")
_ETH_HDR = struct.Struct("!6s6sH")
_IPV4_HDR = struct.Struct("!BBHHHBBH4s4s")
_UDP_HDR = struct.Struct("!HHHH")
_ETHERTYPE_IPV4 = 0x0800
_IPPROTO_UDP = 17
# Locally administered MACs: the capture has no real link layer.
_MAC_LOCAL = bytes.fromhex("020000000001")
_MAC_REMOTE = bytes.fromhex("020000000002")

Addr = tuple[str, int]


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
            packet = build_ipv4_udp(src, dst, bytes(data), self._ident)
        except ipaddress.AddressValueError:
            return  # IPv6 peers are not captured by this writer
        self._ident += 1
        if self.linktype == LINKTYPE_ETHERNET:
            packet = _ETH_HDR.pack(dmac, smac, _ETHERTYPE_IPV4) + packet
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


def read_pcap(path: str | Path) -> Iterator[PcapRecord]:
    """Yield the UDP/IPv4 datagrams of a classic little-endian pcap (Ethernet or raw IP)."""
    with open(path, "rb") as fh:
        hdr = fh.read(_GLOBAL_HDR.size)
        if len(hdr) < _GLOBAL_HDR.size:
            raise ValueError(f"{path}: not a pcap file (short header)")
        magic, _vmaj, _vmin, _tz, _sig, _snap, linktype = _GLOBAL_HDR.unpack(hdr)
        if magic != PCAP_MAGIC:
            raise ValueError(f"{path}: not a little-endian microsecond pcap (magic {magic:#x})")
        while True:
            rec = fh.read(_REC_HDR.size)
            if len(rec) < _REC_HDR.size:
                return
            sec, usec, incl, _orig = _REC_HDR.unpack(rec)
            pkt = fh.read(incl)
            if len(pkt) < incl:
                return
            if linktype == LINKTYPE_ETHERNET:
                if len(pkt) < 14 or struct.unpack("!H", pkt[12:14])[0] != _ETHERTYPE_IPV4:
                    continue
                pkt = pkt[14:]
            ihl = (pkt[0] & 0x0F) * 4
            if pkt[0] >> 4 != 4 or pkt[9] != _IPPROTO_UDP:
                continue
            saddr = str(ipaddress.IPv4Address(pkt[12:16]))
            daddr = str(ipaddress.IPv4Address(pkt[16:20]))
            sport, dport, ulen, _ = _UDP_HDR.unpack(pkt[ihl:ihl + 8])
            yield PcapRecord(sec + usec / 1e6, (saddr, sport), (daddr, dport),
                             pkt[ihl + 8:ihl + ulen])
