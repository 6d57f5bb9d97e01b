"""``iaxgw ctl originate`` against the real Asterisk 22 office-a: ``iaxgw serve`` (office-b,
embedded config, 127.0.0.20:4569) places calls from an emulated local phone through its
[internal] context, over the trunk, as office-b's phones call office-a."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from iaxgw.gateway.cli import main
from iaxgw.gateway.serve.control import query
from iaxgw.sim.lab.loadtest_lab import ServeProcess

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def serve_b(office_a: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("orig-ast")
    proc = ServeProcess(Path("unused"), tmp)
    cfg = proc.argv.index("--config")
    del proc.argv[cfg:cfg + 2]                 # the embedded office-b
    proc.argv += ["--spool", str(tmp / "spool")]
    proc.start()
    try:
        office_a.wait_peer_ok("office-b", timeout=90)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            peers = query(proc.control, "peers")
            if str(peers[0].get("status", "")).startswith("OK"):
                break
            time.sleep(0.25)
        yield proc
    finally:
        proc.stop()


def _originate(sock: str, *args: str) -> tuple[int, dict[str, Any]]:
    r = CliRunner().invoke(main, ["ctl", "--control", sock, "originate", *args, "--json"])
    assert "{" in r.stdout, r.output
    return r.exit_code, json.loads(r.stdout[r.stdout.index("{"):])


def _asterisk_iax_channels(office_a: Any) -> str:
    return str(office_a.cli("iax2 show channels"))


def test_originate_to_asterisk_echo(office_a: Any, serve_b: ServeProcess) -> None:
    """Answered by office-a's Echo(): the phone hears its own tone back, and office-a shows the
    IAX2 channel while the call is up."""
    proc = subprocess.Popen([sys.executable, "-m", "iaxgw.gateway.cli", "ctl", "--control",
                             serve_b.control, "originate", "200", "--duration", "4", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = ""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            seen = _asterisk_iax_channels(office_a)
            if "1 active IAX channel" in seen:
                break
            time.sleep(0.2)
        print("office-a:", seen)
        ours = query(serve_b.control, "channels")
        out, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "1 active IAX channel" in seen
    # office-a's ID (Lo/Rem) column: its call number / ours, zero-padded to 5 digits
    assert ours and f"/{int(ours[0]['callno']):05d}" in seen
    assert proc.returncode == 0, err
    s = json.loads(out)
    print("originate:", s)
    assert s["answered"] and s["dialstatus"] == "ANSWER" and s["leg"].startswith("IAX2/")
    assert 190 <= s["frames_sent"] <= 202
    assert s["frames_heard"] >= 0.9 * s["frames_sent"]
    assert s["heard_own_tone"] >= 0.9 * s["frames_heard"]


def test_originate_to_asterisk_milliwatt_and_busy(office_a: Any, serve_b: ServeProcess) -> None:
    code, s = _originate(serve_b.control, "201", "--duration", "2")
    assert code == 0 and s["answered"], s
    assert s["frames_heard"] >= 80 and s["heard_own_tone"] == 0      # Asterisk's 1004 Hz
    code, s = _originate(serve_b.control, "202", "--duration", "2")
    assert code == 1 and not s["answered"] and s["dialstatus"] == "BUSY", s


def test_loadtest_through_serve_while_asterisk_calls_in(office_a: Any, serve_b: ServeProcess,
                                                        tmp_path: Path) -> None:
    """office-b (serve) load-tests office-a's echo from its own address while office-a's call
    into office-b's echo (channel originate Local/300@internal) is up."""
    office_a.originate("Local/300@internal", "Milliwatt")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not query(serve_b.control, "channels"):
        time.sleep(0.1)
    assert query(serve_b.control, "channels"), "office-a's call did not reach office-b"
    report = tmp_path / "rep"
    try:
        r = subprocess.run([sys.executable, "-m", "iaxgw.gateway.cli", "loadtest", "--through",
                            serve_b.control, "-l", "3", "-m", "6", "-r", "5", "-d", "3",
                            "--report", str(report), "--json"],
                           capture_output=True, text=True, timeout=90)
        during = query(serve_b.control, "channels")
    finally:
        office_a.hangup_all()
    print(r.stderr[-2500:])
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["answered"] == 6 and summary["audio"]["verified"] == 6
    assert summary["loadtest"]["local"] == "127.0.0.20:4569"
    assert summary["loadtest"]["target"] == "127.0.0.10:4569"
    # office-a's call was answered by office-b's echo all along
    assert [c["direction"] for c in during] == ["in"] and during[0]["frames_rx"] > 300
    assert (report / "calls.csv").is_file() and (report / "summary.json").is_file()
