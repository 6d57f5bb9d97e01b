"""Runtime control of a running load test (``loadtest --control PATH``, ``iaxgw ctl``, the hot
keys under a pseudo-terminal) and what a serve answers to the same commands; against a real
``iaxgw serve`` in a child process on a 127.0.x pair of its own."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import pty
import select
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner
from test_loadtest import _site_dir
from test_loadtest_cli import serve_pair

from iaxgw.gateway.cli import main
from iaxgw.gateway.serve.control import CommandRefused, ControlError, query
from iaxgw.sim.lab.loadtest_lab import ServeProcess
from iaxgw.sim.load.loadtest_control import MIN_RATE, RunControl, apply_key
from iaxgw.sim.report.report import summary_schema

pytestmark = pytest.mark.timeout(150)

# --- the control state itself ------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_run_control_records_what_was_asked_when() -> None:
    clock = _Clock()
    seen: list[float] = []
    stops: list[str] = []
    rc = RunControl(4.0, clock=clock, on_stop=stops.append)
    rc.on_change = lambda: seen.append(rc.rate)       # called before the change
    clock.t += 2.5
    assert rc.set_rate(12) == 12.0
    clock.t += 1.0
    assert rc.pause() and not rc.pause()               # a second pause changes nothing
    assert rc.resume() and not rc.resume()
    rc.set_rate(0.0001)                                # clamped to the slowest pace
    assert rc.rate == MIN_RATE
    with pytest.raises(CommandRefused, match="rate must be > 0"):
        rc.set_rate(-3)
    rc.stop("key")
    rc.stop("ctl")                                     # only the first stop counts
    assert stops == ["key"] and rc.stopped_by == "key"
    assert seen == [4.0, 12.0, 12.0, 12.0]
    s = rc.summary()
    assert [c["action"] for c in s["changes"]] == ["rate", "pause", "resume", "rate", "stop"]
    assert s["changes"][0]["elapsed_s"] == 2.5 and s["changes"][1]["paused"] is True
    assert s["changes"][0]["time_utc"].endswith("Z")
    assert rc.history()[0] == {"elapsed_s": 0.0, "rate_cps": 4.0, "paused": False}
    assert rc.history()[1]["rate_cps"] == 12.0


def test_hot_keys_map_onto_the_control() -> None:
    rc = RunControl(5.0, clock=_Clock())
    for key, rate in (("+", 6.0), ("-", 5.0), ("*", 50.0), ("/", 5.0)):
        assert apply_key(rc, key)
        assert rc.rate == pytest.approx(rate)
    assert apply_key(rc, "p") and rc.paused
    assert apply_key(rc, "p") and not rc.paused
    assert not apply_key(rc, "x")
    assert apply_key(rc, "q") and rc.stopped_by == "key"
    assert {c.by for c in rc.changes} == {"key"}


# --- against iaxgw serve -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``iaxgw serve`` as office-b (x00 echo) on a loopback pair of its own."""
    yield from serve_pair(tmp_path_factory)


def _loadtest_argv(s: dict[str, Any], report: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "iaxgw.gateway.cli", "loadtest", "--config", str(s["a"]),
            "--peer", "office-b", "--report", str(report), *extra]


def _spawn(s: dict[str, Any], report: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(_loadtest_argv(s, report, "--quiet", *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env={**os.environ, "IAXGW_NO_GSO": "1"})


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    return list(csv.DictReader(path.open()))


def _wait_for(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _attempts(sock: str) -> int:
    return int(query(sock, "stats")["loadtest"]["attempts"])


def _finish(proc: subprocess.Popen[bytes], timeout: float = 40) -> str:
    try:
        return proc.communicate(timeout=timeout)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ctl_drives_a_running_load_test(serve: dict[str, Any], tmp_path: Path) -> None:
    """rate / pause / resume / stop over the control socket: the scheduler follows, the files
    say what was asked when, show works on the load test, and the stopped run passes."""
    report = tmp_path / "rep"
    sock = str(tmp_path / "ctl" / "lt.sock")
    proc = _spawn(serve, report, "-l", "40", "-r", "1", "-m", "200", "-d", "30",
                  "--control", sock)
    try:
        _wait_for(lambda: os.path.exists(sock), 15, "the control socket")
        # the same private-directory rules as serve's socket
        assert stat.S_IMODE(os.stat(Path(sock).parent).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(sock).st_mode) & 0o077 == 0
        _wait_for(lambda: _attempts(sock) >= 3, 15, "three attempts at 1/s")
        r = CliRunner().invoke(main, ["ctl", "--control", sock, "rate", "8"])
        assert r.exit_code == 0 and "rate 8 calls/s" in r.output, r.output
        t_fast = time.monotonic()
        n_fast = _attempts(sock)
        time.sleep(2.5)
        fast = (_attempts(sock) - n_fast) / (time.monotonic() - t_fast)
        assert 5.5 <= fast <= 10.5, fast                  # 8/s asked (was 1/s)
        r = CliRunner().invoke(main, ["ctl", "--control", sock, "pause"])
        assert r.exit_code == 0 and "paused" in r.output
        time.sleep(0.3)
        n_paused = _attempts(sock)
        time.sleep(2.2)
        assert _attempts(sock) == n_paused               # no new calls while paused
        # show works on the running load test as on serve
        r = CliRunner().invoke(main, ["show", "channels", "--control", sock])
        assert r.exit_code == 0 and "active IAX channel" in r.output, r.output
        chans = query(sock, "channels")
        full = query(sock, "stats")
        st = full["loadtest"]
        assert len(chans) >= st["calls_up"] >= 5 and st["paused"] is True
        # Asterisk's trunk line from the load tester's own trunk (its calls are up)
        trunk = full["trunk"]
        assert trunk["timed"] > 0 and trunk["datagrams_out"] >= trunk["timed"], trunk
        assert 0 < trunk["maxmtu"] <= trunk["mtu"] and "trunk_timed" not in full, trunk
        assert all(c["peer"] == serve["b_ip"] for c in chans)
        r = CliRunner().invoke(main, ["show", "peers", "--control", sock])
        assert r.exit_code == 0 and "office-b" in r.output
        r = CliRunner().invoke(main, ["show", "netstats", "--control", sock])
        assert r.exit_code == 0 and "RTT" in r.output
        r = CliRunner().invoke(main, ["show", "peer", "office-b", "--control", sock])
        assert r.exit_code == 0 and "office-b" in r.output, r.output
        r = CliRunner().invoke(main, ["ctl", "--control", sock, "originate", "300"])
        assert r.exit_code == 1 and "originate is for a running `iaxgw serve`" in r.output
        r = CliRunner().invoke(main, ["ctl", "--control", sock, "resume"])
        assert r.exit_code == 0
        time.sleep(1.2)
        r = CliRunner().invoke(main, ["ctl", "--control", sock, "stop"])
        assert r.exit_code == 0 and "load test stopping" in r.output
        out = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "PASS" in out and "stopped by `iaxgw ctl stop`" in out
    assert not os.path.exists(sock)
    summary = json.loads((report / "summary.json").read_text())
    validator = jsonschema.Draft202012Validator(summary_schema())
    validator.validate(summary)
    assert not validator.is_valid({**summary, "control": {**summary["control"],
                                                          "stopped_by": "someone"}})
    ctl = summary["control"]
    assert ctl["stopped_by"] == "ctl" and ctl["initial_rate_cps"] == 1.0
    assert [c["action"] for c in ctl["changes"]] == ["rate", "pause", "resume", "stop"]
    assert summary["failed"] == 0 and summary["attempted"] < 200
    rows = _rows(report / "timeseries.csv")
    # each row says the rate asked at its time: 1/s before the change, 8/s after it
    changed_at = ctl["changes"][0]["elapsed_s"]
    for r in rows:
        t = float(r["elapsed_s"])
        if abs(t - changed_at) > 0.2:
            assert float(r["rate_asked_cps_now"]) == (1.0 if t < changed_at else 8.0), r
    assert any(float(r["elapsed_s"]) < changed_at for r in rows)
    paused = [r for r in rows if r["paused_now"] == "1"]
    assert len(paused) >= 2
    # a paused second places nothing (the row that saw the pause begin may hold one)
    assert sum(int(r["attempts_interval"]) for r in paused[1:]) == 0
    # the rate target is judged on what was asked at each moment (1/s, then 8/s)
    tg = summary["targets"]["rate"]
    assert 1.0 < tg["asked"] < 8.0 and tg["achieved"] >= 0.9 * tg["asked"]
    assert [h["rate_cps"] for h in tg["asked_history"]][:2] == [1.0, 8.0]


def test_rate_lowered_is_judged_against_the_new_rate(serve: dict[str, Any],
                                                     tmp_path: Path) -> None:
    """20/s asked, then 1/s: the run reaches what was asked at each time and passes (a stale
    20/s would call 1.x/s a shortfall)."""
    report = tmp_path / "rep"
    sock = str(tmp_path / "lt.sock")
    proc = _spawn(serve, report, "-l", "3", "-r", "20", "-m", "14", "-d", "2",
                  "--control", sock)
    try:
        _wait_for(lambda: os.path.exists(sock) and _attempts(sock) >= 4, 15, "4 attempts")
        query(sock, "rate", rate=1)
        out = _finish(proc, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    tg = json.loads((report / "summary.json").read_text())["targets"]
    assert tg["met"] is True and tg["rate"]["asked"] < 5, tg
    assert tg["rate"]["achieved"] < 0.5 * 20


def test_serve_takes_stop_and_refuses_load_commands(serve: dict[str, Any],
                                                    tmp_path: Path) -> None:
    b = _site_dir(tmp_path / "b2", "office-b", serve["a_ip"], serve["b_ip"])
    # a serve of its own on another port, so the module's serve keeps running
    proc = ServeProcess(b, tmp_path, env={"IAXGW_NO_GSO": "1"})
    proc.argv += ["--bind", f"{serve['b_ip']}:4570"]
    proc.start()
    try:
        for cmd in ("rate 5", "pause", "resume"):
            r = CliRunner().invoke(main, ["ctl", "--control", proc.control, *cmd.split()])
            assert r.exit_code == 1, r.output
            assert "iaxgw serve places no load" in r.output and "Traceback" not in r.output
        r = CliRunner().invoke(main, ["ctl", "--control", proc.control, "stop"])
        assert r.exit_code == 0 and "serve stopping" in r.output
        assert proc.proc is not None
        assert proc.proc.wait(15) == 0
    finally:
        proc.stop()
    r = CliRunner().invoke(main, ["ctl", "--control", proc.control, "stop"])
    assert r.exit_code == 1 and "no iaxgw serve at" in r.output


def test_control_socket_taken_exits_3(serve: dict[str, Any], tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["loadtest", "--config", str(serve["a"]), "--peer", "office-b",
                                  "--bind", f"{serve['a_ip']}:4571", "-l", "1", "-d", "1", "-q",
                                  "--control", serve["proc"].control])
    assert r.exit_code == 3, r.output
    assert "--control" in r.output and "already listening" in r.output


# --- hot keys under a pseudo-terminal ----------------------------------------------------------


def _pty_run(argv: list[str], keys: list[tuple[float, bytes]], timeout: float
             ) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as stdin/stdout; send each key once the run has
    printed for ``delay`` s; return the exit code and everything it printed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                            env={**os.environ, "IAXGW_NO_GSO": "1", "COLUMNS": "110",
                                 "LINES": "40", "TERM": "xterm"})
    os.close(slave)
    out = bytearray()
    start = time.monotonic()
    pending = list(keys)
    try:
        while time.monotonic() - start < timeout:
            if pending and time.monotonic() - start >= pending[0][0]:
                os.write(master, pending.pop(0)[1])
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:          # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None and not pending:
                break
        code = proc.wait(timeout=max(1.0, timeout - (time.monotonic() - start)))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        with contextlib.suppress(OSError):
            os.close(master)
    return code, out.decode(errors="replace")


def test_hot_keys_on_the_live_screen(serve: dict[str, Any], tmp_path: Path) -> None:
    report = tmp_path / "rep"
    # (--allow-underrun: what this test holds is the keys, not the machine's pace under load)
    argv = _loadtest_argv(serve, report, "-l", "30", "-r", "1", "-m", "100", "-d", "20",
                          "--allow-underrun")
    keys = [(3.0, b"+"), (3.6, b"*"), (4.2, b"/"), (4.8, b"-"), (5.4, b"p"), (8.0, b"p"),
            (9.0, b"q")]
    code, screen = _pty_run(argv, keys, timeout=60)
    assert code == 0, screen[-3000:]
    assert "keys: +/- rate" in screen            # the help line of the live screen
    assert "rate asked" in screen and "PAUSED" in screen
    summary = json.loads((report / "summary.json").read_text())
    ctl = summary["control"]
    assert [(c["action"], c["rate_cps"]) for c in ctl["changes"]] == [
        ("rate", 2.0), ("rate", 20.0), ("rate", 2.0), ("rate", 1.0), ("pause", 1.0),
        ("resume", 1.0), ("stop", 1.0)]
    assert {c["by"] for c in ctl["changes"]} == {"key"} and ctl["stopped_by"] == "key"
    assert summary["loadtest"]["exit_code"] == 0 and summary["failed"] == 0
    assert summary["attempted"] < 100


def test_no_hot_keys_without_a_terminal(serve: dict[str, Any], tmp_path: Path) -> None:
    """stdin not a TTY: keys are not read (a pipe's bytes change nothing)."""
    report = tmp_path / "rep"
    proc = subprocess.Popen(_loadtest_argv(serve, report, "-q", "-l", "2", "-m", "2", "-d", "2"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "IAXGW_NO_GSO": "1"})
    try:
        out = proc.communicate(b"q*p", timeout=40)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert json.loads((report / "summary.json").read_text())["control"]["changes"] == []


def test_ctl_without_a_running_load_test(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="no iaxgw serve at"):
        query(str(tmp_path / "none.sock"), "rate", rate=2)
    r = CliRunner().invoke(main, ["ctl", "--control", str(tmp_path / "x.sock"), "rate", "0"])
    assert r.exit_code == 2


def test_lab_takes_control_too() -> None:
    r = CliRunner().invoke(main, ["lab", "--help"])
    assert r.exit_code == 0 and "--control PATH" in r.output
    r = CliRunner().invoke(main, ["loadtest", "--help"])
    assert "--control PATH" in r.output and "`iaxgw ctl" in r.output


# --- a stop that lands right after answers (in process, against an echoing peer) ---------------


def test_stop_right_after_answers_is_not_an_audio_failure(tmp_path: Path) -> None:
    """Calls answered just before a graceful stop have little or none of their audio back:
    their audio is not judged (n/a), the calls up before are; the calls in setup count as in
    progress; the run passes."""
    import asyncio

    import uvloop
    from test_loadtest import EchoPeer, _opts

    from iaxgw.sim.load.loadtest import LoadRunner, load_target

    n = 251 + os.getpid() % 4
    a_ip, b_ip = f"127.0.{n}.10", f"127.0.{n}.20"
    s = {"a": _site_dir(tmp_path / "a", "office-a", a_ip, b_ip)}
    b = _site_dir(tmp_path / "b", "office-b", a_ip, b_ip)

    async def main() -> Any:
        opts = _opts(s, calls=6, rate=3.0, total=6, duration=(10.0, 10.0))
        runner = LoadRunner(opts, load_target(opts))

        async def stop_when_young() -> None:
            # the 5th call answered: the 1st has been up ~1 s, the 5th just now
            while runner.up < 5:
                await asyncio.sleep(0.005)
            runner.control.stop("ctl")

        stopper = asyncio.ensure_future(stop_when_young())
        try:
            return await runner.run()
        finally:
            stopper.cancel()

    with EchoPeer(b, (b_ip, 4569)), asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        result = r.run(main())
    s_ = result.summary
    assert result.exit_code == 0, s_["loadtest"]["fail_reasons"]
    by_audio = {rec.index: rec.audio for rec in result.records}
    assert by_audio[4] == "n/a"                      # answered at the stop
    assert by_audio[0] == "verified"                 # up for about a second
    assert s_["audio"]["checked"] == s_["audio"]["verified"] >= 1
    assert s_["failed"] == 0 and s_["answered"] == 5 and s_["in_progress"] <= 1
    assert s_["control"]["stopped_by"] == "ctl"
