"""The load tester from the operator's side: roles (--site), exit codes, short aliases, global
options after the sub-command, and the report files while the run goes and afterwards (against a
real ``iaxgw serve`` in a child process on a 127.0.x pair of its own)."""

from __future__ import annotations

import csv
import datetime
import itertools
import json
import logging
import os
import random
import signal
import socket
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

from iaxgw.gateway.cli import main
from iaxgw.sim.lab.loadtest_lab import ServeProcess
from iaxgw.sim.load.loadtest import load_target
from iaxgw.sim.load.loadtest_plan import LoadtestOptions
from iaxgw.sim.report.report import TIMESERIES_CSV_HEADER, summary_schema

pytestmark = pytest.mark.timeout(120)

_NETS = itertools.cycle(random.Random(os.getpid() + 7).sample(range(100, 250), 150))


# --- roles -------------------------------------------------------------------------------------


def test_site_picks_the_embedded_config_and_calls_the_other_site() -> None:
    a = LoadtestOptions(site="office-a", quiet=True)
    a.check()
    t = load_target(a)
    assert (t.role, t.peer, t.bind, t.peer_addr) == (
        "office-a", "office-b", ("127.0.0.10", 4569), ("127.0.0.20", 4569))
    assert a.exten_list() == ["300"]            # office-b's echo extension
    b = LoadtestOptions(quiet=True)             # no --site: office-b, as before
    b.check()
    t = load_target(b)
    assert (t.role, t.peer, t.bind, t.peer_addr) == (
        "office-b", "office-a", ("127.0.0.20", 4569), ("127.0.0.10", 4569))
    assert b.exten_list() == ["200"]


def test_site_and_config_together_is_a_usage_error(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["loadtest", "--site", "office-a", "--config", str(tmp_path)])
    assert r.exit_code == 2 and "--site picks an embedded configuration" in r.output


def test_bind_in_use_exits_3_saying_what_to_do() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        r = CliRunner().invoke(main, ["loadtest", "--site", "office-b", "--bind",
                                      f"127.0.0.1:{port}", "-l", "1", "-q"])
    assert r.exit_code == 3, r.output
    err = r.stderr
    assert f"cannot bind 127.0.0.1:{port}" in err and "in use" in err
    assert "--site office-a" in err and "--bind ADDR[:PORT]" in err


def _free_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_pcap_through_a_link_is_refused_before_the_run(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    planted = tmp_path / "planted.pcap"
    planted.symlink_to(victim)
    r = CliRunner().invoke(main, ["loadtest", "--site", "office-b", "--bind",
                                  f"127.0.0.1:{_free_udp()}", "-l", "1", "-q", "--pcap",
                                  str(planted)])
    assert r.exit_code == 2, r.output
    assert "--pcap" in r.output and "not a plain file of ours" in r.output
    assert victim.read_bytes() == b"keep me"


def test_sharded_pcap_through_a_link_is_refused_before_any_shard_starts(tmp_path: Path) -> None:
    """With several shards the parent opens FILE (the shards capture into a private folder and
    it merges them): the same refusal, exit 2, before any call."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    planted = tmp_path / "planted.pcap"
    planted.symlink_to(victim)
    r = CliRunner().invoke(main, ["loadtest", "--site", "office-b", "--bind",
                                  "127.0.0.1-127.0.0.2:" + str(_free_udp()), "-l", "2", "-q",
                                  "--pcap", str(planted)])
    assert r.exit_code == 2, r.output
    assert "--pcap" in r.output and "not a plain file of ours" in r.output
    assert victim.read_bytes() == b"keep me"


def test_master_refuses_pcap(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["loadtest", "--master", "--expect-workers", "2", "--site",
                                  "office-b", "--pcap", str(tmp_path / "x.pcap")])
    assert r.exit_code == 2, r.output
    assert "--pcap" in r.output and "workers" in r.output
    assert not (tmp_path / "x.pcap").exists()


def test_metrics_port_in_use_exits_3() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        r = CliRunner().invoke(main, ["loadtest", "--site", "office-b", "--bind",
                                      f"127.0.0.1:{_free_udp()}", "-l", "1", "-q",
                                      "--metrics-addr", f"127.0.0.1:{port}"])
    assert r.exit_code == 3, r.output
    assert f"metrics: cannot bind 127.0.0.1:{port}" in r.stderr


def test_sharded_metrics_port_in_use_exits_3_before_any_shard_starts(tmp_path: Path) -> None:
    """With shards the parent binds --metrics-addr first: in use, exit 3 and no shard ran."""
    from iaxgw.sim.scale import shards

    started: list[Any] = []
    real = shards.start_shard
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held, \
            pytest.MonkeyPatch.context() as mp:
        mp.setattr(shards, "start_shard", lambda *a, **kw: started.append(a) or real(*a, **kw))
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        n = next(_NETS)
        r = CliRunner().invoke(main, ["loadtest", "--site", "office-b", "--bind",
                                      f"127.0.{n}.30,127.0.{n}.31", "-l", "2", "-q",
                                      "--metrics-addr", f"127.0.0.1:{port}"])
    assert r.exit_code == 3, r.output
    assert f"metrics: cannot bind 127.0.0.1:{port}" in r.stderr
    assert started == []


def test_lab_refuses_role_options_with_the_reason(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["lab", "--peer", "office-b", "--calls", "1"])
    assert r.exit_code == 2 and "--peer" in r.output and "plays both sites" in r.output


def _lab_options(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> LoadtestOptions:
    """The options ``iaxgw lab ARGS`` would run with (the run itself replaced)."""
    from iaxgw.sim.lab import loadtest_lab

    seen: list[LoadtestOptions] = []
    monkeypatch.setattr(loadtest_lab, "run_lab",
                        lambda opts, **kw: seen.append(opts) or 0)
    r = CliRunner().invoke(main, ["lab", "-q", *args])
    assert r.exit_code == 0, r.output
    return seen[0]


def test_lab_ramps_many_calls_at_its_own_rate_and_holds_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """calls/5 would ask 1,000 setups/s of a far end on this machine: the lab asks 200/s and,
    without --duration, keeps each call up for the 25 s ramp + 20 s, and says so."""
    o = _lab_options(monkeypatch, ["--calls", "5000"])
    assert (o.cps, o.duration) == (200.0, (45.0, 45.0))
    assert "placed at 200/s, not calls/5 (1000/s)" in o.warnings[0]
    assert "each call lasts 45 s, the 25 s ramp + 20 s" in o.warnings[0]
    assert not [w for w in o.warnings if "shorter than the ramp" in w]
    o = _lab_options(monkeypatch, ["--calls", "5000", "--duration", "30"])
    assert (o.cps, o.duration) == (200.0, (30.0, 30.0))
    assert "each call lasts" not in o.warnings[0]
    o = _lab_options(monkeypatch, ["--calls", "5000", "--rate", "1000"])
    assert (o.cps, o.duration) == (1000.0, (20.0, 20.0))
    o = _lab_options(monkeypatch, ["--calls", "5000", "--total", "2000"])
    assert o.duration == (30.0, 30.0)             # a 10 s ramp to the 2,000 placed
    o = _lab_options(monkeypatch, ["--calls", "1000"])
    assert (o.cps, o.duration) == (200.0, (20.0, 20.0))     # calls/5 is within the lab's rate
    assert not [w for w in o.warnings if w.startswith("lab:")]


def test_verbose_after_the_sub_command(monkeypatch: pytest.MonkeyPatch) -> None:
    levels: list[int] = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: levels.append(kw["level"]))
    r = CliRunner().invoke(main, ["loadtest", "--calls", "0", "-vv"])
    assert r.exit_code == 2 and "--calls" in r.output      # -vv itself was accepted
    assert levels == [logging.DEBUG]
    r = CliRunner().invoke(main, ["show", "peers", "-v", "--control", "/nonexistent/x.sock"])
    assert "No such option" not in r.output and levels[-1] == logging.INFO


# --- against iaxgw serve -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``iaxgw serve`` as office-b (x00 echo, 302 busy) on a loopback pair of its own."""
    yield from serve_pair(tmp_path_factory)


def serve_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The ``serve`` fixture's work (other test modules make theirs with it)."""
    tmp = tmp_path_factory.mktemp("serve")
    n = next(_NETS)
    a_ip, b_ip = f"127.0.{n}.10", f"127.0.{n}.20"
    a = _site_dir(tmp / "a", "office-a", a_ip, b_ip)
    b = _site_dir(tmp / "b", "office-b", a_ip, b_ip)
    proc = ServeProcess(b, tmp, env={"IAXGW_NO_GSO": "1"})
    proc.start()
    try:
        yield {"a": a, "b": b, "a_ip": a_ip, "b_ip": b_ip, "tmp": tmp, "proc": proc}
    finally:
        proc.stop()


def test_serve_realtime_takes_the_priority_asked(tmp_path: Path) -> None:
    """``iaxgw serve --realtime --realtime-priority 7`` (as the lab starts it at 5): the kernel
    schedules it SCHED_RR 7 (root), or serve says it was refused and runs as usual."""
    from iaxgw.sim.lab.loadtest_lab import scheduling

    n = next(_NETS)
    a_ip, b_ip = f"127.0.{n}.10", f"127.0.{n}.20"
    _site_dir(tmp_path / "a", "office-a", a_ip, b_ip)
    b = _site_dir(tmp_path / "b", "office-b", a_ip, b_ip)
    proc = ServeProcess(b, tmp_path, realtime_priority=7)
    assert proc.argv[-3:] == ["--realtime", "--realtime-priority", "7"]
    proc.start()
    try:
        got = scheduling(proc.pid)
        log = proc.log_path.read_text()
        if os.geteuid() == 0:
            assert got == "SCHED_RR 7", got
            assert "real-time priority (SCHED_RR 7): on" in log, log
        else:
            assert got == "ordinary", got
            assert "real-time priority (SCHED_RR 7): refused: needs root" in log, log
    finally:
        proc.stop()
    assert scheduling(os.getpid()) == "ordinary"
    assert ServeProcess(b, tmp_path).argv[-1] != "7"       # not asked: not passed
    # a priority outside SCHED_RR's 1..99: a usage error before anything starts
    r = CliRunner().invoke(main, ["serve", "--peer", "office-a", "--config", str(b),
                                  "--realtime", "--realtime-priority", "0"])
    assert r.exit_code == 2 and "--realtime-priority" in r.output and "1<=x<=99" in r.output, \
        r.output


def _args(s: dict[str, Any], *extra: str) -> list[str]:
    return ["--config", str(s["a"]), "--peer", "office-b", "--quiet", *extra]


def test_short_aliases_and_worst_calls(serve: dict[str, Any]) -> None:
    r = CliRunner().invoke(main, ["loadtest", *_args(serve, "-l", "3", "-r", "20", "-m", "3",
                                                     "-d", "2", "--json")])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout[r.stdout.index("{"):])
    lt = s["loadtest"]
    assert (lt["calls"], lt["total"], lt["rate_cps"], lt["duration_s"]) == (3, 3, 20, [2.0, 2.0])
    assert s["answered"] == 3 and lt["fail_reasons"] == []
    worst = s["worst_calls"]
    assert len(worst["by_mos"]) == 3 and len(worst["by_setup"]) == 3
    mos = [w["mos"] for w in worst["by_mos"]]
    assert mos == sorted(mos)
    setups = [w["setup_ms"] for w in worst["by_setup"]]
    assert setups == sorted(setups, reverse=True)
    assert all(w["exten"] == "300" and w["callno"] and w["peer_callno"]
               for w in worst["by_mos"])
    assert "worst calls by lowest MOS: #" in r.stderr     # printed at the end (stderr: --json)
    assert "PASS" in r.stderr and "audio ok (3 calls verified)" in r.stderr


def test_failed_calls_exit_1_and_say_why(serve: dict[str, Any]) -> None:
    r = CliRunner().invoke(main, ["loadtest", *_args(serve, "--exten", "302", "-l", "2",
                                                     "-d", "1")])
    assert r.exit_code == 1, r.output
    assert "FAIL" in r.output and "2 failed call(s), more than --max-failed 0" in r.output
    # nothing was answered: no audio claim
    assert "audio not checked (no call was answered)" in r.output
    assert "audio ok" not in r.output


def test_unchecked_media_is_not_called_ok(serve: dict[str, Any]) -> None:
    r = CliRunner().invoke(main, ["loadtest", *_args(serve, "-l", "1", "-d", "1",
                                                     "--media", "silence")])
    assert r.exit_code == 0, r.output
    assert "audio not checked (--media silence)" in r.output and "audio ok" not in r.output


def test_target_that_never_answers_exits_3() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
        quiet.bind(("127.0.0.1", 0))              # a bound socket that never replies
        port = quiet.getsockname()[1]
        r = CliRunner().invoke(main, ["loadtest", "--peer-host", f"127.0.0.1:{port}",
                                      "--bind", "127.0.0.2:4569",
                                      "-l", "1", "-d", "1", "--setup-timeout", "1", "-q"])
    assert r.exit_code == 3, r.output
    assert f"127.0.0.1:{port} never answered anything" in r.output


def _loadtest_proc(s: dict[str, Any], report: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "iaxgw.gateway.cli", "loadtest", *_args(s), "--report",
         str(report), *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "IAXGW_NO_GSO": "1"})


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    return list(csv.DictReader(path.open()))


def test_report_streams_and_validates(serve: dict[str, Any], tmp_path: Path) -> None:
    """timeseries.csv grows a row a second while the run goes; at the end summary.json
    validates against the shipped schema and calls.csv identifies every call."""
    report = tmp_path / "rep"
    t_start = time.time()
    proc = _loadtest_proc(serve, report, "-l", "2", "-r", "10", "-d", "5")
    seen: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            seen.append(len(_rows(report / "timeseries.csv")))
            time.sleep(0.5)
        out = proc.communicate(timeout=30)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    # read while it ran: the header at once, then a row about every second
    live = [n for n in seen if n > 0]
    assert len(set(live)) >= 3, seen
    rows = _rows(report / "timeseries.csv")
    assert tuple(rows[0]) == TIMESERIES_CSV_HEADER and len(rows) >= 5
    first = datetime.datetime.fromisoformat(rows[0]["time_utc"].replace("Z", "+00:00"))
    assert abs(first.timestamp() - t_start) < 5
    assert max(int(r["calls_up_now"]) for r in rows) == 2
    assert int(rows[-1]["attempts_total"]) == 2
    summary = json.loads((report / "summary.json").read_text())
    validator = jsonschema.Draft202012Validator(summary_schema())
    validator.validate(summary)
    # ... and the schema is no rubber stamp: a number as text, a missing field, a MOS of 0
    for key, value in (("loss_pct", "0"), ("worst_calls", None), ("mos", {"p50": 0.0})):
        broken = dict(summary)
        if value is None:
            del broken[key]
        else:
            broken[key] = value
        assert not validator.is_valid(broken), key
    calls = _rows(report / "calls.csv")
    assert len(calls) == 2
    for c in calls:
        start = datetime.datetime.fromisoformat(c["start_time"].replace("Z", "+00:00"))
        assert abs(start.timestamp() - t_start) < 5
        assert int(c["callno"]) > 0 and int(c["peer_callno"]) > 0 and c["exten"] == "300"
    ours = {w["callno"] for w in summary["worst_calls"]["by_mos"]}
    assert ours == {int(c["callno"]) for c in calls}


def test_sigint_exits_130_and_keeps_the_report(serve: dict[str, Any], tmp_path: Path) -> None:
    report = tmp_path / "rep"
    proc = _loadtest_proc(serve, report, "-l", "2", "-r", "10", "-d", "30")
    try:
        deadline = time.monotonic() + 20
        while len(_rows(report / "timeseries.csv")) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=30)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "interrupted by SIGINT" in out
    summary = json.loads((report / "summary.json").read_text())
    assert summary["loadtest"]["exit_code"] == 130 and summary["loadtest"]["interrupted"]


def test_readme_documents_every_report_column() -> None:
    from iaxgw.sim.load.metrics import CallRecord
    from iaxgw.sim.report.report import CALL_ID_FIELDS

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = [c for c in (*TIMESERIES_CSV_HEADER, *CALL_ID_FIELDS, *CallRecord.field_names())
               if f"`{c}`" not in readme]
    assert not missing, missing
