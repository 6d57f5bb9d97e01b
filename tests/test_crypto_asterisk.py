"""AES-128 encryption against the lab's real Asterisk 22 (office-a at 127.0.0.10:4569 with
``encryption = aes128`` + ``forceencryption = yes``).

* the load tester (office-b) calls office-a encrypted, trunked and with ``--no-trunk``: every
  call answered, its echoed audio verified, every answered call encrypted, and no
  "unencrypted" warning in Asterisk's log;
* office-a calls ``iaxgw serve`` (encryption forced in its config too): audio both ways, and in
  serve's capture no full frame of the call after the AUTHREQ parses (types and timestamps are
  ciphertext), while NEW, CALLTOKEN and AUTHREQ are readable;
* Asterisk to Asterisk (office-a calling the lab's office-b, both forced, trunked): what a real
  Asterisk does with trunked voice when encryption is on, from a capture: the trunk datagrams
  carry the voice in the clear (a readable 1004 Hz tone), the full frames are encrypted;
  serve is held to the same split.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_serve_asterisk import _show, wait_channel_up

from iaxgw._core.frames import parse_full
from iaxgw.gateway.driver.pcap import read_pcap
from iaxgw.sim.lab.loadtest_lab import write_site
from iaxgw.sim.load.loadtest import run_loadtest_async
from iaxgw.sim.load.loadtest_plan import LoadtestOptions

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(300)]

A_HOST = ("127.0.0.10", 4569)
B_BIND = ("127.0.0.20", 4569)
FORCED = ("encryption = aes128", "forceencryption = yes")


def _run(**kw: Any) -> Any:
    import uvloop

    base: dict[str, Any] = {"quiet": True, "live": False, "peer": "office-a",
                            "peer_host": A_HOST, "bind": B_BIND}
    base.update(kw)
    opts = LoadtestOptions(**base)
    opts.check()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        return r.run(run_loadtest_async(opts))


def _detail(res: Any) -> str:
    s = res.summary
    return (f"causes {s['causes']}, encryption {s.get('encryption')}, "
            f"notes {s['loadtest']['notes']}, endpoint {s.get('endpoint')}")


@pytest.mark.parametrize("trunk", [True, False], ids=["trunk", "no-trunk"])
def test_loadtest_calls_forced_encryption_office_a(asterisk_factory: Any, trunk: bool) -> None:
    inst = asterisk_factory("office-a", trunk=trunk, extra_general=FORCED)
    res = _run(calls=5, rate=10.0, duration=(4.0, 4.0), trunk=trunk, encryption=True)
    s = res.summary
    print(_detail(res))
    assert s["answered"] == 5 and not s["causes"], _detail(res)
    assert s["audio"]["verified"] == 5 and res.exit_code == 0, _detail(res)
    enc = s["encryption"]
    assert enc["offered"] and enc["forced"] and enc["encrypted"] == 5 == enc["answered"], enc
    ep = s["endpoint"]
    assert ep.get("drop_decrypt_failed", 0) == 0, ep
    # Asterisk's AUTHREQ says 0x0001: we, the caller, do not rotate; office-a does (below)
    assert ep.get("key_rotations", 0) == 0, ep
    assert ep.get("key_rotations_received", 0) == 5, ep      # office-a's, at its first voice
    log = inst.log_tail(400)
    assert "unencrypted" not in log and "Decrypt Failed" not in log, log[-2000:]


def test_loadtest_without_encryption_is_refused_and_named(asterisk_factory: Any) -> None:
    inst = asterisk_factory("office-a", extra_general=FORCED)
    res = _run(calls=2, rate=10.0, duration=(2.0, 2.0), encryption=False)
    s = res.summary
    assert s["answered"] == 0 and res.exit_code == 1, _detail(res)
    assert s["encryption"]["encrypted"] == 0 and not s["encryption"]["offered"]
    notes = " ".join(s["loadtest"]["notes"])
    assert "--encryption" in notes, notes
    assert "unencrypted while force encrypt" in inst.log_tail(40)


def _serve(config: Path, tmp: Path) -> tuple[subprocess.Popen[str], str, Path]:
    ctl, pcap = str(tmp / "b.sock"), tmp / "b.pcap"
    proc = subprocess.Popen(
        [sys.executable, "-m", "iaxgw.gateway.cli", "serve", "--peer", "office-a",
         "--config", str(config), "--control", ctl, "--pcap", str(pcap),
         "--spool", str(tmp / "spool")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not os.path.exists(ctl):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return proc, ctl, pcap


def _wire_kinds(recs: list[Any], src: tuple[str, int]) -> dict[str, int]:
    """Datagrams from ``src``: full frames that parse as a known IAX2 frame type with a sane
    header ("full_readable"), those that do not ("full_unreadable"), mini, trunk."""
    kinds = {"full_readable": 0, "full_unreadable": 0, "mini": 0, "trunk": 0}
    for r in recs:
        if r.src != src:
            continue
        d = r.payload
        if d[:2] == b"\0\0":
            kinds["trunk"] += 1
        elif d[0] & 0x80:
            try:
                f = parse_full(d)
                ok = 1 <= f.frametype <= 12
            except Exception:
                ok = False
            kinds["full_readable" if ok else "full_unreadable"] += 1
        else:
            kinds["mini"] += 1
    return kinds


def _after_authreq(recs: list[Any]) -> list[bytes]:
    """serve's full frames to office-a's call after serve's (clear) AUTHREQ on that call."""
    out: list[bytes] = []
    dcall = None
    for r in recs:
        d = r.payload
        if r.src != B_BIND or not d[0] & 0x80:
            continue
        if dcall is None:
            f = parse_full(d)
            if f.frametype == 6 and f.csub == 8:
                dcall = f.dcallno
            continue
        if ((d[2] & 0x7F) << 8) | d[3] == dcall:
            out.append(d)
    return out


@pytest.mark.parametrize("trunk", [True, False], ids=["trunk", "no-trunk"])
def test_office_a_calls_serve_encrypted(asterisk_factory: Any, tmp_path: Path,
                                        trunk: bool) -> None:
    office_a = asterisk_factory("office-a", trunk=trunk, extra_general=FORCED)
    opts = LoadtestOptions(trunk=trunk, encryption=True)
    cfg = write_site(tmp_path / "office-b", "office-b", opts)
    proc, ctl, pcap = _serve(cfg, tmp_path)
    try:
        office_a.wait_peer_ok("office-b", timeout=90)
        office_a.originate("Local/300@internal", "Milliwatt")
        chans = wait_channel_up(ctl, 100)
        print("serve channels:", chans)
        assert chans and chans[0]["frames_rx"] > 100 and chans[0]["frames_tx"] > 100
        stats = _show(ctl, "stats")
        print("serve stats:", {k: v for k, v in stats.items() if "crypt" in k or "key" in k})
        office_a.hangup_all()
        time.sleep(0.5)
        log = office_a.log_tail(400)
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
    assert "unencrypted" not in log and "Decrypt Failed" not in log, log[-2000:]
    recs = list(read_pcap(pcap))
    ours = _wire_kinds(recs, B_BIND)
    theirs = _wire_kinds(recs, A_HOST)
    print("serve sent:", ours, "office-a sent:", theirs)
    # every full frame serve sent on the call after its AUTHREQ has the encrypted shape (4
    # clear bytes + whole AES blocks, at least 32 of them); a clear ACK (12 bytes), HANGUP
    # (15) or voice frame (172) cannot have it
    after = _after_authreq(recs)
    print("serve's full frames after its AUTHREQ (lengths):", [len(d) for d in after])
    assert len(after) >= 4
    assert all((len(d) - 4) % 16 == 0 and len(d) >= 36 for d in after), [len(d) for d in after]
    assert theirs["full_unreadable"] > 0, theirs
    if trunk:
        # as between two Asterisks (below): the trunk carries the echoed tone in the clear
        assert ours["trunk"] > 50 and theirs["trunk"] > 50
        trunks = [r.payload for r in recs if r.src == B_BIND and r.payload[:2] == b"\0\0"]
        assert sum(_is_tone(d) for d in trunks) > 0.9 * len(trunks)
    else:
        # mini frames: 2 clear bytes + 192 (2 ts + 160 voice + 30 padding), never 164 clear
        assert ours["mini"] > 50 and theirs["mini"] > 50
        sizes = {len(r.payload) for r in recs if r.src == B_BIND and r.payload[0] < 0x80
                 and r.payload[:2] != b"\0\0"}
        assert sizes == {194}, sizes


def _is_tone(d: bytes, hz: float = 1004.0) -> bool:
    """A trunk datagram (no entry timestamps) whose first entry is 20 ms of G.711 u-law with
    at least 80 % of its energy within 100 Hz of ``hz``: readable voice, not ciphertext."""
    import numpy as np

    from iaxgw._core.g711 import ulaw_decode

    if len(d) < 12 + 160 or int.from_bytes(d[10:12], "big") != 160:
        return False
    pcm = np.frombuffer(bytes(ulaw_decode(d[12:172])), dtype="<i2").astype(float)
    spec = np.abs(np.fft.rfft(pcm * np.hanning(160))) ** 2
    freqs = np.fft.rfftfreq(160, 1 / 8000)
    near = spec[np.abs(freqs - hz) <= 100].sum()
    return bool(spec.sum() > 0 and near / spec.sum() >= 0.8)


def test_asterisk_to_asterisk_trunked_voice_is_clear(asterisk_factory: Any,
                                                     tmp_path: Path) -> None:
    """The reference for what iaxgw does: two Asterisk 22 with encryption forced and a trunk.
    office-a's Milliwatt reaches office-b's Echo; the capture shows the trunk datagrams
    carrying the Milliwatt bytes in the clear both ways, while every full frame of the call
    after office-b's AUTHREQ has the encrypted shape."""
    from iaxgw.sim.lab.capture import Capture

    office_a = asterisk_factory("office-a", trunk=True, extra_general=FORCED)
    office_b = asterisk_factory("office-b", trunk=True, extra_general=FORCED)
    office_a.wait_peer_ok("office-b", timeout=90)
    pcap = tmp_path / "a2a.pcap"
    with Capture(pcap, "udp port 4569 and host 127.0.0.20", classic_pcap=True):
        office_a.originate("Local/300@internal", "Milliwatt")
        time.sleep(3.0)
        calls = office_b.active_calls()
        office_a.hangup_all()
        time.sleep(0.5)
    assert calls >= 1
    recs = list(read_pcap(pcap))
    trunk_a = [r.payload for r in recs if r.src == A_HOST and r.payload[:2] == b"\0\0"]
    trunk_b = [r.payload for r in recs if r.src == B_BIND and r.payload[:2] == b"\0\0"]
    clear_a = sum(_is_tone(d) for d in trunk_a)
    clear_b = sum(_is_tone(d) for d in trunk_b)
    after = _after_authreq(recs)
    print(f"trunk datagrams a->b {len(trunk_a)} (Milliwatt readable in {clear_a}), b->a "
          f"{len(trunk_b)} (echo readable in {clear_b}); office-b full frames after AUTHREQ: "
          f"{[len(d) for d in after]}")
    assert len(trunk_a) > 50 and clear_a > 0.9 * len(trunk_a)
    assert len(trunk_b) > 50 and clear_b > 0.9 * len(trunk_b)
    assert len(after) >= 4 and all((len(d) - 4) % 16 == 0 and len(d) >= 36 for d in after)
    log = office_a.log_tail(200) + office_b.log_tail(200)
    assert "unencrypted" not in log
