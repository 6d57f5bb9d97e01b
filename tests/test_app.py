"""GatewayApp over a fake endpoint: dialplan per call, the shared 20 ms media ticker, stop()."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from iaxgw.gateway.conf.model import Entry, IaxConfig
from iaxgw.gateway.iax2 import events as ev
from iaxgw.gateway.pbx.dialplan import load_extensions_conf
from iaxgw.gateway.serve.app import TICK, GatewayApp, Site

EXT = """\
[from-iax]
exten => 300,1,Answer()
 same => n,Echo()
exten => 301,1,Answer()
 same => n,Milliwatt()
exten => 302,1,Busy(0.2)
exten => 303,1,Answer()
 same => n,Hangup()
"""


class FakeEndpoint:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, float, Any]] = []
        self.voice: list[tuple[int, bytes, float]] = []
        self.sink: Any = None
        self.live: set[int] = set()

    def _rec(self, what: str, callno: int, now: float, extra: Any = None) -> None:
        self.calls.append((what, callno, now, extra))

    def answer(self, callno: int, now: float) -> None:
        self._rec("answer", callno, now)

    def ringing(self, callno: int, now: float) -> None:
        self._rec("ringing", callno, now)

    def progress(self, callno: int, now: float) -> None:
        self._rec("progress", callno, now)

    def proceeding(self, callno: int, now: float) -> None:
        self._rec("proceeding", callno, now)

    def busy(self, callno: int, now: float) -> None:
        self._rec("busy", callno, now)

    def congestion(self, callno: int, now: float) -> None:
        self._rec("congestion", callno, now)

    def hangup(self, callno: int, now: float, cause: int = 16) -> None:
        self._rec("hangup", callno, now, cause)
        self.live.discard(callno)

    def send_voice(self, callno: int, payload: bytes, now: float, ts: int | None = None) -> None:
        self.voice.append((callno, payload, now))

    def set_media_sink(self, cb: Any) -> None:
        self.sink = cb

    def peers(self) -> list[dict[str, Any]]:
        return [{"name": "office-a", "addr": ("127.0.0.10", 4569), "status": "OK",
                 "rtt_ms": 3, "trunk": True}]

    def call_info(self, callno: int) -> Any:
        return None

    def channels(self) -> list[dict[str, Any]]:
        return [{"peer": "office-a", "addr": ("127.0.0.10", 4569), "local_callno": c,
                 "remote_callno": 9, "oseqno": 1, "iseqno": 2, "format": 4, "state": "up"}
                for c in sorted(self.live)]

    def netstats(self) -> list[dict[str, Any]]:
        return [{"peer": "office-a", "local_callno": c, "rtt_ms": 3} for c in sorted(self.live)]

    def stats(self) -> dict[str, Any]:
        return {"retransmissions": 0}

    def outstanding(self) -> tuple[int, int]:
        return 0, 0


class FakeServer:
    def __init__(self) -> None:
        self.endpoint = FakeEndpoint()
        self.local_addr = ("127.0.0.20", 4569)
        self.handler: Any = None
        self.flushes = 0
        self.closed = False

    def set_event_handler(self, cb: Any) -> None:
        self.handler = cb

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True


def _app(tmp_path: Path) -> tuple[GatewayApp, FakeServer]:
    ext = tmp_path / "extensions.conf"
    ext.write_text(EXT)
    cfg = IaxConfig(entries={"office-a": Entry(name="office-a", host="127.0.0.10",
                                               qualify=2000, trunk=True, username="office-b")})
    site = Site(config=cfg, dialplan=load_extensions_conf(ext), phones=None,
                bind=("127.0.0.20", 4569), config_dir=tmp_path)
    server = FakeServer()

    async def opener(config: Any, bind: Any, **kw: Any) -> FakeServer:
        return server

    app = GatewayApp(site, peer="office-a", control=str(tmp_path / "c.sock"),
                     spool=tmp_path / "spool", open_endpoint=opener)
    return app, server


def _incoming(callno: int, exten: str) -> ev.IncomingCall:
    return ev.IncomingCall(callno=callno, peer="office-a", exten=exten, context="from-iax",
                           caller_num="200", caller_name="A", codec=4,
                           addr=("127.0.0.10", 4569), trunk=True)


async def _until(cond: Any, timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


def test_media_paced_on_one_grid(tmp_path: Path) -> None:
    async def main() -> None:
        app, server = _app(tmp_path)
        await app.start()
        ep = server.endpoint
        for callno in (5, 6):
            ep.live.add(callno)
            server.handler(_incoming(callno, "301"))      # Milliwatt: sent by the ticker
        await _until(lambda: sum(1 for c in ep.calls if c[0] == "answer") == 2)
        await _until(lambda: sum(1 for c, _p, _t in ep.voice if c == 6) >= 26)
        for callno in (5, 6):
            times = [t for c, _p, t in ep.voice if c == callno][:25]
            # one shared grid: both calls' frames go out at the same ticks
            assert times == [t for c, _p, t in ep.voice if c == (11 - callno)][:25]
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert all(abs(g - TICK) < 0.012 for g in gaps), gaps
            assert abs((times[-1] - times[0]) - 24 * TICK) < 0.01   # no drift
        rows = app.introspect("channels")
        assert [r["channel"] for r in rows] == ["IAX2/office-a-5", "IAX2/office-a-6"]
        peers = app.introspect("peers")
        assert peers[0]["name"] == "office-a" and peers[0]["status"] == "OK"
        # remote hangs up call 5: its dialplan finishes, its media stops
        ep.live.discard(5)
        server.handler(ev.CallEnded(callno=5, cause=16, cause_text="Normal", reason="hangup"))
        await _until(lambda: 5 not in app.sessions and len(app._tasks) == 1)
        sent5 = sum(1 for c, _p, _t in ep.voice if c == 5)
        await asyncio.sleep(0.1)
        assert sum(1 for c, _p, _t in ep.voice if c == 5) == sent5
        # stop(): the remaining call gets HANGUP cause 16, everything is closed
        await app.stop()
        assert ("hangup", 6) in [(c[0], c[1]) for c in ep.calls]
        assert [c[3] for c in ep.calls if c[0] == "hangup"] == [16]
        assert server.closed and not app._tasks
        assert not Path(tmp_path / "c.sock").exists()
        assert app.stats_dict()["calls"]["total_in"] == 2
    asyncio.run(main())


def test_echo_sends_each_payload_back_at_once(tmp_path: Path) -> None:
    """Echo answers each received payload right after its receive batch, not on the next tick:
    a per-call queue drained one frame per tick would keep a standing delay under bursty
    (trunked) arrival."""
    async def main() -> None:
        app, server = _app(tmp_path)
        await app.start()
        ep = server.endpoint
        for callno in (5, 6):
            ep.live.add(callno)
            server.handler(_incoming(callno, "300"))
        await _until(lambda: sum(1 for c in ep.calls if c[0] == "answer") == 2)
        loop = asyncio.get_running_loop()
        for k in range(10):
            # a burst: 3 frames per call arrive in one receive batch
            fed = loop.time()
            for j in range(3):
                for callno in (5, 6):
                    ep.sink(callno, (3 * k + j) * 20, bytes([callno, 3 * k + j]) * 80, fed)
            n = len(ep.voice)
            await asyncio.sleep(0)        # the deferred echo runs in the next loop pass
            assert len(ep.voice) == n + 6
            assert all(t - fed < 0.005 for _c, _p, t in ep.voice[n:])
            await asyncio.sleep(0.03)
        for callno in (5, 6):
            got = [p for c, p, _t in ep.voice if c == callno]
            assert got == [bytes([callno, k]) * 80 for k in range(30)]
        await app.stop()
    asyncio.run(main())


@pytest.mark.parametrize("exten,cause,signal", [("302", 17, "busy"), ("303", 16, None),
                                                 ("399", 3, None)])
def test_dialplan_end_hangs_up(tmp_path: Path, exten: str, cause: int,
                               signal: str | None) -> None:
    async def main() -> None:
        app, server = _app(tmp_path)
        await app.start()
        ep = server.endpoint
        ep.live.add(7)
        server.handler(_incoming(7, exten))
        await _until(lambda: any(c[0] == "hangup" for c in ep.calls))
        hang = [c for c in ep.calls if c[0] == "hangup"]
        assert len(hang) == 1 and hang[0][3] == cause
        if signal:
            assert any(c[0] == signal for c in ep.calls)
        server.handler(ev.CallEnded(callno=7, cause=cause, cause_text="", reason="local"))
        await _until(lambda: not app._tasks and not app.sessions)
        await app.stop()
        assert len([c for c in ep.calls if c[0] == "hangup"]) == 1
    asyncio.run(main())


def test_serve_paces_its_collector_only_when_it_is_the_process(tmp_path: Path) -> None:
    """``pace_gc`` (set by the CLI): automatic collection off while serving, young objects
    collected and survivors frozen by serve's own loop, everything back at stop; an embedded
    app (the default) leaves the process's collector alone."""
    import gc

    async def main() -> None:
        assert gc.isenabled()
        embedded, _ = _app(tmp_path / "a")
        await embedded.start()
        assert gc.isenabled() and embedded._gc is None
        await embedded.stop()
        app, _ = _app(tmp_path / "b")
        app.pace_gc = True
        await app.start()
        try:
            assert not gc.isenabled() and app._gc is not None and app._gc.active
            frozen = gc.get_freeze_count()
            junk = [[i] for i in range(20_000)]          # survivors of young collections
            await _until(lambda: app._gc is not None and app._gc.steps >= 1, timeout=3.0)
            assert gc.get_freeze_count() > frozen       # ... frozen by the once-a-second step
            del junk
        finally:
            await app.stop()
        assert gc.isenabled() and app._gc is None and gc.get_freeze_count() == 0
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    asyncio.run(main())
