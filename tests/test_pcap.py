"""The pcap writer: files it writes read back with our reader and decode as IAX2 in tshark."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from iaxgw._core.constants import FrameType, IAXSubclass
from iaxgw._core.frames import build_full, build_mini
from iaxgw.gateway.driver.pcap import LINKTYPE_RAW, PcapWriter, build_ipv4_udp, read_pcap

LOCAL = ("127.0.0.20", 4569)
REMOTE = ("127.0.0.10", 4569)


def _frames() -> list[tuple[str, bytes]]:
    poke = build_full(7, 0, 1000, 0, 0, FrameType.IAX, IAXSubclass.POKE)
    pong = build_full(1, 7, 1000, 0, 1, FrameType.IAX, IAXSubclass.PONG)
    mini = build_mini(16390, 1234, b"\xff" * 160)
    # trunk meta frame without per-call timestamps: 2 calls x 160 bytes
    trunk = struct.pack("!HBBI", 0, 1, 0, 40)
    for callno in (16390, 16391):
        trunk += struct.pack("!HH", callno, 160) + b"\x55" * 160
    return [("tx", poke), ("rx", pong), ("rx", mini), ("tx", trunk)]


def _write(path: Path, linktype: int | None = None) -> list[tuple[str, bytes]]:
    frames = _frames()
    writer = PcapWriter(path) if linktype is None else PcapWriter(path, linktype)
    with writer:
        for i, (direction, data) in enumerate(frames):
            writer.write(direction, data, LOCAL, REMOTE, when=1_700_000_000 + i * 0.02)
        assert writer.count == len(frames)
    return frames


def test_ipv4_header_checksum_verifies() -> None:
    pkt = build_ipv4_udp(LOCAL, REMOTE, b"abc")
    total = sum(struct.unpack("!10H", pkt[:20]))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    assert total == 0xFFFF
    assert len(pkt) == 20 + 8 + 3


@pytest.mark.parametrize("linktype", [None, LINKTYPE_RAW])
def test_roundtrip_own_reader(tmp_path: Path, linktype: int | None) -> None:
    path = tmp_path / "x.pcap"
    frames = _write(path, linktype)
    recs = list(read_pcap(path))
    assert [r.payload for r in recs] == [data for _d, data in frames]
    assert recs[0].src == LOCAL and recs[0].dst == REMOTE
    assert recs[1].src == REMOTE and recs[1].dst == LOCAL
    assert recs[1].time == pytest.approx(1_700_000_000.02)


def test_merge_interleaves_captures_in_time_order(tmp_path: Path) -> None:
    """Several processes' captures (``loadtest --pcap`` with shards) merged into one: every
    record once, byte for byte, in time order even where a part was not; a record cut off by a
    killed process ends its part; a part of another link type is refused."""
    parts = []
    for k in range(3):
        part = tmp_path / f"part-{k}.pcap"
        with PcapWriter(part) as w:
            for i in range(50):
                # a received datagram is written after later sends, stamped back by its age
                back = 0.045 if i % 5 == 4 else 0.0
                w.write("tx" if i % 2 else "rx", bytes([k, i]) * 10, (f"127.0.0.{20 + k}", 4569),
                        REMOTE, when=1_700_000_000 + i * 0.02 + k * 0.007 - back)
        parts.append(part)
    with parts[2].open("ab") as fh:
        fh.write(struct.pack("<IIII", 1_700_000_999, 0, 60, 60) + b"\x00" * 10)   # cut off
    out = tmp_path / "merged.pcap"
    with PcapWriter(out) as w:
        assert w.merge(parts) == 150 and w.count == 150
    recs = list(read_pcap(out))
    times = [r.time for r in recs]
    assert len(recs) == 150 and times == sorted(times)
    assert [r.time for r in read_pcap(parts[0])] != sorted(r.time for r in read_pcap(parts[0]))
    assert sorted(r.payload for r in recs) == sorted(
        r.payload for p in parts for r in read_pcap(p))
    assert {r.src for r in recs if r.payload[:1] == b"\x01" and r.payload[1] % 2} == {
        ("127.0.0.21", 4569)}
    raw = tmp_path / "raw.pcap"
    PcapWriter(raw, LINKTYPE_RAW).close()
    with PcapWriter(tmp_path / "m2.pcap") as w, pytest.raises(ValueError, match="link type"):
        w.merge([parts[0], raw])


def test_bad_direction_rejected(tmp_path: Path) -> None:
    with PcapWriter(tmp_path / "x.pcap") as w, pytest.raises(ValueError):
        w.write("sideways", b"x", LOCAL, REMOTE)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize("linktype", [None, LINKTYPE_RAW])
def test_tshark_decodes_iax2(tmp_path: Path, linktype: int | None) -> None:
    path = tmp_path / "x.pcap"
    _write(path, linktype)
    out = subprocess.run(
        ["tshark", "-r", str(path), "-Y", "iax2", "-T", "fields",
         "-e", "ip.src", "-e", "udp.srcport", "-e", "iax2.packet_type", "-e", "iax2.iax.subclass",
         "-e", "iax2.src_call"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.splitlines()
    assert len(out) == 4, out
    rows = [line.split("\t") for line in out]
    assert rows[0][0] == "127.0.0.20" and rows[1][0] == "127.0.0.10"
    # Wireshark packet types: 1 = full, 0 = mini voice, 3 = trunk
    assert [r[2] for r in rows] == ["1", "1", "0", "3"]
    assert rows[0][4] == "7" and rows[2][4] == "16390"
    assert rows[0][3] == "30"  # POKE
    assert rows[1][3] == "3"   # PONG
    info = subprocess.run(["tshark", "-r", str(path)], capture_output=True, text=True,
                          timeout=60, check=True).stdout
    assert "Trunk packet with 2 media frames for 2 calls" in info, info
    # (tshark 4.0 -V flags the last entry of a trunk frame without per-call timestamps as
    # malformed: its dissect_trunkcall_nots sizes the subtree as 6 + len instead of 4 + len.)


_CAN_CAPTURE = shutil.which("dumpcap") is not None and os.geteuid() == 0


@pytest.mark.skipif(not _CAN_CAPTURE, reason="needs dumpcap and root (capture rights)")
def test_lab_capture_file_is_private_and_never_follows_a_link(tmp_path: Path) -> None:
    """``iaxgw lab capture``'s file holds md5 challenges and responses: created 0600 whatever
    the umask, and a link planted at its path is refused, its target left alone."""
    from iaxgw.sim.lab.capture import Capture, CaptureError

    old = os.umask(0)
    try:
        pcap = tmp_path / "trunk.pcap"
        with Capture(pcap, "udp port 45999", classic_pcap=True):
            pass
        assert stat.S_IMODE(os.lstat(pcap).st_mode) == 0o600
        assert list(read_pcap(pcap)) == []     # a valid (empty) capture came through stdout
        victim = tmp_path / "victim"
        victim.write_bytes(b"keep me")
        planted = tmp_path / "planted.pcap"
        planted.symlink_to(victim)
        with pytest.raises(CaptureError, match="not a plain file of ours"):
            Capture(planted, "udp port 45999").start()
        hard = tmp_path / "hard.pcap"
        os.link(victim, hard)
        with pytest.raises(CaptureError, match="not a plain file of ours"):
            Capture(hard, "udp port 45999").start()
        assert victim.read_bytes() == b"keep me"
    finally:
        os.umask(old)


LOCAL6 = ("::1", 4569)
REMOTE6 = ("fd00::10", 4570)


def _udp6_checksum_ok(pkt: bytes) -> bool:
    """The UDP checksum of an IPv6 packet (no Ethernet) verifies over its pseudo-header."""
    udp = pkt[40:]
    pseudo = pkt[8:40] + struct.pack("!I3xB", len(udp), 17)
    data = pseudo + udp + (b"\x00" if len(udp) % 2 else b"")
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


@pytest.mark.parametrize("linktype", [None, LINKTYPE_RAW])
def test_ipv6_written_and_read_back(tmp_path: Path, linktype: int | None) -> None:
    path = tmp_path / "v6.pcap"
    frames = _frames()
    with (PcapWriter(path) if linktype is None else PcapWriter(path, linktype)) as w:
        for direction, data in frames:
            w.write(direction, data, LOCAL6, REMOTE6, when=1_700_000_000.5)
        assert w.count == len(frames)
    recs = list(read_pcap(path))
    assert [r.payload for r in recs] == [data for _d, data in frames]
    assert recs[0].src == LOCAL6 and recs[0].dst == REMOTE6
    assert recs[1].src == REMOTE6 and recs[1].dst == LOCAL6
    raw = path.read_bytes()[24 + 16:]                 # the first record's packet
    if linktype is None:
        assert raw[12:14] == b"\x86\xdd"              # EtherType IPv6
        raw = raw[14:]
    assert raw[0] >> 4 == 6 and raw[6] == 17
    assert _udp6_checksum_ok(raw[:40 + 8 + len(frames[0][1])])


def test_ipv6_checksum_of_odd_payload() -> None:
    from iaxgw.gateway.driver.pcap import build_ipv6_udp

    assert _udp6_checksum_ok(build_ipv6_udp(LOCAL6, REMOTE6, b"abc"))
    assert _udp6_checksum_ok(build_ipv6_udp(LOCAL6, REMOTE6, b""))


def test_mixed_families_not_written(tmp_path: Path) -> None:
    with PcapWriter(tmp_path / "m.pcap") as w:
        w.write("tx", b"\x80\x01" + bytes(10), LOCAL, REMOTE6)
        assert w.count == 0


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_decodes_iax2_over_ipv6(tmp_path: Path) -> None:
    path = tmp_path / "v6.pcap"
    with PcapWriter(path) as w:
        for direction, data in _frames():
            w.write(direction, data, LOCAL6, REMOTE6, when=1_700_000_000.5)
    out = subprocess.run(
        ["tshark", "-r", str(path), "-o", "udp.check_checksum:TRUE", "-Y", "iax2",
         "-T", "fields", "-e", "ipv6.src", "-e", "iax2.packet_type", "-e", "udp.checksum.status"],
        capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    rows = [line.split("\t") for line in out]
    assert [r[0] for r in rows] == ["::1", "fd00::10", "fd00::10", "::1"], rows
    assert [r[1] for r in rows] == ["1", "1", "0", "3"]
    assert all(r[2] == "1" for r in rows), rows       # 1 = Good


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_marks_last_trunk_entry_without_timestamps_malformed(tmp_path: Path) -> None:
    """What README warns about: Wireshark's dissector sizes an entry without timestamp as 6
    bytes of header plus its data (the size of an entry with one), where it has 4: the last
    entry's subtree runs 2 bytes past the datagram and Wireshark reports it malformed.  The same
    datagram with per-entry timestamps is not."""
    nots = struct.pack("!HBBI", 0, 1, 0, 40)
    ts = struct.pack("!HBBI", 0, 1, 1, 40)
    for callno in (16390, 16391):
        nots += struct.pack("!HH", callno, 160) + b"\x55" * 160
        ts += struct.pack("!HHH", 160, callno, 40) + b"\x55" * 160
    verdicts = []
    for name, data in (("nots", nots), ("ts", ts)):
        path = tmp_path / f"{name}.pcap"
        with PcapWriter(path) as w:
            w.write("tx", data, LOCAL, REMOTE, when=1_700_000_000.0)
        summary = subprocess.run(["tshark", "-r", str(path)], capture_output=True,
                                 text=True, timeout=60, check=True).stdout
        assert "Trunk packet with 2 media frames for 2 calls" in summary, summary
        out = subprocess.run(["tshark", "-r", str(path), "-V"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
        verdicts.append("Malformed" in out)
    assert verdicts == [True, False]


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _free_udp6() -> int:
    import socket

    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_serve_capture_of_a_call_over_ipv6(tmp_path: Path) -> None:
    """Both sites on ::1: serve's --pcap holds the call's datagrams as IPv6, read back."""
    import asyncio

    from iaxgw._core.frames import parse_full
    from iaxgw.gateway.serve.app import GatewayApp, ServeOptions

    b_port, a_port = _free_udp6(), _free_udp6()
    pcap = tmp_path / "b.pcap"

    async def run() -> None:
        b = GatewayApp.from_options(ServeOptions(
            peer="office-a", bind=("::1", b_port), peer_host=("::1", a_port),
            spool=tmp_path / "sb", pcap=pcap))
        a = GatewayApp.from_options(ServeOptions(
            peer="office-b", site="office-a", bind=("::1", a_port), peer_host=("::1", b_port),
            spool=tmp_path / "sa"))
        await b.start()
        await a.start()
        try:
            call = a.place_call("office-b", "300", None)
            assert await asyncio.wait_for(call.wait_answer(), 10) == "answered"
            await asyncio.sleep(0.3)
            await call.hangup(31)
            await asyncio.sleep(0.3)
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(run())
    assert stat.S_IMODE(os.stat(pcap).st_mode) == 0o600
    recs = list(read_pcap(pcap))
    assert recs and all({r.src, r.dst} == {("::1", a_port), ("::1", b_port)} for r in recs)
    full = [(r.src[1], parse_full(r.payload)) for r in recs if r.payload[:1] >= b"\x80"]
    iax = [(port, f.subclass) for port, f in full if f.frametype == FrameType.IAX]
    assert (a_port, IAXSubclass.NEW) in iax and (b_port, IAXSubclass.ACCEPT) in iax
    hangups = [f for port, f in full if port == a_port and f.frametype == FrameType.IAX
               and f.subclass == IAXSubclass.HANGUP]
    assert hangups and hangups[0].payload == bytes([42, 1, 31])      # CAUSECODE 31
