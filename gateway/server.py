"""The asyncio driver around one sans-IO :class:`~iaxgw.gateway.protocol.Endpoint`.

It only does I/O (style.md practice 2): hands received datagrams to the endpoint with the loop
clock, sends what the endpoint queued, keeps one ``loop.call_at`` armed for the endpoint's next
timer and forwards events to an ``asyncio.Queue`` (or a callback).  uvloop is a loop policy chosen
by the CLI layer (``asyncio.Runner(loop_factory=uvloop.new_event_loop)``), not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, Literal, cast

from iaxgw.gateway.events import Event
from iaxgw.gateway.impair import ImpairedLink, Impairment
from iaxgw.gateway.model import IaxConfig
from iaxgw.gateway.protocol import Endpoint

__all__ = ["DatagramHook", "DatagramServer", "open_endpoint"]

log = logging.getLogger("iaxgw.server")

Addr = tuple[str, int]
#: ``on_datagram(direction, data, addr, now)``: called for every datagram in ("in") and out, on
#: the endpoint's side of an ``impair`` (received: as delivered; sent: before the impairment).
DatagramHook = Callable[[Literal["in", "out"], bytes, Addr, float], None]


class DatagramServer(asyncio.DatagramProtocol):
    """Runs ``endpoint`` on a datagram transport."""

    def __init__(self, endpoint: Endpoint, *, loop: asyncio.AbstractEventLoop | None = None,
                 on_event: Callable[[Event], None] | None = None,
                 on_datagram: DatagramHook | None = None,
                 impair: Impairment | None = None) -> None:
        self.endpoint = endpoint
        self.loop = loop or asyncio.get_event_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self.rcvbuf = 0          # socket buffer sizes the kernel granted (open_endpoint)
        self.sndbuf = 0
        #: Events, unless ``on_event`` is given (then it gets each event at once).
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.on_event = on_event
        self.on_datagram = on_datagram
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_pending = False
        self.closed: asyncio.Future[None] = self.loop.create_future()
        #: ``--impair``: a bad network between the endpoint (and ``on_datagram``) and the socket
        self.impair = ImpairedLink(impair, self.loop) if impair is not None else None
        endpoint.wall_offset = time.time() - self.loop.time()

    # -- asyncio.DatagramProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.endpoint.start(self.loop.time())
        self.flush()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        src: Addr = (addr[0], addr[1])
        if self.impair is not None:
            self.impair.pass_on("recv", data, src, self._deliver)
        else:
            self._deliver(data, src)

    def _deliver(self, data: bytes, src: Addr) -> None:
        now = self.loop.time()
        hook = self.on_datagram
        if hook is not None:
            hook("in", data, src, now)
        try:
            self.endpoint.receive_datagram(data, src, now)
        except Exception:  # the endpoint must survive anything a peer sends
            log.exception("endpoint failed on a datagram from %s", src)
        if not self._flush_pending:
            self.flush_soon()

    def error_received(self, exc: Exception) -> None:
        log.debug("socket error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.impair is not None:
            self.impair.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.closed.done():
            self.closed.set_result(None)

    # -- driving the endpoint

    def flush_soon(self) -> None:
        """``flush`` once later in this loop pass, however many datagrams arrive meanwhile
        (uvloop delivers a burst of datagrams in one pass: one flush, one timer re-arm)."""
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self._deferred_flush)

    def _deferred_flush(self) -> None:
        self._flush_pending = False
        self.flush()

    def flush(self) -> None:
        """Send queued datagrams, deliver events, re-arm the timer.  Call after any command."""
        ep = self.endpoint
        now = self.loop.time()
        tr = self.transport
        if tr is not None:
            hook = self.on_datagram
            link = self.impair
            for data, addr in ep.datagrams_to_send(now):
                if hook is not None:
                    hook("out", data, addr, now)
                if link is None:
                    tr.sendto(data, addr)
                else:
                    link.pass_on("send", data, addr, self._send_late)
        cb = self.on_event
        while (ev := ep.next_event()) is not None:
            if cb is not None:
                cb(ev)
            else:
                self.events.put_nowait(ev)
        when = ep.get_timer()
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_at = when
            if when is not None and tr is not None:
                self._timer = self.loop.call_at(when, self._on_timer)

    def _send_late(self, data: bytes, addr: Addr) -> None:
        tr = self.transport
        if tr is not None and not tr.is_closing():
            tr.sendto(data, addr)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.endpoint.handle_timer(self.loop.time())
        except Exception:
            log.exception("endpoint timer failed")
        self.flush()

    def close(self) -> None:
        if self.impair is not None:
            self.impair.close()
        if self.transport is not None:
            self.transport.close()


async def open_endpoint(config: IaxConfig, bind: Addr = ("0.0.0.0", 4569), *,
                        loop: asyncio.AbstractEventLoop | None = None,
                        role_name: str = "iaxgw", endpoint: Endpoint | None = None,
                        on_event: Callable[[Event], None] | None = None,
                        on_datagram: DatagramHook | None = None,
                        impair: Impairment | None = None) -> DatagramServer:
    """Bind a UDP socket on ``bind`` and run an Endpoint (given or built from ``config``);
    ``impair`` puts a seedable bad network (:mod:`iaxgw.gateway.impair`) before the socket."""
    loop = loop or asyncio.get_running_loop()
    ep = endpoint or Endpoint(config, local_addr=bind, role_name=role_name)
    server = DatagramServer(ep, loop=loop, on_event=on_event, on_datagram=on_datagram,
                            impair=impair)
    await loop.create_datagram_endpoint(lambda: server, local_addr=bind)
    if server.transport is not None:
        server.rcvbuf, server.sndbuf = size_socket_buffers(server.transport)
    return server


#: Bytes asked for each of the socket's receive and send buffers.  A trunk sender flushes a
#: whole tick at once (1,000 trunked calls: ~140 datagrams of ~1.2 KB every 20 ms), which
#: overflows Linux's default 208 KiB receive buffer and the kernel drops the excess.
SOCKET_BUFFER = 4 * 1024 * 1024
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)   # Linux; root may exceed rmem_max
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)


def size_socket_buffers(transport: asyncio.BaseTransport,
                        size: int = SOCKET_BUFFER) -> tuple[int, int]:
    """Grow the socket's buffers to ``size`` (forced when allowed, else up to the sysctl
    maximum) and return the sizes the kernel reports; warn when the receive side stays small."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return (0, 0)
    got = []
    for force, plain in ((_SO_RCVBUFFORCE, socket.SO_RCVBUF), (_SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
        try:
            got.append(int(sock.getsockopt(socket.SOL_SOCKET, plain)))
        except OSError:
            got.append(0)
    rcv, snd = got
    if 0 < rcv < size:     # Linux reports twice what it grants
        log.warning("UDP receive buffer is %d bytes (wanted %d): at high call counts trunk "
                    "bursts can overflow it and the kernel drops datagrams; raise "
                    "net.core.rmem_max", rcv, size)
    return rcv, snd
