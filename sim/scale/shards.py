"""A sharded load test on one machine: one process per shard, each with its own source address.

One source address gets ``maxcallnumbers`` (2,048) call numbers from Asterisk and one process
gets one core; ``iaxgw loadtest --calls N`` with more shards (``--shards``, a ``--bind`` list
or range, or calls beyond one address's budget) spreads the calls over child processes.  Each
child (``python -m iaxgw.sim.scale.shards SPEC``) is an ordinary one-process load test
(:class:`~iaxgw.sim.load.loadtest.LoadRunner`, uvloop, compiled core: its media loop is the same)
that writes one JSON line a second on its stdout -- its time-series row and the raw samples
behind the row's medians -- and, at its end, its result (every call record, its tick timing,
its datagram counters) into a private folder of the parent's.  The parent shows the merged live
screen and writes the merged report (:mod:`iaxgw.sim.scale.shard_merge`); each shard's own report
goes to ``shards/shard-K`` under ``--report``.

Lines on a child's stdin steer it: ``calls N`` changes its concurrency target (the capacity
search), ``stop`` ends it as planned; ``rate R``, ``pause``, ``resume`` and ``halt BY`` are the
operator's ``iaxgw ctl`` commands, relayed by the parent's control socket
(:mod:`iaxgw.sim.scale.shard_control`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import logging
import math
import os
import pickle
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from iaxgw.gateway.iax2.address import Addr, format_addr
from iaxgw.gateway.safefs import write_file_atomic
from iaxgw.gateway.serve.control import CommandRefused, ControlError
from iaxgw.sim.load.limits import MACHINE_WIDE, limited_by
from iaxgw.sim.load.loadtest import capacity_search, open_pcap, start_metrics
from iaxgw.sim.load.loadtest_metrics import LoadtestMetrics, ended_entry
from iaxgw.sim.load.loadtest_plan import LoadtestOptions, PlanError
from iaxgw.sim.report.report import Row, TimeseriesStream
from iaxgw.sim.scale.shard_control import ShardControl, rate_shares
from iaxgw.sim.scale.shard_merge import (
    LiveMerge,
    Second,
    ShardResult,
    merge_loadtest,
    merge_summary,
)

log = logging.getLogger("iaxgw.shards")

#: Seconds the parent waits for the shards beyond their own run deadline before killing them.
SHARD_GRACE_S = 60.0
POLL_S = 0.2
TICK_S = 0.020      # the media grid: shard k of n sends at k/n of each period


def shard_addresses(opts: LoadtestOptions, first: Addr, n: int) -> list[Addr]:
    """The source address of each of ``n`` shards: the ``--bind`` list, else ``first`` and the
    loopback addresses after it (only loopback: other addresses must be given)."""
    if opts.binds:
        return list(opts.binds[:n])
    if n == 1:
        return [first]
    try:
        ip = ipaddress.IPv4Address(first[0])
    except ValueError:
        raise PlanError(f"{n} shards need {n} source addresses: give --bind a list or a "
                        f"range (e.g. --bind {first[0]},...)") from None
    if not ip.is_loopback:
        raise PlanError(f"{n} shards need {n} source addresses: give --bind a list or a range "
                        f"of this machine's addresses (only loopback ones are taken by "
                        f"themselves after {first[0]})")
    last = ipaddress.IPv4Address(int(ip) + n - 1)
    if not last.is_loopback:
        raise PlanError(f"{n} shards from {first[0]} run out of loopback addresses")
    return [(str(ipaddress.IPv4Address(int(ip) + k)), first[1]) for k in range(n)]


def split(total: int, n: int) -> list[int]:
    """``total`` over ``n`` shards as evenly as can be (the first ones take the remainder)."""
    base, extra = divmod(total, n)
    return [base + (1 if k < extra else 0) for k in range(n)]


def shard_options(opts: LoadtestOptions, addrs: list[Addr], work: Path) -> list[LoadtestOptions]:
    """Each shard's options: its share of the calls, attempts, rate and the target's auth slots
    (``maxauthreq`` counts per user at the target, and every shard is the same user), its own
    address, its own report folder under ``--report``, its own capture in ``work`` with
    ``--pcap`` (merged into the one file at the end); no control socket or metrics server of
    its own (the parent's ``--control`` steers them all)."""
    n = len(addrs)
    calls, attempts = split(opts.calls, n), split(opts.attempts, n)
    pending = max(1, opts.max_pending // n)
    peaks = split(opts.max_calls, n) if opts.max_calls else [None] * n
    out = []
    for k, addr in enumerate(addrs):
        report = (Path(opts.report_dir) / "shards" / f"shard-{k}"
                  if opts.report_dir is not None else None)
        pcap = work / f"shard-{k}.pcap" if opts.pcap is not None else None
        out.append(dataclasses.replace(
            opts, calls=max(1, calls[k]), total=max(1, attempts[k]), pcap=pcap,
            rate=opts.cps * max(1, calls[k]) / opts.calls, bind=addr, binds=None, shards=1,
            max_pending=pending, report_dir=report, live=False, quiet=True, json_out=False,
            warnings=[], extens=opts.exten_list(), step=None, max_calls=peaks[k],
            stop_when=None, tick_phase=TICK_S * k / n, control=None, metrics_addr=None))
    if opts.max_pending < n:
        opts.warnings.append(f"--max-pending {opts.max_pending} is below the {n} shards: each "
                             "shard keeps one setup in flight (the target counts them per user)")
    return out


# ---------------------------------------------------------------------------------------------
# The parent
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Shard:
    index: int
    local: Addr
    opts: LoadtestOptions
    spec: Path
    result_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    #: held while a line is written: the capacity search and the control socket's thread
    #: both write
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return format_addr(self.local)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send(self, line: str) -> None:
        """A control line to the shard (``calls N``); a shard that is gone is left alone."""
        p = self.proc
        if p is None or p.stdin is None or p.poll() is not None:
            return
        with self.lock, contextlib.suppress(OSError, ValueError):
            p.stdin.write(line.encode() + b"\n")
            p.stdin.flush()


def capacity_lines(search: Any, row: Row, samples: dict[str, Any], n: int) -> list[str] | None:
    """A merged second for the capacity search; the line each of ``n`` shards gets (its share
    of a new step, or ``stop``), or None when nothing changes."""
    action = search.second(row, samples)
    if action is None:
        return None
    if action.stop:
        return ["stop"] * n
    if action.calls is None:
        return None
    return [f"calls {max(1, c)}" for c in split(action.calls, n)]


def start_shard(sh: Shard, *, impair: Any = None, config: Any = None,
                ended: bool = False) -> IO[bytes]:
    """Start a shard's process (its spec in our private folder); returns its stdout, where it
    writes a JSON line a second (``ended``: with the calls that ended in it)."""
    write_file_atomic(sh.spec, pickle.dumps({"opts": sh.opts, "impair": impair,
                                             "config": config, "ended": ended,
                                             "result": str(sh.result_path)}), 0o600)
    with sh.log_path.open("wb") as log:
        # a session of its own: a Ctrl-C reaches the parent only, which passes it on once
        sh.proc = subprocess.Popen([sys.executable, "-m", "iaxgw.sim.scale.shards", str(sh.spec)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                   start_new_session=True)
    assert sh.proc.stdout is not None
    return sh.proc.stdout


def _read_lines(shard: int, stream: IO[bytes], out: queue.Queue[tuple[int, Any]]) -> None:
    for raw in stream:
        with contextlib.suppress(ValueError):
            out.put((shard, json.loads(raw)))
    out.put((shard, None))


class ShardedRun:
    """Starts the shards, merges their seconds on the way and their results at the end."""

    def __init__(self, opts: LoadtestOptions, *, impair: Any = None, config: Any = None,
                 screen: Any = None, on_second: Callable[[Row, dict[str, Any]], None]
                 | None = None) -> None:
        from iaxgw.sim.load.loadtest import load_target

        self.opts = opts
        self.impair = impair
        self.screen = screen
        self.on_second = on_second
        self.config = config
        first = load_target(dataclasses.replace(opts, warnings=[]), config).bind
        n = opts.shard_count()
        self.addrs = shard_addresses(opts, first, n)
        self.pcap = open_pcap(opts.pcap) if opts.pcap is not None else None
        self.work = Path(tempfile.mkdtemp(prefix="iaxgw-shards-"))    # 0700, ours
        self.shards = [Shard(k, a, o, self.work / f"spec-{k}.pickle",
                             self.work / f"result-{k}.pickle", self.work / f"shard-{k}.log")
                       for k, (a, o) in enumerate(zip(self.addrs, shard_options(
                           opts, self.addrs, self.work), strict=True))]
        self.merge = LiveMerge(shards=n, target=opts.calls)
        #: ``--metrics-addr``: the parent serves the merged figures (the shards serve none)
        self.prom = LoadtestMetrics(opts.calls) if opts.metrics_addr is not None else None
        self.capacity = capacity_search(opts)
        if self.capacity is not None:
            self.on_second = self._capacity_second
        self.lines: queue.Queue[tuple[int, Any]] = queue.Queue()
        self.stop_signal: int | None = None
        self.lost: dict[int, str] = {}
        self.last_row: Row | None = None
        self.control: ShardControl | None = None
        if opts.control:
            self.control = ShardControl(opts.control, self.shards,
                                        rate_shares([sh.opts.calls for sh in self.shards]),
                                        opts.cps, lambda: self.last_row)

    def start(self) -> None:
        for sh in self.shards:
            stdout = start_shard(sh, impair=self.impair, config=self.config,
                                 ended=self.prom is not None)
            threading.Thread(target=_read_lines, args=(sh.index, stdout, self.lines),
                             daemon=True, name=f"shard-{sh.index}-reader").start()

    def deadline(self) -> float:
        from iaxgw.sim.load.loadtest import LoadRunner, load_target

        o = self.shards[0].opts
        runner = LoadRunner(o, load_target(dataclasses.replace(o, warnings=[]), self.config))
        return runner.run_deadline() + SHARD_GRACE_S

    def _capacity_second(self, row: Row, samples: dict[str, Any]) -> None:
        """The capacity search judges the merged seconds and steers every shard."""
        assert self.capacity is not None
        lines = capacity_lines(self.capacity, row, samples, len(self.shards))
        self.merge.target = self.capacity.calls
        for sh, line in zip(self.shards, lines or [], strict=False):
            sh.send(line)

    def _forward(self, signum: int, _frame: Any = None) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
        for sh in self.shards:
            if sh.proc is not None and sh.proc.poll() is None:
                with contextlib.suppress(OSError):
                    sh.proc.send_signal(signum)

    def pump(self, stream: TimeseriesStream | None) -> None:
        """Merge every second the shards sent so far; update the screen."""
        while True:
            try:
                shard, msg = self.lines.get(timeout=POLL_S)
            except queue.Empty:
                return
            if msg is not None and self.prom is not None:
                for entry in msg.get("ended") or (msg.get("samples") or {}).get("ended") or []:
                    self.prom.on_ended(entry)
            if msg is not None and "row" not in msg:
                continue            # a shard's last ended calls only
            snaps = (self.merge.shard_ended(shard) if msg is None
                     else self.merge.add(shard, msg.get("row") or {}, msg.get("samples") or {}))
            self._show(snaps, stream)

    def _show(self, seconds: list[Second], stream: TimeseriesStream | None) -> None:
        for sec in seconds:
            self.last_row = sec.row
            if stream is not None:
                stream.write(sec.row)
            if self.on_second is not None:
                self.on_second(sec.row, sec.samples)
            if self.prom is not None:
                self.prom.on_merged(sec.snapshot, sec.samples.get("setup_ms") or [])
            if self.screen is not None:
                with contextlib.suppress(Exception):
                    self.screen.update(sec.snapshot)

    def run(self) -> ShardedOutcome:
        if self.control is not None:        # first: a socket we cannot open stops the run here
            try:
                self.control.start()
            except ControlError as exc:
                from iaxgw.sim.load.loadtest import CannotRunError

                raise CannotRunError(f"--control: {exc}") from None
        self._start_metrics()
        stream = None
        if self.opts.report_dir is not None:
            with contextlib.suppress(OSError):
                stream = TimeseriesStream(Path(self.opts.report_dir) / "timeseries.csv")
        old = {s: signal.signal(s, self._forward) for s in (signal.SIGINT, signal.SIGTERM)} \
            if threading.current_thread() is threading.main_thread() else {}
        try:
            if self.screen is not None:
                self.screen.start()
            end = time.monotonic() + self.deadline()
            self.start()
            while any(sh.proc is not None and sh.proc.poll() is None for sh in self.shards):
                self.pump(stream)
                if time.monotonic() > end:
                    self._kill_all("the run deadline passed")
            self.pump(stream)
            self._show(self.merge.flush(), stream)
        finally:
            self._kill_all("the parent stopped")
            if self.control is not None:
                self.control.close()
            if self.prom is not None:
                self.prom.stop()
            for s, h in old.items():
                signal.signal(s, h)
            if self.screen is not None:
                self.screen.stop()
            if stream is not None:
                stream.close()
        return self._collect()

    def _start_metrics(self) -> None:
        """``--metrics-addr``: the merged metrics from now on, and where (stderr); an address
        that cannot be bound stops the run before any shard starts (exit 3)."""
        def close_control() -> None:
            if self.control is not None:
                self.control.close()

        start_metrics(self.prom, self.opts.metrics_addr, close_control,
                      f" (merged over {len(self.shards)} shards)")

    def _kill_all(self, why: str) -> None:
        for sh in self.shards:
            p = sh.proc
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
                self.lost.setdefault(sh.index, f"killed: {why}")

    def _collect(self) -> ShardedOutcome:
        results: list[ShardResult] = []
        for sh in self.shards:
            rc = sh.proc.returncode if sh.proc is not None else None
            try:
                res = pickle.loads(sh.result_path.read_bytes())
            except (OSError, pickle.UnpicklingError, EOFError) as exc:
                self.lost.setdefault(sh.index, f"exited with {rc} and no result ({exc}): "
                                               f"{_tail(sh.log_path)}")
                continue
            res.index, res.local = sh.index, sh.name
            results.append(res)
        self._merge_pcap()
        with contextlib.suppress(OSError):
            for f in self.work.iterdir():
                f.unlink()
            self.work.rmdir()
        return ShardedOutcome(results=results, lost=self.lost, rows=self.merge.merged,
                              samples=self.merge.merged_samples, stop_signal=self.stop_signal,
                              shards=self.shards, capacity=self.capacity.result()
                              if self.capacity is not None else None,
                              control=self.control.control if self.control is not None else None)


    def _merge_pcap(self) -> None:
        """--pcap: the shards' captures, merged in time order into the one file (a lost shard's
        capture up to where it stopped)."""
        out = self.pcap
        if out is None:
            return
        parts = [p for p in (sh.opts.pcap for sh in self.shards) if p is not None and p.exists()]
        try:
            out.merge(parts)
        except (OSError, ValueError) as exc:
            log.warning("--pcap %s: the shards' captures could not be merged: %s",
                        self.opts.pcap, exc)
        finally:
            out.close()


@dataclasses.dataclass(slots=True)
class ShardedOutcome:
    results: list[ShardResult]
    lost: dict[int, str]
    rows: list[Row]
    samples: list[dict[str, Any]]
    stop_signal: int | None
    shards: list[Shard]
    capacity: dict[str, Any] | None = None
    control: Any = None         # the parent's RunControl (--control), else None


def _tail(path: Path, lines: int = 6) -> str:
    with contextlib.suppress(OSError):
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def sharded_result(opts: LoadtestOptions, outcome: ShardedOutcome) -> Any:
    """The merged :class:`~iaxgw.sim.load.loadtest.LoadtestResult` of a sharded run."""
    from iaxgw.sim.load.loadtest import (
        EXIT_CANNOT_RUN,
        EXIT_FAIL,
        EXIT_PASS,
        EXIT_SIGINT,
        EXIT_SIGTERM,
        LoadtestResult,
    )

    results = outcome.results
    mode = "echo" if opts.media == "tone" else "none"
    summary, records, columns = merge_summary(results, outcome.rows, target=opts.calls,
                                              mode=mode, codec=opts.codec)
    base = dict((results[0].summary.get("loadtest") or {}) if results else {})
    base.update(calls=opts.calls, total=opts.attempts, rate_cps=opts.cps,
                max_failed=opts.max_failed)
    lt = merge_loadtest(results, base) if results else base
    failed = int(summary.get("failed") or 0) + int(lt.get("dropped") or 0)
    lt["failed_total"] = failed
    for k, why in sorted(outcome.lost.items()):
        summary["shards"].append({"index": k, "local": outcome.shards[k].name,
                                  "calls": outcome.shards[k].opts.calls, "lost": why})
    summary["limited_by"] = limited_by(merged_limits(results))
    if outcome.capacity is not None:
        summary["capacity"] = outcome.capacity
    if outcome.control is not None:
        summary["control"] = outcome.control.summary()
        summary.setdefault("targets", {}).setdefault("rate", {})["asked_history"] = \
            outcome.control.history()
    reasons = merged_reasons(opts, summary, lt, failed, outcome.lost)
    exit_code = EXIT_FAIL if reasons else EXIT_PASS
    if not results or all(r.exit_code == EXIT_CANNOT_RUN for r in results):
        exit_code = EXIT_CANNOT_RUN        # no shard ran (address taken, target silent)
    if outcome.stop_signal is not None:
        exit_code = EXIT_SIGINT if outcome.stop_signal == signal.SIGINT else EXIT_SIGTERM
        reasons.insert(0, f"interrupted by {signal.Signals(outcome.stop_signal).name}")
    lt["local"] = ",".join(sh.name for sh in outcome.shards)
    lt.update(exit_code=exit_code, fail_reasons=reasons, degraded=bool(outcome.lost),
              notes=[*opts.warnings, *lt.get("notes", [])])
    summary["loadtest"] = lt
    return LoadtestResult(summary=summary, exit_code=exit_code, records=records,
                          timeseries=list(outcome.rows),
                          call_ids=lambda rec: columns.get(rec.index, {}))


def merged_reasons(opts: LoadtestOptions, summary: dict[str, Any], lt: dict[str, Any],
                   failed: int, lost: dict[int, str]) -> list[str]:
    """Why a sharded run fails, judged on the merged figures (as one process judges its own);
    a lost shard first."""
    from iaxgw.sim.load.loadtest import fail_reasons

    out = [f"shard {k} lost ({why}): its calls are the generator's loss, not the target's"
           for k, why in sorted(lost.items())]
    deadline = "a shard's run deadline was hit" if lt.get("deadline_hit") else None
    return out + fail_reasons(opts, summary, failed, bool(lt.get("audio_ok", True)), deadline)


def run_sharded(opts: LoadtestOptions, *, impair: Any = None, config: Any = None,
                screen: Any = None) -> Any:
    """A sharded load test; the merged result (no output printed)."""
    run = ShardedRun(opts, impair=impair, config=config, screen=screen)
    return sharded_result(opts, run.run())


def run_sharded_loadtest(opts: LoadtestOptions, *, impair: Any = None,
                         config: Any = None) -> Any:
    """The whole sharded ``iaxgw loadtest``: run, print, write the merged report."""
    from iaxgw.sim.load.loadtest import check_report_dir, finish_output, make_screen

    check_report_dir(opts)
    result = run_sharded(opts, impair=impair, config=config, screen=make_screen(opts))
    finish_output(opts, result)
    return result


# ---------------------------------------------------------------------------------------------
# The child
# ---------------------------------------------------------------------------------------------


class _Emitter:
    """A shard's seconds as JSON lines on its stdout, for the parent; with ``ended`` (the
    parent serves ``--metrics-addr``) each second also carries the calls that ended in it, and
    :meth:`flush_ended` sends those of the run's last moments."""

    def __init__(self, out: IO[str], ended: bool = False) -> None:
        self.out = out
        self.ended: list[list[Any]] | None = [] if ended else None

    def on_record(self, rec: Any) -> None:
        if self.ended is not None:
            self.ended.append(ended_entry(rec))

    def __call__(self, row: Row, samples: dict[str, Any]) -> None:
        clean = {k: v for k, v in samples.items()}
        if self.ended is not None:
            clean["ended"], self.ended = self.ended, []
        self._write({"row": row, "samples": clean})

    def flush_ended(self) -> None:
        if self.ended:
            self._write({"ended": self.ended})
            self.ended = []

    def _write(self, msg: dict[str, Any]) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.out.write(json.dumps(msg, default=_finite) + "\n")
            self.out.flush()


def _finite(v: Any) -> Any:
    f = float(v)
    return f if math.isfinite(f) else None


def _control(runner: Any) -> Callable[[], None]:
    """Reads the parent's lines from stdin (see the module docstring); each takes effect at
    once."""
    buf = bytearray()

    def on_input() -> None:
        try:
            data = os.read(sys.stdin.fileno(), 4096)
        except OSError:
            data = b""
        if not data:
            with contextlib.suppress(Exception):
                runner.loop.remove_reader(sys.stdin.fileno())
            return
        buf.extend(data)
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            word, _, value = line.decode(errors="replace").partition(" ")
            try:
                _steer(runner, word, value.strip())
            except (ValueError, CommandRefused) as exc:
                log.warning("shard: control line %r ignored: %s", line[:80], exc)
    return on_input


def _steer(runner: Any, word: str, value: str) -> None:
    """One line from the parent onto ``runner``; ValueError when it is not one we know."""
    if word == "calls" and value.isdigit():
        runner.set_concurrency(int(value))
    elif word == "stop":
        runner.finish_early("the capacity search ended")
    elif word == "rate":
        runner.control.set_rate(float(value), "ctl")
    elif word == "pause":
        runner.control.pause("ctl")
    elif word == "resume":
        runner.control.resume("ctl")
    elif word == "halt":
        runner.control.stop(value if value in ("ctl", "key") else "ctl")
    else:
        raise ValueError(f"unknown control line {word!r}")


async def _run_child(spec: dict[str, Any]) -> tuple[Any, Any]:
    import asyncio

    from iaxgw.sim.load.loadtest import LoadRunner, load_target
    from iaxgw.sim.load.loadtest_plan import lossy_caller_settings

    opts: LoadtestOptions = spec["opts"]
    impair = spec.get("impair")
    if impair is not None and getattr(impair, "loss", 0.0) > 0:
        opts.warnings.extend(lossy_caller_settings(opts))
    runner = LoadRunner(opts, load_target(opts, spec.get("config")), impair=impair)
    emitter = _Emitter(sys.stdout, ended=bool(spec.get("ended")))
    runner.stats.on_samples = emitter
    if emitter.ended is not None:
        runner.stats.on_record = emitter.on_record
    loop = asyncio.get_running_loop()
    runner.loop = loop
    with contextlib.suppress(OSError, ValueError, NotImplementedError):
        loop.add_reader(sys.stdin.fileno(), _control(runner))
    return runner, await runner.run()


def _die_with_parent() -> None:
    """A shard whose parent died (killed with SIGKILL) gets SIGTERM: it ends its calls and
    stops, never left placing calls on its own (Linux PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))


def child_main(spec_path: str) -> int:
    """``python -m iaxgw.sim.scale.shards SPEC``: run one shard, hand its result back."""
    import asyncio

    from iaxgw.sim.load.loadtest import (
        LoadtestError,
        _new_loop,
        check_report_dir,
        write_report_files,
    )

    _die_with_parent()
    spec = pickle.loads(Path(spec_path).read_bytes())
    opts: LoadtestOptions = spec["opts"]
    try:
        check_report_dir(opts)
        with asyncio.Runner(loop_factory=_new_loop) as r:
            runner, result = r.run(_run_child(spec))
        if isinstance(runner.stats.on_samples, _Emitter):
            runner.stats.on_samples.flush_ended()
    except LoadtestError as exc:
        print(f"shard {opts.bind}: {exc}", file=sys.stderr)
        return 3
    for s in (signal.SIGINT, signal.SIGTERM):    # the run is over: its result is all we do
        signal.signal(s, signal.SIG_IGN)
    local = format_addr(opts.bind) if opts.bind else "?"
    res = ShardResult(index=0, local=local, calls=opts.calls, summary=result.summary,
                      records=list(result.records),
                      call_columns={rec.index: runner.stats.call_columns(rec)
                                    for rec in result.records},
                      late_ms=list(runner.late_ms), work_ms=list(runner.work_ms),
                      trunk=runner.stats.trunk, cpu_samples=list(runner.stats.cpu_samples),
                      exit_code=result.exit_code)
    write_file_atomic(Path(spec["result"]), pickle.dumps(res), 0o600)
    write_report_files(opts, result)
    return int(result.exit_code)


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1]))


def merged_limits(results: Sequence[Any]) -> list[str]:
    """The shards' ``limited_by`` reasons, each named by its shard; a reason about the whole
    machine (the kernel's drop count, the same in every shard) said once."""
    limits: list[str] = []
    for r in results:
        for why in (r.summary.get("limited_by") or {}).get("reasons") or []:
            line = why if why.startswith(MACHINE_WIDE) else f"shard {r.index} ({r.local}): {why}"
            if line not in limits:
                limits.append(line)
    return limits
