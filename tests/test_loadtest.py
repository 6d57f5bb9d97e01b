"""``iaxgw loadtest`` against a small in-test echo peer on loopback (and the real Asterisk lab).

The peer is a real :class:`~iaxgw.gateway.iax2.protocol.Endpoint` in its own thread and event loop,
configured from the embedded seed (office-b) with its addresses moved to a random 127.0.0.x pair,
so tests never collide with a lab or ``iaxgw serve`` on 127.0.0.10/20.  Its dialplan is tiny:
x00 answers and echoes every voice payload at once, x02 busy, x03 congestion, x09 never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gc
import itertools
import json
import os
import random
import threading
import time
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from iaxgw.gateway.conf.config import default_config_dir, load_iax_conf
from iaxgw.gateway.driver.server import open_endpoint
from iaxgw.gateway.iax2 import events as ev
from iaxgw.sim.load.loadtest import run_loadtest, run_loadtest_async
from iaxgw.sim.load.loadtest_plan import (
    CallnoBudget,
    LoadtestOptions,
    PlanError,
    parse_duration,
    parse_extens,
    plan_calls,
)
from iaxgw.sim.load.metrics import CallStats

pytestmark = pytest.mark.timeout(120)


# --- an echo peer in a thread ------------------------------------------------------------------


def _site_dir(tmp: Path, site: str, a_ip: str, b_ip: str, secret: str | None = None) -> Path:
    """The embedded config of ``site`` with office-a at ``a_ip`` and office-b at ``b_ip``."""
    src = default_config_dir(site)
    dst = tmp / site
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file():
            text = f.read_text().replace("127.0.0.10", a_ip).replace("127.0.0.20", b_ip)
            if secret is not None:
                text = text.replace("a-strong-shared-secret", secret)
            (dst / f.name).write_text(text)
    return dst


class EchoPeer:
    """office-b answering in its own thread: echo / busy / congestion / silence by extension."""

    def __init__(self, config_dir: Path, bind: tuple[str, int]) -> None:
        self.config = load_iax_conf(config_dir / "iax.conf")
        self.bind = bind
        self.deaf = False            # drop every received datagram (a peer that stopped)
        self.mute: set[int] = set()  # calls answered whose audio is never echoed
        self.incoming = 0
        self.ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> EchoPeer:
        self._thread.start()
        assert self.ready.wait(10), "echo peer did not start"
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _main(self) -> None:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
            try:
                r.run(self._serve())
            except BaseException as exc:  # surfaced to the test
                self.error = exc
                self.ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await open_endpoint(self.config, self.bind, role_name="office-b",
                                     on_event=self._on_event)
        self.server = server
        self.ep = server.endpoint
        self.ep.set_media_sink(self._echo)
        real = self.ep.receive_datagram

        def gate(data: bytes, addr: Any, now: float) -> None:
            if not self.deaf:
                real(data, addr, now)

        self.ep.receive_datagram = gate  # type: ignore[method-assign]
        real_batch = self.ep.receive_batch

        def gate_batch(batch: Any, loop_now: float, floor: float) -> float:
            return floor if self.deaf else real_batch(batch, loop_now, floor)

        self.ep.receive_batch = gate_batch  # type: ignore[method-assign]
        self.ready.set()
        await self._stop.wait()
        server.close()

    def _echo(self, callno: int, ts: int, payload: bytes, now: float) -> None:
        if callno not in self.mute:
            self.ep.send_voice(callno, payload, now)

    def _on_event(self, event: ev.Event) -> None:
        if not isinstance(event, ev.IncomingCall):
            return
        self.incoming += 1
        now = asyncio.get_running_loop().time()
        last = event.exten[-1:]
        if last == "2":
            self.ep.busy(event.callno, now)
        elif last == "3":
            self.ep.congestion(event.callno, now)
        elif last == "9":
            self.ep.ringing(event.callno, now)
        elif last == "8":                  # answers, never sends audio back
            self.mute.add(event.callno)
            self.ep.answer(event.callno, now)
        else:
            self.ep.answer(event.callno, now)


_NETS = itertools.cycle(random.Random(os.getpid()).sample(range(100, 250), 150))


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[dict[str, Any]]:
    n = next(_NETS)
    a_ip, b_ip = f"127.0.{n}.10", f"127.0.{n}.20"
    a = _site_dir(tmp_path / "a", "office-a", a_ip, b_ip)
    b = _site_dir(tmp_path / "b", "office-b", a_ip, b_ip)
    with EchoPeer(b, (b_ip, 4569)) as peer:
        yield {"a": a, "b": b, "a_ip": a_ip, "b_ip": b_ip, "peer": peer, "tmp": tmp_path}


def _opts(s: dict[str, Any], **kw: Any) -> LoadtestOptions:
    base: dict[str, Any] = {"config_dir": s["a"], "peer": "office-b", "extens": ["300"],
                            "quiet": True, "live": False, "setup_timeout": 3.0,
                            "hangup_timeout": 2.0}
    base.update(kw)
    o = LoadtestOptions(**base)
    o.check()
    return o


def _run(opts: LoadtestOptions) -> Any:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        return r.run(run_loadtest_async(opts))


# --- plan ------------------------------------------------------------------------------------


def test_plan_parsing() -> None:
    assert parse_extens("200-203,300") == ["200", "201", "202", "203", "300"]
    assert parse_extens("0098-0100") == ["0098", "0099", "0100"]
    assert parse_duration("20") == (20.0, 20.0)
    assert parse_duration("10-30") == (10.0, 30.0)
    for bad in ("", "0", "5-2", "x"):
        with pytest.raises(PlanError):
            parse_duration(bad)
    for bad in ("2-1", "a-b", "200,,201"):
        with pytest.raises(PlanError):
            parse_extens(bad)
    o = LoadtestOptions(calls=4, total=10, duration=(1.0, 3.0), extens=["200", "201"])
    plan = plan_calls(o)
    assert [p.exten for p in plan[:3]] == ["200", "201", "200"]
    assert len(plan) == 10 and all(1.0 <= p.hold <= 3.0 for p in plan)


def test_callno_budget_and_warning() -> None:
    b = CallnoBudget(2, hold=60.0)
    b.take()
    b.take()
    assert not b.available(0.0)
    b.release(1.0)
    assert not b.available(30.0)          # released numbers are held 60 s
    assert b.next_free(30.0) == pytest.approx(61.0)
    assert b.available(61.5)
    o = LoadtestOptions(calls=200, total=5000, rate=100)
    o.check()
    assert any("maxcallnumbers" in w for w in o.warnings)


# --- against the echo peer ---------------------------------------------------------------------


def test_echo_calls_answered_and_verified(sites: dict[str, Any]) -> None:
    rep = sites["tmp"] / "report"
    o = _opts(sites, calls=12, rate=30, duration=(2.5, 2.5), report_dir=rep)
    t0 = time.monotonic()
    res = run_loadtest(o)
    took = time.monotonic() - t0
    s = res.summary
    assert res.exit_code == 0, s["loadtest"]
    assert took < 15
    assert s["attempted"] == 12 and s["answered"] == 12 and s["failed"] == 0
    assert s["audio"]["verified"] == 12 and s["audio"]["crossed"] == 0
    assert s["max_concurrent"] == 12
    # local overload is told apart from network loss: the kernel's drop counter is read
    assert isinstance(s["loadtest"]["kernel_udp_rcvbuf_errors"], int)
    assert s["loadtest"]["socket_buffers"]["rcv"] > 1_000_000
    assert 0 < s["setup_ms"]["p50"] < 500
    assert s["loss_pct"] is not None and s["loss_pct"] < 2.0
    assert s["jitter_ms"]["p50"] is not None and s["jitter_ms"]["p50"] < 10
    assert s["mos"]["p50"] > 4.0
    assert s["rtt_ms"]["p50"] is not None and s["rtt_ms"]["p50"] < 100
    # trunk=yes in the seed: media goes in meta trunk frames, fewer datagrams than frames
    tr = s["trunk"]
    assert tr["by_kind"].get("tx_trunk", 0) > 0
    assert tr["saving"]["tx"]["datagrams_pct"] > 30
    # the files
    for name in ("summary.json", "calls.csv", "timeseries.csv"):
        assert (rep / name).is_file(), name
    on_disk = json.loads((rep / "summary.json").read_text())
    assert on_disk["loadtest"]["exit_code"] == 0 and on_disk["answered"] == 12
    rows = list(csv.DictReader((rep / "calls.csv").open()))
    assert len(rows) == 12
    assert {"outcome", "answer_ms", "jitter_ms", "loss_pct", "mos", "audio"} <= rows[0].keys()
    assert all(r["outcome"] == "ANSWERED" and r["audio"] == "verified" for r in rows)
    assert all(int(r["tx_frames"]) >= 100 for r in rows)
    ts_rows = list(csv.DictReader((rep / "timeseries.csv").open()))
    assert ts_rows and max(int(r["calls_up_now"]) for r in ts_rows) >= 10


def test_setup_window_and_finished_calls(sites: dict[str, Any],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """At most ``max_pending`` calls are in setup at once, and a finished call drops its live
    state (pre-encoded payloads, audio buffers), keeping only the compact record the report
    needs, so a long run's memory stays flat."""
    import iaxgw.sim.load.loadtest as lt

    runners: list[Any] = []
    real = lt.LoadRunner

    def capture(*a: Any, **kw: Any) -> Any:
        r = real(*a, **kw)
        runners.append(r)
        return r

    monkeypatch.setattr(lt, "LoadRunner", capture)
    o = _opts(sites, calls=6, total=18, rate=500, duration=(0.6, 0.6))
    res = _run(o)
    assert res.summary["attempted"] == 18 and res.summary["answered"] == 18
    (r,) = runners
    # a 500/s ramp still keeps at most 3 calls in setup (Asterisk's maxauthreq)
    assert 1 <= r.pending_peak <= 3 and r.pending == 0
    assert r.by_index == {} and r.calls == {} and len(r.media_calls) == 0
    assert r.ended_indices == set(range(18))
    assert len(r.stats.records) == 18 and not r.stats.active
    # nothing of a finished call outlives it: not in the analysis round robin (indices only),
    # not as cyclic garbage waiting for a collection
    assert all(isinstance(i, int) for i in r.stats._rr_calls)
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, CallStats | lt.LiveCall)]
    # the run-long series are unboxed: one double per tick / per second / per answered call
    assert isinstance(r.late_ms, array) and isinstance(r.stats.setup_ms, array)
    assert len(r.stats.setup_ms) == 18 and len(r.stats.timeseries) >= 1
    # a target that answers nothing: without the window all 6 NEWs would be out at once
    peer: EchoPeer = sites["peer"]
    peer.deaf = True
    try:
        res = _run(_opts(sites, calls=6, total=6, rate=500, duration=(1.0, 1.0),
                         setup_timeout=0.5))
    finally:
        peer.deaf = False
    r = runners[-1]
    assert r.pending_peak == 3 and r.pending == 0
    assert res.summary["attempted"] == 6
    assert sum(v for k, v in res.summary["causes"].items() if k.startswith("TIMEOUT")) == 6, \
        res.summary["causes"]


def test_busy_and_congestion_counted_exit_1(sites: dict[str, Any]) -> None:
    o = _opts(sites, calls=6, rate=50, duration=(1.0, 1.0), extens=["300", "302", "303"])
    res = _run(o)
    s = res.summary
    assert res.exit_code == 1
    assert s["answered"] == 2
    assert s["causes"] == {"BUSY": 2, "CONGESTION": 2}
    assert s["loadtest"]["failed_total"] == 4
    ok = _run(_opts(sites, calls=6, rate=50, duration=(1.0, 1.0), extens=["300", "302", "303"],
                    max_failed=4))
    assert ok.exit_code == 0


def test_no_answer_times_out(sites: dict[str, Any]) -> None:
    o = _opts(sites, calls=4, rate=50, duration=(1.0, 1.0), extens=["309"], setup_timeout=1.5)
    t0 = time.monotonic()
    res = _run(o)
    assert time.monotonic() - t0 < 8
    s = res.summary
    assert res.exit_code == 1
    assert s["answered"] == 0 and s["failed"] == 4
    assert sum(v for k, v in s["causes"].items() if k.startswith("NO_ANSWER")) == 4


def test_answered_calls_whose_echo_never_comes_end_as_dropped(sites: dict[str, Any]) -> None:
    """A far end that answers and never sends audio back (killed just after its ANSWER went
    out): each call ends media_timeout after its ANSWER, counted as dropped with why, not
    held to its planned end as if it were fine."""
    o = _opts(sites, calls=3, rate=50, duration=(8.0, 8.0), extens=["308"], media_timeout=2.0)
    t0 = time.monotonic()
    res = _run(o)
    assert time.monotonic() - t0 < 7.0
    s = res.summary
    assert s["answered"] == 3 and s["loadtest"]["dropped"] == 3 and res.exit_code == 1
    assert all(r.cause == "media never came: nothing received 2 s after ANSWER"
               and r.duration_s is not None and 2.0 < r.duration_s < 3.5 for r in res.records)


def test_peer_stops_answering_every_call_ends(sites: dict[str, Any]) -> None:
    peer: EchoPeer = sites["peer"]
    o = _opts(sites, calls=10, rate=50, duration=(8.0, 8.0), setup_timeout=2.0,
              media_timeout=2.0)

    async def main() -> Any:
        task = asyncio.ensure_future(run_loadtest_async(o))
        await asyncio.sleep(1.5)          # all up, media flowing
        peer.deaf = True
        return await task

    import uvloop

    t0 = time.monotonic()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        res = r.run(main())
    took = time.monotonic() - t0
    s = res.summary
    assert took < 12                      # well before the 8 s hold ends... plus linger
    assert s["attempted"] == 10 and s["in_progress"] == 0
    # answered before the peer went deaf; the media watchdog ends them as dropped
    assert s["answered"] == 10
    assert res.exit_code == 1
    assert s["loadtest"]["dropped"] == 10 and s["loadtest"]["failed_total"] == 10
    assert all(r.cause and "media stopped" in r.cause for r in res.records)
    # our HANGUPs were never acknowledged: the summary says the target may still hold them
    assert any("10 call(s) still waiting" in n for n in s["loadtest"]["notes"])
    # a second run against the deaf peer: every call ends as TIMEOUT within the setup timeout
    o2 = _opts(sites, calls=5, rate=50, duration=(1.0, 1.0), setup_timeout=1.5)
    t0 = time.monotonic()
    res2 = _run(o2)
    assert time.monotonic() - t0 < 10
    assert res2.summary["failed"] == 5 and res2.exit_code == 1
    assert sum(v for k, v in res2.summary["causes"].items() if k.startswith("TIMEOUT")) == 5
    assert any("no answer" in n or "TIMEOUT" in n for n in res2.summary["loadtest"]["notes"])


def test_wrong_secret_rejected(sites: dict[str, Any]) -> None:
    bad = _site_dir(sites["tmp"] / "bad", "office-a", sites["a_ip"], sites["b_ip"],
                    secret="not-the-secret")
    res = _run(_opts(sites, config_dir=bad, calls=3, rate=50, duration=(1.0, 1.0)))
    s = res.summary
    assert res.exit_code == 1 and s["answered"] == 0
    assert sum(v for k, v in s["causes"].items() if k.startswith("REJECT") and "50" in k) == 3


def test_cli_json_and_exit_code(sites: dict[str, Any]) -> None:
    from iaxgw.gateway.cli import main

    r = CliRunner().invoke(main, ["loadtest", "--config", str(sites["a"]), "--peer", "office-b",
                                  "--exten", "300", "--calls", "5", "--rate", "50",
                                  "--duration", "1.5", "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    start = r.stdout.index("{")
    summary = json.loads(r.stdout[start:])
    assert summary["answered"] == 5 and summary["loadtest"]["exit_code"] == 0


@pytest.mark.parametrize("args", [
    ["--calls", "0"], ["--calls", "x"], ["--duration", "9-3"], ["--exten", "5-1"],
    ["--codec", "g729"], ["--rate", "0"], ["--media", "nope.mp3"], ["--mode", "sideways"],
    ["--peer-host", "127.0.0.1:99999"], ["--max-failed", "-1"], ["--peer", "nobody"],
    ["--config", "/nonexistent"],
])
def test_cli_bad_arguments_exit_2(args: list[str]) -> None:
    from iaxgw.gateway.cli import main

    r = CliRunner().invoke(main, ["loadtest", *args])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert "Error" in r.output


# --- against the real Asterisk (lab) ------------------------------------------------------------


@pytest.mark.asterisk
def test_asterisk_echo_20_calls(office_a: Any) -> None:  # pragma: no cover - needs root
    o = LoadtestOptions(calls=20, rate=20, duration=(4.0, 4.0), quiet=True, live=False)
    o.check()
    res = _run(o)
    s = res.summary
    assert s["answered"] == 20, s["causes"]
    assert s["audio"]["verified"] == 20
    assert res.exit_code == 0


@pytest.mark.asterisk
def test_asterisk_wrong_secret(office_a: Any, tmp_path: Path) -> None:  # pragma: no cover
    bad = _site_dir(tmp_path, "office-b", "127.0.0.10", "127.0.0.20", secret="wrong")
    o = LoadtestOptions(calls=3, rate=20, duration=(1.0, 1.0), quiet=True, live=False,
                        config_dir=bad, peer="office-a", peer_host=("127.0.0.10", 4569),
                        bind=("127.0.0.20", 4569), extens=["200"])
    o.check()
    res = _run(o)
    s = res.summary
    assert res.exit_code == 1
    assert sum(v for k, v in s["causes"].items() if k.startswith("REJECT") and "50" in k) == 3


if os.environ.get("IAXGW_LOADTEST_DEBUG"):  # pragma: no cover
    import logging

    logging.basicConfig(level=logging.DEBUG)


def test_ticker_always_lets_held_reads_go() -> None:
    """The ticker holds the socket's reads just before each media tick and lets them go after
    it: also when no call is left to send for by then, and when it is cancelled mid-hold (a
    read hold left behind would stop the load tester hearing hang-ups and answers)."""
    import uvloop

    from iaxgw.sim.load.loadtest import LoadRunner, LoadtestOptions, load_target

    class Transport:
        def __init__(self) -> None:
            self.held = 0
            self.released = 0
            self.polls = 0

        def release_reads(self) -> None:
            self.released += 1

        def poll(self) -> None:
            self.polls += 1

    class Server:
        def __init__(self) -> None:
            self.transport = Transport()

    class Flicker(dict):                    # live when the hold is decided, gone at the tick
        n = 0

        def __bool__(self) -> bool:
            self.n += 1
            return self.n % 2 == 1

    async def main(cancel_in_hold: bool) -> Transport:
        opts = LoadtestOptions(calls=1, quiet=True, live=False)
        runner = LoadRunner(opts, load_target(opts))
        server = Server()
        runner._server = server
        runner.media_calls = Flicker()
        task: asyncio.Task[None] | None = None

        def hold() -> None:
            server.transport.held += 1
            if cancel_in_hold and server.transport.held == 3 and task is not None:
                task.cancel()

        runner._hold = hold
        task = asyncio.get_running_loop().create_task(runner._ticker())
        await asyncio.sleep(0.15)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert not runner._reads_held
        return server.transport

    for cancel_in_hold in (False, True):
        tr = uvloop.run(main(cancel_in_hold))
        assert tr.held >= 3 and tr.released == tr.held, (cancel_in_hold, vars(tr))


def test_unmet_rate_fails_naming_its_cap(sites: dict[str, Any]) -> None:
    """500 setups/s asked, but the target's maxauthreq (3 calls awaiting authentication, paced
    on the measured round trip) allows far fewer: the run fails and names the cap; with
    --allow-underrun it passes and still names it.  A rate the target allows is met."""
    res = _run(_opts(sites, calls=12, total=12, rate=500, duration=(1.0, 1.0)))
    tg = res.summary["targets"]
    assert res.summary["answered"] == 12
    assert not tg["met"] and tg["rate"]["asked"] == 500
    assert tg["rate"]["achieved"] is not None and tg["rate"]["achieved"] < 450
    assert [c["cap"] for c in tg["capped_by"]][:1] == ["maxauthreq"], tg
    assert tg["capped_by"][0]["waited_s"] > 0 and "maxauthreq" in tg["capped_by"][0]["detail"]
    assert tg["auth_slot_peak"] <= 3 and tg["setup_rtt_ms"] is not None
    assert res.exit_code == 1
    assert any(n.startswith("target not reached") for n in res.summary["loadtest"]["notes"])
    ok = _run(_opts(sites, calls=12, total=12, rate=500, duration=(1.0, 1.0),
                    allow_underrun=True))
    assert ok.exit_code == 0 and not ok.summary["targets"]["met"]
    assert ok.summary["targets"]["capped_by"][0]["cap"] == "maxauthreq"
    met = _run(_opts(sites, calls=6, total=6, rate=20, duration=(1.0, 1.0)))
    tg = met.summary["targets"]
    assert tg["met"] and not tg["capped_by"] and met.exit_code == 0, tg
    assert tg["calls"] == {"asked": 6, "peak": 6, "placed_peak": 6}
    assert abs(tg["rate"]["achieved"] - 20) < 2, tg


def test_achieved_rate_is_the_pace_not_the_refills_of_the_concurrency_cap(
        sites: dict[str, Any]) -> None:
    """3 calls at a time, 12 in all, at 5/s: after the first three, each attempt is placed the
    moment a call ends and frees the cap.  Those attempts are paced by the cap, not the rate,
    so the achieved rate is the pace of the free stretches (5/s), not 12 attempts over the
    free time only (25/s before)."""
    res = _run(_opts(sites, calls=3, total=12, rate=5, duration=(1.0, 1.0)))
    tg = res.summary["targets"]
    assert res.summary["attempted"] == 12 and res.summary["answered"] == 12
    assert tg["rate"]["achieved"] is not None and abs(tg["rate"]["achieved"] - 5.0) < 0.5, tg
    assert tg["met"] and res.exit_code == 0, tg


def test_unmet_target_reason_prints_rates_as_figures_not_float_noise() -> None:
    from iaxgw.sim.load.loadtest import fail_reasons
    from iaxgw.sim.load.loadtest_plan import LoadtestOptions

    summary = {"targets": {"met": False,
                           "rate": {"achieved": 180.67000000000002, "asked": 1000.0},
                           "calls": {"peak": 3474, "asked": 5000}}}
    reasons = fail_reasons(LoadtestOptions(calls=5000), summary, 0, True, None)
    assert reasons == ["target not reached (rate 180.67/1000 per s, calls 3474/5000; "
                       "--allow-underrun passes anyway)"]
    assert fail_reasons(LoadtestOptions(calls=5000, allow_underrun=True), summary, 0, True,
                        None) == []
