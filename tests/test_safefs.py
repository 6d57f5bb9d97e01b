"""Files serve writes: the spool (Voicemail, Record), pcaps.  Links planted by another local
user are never followed, shared or foreign spools are refused, caller ID cannot add lines."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from fakes import FakeChannel
from test_dialplan import arun, drive, seed_b, simple, tone_frames

from iaxgw.gateway.conf.config import PhoneBehaviour, PhonesConfig
from iaxgw.gateway.driver.pcap import PcapWriter
from iaxgw.gateway.pbx.dialplan_apps import Recorder
from iaxgw.gateway.safefs import UnsafePathError, default_spool_dir, private_dir

VICTIM = b"precious\n"


def _victim(tmp_path: Path) -> Path:
    v = tmp_path / "victim"
    v.write_bytes(VICTIM)
    return v


def _voicemail(tmp_path: Path, name: str = "Bob", num: str = "201") -> FakeChannel:
    phones = PhonesConfig.from_mapping({"310": PhoneBehaviour(mode="noanswer")})
    ch = FakeChannel("310", feed=tone_frames(440, 0.3), hangup_after_feed=True, caller_num=num,
                     caller_name=name, feed_when=lambda h: isinstance(h, Recorder))
    arun(drive(seed_b(), ch, "from-iax", "310", tmp_path, phones=phones))
    return ch


def test_voicemail_never_writes_through_planted_links(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    box = private_dir(tmp_path / "spool")
    for part in ("voicemail", "voicemail/default", "voicemail/default/310"):
        (box / part).mkdir(mode=0o700)
    box = box / "voicemail" / "default" / "310"
    for name in ("msg0000.wav", "msg0001.txt", "msg0001.json"):
        (box / name).symlink_to(victim)
    (box / "msg0001.wav").symlink_to(tmp_path / "dangling")
    ch = _voicemail(tmp_path)
    assert ch.variables["VMSTATUS"] == "SUCCESS"
    assert victim.read_bytes() == VICTIM and not (tmp_path / "dangling").exists()
    msg = box / "msg0002.wav"            # 0000 and 0001 were taken (links left alone)
    assert msg.is_file() and not msg.is_symlink()
    assert stat.S_IMODE(msg.stat().st_mode) == 0o600
    assert (box / "msg0000.wav").is_symlink() and (box / "msg0001.wav").is_symlink()


def test_voicemail_txt_caller_id_cannot_inject_lines(tmp_path: Path) -> None:
    ch = _voicemail(tmp_path, name="Bob\n[evil]\nowner=root\r", num="201\x00\n")
    assert ch.variables["VMSTATUS"] == "SUCCESS"
    txt = (tmp_path / "spool" / "voicemail" / "default" / "310" / "msg0000.txt").read_text()
    lines = txt.splitlines()
    assert lines[0] == "[message]" and len(lines) == 7
    assert not any(ln.startswith(("[evil]", "owner=")) for ln in lines)
    assert any(ln.startswith("callerid=\"Bob [evil] owner=root \" <201  >") for ln in lines)


@pytest.mark.parametrize("kind", ["world_writable", "group_writable", "symlink", "foreign"])
def test_unsafe_spool_refused(tmp_path: Path, kind: str,
                              caplog: pytest.LogCaptureFixture) -> None:
    spool = tmp_path / "spool"
    if kind == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        spool.symlink_to(tmp_path / "elsewhere")
    else:
        spool.mkdir(mode=0o700)
        if kind == "foreign":
            if os.geteuid() != 0:
                pytest.skip("chown to another user needs root")
            os.chown(spool, 12345, 12345)
        else:
            os.chmod(spool, 0o777 if kind == "world_writable" else 0o770)
    with pytest.raises(UnsafePathError):
        private_dir(spool)
    caplog.set_level(logging.ERROR, logger="iaxgw")
    ch = _voicemail(tmp_path)
    assert ch.variables["VMSTATUS"] == "FAILED"
    assert "message not saved" in caplog.text
    assert not list(spool.rglob("*.wav"))


def test_record_fixed_name_replaces_a_planted_link(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    rec = private_dir(tmp_path / "spool") / "recordings"
    rec.mkdir(mode=0o700)
    (rec / "s.wav").symlink_to(victim)
    plan = simple(tmp_path, "exten => 1,1,Record(s.wav,1,0,q)\nsame => n,Hangup()\n")
    ch = FakeChannel(feed=tone_frames(500, 0.4) + [b"\xff" * 160] * 100,
                     feed_when=lambda h: isinstance(h, Recorder))
    arun(drive(plan, ch, "t", "1", tmp_path))
    assert ch.variables["RECORD_STATUS"] == "SILENCE"
    assert victim.read_bytes() == VICTIM
    assert (rec / "s.wav").is_file() and not (rec / "s.wav").is_symlink()
    assert stat.S_IMODE((rec / "s.wav").stat().st_mode) == 0o600


def test_pcap_created_private_and_never_through_a_link(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    link = tmp_path / "trunk.pcap"
    link.symlink_to(victim)
    with pytest.raises(UnsafePathError):
        PcapWriter(link)
    hard = tmp_path / "hard.pcap"
    os.link(victim, hard)
    with pytest.raises(UnsafePathError):
        PcapWriter(hard)
    assert victim.read_bytes() == VICTIM
    good = tmp_path / "good.pcap"
    good.write_bytes(b"old capture")            # our own earlier capture: replaced
    with PcapWriter(good) as w:
        w.write("tx", b"x" * 12, ("127.0.0.20", 4569), ("127.0.0.10", 4569))
    assert stat.S_IMODE(good.stat().st_mode) == 0o600 and good.read_bytes()[:4] != b"old "


def test_default_spool_is_private(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_spool_dir() == Path("/var/spool/iaxgw")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_spool_dir() == tmp_path / "state" / "iaxgw" / "spool"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_spool_dir() == tmp_path / "home" / ".local" / "state" / "iaxgw" / "spool"
    monkeypatch.undo()
    made = private_dir(tmp_path / "a" / "b" / "spool")
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
