"""End to end on loopback: ``iaxgw serve`` (office-b, subprocess) against an in-process office-a.

Echo on 300 returns our audio, 302 gives busy, ``iaxgw show`` reads the running server, and
SIGTERM mid-call hangs the call up with cause 16 and exits 0.  The --pcap file decodes as IAX2.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iaxgw.gateway.driver.pcap import read_pcap
from iaxgw.gateway.serve.app import GatewayApp, ServeOptions

pytestmark = pytest.mark.timeout(120)


def _free_udp_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


class Tone:
    """Sends numbered payloads, keeps what comes back."""

    def __init__(self) -> None:
        self.k = 0
        self.got: list[bytes] = []

    def on_voice(self, payload: bytes, ts: int) -> None:
        self.got.append(payload)

    def next_payload(self) -> bytes | None:
        self.k += 1
        return bytes([self.k % 200 + 1]) * 160


def _show(ctl: str, what: str) -> object:
    out = subprocess.run([sys.executable, "-m", "iaxgw.gateway.cli", "show", what, "--json",
                          "--control", ctl], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_serve_echo_busy_sigterm(tmp_path: Path) -> None:
    b_port = _free_udp_port("127.0.0.20")
    a_port = _free_udp_port("127.0.0.10")
    ctl = str(tmp_path / "b.sock")
    pcap = tmp_path / "b.pcap"
    proc = subprocess.Popen(
        [sys.executable, "-m", "iaxgw.gateway.cli", "serve", "--peer", "office-a",
         "--bind", f"127.0.0.20:{b_port}", "--peer-host", f"127.0.0.10:{a_port}",
         "--control", ctl, "--pcap", str(pcap), "--spool", str(tmp_path / "spool")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(ctl):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.05)

        async def office_a() -> tuple[int, int]:
            a = GatewayApp.from_options(ServeOptions(
                peer="office-b", site="office-a", bind=("127.0.0.10", a_port),
                peer_host=("127.0.0.20", b_port), spool=tmp_path / "spool-a"))
            await a.start()
            try:
                # qualify: office-b answers our POKE, and its own POKE reached us
                for _ in range(100):
                    rows = await asyncio.to_thread(_show, ctl, "peers")
                    assert isinstance(rows, list)
                    if rows and str(rows[0].get("status", "")).startswith("OK"):
                        break
                    await asyncio.sleep(0.1)
                assert str(rows[0]["status"]).startswith("OK"), rows
                assert rows[0]["name"] == "office-a" and rows[0]["port"] == a_port

                echo = a.place_call("office-b", "300", None)
                assert await asyncio.wait_for(echo.wait_answer(), 10) == "answered"
                tone = Tone()
                echo.set_media(tone)
                await asyncio.sleep(1.0)
                sent = {bytes([k % 200 + 1]) * 160 for k in range(1, tone.k + 1)}
                assert len(tone.got) >= 30, len(tone.got)
                assert all(p in sent for p in tone.got)
                chans = await asyncio.to_thread(_show, ctl, "channels")
                assert isinstance(chans, list) and len(chans) == 1
                assert chans[0]["state"] == "UP" and chans[0]["format"] == "ulaw"

                busy = a.place_call("office-b", "302", None)
                assert await asyncio.wait_for(busy.wait_answer(), 10) == "busy"
                await busy.hangup(16)

                # SIGTERM office-b mid-call: its HANGUP (cause 16) must reach us
                proc.send_signal(signal.SIGTERM)
                assert await echo.wait_hangup(5.0)
                return echo.cause, len(tone.got)
            finally:
                await a.stop()

        cause, _n = asyncio.run(office_a())
        assert cause == 16
        _out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not os.path.exists(ctl)
    recs = list(read_pcap(pcap))
    assert recs and {r.src for r in recs} | {r.dst for r in recs} == {
        ("127.0.0.20", b_port), ("127.0.0.10", a_port)}
    # office-b's echo went out in trunk datagrams (trunk = yes on both sides)
    assert any(r.src[1] == b_port and r.payload[:2] == b"\x00\x00" for r in recs)
    if shutil.which("tshark"):
        txt = subprocess.run(["tshark", "-r", str(pcap), "-Y", "iax2", "-d",
                              f"udp.port=={b_port},iax2", "-d", f"udp.port=={a_port},iax2"],
                             capture_output=True, text=True, timeout=60).stdout
        assert "NEW" in txt and "ACCEPT" in txt and "HANGUP" in txt, txt[:2000]
        # tshark 4.0 marks one-entry trunk datagrams without per-call timestamps "Malformed"
        # (its dissect_trunkcall_nots sizes the entry 2 bytes too long) but still types them
        trunk = subprocess.run(["tshark", "-r", str(pcap), "-Y", "iax2.packet_type == 3", "-d",
                                f"udp.port=={b_port},iax2", "-d", f"udp.port=={a_port},iax2"],
                               capture_output=True, text=True, timeout=60).stdout
        assert len(trunk.splitlines()) >= 30
