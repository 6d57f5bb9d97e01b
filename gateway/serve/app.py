"""The long-running gateway behind ``iaxgw serve``: one Endpoint, its dialplan, media, tooling.

:class:`GatewayApp` owns

* the UDP endpoint (``server.open_endpoint``) and its event pump: ``IncomingCall`` starts the
  dialplan for the call's context/exten as a task on an
  :class:`~iaxgw.gateway.pbx.session.IaxChannel`;
  the task ending hangs the call up, the call ending cancels the task;
* ONE media ticker for all calls on a 20 ms grid of the loop clock (deadline = start + k x 20 ms),
  which asks each active call's MediaHandler for ``next_payload()`` and sends it;
* the control socket (``iaxgw show``), the pcap writer, ``--debug-frames`` logging and the
  Prometheus metrics.

``stop()`` hangs up every call (cause 16), waits up to 2 s for the HANGUPs to be acknowledged,
then closes everything; no task or timer outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from iaxgw._core.constants import format_names
from iaxgw.gateway.conf.model import Entry, IaxConfig
from iaxgw.gateway.driver.framelog import describe
from iaxgw.gateway.driver.gcpace import GcPacer
from iaxgw.gateway.driver.pcap import PcapWriter
from iaxgw.gateway.iax2 import events as ev
from iaxgw.gateway.iax2.address import Addr, format_addr
from iaxgw.gateway.pbx.channel import Channel
from iaxgw.gateway.pbx.originate import Originator, PhoneChannel
from iaxgw.gateway.pbx.session import IaxChannel
from iaxgw.gateway.safefs import default_spool_dir, private_dir
from iaxgw.gateway.serve.control import CommandRefused, ControlError, ControlServer, to_jsonable
from iaxgw.gateway.serve.prometheus import Metrics, metrics_url
from iaxgw.gateway.serve.showrows import endpoint_stat_groups, peer_detail, registry_rows, user_rows

log = logging.getLogger("iaxgw.serve")
_T = TypeVar("_T")
frame_log = logging.getLogger("iaxgw.frames")

TICK = 0.020                # media pacing: one 20 ms voice frame per call per tick
STOP_GRACE = 2.0            # s to wait for the HANGUPs to be acknowledged on stop
DIALPLAN_GRACE = 2.0        # s a dialplan may run on after its call ended (h extension)
GC_IDLE_EVERY = 0.1         # s between the paced collector's young collections (pace_gc)
GC_STEP_EVERY = 10          # ... and every this many of them, survivors frozen instead
DEFAULT_SITE = "office-b"


class Guest(Protocol):
    """Calls of another owner on our endpoint (a load test run through this serve): their
    events and media go to it, not to the dialplan."""

    def owns(self, callno: int) -> bool: ...

    def handle_event(self, event: ev.Event) -> None: ...

    def handle_media(self, callno: int, ts: int, payload: bytes, now: float) -> None: ...

    def shutdown(self) -> None:
        """The serve stops: end the guest's calls now."""


CommandHook = Callable[[str, Mapping[str, Any]], Any]


class StartError(Exception):
    """The gateway cannot start: bad config, address in use, ... (exit code 1)."""


class PeerNotFound(StartError):
    """``--peer`` names no peer/friend entry (a usage error: exit code 2)."""


@dataclass(slots=True)
class ServeOptions:
    """Everything ``iaxgw serve`` was given (the CLI fills it; tests build it directly)."""

    peer: str
    config_dir: Path | None = None
    bind: Addr | None = None
    peer_host: Addr | None = None
    pcap: Path | None = None
    metrics_addr: Addr | None = None  # --metrics-addr / --metrics-port: (host, port), 0 = any
    debug_frames: bool = False
    control: str | None = None
    phones: Path | None = None
    spool: Path | None = None
    site: str = DEFAULT_SITE          # which embedded config without --config
    impair: Any = None                # --impair: an ImpairSpec (gateway/driver/impair.py) or None
    keys: Path | None = None          # --keys: RSA keys folder (default: keys/ beside iax.conf)


@dataclass(slots=True)
class Site:
    """A loaded configuration: iax.conf, the dialplan and the emulated phones."""

    config: IaxConfig
    dialplan: Any
    phones: Any
    bind: Addr
    config_dir: Path


def _config_error_types() -> tuple[type[Exception], ...]:
    from iaxgw.gateway.conf.asterisk_conf import ConfigError

    return (ConfigError, OSError, UnicodeDecodeError)


def load_site(opts: ServeOptions) -> Site:
    """Load and check the configuration named by ``opts`` (raises StartError / PeerNotFound)."""
    from iaxgw.gateway.conf.config import load_iax_conf, load_phones_conf
    from iaxgw.gateway.iax2.rsakeys import key_problems

    errors = _config_error_types()
    embedded = opts.config_dir is None
    if embedded:
        from iaxgw.gateway.conf.config import default_config_dir

        try:
            config_dir = default_config_dir(opts.site)
        except ValueError as exc:
            raise StartError(str(exc)) from None
    else:
        assert opts.config_dir is not None
        config_dir = opts.config_dir
        if not config_dir.is_dir():
            raise StartError(f"{config_dir}: no such directory")
    iax_path = config_dir / "iax.conf"
    ext_path = config_dir / "extensions.conf"
    for p in (iax_path, ext_path):
        if not p.is_file():
            raise StartError(f"{p}: no such file (--config needs iax.conf and extensions.conf)")
    try:
        config = load_iax_conf(iax_path)
    except errors as exc:
        raise StartError(str(exc)) from None
    if opts.keys is not None:
        if not opts.keys.is_dir():
            raise StartError(f"--keys {opts.keys}: no such directory")
        config.keys_dir = opts.keys
    for problem in key_problems(config):
        log.warning("%s", problem)
    entry = config.entries.get(opts.peer)
    if entry is None or not entry.is_peer:
        names = sorted(n for n, e in config.entries.items() if e.is_peer)
        listing = ", ".join(names) if names else "none"
        what = "is a user-only entry" if entry is not None else "is not in"
        raise PeerNotFound(f"{opts.peer!r} {what} {iax_path}; peer/friend entries: {listing}")
    host = opts.peer_host        # the embedded configs already say 127.0.0.10 / 127.0.0.20
    if host is not None:
        config.entries[opts.peer] = replace(entry, host=host[0], port=host[1], dynamic=False)
    try:
        from iaxgw.gateway.pbx.dialplan import load_extensions_conf
        from iaxgw.gateway.pbx.dialplan_apps import APPLICATIONS

        dialplan = load_extensions_conf(ext_path, APPLICATIONS)
    except errors as exc:
        raise StartError(str(exc)) from None
    phones_path = opts.phones or (config_dir / "phones.conf")
    phones: Any = None
    if opts.phones is not None and not phones_path.is_file():
        raise StartError(f"{phones_path}: no such file")
    if phones_path.is_file():
        try:
            phones = load_phones_conf(phones_path)
        except errors as exc:
            raise StartError(str(exc)) from None
    bind = opts.bind
    if bind is None:
        bind = (config.general.bindaddr, config.general.bindport)
    return Site(config=config, dialplan=dialplan, phones=phones, bind=bind,
                config_dir=config_dir)


class GatewayApp:
    """One running site: endpoint + dialplan + media ticker + control/pcap/metrics."""

    def __init__(self, site: Site, *, peer: str, pcap: Path | None = None,
                 metrics_addr: Addr | None = None, debug_frames: bool = False,
                 control: str | None = None, spool: Path | None = None,
                 role_name: str = DEFAULT_SITE,
                 open_endpoint: Callable[..., Awaitable[Any]] | None = None,
                 impair: Any = None) -> None:
        self.site = site
        self.impairment: Any = None
        if impair is not None:
            from iaxgw.gateway.driver.impair import Impairment

            self.impairment = Impairment(impair)
        self._open_endpoint = open_endpoint
        self.config = site.config
        self.peer = peer
        self.bind = site.bind
        self.pcap_path = pcap
        self.metrics_addr = metrics_addr
        #: where start() says what it bound (serve's CLI: stderr); None: the log only
        self.announce: Callable[[str], None] | None = None
        self.debug_frames = debug_frames
        #: called with (direction, data, addr, now) for every datagram in and out (tests, tools)
        self.datagram_observer: Callable[[str, bytes, Addr, float], None] | None = None
        self.control_path = control
        self.spool_dir = spool or default_spool_dir()
        self.role_name = role_name
        self.sessions: dict[int, IaxChannel] = {}
        self.metrics = Metrics()
        self.metrics_bound: Addr | None = None
        self.local_addr: Addr = site.bind
        self.calls_total = {"in": 0, "out": 0}
        self.call_outcomes: dict[str, int] = {}
        self._server: Any = None
        self._endpoint: Any = None
        self._pcap: PcapWriter | None = None
        self._control: ControlServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._media: dict[int, IaxChannel] = {}
        #: of ``_media``: calls whose handler echoes at once (``immediate``), and the others,
        #: which the 20 ms ticker asks for a payload
        self._echo_calls: set[int] = set()
        self._ticked: dict[int, IaxChannel] = {}
        #: set when a call joins ``_ticked``: the media ticker sleeps while there is none
        self._ticked_ready = asyncio.Event()
        self._echo_out: list[tuple[int, bytes]] = []
        self._ticker: asyncio.Task[None] | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._stopping = False
        self._started = False
        self._stop_event: asyncio.Event | None = None
        self._stop_asked: asyncio.Event | None = None     # `iaxgw ctl stop`
        #: calls placed on demand (`iaxgw ctl originate`) from emulated local phones
        self.originator = Originator(self, site.dialplan, self._run_dialplan)
        self.guest: Guest | None = None
        #: more control commands (a hook raises KeyError for a command not its own)
        self.command_hooks: list[CommandHook] = []
        self.ticks = 0
        self.late_ticks = 0
        #: pace the garbage collector (gateway/driver/gcpace.py) while serving: process-wide,
        #: so only a process that is this serve (the CLI sets it), never one that embeds it
        self.pace_gc = False
        self._gc: GcPacer | None = None
        self._gc_task: asyncio.Task[None] | None = None

    @classmethod
    def from_options(cls, opts: ServeOptions) -> GatewayApp:
        site = load_site(opts)
        return cls(site, peer=opts.peer, pcap=opts.pcap, metrics_addr=opts.metrics_addr,
                   debug_frames=opts.debug_frames, control=opts.control, spool=opts.spool,
                   role_name=opts.site, impair=opts.impair)

    @classmethod
    def viewer(cls, config: IaxConfig, endpoint: Any, *, peer: str, role_name: str,
               bind: Addr) -> GatewayApp:
        """An app never started that shows another owner's running ``endpoint`` (a load
        test's) with serve's own ``introspect`` rows: ``iaxgw show`` reads both alike."""
        site = Site(config=config, dialplan=None, phones=None, bind=bind, config_dir=Path("."))
        app = cls(site, peer=peer, role_name=role_name)
        app._endpoint = endpoint
        app.local_addr = bind
        return app

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def endpoint(self) -> Any:
        return self._endpoint

    async def start(self) -> None:
        open_endpoint = self._open_endpoint or open_server_endpoint
        loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._stop_asked = asyncio.Event()
        try:
            private_dir(self.spool_dir)
        except OSError as exc:
            raise StartError(f"spool {self.spool_dir}: {exc.strerror or exc}") from None
        if self.pcap_path is not None:
            try:
                self._pcap = PcapWriter(self.pcap_path)
            except OSError as exc:
                raise StartError(f"--pcap {self.pcap_path}: {exc.strerror or exc}") from None
        extra: dict[str, Any] = {}
        if self.impairment is not None:
            extra["impair"] = self.impairment
        # the per-datagram hook only when something consumes it (metrics, pcap, frame log,
        # an observer)
        if (self._pcap is not None or self.metrics_addr is not None or self.debug_frames
                or self.datagram_observer is not None):
            extra["on_datagram"] = self._on_datagram
        try:
            self._server = await open_endpoint(self.config, self.bind, role_name=self.role_name,
                                               **extra)
        except OSError as exc:
            await self._close_tools()
            raise StartError(f"cannot bind {format_addr(self.bind)}: "
                             f"{exc.strerror or exc}") from None
        self._endpoint = self._server.endpoint
        self.local_addr = self._server.local_addr
        self._server.set_event_handler(self._on_event)
        self._endpoint.set_media_sink(self._on_media)
        if self.control_path:
            self._control = ControlServer(self.control_path, self.introspect)
            try:
                await self._control.start()
            except ControlError as exc:
                self._control = None
                await self._close_all()
                raise StartError(str(exc)) from None
        if self.metrics_addr is not None:
            host, port = self.metrics_addr
            try:
                self.metrics_bound = self.metrics.start_http(port, host)
            except OSError as exc:
                await self._close_all()
                raise StartError(f"metrics: cannot bind {format_addr(self.metrics_addr)}: "
                                 f"{exc.strerror or exc}") from None
        self._ticker = loop.create_task(self._media_ticker(), name="iaxgw-media-ticker")
        self._housekeeping = loop.create_task(self._housekeeping_loop(), name="iaxgw-housekeeping")
        if self.pace_gc:
            self._gc = GcPacer()
            self._gc.start()
            self._gc_task = loop.create_task(self._gc_loop(self._gc), name="iaxgw-gc")
        self._started = True
        self._say(f"{self.role_name} serving on {format_addr(self.local_addr)}, "
                  f"peer {self.peer}")
        if self.metrics_bound is not None:
            self._say(f"metrics on {metrics_url(*self.metrics_bound)}")

    def _say(self, line: str) -> None:
        log.info("%s", line)
        if self.announce is not None:
            self.announce(line)

    async def stop(self) -> None:
        """Hang up every call (cause 16), wait <= 2 s for the ACKs, close everything."""
        if self._stopping:
            return
        self._stopping = True
        if self.guest is not None:
            self.guest.shutdown()
        await self.originator.stop()
        if self._endpoint is not None:
            for session in list(self.sessions.values()):
                if not session.hungup:
                    with contextlib.suppress(Exception):
                        await session.hangup(16)
            await self._wait_calls_gone(STOP_GRACE)
        for session in list(self.sessions.values()):
            session.ended(16)
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        await self._close_all()
        if self._stop_event is not None:
            self._stop_event.set()

    async def _wait_calls_gone(self, timeout: float) -> None:
        """Until the endpoint holds no more unacknowledged call state, at most ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                pending = len(self._endpoint.channels())   # TERMINATING until the ACK
            except Exception:
                pending = 0
            if not pending:
                return
            await asyncio.sleep(0.02)

    async def _close_tools(self) -> None:
        if self._pcap is not None:
            self._pcap.close()
            self._pcap = None
        self.metrics.stop_http()

    async def _close_all(self) -> None:
        for task in (self._ticker, self._housekeeping, self._gc_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._ticker = self._housekeeping = self._gc_task = None
        if self._gc is not None:
            self._gc.stop()
            self._gc = None
        if self._control is not None:
            await self._control.close()
            self._control = None
        if self._server is not None:
            with contextlib.suppress(Exception):
                result = self._server.close()
                if asyncio.iscoroutine(result):
                    await result
            self._server = None
        await self._close_tools()

    async def run_until_signal(self) -> int:
        """Start, serve until SIGINT/SIGTERM, stop; returns the exit code (0)."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - not on Unix
                pass
        try:
            if not self._started:
                await self.start()
            assert self._stop_event is not None and self._stop_asked is not None
            waits = {asyncio.ensure_future(e.wait())
                     for e in (stop, self._stop_event, self._stop_asked)}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            log.info("stopping: hanging up %d call(s)", len(self.sessions))
            await self.stop()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
        return 0

    # --- endpoint plumbing ---------------------------------------------------------------

    def command(self, fn: Callable[[float], _T]) -> _T:
        """Run ``fn(now)`` on the endpoint, then let the server send what it queued."""
        loop = asyncio.get_running_loop()
        result = fn(loop.time())
        self._server.flush()
        return result

    def _on_datagram(self, direction: str, data: bytes, addr: Addr, now: float) -> None:
        d = "out" if direction in ("tx", "out", "send", "sent") else "in"
        if self.datagram_observer is not None:
            self.datagram_observer(direction, data, addr, now)
        self.metrics.on_datagram(d, data)
        if self._pcap is not None:
            self._pcap.write("tx" if d == "out" else "rx", data, self.local_addr, addr)
        if self.debug_frames and frame_log.isEnabledFor(logging.DEBUG):
            frame_log.debug("%s", describe("tx" if d == "out" else "rx", data, addr))

    @property
    def datagram_server(self) -> Any:
        """The protocol core's datagram server under our endpoint (a guest drives it too)."""
        return getattr(self._server, "raw", self._server)

    def _on_media(self, callno: int, ts: int, payload: bytes, now: float) -> None:
        guest = self.guest
        if guest is not None and guest.owns(callno):
            guest.handle_media(callno, ts, payload, now)
            return
        # immediate echo (Echo.immediate): queued for one send after this receive batch, not
        # re-entering the endpoint from inside its media sink
        if callno in self._echo_calls:
            out = self._echo_out
            if not out:
                asyncio.get_running_loop().call_soon(self._flush_echo)
            out.append((callno, payload))
            return
        session = self.sessions.get(callno)
        if session is not None:
            session.voice(bytes(payload), ts)

    def _on_event(self, event: ev.Event) -> None:
        guest = self.guest
        if guest is not None and guest.owns(getattr(event, "callno", -1)):
            guest.handle_event(event)
            return
        if isinstance(event, ev.IncomingCall):
            self._incoming(event)
        elif isinstance(event, ev.CallProgress):
            session = self.sessions.get(event.callno)
            if session is not None:
                session.progress(event.kind)
        elif isinstance(event, ev.CallEnded):
            self._call_ended(event.callno, event.cause)
        elif isinstance(event, ev.VoiceReceived):
            session = self.sessions.get(event.callno)
            if session is not None:
                session.voice(event.payload, event.ts)
        elif isinstance(event, ev.PeerStatusChanged):
            log.info("peer %s is now %s (%d ms)", event.peer, event.status, event.rtt_ms)
        elif isinstance(event, ev.AuthFailed | ev.ProtocolError):
            log.warning("%s", event)

    def _codec_name(self, codec: int) -> str:
        return {4: "ulaw", 8: "alaw"}.get(codec, "ulaw")

    def _incoming(self, event: ev.IncomingCall) -> None:
        session = IaxChannel(self, event.callno, direction="in", peer=event.peer,
                             exten=event.exten, context=event.context,
                             caller_num=event.caller_num, caller_name=event.caller_name,
                             codec=self._codec_name(event.codec))
        self.sessions[event.callno] = session
        self.calls_total["in"] += 1
        self.metrics.calls_active.set(len(self.sessions))
        if self._stopping:
            self.command(lambda now: self._endpoint.hangup(event.callno, now, cause=16))
            session.ended(16)
            return
        task = asyncio.get_running_loop().create_task(self._run_dialplan(session),
                                                      name=f"dialplan-{session.name}")
        session.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_dialplan(self, session: IaxChannel | PhoneChannel) -> None:
        from iaxgw.gateway.pbx.dialplan_apps import run

        try:
            await run(self.site.dialplan, session, session.context, session.exten,
                      **self._dialplan_kwargs())
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("%s: dialplan failed", session.name)
        finally:
            if not session.hungup:
                with contextlib.suppress(Exception):
                    await session.hangup(16)

    def _dialplan_kwargs(self) -> dict[str, Any]:
        return {"phones": self.site.phones, "spool_dir": self.spool_dir}

    def place_call(self, peer: str, exten: str, caller: Channel | None) -> IaxChannel:
        entry = self.config.peer(peer)
        if entry is None:
            raise KeyError(f"no peer {peer!r} in iax.conf")
        kwargs: dict[str, Any] = {}
        if caller is not None:
            kwargs = {"caller_num": caller.caller_num, "caller_name": caller.caller_name}
        callno = int(self.command(lambda now: self._endpoint.call(peer, exten, now, **kwargs)))
        session = IaxChannel(self, callno, direction="out", peer=peer, exten=exten,
                             context=entry.peercontext or "", codec=caller.codec if caller
                             else "ulaw")
        self.sessions[callno] = session
        self.calls_total["out"] += 1
        self.metrics.calls_active.set(len(self.sessions))
        return session

    def _call_ended(self, callno: int, cause: int) -> None:
        session = self.sessions.pop(callno, None)
        self._media.pop(callno, None)
        self._ticked.pop(callno, None)
        self._echo_calls.discard(callno)
        if session is None:
            return
        session.ended(cause)
        task = session.task
        if task is not None and not task.done():
            # the dialplan sees the hangup (and may run its h extension); cancel it if it lingers
            handle = asyncio.get_running_loop().call_later(DIALPLAN_GRACE, task.cancel)
            task.add_done_callback(lambda _t: handle.cancel())
        outcome = session.outcome or "failed"
        self.call_outcomes[outcome] = self.call_outcomes.get(outcome, 0) + 1
        self.metrics.call_ended(session.direction, outcome)
        self.metrics.calls_active.set(len(self.sessions))

    def media_changed(self, session: IaxChannel) -> None:
        callno = session.callno
        ep = self._endpoint
        immediate = False
        if session.media_active:
            self._media[callno] = session
            immediate = bool(getattr(session.handler, "immediate", False))
            if immediate:
                self._echo_calls.add(callno)
                self._ticked.pop(callno, None)
            else:
                self._ticked[callno] = session
                self._ticked_ready.set()
                self._echo_calls.discard(callno)
        else:
            self._media.pop(callno, None)
            self._ticked.pop(callno, None)
            self._echo_calls.discard(callno)
        # an immediate echo's trunk entries go straight back inside the endpoint (compiled
        # path); its other voice frames still come through _on_media
        set_echo = getattr(ep, "set_echo", None)
        if set_echo is not None:
            set_echo(callno, immediate)

    def _flush_echo(self) -> None:
        out, self._echo_out = self._echo_out, []
        ep = self._endpoint
        if ep is None or self._server is None:
            return
        now = asyncio.get_running_loop().time()
        echo = self._echo_calls          # the calls still up with an immediate handler
        send = ep.send_voice
        for callno, payload in out:
            if callno in echo:
                try:
                    send(callno, payload, now)
                except Exception as exc:
                    log.debug("call %d: echo send_voice: %s", callno, exc)
        # trunked: nothing to send until the trunk timer; the receive batch's flush is pending
        flush_soon = getattr(self._server, "flush_soon", None)
        if flush_soon is not None:
            flush_soon()
        else:
            self._server.flush()

    # --- media ticker --------------------------------------------------------------------

    async def _media_ticker(self) -> None:
        """One 20 ms grid for all calls: deadline k = start + k x TICK, never sleep(TICK)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        k = 0
        while True:
            if not self._ticked:
                # nothing to pace (Echo answers as voice arrives): no wake-ups until a call
                # needs the grid, which then starts afresh
                self._ticked_ready.clear()
                await self._ticked_ready.wait()
                start = loop.time()
                k = 0
            k += 1
            deadline = start + k * TICK
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                behind = int(-delay / TICK)
                if behind >= 5:      # the loop stalled: skip the missed ticks, keep the grid
                    self.late_ticks += behind
                    k += behind
                await asyncio.sleep(0)
            self.ticks += 1
            if not self._ticked:
                continue
            now = loop.time()
            sent = False
            for session in list(self._ticked.values()):
                handler = session.handler
                if handler is None or not session.media_active:
                    continue
                try:
                    payload = handler.next_payload()
                except Exception:
                    log.exception("%s: media handler failed next_payload", session.name)
                    session.handler = None
                    self._media.pop(session.callno, None)
                    self._ticked.pop(session.callno, None)
                    continue
                if payload:
                    try:
                        self._endpoint.send_voice(session.callno, payload, now)
                        sent = True
                    except Exception as exc:
                        log.debug("%s: send_voice: %s", session.name, exc)
            if sent:
                self._server.flush()

    async def _gc_loop(self, pacer: GcPacer) -> None:
        """The paced collector's moments: young collections as they fill (every 100 ms at
        most), survivors frozen once a second.  Without it a full collection stopped serve for
        up to 217 ms at 5,000 calls: setups and echoed media waited that long."""
        n = 0
        while True:
            await asyncio.sleep(GC_IDLE_EVERY)
            n += 1
            if n % GC_STEP_EVERY == 0:
                pacer.step()
            else:
                pacer.idle()

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                self.metrics.update_snapshot(to_jsonable(self._endpoint.stats()),
                                             self.peer_rows())

    # --- introspection (control socket) --------------------------------------------------

    def introspect(self, cmd: str, request: Mapping[str, Any] | None = None) -> Any:
        if cmd == "peers":
            return self.peer_rows()
        if cmd == "channels":
            return self.channel_rows()
        if cmd == "netstats":
            return self.netstat_rows()
        if cmd == "stats":
            return self.stats_dict()
        if cmd == "registry":
            return registry_rows(self._endpoint.registry())
        if cmd == "users":
            return user_rows(self.config)
        if cmd == "peer":
            return self.peer_detail(str((request or {}).get("name", "")))
        return self.operate(cmd, request or {})

    def operate(self, cmd: str, request: Mapping[str, Any]) -> Any:
        """What ``iaxgw ctl`` asks of a serve: ``originate`` (and its status), ``stop``; a load
        test's rate/pause/resume are refused with the reason."""
        for hook in self.command_hooks:
            with contextlib.suppress(KeyError):
                return hook(cmd, request)
        if cmd == "originate":
            return self.originator.originate(request)
        if cmd == "originate_status":
            return self.originator.status(request)
        if cmd == "stop":
            if self._stop_asked is not None:
                self._stop_asked.set()
            log.info("stop asked over the control socket")
            return {"stopping": True, "calls": len(self.sessions)}
        if cmd in ("rate", "pause", "resume"):
            raise CommandRefused(f"`{cmd}` drives a load test (`iaxgw loadtest --control "
                                 "PATH`); iaxgw serve places no load: it takes originate and "
                                 "stop")
        raise KeyError(cmd)

    def peer_detail(self, name: str) -> dict[str, Any] | None:
        """``show peer NAME``: None when NAME is no peer/friend entry."""
        entry = self.config.peer(name)
        if entry is None:
            return None
        live: Mapping[str, Any] = {}
        with contextlib.suppress(Exception):
            for p in to_jsonable(self._endpoint.peers()):
                if p.get("name") == name:
                    live = p
        return peer_detail(entry, live, self.config.general.shown)

    def peer_rows(self) -> list[dict[str, Any]]:
        live: dict[str, dict[str, Any]] = {}
        with contextlib.suppress(Exception):
            for p in to_jsonable(self._endpoint.peers()):
                live[str(p.get("name"))] = p
        rows = []
        for name, entry in self.config.entries.items():
            if not entry.is_peer:
                continue
            rows.append(_peer_row(name, entry, live.get(name, {})))
        return rows

    def channel_rows(self) -> list[dict[str, Any]]:
        rows = []
        for c in to_jsonable(self._endpoint.channels()):
            callno = int(_get(c, "local_callno", _get(c, "callno", 0)))
            session = self.sessions.get(callno)
            addr = _get(c, "addr", None)
            peer = str(_get(c, "peer", ""))
            rows.append({
                "channel": session.name if session else f"IAX2/{peer or 'unknown'}-{callno}",
                "peer": addr[0] if isinstance(addr, list | tuple) and addr else peer,
                # as Asterisk: the USERNAME of the NEW (sent or received), else the user's name
                "username": _get(c, "username", "")
                or (peer if _get(c, "direction", "") == "in" else "") or "(None)",
                "callno": callno,
                "peercallno": int(_get(c, "remote_callno", _get(c, "peercallno", 0))),
                "oseqno": int(_get(c, "oseqno", 0)),
                "iseqno": int(_get(c, "iseqno", 0)),
                # as Asterisk's: Lag is the delay of the peer's receive report, Jitter and
                # JitBuf the jitter buffer's (iaxgw has none: -1 and 0, as Asterisk without
                # jitterbuffer); our measured jitter is in netstats and the load test's figures
                "lag": self._remote_delay(callno),
                "jitter": -1,
                "jitbuf": 0,
                "format": _format_name(_get(c, "format", 0)),
                "first_msg": _get(c, "first_msg", ""),
                "last_msg": _get(c, "last_msg", ""),
                "state": _get(c, "state", ""),
                "direction": _get(c, "direction", session.direction if session else ""),
                "trunk": bool(_get(c, "trunk", False)),
                "frames_rx": int(_get(c, "frames_rx", 0)),
                "frames_tx": int(_get(c, "frames_tx", 0)),
            })
        return rows

    def _remote_delay(self, callno: int) -> int:
        try:
            call = self._endpoint.call_info(callno)
        except Exception:
            return 0
        rr = getattr(call, "remote_rr", None) or {}
        return int(rr.get("delay", 0))

    def netstat_rows(self) -> list[dict[str, Any]]:
        rows = []
        for n in to_jsonable(self._endpoint.netstats()):
            callno = int(_get(n, "local_callno", _get(n, "callno", 0)))
            session = self.sessions.get(callno)
            peer = str(_get(n, "peer", ""))
            rows.append({
                "channel": session.name if session else f"IAX2/{peer or 'unknown'}-{callno}",
                "rtt": int(_get(n, "rtt_ms", _get(n, "rtt", -1))),     # -1: no PONG yet
                "local": _get(n, "local", {}) or {},
                "remote": _get(n, "remote", {}) or {},
                "first_msg": _get(n, "first_msg", ""),
                "last_msg": _get(n, "last_msg", ""),
            })
        return rows

    def stats_dict(self) -> dict[str, Any]:
        stats = endpoint_stat_groups(self._endpoint, self.config.general.trunkmtu)
        stats["calls"] = {"active": len(self.sessions), "total_in": self.calls_total["in"],
                          "total_out": self.calls_total["out"], **{
                              f"outcome_{k}": v for k, v in sorted(self.call_outcomes.items())}}
        stats["media"] = {"ticks": self.ticks, "late_ticks": self.late_ticks,
                          "active_streams": len(self._media)}
        if self._pcap is not None:
            stats["pcap_records"] = self._pcap.count
        if self.impairment is not None:
            stats["impair"] = self.impairment.snapshot()
        return stats


def _get(obj: Any, key: str, default: Any) -> Any:
    if isinstance(obj, Mapping):
        value = obj.get(key, default)
    else:
        value = getattr(obj, key, default)
    return default if value is None else value


def _format_name(fmt: Any) -> str:
    """The codec name of a channel's format (a name as given; "unknown": none or not a mask)."""
    if isinstance(fmt, str):
        return fmt
    try:
        names = format_names(int(fmt))
    except (TypeError, ValueError):
        return "unknown"
    return names[0] if names else "unknown"


def _peer_row(name: str, entry: Entry, live: Mapping[str, Any]) -> dict[str, Any]:
    addr = live.get("addr")
    if isinstance(addr, list | tuple) and len(addr) == 2:
        host, port = str(addr[0]), int(addr[1])
    elif entry.host:
        host, port = entry.host, entry.port
    else:
        host, port = "", 0
    row: dict[str, Any] = {
        "name": name,
        "username": entry.username or "",
        "host": host or None,
        "port": port,
        "mask": "255.255.255.255",
        "dynamic": bool(live.get("dynamic", entry.dynamic)),
        "trunk": bool(live.get("trunk", entry.trunk)),
        "encryption": bool(entry.encryption),      # "(E)" as in iax2 show peers
        "maxms": entry.qualify,
        "lastms": live.get("rtt_ms"),
        "description": entry.shown.get("description", ""),
    }
    status = live.get("status")
    if isinstance(status, str) and status:
        row["status"] = status
    return row


class _ServerAdapter:
    """``server.DatagramServer`` (protocol core) seen through the surface GatewayApp uses."""

    def __init__(self, server: Any, events: list[ev.Event]) -> None:
        self._server = server
        self.raw = server
        self.endpoint = server.endpoint
        self._handler: Callable[[ev.Event], None] | None = None
        self._early = events
        sock = server.transport.get_extra_info("sockname") if server.transport else None
        self.local_addr: Addr = (str(sock[0]), int(sock[1])) if sock else ("0.0.0.0", 0)

    def set_event_handler(self, handler: Callable[[ev.Event], None]) -> None:
        self._handler = handler
        self._server.on_event = handler
        early, self._early[:] = list(self._early), []
        for event in early:
            handler(event)

    def flush(self) -> None:
        self._server.flush()

    def flush_soon(self) -> None:
        self._server.flush_soon()

    def close(self) -> None:
        self._server.close()


async def open_server_endpoint(config: IaxConfig, bind: Addr, *, role_name: str = DEFAULT_SITE,
                               on_datagram: Callable[[str, bytes, Addr, float], None]
                               | None = None, impair: Any = None) -> Any:
    """``server.open_endpoint`` on ``bind``, seen through :class:`_ServerAdapter`."""
    from iaxgw.gateway.driver.server import open_endpoint

    early: list[ev.Event] = []
    server = await open_endpoint(config, bind, role_name=role_name, on_event=early.append,
                                 on_datagram=on_datagram, impair=impair)
    return _ServerAdapter(server, early)


def run_app(app: GatewayApp) -> int:
    """Run ``app`` until a signal, on uvloop (a dependency); returns the exit code."""
    import uvloop

    started = time.monotonic()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        code = runner.run(app.run_until_signal())
    log.info("served for %.1f s", time.monotonic() - started)
    return code
