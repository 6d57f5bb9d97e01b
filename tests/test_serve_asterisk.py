"""``iaxgw serve`` (office-b, embedded config, 127.0.0.20:4569) against a real Asterisk 22 office-a.

Both sides see each other OK; office-a's Milliwatt call to 300 is answered by our Echo, audio
flows both ways, and Asterisk's voice reaches us in trunk datagrams (counted in our --pcap).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from iaxgw.gateway.driver.pcap import read_pcap

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(180)]


def _show(ctl: str, what: str) -> Any:
    out = subprocess.run([sys.executable, "-m", "iaxgw.gateway.cli", "show", what, "--json",
                          "--control", ctl], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_channel_up(ctl: str, tries: int) -> list[Any]:
    """serve's channels once the first is up with 100 voice frames each way (or at the last
    of ``tries`` looks, 0.1 s apart)."""
    chans: list[Any] = []
    for _ in range(tries):
        chans = _show(ctl, "channels")
        if chans and chans[0]["state"] == "UP" and chans[0]["frames_rx"] > 100 \
                and chans[0]["frames_tx"] > 100:
            break
        time.sleep(0.1)
    return chans


def test_asterisk_office_a_calls_our_echo(office_a: Any, tmp_path: Path) -> None:
    ctl = str(tmp_path / "b.sock")
    pcap = tmp_path / "b.pcap"
    proc = subprocess.Popen(
        [sys.executable, "-m", "iaxgw.gateway.cli", "serve", "--peer", "office-a",
         "--control", ctl, "--pcap", str(pcap), "--spool", str(tmp_path / "spool")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(ctl):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        peer = office_a.wait_peer_ok("office-b", timeout=90)
        print("office-a sees office-b:", peer)
        ours: list[Any] = []
        for _ in range(200):
            ours = _show(ctl, "peers")
            if ours and str(ours[0].get("status", "")).startswith("OK"):
                break
            time.sleep(0.25)
        print("we see:", ours)
        assert str(ours[0]["status"]).startswith("OK")

        office_a.originate("Local/300@internal", "Milliwatt")
        chans = wait_channel_up(ctl, 80)
        print("our channels:", chans)
        print("office-a channels:", office_a.cli("iax2 show channels"))
        print("office-a netstats:", office_a.cli("iax2 show netstats"))
        assert chans and chans[0]["frames_rx"] > 100 and chans[0]["frames_tx"] > 100
        office_a.hangup_all()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    recs = list(read_pcap(pcap))
    trunk_in = [r for r in recs if r.src == ("127.0.0.10", 4569) and r.payload[:3] == b"\0\0\x01"]
    trunk_out = [r for r in recs if r.dst == ("127.0.0.10", 4569) and r.payload[:3] == b"\0\0\x01"]
    print(f"pcap: {len(recs)} datagrams, trunk from Asterisk {len(trunk_in)}, to it "
          f"{len(trunk_out)}")
    assert len(trunk_in) > 50
