"""Capture real Asterisk 22 datagrams as test vectors (``tests/vectors/asterisk22_*.bin``).

``python3 -m iaxgw.sim.lab.vectors OUTDIR`` (root, provisioned lab) runs three short office-a ->
office-b calls in the lab, each captured on ``lo`` with :class:`iaxgw.sim.lab.capture.Capture`:

=========  =====================================  ===========================================
run        config (both sites)                    what it is for
=========  =====================================  ===========================================
trunk      seed (trunk=yes, trunktimestamps=no)   every signalling frame, trunk without ts,
                                                  LAGRQ/LAGRP (call held ~12 s), DTMF, HANGUP
trunk_ts   seed + trunktimestamps=yes             trunk datagrams with per-entry timestamps
mini       seed + trunk=no                        voice mini frames
=========  =====================================  ===========================================

The call is ``Local/300@internal`` on office-a (office-b answers 300 with Echo); office-a's side
runs ``SendDTMF(5)`` then ``Milliwatt()``.  Each capture is read back (pcapng or classic pcap;
Ethernet, raw IP, null/loopback and Linux cooked v1/v2 link layers), every UDP payload is
classified with :func:`iaxgw._core.frames.classify`, full frames are named by type/subclass, and
the first datagram of each kind of interest is written to ``OUTDIR/asterisk22_<kind>.bin`` (one
datagram per file), with ``OUTDIR/asterisk22_index.json`` saying, per file, the direction, what it
is and the Asterisk version.  A trimmed pcap of the trunk run (every full frame plus a few media
datagrams, original addresses and times) is written as ``asterisk22_call.pcap`` when small.

The lab lock (``<lab root>/lab.lock``, the one the pytest ``lab`` fixture takes) is held for the
whole capture so a concurrent test session does not bind 127.0.0.10/20 at the same time.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from iaxgw._core.constants import IE, ControlSubclass, DatagramKind, FrameType, IAXSubclass
from iaxgw._core.errors import FrameError
from iaxgw._core.frames import classify, parse_full, parse_mini
from iaxgw._core.ies import parse_ies
from iaxgw._core.trunk import parse_trunk
from iaxgw.gateway.driver.pcap import PcapRecord, PcapWriter
from iaxgw.gateway.iax2.address import format_addr
from iaxgw.sim.lab.capture import DEFAULT_FILTER, Capture
from iaxgw.sim.lab.lab import AsteriskInstance, Lab, LabError, running_pair
from iaxgw.sim.lab.labconfig import SITE_ADDRESSES, seed_site

PREFIX = "asterisk22_"
INDEX_NAME = "asterisk22_index.json"
PCAP_NAME = "asterisk22_call.pcap"
PCAP_MAX_BYTES = 50_000
LOCK_WAIT_S = 300.0
DIAL = "Local/300@internal"
DTMF_CONTEXT = "vectors"

# --- pcap / pcapng reading ----------------------------------------------------------------------

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_LINUX_SLL2 = 276
_PCAP_MAGICS = {0xA1B2C3D4: 1e-6, 0xA1B23C4D: 1e-9}
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_BOM = 0x1A2B3C4D


def _ip_payload(linktype: int, pkt: bytes) -> bytes | None:
    """The IPv4 packet inside one captured frame, or None (other link/network protocols)."""
    if linktype == LINKTYPE_ETHERNET:
        off, etype = 12, None
        while len(pkt) >= off + 2:
            etype = struct.unpack_from("!H", pkt, off)[0]
            if etype in (0x8100, 0x88A8):      # VLAN tags
                off += 4
                continue
            break
        return pkt[off + 2:] if etype == 0x0800 else None
    if linktype == LINKTYPE_LINUX_SLL:
        return pkt[16:] if len(pkt) >= 16 and pkt[14:16] == b"\x08\x00" else None
    if linktype == LINKTYPE_LINUX_SLL2:
        return pkt[20:] if len(pkt) >= 20 and pkt[0:2] == b"\x08\x00" else None
    if linktype == LINKTYPE_NULL:
        if len(pkt) < 4:
            return None
        family = struct.unpack_from("<I", pkt)[0]
        if family not in (2, 0x02000000):
            return None
        return pkt[4:]
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4):
        return pkt
    return None


def _udp(linktype: int, when: float, pkt: bytes) -> PcapRecord | None:
    ip = _ip_payload(linktype, pkt)
    if ip is None or len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
        return None
    ihl = (ip[0] & 0x0F) * 4
    if struct.unpack_from("!H", ip, 6)[0] & 0x3FFF:     # a fragment: not reassembled here
        return None
    if len(ip) < ihl + 8:
        return None
    sport, dport, ulen, _ = struct.unpack_from("!HHHH", ip, ihl)
    payload = ip[ihl + 8:ihl + ulen]
    if ulen < 8 or len(payload) != ulen - 8:
        return None                                     # snapped short
    src = (str(ipaddress.IPv4Address(ip[12:16])), sport)
    dst = (str(ipaddress.IPv4Address(ip[16:20])), dport)
    return PcapRecord(when, src, dst, bytes(payload))


def _frames_pcap(data: bytes) -> Iterator[tuple[int, float, bytes]]:
    magic_le = struct.unpack_from("<I", data)[0]
    magic_be = struct.unpack_from(">I", data)[0]
    if magic_le in _PCAP_MAGICS:
        bo, scale = "<", _PCAP_MAGICS[magic_le]
    elif magic_be in _PCAP_MAGICS:
        bo, scale = ">", _PCAP_MAGICS[magic_be]
    else:
        raise ValueError("not a pcap file")
    linktype = struct.unpack_from(bo + "I", data, 20)[0] & 0x0FFFFFFF
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack_from(bo + "IIII", data, pos)
        pos += 16
        if pos + incl > len(data):
            return
        yield linktype, sec + frac * scale, data[pos:pos + incl]
        pos += incl


def _frames_pcapng(data: bytes) -> Iterator[tuple[int, float, bytes]]:
    bo = "<"
    ifaces: list[tuple[int, float]] = []       # (linktype, seconds per timestamp unit)
    pos = 0
    while pos + 12 <= len(data):
        btype = struct.unpack_from(bo + "I", data, pos)[0]
        if btype == _PCAPNG_SHB:
            bom = data[pos + 8:pos + 12]
            bo = "<" if struct.unpack("<I", bom)[0] == _PCAPNG_BOM else ">"
            ifaces = []
        blen = struct.unpack_from(bo + "I", data, pos + 4)[0]
        if blen < 12 or pos + blen > len(data):
            return
        body = data[pos + 8:pos + blen - 4]
        if btype == 1:                                  # interface description
            linktype = struct.unpack_from(bo + "H", body)[0]
            ifaces.append((linktype, _if_tsresol(body[8:], bo)))
        elif btype == 6:                                # enhanced packet
            iface, ts_hi, ts_lo, caplen, _orig = struct.unpack_from(bo + "IIIII", body)
            if iface < len(ifaces):
                linktype, unit = ifaces[iface]
                yield linktype, ((ts_hi << 32) | ts_lo) * unit, body[20:20 + caplen]
        elif btype == 3 and ifaces:                     # simple packet
            orig = struct.unpack_from(bo + "I", body)[0]
            yield ifaces[0][0], 0.0, body[4:4 + orig]
        pos += blen


def _if_tsresol(options: bytes, bo: str) -> float:
    pos = 0
    while pos + 4 <= len(options):
        code, length = struct.unpack_from(bo + "HH", options, pos)
        if code == 0:
            break
        if code == 9 and length >= 1:                   # if_tsresol
            v = options[pos + 4]
            return 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0 ** -v
        pos += 4 + ((length + 3) & ~3)
    return 1e-6


def read_capture(path: str | os.PathLike[str]) -> list[PcapRecord]:
    """The UDP/IPv4 datagrams of a pcapng or classic pcap file, in file order."""
    data = Path(path).read_bytes()
    if len(data) < 24:
        return []
    first = struct.unpack_from("<I", data)[0]
    frames = _frames_pcapng(data) if first == _PCAPNG_SHB else _frames_pcap(data)
    out = []
    for linktype, when, pkt in frames:
        rec = _udp(linktype, when, pkt)
        if rec is not None:
            out.append(rec)
    return out


# --- naming datagrams ---------------------------------------------------------------------------

_SITE_BY_IP = {ip: name for name, (ip, _prefix) in SITE_ADDRESSES.items()}


def _site(addr: tuple[str, int]) -> str:
    return _SITE_BY_IP.get(addr[0], format_addr(addr))


def _enum_name(enum: type, value: int) -> str:
    try:
        return str(enum(value).name)
    except ValueError:
        return str(value)


def kinds_of(payload: bytes) -> list[str]:
    """The vector kinds one datagram can stand for, most specific first ([] = not of interest)."""
    cls = classify(payload)
    if cls == DatagramKind.MINI:
        return ["voice_mini"]
    if cls == DatagramKind.META:
        try:
            tf = parse_trunk(payload)
        except FrameError:
            return []
        return ["trunk_ts" if tf.timestamps else "trunk_nots"]
    if cls != DatagramKind.FULL:
        return []
    try:
        f = parse_full(payload)
    except FrameError:
        return []
    ft, sub = f.frametype, f.subclass
    if ft == FrameType.IAX:
        name = _enum_name(IAXSubclass, sub).lower()
        if sub == IAXSubclass.NEW:
            try:
                token = dict(parse_ies(f.payload)).get(IE.CALLTOKEN)
            except FrameError:
                token = None
            return ["new_with_token" if token else "new"]
        return [name]
    if ft == FrameType.CONTROL:
        return [f"control_{_enum_name(ControlSubclass, sub).lower()}"]
    if ft == FrameType.VOICE:
        return ["voice_full"]
    if ft == FrameType.DTMF:
        return ["dtmf"]
    if ft == FrameType.DTMF_BEGIN:
        return ["dtmf_begin"]
    return [f"{_enum_name(FrameType, ft).lower()}_{sub}"]


def describe(payload: bytes) -> str:
    """A one-line human description of a datagram (for the index)."""
    cls = classify(payload)
    if cls == DatagramKind.MINI:
        callno, ts16, media = parse_mini(payload)
        return f"voice mini frame: scallno {callno}, ts16 {ts16}, {len(media)} bytes payload"
    if cls == DatagramKind.META:
        tf = parse_trunk(payload)
        variant = "with" if tf.timestamps else "without"
        ents = ", ".join(f"callno {c}" + ("" if t is None else f" ts16 {t}") + f" {len(p)} B"
                         for c, t, p in tf.entries)
        return (f"trunk datagram {variant} entry timestamps: trunk ts {tf.trunk_ts}, "
                f"{len(tf.entries)} entr{'y' if len(tf.entries) == 1 else 'ies'} ({ents})")
    f = parse_full(payload)
    ft = _enum_name(FrameType, f.frametype)
    if f.frametype == FrameType.IAX:
        sub = _enum_name(IAXSubclass, f.subclass)
    elif f.frametype == FrameType.CONTROL:
        sub = _enum_name(ControlSubclass, f.subclass)
    else:
        sub = str(f.subclass)
    text = (f"full frame {ft}/{sub}: scallno {f.scallno}, dcallno {f.dcallno}, ts {f.ts}, "
            f"oseq {f.oseqno}, iseq {f.iseqno}")
    if f.retransmit:
        text += ", retransmitted"
    if f.frametype == FrameType.IAX and f.payload:
        try:
            ies = [_enum_name(IE, k) for k, _v in parse_ies(f.payload)]
            text += f"; IEs {', '.join(ies)}"
        except FrameError:
            text += f"; {len(f.payload)} payload bytes (IEs do not parse)"
    elif f.payload:
        text += f"; {len(f.payload)} payload bytes"
    return text


def _good_media(kind: str, payload: bytes) -> bool:
    """Prefer media datagrams whose every payload is a full 20 ms of ulaw (160 bytes)."""
    if kind == "voice_mini":
        return len(parse_mini(payload)[2]) == 160
    if kind.startswith("trunk_"):
        tf = parse_trunk(payload)
        return bool(tf.entries) and not tf.truncated and all(len(p) == 160
                                                             for _c, _t, p in tf.entries)
    if kind == "voice_full":
        return len(payload) == 12 + 160
    return True


# --- runs ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """One capture: the config overrides for both sites, how long the call is held, and which
    kinds this run contributes (``None``: every kind not taken yet)."""

    name: str
    overrides: dict[str, object]
    hold_s: float
    wanted: frozenset[str] | None = None
    note: str = ""


RUNS: tuple[Run, ...] = (
    Run("trunk", {}, 12.5, None, "seed config (trunk=yes, trunktimestamps default no)"),
    Run("trunk_ts", {"trunktimestamps": True}, 3.0, frozenset({"trunk_ts"}),
        "seed config + trunktimestamps=yes"),
    Run("mini", {"trunk": False}, 3.0, frozenset({"voice_mini"}), "seed config + trunk=no"),
)


@dataclass
class Picked:
    kind: str
    record: PcapRecord
    run: Run
    index: int                       # position in the capture


@dataclass
class Result:
    version: str = ""
    picked: dict[str, Picked] = field(default_factory=dict)
    captures: dict[str, Path] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


def _wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")


def _call(a: AsteriskInstance, b: AsteriskInstance, hold_s: float) -> None:
    a.wait_peer_ok(timeout=30)
    b.wait_peer_ok(timeout=30)
    a.cli(f"channel originate {DIAL} extension s@{DTMF_CONTEXT}")
    _wait(lambda: b.active_calls() >= 1, 15, "office-b to have the call")
    time.sleep(hold_s)
    a.hangup_all()
    _wait(lambda: a.active_calls() == 0 and b.active_calls() == 0, 15, "the call to end")
    time.sleep(1.0)                  # the ACK of the HANGUP


def capture_run(lab: Lab, run: Run, pcap: Path, log: Callable[[str], None]) -> str:
    """Start both sites with ``run``'s config, capture one call into ``pcap``; the version."""
    dialplan = {DTMF_CONTEXT: ("exten => s,1,SendDTMF(5)", " same => n,Milliwatt()")}
    cfg_a = seed_site("office-a", extra_dialplan=dialplan, extra_modules=("app_senddtmf",),
                      **run.overrides)
    cfg_b = seed_site("office-b", **run.overrides)
    log(f"[{run.name}] {run.note}: capturing into {pcap}")
    with Capture(pcap, DEFAULT_FILTER), running_pair(lab, cfg_a, cfg_b) as (a, b):
        version = a.cli("core show version").strip()
        _call(a, b, run.hold_s)
    return version


def pick(records: list[PcapRecord], run: Run, result: Result) -> None:
    """Take the first datagram of each kind this run contributes (a full 160-byte one for media)."""
    counts: dict[str, int] = {}
    fallback: dict[str, Picked] = {}
    for i, rec in enumerate(records):
        for kind in kinds_of(rec.payload):
            counts[kind] = counts.get(kind, 0) + 1
            if run.wanted is not None and kind not in run.wanted:
                continue
            if kind in result.picked:
                continue
            if _good_media(kind, rec.payload):
                result.picked[kind] = Picked(kind, rec, run, i)
            else:
                fallback.setdefault(kind, Picked(kind, rec, run, i))
    for kind, p in fallback.items():
        result.picked.setdefault(kind, p)
    result.counts[run.name] = dict(sorted(counts.items()))


def write_vectors(result: Result, outdir: Path) -> list[Path]:
    """``asterisk22_<kind>.bin`` per picked datagram plus the index; returns the files written."""
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    index: dict[str, object] = {
        "asterisk_version": result.version,
        "tool": "python3 -m iaxgw.sim.lab.vectors",
        "call": f"office-a originates {DIAL} (SendDTMF(5), Milliwatt) to office-b 300 (Echo)",
        "runs": {r.name: r.note for r in RUNS},
        "files": {},
    }
    files: dict[str, object] = {}
    for kind in sorted(result.picked):
        p = result.picked[kind]
        name = f"{PREFIX}{kind}.bin"
        (outdir / name).write_bytes(p.record.payload)
        written.append(outdir / name)
        files[name] = {
            "kind": kind,
            "datagram": _enum_name(DatagramKind, classify(p.record.payload)).lower(),
            "direction": f"{_site(p.record.src)} -> {_site(p.record.dst)}",
            "src": format_addr(p.record.src),
            "dst": format_addr(p.record.dst),
            "what": describe(p.record.payload),
            "bytes": len(p.record.payload),
            "run": p.run.name,
            "asterisk_version": result.version,
        }
    index["files"] = files
    index["seen"] = result.counts
    (outdir / INDEX_NAME).write_text(json.dumps(index, indent=1) + "\n")
    written.append(outdir / INDEX_NAME)
    return written


def write_trimmed_pcap(records: list[PcapRecord], path: Path, media_each: int = 4) -> int:
    """Every full frame of ``records`` plus the first ``media_each`` media datagrams per
    direction, as a classic pcap (Ethernet, real addresses and times); returns its size."""
    media: dict[tuple[tuple[str, int], tuple[str, int]], int] = {}
    with PcapWriter(path) as w:
        for rec in records:
            cls = classify(rec.payload)
            if cls != DatagramKind.FULL:
                key = (rec.src, rec.dst)
                if media.get(key, 0) >= media_each:
                    continue
                media[key] = media.get(key, 0) + 1
            # "tx" = src -> dst with local = src
            w.write("tx", rec.payload, rec.src, rec.dst, rec.time)
    return path.stat().st_size


def capture_vectors(outdir: str | os.PathLike[str], *, lab: Lab | None = None,
                    workdir: str | os.PathLike[str] | None = None,
                    runs: tuple[Run, ...] = RUNS,
                    log: Callable[[str], None] = print) -> Result:
    """Run the captures (under the lab lock) and write the vectors into ``outdir``."""
    lab = lab or Lab()
    reason = lab.unavailable_reason()
    if reason is not None:
        raise LabError(reason)
    out = Path(outdir)
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="iaxgw-vectors-"))
    work.mkdir(parents=True, exist_ok=True)
    result = Result()
    with lab.lock(wait=LOCK_WAIT_S):
        for run in runs:
            pcap = work / f"asterisk22_{run.name}.pcapng"
            version = capture_run(lab, run, pcap, log)
            result.version = result.version or version
            result.captures[run.name] = pcap
    for run in runs:
        records = read_capture(result.captures[run.name])
        log(f"[{run.name}] {len(records)} datagrams in {result.captures[run.name]}")
        pick(records, run, result)
    for path in write_vectors(result, out):
        log(f"wrote {path}")
    trunk_pcap = result.captures.get("trunk")
    if trunk_pcap is not None:
        target = out / PCAP_NAME
        size = write_trimmed_pcap(read_capture(trunk_pcap), target)
        if size > PCAP_MAX_BYTES:
            target.unlink()
            log(f"trimmed pcap is {size} bytes (> {PCAP_MAX_BYTES}); not kept")
        else:
            log(f"wrote {target} ({size} bytes, trimmed)")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m iaxgw.sim.lab.vectors",
                                 description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("outdir", help="folder for asterisk22_*.bin and asterisk22_index.json")
    ap.add_argument("--workdir", default=None, help="where the raw captures go (default: a "
                    "new temporary folder, kept)")
    args = ap.parse_args(argv)
    try:
        capture_vectors(args.outdir, workdir=args.workdir)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
