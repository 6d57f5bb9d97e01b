"""The sharded load test: ``--bind`` lists and ranges, how the calls are spread, the merge
functions (pooled percentiles, never averaged) and whole runs against a real ``iaxgw serve``
whose ACL lets every shard address in, with the merged report checked against the shards' own
reports, and a shard killed with SIGKILL mid-run."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner
from test_loadtest import _site_dir
from test_runtime_control import _wait_for

from iaxgw.gateway.cli import main
from iaxgw.gateway.driver.pcap import read_pcap
from iaxgw.gateway.serve.control import CommandRefused, ControlError, query
from iaxgw.sim.lab.loadtest_lab import ServeProcess
from iaxgw.sim.load.loadtest import send_timing
from iaxgw.sim.load.loadtest_plan import LoadtestOptions, PlanError, parse_bind_list
from iaxgw.sim.report.report import summary_schema
from iaxgw.sim.scale.shard_merge import (
    LiveMerge,
    merge_rows,
    merge_send_timing,
    merge_targets,
    pool_samples,
)
from iaxgw.sim.scale.shards import shard_addresses, shard_options, split

pytestmark = pytest.mark.timeout(180)


# --- --bind and the spread of the calls ----------------------------------------------------------


def test_bind_list_and_ranges() -> None:
    assert parse_bind_list("127.0.0.20") == [("127.0.0.20", 4569)]
    assert parse_bind_list("127.0.0.20-127.0.0.23") == [
        (f"127.0.0.{n}", 4569) for n in range(20, 24)]
    assert parse_bind_list("127.0.0.20-22:4570") == [
        (f"127.0.0.{n}", 4570) for n in range(20, 23)]
    assert parse_bind_list("127.0.0.5,127.0.0.9:5000") == [("127.0.0.5", 4569),
                                                            ("127.0.0.9", 5000)]
    assert parse_bind_list("my-host:4570") == [("my-host", 4570)]
    for bad, why in (("127.0.0.23-127.0.0.20", "end before start"),
                     ("127.0.0.1,127.0.0.1", "twice"), ("127.0.0.1,,", "empty"),
                     ("10.0.0.0-10.0.1.255", "more than 256")):
        with pytest.raises(PlanError, match=why):
            parse_bind_list(bad)


def test_shard_count_and_the_call_number_budget() -> None:
    assert LoadtestOptions(calls=2000).shard_count() == 1
    many = LoadtestOptions(calls=5000)
    assert many.shard_count() == max(os.cpu_count() or 1, 3)
    listed = LoadtestOptions(calls=10, binds=[("127.0.0.1", 4569), ("127.0.0.2", 4569)])
    assert listed.shard_count() == 2
    with pytest.raises(PlanError, match="2048 call numbers"):
        LoadtestOptions(calls=5000, shards=2).check()
    with pytest.raises(PlanError, match="hairpin"):
        LoadtestOptions(calls=10, shards=2, mode="hairpin").check()
    with pytest.raises(PlanError, match="one address per shard"):
        LoadtestOptions(calls=10, shards=3, binds=listed.binds).check()


def test_calls_rate_and_auth_slots_split_over_shards(tmp_path: Path) -> None:
    assert split(10, 3) == [4, 3, 3] and sum(split(5000, 3)) == 5000
    o = LoadtestOptions(calls=10, total=21, rate=30.0, max_pending=3, report_dir=tmp_path)
    addrs = shard_addresses(o, ("127.0.0.20", 4569), 3)
    assert addrs == [("127.0.0.20", 4569), ("127.0.0.21", 4569), ("127.0.0.22", 4569)]
    parts = shard_options(o, addrs, tmp_path)
    assert [p.calls for p in parts] == [4, 3, 3] and [p.total for p in parts] == [7, 7, 7]
    assert sum(p.cps for p in parts) == pytest.approx(30.0)
    assert all(p.max_pending == 1 for p in parts)     # maxauthreq counts per user: shared
    assert [p.bind for p in parts] == addrs
    assert parts[2].report_dir == tmp_path / "shards" / "shard-2"
    # each shard sends in its own slot of the 20 ms grid (the shards take turns on the cores)
    assert [p.tick_phase for p in parts] == pytest.approx([0.0, 0.020 / 3, 0.040 / 3])
    assert o.tick_phase is None                  # one process: the grid starts when it starts
    with pytest.raises(PlanError, match="list or a range"):
        shard_addresses(o, ("192.0.2.1", 4569), 2)


# --- merging -------------------------------------------------------------------------------------


def _samples(rng: random.Random, n: int, scale: float) -> dict[str, Any]:
    return {"setup_ms": [rng.expovariate(1 / scale) for _ in range(n)],
            "jitter_ms": [rng.uniform(0, scale) for _ in range(n)],
            "mos": [rng.uniform(3.0, 4.4) for _ in range(n)], "rtt_ms": [],
            "jitter_max_ms": scale, "lost": n, "expected": 100 * n}


def test_merged_percentiles_are_the_pooled_ones_not_averages() -> None:
    rng = random.Random(5)
    # unequal shards: averaging their medians would be far off the pooled median
    a, b = _samples(rng, 300, 5.0), _samples(rng, 30, 80.0)
    rows = [{"calls_up": 300, "attempts": 3, "tx_pps": 1.5, "cpu_pct": 40.0},
            {"calls_up": 30, "attempts": 1, "tx_pps": 2.0, "cpu_pct": 10.0}]
    row = merge_rows(rows, [a, b], 1.0, 1000.0)
    for key, field in (("setup_p50_ms", "setup_ms"), ("jitter_p50_ms", "jitter_ms"),
                       ("mos_p50", "mos")):
        pooled = np.percentile(a[field] + b[field], 50)
        assert row[key] == pytest.approx(pooled), key
        averaged = (np.percentile(a[field], 50) + np.percentile(b[field], 50)) / 2
        assert abs(row[key] - averaged) > 1e-6, key
    assert row["calls_up"] == 330 and row["attempts"] == 4 and row["cpu_pct"] == 50.0
    assert row["loss_pct"] == pytest.approx(100.0 * 330 / 33000)
    rows[1]["tx_pps"] = None       # one shard could not measure: no partial sum
    assert merge_rows(rows, [a, b], 1.0, 1000.0)["tx_pps"] is None
    p = pool_samples([a, b])
    assert p["jitter_max_ms"] == 80.0 and len(p["mos"]) == 330


def test_send_timing_pooled_over_the_shards_ticks() -> None:
    rng = random.Random(9)
    late = [[rng.uniform(0, 0.3) for _ in range(500)], [rng.uniform(0, 3.0) for _ in range(50)]]
    work = [[0.1] * 500, [0.2] * 50]
    merged = merge_send_timing(late, work)
    assert merged == send_timing(late[0] + late[1], work[0] + work[1])
    assert merged["late_p99_ms"] == round(float(np.percentile(late[0] + late[1], 99)), 3)


def test_live_merge_waits_for_every_running_shard() -> None:
    rng = random.Random(2)
    m = LiveMerge(shards=2, target=20)
    row = {"time_s": 1.0, "unix_time_s": 100.0, "calls_up": 5, "attempts": 5,
           "attempts_total": 5, "answered_total": 5, "failed_total": 0}
    assert m.add(0, row, {**_samples(rng, 5, 4.0), "causes": {}, "dt": 1.0}) == []
    done = m.add(1, dict(row, calls_up=7), {**_samples(rng, 7, 4.0), "causes": {"BUSY": 1},
                                             "dt": 1.0})
    assert len(done) == 1 and done[0].snapshot.calls_up == 12
    assert done[0].snapshot.attempts == 10 and done[0].snapshot.causes == {"BUSY": 1}
    # shard 1 ended: shard 0's later seconds no longer wait for it
    m.shard_ended(1)
    later = m.add(0, dict(row, time_s=2.0), {**_samples(rng, 5, 4.0), "dt": 1.0})
    assert len(later) == 1 and later[0].snapshot.calls_up == 5
    assert later[0].snapshot.attempts == 10      # the ended shard keeps its totals


def test_merged_rows_carry_the_rate_asked_and_pause() -> None:
    """Each shard is asked its share of the rate: the merged second says the run's rate (the
    shares summed); it is paused only while every shard is; a shard that cannot say (not a
    rate-driven run) leaves the merged cell empty, not a partial sum."""
    def row(rate: float | None, paused: int | None) -> dict[str, Any]:
        return {"rate_asked_cps": rate, "paused": paused, "attempts": 1}

    out = merge_rows([row(0.5, 0), row(0.25, 1)], [{}, {}], 1.0, 100.0)
    assert out["rate_asked_cps"] == 0.75 and out["paused"] == 0 and out["attempts"] == 2
    out = merge_rows([row(4.0, 1), row(4.0, 1)], [{}, {}], 2.0, 101.0)
    assert out["rate_asked_cps"] == 8.0 and out["paused"] == 1
    out = merge_rows([row(4.0, 0), row(None, None)], [{}, {}], 3.0, 102.0)
    assert out["rate_asked_cps"] is None and out["paused"] is None


class _FakeShard:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.alive = True

    def send(self, line: str) -> None:
        self.lines.append(line)

    def running(self) -> bool:
        return self.alive


def test_shard_control_passes_each_shard_its_share_and_only_what_changed() -> None:
    """The parent's control (no socket needed): a rate goes to each shard as its share of the
    calls, pause/resume once each, nothing to a shard that ended; a rate some shard could not
    be given (its share under the lowest rate a shard takes) is refused and changes nothing."""
    from iaxgw.sim.scale.shard_control import ShardControl, rate_shares

    shards = [_FakeShard(), _FakeShard()]
    ctl = ShardControl("unused.sock", shards, rate_shares([30, 10]), 4.0, lambda: None)
    ctl.handle("rate", {"rate": 8})
    assert [sh.lines for sh in shards] == [["rate 6.0"], ["rate 2.0"]]
    ctl.handle("pause", {})
    ctl.handle("pause", {})                        # already paused: nothing new to tell
    assert [sh.lines[1:] for sh in shards] == [["pause"], ["pause"]]
    shards[1].alive = False
    ctl.handle("resume", {})
    assert shards[0].lines[-1] == "resume" and shards[1].lines[-1] == "pause"
    with pytest.raises(CommandRefused, match=r"ask at least 0\.04 calls/s"):
        ctl.handle("rate", {"rate": 0.02})         # the 10-call shard would get 0.005/s
    assert ctl.control.rate == 8.0 and shards[0].lines[-1] == "resume"
    assert [c["action"] for c in ctl.control.summary()["changes"]] == [
        "rate", "pause", "resume"]
    ctl.handle("stop", {})
    assert shards[0].lines[-1] == "halt ctl" and ctl.stats()["loadtest"]["stopping"] is True


def test_targets_added_up() -> None:
    a = {"rate": {"asked": 5.0, "achieved": 4.9}, "calls": {"asked": 5, "peak": 5}, "met": True,
         "capped_by": [{"cap": "maxauthreq", "waited_s": 1.0}]}
    b = {"rate": {"asked": 5.0, "achieved": None}, "calls": {"asked": 5, "peak": 4},
         "met": False, "capped_by": [{"cap": "maxauthreq", "waited_s": 0.5}]}
    t = merge_targets([a, b])
    assert t["rate"] == {"asked": 10.0, "achieved": None}
    assert t["calls"] == {"asked": 10, "peak": 9} and t["met"] is False
    assert t["capped_by"] == [{"cap": "maxauthreq", "waited_s": 1.5}]


# --- against iaxgw serve ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``iaxgw serve`` as office-b whose ACL permits its /24: every shard address is let in."""
    tmp = tmp_path_factory.mktemp("serve")
    n = random.Random(os.getpid() + 11).randrange(100, 250)
    a_ip, b_ip = f"127.{n}.7.10", f"127.{n}.7.20"
    a = _site_dir(tmp / "a", "office-a", a_ip, b_ip)
    b = _site_dir(tmp / "b", "office-b", a_ip, b_ip)
    conf = b / "iax.conf"
    conf.write_text(conf.read_text().replace(f"permit = {a_ip}/255.255.255.255",
                                             f"permit = 127.{n}.7.0/255.255.255.0"))
    proc = ServeProcess(b, tmp, env={"IAXGW_NO_GSO": "1"})
    proc.start()
    try:
        yield {"a": a, "a_ip": a_ip, "net": f"127.{n}.7", "proc": proc}
    finally:
        proc.stop()


def _loadtest(s: dict[str, Any], report: Path, bind: str,
              *extra: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "iaxgw.gateway.cli", "loadtest", "--config", str(s["a"]),
            "--peer", "office-b", "--quiet", "--report", str(report), "--bind", bind, *extra]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def _setups(rows: list[dict[str, str]]) -> list[float]:
    return [float(r["answer_ms"]) for r in rows if r["outcome"] == "ANSWERED"]


def test_three_shards_against_serve_merge_to_their_parts(serve: dict[str, Any],
                                                         tmp_path: Path) -> None:
    net = serve["net"]
    report = tmp_path / "rep"
    pcap = tmp_path / "run.pcap"
    proc = _loadtest(serve, report, f"{net}.10-{net}.12", "-l", "9", "-r", "15", "-d", "4",
                     "--pcap", str(pcap))
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, out
    summary = json.loads((report / "summary.json").read_text())
    jsonschema.Draft202012Validator(summary_schema()).validate(summary)
    shards = summary["shards"]
    assert [s["local"] for s in shards] == [f"{net}.{n}:4569" for n in (10, 11, 12)]
    assert [s["calls"] for s in shards] == [3, 3, 3]
    assert all(s["cpu_pct"] is not None and s["exit_code"] == 0 for s in shards)
    assert summary["answered"] == 9 and summary["audio"]["verified"] == 9
    assert summary["max_concurrent"] == 9
    # calls.csv holds every shard's calls; the percentiles are the pooled ones
    merged = _csv(report / "calls.csv")
    parts = [_csv(report / "shards" / f"shard-{k}" / "calls.csv") for k in range(3)]
    assert len(merged) == 9 == sum(len(p) for p in parts)
    assert sorted(int(r["index"]) for r in merged) == list(range(9))
    # each row says which shard's address placed it: the shard's own rows, 3 each
    for k, part in enumerate(parts):
        assert {r["local"] for r in part} == {f"{net}.{10 + k}:4569"}
        assert sorted((r["local"], r["callno"]) for r in part) == sorted(
            (r["local"], r["callno"]) for r in merged if r["local"] == f"{net}.{10 + k}:4569")
    pooled = [v for p in parts for v in _setups(p)]   # calls.csv: 6 significant digits
    assert sorted(_setups(merged)) == pytest.approx(sorted(pooled))
    for q in (50, 95, 99):
        assert summary["setup_ms"][f"p{q}"] == pytest.approx(np.percentile(pooled, q), rel=1e-5)
    # each shard's own summary: the merged counts are their sums
    own = [json.loads((report / "shards" / f"shard-{k}" / "summary.json").read_text())
           for k in range(3)]
    for key in ("attempted", "answered", "failed"):
        assert summary[key] == sum(o[key] for o in own), key
    assert summary["frames"]["tx"] == sum(o["frames"]["tx"] for o in own)
    assert summary["frames"]["lost"] == sum(o["frames"]["lost"] for o in own)
    assert summary["trunk"]["datagrams"]["tx"] == sum(o["trunk"]["datagrams"]["tx"] for o in own)
    # timeseries.csv: the shards' seconds summed
    ts = _csv(report / "timeseries.csv")
    assert sum(int(r["attempts_interval"]) for r in ts) == 9
    assert int(ts[-1]["attempts_total"]) == 9
    assert max(int(r["calls_up_now"]) for r in ts) == 9
    lt = summary["loadtest"]
    assert lt["local"] == ",".join(s["local"] for s in shards) and not lt["degraded"]
    # a plain load test asks for no real-time priority
    assert lt["realtime"] == "off" and {s["realtime"] for s in shards} == {"off"}
    assert lt["send_timing"]["ticks"] == sum(o["loadtest"]["send_timing"]["ticks"] for o in own)
    # --pcap: one capture, every shard's datagrams in time order, each shard's 3 NEWs from its
    # own address; as many datagrams as the shards counted, private, no part left behind
    recs = list(read_pcap(pcap))
    times = [r.time for r in recs]
    assert times == sorted(times)
    counted = sum(o["trunk"]["datagrams"]["tx"] + o["trunk"]["datagrams"]["rx"] for o in own)
    assert len(recs) == counted, (len(recs), counted)
    news = {(r.src, r.payload[:2]) for r in recs
            if len(r.payload) >= 12 and r.payload[0] & 0x80 and r.payload[10:12] == b"\x06\x01"}
    assert sorted(src for src, _ in news) == sorted(
        (f"{net}.{10 + k}", 4569) for k in range(3) for _ in range(3))
    assert stat.S_IMODE(pcap.stat().st_mode) == 0o600
    assert not list(tmp_path.glob("**/shard-*.pcap"))


def _last_second(sock: str) -> dict[str, Any]:
    return dict(query(sock, "stats")["last_second"])


def _attempt_rate(sock: str, seconds: float) -> float:
    """Attempts per second over the merged seconds that arrive in ``seconds``."""
    first = _last_second(sock)
    time.sleep(seconds)
    last = _last_second(sock)
    span = float(last["time_s"]) - float(first["time_s"])
    assert span >= seconds - 1.5, (first, last)
    return (int(last["attempts_total"]) - int(first["attempts_total"])) / span


def test_ctl_drives_a_sharded_run(serve: dict[str, Any], tmp_path: Path) -> None:
    """``--control`` over two shards: one socket, in the parent.  ``ctl rate`` reaches the
    shards as their shares (each its half of the calls: half the rate), pause stops both, stop
    ends both gracefully; show is refused with the reason; the merged summary's ``control`` is
    the parent's and each shard's own summary holds its share."""
    net = serve["net"]
    report = tmp_path / "rep"
    sock = str(tmp_path / "ctl" / "lt.sock")
    proc = _loadtest(serve, report, f"{net}.30-{net}.31", "-l", "40", "-r", "1", "-m", "200",
                     "-d", "30", "--control", sock)
    try:
        _wait_for(lambda: os.path.exists(sock), 20, "the control socket")
        assert stat.S_IMODE(os.stat(sock).st_mode) & 0o077 == 0
        _wait_for(lambda: int(_last_second(sock).get("attempts_total") or 0) >= 2, 20,
                  "two attempts at 1/s")
        r = CliRunner().invoke(main, ["ctl", "--control", sock, "rate", "8"])
        assert r.exit_code == 0 and "rate 8 calls/s" in r.output, r.output
        time.sleep(1.2)
        fast = _attempt_rate(sock, 3.5)
        assert 5.5 <= fast <= 10.5, fast                  # 8/s asked (was 1/s)
        r = CliRunner().invoke(main, ["ctl", "--control", sock, "pause"])
        assert r.exit_code == 0 and "paused" in r.output
        time.sleep(2.2)                                   # the seconds in flight merged
        assert _attempt_rate(sock, 2.5) == 0.0            # no new calls while paused
        st = query(sock, "stats")["loadtest"]
        assert st["shards"] == 2 and st["shards_running"] == 2 and st["paused"] is True
        assert int(st["calls_up"]) >= 5
        r = CliRunner().invoke(main, ["show", "stats", "--control", sock])
        assert r.exit_code == 0 and "shards_running" in r.output, r.output
        r = CliRunner().invoke(main, ["show", "channels", "--control", sock])
        assert r.exit_code == 1 and "2 shards" in r.output, r.output
        with pytest.raises(ControlError, match="originate is for a running"):
            query(sock, "originate", exten="300")
        r = CliRunner().invoke(main, ["ctl", "--control", sock, "resume"])
        assert r.exit_code == 0
        time.sleep(1.2)
        r = CliRunner().invoke(main, ["ctl", "--control", sock, "stop"])
        assert r.exit_code == 0 and "load test stopping" in r.output
        out = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "PASS" in out and "stopped by `iaxgw ctl stop`" in out
    assert not os.path.exists(sock)
    summary = json.loads((report / "summary.json").read_text())
    jsonschema.Draft202012Validator(summary_schema()).validate(summary)
    ctl = summary["control"]
    assert ctl["stopped_by"] == "ctl" and ctl["initial_rate_cps"] == 1.0
    assert [c["action"] for c in ctl["changes"]] == ["rate", "pause", "resume", "stop"]
    assert summary["failed"] == 0 and summary["attempted"] < 200
    assert [h["rate_cps"] for h in summary["targets"]["rate"]["asked_history"]][:2] == [1.0, 8.0]
    for k in range(2):
        own = json.loads((report / "shards" / f"shard-{k}" / "summary.json").read_text())
        assert own["control"]["initial_rate_cps"] == 0.5
        assert [(c["action"], c["rate_cps"]) for c in own["control"]["changes"]][:3] == [
            ("rate", 4.0), ("pause", 4.0), ("resume", 4.0)]
        assert own["control"]["stopped_by"] == "ctl"
    # each merged second says the rate asked then (the shards' shares summed)
    rows = _csv(report / "timeseries.csv")
    assert {float(r["rate_asked_cps_now"]) for r in rows} >= {1.0, 8.0}


def test_sharded_control_socket_taken_exits_3(serve: dict[str, Any], tmp_path: Path) -> None:
    """A --control path another process listens on (serve's own socket): the sharded run
    stops before any shard starts, exit 3, and leaves the other socket alone."""
    net = serve["net"]
    taken = serve["proc"].control
    report = tmp_path / "rep"
    proc = _loadtest(serve, report, f"{net}.40-{net}.41", "-l", "4", "-d", "1",
                     "--control", taken)
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 3, out
    assert "--control" in out and "already listening" in out
    assert not (report / "shards").exists()                  # no shard ran
    assert query(taken, "stats")                               # serve still answers


def _once_running(proc: subprocess.Popen[bytes], report: Path, act: Any,
                  settle: float = 2.0) -> str:
    """Once the run's timeseries.csv is there and ``settle`` s later, ``act(proc)``; then the
    run's output (the process is killed if it outlives the test)."""
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (report / "timeseries.csv").exists():
            time.sleep(0.05)
        time.sleep(settle)
        act(proc)
        return proc.communicate(timeout=90)[0].decode()
    finally:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGCONT)
            proc.kill()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True, check=False).stdout
    return [int(p) for p in out.split()]


def test_a_shard_killed_mid_run_is_the_generators_loss(serve: dict[str, Any],
                                                       tmp_path: Path) -> None:
    net = serve["net"]
    report = tmp_path / "rep"
    proc = _loadtest(serve, report, f"{net}.13,{net}.14", "-l", "4", "-r", "10", "-d", "8")

    def kill_shard_1(p: subprocess.Popen[bytes]) -> None:
        kids = _children(p.pid)
        assert len(kids) == 2, kids
        os.kill(kids[1], signal.SIGKILL)
    out = _once_running(proc, report, kill_shard_1)
    assert proc.returncode == 1, out
    summary = json.loads((report / "summary.json").read_text())
    lt = summary["loadtest"]
    assert lt["degraded"] is True
    assert any("shard 1 lost" in r and "generator" in r for r in lt["fail_reasons"]), lt
    lost = [s for s in summary["shards"] if s.get("lost")]
    assert [s["local"] for s in lost] == [f"{net}.14:4569"]
    # the survivor's calls are all there and were not counted as the target's failures
    assert summary["attempted"] == 2 and summary["answered"] == 2 and summary["failed"] == 0
    assert "shard 1 lost" in out


def test_lab_sharded_far_end_allows_each_shard_its_setups() -> None:
    from iaxgw.sim.lab.loadtest_lab import SHARDED_MAXAUTHREQ, sharded_callee_general

    one = LoadtestOptions(calls=10)
    assert sharded_callee_general(one) == () and one.max_pending == 3
    two = LoadtestOptions(calls=10, shards=2)
    assert sharded_callee_general(two) == (f"maxauthreq = {SHARDED_MAXAUTHREQ}",)
    assert two.max_pending == 6            # 3 per shard, as one process paces itself


def test_lab_sharded_far_end_trunks_back_to_every_shard(tmp_path: Path) -> None:
    """A trunk peer entry per shard address after the first, only on a trunked far end (a call
    is trunked back only to a trunk peer's host); serve's socket buffers sized by the calls."""
    from iaxgw.gateway.conf.config import load_iax_conf
    from iaxgw.gateway.driver.server import SOCKET_BUFFER_ENV, socket_buffer_from_env
    from iaxgw.sim.lab.loadtest_lab import serve_env, shard_trunk_peers, write_site

    ips = ["127.0.0.10", "127.0.0.11", "127.0.0.12"]
    opts = LoadtestOptions(calls=5000, shards=3)
    conf = write_site(tmp_path / "b", "office-b", opts) / "iax.conf"
    shard_trunk_peers(conf, "office-a", ips, opts)
    entries = load_iax_conf(conf).entries
    added = {n: (e.is_peer, e.host, e.trunk) for n, e in entries.items() if n != "office-a"}
    assert added == {"office-a-2": (True, "127.0.0.11", True),
                     "office-a-3": (True, "127.0.0.12", True)}
    assert any("trunk peer for each shard address" in w for w in opts.warnings)
    one = write_site(tmp_path / "one", "office-b", opts) / "iax.conf"
    before = one.read_text()
    shard_trunk_peers(one, "office-a", ips[:1], opts)
    assert one.read_text() == before
    untrunked = LoadtestOptions(calls=10, shards=2, trunk=False)
    conf = write_site(tmp_path / "nt", "office-b", untrunked) / "iax.conf"
    before = conf.read_text()
    shard_trunk_peers(conf, "office-a", ips[:2], untrunked)
    assert conf.read_text() == before and not untrunked.warnings
    assert serve_env(opts) == {SOCKET_BUFFER_ENV: str(5000 * 8192)}
    assert serve_env(LoadtestOptions(calls=10)) == {SOCKET_BUFFER_ENV: str(4 * 1024 * 1024)}
    assert socket_buffer_from_env("40960000") == 40960000
    assert socket_buffer_from_env(None) == socket_buffer_from_env("lots") == 4 * 1024 * 1024
    assert socket_buffer_from_env(str(1 << 40)) == 4 * 1024 * 1024


def test_lab_with_shards_lets_them_in_and_merges(tmp_path: Path) -> None:
    """``iaxgw lab --shards 2``: serve's ACL is widened to both shard addresses, and serve's
    echo goes back trunked to both (no mini frame reaches the load tester)."""
    n = random.Random(os.getpid() + 13).randrange(100, 250)
    env = {**os.environ, "IAXGW_LAB_ADDRS": f"127.{n}.8.10,127.{n}.8.20"}
    proc = subprocess.run([sys.executable, "-m", "iaxgw.gateway.cli", "lab", "--calls", "6",
                           "--shards", "2", "-d", "3", "--json"], env=env, capture_output=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    s = json.loads(proc.stdout)
    assert [sh["local"] for sh in s["shards"]] == [f"127.{n}.8.10:4569", f"127.{n}.8.11:4569"]
    assert s["answered"] == 6 and s["audio"]["verified"] == 6
    assert f"127.{n}.8.10, 127.{n}.8.11" in s["lab"]["we_are"]
    # the lab runs each shard's media loop at real-time priority (as root), or says why not
    want = "on" if os.geteuid() == 0 else "refused: needs root or CAP_SYS_NICE"
    assert [sh["realtime"] for sh in s["shards"]] == [want, want], s["shards"]
    assert s["loadtest"]["realtime"] == want
    # and serve one priority step below them (SERVE_RT_PRIORITY), as the kernel has it
    assert s["lab"]["far_end_realtime"] == ("SCHED_RR 5" if want == "on" else "ordinary")
    kinds = s["trunk"]["by_kind"]
    assert kinds.get("rx_trunk", 0) > 0 and kinds.get("rx_mini", 0) == 0, kinds


def test_capacity_search_over_shards_steers_each_one(serve: dict[str, Any],
                                                     tmp_path: Path) -> None:
    """Steps of 2 calls over two shards (one each); the rule trips at 6 calls up."""
    net = serve["net"]
    report = tmp_path / "rep"
    proc = _loadtest(serve, report, f"{net}.15,{net}.16", "--step", "2", "--step-time", "3",
                     "--max-calls", "10", "--stop-when", "calls_up >= 6")
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, out
    summary = json.loads((report / "summary.json").read_text())
    jsonschema.Draft202012Validator(summary_schema()).validate(summary)
    cap = summary["capacity"]
    assert (cap["calls"], cap["failed_at"]) == (4, 6), cap
    assert [s["calls_up"] for s in cap["steps"]] == [2, 4, 6]
    assert [s["max_concurrent"] for s in summary["shards"]] == [3, 3]
    assert "capacity: 4 calls held; failed at 6" in out
    assert (report / "capacity.png").is_file()


def test_metrics_over_shards_are_served_by_the_parent(serve: dict[str, Any],
                                                      tmp_path: Path) -> None:
    """``--metrics-addr`` with two shards: the parent serves the merged figures.  Scraped while
    the calls are up, and read at the end, against the merged records (calls.csv's): attempts,
    answers, failures by outcome and cause code, setup times, MOS of the ended calls."""
    import threading

    from test_metrics_e2e import scrape

    from iaxgw.sim.scale.shards import ShardedRun, sharded_result

    net = serve["net"]
    binds = parse_bind_list(f"{net}.30,{net}.31")
    opts = LoadtestOptions(calls=6, total=6, rate=10, duration=(4.0, 4.0), quiet=True,
                           live=False, extens=["300", "302"], peer="office-b",
                           config_dir=serve["a"], bind=binds[0], binds=binds, max_failed=6,
                           metrics_addr=("127.0.0.1", 0))
    opts.check()
    run = ShardedRun(opts)
    assert run.prom is not None
    outcome: list[Any] = []
    worker = threading.Thread(target=lambda: outcome.append(run.run()))
    worker.start()
    scrapes: list[dict[str, float]] = []
    deadline = time.monotonic() + 90
    while worker.is_alive() and time.monotonic() < deadline:
        if run.prom.url is not None:
            with contextlib.suppress(OSError):
                scrapes.append(scrape(run.prom.url))
        time.sleep(0.1)
    worker.join(30)
    res = sharded_result(opts, outcome[0])
    recs = res.records
    answered = [r for r in recs if r.answer_ms is not None]
    busy = [r for r in recs if r.outcome == "BUSY"]
    n_up, n_busy = len(answered), len(busy)
    # the extensions alternate within each shard: echo and Busy() both reached
    assert len(recs) == 6 and n_up + n_busy == 6 and n_up and n_busy, [r.outcome for r in recs]
    # while the answered calls were up, over both shards
    live = [m for m in scrapes if m.get("iaxgw_loadtest_calls_up") == float(n_up)]
    assert live, scrapes[-3:]
    m = live[-1]
    assert m["iaxgw_loadtest_calls_target"] == 6.0
    assert m["iaxgw_loadtest_calls_attempted_total"] == 6.0
    assert m["iaxgw_loadtest_calls_answered_total"] == float(n_up)
    assert m['iaxgw_loadtest_calls_failed_total{cause="17",outcome="BUSY"}'] == float(n_busy)
    assert {r.cause_code for r in busy} == {17}
    # at the end: every setup time, and each ended answered call's MOS, as the records hold
    after = {}
    for line in run.prom.metrics.render().decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            after[key] = float(value)
    assert after["iaxgw_loadtest_setup_seconds_count"] == float(n_up)
    assert after["iaxgw_loadtest_setup_seconds_sum"] == pytest.approx(
        sum(r.answer_ms for r in answered if r.answer_ms is not None) / 1000.0)
    assert after["iaxgw_loadtest_call_mos_count"] == float(
        len([r for r in answered if r.mos is not None])) == float(n_up)
    assert after['iaxgw_loadtest_calls_failed_total{cause="17",outcome="BUSY"}'] == float(n_busy)
    # the endpoint's counters are each shard's own: not exported by the parent
    assert not [k for k in after if k.startswith("iaxgw_protocol_")]


# --- who limited the run ----------------------------------------------------------------------


def test_generator_limits_named() -> None:
    from iaxgw.sim.load.limits import generator_limits, step_cpu_bound

    assert generator_limits([20.0] * 50, {"over_2ms_pct": 0.0}, [], 0) == []
    got = generator_limits([95.0] * 10 + [20.0] * 40, {"over_2ms_pct": 4.0, "late_p99_ms": 9.0},
                           [{"cap": "scheduler_late"}], 12, who="shard 1")
    assert len(got) == 4
    assert got[0] == "shard 1 was CPU-bound: >= 90 % of a core in 10 of 50 s"
    assert "4.0 % started over 2 ms late" in got[1] and "12 UDP datagram" in got[3]
    assert step_cpu_bound([99.0, 99.0, 50.0]) and not step_cpu_bound([50.0, 99.0] + [5.0] * 9)


def test_capacity_step_on_a_cpu_bound_generator_is_not_the_targets_limit() -> None:
    from iaxgw.sim.scale.capacity import CapacitySearch, StopRule

    s = CapacitySearch(2, 2.0, 10, StopRule("setup_fail_pct > 1"))
    for t, cpu, failed in ((1, 30.0, 0), (2, 30.0, 0), (3, 99.0, 1), (4, 99.0, 0)):
        s.second({"time_s": float(t), "calls_up": 2 if t < 3 else 3, "attempts": 2,
                  "failed": failed}, {"cpu_max_pct": cpu, "mos": [], "jitter_ms": []})
    res = s.result()
    assert (res["calls"], res["failed_at"], res["limited_by"]) == (2, 4, "generator")
    assert "CPU-bound" in res["reason"] and res["steps"][1]["generator_cpu_bound"]


def test_a_stalled_generator_says_so(serve: dict[str, Any], tmp_path: Path) -> None:
    """The load tester stopped (SIGSTOP) 50 ms in every 200 ms: its ticks run late, and the
    summary puts the limit on the generator, not the target."""
    report = tmp_path / "rep"
    proc = _loadtest(serve, report, f"{serve['net']}.17", "-l", "4", "-r", "10", "-d", "5")

    def stall(p: subprocess.Popen[bytes]) -> None:
        for _ in range(20):
            os.kill(p.pid, signal.SIGSTOP)
            time.sleep(0.05)
            os.kill(p.pid, signal.SIGCONT)
            time.sleep(0.15)
    _once_running(proc, report, stall, settle=0.0)
    summary = json.loads((report / "summary.json").read_text())
    lim = summary["limited_by"]
    assert lim["generator"] is True, (lim, summary["loadtest"]["send_timing"])
    assert any("media ticks were late" in r for r in lim["reasons"]), lim
    st = summary["loadtest"]["send_timing"]
    assert st["over_2ms_pct"] > 5.0, st       # 50 ms in every 200 ms: far more than 1 %


def test_sigint_reaches_every_shard_once_and_keeps_the_report(serve: dict[str, Any],
                                                               tmp_path: Path) -> None:
    net = serve["net"]
    report = tmp_path / "rep"
    proc = _loadtest(serve, report, f"{net}.21-{net}.22", "-l", "4", "-r", "10", "-d", "30")
    out = _once_running(proc, report, lambda p: p.send_signal(signal.SIGINT))
    assert proc.returncode == 130, out
    summary = json.loads((report / "summary.json").read_text())
    lt = summary["loadtest"]
    assert lt["exit_code"] == 130 and lt["interrupted"] and not lt["degraded"], lt
    assert [s.get("lost") for s in summary["shards"]] == [None, None]
    assert summary["attempted"] == 4 and len(_csv(report / "calls.csv")) == 4


def test_merged_limits_name_each_shard_and_say_machine_wide_drops_once() -> None:
    from types import SimpleNamespace

    from iaxgw.sim.scale.shards import merged_limits

    drops = "this machine's kernel dropped 4282 UDP datagram(s) for full receive buffers"
    results = [SimpleNamespace(index=i, local=f"127.0.0.{10 + i}:4569", summary={
        "limited_by": {"generator": True, "reasons": [f"late ticks {i}", drops]}})
        for i in range(3)]
    results.append(SimpleNamespace(index=3, local="127.0.0.13:4569", summary={}))
    assert merged_limits(results) == [
        "shard 0 (127.0.0.10:4569): late ticks 0", drops,
        "shard 1 (127.0.0.11:4569): late ticks 1", "shard 2 (127.0.0.12:4569): late ticks 2"]
