"""Run-wide collection, summary.json / calls.csv / timeseries.csv / plots, live screen, CPU."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import random
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from iaxgw.sim.load.cpu import CpuMeter
from iaxgw.sim.load.live import LiveScreen, compact_line, print_summary, render
from iaxgw.sim.load.metrics import CallRecord
from iaxgw.sim.report.report import (
    CALL_ID_FIELDS,
    TIMESERIES_CSV_HEADER,
    TIMESERIES_FIELDS,
    LoadStats,
    RecordStore,
    Snapshot,
    TimeSeries,
    percentiles,
    write_report,
)

REQUIRED = {"attempted", "answered", "failed", "causes", "setup_ms", "jitter_ms", "rtt_ms",
            "loss_pct", "mos", "audio", "trunk", "cpu_pct"}


class FakeCpu(CpuMeter):
    def __init__(self) -> None:
        self.n = 0
        self.last_pct = None

    def sample(self) -> float | None:
        self.n += 1
        return 25.0 + self.n


def _run(seconds: int = 4, calls: int = 6) -> tuple[LoadStats, list[Snapshot], float]:
    """Simulated run: ``calls`` answered echo calls (3 % loss, 80 ms + U(0, 6 ms) echo delay),
    one BUSY, two REJECTs; trunk counters fed as mini frames."""
    t0 = 1000.0
    st = LoadStats(target_calls=calls, mode="echo", clock=lambda: t0, cpu=FakeCpu())
    rng = random.Random(4)
    live = []
    for i in range(calls + 3):
        c = st.new_call(t0 + 0.01 * i)
        if i == calls:
            st.end_call(c, t0 + 0.3, "BUSY")
        elif i > calls:
            st.end_call(c, t0 + 0.3, "REJECT", "No authority found")
        else:
            c.on_setup_event("ACCEPT", t0 + 0.02 + 0.01 * i)
            c.on_setup_event("ANSWER", t0 + 0.1 + 0.02 * i)
            live.append(c)
    snaps = []
    now = t0
    for k in range(seconds * 50):
        now = t0 + 0.2 + 0.02 * k
        for c in live:
            p = c.on_tx(k * 20, now)
            st.trunk.add("tx", 4 + len(p))
            if rng.random() < 0.03:
                continue
            c.on_rx(500 + k * 20, now + 0.080 + rng.uniform(0, 0.006), p)
            st.trunk.add("rx", 4 + len(p))
        if k % 50 == 49:
            snaps.append(st.tick(now))
    end = now + 0.1
    for c in live[:-1]:
        st.end_call(c, end)
    return st, snaps, end           # the last call is still up at the end


def test_record_store_spills_and_reads_back_in_order() -> None:
    """Records past the in-memory chunk go to a temporary file and come back in order."""
    _st, _snaps, end = _run(seconds=1, calls=4)
    recs = _st.all_records(end)
    store = RecordStore(chunk=3)
    for k in range(20):
        store.append(recs[k % len(recs)])
    assert len(store) == 20
    assert store._spilled == 18 and len(store._mem) == 2      # 6 chunks on disk
    assert list(store) == [recs[k % len(recs)] for k in range(20)]
    assert list(store) == list(store)                          # re-readable
    store.close()


def test_summary_same_with_spilled_records() -> None:
    st, _snaps, end = _run(seconds=2, calls=8)
    whole = st.summary(end)
    spilled = RecordStore(chunk=2)
    for rec in st.records:
        spilled.append(rec)
    st.records = spilled
    assert st.summary(end) == whole
    assert st.tick(end + 1.0).audio == _run(seconds=2, calls=8)[0].tick(end + 1.0).audio


def test_time_series_reads_back_as_rows() -> None:
    """The per-second rows are kept by column (doubles); they read back as the dicts they were,
    None included, counts as ints."""
    rows: list[dict[str, float | int | None]] = [
        {n: None for n in TIMESERIES_FIELDS} | {"time_s": 1.0, "calls_up": 0},
        {"time_s": 2.001, "calls_up": 200, "attempts": 3, "answered": 2, "failed": 1,
         "setup_p50_ms": 12.5, "jitter_p50_ms": 0.25, "loss_pct": 0.0, "mos_p50": 4.41,
         "tx_pps": 10000.0, "rx_pps": 9999.5, "cpu_pct": None, "unix_time_s": 1.7e9,
         "attempts_total": 3, "answered_total": 2, "failed_total": 1,
         "rate_asked_cps": 12.5, "paused": 1},
    ]
    ts = TimeSeries(rows)
    assert len(ts) == 2 and list(ts) == rows and ts[-1] == rows[1] and ts[0:1] == rows[:1]
    assert isinstance(ts[1]["calls_up"], int) and ts[0]["setup_p50_ms"] is None
    assert list(ts.column("calls_up")) == [0.0, 200.0]
    with pytest.raises(IndexError):
        ts[2]
    st, _snaps, _end = _run(seconds=3, calls=4)
    assert len(st.timeseries) >= 3
    assert all(set(r) == set(TIMESERIES_FIELDS) for r in st.timeseries)


def test_percentiles() -> None:
    p = percentiles(range(1, 101))
    assert p["p50"] == pytest.approx(50.5)
    assert p["p95"] == pytest.approx(95.05)
    assert p["max"] == 100.0
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None, "max": None}
    assert percentiles([None, 3.0, float("nan")])["p99"] == 3.0


def test_collector_snapshots() -> None:
    _, snaps, _ = _run()
    assert len(snaps) == 4
    s = snaps[-1]
    assert s.calls_up == 6 and s.target == 6
    assert s.attempts == 9 and s.answered == 6 and s.failed == 3
    assert s.causes == {"BUSY": 1, "REJECT (No authority found)": 2}
    assert s.setup_p50_ms == pytest.approx(125.0)     # answers 100, 110, .. 150 ms after NEW
    assert 0.5 < s.loss_pct < 8.0                     # type: ignore[operator]
    assert s.jitter_p50_ms is not None and 0.5 < s.jitter_p50_ms < 4.0
    assert s.mos_min is not None and s.mos_p50 is not None and s.mos_min <= s.mos_p50 <= 4.5
    assert s.rtt_p50_ms == pytest.approx(83.0, abs=10.0)
    assert s.tx_pps == pytest.approx(300.0, rel=0.05)
    assert s.cpu_pct is not None
    # the first bucket has the attempts; later ones none
    assert snaps[0].attempt_rate is not None and snaps[0].attempt_rate > 0
    assert snaps[1].attempt_rate == 0


def test_report_files_parse_back(tmp_path: Path) -> None:
    st, _, end = _run()
    summary = st.summary(end)
    out = write_report(tmp_path, summary, st.all_records(end), st.timeseries, plots=False)
    assert {p.name for p in out.files} == {"summary.json", "calls.csv", "timeseries.csv"}

    js = json.loads((tmp_path / "summary.json").read_text())
    assert js.keys() >= REQUIRED
    assert (js["attempted"], js["answered"], js["failed"]) == (9, 6, 3)
    assert js["causes"] == {"BUSY": 1, "REJECT (No authority found)": 2}
    for key in ("setup_ms", "jitter_ms", "rtt_ms"):
        assert set(js[key]) >= {"p50", "p95", "p99", "max"}
        assert all(isinstance(v, float) for v in js[key].values())
    assert js["setup_ms"]["max"] == pytest.approx(150.0)
    assert 0.5 < js["loss_pct"] < 8.0
    assert set(js["mos"]) >= {"p50", "min"}
    assert js["audio"]["verified"] == 6 and js["audio"]["crossed"] == 0
    assert set(js["audio"]) >= {"verified", "crossed", "one_way", "silent"}
    assert js["trunk"]["datagrams_per_s"]["tx"] > 0
    assert js["trunk"]["bytes_per_call_s"]["tx"] == pytest.approx(164 * 50, rel=0.1)
    assert js["cpu_pct"] == pytest.approx(27.5)                # FakeCpu: 26, 27, 28, 29
    assert js["in_progress"] == 0

    rows = list(csv.DictReader((tmp_path / "calls.csv").open()))
    assert len(rows) == 9
    assert [*CALL_ID_FIELDS, *CallRecord.field_names()] == list(rows[0])
    answered = [r for r in rows if r["outcome"] == "ANSWERED"]
    assert len(answered) == 6
    assert all(float(r["mos"]) > 3.5 and r["audio"] == "verified" for r in answered)
    busy = next(r for r in rows if r["outcome"] == "BUSY")
    assert busy["mos"] == "" and busy["answer_ms"] == ""        # missing -> empty, not 0

    ts = list(csv.DictReader((tmp_path / "timeseries.csv").open()))
    assert tuple(ts[0]) == TIMESERIES_CSV_HEADER
    assert len(ts) == 4
    assert [int(r["calls_up_now"]) for r in ts] == [6, 6, 6, 6]
    assert int(ts[0]["attempts_interval"]) == 9 and int(ts[1]["attempts_interval"]) == 0
    assert [int(r["attempts_total"]) for r in ts] == [9, 9, 9, 9]
    assert [int(r["failed_total"]) for r in ts] == [3, 3, 3, 3]
    assert ts[1]["setup_p50_ms_interval"] == ""                # nobody answered in bucket 2
    assert float(ts[0]["setup_p50_ms_interval"]) == pytest.approx(125.0)
    assert all(float(r["tx_frames_per_s_interval"]) > 0 and float(r["cpu_pct_interval"]) > 0
               for r in ts)
    # the absolute time column: the wall clock of each row, one second apart
    stamps = [float(r["unix_time_s"]) for r in ts]
    assert [round(b - a, 3) for a, b in itertools.pairwise(stamps)] == [1.0, 1.0, 1.0]
    assert abs(stamps[0] - st.wall_started - float(ts[0]["elapsed_s"])) < 1e-3
    assert ts[0]["time_utc"].endswith("Z") and "T" in ts[0]["time_utc"]


def test_missing_data_is_null(tmp_path: Path) -> None:
    st = LoadStats(mode="echo", clock=lambda: 0.0, cpu=FakeCpu())
    for i in range(3):
        st.end_call(st.new_call(0.1 * i), 32.0)                 # no reply at all
    js = json.loads((write_report(tmp_path, st.summary(40.0), st.all_records(40.0),
                                  st.timeseries, plots=False).files[0]).read_text())
    assert js["attempted"] == 3 and js["answered"] == 0 and js["failed"] == 3
    assert js["causes"] == {"TIMEOUT": 3}
    assert js["setup_ms"] == {"p50": None, "p95": None, "p99": None, "max": None}
    assert js["loss_pct"] is None and js["mos"]["p50"] is None and js["mos"]["min"] is None
    assert js["trunk"]["datagrams_per_s"] == {"tx": None, "rx": None}
    assert js["cpu_pct"] is None                                # never ticked
    assert '"loss_pct": null' in (tmp_path / "summary.json").read_text()


def test_plots_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from iaxgw.sim.report.plots import PLOT_FILES

    st, _, end = _run(seconds=3)
    # the failures by cause and second of the run: one BUSY and two REJECTs, all at 0.3 s
    assert st.failures == {"BUSY": {0: 1}, "REJECT (No authority found)": {0: 2}}
    summary = st.summary(end)
    out = write_report(tmp_path, summary, st.all_records(end), st.timeseries,
                       failures=st.failures)
    assert out.plots_skipped is None
    pngs = sorted(p.name for p in out.files if p.suffix == ".png")
    assert pngs == sorted(PLOT_FILES)
    for name in pngs:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_run_title_names_the_parameters() -> None:
    from iaxgw.sim.report.plots import run_title

    title = run_title({"codec": "ulaw", "started_at": "2026-12-07T01:50:00.123Z",
                       "loadtest": {"role": "office-a", "peer": "office-b",
                                    "target": "127.0.0.20:4569", "calls": 200, "rate_cps": 40.0,
                                    "total": 400, "duration_s": [20.0, 20.0], "media": "tone",
                                    "extens": ["300"]}})
    assert title == ("iaxgw loadtest: office-a -> office-b (127.0.0.20:4569), 200 calls, 40 cps, "
                     "400 attempts, hold 20 s, ulaw, media tone, exten 300, "
                     "2026-12-07 01:50:00 UTC")
    assert run_title({}) == "iaxgw loadtest"


def test_missing_matplotlib_is_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from iaxgw.sim.load.loadtest import LoadtestResult, write_report_files
    from iaxgw.sim.load.loadtest_plan import LoadtestOptions

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    st, _, end = _run(seconds=1)
    result = LoadtestResult(summary=st.summary(end), exit_code=0, records=st.all_records(end),
                            timeseries=list(st.timeseries))
    write_report_files(LoadtestOptions(report_dir=tmp_path), result)
    err = capsys.readouterr().err
    assert f"no plots in {tmp_path}" in err and "pip install 'iaxgw[plots]'" in err
    assert (tmp_path / "summary.json").exists() and not list(tmp_path.glob("*.png"))


def test_plots_missing_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    st, _, end = _run(seconds=1)
    out = write_report(tmp_path, st.summary(end), st.all_records(end), st.timeseries)
    assert out.plots_skipped is not None and "iaxgw[plots]" in out.plots_skipped
    assert not list(tmp_path.glob("*.png"))
    assert (tmp_path / "summary.json").exists()


# -- live screen ------------------------------------------------------------------------------


def _snap() -> Snapshot:
    return _run(seconds=3)[1][-1]


def test_render_has_fields() -> None:
    con = Console(record=True, width=140, file=io.StringIO())
    con.print(render(_snap()))
    text = con.export_text()
    for label in ("calls up", "6 / 6", "attempts", "answered", "failed", "BUSY 1",
                  "REJECT (No authority found) 2", "setup p50", "125 ms", "setup p95", "verified 6",
                  "jitter p50", "loss", "MOS p50", "MOS min", "CPU", "tx/rx pps", "verified"):
        assert label in text, label


def test_live_screen_not_a_tty_prints_lines() -> None:
    buf = io.StringIO()
    con = Console(file=buf, width=200, force_terminal=False)
    snap = _snap()
    with LiveScreen(con) as screen:
        assert not screen.interactive
        screen.update(snap)
        screen.update(snap)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0] == compact_line(snap)
    assert "up=6/6" in lines[0] and "fail=3" in lines[0] and "mos50=" in lines[0]


def test_live_screen_quiet_and_terminal() -> None:
    buf = io.StringIO()
    with LiveScreen(Console(file=buf, force_terminal=False), quiet=True) as screen:
        screen.update(_snap())
    assert buf.getvalue() == ""
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=140)
    screen = LiveScreen(con, refresh_per_second=4)
    screen.start()
    assert screen.interactive
    screen.update(_snap())
    screen.stop()
    out = buf.getvalue()
    assert "calls up" in out and "MOS p50" in out


def test_print_summary() -> None:
    st, _, end = _run(seconds=2)
    con = Console(record=True, width=140, file=io.StringIO())
    print_summary(st.summary(end), con)
    text = con.export_text()
    for label in ("attempted 9", "answered 6", "failed 3", "setup", "jitter", "echo RTT",
                  "loss", "MOS", "verified 6", "failures by cause", "BUSY", "datagrams/s"):
        assert label in text, label


def test_cpu_meter() -> None:
    clock = iter([0.0, 1.0, 3.0, 3.0]).__next__
    used = iter([10.0, 10.5, 12.5, 12.5]).__next__
    m = CpuMeter(clock, used)
    assert m.sample() == pytest.approx(50.0)
    assert m.sample() == pytest.approx(100.0)
    assert m.sample() == pytest.approx(100.0)           # no wall time: last value
    real = CpuMeter()
    x: Any = 0
    for i in range(200_000):
        x += i * i
    pct = real.sample()
    assert pct is not None and pct >= 0.0


def test_analysis_budget_round_robin() -> None:
    st = LoadStats(mode="echo", clock=lambda: 0.0, cpu=FakeCpu(), analysis_budget_s=0.0)
    calls = [st.new_call(0.0) for _ in range(3)]
    p = calls[0].payloads
    for c in calls:
        c.on_setup_event("ANSWER", 0.1)
        for k in range(120):
            c.on_rx(k * 20, 1.0 + 0.02 * k, p[k % 50])
    # a zero budget still analyses one call per tick, in turn
    done = []
    for t in (2.0, 3.0, 4.0):
        st.tick(t)
        done.append([c.audio.frames > 0 for c in calls])
    assert done == [[True, False, False], [True, True, False], [True, True, True]]


def _stats_with_calls(n: int = 7) -> tuple[LoadStats, list[Any], float]:
    t0 = 1000.0
    st = LoadStats(target_calls=n, mode="echo", clock=lambda: t0, cpu=FakeCpu())
    rng = random.Random(9)
    calls = []
    for i in range(n):
        c = st.new_call(t0 + 0.01 * i)
        c.on_setup_event("ACCEPT", t0 + 0.02)
        c.on_setup_event("ANSWER", t0 + 0.1 + 0.01 * i)
        calls.append(c)
    now = t0
    for k in range(60):
        now = t0 + 0.2 + 0.02 * k
        for c in calls:
            p = c.on_tx(k * 20, now)
            if rng.random() < 0.05:
                continue
            c.on_rx(500 + k * 20, now + 0.05 + rng.uniform(0, 0.004), p)
    return st, calls, now


def test_sliced_statistics_tick_equals_the_whole_tick() -> None:
    """A media loop sweeps a statistics tick's calls in slices (begin_tick / sweep /
    finish_tick): the snapshot is the one tick() gives; a call that ends after it was swept is
    counted once (by end_call), as when it ended before the tick."""
    a, _, now = _stats_with_calls()
    b, _, now_b = _stats_with_calls()
    assert now == now_b
    whole = a.tick(now)
    b.begin_tick(now)
    slices = 0
    while not b.sweep(0.0, clock=lambda: 1.0, chunk=2):    # time is always up: one chunk each
        slices += 1
    assert slices == 3 and not b.sweeping
    assert b.finish_tick(now) == whole
    # a call ends mid-sweep
    a, calls_a, now = _stats_with_calls()
    b, calls_b, _ = _stats_with_calls()
    a.end_call(calls_a[0], now)
    snap_a = a.tick(now + 1.0)
    b.begin_tick(now + 1.0)
    assert not b.sweep(0.0, clock=lambda: 1.0, chunk=2)    # calls 0 and 1 swept
    b.end_call(calls_b[0], now)
    assert b.sweep(math.inf)
    snap_b = b.finish_tick(now + 1.0)
    for field in ("tx_pps", "rx_pps", "audio", "answered", "failed", "attempts"):
        assert getattr(snap_b, field) == getattr(snap_a, field), field
    assert snap_a.calls_up == 6 and snap_b.calls_up == 7    # it was up when swept


def test_report_files_are_replaced_whole_never_half_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write interrupted half way (here a Ctrl-C in the 4th row of calls.csv) leaves the
    previous file as it was, and no temporary file behind."""
    import iaxgw.sim.report.report as report

    st, _, end = _run()
    write_report(tmp_path, st.summary(end), st.all_records(end), st.timeseries, plots=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_writer = csv.writer

    class Interrupted:
        def __init__(self, fh: Any) -> None:
            self.w, self.rows = real_writer(fh), 0

        def writerow(self, row: Any) -> None:
            self.rows += 1
            if self.rows == 4:
                raise KeyboardInterrupt
            self.w.writerow(row)

    monkeypatch.setattr(report.csv, "writer", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_report(tmp_path, {"attempted": 99}, st.all_records(end), st.timeseries,
                     plots=False)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(after) == set(before)                     # no .part file left
    assert after["calls.csv"] == before["calls.csv"]     # the old file, whole
    assert json.loads(after["summary.json"]) == {"attempted": 99}   # written before, whole


def test_report_dir_that_cannot_be_written_fails_before_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import iaxgw.sim.load.loadtest as lt
    from iaxgw.gateway.cli import main

    def no_run(*a: Any, **k: Any) -> Any:
        raise AssertionError("the run started although its report cannot be written")

    monkeypatch.setattr(lt, "run_loadtest_core", no_run)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for cmd in (["loadtest"], ["lab"]):
        r = CliRunner().invoke(main, [*cmd, "--calls", "1", "--report", str(blocker / "rep")])
        assert r.exit_code == 2, r.output
        assert "cannot write the report into" in r.output and "Traceback" not in r.output
    assert lt.check_report_dir(lt.LoadtestOptions(report_dir=tmp_path / "ok" / "rep")) is None
    assert (tmp_path / "ok" / "rep").is_dir() and not list((tmp_path / "ok" / "rep").iterdir())


def test_ctrl_c_while_the_report_is_written_waits_for_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run is over and the report is its only record: a (second) Ctrl-C that arrives
    while it is written does not cut it short."""
    import os
    import signal
    import types

    import iaxgw.sim.load.loadtest as lt
    import iaxgw.sim.report.report as report

    st, _, end = _run()
    real = report.write_calls_csv

    def interrupted(path: Path, records: Any, ids: Any = None) -> Path:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):        # the Python-level handler runs between these lines
            pass
        return real(path, records, ids)

    monkeypatch.setattr(report, "write_calls_csv", interrupted)
    result = types.SimpleNamespace(summary=st.summary(end), records=st.all_records(end),
                                   timeseries=st.timeseries, report_files=[])
    opts = lt.LoadtestOptions(report_dir=tmp_path)
    lt.write_report_files(opts, result)  # type: ignore[arg-type]
    assert {p.name for p in result.report_files} >= {"summary.json", "calls.csv",
                                                       "timeseries.csv"}
    assert len(list(csv.DictReader((tmp_path / "calls.csv").open()))) == 9
    assert "interrupted while the report was written" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # restored
