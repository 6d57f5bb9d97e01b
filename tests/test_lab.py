"""The Asterisk lab: config builder and parsers (no root), and two real Asterisk 22 sites trunked.

The tests marked ``asterisk`` start office-a (127.0.0.10) and office-b (127.0.0.20) from the lab
chroot and check what the seed promises: peers reach OK, a call carries audio both ways over the
trunk (seen by tshark in a loopback capture), and the instances stop cleanly.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from iaxgw.sim.lab import lab as labmod
from iaxgw.sim.lab.capture import Capture, count_trunk_entries, decode_counts, parse_tshark_fields
from iaxgw.sim.lab.lab import (
    Lab,
    LabError,
    find_debian_mirror,
    parse_iax2_channels,
    parse_iax2_peers,
)
from iaxgw.sim.lab.lab_cli import lab as lab_group
from iaxgw.sim.lab.labconfig import (
    BASE_MODULES,
    SiteDirs,
    render_asterisk_conf,
    render_extensions_conf,
    render_iax_conf,
    render_modules_conf,
    seed_pair,
    seed_site,
)

SEED = Path(__file__).parent / "data" / "seed"
SEED_TO_LAB = {"10.1.1.10": "127.0.0.10", "10.2.2.20": "127.0.0.20"}


def _conf_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith(";")]


# --- config builder ---------------------------------------------------------------------------

@pytest.mark.parametrize("site", ["office-a", "office-b"])
def test_default_iax_conf_is_the_seed_on_loopback(site: str) -> None:
    seed = (SEED / site / "iax.conf").read_text()
    for old, new in SEED_TO_LAB.items():
        seed = seed.replace(old, new)
    own_ip = seed_site(site).ip
    seed = seed.replace("bindaddr = 0.0.0.0", f"bindaddr = {own_ip}")
    assert _conf_lines(render_iax_conf(seed_site(site))) == _conf_lines(seed)


@pytest.mark.parametrize("site", ["office-a", "office-b"])
def test_extensions_keep_the_seed_lines_after_the_test_extensions(site: str) -> None:
    text = render_extensions_conf(seed_site(site))
    rendered = _conf_lines(text)
    seed = _conf_lines((SEED / site / "extensions.conf").read_text())
    for line in seed:
        assert line in rendered, line
    p = "2" if site == "office-a" else "3"
    rp = "3" if p == "2" else "2"
    remote = "office-b" if site == "office-a" else "office-a"
    assert text.index(f"exten => {p}00,1,Answer()") < text.index(f"exten => _{p}XX,1,Dial(PJSIP")
    assert f"exten => _{p}9X,1,Dial(IAX2/{remote}/{rp}0${{EXTEN:2}})" in text
    for ext, app in (("00", "Echo()"), ("01", "Milliwatt()"), ("02", "Busy(10)"),
                     ("03", "Congestion(10)")):
        block = text[text.index(f"exten => {p}{ext},"):]
        assert app in block.split("exten =>")[1], (ext, app)


def test_parameters_change_the_right_lines() -> None:
    a = seed_site("office-a", trunk=False, trunkfreq=10, trunktimestamps=True,
                  codecs=("alaw",), auth="plaintext", requirecalltoken="no",
                  secret="only-a-knows", permit=("127.0.0.0/255.0.0.0",), deny=("0.0.0.0/0",),
                  remote_host="127.0.0.30", remote_port=4570, qualify=False)
    text = render_iax_conf(a)
    lines = _conf_lines(text)
    assert "trunk = no" in lines and "trunk = yes" not in lines
    assert "trunkfreq = 10" in lines and "trunktimestamps = yes" in lines
    assert [ln for ln in lines if ln.startswith("allow")] == ["allow = alaw"]
    assert "auth = plaintext" in lines and "requirecalltoken = no" in lines
    assert "secret = only-a-knows" in lines
    assert "permit = 127.0.0.0/255.0.0.0" in lines and "deny = 0.0.0.0/0" in lines
    assert "host = 127.0.0.30" in lines and "port = 4570" in lines
    assert "qualify = no" in lines
    # general options sit in [general], the per-peer ones in [office-b]
    general, peer = text.split("[office-b]")
    assert "trunkfreq" in general and "requirecalltoken" in peer and "trunk = no" in peer
    # the other side is untouched: per-side parameters
    b = seed_site("office-b")
    assert "secret = a-strong-shared-secret" in render_iax_conf(b)
    assert seed_pair(qualify=1500)[1].qualify == 1500
    assert "qualify = 1500" in render_iax_conf(seed_pair(qualify=1500)[1])


def test_modules_asterisk_and_dirs() -> None:
    cfg = seed_site("office-a", extra_modules=("app_verbose",))
    mods = render_modules_conf(cfg)
    assert "autoload = no" in mods
    for m in (*BASE_MODULES, "app_verbose"):
        assert f"load => {m}.so" in mods
    assert "load => chan_pjsip.so" not in mods
    conf = render_asterisk_conf(cfg)
    dirs = SiteDirs.for_site("office-a")
    for key, value in (("astetcdir", dirs.etc), ("astrundir", dirs.run), ("astlogdir", dirs.log),
                       ("astvarlibdir", dirs.varlib), ("astspooldir", dirs.spool)):
        assert f"{key} => {value}" in conf
    assert dirs.etc == "/etc/asterisk-office-a"
    with pytest.raises(ValueError):
        seed_site("office-c")


# --- parsers ----------------------------------------------------------------------------------

PEERS = """\
Name/Username    Host                                           Mask                                      Port           Status      Description
office-b/office  127.0.0.20                               (S)  255.255.255.255                           4569  (T)      OK (3 ms)
office-c         127.0.0.30                               (S)  255.255.255.255                           4569           UNREACHABLE
2 iax2 peers [1 online, 1 offline, 0 unmonitored]
"""  # noqa: E501

CHANNELS = """\
Channel               Peer                                      Username    ID (Lo/Rem)  Seq (Tx/Rx)  Lag      Jitter  JitBuf  Format  FirstMsg    LastMsg
IAX2/office-b-28010   127.0.0.20                                office-a    28010/00224  00003/00005  00000ms  -0001ms  0000ms  ulaw    Tx:NEW      Tx:ACK
1 active IAX channel
"""  # noqa: E501


def test_parse_peers_and_channels() -> None:
    peers = parse_iax2_peers(PEERS)
    assert set(peers) == {"office-b", "office-c"}
    b = peers["office-b"]
    assert (b.ok, b.latency_ms, b.host, b.port, b.trunk) == (True, 3, "127.0.0.20", 4569, True)
    c = peers["office-c"]
    assert (c.ok, c.status, c.latency_ms, c.trunk) == (False, "UNREACHABLE", None, False)
    (ch,) = parse_iax2_channels(CHANNELS)
    assert (ch.channel, ch.local_callno, ch.remote_callno, ch.format) == \
        ("IAX2/office-b-28010", 28010, 224, "ulaw")
    assert (ch.tx_seq, ch.rx_seq, ch.first_msg) == (3, 5, "Tx:NEW")


def test_trunk_entry_count_and_tshark_rows() -> None:
    entry = (7).to_bytes(2, "big") + (160).to_bytes(2, "big") + b"\xff" * 160
    plain = b"\x00\x00\x01\x00" + b"\x00\x00\x10\x90" + entry * 3
    assert count_trunk_entries(plain) == 3
    assert count_trunk_entries(plain[:-1]) == 2          # truncated tail not counted
    ts_entry = (160).to_bytes(2, "big") + (7).to_bytes(2, "big") + b"\x00\x14" + b"\xff" * 160
    assert count_trunk_entries(b"\x00\x00\x01\x01" + b"\x00" * 4 + ts_entry * 2) == 2
    assert count_trunk_entries(b"\x80\x01" + b"\x00" * 20) == 0   # a full frame
    rows = (f"1.0\t127.0.0.10\t127.0.0.20\t3\t{plain.hex()}\n"
            "1.5\t127.0.0.20\t127.0.0.10\t1\t\n"
            "2.0\t127.0.0.20\t127.0.0.10\t0\t\n")
    counts = parse_tshark_fields(rows)
    assert (counts.trunk, counts.full, counts.mini, counts.trunk_entries) == (1, 1, 1, 3)
    assert counts.span == 1.0 and counts.rate() == 3.0
    assert counts.by_direction[("127.0.0.20", "127.0.0.10")] == 2


def test_find_debian_mirror(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb\nURIs: http://deb.example.org/debian-security\n\n"
                      "Types: deb\nURIs: http://mirror.example.org/debian/\nSuites: bookworm\n")
    assert find_debian_mirror([str(deb822)]) == "http://mirror.example.org/debian"
    oneline = tmp_path / "sources.list"
    oneline.write_text("# comment\ndeb [arch=amd64] http://ftp.example.org/debian bookworm main\n")
    assert find_debian_mirror([str(tmp_path / "missing"), str(oneline)]) == \
        "http://ftp.example.org/debian"
    assert find_debian_mirror([]) == "http://deb.debian.org/debian"


def test_host_path_resolves_symlinks_inside_the_chroot(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    (lab.chroot / "run").mkdir(parents=True)
    (lab.chroot / "var").mkdir()
    (lab.chroot / "var/run").symlink_to("/run")
    (lab.chroot / "var/lock").symlink_to("../run/lock")
    assert lab.host_path("/var/run/asterisk-x/asterisk.pid") == \
        lab.chroot / "run/asterisk-x/asterisk.pid"
    assert lab.host_path("/var/lock/a") == lab.chroot / "run/lock/a"
    assert not lab.is_provisioned()          # no marker: a partial root


def test_cli_group_lists_commands_and_needs_root(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    res = runner.invoke(lab_group, ["--help"])
    assert res.exit_code == 0 and "provision" in res.output and "capture" in res.output
    monkeypatch.setattr(labmod.os, "geteuid", lambda: 1000)
    res = runner.invoke(lab_group, ["provision", "--root", str(tmp_path / "lab")])
    assert res.exit_code != 0 and "needs root" in res.output
    with pytest.raises(LabError, match="needs root"):
        Lab(tmp_path).provision()
    assert Lab(tmp_path).unavailable_reason() == "the Asterisk lab needs root"


# --- the real thing ---------------------------------------------------------------------------

def _wait(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.asterisk
def test_peers_reach_ok(office_pair: tuple[Any, Any]) -> None:
    a, b = office_pair
    assert a.pid and b.pid and a.pid != b.pid
    pa = a.wait_peer_ok("office-b", timeout=30)
    pb = b.wait_peer_ok("office-a", timeout=30)
    assert pa.host == "127.0.0.20" and pb.host == "127.0.0.10"
    assert pa.trunk and pb.trunk
    assert "chan_iax2" in a.cli("module show like chan_iax2")


@pytest.mark.asterisk
def test_call_carries_trunked_audio_both_ways(office_pair: tuple[Any, Any],
                                             tmp_path: Path) -> None:
    a, b = office_pair
    a.wait_peer_ok("office-b", timeout=30)
    pcap = tmp_path / "call.pcapng"
    with Capture(pcap, "udp port 4569 and host 127.0.0.10 and host 127.0.0.20"):
        a.originate("Local/300@internal", "Milliwatt")
        _wait(lambda: "Echo()" in b.cli("core show channels"), 15, "office-b in Echo()")
        time.sleep(2.0)
        chans_a, chans_b = a.channels(), b.channels()
        a.hangup_all()
    assert chans_a[0].remote_callno == chans_b[0].local_callno
    assert chans_b[0].remote_callno == chans_a[0].local_callno
    assert chans_a[0].format == "ulaw" and chans_a[0].peer == "127.0.0.20"
    assert "Executing [300@from-iax:1]" in b.log_path.read_text(errors="replace")
    counts = decode_counts(pcap)
    # call setup in full frames, then media in trunk datagrams in both directions
    assert counts.full >= 5
    assert counts.trunk >= 50 and counts.trunk_entries >= counts.trunk
    assert counts.by_direction[("127.0.0.10", "127.0.0.20")] >= 40
    assert counts.by_direction[("127.0.0.20", "127.0.0.10")] >= 40
    _wait(lambda: a.active_calls() == 0 and not b.channels(), 10, "calls to clear")


@pytest.mark.asterisk
def test_hairpin_goes_back_over_the_trunk(office_pair: tuple[Any, Any]) -> None:
    a, b = office_pair
    b.wait_peer_ok("office-a", timeout=30)
    # office-b dials office-a's 290, which dials office-b's 300 (Echo) back over the trunk
    b.originate("Local/290@internal", "Milliwatt")
    _wait(lambda: len(a.channels()) == 2 and len(b.channels()) == 2, 15, "two legs each side")
    _wait(lambda: "Echo()" in b.cli("core show channels"), 10, "the hairpinned Echo")
    b.hangup_all()          # over the trunk: a lost HANGUP is resent before the legs clear
    _wait(lambda: not a.channels() and not b.channels(), 30, "calls to clear")


@pytest.mark.asterisk
def test_busy_and_congestion_do_not_answer(office_pair: tuple[Any, Any]) -> None:
    a, b = office_pair
    a.wait_peer_ok("office-b", timeout=30)
    for ext in ("302", "303"):
        a.originate(f"Local/{ext}@internal", "Milliwatt")
    time.sleep(1.5)
    assert "Echo()" not in b.cli("core show channels")
    log = b.log_path.read_text(errors="replace")
    assert re.search(r"Executing \[302@from-iax:1\].*Busy", log)
    assert re.search(r"Executing \[303@from-iax:1\].*Congestion", log)
    _wait(lambda: a.active_calls() == 0, 15, "busy/congested calls to end")


@pytest.mark.asterisk
def test_instances_stop_cleanly(lab: Any) -> None:
    a = lab.instance("office-a", seed_site("office-a")).start()
    pid = a.pid
    assert pid in labmod.started_pids()
    a.stop()
    assert a.pid is None and not labmod._pid_alive(pid)
    assert pid not in labmod.started_pids()
    a.stop()          # idempotent


def test_lab_cli_unknown_instance_is_a_clear_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(lab_group, ["cli", "--root", str(tmp_path), "NOSUCH",
                                         "core show version"])
    assert res.exit_code == 1 and res.exception is not None
    assert isinstance(res.exception, SystemExit)            # no traceback
    assert "unknown lab site 'NOSUCH'" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("opt", ["--secret", "--secret-b", "--auth", "--qualify", "--codec"])
def test_lab_up_refuses_values_with_newlines(tmp_path: Path, opt: str) -> None:
    """A value with a newline would add lines to Asterisk's iax.conf."""
    res = CliRunner().invoke(lab_group, ["up", "--root", str(tmp_path), opt,
                                         "x\n[evil]\ntype=friend"])
    assert res.exit_code == 2 and "one line without control characters" in res.output
    assert not list(tmp_path.rglob("iax.conf"))


@pytest.mark.parametrize("changes", [
    {"secret": "x\n[evil]\ntype=friend"}, {"username": "a\rb"}, {"remote_name": "b\x00"},
    {"codecs": ("ulaw", "alaw\nallow=all")}, {"permit": ("1.2.3.4\npermit=0.0.0.0/0",)},
    {"extra_general": ("autokill = yes\n[evil]",)}, {"context": "from-iax\x7f"},
    {"extra_dialplan": {"ctx": ("exten => 1,1,Answer()\n[other]",)}},
])
def test_lab_config_refuses_values_that_would_add_lines(changes: dict[str, Any]) -> None:
    """Whatever builds a lab site's config (the CLI, tests, sim modules), no value reaches
    Asterisk's files with a newline or another control character in it."""
    with pytest.raises(ValueError, match="not one line without control characters"):
        seed_site("office-b", **changes)
    with pytest.raises(ValueError, match="not one line without control characters"):
        seed_site("office-a").with_(**changes)
    assert "\t" in render_iax_conf(seed_site("office-a", extra_peer=("qualify\t= yes",)))
