"""Many machines: a load test spread over workers with Locust's distributed runner.

``pip install 'iaxgw[cluster]'``.  Only ``iaxgw loadtest --master`` and ``iaxgw worker`` import
this module (and Locust, which patches the standard library for gevent when imported); a plain
``iaxgw loadtest`` never does.

Locust carries the messages (master/worker over ZeroMQ, its heartbeats tell a dead worker);
the calls never run under gevent.  Each worker starts one ordinary iaxgw shard as a child
process (:mod:`iaxgw.sim.scale.shards`: uvloop, compiled core) from its own ``--bind`` address, and
exchanges with the master only what a shard writes on its stdout -- one JSON line a second, the
row and the raw samples behind its medians -- and, at the end, the shard's result as plain JSON
(nothing received from the network is unpickled).  The master sends each worker its share of the
options and the config, shows the merged live screen and writes the merged report, exactly as a
sharded run on one machine (:mod:`iaxgw.sim.scale.shard_merge`).  A worker that stops sending
heartbeats is lost: its calls are counted as the generator's loss, the run is marked degraded.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gevent
from locust import User, task
from locust.env import Environment
from locust.runners import STATE_MISSING

from iaxgw.gateway.iax2.address import Addr, format_addr
from iaxgw.sim.load.loadtest_plan import (
    LoadtestOptions,
    PlanError,
    options_from_json,
    options_to_json,
)
from iaxgw.sim.report.report import Row
from iaxgw.sim.scale.config_bundle import config_bundle, unpack_config_bundle
from iaxgw.sim.scale.shard_merge import (
    LiveMerge,
    Second,
    ShardResult,
    result_from_json,
    result_to_json,
)
from iaxgw.sim.scale.shards import (
    Shard,
    ShardedOutcome,
    capacity_lines,
    shard_options,
    sharded_result,
    start_shard,
)

DEFAULT_PORT = 5557                # Locust's own default master port
MSG_HELLO = "iaxgw_hello"          # worker -> master: its source address
MSG_START = "iaxgw_start"          # master -> worker: its shard's options and config
MSG_SECOND = "iaxgw_second"        # worker -> master: a second's row and samples
MSG_RESULT = "iaxgw_result"        # worker -> master: the shard's result (JSON)
MSG_CONTROL = "iaxgw_control"      # master -> worker: a line for the shard (calls N, stop)
POLL_S = 0.2
WORKERS_WAIT_S = 120.0
RESULT_WAIT_S = 60.0               # after the last second, for the results to come
START_WAIT_S = 2 * WORKERS_WAIT_S  # a worker no master gives a shard to gives up


class IaxgwShard(User):
    """Locust's runners need a user class; none is ever spawned (the calls run in the
    workers' shard processes)."""

    @task
    def nothing(self) -> None:        # pragma: no cover - never spawned
        """Never runs."""


def _environment() -> Environment:
    return Environment(user_classes=[IaxgwShard])


# ---------------------------------------------------------------------------------------------
# The master
# ---------------------------------------------------------------------------------------------


class ClusterMaster:
    """``iaxgw loadtest --master``: waits for the workers, gives each a shard, merges."""

    def __init__(self, opts: LoadtestOptions, expect: int, bind: Addr, *,
                 screen: Any = None) -> None:
        from iaxgw.sim.load.loadtest import capacity_search

        self.opts = opts
        self.expect = expect
        self.screen = screen
        self.env = _environment()
        self.runner = self.env.create_master_runner(master_bind_host=bind[0],
                                                    master_bind_port=bind[1])
        self.runner.register_message(MSG_HELLO, self._hello)
        self.runner.register_message(MSG_SECOND, self._second)
        self.runner.register_message(MSG_RESULT, self._result)
        self.hellos: dict[str, Addr] = {}
        self.client_of: dict[int, str] = {}
        self.shards: list[Shard] = []
        self.results: dict[int, ShardResult] = {}
        self.lost: dict[int, str] = {}
        self.merge = LiveMerge(shards=expect, target=opts.calls)
        self.capacity = capacity_search(opts)
        self.config_files = config_bundle(self.opts.config_dir)

    # -- messages -------------------------------------------------------------------------

    def _hello(self, environment: Any = None, msg: Any = None, **_kw: Any) -> None:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            host, port = msg.data["bind"]
            self.hellos.setdefault(str(msg.node_id), (str(host), int(port)))

    def _shard_of(self, node_id: str) -> int | None:
        return next((k for k, c in self.client_of.items() if c == node_id), None)

    def _second(self, environment: Any = None, msg: Any = None, **_kw: Any) -> None:
        k = self._shard_of(str(msg.node_id))
        if k is None or k in self.lost or not isinstance(msg.data, dict):
            return
        self._show(self.merge.add(k, msg.data.get("row") or {}, msg.data.get("samples") or {}))

    def _result(self, environment: Any = None, msg: Any = None, **_kw: Any) -> None:
        k = self._shard_of(str(msg.node_id))
        if k is None or k in self.lost or k in self.results:
            return
        try:
            res = result_from_json(msg.data["result"])
        except (KeyError, TypeError, ValueError) as exc:
            self.lost[k] = f"its result was malformed ({exc})"
        else:
            res.index, res.local = k, self.shards[k].name
            self.results[k] = res
        self._show(self.merge.shard_ended(k))

    def _show(self, seconds: list[Second]) -> None:
        for sec in seconds:
            if self.stream is not None:
                self.stream.write(sec.row)
            if self.capacity is not None:
                self._steer(sec.row, sec.samples)
            if self.screen is not None:
                with contextlib.suppress(Exception):
                    self.screen.update(sec.snapshot)

    def _steer(self, row: Row, samples: dict[str, Any]) -> None:
        assert self.capacity is not None
        lines = capacity_lines(self.capacity, row, samples, len(self.shards))
        self.merge.target = self.capacity.calls
        if lines:
            self._control_all(lines)

    def _control_all(self, lines: list[str]) -> None:
        for k, line in enumerate(lines):
            if k in self.client_of and k not in self.lost:
                self.runner.send_message(MSG_CONTROL, {"line": line},
                                         client_id=self.client_of[k])

    # -- the run --------------------------------------------------------------------------

    def wait_for_workers(self) -> None:
        end = time.monotonic() + WORKERS_WAIT_S
        while len(self.hellos) < self.expect:
            if time.monotonic() > end:
                raise PlanError(f"--expect-workers {self.expect}: only {len(self.hellos)} "
                                f"worker(s) said hello within {WORKERS_WAIT_S:.0f} s")
            gevent.sleep(POLL_S)

    def start_workers(self) -> None:
        ids = sorted(self.hellos)[: self.expect]
        addrs = [self.hellos[c] for c in ids]
        if len(set(addrs)) != len(addrs):
            raise PlanError(f"two workers bind the same address: {addrs}")
        parts = shard_options(self.opts, addrs, Path(tempfile.gettempdir()))
        for k, (cid, addr, o) in enumerate(zip(ids, addrs, parts, strict=True)):
            o.report_dir = o.pcap = None
            self.client_of[k] = cid
            self.shards.append(Shard(k, addr, o, Path(), Path(), Path()))
            self.runner.send_message(MSG_START, {"shard": k, "opts": options_to_json(o),
                                                 "config_files": self.config_files},
                                     client_id=cid)

    def _check_missing(self) -> None:
        for k, cid in self.client_of.items():
            if k in self.results or k in self.lost:
                continue
            node = self.runner.clients.get(cid)
            if node is None or node.state == STATE_MISSING:
                self.lost[k] = (f"worker {self.shards[k].name} stopped sending heartbeats "
                                "(died or unreachable)")
                self._show(self.merge.shard_ended(k))

    def run(self, deadline_s: float) -> ShardedOutcome:
        from iaxgw.sim.report.report import TimeseriesStream

        self.stream: Any = None
        if self.opts.report_dir is not None:
            with contextlib.suppress(OSError):
                self.stream = TimeseriesStream(Path(self.opts.report_dir) / "timeseries.csv")
        try:
            self.wait_for_workers()
            self.start_workers()
            if self.screen is not None:
                self.screen.start()
            end = time.monotonic() + deadline_s
            while len(self.results) + len(self.lost) < len(self.shards):
                gevent.sleep(POLL_S)
                self._check_missing()
                if time.monotonic() > end:
                    for k in range(len(self.shards)):
                        if k not in self.results:
                            self.lost.setdefault(k, "no result before the run deadline")
            self._show(self.merge.flush())
        finally:
            if self.screen is not None:
                self.screen.stop()
            if self.stream is not None:
                self.stream.close()
            with contextlib.suppress(Exception):
                self.runner.quit()
        return ShardedOutcome(results=[self.results[k] for k in sorted(self.results)],
                              lost=self.lost, rows=self.merge.merged,
                              samples=self.merge.merged_samples, stop_signal=None,
                              shards=self.shards,
                              capacity=self.capacity.result() if self.capacity else None)


def run_master(opts: LoadtestOptions, expect: int, bind: Addr) -> Any:
    """``iaxgw loadtest --master``: the whole run; prints and writes the merged report."""
    from iaxgw.sim.load.loadtest import (
        LoadRunner,
        check_report_dir,
        finish_output,
        load_target,
        make_screen,
    )

    check_report_dir(opts)
    share = shard_options(opts, [("0.0.0.0", 0)] * expect, Path(tempfile.gettempdir()))[0]
    probe = LoadRunner(share, load_target(share))
    master = ClusterMaster(opts, expect, bind, screen=make_screen(opts))
    outcome = master.run(probe.run_deadline() + WORKERS_WAIT_S + RESULT_WAIT_S)
    result = sharded_result(opts, outcome)
    result.summary["loadtest"]["cluster"] = {"master": format_addr(bind),
                                             "workers": expect}
    finish_output(opts, result)
    return result


# ---------------------------------------------------------------------------------------------
# The worker
# ---------------------------------------------------------------------------------------------


class ClusterWorker:
    """``iaxgw worker``: one shard from ``bind``, driven by the master."""

    def __init__(self, master: Addr, bind: Addr) -> None:
        self.bind = bind
        self.env = _environment()
        self.runner = self.env.create_worker_runner(master[0], master[1])
        self.runner.register_message(MSG_START, self._start)
        self.runner.register_message(MSG_CONTROL, self._control)
        self.shard: Shard | None = None
        self.done = False
        self.work = Path(tempfile.mkdtemp(prefix="iaxgw-worker-"))      # 0700, ours

    def hello(self) -> None:
        self.runner.send_message(MSG_HELLO, {"bind": list(self.bind)})

    def _start(self, environment: Any = None, msg: Any = None, **_kw: Any) -> None:
        if self.shard is not None:
            return
        gevent.spawn(self._run_shard, dict(msg.data))

    def _control(self, environment: Any = None, msg: Any = None, **_kw: Any) -> None:
        line = str((msg.data or {}).get("line", ""))
        if self.shard is not None and line.split(" ")[0] in ("calls", "stop"):
            self.shard.send(line)

    def _options(self, data: dict[str, Any]) -> LoadtestOptions:
        opts = options_from_json(data["opts"])
        opts.bind, opts.binds, opts.report_dir = self.bind, None, None
        files = data.get("config_files")
        if files is not None:
            # the master's directory name is the site's name (--site defaults to it)
            site = Path(str(opts.config_dir)).name if opts.config_dir is not None else "config"
            fresh = Path(tempfile.mkdtemp(prefix="config-", dir=self.work))
            opts.config_dir = unpack_config_bundle(files, fresh / site)
        return opts

    def _run_shard(self, data: dict[str, Any]) -> None:
        k = int(data["shard"])
        try:
            opts = self._options(data)
        except (KeyError, TypeError, ValueError, OSError) as exc:
            self.runner.send_message(MSG_RESULT, {"error": f"bad options: {exc}"})
            self.done = True
            return
        sh = self.shard = Shard(k, self.bind, opts, self.work / "spec.pickle",
                                self.work / "result.pickle", self.work / "shard.log")
        for raw in start_shard(sh):
            with contextlib.suppress(ValueError):
                self.runner.send_message(MSG_SECOND, json.loads(raw))
        assert sh.proc is not None
        sh.proc.wait()
        import pickle

        try:        # our own child's result, from our own private folder
            res = pickle.loads(sh.result_path.read_bytes())
            self.runner.send_message(MSG_RESULT, {"result": result_to_json(res)})
        except (OSError, pickle.UnpicklingError, EOFError) as exc:
            self.runner.send_message(MSG_RESULT, {"error": f"the shard left no result: {exc}"})
        self.done = True

    def run(self, deadline_s: float = 24 * 3600.0) -> int:
        """Until the shard's result is sent (0), or no master gave us a shard in time (3)."""
        self.hello()
        start = time.monotonic()
        end = start + deadline_s
        while not self.done and time.monotonic() < end:
            gevent.sleep(POLL_S)
            if self.shard is None and time.monotonic() - start > START_WAIT_S:
                print(f"iaxgw worker: no shard from the master within {START_WAIT_S:.0f} s",
                      file=sys.stderr)
                break
        gevent.sleep(1.0)           # the result's message leaves before we quit
        with contextlib.suppress(Exception):
            self.runner.quit()
        return 0 if self.done else 3


def run_worker(master: Addr, bind: Addr) -> int:
    return ClusterWorker(master, bind).run()
