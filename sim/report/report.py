"""Load-test aggregation and reports: the run-wide collector, ``summary.json``, ``calls.csv``,
``timeseries.csv`` and PNG plots.

The runner owns one :class:`LoadStats`::

    stats = LoadStats(target_calls=200, mode="echo")
    call = stats.new_call(index, now)           # a CallStats; drive it per frame
    ...
    snap = stats.tick(now)                      # once a second: audio analysis + a time-series row
    stats.end_call(call, now)                   # -> CallRecord
    summary = stats.summary(now)
    write_report(directory, summary, stats.all_records(now), stats.timeseries)

Every figure that could not be measured is ``None`` (``null`` in JSON, an empty CSV cell), never a
made-up zero.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import json
import math
import os
import pickle
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, overload

import numpy as np

from iaxgw.gateway.safefs import write_file_atomic
from iaxgw.sim.load import signature as sig
from iaxgw.sim.load.cpu import CpuMeter
from iaxgw.sim.load.metrics import (
    BPL_PLC,
    IE_G711,
    JB_FACTOR,
    CallRecord,
    CallStats,
    Mode,
    TrunkCounters,
    cause_key,
    return_loss_pct,
)
from iaxgw.sim.report.plots import PlotsUnavailable, write_plots

SUMMARY_VERSION = 1
TIMESERIES_FIELDS = ("time_s", "calls_up", "attempts", "answered", "failed", "setup_p50_ms",
                     "jitter_p50_ms", "loss_pct", "mos_p50", "tx_pps", "rx_pps", "cpu_pct",
                     "unix_time_s", "attempts_total", "answered_total", "failed_total",
                     "rate_asked_cps", "paused")

#: timeseries.csv: (column, the row field it comes from, what it means).  A name says its unit
#: and its window: ``_interval`` = over the second since the previous row, ``_total`` = since the
#: start of the run, ``_now`` = the state at the row's time.  An empty cell: not measurable then.
TIMESERIES_COLUMNS: Final = (
    ("time_utc", "unix_time_s", "wall clock of the row, ISO 8601 UTC with milliseconds"),
    ("unix_time_s", "unix_time_s", "the same instant in seconds since 1970-01-01 UTC"),
    ("elapsed_s", "time_s", "seconds since the run started"),
    ("calls_up_now", "calls_up", "answered calls up at the row's time"),
    ("attempts_interval", "attempts", "calls placed (NEW sent) in the interval"),
    ("answered_interval", "answered", "calls answered in the interval"),
    ("failed_interval", "failed", "calls that ended failed in the interval"),
    ("attempts_total", "attempts_total", "calls placed since the start"),
    ("answered_total", "answered_total", "calls answered since the start"),
    ("failed_total", "failed_total", "failed calls since the start"),
    ("setup_p50_ms_interval", "setup_p50_ms",
     "median NEW to ANSWER time (ms) of the calls answered in the interval"),
    ("jitter_p50_ms_now", "jitter_p50_ms",
     "median over the calls up of each call's RFC 3550 jitter estimate (ms)"),
    ("loss_pct_interval", "loss_pct",
     "voice frames lost in the interval, % of those expected (empty: loss not measurable)"),
    ("mos_p50_now", "mos_p50", "median over the calls up of each call's MOS so far"),
    ("tx_frames_per_s_interval", "tx_pps", "voice frames we sent per second, all calls"),
    ("rx_frames_per_s_interval", "rx_pps", "voice frames we received per second, all calls"),
    ("cpu_pct_interval", "cpu_pct", "this process's CPU use, % of one core"),
    ("rate_asked_cps_now", "rate_asked_cps",
     "call attempts per second asked at the row's time (--rate, then iaxgw ctl rate / keys)"),
    ("paused_now", "paused", "1 while new calls are paused (iaxgw ctl pause, p key), else 0"),
)
TIMESERIES_CSV_HEADER: Final = tuple(c[0] for c in TIMESERIES_COLUMNS)

#: calls.csv columns before CallRecord's own, from the runner (empty when unknown)
CALL_ID_FIELDS: Final = ("start_time", "local", "callno", "peer_callno", "exten")
WORST_N = 5


def percentiles(values: Iterable[float | None],
                points: Sequence[int] = (50, 95, 99)) -> dict[str, float | None]:
    """``{"p50": .., "p95": .., "p99": .., "max": ..}`` over the non-None values (linear
    interpolation); every entry None when there are no values."""
    arr = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    out: dict[str, float | None] = {}
    for p in points:
        out[f"p{p}"] = float(np.percentile(arr, p)) if arr.size else None
    out["max"] = float(arr.max()) if arr.size else None
    return out


def echo_missing_pct(records: Iterable[Any]) -> float | None:
    """Of the voice frames the answered calls sent, the share that never came back even once
    (an echo run's round-trip loss): ``1 - frames back / frames sent``, where a frame that came
    back twice (a duplicate) counts once.  None when nothing was sent."""
    tx = back = 0
    for r in records:
        if r.outcome == "ANSWERED":
            tx += int(r.tx_frames)
            back += max(0, int(r.rx_frames) - int(r.duplicates))
    return round(100.0 * max(0, tx - back) / tx, 3) if tx else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile of ``values`` (None: no values)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else None


# ---------------------------------------------------------------------------------------------
# The collector
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Snapshot:
    """What the live screen shows; built by :meth:`LoadStats.tick`."""

    elapsed_s: float
    calls_up: int
    target: int | None
    setting_up: int
    attempts: int
    attempt_rate: float | None
    answered: int
    failed: int
    causes: dict[str, int]
    setup_p50_ms: float | None
    setup_p95_ms: float | None
    jitter_p50_ms: float | None
    jitter_max_ms: float | None
    loss_pct: float | None
    mos_p50: float | None
    mos_min: float | None
    rtt_p50_ms: float | None
    tx_pps: float | None
    rx_pps: float | None
    cpu_pct: float | None
    audio: dict[str, int] = field(default_factory=dict)
    rate_asked: float | None = None      # attempts/s asked now (None: not a rate-driven run)
    paused: bool = False                 # new calls paused (iaxgw ctl pause, p key)


Row = dict[str, float | int | None]


class TimeSeries(Sequence[Row]):
    """The once-a-second rows of a run (``TIMESERIES_FIELDS``), kept by column in arrays of
    doubles (None as NaN): 96 bytes a row where a dict of boxed numbers took about 700, so a
    long run's series grows by little.  Reads back as rows (dicts), like the list it replaces."""

    INT_FIELDS = frozenset({"calls_up", "attempts", "answered", "failed", "attempts_total",
                            "answered_total", "failed_total", "paused"})

    def __init__(self, rows: Iterable[Mapping[str, float | int | None]] = ()) -> None:
        self._cols: dict[str, array[float]] = {n: array("d") for n in TIMESERIES_FIELDS}
        for row in rows:
            self.append(row)

    def append(self, row: Mapping[str, float | int | None]) -> None:
        for name, col in self._cols.items():
            v = row.get(name)
            col.append(math.nan if v is None else float(v))

    def column(self, name: str) -> array[float]:
        """One field over the run (NaN where it was None)."""
        return self._cols[name]

    def __len__(self) -> int:
        return len(self._cols["time_s"])

    def _row(self, i: int) -> Row:
        row: Row = {}
        for name, col in self._cols.items():
            v = col[i]
            row[name] = None if math.isnan(v) else int(v) if name in self.INT_FIELDS else v
        return row

    @overload
    def __getitem__(self, i: int) -> Row: ...

    @overload
    def __getitem__(self, i: slice) -> list[Row]: ...

    def __getitem__(self, i: int | slice) -> Row | list[Row]:
        if isinstance(i, slice):
            return [self._row(k) for k in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError("time series row out of range")
        return self._row(i % n)


class RecordStore:
    """Finished calls' records, appended in order and read back for the report at the end.

    A long run finishes many thousands of calls; keeping every record in memory grew a 10-minute
    200-call soak by ~2.4 KiB per call.  Records past the first ``chunk`` are pickled to an
    anonymous temporary file in chunks, so memory stays flat however long the run is."""

    def __init__(self, chunk: int = 500) -> None:
        self.chunk = chunk
        self._mem: list[CallRecord] = []
        self._file: Any = None
        self._spilled = 0

    def append(self, rec: CallRecord) -> None:
        self._mem.append(rec)
        if len(self._mem) >= self.chunk:
            if self._file is None:
                # lives as long as the store (close()); unlinked at creation
                self._file = tempfile.TemporaryFile(prefix="iaxgw-records-")  # noqa: SIM115
            self._file.seek(0, 2)
            pickle.dump(self._mem, self._file, protocol=pickle.HIGHEST_PROTOCOL)
            self._spilled += len(self._mem)
            self._mem = []

    def __len__(self) -> int:
        return self._spilled + len(self._mem)

    def __iter__(self) -> Iterator[CallRecord]:
        if self._file is not None:
            self._file.seek(0)
            done = 0
            while done < self._spilled:
                batch: list[CallRecord] = pickle.load(self._file)
                done += len(batch)
                yield from batch
        yield from list(self._mem)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class LoadStats:
    """All calls of one load test: live calls, finished records, trunk counters, time series."""

    def __init__(self, *, target_calls: int | None = None, mode: Mode = "echo",
                 codec: sig.Codec = "ulaw", rx_codec: sig.Codec | None = None,
                 plan: sig.SignaturePlan | None = None, bpl: float = BPL_PLC,
                 jb_factor: float = JB_FACTOR, analysis_windows: int | None = None,
                 analysis_budget_s: float | None = 0.25, analysis_in_tick: bool = True,
                 rtt_every: int = 1,
                 clock: Callable[[], float] = time.monotonic,
                 cpu: CpuMeter | None = None) -> None:
        self.target = target_calls
        self.mode: Mode = mode
        self.codec: sig.Codec = codec
        self.rx_codec: sig.Codec = rx_codec or codec
        self.bpl = bpl
        self.jb_factor = jb_factor
        self.analysis_windows = analysis_windows
        #: CPU seconds a tick may spend on audio analysis; calls left over wait for the next
        #: tick (round robin) and keep at most 4 s of audio each.  None: no limit.
        self.analysis_budget_s = analysis_budget_s
        #: False: tick() analyses nothing; the owner calls analyze_until() in its idle time
        self.analysis_in_tick = analysis_in_tick
        self.rtt_every = rtt_every
        self._rr = 0
        # the round robin's order: call indices, not the calls, so a call that ends mid-round
        # frees its audio buffers and payloads at once
        self._rr_calls: list[int] = []
        self._rr_pos = 0
        self.detector = sig.Detector(plan) if mode != "none" else None
        self.clock = clock
        self.started = clock()
        self.wall_started = time.time()      # the wall clock at ``started``
        #: call index -> (our call number, the far end's, the extension dialled)
        self.call_ids: dict[int, tuple[int | None, int | None, str | None]] = {}
        #: our address ("host:port") the calls are placed from (calls.csv's ``local``)
        self.local: str | None = None
        #: called with each time-series row as it is made (timeseries.csv while the run goes)
        self.on_row: Callable[[Mapping[str, float | int | None]], None] | None = None
        #: called with each finished call's record (the load test's Prometheus metrics)
        self.on_record: Callable[[CallRecord], None] | None = None
        #: what the runner asks now (its scheduler's rate, and whether new calls are paused),
        #: set before each row; None: not a load test with a rate (the cells stay empty)
        self.rate_asked_cps: float | None = None
        self.paused = False
        #: called with each row and the raw samples behind its medians (a shard of a sharded
        #: run sends them to the parent, which pools them with the other shards')
        self.on_samples: Callable[[Row, dict[str, Any]], None] | None = None
        self.cpu = cpu or CpuMeter()
        self.active: dict[int, CallStats] = {}
        self.records = RecordStore()
        self._audio_done = {"verified": 0, "crossed": 0, "one_way": 0, "silent": 0}
        self.trunk = TrunkCounters()
        # per-second and per-call figures of the whole run: unboxed doubles (8 bytes each)
        self.timeseries = TimeSeries()
        self.attempts = 0
        self.causes: dict[str, int] = {}
        #: failed calls by cause and by the second of the run they ended in (the plots)
        self.failures: dict[str, dict[int, int]] = {}
        self.setup_ms: array[float] = array("d")
        self.cpu_samples: array[float] = array("d")
        self.max_up = 0
        self._next_index = 0
        self._last_tick = self.started
        self._iv = self._zero_interval()
        self._ended_tx = 0
        self._ended_rx = 0
        self._last_tx = 0
        self._last_rx = 0
        # the statistics tick in progress (begin_tick / sweep / finish_tick)
        self._sweep_calls: list[CallStats] = []
        self._sweep_pos = 0
        self._sweep_seen: dict[int, tuple[int, int, Mapping[str, int]]] = {}
        self._sweep_up = 0
        self._sweep_setting_up = 0
        self._sweep_jit: list[float] = []
        self._sweep_jit_max: float | None = None
        self._sweep_mos: list[float] = []
        self._sweep_rtts: list[float] = []
        self._sweep_tx = 0
        self._sweep_rx = 0
        self._sweep_audio: dict[str, int] = {"verified": 0, "crossed": 0, "one_way": 0,
                                             "silent": 0}

    @staticmethod
    def _zero_interval() -> dict[str, int]:
        return {"attempts": 0, "answered": 0, "failed": 0, "expected": 0, "lost": 0}

    # -- calls -----------------------------------------------------------------------------

    def new_call(self, now: float, index: int | None = None) -> CallStats:
        """Register a new attempt (NEW sent at ``now``) and return its CallStats."""
        if index is None:
            index = self._next_index
        self._next_index = max(self._next_index, index + 1)
        call = CallStats(index, mode=self.mode, codec=self.codec, rx_codec=self.rx_codec,
                         detector=self.detector, bpl=self.bpl, jb_factor=self.jb_factor,
                         analysis_windows=self.analysis_windows, inline_analysis=False,
                         rtt_every=self.rtt_every)
        call.on_setup_event("NEW", now)
        if self.detector is not None:
            self.detector.mark_in_run(index)     # only calls of this run can be "crossed"
        self.active[index] = call
        self.attempts += 1
        self._iv["attempts"] += 1
        return call

    def end_call(self, call: CallStats, now: float, outcome: str | None = None,
                 cause: str | None = None, cause_code: int | None = None) -> CallRecord:
        """Finish a call (see :meth:`CallStats.finish`) and file its record."""
        rec = call.finish(now, outcome, cause, cause_code)
        self.active.pop(call.index, None)
        swept = self._sweep_seen.pop(call.index, None)
        if swept is not None:            # counted below, not by the tick's sweep
            self._sweep_tx -= swept[0]
            self._sweep_rx -= swept[1]
            for key, v in swept[2].items():
                if v:
                    self._sweep_audio[key] -= v
        self.records.append(rec)
        if self.on_record is not None:
            self.on_record(rec)
        done = self._audio_done
        done["verified"] += rec.audio_verified
        done["crossed"] += rec.audio_crossed
        done["one_way"] += rec.audio_one_way
        done["silent"] += rec.audio_silent
        self._account_answer(call)
        self._account_media(call)
        self._ended_tx += call.tx_frames
        self._ended_rx += call.rx_frames
        if rec.outcome not in ("ANSWERED", "IN_PROGRESS"):
            key = cause_key(rec.outcome, rec.cause)
            self.causes[key] = self.causes.get(key, 0) + 1
            per_second = self.failures.setdefault(key, {})
            second = int(max(0.0, now - self.started))
            per_second[second] = per_second.get(second, 0) + 1
            self._iv["failed"] += 1
        return rec

    def _account_answer(self, call: CallStats) -> None:
        if call.t_answer is not None and call.t_new is not None and not call.answer_counted:
            call.answer_counted = True
            self.setup_ms.append((call.t_answer - call.t_new) * 1000.0)
            self._iv["answered"] += 1

    def _account_media(self, call: CallStats) -> None:
        exp, lost = call.expected or 0, call.lost or 0
        self._iv["expected"] += exp - call.snap_expected
        self._iv["lost"] += lost - call.snap_lost
        call.snap_expected, call.snap_lost = exp, lost

    def on_rtt(self, call: CallStats, rtt_ms: float) -> None:
        call.on_rtt(rtt_ms)

    # -- periodic --------------------------------------------------------------------------

    def tick(self, now: float) -> Snapshot:
        """Analyse pending audio, close a time-series bucket and return the live snapshot.
        Call it about once a second.  (A media loop uses ``begin_tick`` / ``sweep`` /
        ``finish_tick`` instead, which spread the per-call work over its idle moments.)"""
        self._analyze_some()
        self.begin_tick(now)
        self.sweep(math.inf)
        return self.finish_tick(now)

    def begin_tick(self, now: float) -> None:
        """Start a statistics tick at ``now``: the calls active now are visited by ``sweep``."""
        self._sweep_calls = list(self.active.values())
        self._sweep_pos = 0
        self._sweep_seen = {}
        self._sweep_up = 0
        self._sweep_setting_up = 0
        self._sweep_jit = []
        self._sweep_jit_max = None
        self._sweep_mos = []
        self._sweep_rtts = []
        self._sweep_tx = self._sweep_rx = 0
        self._sweep_audio = {"verified": 0, "crossed": 0, "one_way": 0, "silent": 0}

    @property
    def sweeping(self) -> bool:
        """A tick was begun and its sweep has calls left."""
        return self._sweep_pos < len(self._sweep_calls)

    def sweep(self, t_end: float, clock: Callable[[], float] = time.monotonic,
              chunk: int = 25) -> bool:
        """Visit the calls of the tick begun by ``begin_tick``, ``chunk`` at a time, until they
        are all done (True) or ``clock() >= t_end`` (False: call again)."""
        calls = self._sweep_calls
        active = self.active
        seen = self._sweep_seen
        jit, mos, rtts = self._sweep_jit, self._sweep_mos, self._sweep_rtts
        pos, n = self._sweep_pos, len(calls)
        while pos < n:
            for call in calls[pos:pos + chunk]:
                if active.get(call.index) is not call:
                    continue            # ended meanwhile: end_call counted it
                self._account_answer(call)
                self._account_media(call)
                flags: Mapping[str, int] = {}
                if call.outcome == "ANSWERED":
                    self._sweep_up += 1
                    if call.rx_frames > 1:
                        jit.append(call.jitter)
                        jm = call.jitter_max
                        if self._sweep_jit_max is None or jm > self._sweep_jit_max:
                            self._sweep_jit_max = jm
                    q = call.quality()[2]
                    if q is not None:
                        mos.append(q)
                    r = call.rtt_estimate()
                    if r is not None:
                        rtts.append(r)
                    flags = call.audio_flags()
                elif call.outcome is None:
                    self._sweep_setting_up += 1
                tx, rx = call.tx_frames, call.rx_frames
                seen[call.index] = (tx, rx, flags)
                self._sweep_tx += tx
                self._sweep_rx += rx
                if flags:
                    audio = self._sweep_audio
                    for key, v in flags.items():
                        if v:
                            audio[key] += v
            pos += chunk
            if pos < n and clock() >= t_end:
                self._sweep_pos = pos
                return False
        self._sweep_pos = n
        return True

    def finish_tick(self, now: float) -> Snapshot:
        """Close the tick (its sweep done): a time-series row and the live snapshot."""
        dt = now - self._last_tick
        up = self._sweep_up
        tx = self._ended_tx + self._sweep_tx
        rx = self._ended_rx + self._sweep_rx
        self.max_up = max(self.max_up, up)
        jit, mos, rtts = self._sweep_jit, self._sweep_mos, self._sweep_rtts
        cpu = self.cpu.sample()
        if cpu is not None:
            self.cpu_samples.append(cpu)
        iv = self._iv
        interval_setups = self.setup_ms[len(self.setup_ms) - iv["answered"]:] \
            if iv["answered"] else []
        row: dict[str, float | int | None] = {
            "time_s": round(now - self.started, 3),
            "calls_up": up,
            "attempts": iv["attempts"],
            "answered": iv["answered"],
            "failed": iv["failed"],
            "setup_p50_ms": percentile(interval_setups, 50),
            "jitter_p50_ms": percentile(jit, 50),
            "loss_pct": 100.0 * iv["lost"] / iv["expected"] if iv["expected"] > 0 else None,
            "mos_p50": percentile(mos, 50),
            "tx_pps": (tx - self._last_tx) / dt if dt > 0 else None,
            "rx_pps": (rx - self._last_rx) / dt if dt > 0 else None,
            "cpu_pct": cpu,
            "unix_time_s": round(self.wall_started + (now - self.started), 3),
            "attempts_total": self.attempts,
            "answered_total": len(self.setup_ms),
            "failed_total": sum(self.causes.values()),
            "rate_asked_cps": self.rate_asked_cps,
            "paused": None if self.rate_asked_cps is None else int(self.paused),
        }
        self.timeseries.append(row)
        if self.on_row is not None:
            self.on_row(row)
        audio = dict(self._audio_done)
        for k, v in self._sweep_audio.items():
            audio[k] += v
        if self.on_samples is not None:
            self.on_samples(row, {
                "setup_ms": list(interval_setups), "jitter_ms": jit, "mos": mos,
                "rtt_ms": rtts, "jitter_max_ms": self._sweep_jit_max,
                "lost": iv["lost"], "expected": iv["expected"],
                "setting_up": self._sweep_setting_up, "causes": dict(self.causes),
                "audio": audio, "dt": dt, "cpu_pct": cpu})
        snap = Snapshot(
            elapsed_s=now - self.started, calls_up=up, target=self.target,
            setting_up=self._sweep_setting_up, attempts=self.attempts,
            attempt_rate=iv["attempts"] / dt if dt > 0 else None,
            answered=len(self.setup_ms), failed=sum(self.causes.values()),
            causes=dict(self.causes),
            setup_p50_ms=percentile(self.setup_ms, 50),
            setup_p95_ms=percentile(self.setup_ms, 95),
            jitter_p50_ms=row["jitter_p50_ms"],
            jitter_max_ms=self._sweep_jit_max,
            loss_pct=row["loss_pct"],
            mos_p50=row["mos_p50"],
            mos_min=min(mos) if mos else None,
            rtt_p50_ms=percentile(rtts, 50),
            tx_pps=row["tx_pps"], rx_pps=row["rx_pps"],
            cpu_pct=cpu, audio=audio, rate_asked=self.rate_asked_cps, paused=self.paused,
        )
        self._last_tick = now
        self._last_tx, self._last_rx = tx, rx
        self._iv = self._zero_interval()
        self._sweep_calls = []
        self._sweep_pos = 0
        self._sweep_seen = {}
        return snap

    def analyze_until(self, t_end: float, clock: Callable[[], float] = time.perf_counter) -> int:
        """Analyse pending audio, one call at a time round robin, until ``clock() >= t_end`` or
        a whole round found nothing pending (a runner calls this in the slack between media
        ticks).  Returns how many calls had audio analysed; 0 means nothing is pending."""
        worked = idle = 0
        while clock() < t_end:
            rr = self._rr_calls
            if self._rr_pos >= len(rr):
                rr = self._rr_calls = list(self.active)
                self._rr_pos = 0
                if not rr:
                    break
            call = self.active.get(rr[self._rr_pos])
            self._rr_pos += 1
            if call is not None and call.analyze():
                worked += 1
            else:
                idle += 1
                if idle >= len(rr):
                    break
        return worked

    def _analyze_some(self) -> None:
        if not self.analysis_in_tick:
            return              # the runner analyses between ticks (analyze_until)
        calls = list(self.active.values())
        if not calls:
            return
        n = len(calls)
        start = self._rr % n
        budget = self.analysis_budget_s
        t_end = time.perf_counter() + budget if budget is not None else None
        done = 0
        for i in range(n):
            calls[(start + i) % n].analyze()
            done += 1
            if t_end is not None and time.perf_counter() > t_end:
                break
        self._rr = start + done

    # -- the end ---------------------------------------------------------------------------

    def all_records(self, now: float) -> list[CallRecord]:
        """Finished calls plus the calls still active at ``now`` (as IN_PROGRESS/ANSWERED)."""
        return [*self.records, *(c.record(now) for c in self.active.values())]

    def set_call_id(self, index: int, callno: int | None = None,
                    peer_callno: int | None = None, exten: str | None = None) -> None:
        """Note a call's numbers and extension for calls.csv and ``worst_calls`` (a None
        keeps what was noted before)."""
        old = self.call_ids.get(index, (None, None, None))
        self.call_ids[index] = (old[0] if callno is None else callno,
                                old[1] if peer_callno is None else peer_callno,
                                old[2] if exten is None else exten)

    def call_columns(self, rec: CallRecord) -> dict[str, Any]:
        """calls.csv's :data:`CALL_ID_FIELDS` of one record."""
        callno, peer_callno, exten = self.call_ids.get(rec.index, (None, None, None))
        start = (iso_time(self.wall_started + (rec.start_s - self.started))
                 if rec.start_s is not None else None)
        return {"start_time": start, "local": self.local, "callno": callno,
                "peer_callno": peer_callno, "exten": exten}

    def summary(self, now: float | None = None) -> dict[str, Any]:
        now = self.clock() if now is None else now
        records = self.all_records(now)
        out = summarize(
            records, duration_s=now - self.started, trunk=self.trunk,
            cpu_samples=self.cpu_samples, target=self.target, mode=self.mode, codec=self.codec,
            bpl=self.bpl, jb_factor=self.jb_factor, max_concurrent=self.max_up)
        out["started_at"] = iso_time(self.wall_started)
        out["worst_calls"] = worst_calls(records, self.call_ids)
        return out


def summary_schema() -> dict[str, Any]:
    """The JSON Schema of summary.json shipped with the package (sim/schema/)."""
    import importlib.resources

    text = (importlib.resources.files("iaxgw.sim") / "schema" / "summary.schema.json"
            ).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def iso_time(unix_s: float) -> str:
    """Seconds since the epoch as ISO 8601 UTC with milliseconds (2025-01-31T12:00:00.123Z)."""
    stamp = datetime.datetime.fromtimestamp(unix_s, datetime.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def worst_calls(records: Sequence[CallRecord],
                ids: Mapping[int, tuple[int | None, int | None, str | None]],
                n: int = WORST_N) -> dict[str, list[dict[str, Any]]]:
    """The ``n`` answered calls with the lowest MOS, the highest loss and the slowest setup
    (only calls where that figure was measured), each with what identifies it on the wire."""
    answered = [r for r in records if r.outcome == "ANSWERED"]

    def row(r: CallRecord) -> dict[str, Any]:
        callno, peer_callno, exten = ids.get(r.index, (None, None, None))
        return {"index": r.index, "callno": callno, "peer_callno": peer_callno,
                "exten": exten, "mos": r.mos, "loss_pct": r.loss_pct,
                "setup_ms": r.answer_ms, "jitter_ms": r.jitter_mean_ms}

    def pick(key: Callable[[CallRecord], float | None], lowest: bool) -> list[dict[str, Any]]:
        have = [r for r in answered if key(r) is not None]
        have.sort(key=lambda r: (key(r) or 0.0) * (1 if lowest else -1))
        return [row(r) for r in have[:n]]

    out: dict[str, list[dict[str, Any]]] = _clean({
        "by_mos": pick(lambda r: r.mos, True),
        "by_loss": pick(lambda r: r.loss_pct, False),
        "by_setup": pick(lambda r: r.answer_ms, False)})
    return out


def worst_lines(worst: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """``worst_calls`` as lines for the end of a run (nothing when no call was measured)."""
    out: list[str] = []
    for key, title, field_, unit in (("by_mos", "lowest MOS", "mos", ""),
                                     ("by_loss", "highest loss", "loss_pct", " %"),
                                     ("by_setup", "slowest setup", "setup_ms", " ms")):
        rows = worst.get(key) or []
        if not rows:
            continue
        cells = ", ".join(
            f"#{r.get('index')} callno {r.get('callno')} exten {r.get('exten')}: "
            f"{_fmt(r.get(field_))}{unit}" for r in rows)
        out.append(f"worst calls by {title}: {cells}")
    return out


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def summarize(records: Sequence[CallRecord], *, duration_s: float | None = None,
              trunk: TrunkCounters | None = None, cpu_samples: Sequence[float] = (),
              target: int | None = None, mode: str = "echo", codec: str = "ulaw",
              bpl: float = BPL_PLC, jb_factor: float = JB_FACTOR,
              max_concurrent: int | None = None) -> dict[str, Any]:
    """The ``summary.json`` dictionary for a set of call records."""
    answered = [r for r in records if r.outcome == "ANSWERED"]
    in_progress = sum(1 for r in records if r.outcome == "IN_PROGRESS")
    causes: dict[str, int] = {}
    for r in records:
        if r.outcome not in ("ANSWERED", "IN_PROGRESS"):
            key = cause_key(r.outcome, r.cause)
            causes[key] = causes.get(key, 0) + 1
    with_media = [r for r in answered if r.expected]
    expected = sum(r.expected or 0 for r in with_media)
    lost = sum(r.lost or 0 for r in with_media)
    received = [r for r in answered if r.rx_frames]
    methods = sorted({r.loss_method for r in with_media if r.loss_method})
    mos = [r.mos for r in with_media if r.mos is not None]
    rfac = [r.r_factor for r in with_media if r.r_factor is not None]
    checked = [r for r in answered if r.audio != "n/a"]
    call_s = sum(r.duration_s or 0.0 for r in answered)

    def per_s(v: int) -> float | None:
        return v / duration_s if duration_s else None

    def per_call_s(v: int) -> float | None:
        return v / call_s if call_s > 0 else None

    fed = trunk is not None and (trunk.datagrams["tx"] or trunk.datagrams["rx"])
    trunk_d: dict[str, Any] = {
        "datagrams_per_s": {d: per_s(trunk.datagrams[d]) if fed and trunk else None
                            for d in ("tx", "rx")},
        "bytes_per_call_s": {d: per_call_s(trunk.bytes[d]) if fed and trunk else None
                             for d in ("tx", "rx")},
        "datagrams": {d: trunk.datagrams[d] if fed and trunk else None for d in ("tx", "rx")},
        "by_kind": ({f"{d}_{k}": n for (d, k), n in sorted(trunk.kinds.items())}
                    if fed and trunk else {}),
        "saving": {d: trunk.saving(d) if fed and trunk else None for d in ("tx", "rx")},
        "call_seconds": call_s if answered else None,
    }
    summary: dict[str, Any] = _clean({
        "version": SUMMARY_VERSION,
        "mode": mode,
        "codec": codec,
        "duration_s": duration_s,
        "target_calls": target,
        "max_concurrent": max_concurrent,
        "attempted": len(records),
        "answered": len(answered),
        "failed": len(records) - len(answered) - in_progress,
        "in_progress": in_progress,
        "causes": causes,
        "setup_ms": percentiles(r.answer_ms for r in answered),
        "accept_ms": percentiles(r.accept_ms for r in records),
        "jitter_ms": percentiles(r.jitter_mean_ms for r in with_media),
        "rtt_ms": percentiles(r.rtt_ms if r.rtt_ms is not None else r.ping_rtt_ms
                              for r in with_media),
        "loss_pct": 100.0 * lost / expected if expected else None,
        # how loss was measured (sim/load/metrics.py): "stamp" = round trip of our own stamped
        # frames, "timestamps" = the far end's media timestamps; None: not measurable
        "loss_method": methods[0] if len(methods) == 1 else ("mixed" if methods else None),
        "loss_calls": {"measured": len(with_media), "not_measurable": len(received)
                       - sum(1 for r in received if r.expected),
                       "receive_reports": sum(1 for r in with_media
                                              if r.loss_forward_pct is not None)},
        # one way each (sim/load/metrics.py): forward from the far end's receive reports, return
        # the rest of the round trip; None unless every measured call had a meaningful report
        "loss_forward_pct": _forward_pct(with_media),
        "loss_return_pct": _return_pct(with_media, 100.0 * lost / expected if expected else None),
        "frames": {"tx": sum(r.tx_frames for r in records),
                   "rx": sum(r.rx_frames for r in records),
                   "expected": expected if with_media else None,
                   "lost": lost if with_media else None,
                   "early": sum(r.early_frames for r in records),
                   "duplicates": sum(r.duplicates for r in records),
                   "out_of_order": sum(r.out_of_order for r in records)},
        "mos": {"p50": percentile(mos, 50), "p5": percentile(mos, 5),
                "min": min(mos) if mos else None},
        "r_factor": {"p50": percentile(rfac, 50), "min": min(rfac) if rfac else None},
        "emodel": {"standard": "ITU-T G.107 simplified for G.711", "ie": IE_G711, "bpl": bpl,
                   "plc": bpl == BPL_PLC,
                   "one_way_delay": f"RTT/2 + {jb_factor:g} x mean jitter; Id = 0 without RTT"},
        "audio": {
            "checked": len(checked) if mode != "none" else None,
            "verified": sum(r.audio_verified for r in checked) if mode != "none" else None,
            "crossed": sum(r.audio_crossed for r in checked) if mode != "none" else None,
            "one_way": sum(r.audio_one_way for r in checked) if mode != "none" else None,
            "silent": sum(r.audio_silent for r in checked) if mode != "none" else None,
        },
        "trunk": trunk_d,
        "cpu_pct": float(np.mean(cpu_samples)) if len(cpu_samples) else None,
        "cpu_max_pct": max(cpu_samples) if len(cpu_samples) else None,
    })
    return summary


def _clean(obj: Any) -> Any:
    """Non-finite floats become None (JSON has no NaN); numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------


def _cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


@contextlib.contextmanager
def _atomic_text(path: Path) -> Iterator[io.StringIO]:
    """A text buffer that replaces ``path`` all at once when the block ends without error."""
    buf = io.StringIO(newline="")
    yield buf
    write_file_atomic(path, buf.getvalue().encode())


class ReportDirError(OSError):
    """``--report DIR`` cannot be written."""


def probe_report_dir(directory: Path | str) -> Path:
    """Make ``directory`` (parents too) and check that a file can be made and renamed in it,
    before a run whose report would otherwise be lost at its end."""
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / ".iaxgw-report-probe"
        write_file_atomic(probe, b"")
        probe.unlink()
    except OSError as exc:
        raise ReportDirError(f"cannot write the report into {d}: "
                             f"{exc.strerror or exc}") from None
    return d


def write_summary_json(path: Path, summary: dict[str, Any]) -> Path:
    text = json.dumps(_clean(summary), indent=2, allow_nan=False) + "\n"
    write_file_atomic(path, text.encode())
    return path


def write_calls_csv(path: Path, records: Iterable[CallRecord],
                    ids: Callable[[CallRecord], Mapping[str, Any]] | None = None) -> Path:
    """One row per call: :data:`CALL_ID_FIELDS` (from ``ids``, empty without it), then every
    :class:`CallRecord` field (README "calls.csv" says what each means)."""
    names = [*CALL_ID_FIELDS, *CallRecord.field_names()]
    with _atomic_text(path) as fh:
        w = csv.writer(fh)
        w.writerow(names)
        for rec in records:
            d: dict[str, Any] = dict.fromkeys(CALL_ID_FIELDS)
            if ids is not None:
                d.update(ids(rec))
            d.update(rec.as_dict())
            if rec.outcome == "ANSWERED" and rec.rx_frames and rec.loss_pct is None:
                # media came back but its loss cannot be measured (sim/load/metrics.py): say so,
                # where an empty cell means nothing to measure
                for n in _UNMEASURABLE_CELLS:
                    if d[n] is None:
                        d[n] = "n/a"
            w.writerow([_cell(d[n]) for n in names])
    return path


def _forward_pct(records: Sequence[CallRecord]) -> float | None:
    """The far end's loss of our frames over the calls, weighted by the frames each sent."""
    if not records or any(r.loss_forward_pct is None for r in records):
        return None
    sent = sum(r.tx_frames for r in records)
    return sum((r.loss_forward_pct or 0.0) * r.tx_frames for r in records) / sent if sent \
        else None


def _return_pct(records: Sequence[CallRecord], loss_pct: float | None) -> float | None:
    """Our loss of the far end's frames: the one-way timestamp loss itself, or the round trip
    without the forward loss."""
    if loss_pct is None or not records:
        return None
    if all(r.loss_method == "timestamps" for r in records):
        return loss_pct
    return return_loss_pct(loss_pct, _forward_pct(records))


_UNMEASURABLE_CELLS: Final = ("expected", "lost", "loss_pct", "loss_method", "r_factor", "mos")


def timeseries_cells(row: Mapping[str, Any]) -> list[Any]:
    """One time-series row as timeseries.csv's cells (:data:`TIMESERIES_COLUMNS`)."""
    out: list[Any] = []
    for name, src, _ in TIMESERIES_COLUMNS:
        v = row.get(src)
        if name == "time_utc":
            out.append(iso_time(float(v)) if v is not None and math.isfinite(v) else "")
        elif name == "unix_time_s":
            out.append(f"{v:.3f}" if v is not None and math.isfinite(v) else "")
        else:
            out.append(_cell(v))
    return out


def write_timeseries_csv(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    with _atomic_text(path) as fh:
        w = csv.writer(fh)
        w.writerow(TIMESERIES_CSV_HEADER)
        for row in rows:
            w.writerow(timeseries_cells(row))
    return path


class TimeseriesStream:
    """timeseries.csv while the run goes: the header at once, then each row as it is made,
    flushed to the kernel at once, so a reader sees the run second by second (like SIPp's
    ``-trace_stat``).  At the end the report replaces the file whole with the same rows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        head = io.StringIO(newline="")
        csv.writer(head).writerow(TIMESERIES_CSV_HEADER)
        write_file_atomic(path, head.getvalue().encode())
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)

    def write(self, row: Mapping[str, Any]) -> None:
        if self._fd is None:
            return
        buf = io.StringIO(newline="")
        csv.writer(buf).writerow(timeseries_cells(row))
        try:
            os.write(self._fd, buf.getvalue().encode())
        except OSError:
            self.close()          # a full disk ends the stream, not the run

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


@dataclass(slots=True)
class ReportFiles:
    files: list[Path]
    plots_skipped: str | None = None   #: why no PNGs were written, if so


def write_report(directory: Path | str, summary: dict[str, Any], records: Sequence[CallRecord],
                 timeseries: Sequence[dict[str, Any]], plots: bool = True,
                 call_ids: Callable[[CallRecord], Mapping[str, Any]] | None = None,
                 failures: Mapping[str, Mapping[int, int]] | None = None) -> ReportFiles:
    """Write summary.json, calls.csv, timeseries.csv and (with matplotlib) the PNG plots
    (``sim/report/plots.py``; ``failures``: ``LoadStats.failures``)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    files = [write_summary_json(d / "summary.json", summary),
             write_calls_csv(d / "calls.csv", records, call_ids),
             write_timeseries_csv(d / "timeseries.csv", timeseries)]
    skipped = None
    if plots:
        try:
            files += write_plots(d, records, timeseries, summary, failures)
        except PlotsUnavailable as exc:
            skipped = str(exc)
    return ReportFiles(files, skipped)
