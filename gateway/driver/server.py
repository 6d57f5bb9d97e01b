"""The asyncio driver around one sans-IO :class:`~iaxgw.gateway.iax2.protocol.Endpoint`.

It only does I/O (the endpoint is sans-IO): hands received datagrams to the endpoint with the loop
clock, sends what the endpoint queued, keeps one ``loop.call_at`` armed for the endpoint's next
timer and forwards events to an ``asyncio.Queue`` (or a callback).  uvloop is a loop policy chosen
by the CLI layer (``asyncio.Runner(loop_factory=uvloop.new_event_loop)``), not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any, Literal, cast

from iaxgw.gateway.conf.model import IaxConfig
from iaxgw.gateway.driver.impair import ImpairedLink, Impairment
from iaxgw.gateway.iax2.address import Addr, format_addr
from iaxgw.gateway.iax2.events import Event
from iaxgw.gateway.iax2.protocol import Endpoint

__all__ = ["DatagramHook", "DatagramServer", "DatagramsHook", "open_endpoint"]

log = logging.getLogger("iaxgw.server")

#: How early (s) a loop may fire a timer it considers due (uvloop's clock has 1 ms steps).
TIMER_EARLY = 0.002
#: ``on_datagram(direction, data, addr, now)``: called for every datagram in ("in") and out, on
#: the endpoint's side of an ``impair`` (received: as delivered; sent: before the impairment).
DatagramHook = Callable[[Literal["in", "out"], bytes, Addr, float], None]
#: ``on_datagrams(direction, items, now)``: the same for a whole batch at once -- a received
#: batch ``[(data, addr, age_s), ...]`` or a flush's ``[(data, addr), ...]``.  When given, it
#: replaces ``on_datagram`` wherever a batch is at hand (the batched transport's receive path
#: and every flush), so the batch keeps its compiled receive path.
DatagramsHook = Callable[[Literal["in", "out"], list[Any], float], None]


class DatagramServer(asyncio.DatagramProtocol):
    """Runs ``endpoint`` on a datagram transport."""

    def __init__(self, endpoint: Endpoint, *, loop: asyncio.AbstractEventLoop | None = None,
                 on_event: Callable[[Event], None] | None = None,
                 on_datagram: DatagramHook | None = None,
                 on_datagrams: DatagramsHook | None = None,
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
        self.on_datagrams = on_datagrams
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_pending = False
        self._rx_floor = 0.0     # the latest arrival time handed to the endpoint (batched path)
        # Arrival times of the batched path: the kernel's stamp on the loop's clock.  uvloop's
        # loop.time() counts whole milliseconds of CLOCK_MONOTONIC; when the loop's clock is
        # that one, the finer time.monotonic() is used, so ``now`` of a received datagram is
        # exact to the microsecond (``rx_time_exact``) -- jitter is measured on it.
        self._monotonic_loop = abs(self.loop.time() - time.monotonic()) < 0.002
        self._rx_clock: Callable[[], float] = (time.monotonic if self._monotonic_loop
                                               else self.loop.time)
        #: received datagrams are handed over at their exact arrival time (set by
        #: BatchedTransport; the loop's own transport gives the loop's time at delivery)
        self.rx_time_exact = False
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
            self.impair.pass_on("recv", data, src, self._deliver_late)
        else:
            self._deliver(data, src, self.loop.time())
            if not self._flush_pending:
                self.flush_soon()

    def datagrams_received(self, batch: list[tuple[bytes, Addr, float]]) -> None:
        """A burst from :class:`BatchedTransport`: ``(data, addr, age_s)`` each, ``age_s`` the
        time it waited in the socket since the kernel stamped it.  Each is handed to the
        endpoint at its arrival time on the loop clock (never after "now", never before the
        previous one), then everything the burst produced is sent in one flush."""
        loop_now = self._rx_clock()
        floor = self._rx_floor
        link = self.impair
        receive_batch = getattr(self.endpoint, "receive_batch", None)
        batch_hook = self.on_datagrams
        if link is None and receive_batch is not None and (batch_hook is not None
                                                           or self.on_datagram is None):
            # nothing taps single datagrams: runs of media datagrams in one compiled pass
            if batch_hook is not None:
                batch_hook("in", batch, loop_now)
            if len(batch) > 1:
                # while a call setup is in progress what each signalling datagram produced
                # leaves before the next one is handled (an AUTHREQ is not held back behind the
                # rest of the batch, as with a reader that takes one datagram at a time); runs
                # of media datagrams still go through in one pass each
                start, last = 0, len(batch) - 1
                for i, item in enumerate(batch):
                    if i < last and item[0][:1] >= b"\x80":
                        floor = receive_batch(batch[start:i + 1], loop_now, floor)
                        start = i + 1
                        if self._setup_pending(loop_now):
                            self.flush()
                if start:
                    if start < len(batch):
                        floor = receive_batch(batch[start:], loop_now, floor)
                    self._rx_floor = floor
                    self.flush()
                    return
            self._rx_floor = receive_batch(batch, loop_now, floor)
            self.flush()
            return
        deliver = self._deliver
        for data, src, age in batch:
            now = loop_now - age
            if now < floor:
                now = floor
            floor = now
            if link is not None:
                link.pass_on("recv", data, src, self._deliver_late)
            else:
                deliver(data, src, now)
        self._rx_floor = floor
        self.flush()

    def _deliver_late(self, data: bytes, src: Addr) -> None:
        """Delivery after an ``--impair`` receive delay: at the time it is released, then
        flush."""
        self._deliver(data, src, self._rx_clock())
        if not self._flush_pending:
            self.flush_soon()

    def _deliver(self, data: bytes, src: Addr, now: float) -> None:
        hook = self.on_datagram
        if hook is not None:
            hook("in", data, src, now)
        try:
            self.endpoint.receive_datagram(data, src, now)
        except Exception:  # the endpoint must survive anything a peer sends
            log.exception("endpoint failed on a datagram from %s", src)

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
            out = ep.datagrams_to_send(now)
            if out:
                if self.on_datagrams is not None:
                    self.on_datagrams("out", out, now)
                elif hook is not None:
                    for data, addr in out:
                        hook("out", data, addr, now)
                send_many = getattr(tr, "send_many", None)
                if link is None and send_many is not None:
                    send_many(out)
                else:
                    for data, addr in out:
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

    def rx_resume_at(self, now: float, coalesce: float) -> float:
        """For :class:`BatchedTransport`: when to read next after a read at loop time ``now``
        that found datagrams.  ``coalesce`` later while the endpoint wants prompt reading
        (``Endpoint.rx_prompt``); otherwise (every call an answered, trunked call) at its next
        timer -- the trunk flush, where what was read leaves anyway -- and at most
        :data:`RX_COALESCE_TRUNKED` later.  The timer reads first (``_on_timer``), so both
        happen in one wake-up.  While a call setup is in progress (``Endpoint.setup_pending``)
        ``now``: the transport reads on the next datagram, as Asterisk does."""
        ep = self.endpoint
        if self._setup_pending(now):
            return now          # a call setup in progress: read each datagram as it comes
        prompt = getattr(ep, "rx_prompt", None)
        if prompt is None or prompt(now) or coalesce >= RX_COALESCE_TRUNKED:
            return now + coalesce
        when = now + RX_COALESCE_TRUNKED
        t = self._timer_at
        if t is not None and now + coalesce <= t < when:
            when = t
        return when

    def _setup_pending(self, now: float) -> bool:
        pending = getattr(self.endpoint, "setup_pending", None)
        return pending is not None and bool(pending(now))

    def _on_timer(self) -> None:
        poll = getattr(self.transport, "poll", None)
        if poll is not None:
            poll()          # what waits in the socket goes into this timer's flush
        when = self._timer_at
        if self._timer is not None:
            self._timer.cancel()    # this run (or one poll() re-armed): handled below
        self._timer = None
        self._timer_at = None
        now = self.loop.time()
        if when is not None and when - TIMER_EARLY <= now < when:
            # uvloop keeps time in whole milliseconds and fires a timer once its millisecond
            # has come: treat it as due, or it would be re-armed with a zero delay and the loop
            # would spin until the clock ticks over
            now = when
        try:
            self.endpoint.handle_timer(now)
        except Exception:
            log.exception("endpoint timer failed")
        self.flush()
        if poll is not None:
            realign = getattr(self.transport, "realign", None)
            if realign is not None:
                realign()       # the next coalesced read: counted from this timer's read

    def close(self) -> None:
        if self.impair is not None:
            self.impair.close()
        if self.transport is not None:
            self.transport.close()


#: Receive coalescing (s): after a read that found datagrams, the socket is read again this much
#: later instead of on the next datagram, so a stream of datagrams (a peer's trunk: ~1,450 a
#: second at 200 calls, spread over each 20 ms) costs a few hundred wake-ups a second instead of
#: one each.  Arrival times are the kernel's (``SO_TIMESTAMPNS``), so jitter, RTT and loss
#: measurements are not affected; a reply can leave up to this much later.  A datagram after a
#: quiet spell is read at once.  0 turns it off.  Measured (bench/serve_vs_asterisk.py, 200
#: calls): office-b CPU 6.3 % at 1 ms, 4.7 % at 3 ms, about the same beyond.
RX_COALESCE = 0.003
with contextlib.suppress(ValueError):          # IAXGW_RX_COALESCE_MS overrides (0 = off)
    RX_COALESCE = max(0.0, float(os.environ.get("IAXGW_RX_COALESCE_MS", "") or 3.0) / 1000.0)
#: Receive coalescing (s) while every call is an answered, trunked call (``Endpoint.rx_prompt``
#: is False): the socket is read at the endpoint's next timer (the trunk flush), at most this
#: much later.  What arrives then is trunked voice that leaves at the trunk flush anyway, so
#: echoed and bridged voice is not delayed; a signalling frame (a PING, a LAGRQ, a POKE from
#: the peer) can be answered up to this much later.  Measured (bench/serve_vs_asterisk.py, 200
#: calls, iaxgw only): office-b CPU 3.2-3.9 % with it, 5.2-5.8 % without.
#: ``IAXGW_RX_TRUNK_MS`` overrides; at or below RX_COALESCE it is off.
RX_COALESCE_TRUNKED = 0.020
with contextlib.suppress(ValueError):
    RX_COALESCE_TRUNKED = max(0.0, float(os.environ.get("IAXGW_RX_TRUNK_MS", "") or 20) / 1e3)
#: Datagrams per read (``recvmmsg``); a full read is followed by the next one in the next loop
#: pass, so due timers run in between: at 1,000 trunked calls a peer's trunk tick is ~143
#: datagrams (1,000 entries), which read at once would hold the loop for a few milliseconds.
RX_BATCH = 64


class BatchedTransport(asyncio.DatagramTransport):
    """A datagram transport over a bound non-blocking UDP socket that reads and writes in
    batches (``recvmmsg``/``sendmmsg`` in the compiled core), with receive coalescing.

    The protocol must have ``datagrams_received(batch)`` (see :class:`DatagramServer`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 protocol: DatagramServer, *, coalesce: float = RX_COALESCE) -> None:
        super().__init__()
        from iaxgw._core.udp import UdpIO

        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._io = UdpIO(sock, RX_BATCH)
        self._coalesce = max(0.0, float(coalesce))
        self._closing = False
        self._reading = False
        self._resume: asyncio.Handle | None = None
        self._resume_when = 0.0         # when _resume runs (loop time; -1: in this loop pass)
        self._last_data = 0.0       # loop time of the last read that found datagrams
        self._lazy = False          # the scheduled read is the protocol's late one
        self._held = False          # hold_reads(): no reads until release_reads()
        #: datagrams read but not handed over yet: a read of coalesced messages (UDP_GRO) can
        #: bring many batches' worth at once (a peer's whole trunk flush); they go to the
        #: protocol a batch per loop pass, as if still in the socket
        self._rx_rest: list[tuple[bytes, Addr, float]] = []
        self._rx_rest_at = 0.0
        self._backlog: list[tuple[bytes, Addr]] = []   # waiting for the socket to drain
        self._writing = False
        self._extra = {"socket": sock, "sockname": sock.getsockname()}
        #: counters for ``stats``: wake-ups that read, datagrams read, sends deferred
        self.wakeups = 0
        self.received = 0
        self.deferred = 0

    def start(self) -> None:
        proto = self._protocol
        proto.rx_time_exact = self._io.timestamps and proto._monotonic_loop
        proto.connection_made(self)
        self._start_reading()

    # -- asyncio.BaseTransport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
        self._backlog.clear()
        self._rx_rest = []
        self._loop.call_soon(self._finish_close)

    def _finish_close(self) -> None:
        try:
            self._protocol.connection_lost(None)
        finally:
            self._sock.close()

    def abort(self) -> None:
        self.close()

    def get_write_buffer_size(self) -> int:
        return len(self._backlog)

    # -- sending

    def sendto(self, data: Any, addr: Any = None) -> None:
        if addr is None:
            raise ValueError("BatchedTransport.sendto needs an address")
        self.send_many([(bytes(data), (addr[0], addr[1]))])

    def send_many(self, items: list[tuple[bytes, Addr]]) -> None:
        """Send ``items`` in order: at once as far as the socket takes them, the rest when it
        can take more (never reordered behind later sends)."""
        if self._closing or not items:
            return
        if self._backlog:
            self._backlog.extend(items)
            return
        done = self._io.send(items)
        if done < len(items):
            self._backlog = items[done:]
            self.deferred += len(self._backlog)
            self._loop.add_writer(self._fd, self._on_writable)
            self._writing = True

    def _on_writable(self) -> None:
        backlog = self._backlog
        done = self._io.send(backlog)
        if done >= len(backlog):
            self._backlog = []
            self._loop.remove_writer(self._fd)
            self._writing = False
        else:
            self._backlog = backlog[done:]

    @property
    def send_errors(self) -> int:
        return int(self._io.send_errors)

    # -- receiving

    def _start_reading(self) -> None:
        if not self._reading and not self._closing:
            self._loop.add_reader(self._fd, self._on_readable)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def _read_once(self) -> int:
        """One ``recvmmsg`` worth of datagrams to the protocol; how many (-1: a full batch,
        more may be waiting)."""
        io = self._io
        limit = io.batch
        rest = self._rx_rest
        if rest:
            # what a coalesced read brought beyond one batch: next batch, aged by the wait
            waited = time.monotonic() - self._rx_rest_at
            batch = [(d, a, age + waited) for d, a, age in rest[:limit]]
            del rest[:limit]
        else:
            try:
                batch = io.recv()
            except OSError as exc:
                log.debug("socket receive error: %s", exc)
                self._protocol.error_received(exc)
                return 0
            if not batch:
                return 0
            if len(batch) > limit:
                self._rx_rest = batch[limit:]
                self._rx_rest_at = time.monotonic()
                del batch[limit:]
            self.wakeups += 1
        self.received += len(batch)
        self._protocol.datagrams_received(batch)
        return -1 if len(batch) >= limit or self._rx_rest else len(batch)

    def _on_readable(self) -> None:
        self._after_read(self._read_once())

    def realign(self) -> None:
        """After the protocol's timer read the socket (``poll``) and re-armed: move the next
        coalesced read to what ``rx_resume_at`` says now (the re-armed timer), so the two fall
        in one wake-up."""
        resume_at = getattr(self._protocol, "rx_resume_at", None)
        if self._resume is None or self._closing or resume_at is None:
            return
        loop = self._loop
        when = resume_at(loop.time(), self._coalesce)
        if self._resume_when >= 0.0 and abs(when - self._resume_when) > 0.0005:
            self._resume.cancel()
            self._resume = loop.call_at(when, self._on_resume)
            self._resume_when = when

    def backlogged(self) -> bool:
        """Whether the last read took a full batch, so more may wait in the socket (the next
        read is due in the next loop pass)."""
        return self._resume is not None and self._resume_when < 0.0

    def hold_reads(self) -> None:
        """Read nothing until :meth:`release_reads` (datagrams wait in the socket buffer; with
        kernel timestamps their arrival times stay exact).  For a driver with a deadline of its
        own: the load tester holds reads for the last ~1.5 ms before each media tick, so a
        batch being taken when the tick falls due never delays it."""
        if self._held or self._closing:
            return
        self._held = True
        self._stop_reading()
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None

    def release_reads(self) -> None:
        """End :meth:`hold_reads`: read what waits now and go back to the usual schedule."""
        if not self._held:
            return
        self._held = False
        if not self._closing:
            self._after_read(self._read_once())

    def poll(self) -> None:
        """Read what is waiting now, if reads are being coalesced (a resume is scheduled); the
        schedule moves on only when something was read.  For the protocol's timer, so what
        arrived since the last read is handled before the timer's work."""
        if self._resume is None or self._closing or self._held:
            return
        got = self._read_once()
        if got:
            self._resume.cancel()
            self._resume = None
            self._after_read(got)

    def _on_resume(self) -> None:
        self._resume = None
        if not self._closing:
            self._after_read(self._read_once())

    def _after_read(self, got: int) -> None:
        """Schedule the next read: a full batch is followed by another in the next loop pass
        (timers that fell due meanwhile run first: a big burst never holds up a media tick for
        more than one batch); datagrams read -> again when ``rx_resume_at`` says (after the
        coalescing interval, or at the trunk flush); nothing read -> wait for the socket,
        unless reads are at the trunk flush and datagrams came within two of its intervals."""
        if self._closing:
            return
        loop = self._loop
        if got:
            self._last_data = loop.time()
        if got < 0:
            self._stop_reading()
            self._resume = self._loop.call_later(0.0, self._on_resume)
            self._resume_when = -1.0     # uvloop: a plain Handle (no when()); never realigned
        elif self._coalesce > 0.0 and (got or (self._lazy and loop.time() - self._last_data
                                                < 2 * RX_COALESCE_TRUNKED)):
            # datagrams read -> read again later; nothing read, but datagrams came within the
            # last two coalescing intervals -> the stream goes on, keep to the schedule;
            # unless the protocol wants the next datagram read as soon as it comes (``now``)
            resume_at = getattr(self._protocol, "rx_resume_at", None)
            now = loop.time()
            when = now + self._coalesce if resume_at is None else resume_at(now, self._coalesce)
            if when > now:
                self._stop_reading()
                self._lazy = when - now > self._coalesce + 1e-6
                self._resume = loop.call_at(when, self._on_resume)
                self._resume_when = when
                return
            self._lazy = False
            if self._resume is not None:
                self._resume.cancel()
                self._resume = None
            self._start_reading()
        else:
            if self._resume is not None:
                self._resume.cancel()
                self._resume = None
            self._start_reading()


def _batched_io_available(loop: asyncio.AbstractEventLoop) -> bool:
    """The batched transport needs a loop with ``add_reader`` (uvloop, the selector loop)."""
    if os.environ.get("IAXGW_NO_BATCHED_IO", "") not in ("", "0"):
        return False
    try:
        probe = loop.add_reader
    except AttributeError:
        return False
    return callable(probe) and type(loop).__name__ != "ProactorEventLoop"


async def open_endpoint(config: IaxConfig, bind: Addr = ("0.0.0.0", 4569), *,
                        loop: asyncio.AbstractEventLoop | None = None,
                        role_name: str = "iaxgw", endpoint: Endpoint | None = None,
                        on_event: Callable[[Event], None] | None = None,
                        on_datagram: DatagramHook | None = None,
                        on_datagrams: DatagramsHook | None = None,
                        impair: Impairment | None = None, batched: bool | None = None,
                        rx_coalesce: float | None = None,
                        socket_buffer: int = 0) -> DatagramServer:
    """Bind a UDP socket on ``bind`` and run an Endpoint (given or built from ``config``);
    ``impair`` puts a seedable bad network (:mod:`iaxgw.gateway.driver.impair`) before the socket.

    ``batched`` (default: when the loop supports it, unless ``IAXGW_NO_BATCHED_IO=1``) uses
    :class:`BatchedTransport` (``recvmmsg``/``sendmmsg``, receive coalescing of ``rx_coalesce``
    seconds, default :data:`RX_COALESCE`); otherwise the loop's own datagram transport.
    ``socket_buffer``: the socket buffer sizes to ask for (default: ``IAXGW_SOCKET_BUFFER``, else
    :data:`SOCKET_BUFFER`)."""
    loop = loop or asyncio.get_running_loop()
    ep = endpoint or Endpoint(config, local_addr=bind, role_name=role_name)
    server = DatagramServer(ep, loop=loop, on_event=on_event, on_datagram=on_datagram,
                            on_datagrams=on_datagrams, impair=impair)
    if batched is None:
        batched = _batched_io_available(loop)
    if batched:
        sock = _bound_udp_socket(bind)
        BatchedTransport(loop, sock, server,
                         coalesce=RX_COALESCE if rx_coalesce is None else rx_coalesce).start()
    else:
        await loop.create_datagram_endpoint(lambda: server, local_addr=bind)
    if server.transport is not None:
        size = socket_buffer or socket_buffer_from_env(os.environ.get(SOCKET_BUFFER_ENV))
        server.rcvbuf, server.sndbuf = size_socket_buffers(server.transport, size)
    return server


def _bound_udp_socket(bind: Addr) -> socket.socket:
    """A non-blocking UDP socket bound to ``bind`` (IPv4 or IPv6 literal, or a name)."""
    infos = socket.getaddrinfo(bind[0] or None, bind[1], type=socket.SOCK_DGRAM,
                               flags=socket.AI_PASSIVE)
    err: OSError | None = None
    for family, kind, proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.bind(sockaddr)
        except OSError as exc:
            sock.close()
            err = exc
            continue
        return sock
    raise err or OSError(f"cannot bind {format_addr(bind)}")


#: Bytes asked for each of the socket's receive and send buffers.  A trunk sender flushes a
#: whole tick at once (1,000 trunked calls: ~140 datagrams of ~1.2 KB every 20 ms), which
#: overflows Linux's default 208 KiB receive buffer and the kernel drops the excess.
SOCKET_BUFFER = 4 * 1024 * 1024
#: ``IAXGW_SOCKET_BUFFER`` (bytes) sets it for the processes that do not size their own (``iaxgw
#: serve``): ``iaxgw lab`` gives its serve 8 KiB per call, as the load tester takes; at 5,000
#: calls serve's queue was seen at 22 MB after a stall, and with 4 MiB the kernel dropped trunk
#: datagrams the shards had sent (6.7 % and 17 % of the echo lost in two runs)
SOCKET_BUFFER_ENV = "IAXGW_SOCKET_BUFFER"
SOCKET_BUFFER_RANGE = (64 * 1024, 256 * 1024 * 1024)


def socket_buffer_from_env(text: str | None, default: int = SOCKET_BUFFER) -> int:
    """``IAXGW_SOCKET_BUFFER``'s size (``default`` when unset); a value that is not a number of
    bytes in :data:`SOCKET_BUFFER_RANGE` is logged and ignored."""
    if not text:
        return default
    lo, hi = SOCKET_BUFFER_RANGE
    try:
        size = int(text)
    except ValueError:
        size = -1
    if not lo <= size <= hi:
        log.warning("%s=%r ignored: give a number of bytes from %d to %d; using %d",
                    SOCKET_BUFFER_ENV, text, lo, hi, default)
        return default
    return size


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
