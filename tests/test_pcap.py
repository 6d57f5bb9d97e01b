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
from iaxgw.gateway.pcap import LINKTYPE_RAW, PcapWriter, build_ipv4_udp, read_pcap

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
    from iaxgw.sim.capture import Capture, CaptureError

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
