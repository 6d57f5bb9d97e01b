"""Lab config parameters change what real Asterisk 22 does on the wire (indirect fixture params)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from iaxgw.sim.lab.capture import Capture, decode_counts

pytestmark = pytest.mark.asterisk


def _wait(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.parametrize("office_pair", [{"trunk": False}], indirect=True)
def test_trunk_off_sends_mini_frames(office_pair: tuple[Any, Any], tmp_path: Path) -> None:
    a, b = office_pair
    peer = a.wait_peer_ok("office-b", timeout=30)
    assert not peer.trunk
    pcap = tmp_path / "mini.pcapng"
    with Capture(pcap, "udp port 4569 and host 127.0.0.10 and host 127.0.0.20"):
        a.originate("Local/300@internal", "Milliwatt")
        _wait(lambda: "Echo()" in b.cli("core show channels"), 15, "office-b in Echo()")
        time.sleep(1.5)
        a.hangup_all()
    counts = decode_counts(pcap)
    assert counts.trunk == 0
    assert counts.mini >= 100        # 50/s each way for 1.5 s
    assert counts.full >= 5


@pytest.mark.parametrize("office_pair", [{"b": {"secret": "not-the-shared-one"}}],
                         indirect=True)
def test_secret_mismatch_refuses_the_call(office_pair: tuple[Any, Any]) -> None:
    a, b = office_pair
    a.wait_peer_ok("office-b", timeout=30)    # POKE needs no auth: still OK
    a.originate("Local/300@internal", "Milliwatt")
    _wait(lambda: "Everyone is busy/congested" in a.log_path.read_text(errors="replace"),
          10, "office-a's Dial to fail")
    # office-b refused the call before its dialplan: 300@from-iax never ran
    assert "Executing [300@from-iax" not in b.log_path.read_text(errors="replace")
    assert "Echo()" not in b.cli("core show channels")
    _wait(lambda: a.active_calls() == 0, 15, "the refused call to end")
