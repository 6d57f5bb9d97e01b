"""``iaxgw ctl originate``: a running serve (office-b) places calls on demand from an emulated
local phone through its dialplan ([internal] dials IAX2/office-a), against another ``iaxgw
serve`` playing office-a (x00 echo, x01 milliwatt, x02 busy), each in a child process."""

from __future__ import annotations

import array
import itertools
import json
import math
import os
import random
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner
from test_loadtest import _site_dir
from test_runtime_control import _pty_run

from iaxgw.gateway.cli import main
from iaxgw.gateway.pbx.dialplan_apps import milliwatt_payloads
from iaxgw.gateway.pbx.originate import PHONE_TONE_HZ, phone_payloads
from iaxgw.gateway.serve.control import query
from iaxgw.sim.lab.loadtest_lab import ServeProcess
from iaxgw.sim.report.report import summary_schema

pytestmark = pytest.mark.timeout(120)

_NETS = itertools.cycle(random.Random(os.getpid() + 23).sample(range(100, 250), 150))


def serve_as(config_dir: Path, workdir: Path, peer: str) -> ServeProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    proc = ServeProcess(config_dir, workdir, env={"IAXGW_NO_GSO": "1"})
    proc.argv[proc.argv.index("--peer") + 1] = peer
    proc.argv += ["--spool", str(workdir / "spool")]
    return proc


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("orig")
    n = next(_NETS)
    a_ip, b_ip = f"127.0.{n}.10", f"127.0.{n}.20"
    a = serve_as(_site_dir(tmp / "a", "office-a", a_ip, b_ip), tmp / "wa", "office-b")
    b = serve_as(_site_dir(tmp / "b", "office-b", a_ip, b_ip), tmp / "wb", "office-a")
    a.start()
    try:
        b.start()
        try:
            yield {"a": a, "b": b, "tmp": tmp}
        finally:
            b.stop()
    finally:
        a.stop()


def _originate(sock: str, *args: str) -> tuple[int, dict[str, Any] | None, str]:
    r = CliRunner().invoke(main, ["ctl", "--control", sock, "originate", *args, "--json"])
    text = r.stdout
    data = json.loads(text[text.index("{"):]) if "{" in text else None
    return r.exit_code, data, r.output


def test_phone_tone_is_a_signature() -> None:
    """50 distinct payloads (one 697 Hz period at 8 kHz is 8,000 samples): a tone that comes
    back bit for bit is recognised as ours, another tone (Milliwatt's 1004 Hz) is not."""
    own = phone_payloads("tone", "ulaw")
    assert own is not None and len(own) == 50 and len(set(own)) == 50
    silence = phone_payloads("silence", "ulaw")
    assert silence is not None and not set(silence) & set(own)
    assert not set(milliwatt_payloads("ulaw")) & set(own)
    assert own == milliwatt_payloads("ulaw", PHONE_TONE_HZ)


def test_originate_to_echo_hears_its_own_tone(sites: dict[str, Any]) -> None:
    code, s, out = _originate(sites["b"].control, "200", "--duration", "3")
    assert code == 0, out
    assert s is not None and s["answered"] and s["dialstatus"] == "ANSWER"
    assert s["leg"].startswith("IAX2/office-a-") and s["cause"] == 16
    assert 140 <= s["frames_sent"] <= 152                 # 3 s of 20 ms frames
    assert s["frames_heard"] >= 0.9 * s["frames_sent"]
    assert s["heard_own_tone"] >= 0.95 * s["frames_heard"]  # the echo of what it said
    assert s["answer_ms"] < 2000 and 2.9 <= s["ended_s"] - s["answer_ms"] / 1000 <= 3.5


def test_originate_shows_on_both_sites_while_up(sites: dict[str, Any]) -> None:
    r = CliRunner().invoke(main, ["ctl", "--control", sites["b"].control, "originate", "200",
                                  "--duration", "4", "--background"])
    assert r.exit_code == 0 and "placed (id" in r.output, r.output
    ident = int(r.output.split("(id ")[1].split(")")[0])
    ours: list[Any] = []
    theirs: list[Any] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (ours and theirs):
        ours = query(sites["b"].control, "channels")
        theirs = query(sites["a"].control, "channels")
        time.sleep(0.1)
    assert ours and theirs
    assert ours[0]["callno"] == theirs[0]["peercallno"]       # the same call, both ends
    assert theirs[0]["direction"] == "in" and ours[0]["direction"] == "out"
    deadline = time.monotonic() + 15
    s = query(sites["b"].control, "originate_status", id=ident)
    while s["state"] != "ended" and time.monotonic() < deadline:
        time.sleep(0.2)
        s = query(sites["b"].control, "originate_status", id=ident)
    assert s["state"] == "ended" and s["heard_own_tone"] > 150


def test_originate_to_milliwatt_and_busy(sites: dict[str, Any]) -> None:
    code, s, out = _originate(sites["b"].control, "201", "--duration", "2")
    assert code == 0, out                          # answered and audio came back ...
    assert s is not None and s["frames_heard"] >= 80
    assert s["heard_own_tone"] == 0                # ... not ours: the far end's Milliwatt
    code, s, out = _originate(sites["b"].control, "201", "--media", "echo", "--duration", "2")
    assert code == 0 and s is not None, out        # a phone that says what it hears
    assert s["heard_own_tone"] is None and s["frames_heard"] >= 80
    code, s, out = _originate(sites["b"].control, "202", "--duration", "2")
    assert code == 1 and s is not None
    assert not s["answered"] and s["dialstatus"] == "BUSY"
    r = CliRunner().invoke(main, ["ctl", "--control", sites["b"].control, "originate", "202"])
    assert r.exit_code == 1 and "not answered (BUSY)" in r.output


def test_originate_a_wav_file(sites: dict[str, Any], tmp_path: Path) -> None:
    wav = tmp_path / "speech.wav"
    samples = array.array("h", (round(8000 * math.sin(2 * math.pi * 440 * k / 8000))
                                for k in range(8000)))
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(samples.tobytes())
    code, s, out = _originate(sites["b"].control, "200", "--media", str(wav),
                              "--duration", "2")
    assert code == 0, out
    assert s is not None and s["media"] == str(wav) and s["heard_own_tone"] is None
    assert s["frames_heard"] >= 0.9 * s["frames_sent"]


def test_originate_refusals(sites: dict[str, Any], tmp_path: Path) -> None:
    sock = sites["b"].control
    for args, why in ((["999"], "extension 999@internal does not exist"),
                      (["200", "--context", "nowhere"], "200@nowhere does not exist"),
                      (["200", "--media", "loud"], "--media must be tone, echo, silence"),
                      (["2;00"], "an extension of digits"),
                      (["200", "--media", str(tmp_path / "none.wav")], "not an 8 kHz mono")):
        r = CliRunner().invoke(main, ["ctl", "--control", sock, "originate", *args])
        assert r.exit_code == 1, (args, r.output)
        assert why in r.output and "Traceback" not in r.output, r.output


def test_serve_stop_hangs_up_an_originated_call(sites: dict[str, Any],
                                                tmp_path: Path) -> None:
    # a serve of its own (another port), so the module's keeps running
    cfg = Path(sites["b"].argv[sites["b"].argv.index("--config") + 1])
    b2 = serve_as(cfg, tmp_path / "w", "office-a")
    a_ip = query(sites["b"].control, "peers")[0]["host"]
    b_ip = a_ip.rsplit(".", 1)[0] + ".20"
    b2.argv += ["--bind", f"{b_ip}:4572"]
    b2.start()
    try:
        r = CliRunner().invoke(main, ["ctl", "--control", b2.control, "originate", "200",
                                      "--duration", "60", "--background"])
        assert r.exit_code == 0, r.output
        deadline = time.monotonic() + 10
        while not query(b2.control, "channels") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert query(b2.control, "channels")
        r = CliRunner().invoke(main, ["ctl", "--control", b2.control, "stop"])
        assert r.exit_code == 0 and "hanging up 1 call(s)" in r.output, r.output
        assert b2.proc is not None and b2.proc.wait(15) == 0
    finally:
        b2.stop()
    # office-a saw the call end (cause 16), nothing left up there
    deadline = time.monotonic() + 10
    while query(sites["a"].control, "channels") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert query(sites["a"].control, "channels") == []


# --- a load test through the running serve --------------------------------------------------


def test_loadtest_through_serve_while_it_answers(sites: dict[str, Any], tmp_path: Path) -> None:
    """office-b places a load test from its own endpoint and address while office-a's call
    into office-b's echo is up: both directions on one socket, the same report files."""
    report = tmp_path / "rep"
    b_sock, a_sock = sites["b"].control, sites["a"].control
    into_b = subprocess.Popen([sys.executable, "-m", "iaxgw.gateway.cli", "ctl", "--control",
                               a_sock, "originate", "300", "--duration", "8", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lt = subprocess.Popen([sys.executable, "-m", "iaxgw.gateway.cli", "loadtest", "--through",
                           b_sock, "-l", "3", "-m", "6", "-r", "5", "-d", "3", "--report",
                           str(report), "--json"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        directions: set[str] = set()
        rate_sent = False
        deadline = time.monotonic() + 20
        while lt.poll() is None and time.monotonic() < deadline:
            chans = query(b_sock, "channels")
            directions |= {c["direction"] for c in chans}
            if not rate_sent and any(c["direction"] == "out" for c in chans):
                # while it runs, the serve's socket drives the load test
                assert query(b_sock, "rate", rate=6)["rate_cps"] == 6
                rate_sent = True
            time.sleep(0.1)
        out, err = lt.communicate(timeout=40)
        orig_out, orig_err = into_b.communicate(timeout=30)
    finally:
        for p in (lt, into_b):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert directions == {"in", "out"}                 # answering and placing at once
    assert lt.returncode == 0, err
    summary = json.loads(out[out.index("{"):])
    jsonschema.Draft202012Validator(summary_schema()).validate(summary)
    assert summary["answered"] == 6 and summary["audio"]["verified"] == 6
    b_addr = query(b_sock, "stats")
    lt_info = summary["loadtest"]
    assert lt_info["role"] == "office-b" and lt_info["peer"] == "office-a"
    assert lt_info["local"].endswith(":4569") and lt_info["extens"] == ["200"]
    assert [c["action"] for c in summary["control"]["changes"]] == ["rate"]
    assert json.loads((report / "summary.json").read_text())["answered"] == 6
    assert len((report / "calls.csv").read_text().splitlines()) == 7
    assert into_b.returncode == 0, orig_err
    s = json.loads(orig_out)
    assert s["answered"] and s["heard_own_tone"] >= 0.9 * s["frames_heard"] > 300
    assert b_addr["calls"]["total_in"] >= 1            # serve's own books: the call it answered


def test_loadtest_through_refuses_what_is_the_serves(sites: dict[str, Any]) -> None:
    for extra in (["--site", "office-a"], ["--bind", "127.0.0.1"], ["--no-trunk"],
                  ["--mode", "hairpin"], ["--control", "/tmp/x.sock"]):
        r = CliRunner().invoke(main, ["loadtest", "--through", sites["b"].control, "-l", "1",
                                      *extra])
        assert r.exit_code == 2 and "uses the serve's own" in r.output, (extra, r.output)
    r = CliRunner().invoke(main, ["loadtest", "--through", sites["a"].control + ".none",
                                  "-l", "1", "-q"])
    assert r.exit_code == 3 and "no iaxgw serve at" in r.output


def test_hot_keys_of_a_through_client(sites: dict[str, Any], tmp_path: Path) -> None:
    """The --through client's screen takes the hot keys too: each one a command to the serve,
    recorded as a key's."""
    report = tmp_path / "rep"
    argv = [sys.executable, "-m", "iaxgw.gateway.cli", "loadtest", "--through",
            sites["b"].control, "-l", "20", "-r", "1", "-m", "100", "-d", "20",
            "--allow-underrun", "--report", str(report)]
    code, screen = _pty_run(argv, [(3.0, b"+"), (4.5, b"p"), (7.0, b"q")], timeout=60)
    assert code == 0, screen[-3000:]
    assert "keys: +/- rate" in screen and "PAUSED" in screen
    ctl = json.loads((report / "summary.json").read_text())["control"]
    assert [(c["action"], c["rate_cps"], c["by"]) for c in ctl["changes"]] == [
        ("rate", 2.0, "key"), ("pause", 2.0, "key"), ("stop", 2.0, "key")]
