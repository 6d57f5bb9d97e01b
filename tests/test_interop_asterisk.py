"""iaxgw's Endpoint + DatagramServer (as office-b, 127.0.0.20:4569) against a real Asterisk 22
office-a configured as in the seed (md5, calltoken required, trunk=yes, qualify=yes)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from iaxgw.gateway.conf.config import load_iax_conf
from iaxgw.gateway.conf.model import IaxConfig
from iaxgw.gateway.driver.server import DatagramServer, open_endpoint
from iaxgw.gateway.iax2.events import (
    CallEnded,
    CallProgress,
    Event,
    IncomingCall,
    PeerStatusChanged,
    VoiceReceived,
)
from iaxgw.sim.lab.labconfig import render_iax_conf, seed_site

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(120)]

US = ("127.0.0.20", 4569)


def our_config(tmp_path: Path, **overrides: Any) -> IaxConfig:
    """office-b's iax.conf from the seed, parsed by our own config loader."""
    path = tmp_path / "iax.conf"
    path.write_text(render_iax_conf(seed_site("office-b", **overrides)))
    return load_iax_conf(path)


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro_fn())  # type: ignore[arg-type]


async def wait_event(srv: DatagramServer, pred: Callable[[Event], bool], timeout: float,
                     seen: list[Event]) -> Event:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"no matching event in {timeout} s; saw {seen[-10:]}")
        try:
            ev = await asyncio.wait_for(srv.events.get(), left)
        except TimeoutError:
            continue
        seen.append(ev)
        if pred(ev):
            return ev


class Wire:
    """Counts datagrams by kind and direction (the server's on_datagram hook)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def __call__(self, direction: str, data: bytes, addr: tuple[str, int], now: float) -> None:
        kind = "full" if data[0] & 0x80 else ("trunk" if data[:3] == b"\x00\x00\x01" else "mini")
        key = (direction, kind)
        self.counts[key] = self.counts.get(key, 0) + 1


def test_peer_status_both_ways(office_a: Any, tmp_path: Path) -> None:
    cfg = our_config(tmp_path)

    async def main() -> None:
        srv = await open_endpoint(cfg, US, role_name="office-b")
        try:
            seen: list[Event] = []
            ev = await wait_event(srv, lambda e: isinstance(e, PeerStatusChanged), 10, seen)
            assert isinstance(ev, PeerStatusChanged)
            assert (ev.peer, ev.status) == ("office-a", "OK")
            peer = await asyncio.to_thread(office_a.wait_peer_ok, "office-b", 30.0)
            assert peer.ok and peer.trunk
        finally:
            srv.close()

    run(main)


def test_call_to_asterisk_echo_trunked(office_a: Any, tmp_path: Path) -> None:
    cfg = our_config(tmp_path)
    wire = Wire()

    async def main() -> None:
        srv = await open_endpoint(cfg, US, role_name="office-b", on_datagram=wire)
        loop = asyncio.get_running_loop()
        ep = srv.endpoint
        seen: list[Event] = []
        try:
            await asyncio.sleep(0.5)
            cn = ep.call("office-a", "200", loop.time(), caller_num="300")
            srv.flush()
            await wait_event(srv, lambda e: isinstance(e, CallProgress) and e.kind == "answered",
                             10, seen)
            payloads = [bytes([(i * 7 + k) & 0x7F | 0x80 for k in range(160)])
                        for i in range(20)]
            echoed: set[bytes] = set()
            n_rx = 0
            t0 = loop.time()
            i = 0
            while loop.time() - t0 < 4.0:
                ep.send_voice(cn, payloads[i % 20], loop.time())
                i += 1
                srv.flush()
                await asyncio.sleep(0.02)
                while not srv.events.empty():
                    ev = srv.events.get_nowait()
                    seen.append(ev)
                    if isinstance(ev, VoiceReceived):
                        n_rx += 1
                        echoed.add(ev.payload)
            assert n_rx > 120, (n_rx, ep.stats())
            assert len(echoed & set(payloads)) >= 15         # our audio came back byte-exact
            chans = await asyncio.to_thread(office_a.cli, "iax2 show channels")
            assert "ulaw" in chans and "office-b" in chans
            st = ep.stats()
            assert st["trunk_datagrams_in"] > 100 and st["trunk_datagrams_out"] > 100
            assert wire.counts.get(("in", "trunk"), 0) > 100
            assert wire.counts.get(("out", "mini"), 0) == 0
            ep.hangup(cn, loop.time())
            srv.flush()
            await wait_event(srv, lambda e: isinstance(e, CallEnded), 5, seen)
            for _ in range(40):
                await asyncio.sleep(0.1)
                if not ep.channels():
                    break
            assert not ep.channels()
            assert await asyncio.to_thread(office_a.active_calls) == 0
        finally:
            srv.close()

    run(main)


def test_asterisk_calls_us(office_a: Any, tmp_path: Path) -> None:
    cfg = our_config(tmp_path)

    async def main() -> None:
        srv = await open_endpoint(cfg, US, role_name="office-b")
        loop = asyncio.get_running_loop()
        ep = srv.endpoint
        seen: list[Event] = []
        try:
            await asyncio.sleep(0.5)
            await asyncio.to_thread(office_a.originate, "Local/300@internal", "Milliwatt")
            inc = await wait_event(srv, lambda e: isinstance(e, IncomingCall), 10, seen)
            assert isinstance(inc, IncomingCall)
            assert (inc.peer, inc.exten, inc.context, inc.codec, inc.trunk) == (
                "office-a", "300", "from-iax", 4, True)
            ep.ringing(inc.callno, loop.time())
            ep.answer(inc.callno, loop.time())
            srv.flush()
            n_rx = 0
            t0 = loop.time()
            while loop.time() - t0 < 3.0:
                ev = await asyncio.wait_for(srv.events.get(), 3.0)
                if isinstance(ev, VoiceReceived):
                    n_rx += 1
                    ep.send_voice(inc.callno, ev.payload, loop.time())
                    srv.flush()
            assert n_rx > 100
            ch = ep.channels()[0]
            assert ch.state == "UP" and ch.trunk and ch.frames_rx == n_rx
            ep.hangup(inc.callno, loop.time())
            srv.flush()
            for _ in range(50):
                await asyncio.sleep(0.1)
                if not ep.channels():
                    break
            assert not ep.channels()
            assert await asyncio.to_thread(office_a.active_calls) == 0
        finally:
            srv.close()

    run(main)


def test_wrong_secret_rejected_by_asterisk(office_a: Any, tmp_path: Path) -> None:
    cfg = our_config(tmp_path, secret="not-the-secret")

    async def main() -> None:
        srv = await open_endpoint(cfg, US, role_name="office-b")
        loop = asyncio.get_running_loop()
        ep = srv.endpoint
        seen: list[Event] = []
        try:
            cn = ep.call("office-a", "200", loop.time())
            srv.flush()
            end = await wait_event(srv, lambda e: isinstance(e, CallEnded), 10, seen)
            assert isinstance(end, CallEnded)
            assert (end.callno, end.cause, end.reason) == (cn, 50, "reject")
            await asyncio.sleep(0.5)
            assert not ep.channels()
        finally:
            srv.close()

    run(main)
