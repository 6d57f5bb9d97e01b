"""The ``iaxgw loadtest`` engine: many concurrent IAX2 calls from one Endpoint, measured.

One :class:`LoadRunner` owns one UDP endpoint (``gateway.driver.server.open_endpoint``) and drives
it from four places on one event loop (uvloop):

* the **attempt scheduler** starts calls at ``--rate`` on a fixed grid while fewer than ``--calls``
  are live and the target's call-number budget allows (Asterisk: 2,048 per source IP, each held
  until 60 s after its call);
* the **event pump** (the server's event handler) maps CallProgress/CallEnded onto each call's
  :class:`~iaxgw.sim.load.metrics.CallStats` and, in hairpin mode, answers the calls that come back;
* ONE **media ticker** for all calls on a drift-free 20 ms grid (deadline = t0 + k x 20 ms) whose
  per-tick work is a loop of ``send_voice`` over pre-encoded payloads;
* the **media sink** calls the call's ``on_rx`` for every received voice frame (and, for a
  returning hairpin leg, echoes the payload straight back).

Every call ends in bounded time: no ANSWER within ``--setup-timeout`` -> we hang up and count
TIMEOUT (or NO_ANSWER when the target had ACCEPTed); the endpoint's retransmission give-up ends
calls whose peer went silent; a run deadline bounds the whole run.  Roles without ``--config``
(``--site`` picks the other one):
we are office-b calling office-a at 127.0.0.10:4569 (the lab's Asterisk), from 127.0.0.20:4569.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import signal
import sys
import time
import wave
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from iaxgw._core.constants import FORMAT_ALAW, FORMAT_ULAW
from iaxgw._core.probe import datagram_census
from iaxgw._core.trunk import trunk_entry_stats
from iaxgw.gateway.conf.model import IaxConfig
from iaxgw.gateway.driver.gcpace import GcPacer
from iaxgw.gateway.driver.pcap import PcapWriter
from iaxgw.gateway.driver.realtime import realtime
from iaxgw.gateway.iax2 import events as ev
from iaxgw.gateway.iax2.address import Addr, format_addr
from iaxgw.sim.load import signature as sig
from iaxgw.sim.load.limits import generator_limits, limited_by
from iaxgw.sim.load.loadtest_control import RunControl
from iaxgw.sim.load.loadtest_metrics import LoadtestMetrics
from iaxgw.sim.load.loadtest_plan import (
    AuthWindow,
    CallnoBudget,
    LoadtestOptions,
    PlanError,
    PlannedCall,
    lossy_caller_settings,
    plan_calls,
)
from iaxgw.sim.load.metrics import CallStats, Mode
from iaxgw.sim.report.report import (
    LoadStats,
    ReportDirError,
    TimeseriesStream,
    echo_missing_pct,
    probe_report_dir,
    worst_lines,
    write_report,
)
from iaxgw.sim.scale.capacity import (
    DEFAULT_STOP_WHEN,
    CapacitySearch,
    StopRule,
    step_lines,
    write_capacity_plot,
)

log = logging.getLogger("iaxgw.loadtest")

TICK = 0.020
REPORT_EVERY = 1.0               # s between statistics ticks (run from the media ticker)
SWEEP_SLICE = 0.002              # s of a statistics tick's per-call work per media tick
CHORE_WINDOW = 0.012             # s after a tick's deadline in which housekeeping may start
GC_STEP_DELAY = 25               # ticks from a statistics tick to the GC pacer's step
READ_GUARD = 0.0015              # s before a media tick in which the socket is not read
ANALYSIS_SLICE = 0.006           # s of audio analysis after a tick at most ...
TICK_MARGIN = 0.004              # ... and never closer than this to the next tick,
ANALYSIS_STEP = 0.0005           # in steps of about one call (then received frames are read)
ANALYSIS_WINDOWS = 24            # 40 ms windows examined per ~2 s batch of a call (of ~50)
RTT_EVERY = 2                    # echo RTT on batches 1-3, then every 2nd (FFT over the batch)
FAR_BEHIND_TICKS = 5             # a stalled loop skips missed ticks instead of bursting them
CALLER_BASE = 100000             # CALLING_NUMBER = base + call index (correlates hairpin legs)
DEFAULT_ROLE = "office-b"        # without --config: we are office-b ...
DEFAULT_PEER_HOST: Addr = ("127.0.0.10", 4569)   # ... calling office-a here
DEFAULT_BIND: Addr = ("127.0.0.20", 4569)
#: Trunk datagrams without per-call timestamps (trunktimestamps=no, Asterisk's default) carry no
#: media timestamp per entry: the receiver stamps every entry with the datagram's trunk time, so two
#: frames of one call in one datagram share a timestamp and the next looks like a gap.  Such frames
#: are numbered in arrival order instead (ts = previous + 20).  In echo mode loss and jitter come
#: from the frame stamps of our own frames (``loss_method`` "stamp", sim/load/metrics.py) whatever
#: the transport; in the other modes such frames give no loss figure (n/a).
QUIET_TAIL_S = 0.3               # echo: no media sent in a call's last 300 ms (see _progress)
#: PINGs of ours for the far end's receive report (RR IEs of its PONG: forward loss): 3 s after
#: ANSWER, then every 10 s, and 1.2 s and 0.15 s before our HANGUP (a PING or PONG lost then
#: is not resent in time: two chances); no more once a report shows the far end does not count
#: (Asterisk without jitterbuffer: 1 frame)
RR_FIRST_S = 3.0
RR_EVERY_S = 10.0
RR_LAST_S = (1.2, 0.15)
STOP_AUDIO_MIN_S = 1.0           # a call up less than this at a graceful stop: audio n/a
EARLY_DROP_S = 1.0               # an answered call the far end ends this much early is "dropped"


class LoadtestError(Exception):
    """The load test cannot start (bad config, address in use, ...)."""


class ConfigUsageError(LoadtestError):
    """A configuration choice made on the command line is wrong (exit 2)."""


class CannotRunError(LoadtestError):
    """The run could not take place at all: our address is taken (exit 3)."""


#: Exit codes of ``iaxgw loadtest`` / ``iaxgw lab`` (README "Exit codes").
EXIT_PASS = 0
EXIT_FAIL = 1           # failed calls, audio not verified, or a target not reached
EXIT_USAGE = 2          # bad option or configuration
EXIT_CANNOT_RUN = 3     # our address is taken, or the target never answered anything
EXIT_SIGINT = 130       # interrupted by SIGINT (Ctrl-C); SIGTERM: 143
EXIT_SIGTERM = 143

#: Where each embedded site lives (the seed's two-site trunk on loopback).
SITE_ADDRS: dict[str, Addr] = {"office-a": ("127.0.0.10", 4569),
                               "office-b": ("127.0.0.20", 4569)}


def bind_hint(bind: Addr, role: str) -> str:
    """What to do when our address is taken (most often by a serve or Asterisk playing the
    same site)."""
    other = next((s for s in SITE_ADDRS if s != role), None)
    site = (f"run the load test as the other site (--site {other}, which calls {role} at "
            f"{format_addr(bind)}), or " if role in SITE_ADDRS and other else "")
    return (f"another process holds it (an `iaxgw serve` or Asterisk playing {role}?): "
            f"{site}give a free local address with --bind ADDR[:PORT]")


# ---------------------------------------------------------------------------------------------
# Setup: configuration, media
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Target:
    """Our configuration, the peer entry we call and the addresses in use."""

    config: IaxConfig
    peer: str
    peer_addr: Addr
    bind: Addr
    role: str


def load_target(opts: LoadtestOptions, config: IaxConfig | None = None) -> Target:
    """Read ``--config`` (or the embedded seed as office-b) and apply ``--peer-host``/``--bind``,
    ``--trunk`` and ``--trunktimestamps``."""
    role = opts.site or DEFAULT_ROLE
    embedded = config is None and opts.config_dir is None
    if config is None:
        from iaxgw.gateway.conf.config import load_iax_conf

        if opts.config_dir is not None:
            path = opts.config_dir / "iax.conf"
            role = opts.config_dir.name
        else:
            from iaxgw.gateway.conf.config import default_config_dir

            path = Path(default_config_dir(role)) / "iax.conf"
        if not path.is_file():
            raise ConfigUsageError(f"{path}: no such file")
        try:
            config = load_iax_conf(path)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigUsageError(str(exc)) from None
        except Exception as exc:  # the parser's ConfigError
            raise ConfigUsageError(str(exc)) from None
    if opts.keys_dir is not None:
        config.keys_dir = opts.keys_dir
    entry = config.entries.get(opts.peer)
    if entry is None or not entry.is_peer:
        names = ", ".join(sorted(n for n, e in config.entries.items() if e.is_peer)) or "none"
        raise ConfigUsageError(f"--peer {opts.peer!r} is not a peer/friend entry of the "
                               f"configuration; peer/friend entries: {names}")
    host = opts.peer_host
    if host is None and embedded:
        host = SITE_ADDRS.get(opts.peer, DEFAULT_PEER_HOST)
    if host is None:
        if entry.host is None or entry.dynamic:
            raise ConfigUsageError(f"peer {opts.peer!r} has no fixed host: give --peer-host")
        host = (entry.host, entry.port)
    changes: dict[str, Any] = {"host": host[0], "port": host[1], "dynamic": False}
    if opts.trunk is not None:
        changes["trunk"] = opts.trunk
    if opts.encryption is not None:
        changes["encryption"] = 0x8001 if opts.encryption else 0
        changes["forceencryption"] = opts.encryption
    if opts.no_autokill:
        changes["qualify"] = None      # qualify's maxms would autokill our NEWs
    if entry.codecs and opts.codec not in entry.codecs:
        changes["codecs"] = [opts.codec, *entry.codecs]
    config.entries[opts.peer] = replace(entry, **changes)
    if opts.trunktimestamps is not None:
        config.general.trunktimestamps = opts.trunktimestamps
    bind = opts.bind
    if bind is None:
        bind = (SITE_ADDRS.get(role, DEFAULT_BIND) if embedded
                else (config.general.bindaddr, config.general.bindport))
    return Target(config=config, peer=opts.peer, peer_addr=host, bind=bind, role=role)


def wav_payloads(path: Path, codec: sig.Codec) -> list[bytes]:
    """A WAV file (8 kHz, mono, 16-bit PCM) as 20 ms G.711 payloads."""
    try:
        with wave.open(str(path), "rb") as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (8000, 1, 2):
                raise PlanError(f"--media {path}: need 8 kHz mono 16-bit PCM, got "
                                f"{w.getframerate()} Hz, {w.getnchannels()} channel(s), "
                                f"{8 * w.getsampwidth()}-bit")
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise PlanError(f"--media {path}: not a readable WAV file ({exc})") from None
    pcm = np.frombuffer(raw, dtype="<i2").astype(np.int16)
    n = len(pcm) // sig.FRAME_SAMPLES
    if n == 0:
        raise PlanError(f"--media {path}: shorter than one 20 ms frame")
    data = sig.encode(pcm[: n * sig.FRAME_SAMPLES], codec)
    return [data[i:i + sig.FRAME_SAMPLES] for i in range(0, len(data), sig.FRAME_SAMPLES)]


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class LoadtestResult:
    summary: dict[str, Any]
    exit_code: int
    records: list[Any] = field(default_factory=list)
    timeseries: list[dict[str, Any]] = field(default_factory=list)
    report_files: list[Path] = field(default_factory=list)
    #: calls.csv's start_time / callno / peer_callno / exten of a record
    call_ids: Callable[[Any], dict[str, Any]] | None = None
    #: failed calls by cause and second of the run (the failures plot)
    failures: dict[str, dict[int, int]] = field(default_factory=dict)


def classify_end(event: ev.CallEnded, accepted: bool) -> tuple[str, str | None]:
    """(outcome, cause text) of a call that ended before it was answered."""
    cause, text = event.cause, event.cause_text or None
    if event.reason == "reject":
        return "REJECT", _cause_text(cause, text)
    if event.reason == "timeout":
        # the endpoint names the frame never acknowledged, or the NEW autokill gave up on
        return "TIMEOUT", text or "no response from peer (retransmissions gave up)"
    if event.reason == "local" and text and "encryption" in text:
        return "REJECT", f"{cause} {text}" if cause > 0 else text
    if event.reason == "inval":
        return "ERROR", "call unknown to peer (INVAL)"
    if cause == 17:
        return "BUSY", None
    if cause in (34, 42):
        return "CONGESTION", None
    if cause in (18, 19):
        return "NO_ANSWER", _cause_text(cause, text)
    return "HANGUP", _cause_text(cause, text)


def _cause_text(cause: int, text: str | None) -> str | None:
    from iaxgw._core.constants import CAUSES

    if cause <= 0 and not text:
        return "no cause given"
    name = text or CAUSES.get(cause, "")
    return f"{cause} {name}".strip() if cause > 0 else name


def trunk_entries(data: bytes) -> tuple[int, int]:
    """(voice entries, their payload bytes) of a meta trunk datagram (docs/protocol.md §3.1)."""
    return trunk_entry_stats(data)


# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------


def start_metrics(prom: LoadtestMetrics | None, addr: Addr | None,
                  on_fail: Callable[[], None], note: str = "") -> None:
    """``--metrics-addr``: serve ``prom`` on ``addr`` from now on and say where (stderr, with
    ``note``); an address that cannot be bound: ``on_fail()``, then exit 3 (CannotRunError).
    One process's run and a sharded run's parent alike."""
    if prom is None or addr is None:
        return
    try:
        url = prom.start(addr)
    except OSError as exc:
        on_fail()
        raise CannotRunError(str(exc.strerror)) from None
    print(f"iaxgw loadtest: metrics on {url}{note}", file=sys.stderr, flush=True)


@dataclass(slots=True)
class LiveCall:
    """One attempt of ours: the plan, the endpoint's call number, the stats."""

    plan: PlannedCall
    stats: CallStats
    callno: int = -1
    accepted: bool = False
    answered: bool = False
    ended: bool = False
    media: bool = False
    hangup_handle: asyncio.TimerHandle | None = None
    timeout_handle: asyncio.TimerHandle | None = None
    tail_handle: asyncio.TimerHandle | None = None
    rr_handle: asyncio.TimerHandle | None = None     # our next PING for the far end's RR
    #: per PING of ours (its timestamp), our voice frames sent by then (a handful a call)
    sent_at_ping: dict[int, int] = field(default_factory=dict)
    planned_end: float = 0.0
    returned: int = -1            # hairpin: call number of the leg that came back
    dropped: bool = False
    pending: bool = False         # in LoadRunner.window (NEW sent, not accepted/ended)
    encrypted: bool = False       # answered with AES-128 on its full and mini frames
    up: bool = False              # counted in LoadRunner.up (answered, not ended)
    peer_callno_seen: bool = False  # the far end's call number is noted in the stats


class MediaCalls:
    """The answered calls that send voice at each media tick, by call number, each with its
    TxProbe kept beside it: a tick's list of probes is one copy of a dict's values instead of
    an attribute walk over every call (at 1,700 calls a shard, that walk took 9 % of its time).
    """

    __slots__ = ("_calls", "_probes")

    def __init__(self) -> None:
        self._calls: dict[int, LiveCall] = {}
        self._probes: dict[int, Any] = {}

    def add(self, call: LiveCall) -> None:
        self._calls[call.callno] = call
        self._probes[call.callno] = call.stats.tx

    def pop(self, callno: int, default: LiveCall | None = None) -> LiveCall | None:
        """Stop ``callno``'s voice (no error when it is not sending)."""
        self._probes.pop(callno, None)
        return self._calls.pop(callno, default)

    def values(self) -> Iterable[LiveCall]:
        return self._calls.values()

    def probes(self) -> list[Any]:
        """Every sending call's TxProbe, in the order the calls started sending."""
        return list(self._probes.values())

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, callno: object) -> bool:
        return callno in self._calls


#: Setup time per call the run deadline allows when the --max-pending window paces the ramp.
SETUP_ALLOWANCE_S = 0.5
#: A rate or concurrency target counts as reached within this share of it.
TARGET_TOLERANCE = 0.10
#: What can hold the scheduler back, as named in ``targets.capped_by`` (the concurrency cap
#: itself, ``--calls``, is the target and not a cap).
CAP_AUTH = "maxauthreq"
CAP_CALLNOS = "callno_budget"
CAP_LOOP = "scheduler_late"


def socket_buffer(calls: int) -> int:
    """The load tester's socket buffers: 8 KiB per concurrent call (16 MiB at 2,000 calls),
    at least the server's default, at most 64 MiB.  The kernel charges ~830 bytes per received
    mini frame against twice the size asked for, so 16 MiB holds ~0.4 s of 2,000 calls' mini
    frames.  At 2,000 non-trunked calls, before receives were coalesced (UDP_GRO), our
    receive queue was seen at 5-24 MB when our reads fell behind; with 4 MiB the kernel
    dropped what the target had in fact sent, and it counted as loss."""
    from iaxgw.gateway.driver.server import SOCKET_BUFFER

    return min(max(SOCKET_BUFFER, calls * 8192), 64 * 1024 * 1024)


def udp_rcvbuf_errors() -> int | None:
    """This machine's count of UDP datagrams dropped for a full receive buffer (Linux
    ``/proc/net/snmp`` Udp RcvbufErrors), or None where it cannot be read."""
    try:
        lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()
                 if ln.startswith("Udp:")]
        head, values = lines[0], lines[1]
        return int(values[head.index("RcvbufErrors")])
    except (OSError, IndexError, ValueError):
        return None


class LoadRunner:
    """Runs one load test; see the module docstring."""

    def __init__(self, opts: LoadtestOptions, target: Target, *,
                 clock: Callable[[], float] = time.monotonic,
                 screen: Any = None, impair: Any = None, attach: Any = None) -> None:
        self.opts = opts
        #: through a running serve: its endpoint (``loadtest_through.Attachment``), else None
        self.attach = attach
        self.impairment: Any = None      # --impair: gateway.driver.impair.Impairment on our socket
        if impair is not None:
            from iaxgw.gateway.driver.impair import Impairment

            self.impairment = Impairment(impair)
        self.target = target
        self.clock = clock
        self.mode: Mode = "echo" if opts.media == "tone" else "none"
        codec: sig.Codec = "alaw" if opts.codec == "alaw" else "ulaw"
        # audio analysis runs in slices between ticks (analyze_until), not in stats.tick()
        self.stats = LoadStats(target_calls=opts.calls, mode=self.mode, codec=codec, clock=clock,
                               analysis_in_tick=False, analysis_windows=ANALYSIS_WINDOWS,
                               rtt_every=RTT_EVERY)
        self.stats.local = format_addr(target.bind)
        self.plan = plan_calls(opts)
        self.budget = CallnoBudget(opts.callno_budget)
        self.calls: dict[int, LiveCall] = {}          # our call number -> call
        self.placed_callnos: set[int] = set()         # every call number we placed
        self.by_index: dict[int, LiveCall] = {}       # live calls only
        self.window = AuthWindow(opts.max_pending)     # auth slots at the target
        self.waited: dict[str, float] = {}              # cap -> seconds the scheduler waited
        self._wait_since: tuple[str, float] | None = None
        self.first_start: float | None = None
        self.last_start: float | None = None
        #: the rate's measure: the intervals between consecutive attempts that the rate paced,
        #: their count and their time (s).  An attempt whose slot was already due when the
        #: concurrency cap freed (a call ended) or a pause ended was held by the cap, not the
        #: rate: its interval is not counted.  Waits on the auth window or call numbers are
        #: counted: a shortfall of the rate, named in ``capped_by``.
        self.starts_free = 0
        self.span_free = 0.0
        self._last_start_t: float | None = None
        self._pend_asked = 0.0      # the asked rate integrated since the last attempt
        self._asked_mark = 0.0      # ... up to this time
        self._held_by_cap = False   # the next attempt's slot came due while at the cap
        self._at_cap = False        # the scheduler waits at the cap (or paused) now
        self.up = 0                 # answered calls up now, and the most at once
        self.up_peak = 0
        self.placed_peak = 0        # the most calls placed and not ended at once
        self._ended_map = bytearray(len(self.plan))         # 1 per planned call that ended
        self.media_calls = MediaCalls()                # answered, sending
        self.returned: dict[int, int] = {}            # hairpin leg callno -> our call index
        self.returned_legs = 0
        self.unmatched_incoming = 0
        self.dropped = 0
        self.late_ticks = 0
        self.ticks = 0
        self.max_tick_ms = 0.0
        # per media tick (50 a second): unboxed doubles, 16 bytes a tick where two lists of
        # floats took 80 (a 10-minute run: 0.5 MB instead of 2.4 MB)
        self.late_ms: array[float] = array("d")  # per tick: start lateness vs the grid (ms)
        self.gc = GcPacer()              # no full GC pauses in the media loop (driver/gcpace.py)
        self._tick_open = False          # a statistics tick is being swept (_periodic_begin)
        self._sweep_done = False         # ... and its sweep is done: _periodic_end next
        self._tick_began = 0.0           # when the open statistics tick began (clock)
        self.work_ms: array[float] = array("d")  # per tick: time spent sending (ms)
        self.notes: list[str] = list(opts.warnings)
        #: what --realtime got for the media loop: "on", "off" or "refused: <why>"
        self.realtime = "off"
        self.started_attempts = 0
        self.stopping = False
        self.interrupted = False
        #: what the operator asks while the run goes (iaxgw ctl, hot keys): rate, pause, stop
        self.control = RunControl(opts.cps, clock=clock, on_change=self._control_changed,
                                  on_stop=self._graceful_stop)
        self.asked_starts = 0.0     # the asked rate integrated over the free scheduling time
        self._control_server: Any = None      # --control: gateway.serve.control.ControlServer
        self._keys: Any = None                # hot keys on a terminal (loadtest_control)
        self.stopped_early = False  # a graceful stop came before every planned attempt
        self.stop_signal: int | None = None    # SIGINT/SIGTERM that stopped the run, if any
        self.deadline_hit = False
        self._rcvbuf_errors0: int | None = None
        self.screen = screen
        self._pcap: PcapWriter | None = None     # --pcap
        self._local: Addr = target.bind           # our bound address (the capture's)
        #: --metrics-addr: the run's Prometheus metrics (sim/load/loadtest_metrics.py)
        self.prom: LoadtestMetrics | None = None
        if opts.metrics_addr is not None:
            self.prom = LoadtestMetrics(opts.calls)
            self.stats.on_record = self.prom.on_record
        self.loop: asyncio.AbstractEventLoop | None = None    # set by a shard's control reader
        self.capacity = capacity_search(opts)    # --step: raises the concurrency step by step
        if self.capacity is not None:
            self.stats.on_samples = self._capacity_second
        self.ended_early: str | None = None    # why the run was ended before its plan was done
        self._server: Any = None
        self._ep: Any = None
        self._now: Callable[[], float] = clock      # the endpoint's clock: the loop's
        self._rx_exact = False
        self._hold: Callable[[], None] | None = None     # the transport's hold_reads
        self._reads_held = False
        self._saw_nots = False
        self.encrypted_calls = 0          # answered calls that were encrypted
        self.answered_calls = 0
        self._rx_nots = False       # the datagram being received is a trunk without entry ts
        self._codec = FORMAT_ALAW if opts.codec == "alaw" else FORMAT_ULAW
        self._slot = asyncio.Event()
        self._done = asyncio.Event()
        self._media_payloads: list[bytes] | None = None
        if opts.media == "silence":
            self._media_payloads = [sig.default_plan().silence(codec)]
        elif opts.media != "tone":
            self._media_payloads = wav_payloads(Path(opts.media), codec)
        self.t0 = clock()

    # --- lifecycle ------------------------------------------------------------------------

    def run_deadline(self, attempts: int | None = None, cps: float | None = None) -> float:
        """Seconds after which the whole run (or its ``attempts`` still to place at ``cps``)
        is cut short, whatever the target does."""
        o = self.opts
        attempts = o.attempts if attempts is None else max(attempts, 1)
        cps = o.cps if cps is None else cps
        rounds = math.ceil(attempts / o.calls)
        per_call = o.setup_timeout + o.duration[1] + o.hangup_timeout
        budget_wait = 65.0 if self.budget.limit < attempts else 0.0
        # the setup window admits max_pending calls at a time: allow 0.5 s per setup
        ramp = max(attempts / cps, attempts * SETUP_ALLOWANCE_S / o.max_pending)
        return ramp + rounds * per_call + budget_wait + 15.0

    async def _wait_done(self) -> None:
        """Until the run is done; TimeoutError at its deadline.  Time paused and a rate
        changed while it goes move the deadline out to what the rest of the plan needs."""
        deadline = self.clock() + self.run_deadline()
        while not self._done.is_set():
            now = self.clock()
            left = len(self.plan) - self.started_attempts
            if self.control.changed and left > 0:
                rest = self.run_deadline(left, self.control.rate)
                deadline = max(deadline, now + rest)
            if now >= deadline:
                raise TimeoutError
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), min(deadline - now, 1.0))

    async def _open_endpoint(self) -> None:
        """Our own UDP endpoint; or, through a running serve (``attach``), serve's: its
        events, media and datagram counts of our calls are routed to us."""
        from iaxgw.gateway.driver.server import open_endpoint

        if self.attach is not None:
            self._server = self.attach.server
            self.attach.route(self)
            return
        t = self.target
        self._open_pcap()
        try:
            self._server = await open_endpoint(t.config, t.bind, role_name=t.role,
                                               on_event=self._on_event,
                                               on_datagram=self._on_datagram,
                                               on_datagrams=self._on_datagrams,
                                               impair=self.impairment,
                                               socket_buffer=socket_buffer(
                                                   max(self.opts.calls, self.opts.max_calls or 0)))
        except OSError as exc:
            self._close_pcap()
            raise CannotRunError(f"cannot bind {format_addr(t.bind)}: "
                                 f"{exc.strerror or exc}; {bind_hint(t.bind, t.role)}") from None
        self._server.endpoint.set_media_sink(self._on_media)

    async def _close_endpoint(self) -> None:
        if self.attach is not None:
            self.attach.unroute(self)
            return
        with contextlib.suppress(Exception):
            res = self._server.close()
            if asyncio.iscoroutine(res):
                await res

    def owns(self, callno: int) -> bool:
        """``callno`` is one of our calls (through a serve: its events come to us)."""
        return callno in self.calls

    def handle_event(self, event: ev.Event) -> None:
        self._on_event(event)

    def handle_media(self, callno: int, ts: int, payload: bytes, now: float) -> None:
        self._on_media(callno, ts, payload, now)

    def shutdown(self) -> None:
        """The serve we run through stops: a graceful stop of ours, at once."""
        self.control.stop("serve")

    async def run(self) -> LoadtestResult:
        loop = asyncio.get_running_loop()
        await self._open_endpoint()
        self._ep = self._server.endpoint
        self._now = loop.time
        with contextlib.suppress(Exception):
            name = self._server.transport.get_extra_info("sockname")
            self._local = (str(name[0]), int(name[1]))
        self._start_metrics()
        # exact arrival times are on time.monotonic(): usable only when that is our clock
        self._rx_exact = (bool(getattr(self._server, "rx_time_exact", False))
                          and self.clock is time.monotonic)
        # reads may wait for the media tick only where the kernel stamps arrival times
        self._hold = (getattr(self._server.transport, "hold_reads", None)
                      if self._rx_exact else None)
        self._rcvbuf_errors0 = udp_rcvbuf_errors()
        await self._open_controls(loop)
        installed = []
        for s in (signal.SIGINT, signal.SIGTERM) if self.attach is None else ():
            try:
                loop.add_signal_handler(s, self._interrupt, int(s))
                installed.append(s)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        stream = None
        if self.opts.report_dir is not None:
            try:
                stream = TimeseriesStream(Path(self.opts.report_dir) / "timeseries.csv")
                self.stats.on_row = stream.write
            except OSError as exc:
                self.notes.append(f"timeseries.csv not written while the run goes: {exc}")
        if self.attach is None:       # a process-wide pacer: not inside a serve
            self.gc.start()
        tasks = [loop.create_task(self._scheduler(), name="loadtest-scheduler"),
                 loop.create_task(self._ticker(), name="loadtest-media")]
        if self.screen is not None:
            self.screen.start()
        # --realtime: process-wide too, so never inside a serve; undone when the run ends
        priority = contextlib.ExitStack()
        self.realtime = priority.enter_context(
            realtime(bool(self.opts.realtime) and self.attach is None))
        if self.realtime.startswith("refused"):
            self.notes.append(f"--realtime {self.realtime}: the run went on at the ordinary "
                              "priority")
        try:
            try:
                await self._wait_done()
            except TimeoutError:
                self.deadline_hit = True
                self.notes.append(f"run deadline ({self.run_deadline():.0f} s) hit: "
                                  "calls still up were ended")
            await self._stop_all()
        finally:
            for s in installed:
                loop.remove_signal_handler(s)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._close_controls()
            if self.screen is not None:
                self.screen.stop()
            await self._linger()
            await self._close_endpoint()
            self.gc.stop()
            self.stats.on_row = None
            if self.prom is not None:
                self.prom.stop()
            self._close_pcap()
            if stream is not None:
                stream.close()
            priority.close()
        return self.result()

    def _open_pcap(self) -> None:
        if self.opts.pcap is not None:
            self._pcap = open_pcap(self.opts.pcap)

    def _close_pcap(self) -> None:
        if self._pcap is not None:
            self._pcap.close()

    def _capture(self, direction: str, data: bytes, addr: Addr, age: float = 0.0) -> None:
        pcap = self._pcap
        if pcap is not None:
            pcap.write("tx" if direction == "out" else "rx", data, self._local, addr,
                       time.time() - age)

    def _start_metrics(self) -> None:
        """--metrics-addr: serve the metrics from now on and say where (stderr)."""
        def close_socket() -> None:
            with contextlib.suppress(Exception):
                self._server.close()

        start_metrics(self.prom, self.opts.metrics_addr, close_socket)

    async def _open_controls(self, loop: asyncio.AbstractEventLoop) -> None:
        """``--control PATH``: the control socket (``iaxgw show`` / ``iaxgw ctl``); and the
        hot keys when stdin is a terminal.  A socket that cannot be opened: exit 3."""
        from iaxgw.gateway.serve.control import ControlError, ControlServer
        from iaxgw.sim.load.loadtest_control import HotKeys, control_handler

        if self.opts.control:
            server = ControlServer(self.opts.control, control_handler(self))
            try:
                await server.start()
            except ControlError as exc:
                with contextlib.suppress(Exception):
                    self._server.close()
                raise CannotRunError(f"--control: {exc}") from None
            self._control_server = server
        if self.opts.hot_keys and HotKeys.available():
            keys = HotKeys(self.control)
            keys.start(loop)
            self._keys = keys
            if self.screen is not None:
                self.screen.keys_help = True

    async def _close_controls(self) -> None:
        if self._keys is not None:
            self._keys.close()
            self._keys = None
        if self._control_server is not None:
            await self._control_server.close()
            self._control_server = None

    def endpoint_view(self) -> Any:
        """Our endpoint seen as ``iaxgw serve`` shows its own (peers, channels, netstats)."""
        from iaxgw.gateway.serve.app import GatewayApp

        t = self.target
        return GatewayApp.viewer(t.config, self._ep, peer=t.peer, role_name=t.role,
                                 bind=t.bind)

    def control_stats(self) -> dict[str, Any]:
        """``iaxgw show stats`` of a running load test: the endpoint's counters and ours."""
        from iaxgw.sim.load.loadtest_control import endpoint_stats

        stats = (endpoint_stats(self._ep, self.target.config.general.trunkmtu)
                 if self._ep is not None else {})
        st = self.stats
        stats["loadtest"] = {
            "elapsed_s": round(self.clock() - self.t0, 1), "rate_asked_cps": self.control.rate,
            "paused": self.control.paused, "stopping": self.stopping,
            "attempts": self.started_attempts, "planned": len(self.plan),
            "calls_up": self.up, "calls_target": self.opts.calls, "in_setup": self.pending,
            "answered": len(st.setup_ms), "failed": sum(st.causes.values()),
        }
        return stats

    def targets(self, failed: int) -> dict[str, Any]:
        """Did the run reach the rate and concurrency it was asked for, and if not, what held
        it back (``capped_by``, each with the time the scheduler waited on it)."""
        o = self.opts
        now = self.clock()
        self._waiting(None, now)
        self._close_rate_interval(now)
        n = self.starts_free
        rate = n / self.span_free if n >= 1 and self.span_free > 0 else None
        # the rate asked while the scheduler had room (`iaxgw ctl rate`, hot keys: each
        # moment's own figure, time-weighted), and the calls it could place before a stop
        asked_rate = (self.asked_starts / self.span_free
                      if self.control.changed and self.span_free > 0 else o.cps)
        asked_calls = min(o.calls, self.started_attempts if self.stopped_early else o.attempts)
        waited = {k: round(v, 3) for k, v in self.waited.items() if v > 0}
        rate_short = rate is not None and rate < asked_rate * (1.0 - TARGET_TOLERANCE)
        slack = int(asked_calls * 0.02)
        # judged on the calls placed at once (in setup or up): a setup a lossy link held for
        # 12 s may come up after other calls ended, which is the target's time, not a cap of
        # the ramp (noted below)
        calls_short = self.placed_peak + failed + slack < asked_calls
        if not calls_short and self.up_peak + failed + slack < asked_calls:
            self.notes.append(
                f"at most {self.up_peak} of {asked_calls} calls were up at once although "
                f"{self.placed_peak} were placed at once: setups took longer than the first "
                "calls lasted")
        caps: list[str] = []
        if rate_short or calls_short:
            caps = sorted(waited, key=lambda k: -waited[k])
            if rate_short and not caps:
                caps.append(CAP_LOOP)
            if calls_short:
                if asked_calls > 1 and o.duration[0] < asked_calls / asked_rate:
                    caps.append("duration")
                if failed:
                    caps.append("failed")
        capped = [{"cap": c, "waited_s": waited.get(c), "detail": _cap_detail(c, self)}
                  for c in caps]
        met = not (rate_short or calls_short)
        if not met and not self.interrupted:
            what = []
            if rate_short:
                what.append(f"rate {rate:.1f}/s of {asked_rate:.3g}/s asked")
            if calls_short:
                what.append(f"{self.up_peak} calls up at most of {asked_calls} asked")
            why = "; ".join(_cap_detail(c, self) for c in caps) or "unknown"
            self.notes.append(f"target not reached: {', '.join(what)}; capped by {why}"
                              + (" (--allow-underrun: not a failure)" if o.allow_underrun
                                 else ""))
        return {
            "rate": {"asked": round(asked_rate, 3),
                     "achieved": round(rate, 2) if rate is not None else None,
                     "asked_history": self.control.history()},
            "calls": {"asked": asked_calls, "peak": self.up_peak,
                      "placed_peak": self.placed_peak},
            "met": met,
            "capped_by": capped,
            "waited_s": waited,
            "setup_rtt_ms": round(1000 * self.window.rtt, 1) if self.window.rtt else None,
            "auth_slot_peak": self.window.peak,
        }

    def live_cap(self) -> str | None:
        """What holds the scheduler back right now (the live screen's "capped by" line)."""
        w = self._wait_since
        if w is None:
            return None
        return _cap_detail(w[0], self)

    def fail_reasons(self, summary: dict[str, Any], failed: int, audio_ok: bool) -> list[str]:
        """Why the run fails (empty: it passes), one phrase each, for the verdict line."""
        deadline = (f"the run deadline ({self.run_deadline():.0f} s) was hit"
                    if self.deadline_hit else None)
        return fail_reasons(self.opts, summary, failed, audio_ok, deadline)

    def _interrupt(self, signum: int | None = None) -> None:
        if signum is not None and self.stop_signal is None:
            self.stop_signal = signum
        if not self.interrupted:
            self.interrupted = True
            self.notes.append("interrupted: stopped placing calls and hung up the rest")
            self._done.set()

    def set_concurrency(self, calls: int) -> None:
        """A new concurrency target (``--calls``) from now on (the capacity search raises it
        step by step); the scheduler wakes at once."""
        self.opts.calls = max(1, calls)
        self.stats.target = self.opts.calls
        self._slot.set()

    def _capacity_second(self, row: Mapping[str, Any], samples: Mapping[str, Any]) -> None:
        assert self.capacity is not None
        action = self.capacity.second(row, samples)
        if action is None:
            return
        if action.stop:
            self.finish_early(f"capacity search over: {self.capacity.result()['reason']}")
        elif action.calls is not None:
            self.set_concurrency(action.calls)

    def finish_early(self, why: str) -> None:
        """End the run now as planned (not an interruption): calls up are hung up."""
        if self.ended_early is None:
            self.ended_early = why
            self.notes.append(f"ended: {why}")
            self._done.set()

    async def _stop_all(self) -> None:
        """Stop new attempts and end every call still live (cause 16)."""
        self.stopping = True
        now = self.clock()
        for call in list(self.by_index.values()):
            if call.ended:
                continue
            graceful = self.control.stopped_by is not None and not self.interrupted
            if call.answered:
                answered_at = call.stats.t_answer
                if graceful and (call.stats.rx_frames == 0 or answered_at is None
                                 or now - answered_at < STOP_AUDIO_MIN_S):
                    # answered just before the stop, too little of its audio back to judge:
                    # not checked (n/a), rather than one-way or unverified
                    call.stats.mode = "none"
                self._hangup(call, 16, None)
            elif graceful:
                # a graceful stop cancels the setups it finds: in progress, not failed
                self._hangup(call, 16, ("IN_PROGRESS", "stopped before answer"))
            else:
                outcome = "NO_ANSWER" if call.accepted else "TIMEOUT"
                why = ("interrupted" if self.interrupted else
                       "the run ended" if self.ended_early else "run deadline")
                self._hangup(call, 16, (outcome, f"{why} before answer"))
        self._flush()
        self._tick_open = self._sweep_done = False
        self.stats.tick(now)

    async def _linger(self) -> None:
        """Give the endpoint up to ``hangup_timeout`` to get our HANGUPs acknowledged."""
        if self._ep is None:
            return
        deadline = self.clock() + self.opts.hangup_timeout
        live: list[Any] = []
        while self.clock() < deadline:
            try:
                live = [c for c in self._ep.channels()
                        if str(_get(c, "state", "")).lower() not in ("", "dead", "ended",
                                                                     "closed", "done")
                        and (self.attach is None
                             or int(_get(c, "local_callno", -1)) in self.placed_callnos)]
            except Exception:
                return
            if not live:
                return
            await asyncio.sleep(0.05)
        self.notes.append(
            f"{len(live)} call(s) still waiting for the target to acknowledge our HANGUP after "
            f"{self.opts.hangup_timeout:g} s; the target may hold them until its own "
            "retransmission give-up (about 32 s)")

    @property
    def pending(self) -> int:
        """Calls in setup (first NEW sent, not yet accepted or ended)."""
        return self.window.in_setup

    @property
    def pending_peak(self) -> int:
        """The most auth slots at the target a call start found held (itself included)."""
        return self.window.peak

    # --- scheduler ------------------------------------------------------------------------

    def _waiting(self, cap: str | None, now: float) -> None:
        """The scheduler is held by ``cap`` from ``now`` (None: not held): time per cap."""
        w = self._wait_since
        if w is not None and w[0] == cap:
            return
        if w is not None:
            self.waited[w[0]] = self.waited.get(w[0], 0.0) + now - w[1]
        self._wait_since = (cap, now) if cap is not None else None

    def _note_asked(self, now: float) -> None:
        """The asked rate integrated up to ``now`` (called before the rate changes)."""
        if self._last_start_t is not None:
            self._pend_asked += (now - self._asked_mark) * self.control.rate
        self._asked_mark = now

    def _count_start(self, now: float) -> None:
        """An attempt placed at ``now``: the interval since the previous one counts toward the
        achieved rate unless the cap held this attempt (see ``starts_free``)."""
        self._note_asked(now)
        last = self._last_start_t
        if last is not None and not self._held_by_cap:
            self.starts_free += 1
            self.span_free += now - last
            self.asked_starts += self._pend_asked
        self._pend_asked = 0.0
        self._held_by_cap = False
        self._last_start_t = now

    def _close_rate_interval(self, now: float) -> None:
        """At the end of scheduling (every attempt placed, a stop, the summary): the time since
        the last attempt counts as an interval without one when the next was overdue and the
        cap did not hold it (a target that stopped answering stalls the rate: a shortfall)."""
        last = self._last_start_t
        if (last is None or self._held_by_cap or self._at_cap
                or self.started_attempts >= len(self.plan)):
            return
        self._note_asked(now)
        if now - last > 1.0 / self.control.rate:
            self.span_free += now - last   # no attempt closes it: time without a count
            self.asked_starts += self._pend_asked
        self._pend_asked = 0.0
        self._last_start_t = None

    def _control_changed(self) -> None:
        """Before the asked rate or pause changes: the time so far counts at the old rate; the
        scheduler wakes to take the new pace."""
        self._note_asked(self.clock())
        self._slot.set()

    def _graceful_stop(self, by: str) -> None:
        """``ctl stop`` / ``q``: no new calls, the calls up hung up, the report written."""
        if self._done.is_set():
            return
        self.stopped_early = self.started_attempts < len(self.plan)
        what = {"ctl": "`iaxgw ctl stop`", "key": "the q key"}.get(by, f"the {by} stopping")
        self.notes.append(f"stopped by {what} after {self.clock() - self.t0:.1f} s and "
                          f"{self.started_attempts} of {len(self.plan)} attempts: the calls up "
                          f"were hung up; {self.pending} call(s) still in setup counted as in "
                          "progress, not failed")
        self.stopping = True
        self._close_rate_interval(self.clock())     # the rate is judged up to the stop
        self._slot.set()
        self._done.set()

    async def _scheduler(self) -> None:
        control = self.control
        # the slot of the previous attempt: the next is due 1/rate after it, at the rate asked
        # now (`iaxgw ctl rate`, hot keys), at most one missed slot made up
        prev = self.clock() - 1.0 / control.rate
        warned_budget = False
        window = self.window
        for planned in self.plan:
            while True:
                if self.stopping:
                    self._waiting(None, self.clock())
                    return
                now = self.clock()
                interval = 1.0 / control.rate
                next_at = prev + interval
                if self.budget.live >= self.opts.calls or control.paused:
                    # the concurrency target is up, or new calls are paused: not a shortfall
                    # of the rate
                    self._waiting(None, now)
                    self._slot.clear()
                    self._at_cap = True
                    await self._slot.wait()
                    self._at_cap = False
                    woke = self.clock()
                    if prev + 1.0 / control.rate <= woke:
                        self._held_by_cap = True       # its slot came while at the cap
                    prev = max(prev, woke - interval)
                    continue
                if not window.admit(now):
                    self._waiting(CAP_AUTH, now)
                    self._slot.clear()
                    nxt = window.next_change(now)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._slot.wait(),
                                               None if nxt is None else max(0.001, nxt - now))
                    continue
                if not self.budget.available(now):
                    self._waiting(CAP_CALLNOS, now)
                    self.budget.waits += 1
                    if not warned_budget:
                        warned_budget = True
                        self.notes.append(
                            f"waited for call numbers: {self.budget.limit} are held per source "
                            "IP until 60 s after each call (Asterisk maxcallnumbers)")
                    await asyncio.sleep(max(0.01, self.budget.next_free(now) - now))
                    continue
                if now < next_at:
                    self._waiting(None, now)
                    self._slot.clear()       # a new rate or a pause wakes it early
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._slot.wait(), next_at - now)
                    continue
                break
            self._waiting(None, self.clock())
            self._start_call(planned)
            prev = max(next_at, self.clock() - 2.0 / control.rate)
        self._check_done()

    def _start_call(self, planned: PlannedCall) -> None:
        now = self.clock()
        stats = self.stats.new_call(now, planned.index)
        call = LiveCall(plan=planned, stats=stats)
        if self._media_payloads is not None:
            # silence / wav media (the stats have no signature): frame k sends own[k + 1]
            stats.tx.cycle = list(self._media_payloads)
            stats.tx.offset = 1
            stats.tx.marks = None
        try:
            callno = self._ep.call(self.target.peer, planned.exten, self._now(),
                                   codec=self._codec,
                                   caller_num=str(CALLER_BASE + planned.index),
                                   caller_name="iaxgw loadtest")
        except Exception as exc:
            log.debug("call %d: %s", planned.index, exc)
            self.stats.end_call(stats, now, "ERROR", f"cannot place call: {exc}")
            self._ended_map[planned.index] = 1
            call.ended = True
            self.started_attempts += 1
            return
        self._flush()
        call.callno = int(callno)
        self.placed_callnos.add(call.callno)
        self.stats.set_call_id(planned.index, call.callno, None, planned.exten)
        stats.tx.callno = call.callno
        if self._rx_exact:
            # trunk entries of the call are counted by the compiled receive path
            self._ep.set_rx_probe(call.callno, stats.rx)
        self.calls[call.callno] = call
        self.by_index[planned.index] = call
        call.pending = True
        self.window.start(call.callno, now)
        if self.budget.live < self.opts.calls:
            self._count_start(now)
        if self.first_start is None:
            self.first_start = now
        self.last_start = now
        self.budget.take()
        self.placed_peak = max(self.placed_peak, self.budget.live)
        self.started_attempts += 1
        loop = asyncio.get_running_loop()
        call.timeout_handle = loop.call_later(self.opts.setup_timeout, self._setup_timeout, call)

    def _setup_timeout(self, call: LiveCall) -> None:
        call.timeout_handle = None
        if call.ended or call.answered:
            return
        outcome = "NO_ANSWER" if call.accepted else "TIMEOUT"
        text = (f"not answered within {self.opts.setup_timeout:g} s" if call.accepted else
                f"no ACCEPT within {self.opts.setup_timeout:g} s from "
                f"{format_addr(self.target.peer_addr)}")
        self._hangup(call, 16, (outcome, text))
        self._flush()

    # --- ending calls ---------------------------------------------------------------------

    def _hangup(self, call: LiveCall, cause: int, failure: tuple[str, str | None] | None,
                code: int | None = None) -> None:
        """We end ``call``: HANGUP to the peer, record it (``failure`` = (outcome, text))."""
        if call.ended:
            return
        now = self.clock()
        with contextlib.suppress(Exception):
            self._ep.hangup(call.callno, self._now(), cause=cause)
        if failure is not None:
            self._finish(call, now, failure[0], failure[1], code)
        else:
            self._finish(call, now, None, None, None)

    def _finish(self, call: LiveCall, now: float, outcome: str | None, cause: str | None,
                code: int | None) -> None:
        if call.ended:
            return
        call.ended = True
        self._setup_done(call)
        if call.up:
            call.up = False
            self.up -= 1
        for h in (call.hangup_handle, call.timeout_handle, call.tail_handle, call.rr_handle):
            if h is not None:
                h.cancel()
        self._take_rr(call)
        self._note_peer_callno(call)
        info = self._ep.call_info(call.callno) if call.callno >= 0 else None
        if info is not None:
            call.stats.early_frames = info.rx_early
        self.media_calls.pop(call.callno, None)
        self.calls.pop(call.callno, None)
        if call.returned >= 0:
            leg = call.returned
            self.returned.pop(leg, None)
            with contextlib.suppress(Exception):
                self._ep.hangup(leg, self._now(), cause=16)
        self.stats.end_call(call.stats, now, outcome, cause, code)
        # a finished call keeps only its compact record (in stats); dropping the live call and
        # its pre-encoded payloads and audio buffers keeps a long run's memory flat
        self.by_index.pop(call.plan.index, None)
        self._ended_map[call.plan.index] = 1
        if call.callno >= 0:
            self.budget.release(now)
        self._slot.set()
        self._check_done()

    def _note_peer_callno(self, call: LiveCall) -> None:
        """The far end's call number, for calls.csv, while the endpoint still knows it."""
        if call.peer_callno_seen or self._ep is None:
            return
        info = self._ep.call_info(call.callno)
        peer_callno = getattr(info, "peer_callno", 0) if info is not None else 0
        if peer_callno:
            call.peer_callno_seen = True
            self.stats.set_call_id(call.plan.index, peer_callno=int(peer_callno))

    def _take_rr(self, call: LiveCall) -> dict[str, int] | None:
        """The far end's latest receive report of ``call`` into its stats (None: none yet)."""
        info = self._ep.call_info(call.callno) if call.callno >= 0 else None
        if info is None or not info.remote_rr:
            return None
        rr = dict(info.remote_rr)
        call.stats.remote_rr = rr
        call.stats.remote_rr_sent = call.sent_at_ping.get(info.remote_rr_ts)
        return rr

    def _rr_ping(self, call: LiveCall) -> None:
        """PING ``call`` for a receive report (``RR_FIRST_S``); the next one is due in
        ``RR_EVERY_S`` or just before the HANGUP, whichever is first."""
        call.rr_handle = None
        if call.ended or not call.answered:
            return
        rr = self._take_rr(call)
        if rr is not None and rr.get("frames", 0) <= 1:
            return     # the far end does not count what it receives
        now = self.clock()
        ts = self._ep.ping(call.callno, self._now())
        if ts is None:
            return
        call.sent_at_ping[ts] = call.stats.tx_frames
        if self._server is not None:
            # one flush for every PING due in this loop pass (hundreds a second at thousands of
            # calls, each flush re-arming the endpoint's timer and draining its events)
            self._server.flush_soon()
        due = [call.planned_end - b for b in RR_LAST_S if call.planned_end - b > now + 0.5]
        at = min([now + RR_EVERY_S, *due]) if due else None
        if at is not None:
            call.rr_handle = asyncio.get_running_loop().call_later(at - now, self._rr_ping, call)

    @property
    def ended_indices(self) -> set[int]:
        """Indices of the planned calls that have ended (kept as one byte per planned call)."""
        return set(self._iter_ended())

    def _iter_ended(self) -> Iterator[int]:
        ended = self._ended_map
        i = ended.find(1)
        while i >= 0:
            yield i
            i = ended.find(1, i + 1)

    def _is_ended(self, index: int) -> bool:
        return 0 <= index < len(self._ended_map) and self._ended_map[index] == 1

    def _setup_done(self, call: LiveCall) -> None:
        """The call left setup (accepted or ended): it no longer counts against max_pending."""
        if call.pending:
            call.pending = False
            self.window.done(call.callno)
            self._slot.set()

    def _check_done(self) -> None:
        if self.started_attempts >= len(self.plan) and self.budget.live == 0:
            self._done.set()

    def _hold_over(self, call: LiveCall) -> None:
        call.hangup_handle = None
        self._hangup(call, 16, None)
        self._flush()

    # --- events ---------------------------------------------------------------------------

    def _on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.CallProgress):
            self._progress(event)
        elif isinstance(event, ev.CallEnded):
            self._ended(event)
        elif isinstance(event, ev.CallSetup):
            self._setup_step(event)
        elif isinstance(event, ev.IncomingCall):
            self._incoming(event)
        elif isinstance(event, ev.VoiceReceived):
            self._on_media(event.callno, event.ts, event.payload, self._now())
        elif isinstance(event, ev.AuthFailed | ev.ProtocolError):
            log.info("%s", event)

    def _setup_step(self, event: ev.CallSetup) -> None:
        """CALLTOKEN came back / our AUTHREP left: the auth-slot model moves (AuthWindow)."""
        call = self.calls.get(event.callno)
        if call is None or not call.pending:
            return
        now = self.clock()
        if event.step == "calltoken":
            self.window.calltoken(call.callno, now,
                                  event.rtt_ms / 1000.0 if event.rtt_ms >= 0 else None)
        else:
            self.window.authrep(call.callno, now)
        self._slot.set()

    def _progress(self, event: ev.CallProgress) -> None:
        call = self.calls.get(event.callno)
        if call is None or call.ended:
            return
        now = self.clock()
        kind = event.kind
        self._note_peer_callno(call)
        if kind != "ringing" and kind != "proceeding":
            self._setup_done(call)     # accepted, or answered/busy/... without a seen ACCEPT
        if kind == "accepted":
            call.accepted = True
            call.stats.on_setup_event("ACCEPT", now)
        elif kind == "ringing":
            call.stats.on_setup_event("RINGING", now)
        elif kind == "answered" and not call.answered:
            call.answered = True
            call.encrypted = self._ep.call_encrypted(call.callno)
            self.answered_calls += 1
            self.encrypted_calls += call.encrypted
            call.up = True
            self.up += 1
            self.up_peak = max(self.up_peak, self.up)
            call.stats.on_setup_event("ANSWER", now)
            if call.timeout_handle is not None:
                call.timeout_handle.cancel()
                call.timeout_handle = None
            call.planned_end = now + call.plan.hold
            loop = asyncio.get_running_loop()
            call.hangup_handle = loop.call_later(call.plan.hold, self._hold_over, call)
            if self.mode == "echo" and call.plan.hold > 4 * QUIET_TAIL_S:
                # stop sending a little before our HANGUP so the last echoes (in flight in
                # trunk batches and the far end's jitter) are back: else they count as missing
                call.tail_handle = loop.call_later(call.plan.hold - QUIET_TAIL_S,
                                                   self.media_calls.pop, call.callno, None)
            call.media = True
            self.media_calls.add(call)
            if call.plan.hold > RR_FIRST_S + 1.0:
                call.rr_handle = loop.call_later(RR_FIRST_S, self._rr_ping, call)
        elif kind in ("busy", "congestion") and not call.answered:
            outcome = "BUSY" if kind == "busy" else "CONGESTION"
            code = 17 if kind == "busy" else 34
            self._hangup(call, code, (outcome, None), code)
            self._flush()

    def _ended(self, event: ev.CallEnded) -> None:
        leg = self.returned.pop(event.callno, None)
        if leg is not None:
            return
        call = self.calls.get(event.callno)
        if call is None or call.ended:
            return
        now = self.clock()
        if call.answered:
            early = call.planned_end - now
            if early > EARLY_DROP_S:
                call.dropped = True
                self.dropped += 1
            self._finish(call, now, "HANGUP", _cause_text(event.cause, event.cause_text or None),
                         event.cause)
            return
        outcome, text = classify_end(event, call.accepted)
        self._finish(call, now, outcome, text, event.cause if event.cause > 0 else None)

    def _incoming(self, event: ev.IncomingCall) -> None:
        """Hairpin: a call came back over the trunk; answer it and echo its audio."""
        now = self._now()
        idx = -1
        if event.caller_num.isdigit():
            idx = int(event.caller_num) - CALLER_BASE
        out = self.by_index.get(idx)
        if self.opts.mode != "hairpin" or out is None or out.ended:
            self.unmatched_incoming += 1
            late = out is not None or self._is_ended(idx)
            with contextlib.suppress(Exception):
                self._ep.hangup(event.callno, now, cause=16 if late else 21)
            self._flush()
            return
        self.returned[event.callno] = idx
        out.returned = event.callno
        self.returned_legs += 1
        with contextlib.suppress(Exception):
            self._ep.answer(event.callno, now)
            # its trunk entries go straight back inside the endpoint (compiled); other voice
            # frames come through _on_media, which sends them back
            self._ep.set_echo(event.callno, True)
        self._flush()

    # --- media ----------------------------------------------------------------------------

    def _on_media(self, callno: int, ts: int, payload: bytes, now: float) -> None:
        """The endpoint's media sink.  ``now`` is the datagram's exact arrival time when the
        server reads in batches with kernel timestamps (``rx_time_exact``); otherwise it is the
        loop clock (1 ms steps under uvloop) and arrival times for jitter come from the finer
        monotonic clock at delivery."""
        call = self.calls.get(callno)
        if call is not None:
            # a trunk without per-entry timestamps: media time = the previous one + 20 ms
            call.stats.rx.on_rx(ts, now if self._rx_exact else self.clock(), payload,
                                self._rx_nots)
            return
        if callno in self.returned:
            self._ep.send_voice(callno, payload, now)

    async def _ticker(self) -> None:
        try:
            await self._tick_loop()
        finally:
            if self._reads_held:            # cancelled while holding reads: let them go
                self._poll()

    async def _tick_loop(self) -> None:
        """One 20 ms grid for all calls: deadline k = t0 + k x 20 ms.

        Everything periodic runs right after a tick's sends, in the slack before the next
        deadline, so it never delays a tick: the once-a-second statistics tick and slices of
        the batch audio analysis (round robin over the calls, bounded by ``ANALYSIS_SLICE``
        and by ``TICK_MARGIN`` before the next deadline)."""
        clock = self.clock
        start = clock()
        phase = self.opts.tick_phase
        if phase is not None and clock is time.monotonic:
            # shards of one run take turns on the cores: each its own slot of the 20 ms grid
            # (CLOCK_MONOTONIC is the same in every process)
            start += (phase - start) % TICK
        k = 0
        late_ms = self.late_ms
        work_ms = self.work_ms
        next_report = start + REPORT_EVERY
        gc_step_at = -1
        backlog = getattr(self._server.transport if self._server is not None else None,
                          "backlogged", None) or (lambda: False)
        stats = self.stats
        while True:
            k += 1
            due = start + k * TICK
            delay = due - clock()
            if delay > 0:
                hold = self._hold if self.media_calls else None
                if hold is not None:
                    # no reads in the last READ_GUARD before the tick: it never waits for a
                    # received batch being taken (~1 ms each at 2,000 calls); _poll() reads
                    # again after the tick's sends
                    if delay > READ_GUARD:
                        await asyncio.sleep(delay - READ_GUARD)
                    hold()
                    self._reads_held = True
                    delay = due - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                behind = int(-delay / TICK)
                if behind >= FAR_BEHIND_TICKS:
                    self.late_ticks += behind
                    k += behind
                await asyncio.sleep(0)
            self.ticks += 1
            now = clock()
            calls = self.media_calls
            if calls:
                # send-timing error: how late this tick's frames start vs the 20 ms grid
                late_ms.append((now - due) * 1000.0)
                self._send_tick(calls, now)
                after = clock()
                spent = (after - now) * 1000.0
                work_ms.append(spent)
                if spent > self.max_tick_ms:
                    self.max_tick_ms = spent
            # read what came in the last period now, at the start of this one (the kernel
            # stamps arrival times), rather than wherever the socket schedule falls: late in
            # the period, a batch being taken when the next tick falls due delays it.  Also
            # ends the read hold, whether or not calls were left to send for.
            self._poll()
            # Housekeeping, one chore at a time with the loop let in between (the endpoint's
            # timers and reads wait for one chore at most, never for all of them), and only in
            # the first part of the period: a chore takes up to ~4 ms at 2,000 calls, so none
            # is running when the next tick falls due.
            # A statistics tick still open a second after it began (a saturated loop left its
            # sweep too few windows) gets the rest of the period but the margin, rather than
            # the next one sweeping all the calls at once (tens of ms).
            chores_end = due + CHORE_WINDOW
            if self._tick_open and clock() - self._tick_began > REPORT_EVERY:
                chores_end = due + TICK - TICK_MARGIN - SWEEP_SLICE
            for chore in range(5):
                await asyncio.sleep(0)
                if clock() >= chores_end:
                    break
                if chore == 0:
                    self.gc.idle()
                elif chore == 1 and clock() >= next_report and not self._tick_open:
                    next_report = max(next_report + REPORT_EVERY, clock())
                    self._periodic_begin(clock())
                    gc_step_at = k + GC_STEP_DELAY
                elif chore == 2 and k == gc_step_at:
                    self.gc.step()
                elif chore == 3 and self._tick_open:
                    # the statistics tick's per-call work, a slice per media tick (2,000 calls
                    # in one go took 40-100 ms: two to five media ticks late every second)
                    if stats.sweep(clock() + SWEEP_SLICE, clock):
                        self._sweep_done = True
                elif chore == 4 and self._sweep_done:
                    self._sweep_done = False
                    self._periodic_end()
            # audio analysis in steps of about one call, yielding to the loop between steps so
            # received frames are timestamped (jitter) with at most one step of delay
            # -- and none while the socket has a backlog: reading it comes first (saturated,
            # analysis and reads shared the spare time and the backlog grew to overflow)
            after = clock()
            limit = min(after + ANALYSIS_SLICE, start + (k + 1) * TICK - TICK_MARGIN)
            while after < limit and not backlog():
                if not stats.analyze_until(min(limit, after + ANALYSIS_STEP), clock):
                    break
                await asyncio.sleep(0)
                after = clock()

    def _send_tick(self, calls: MediaCalls, now: float) -> None:
        """One voice frame for every answered call: the calls' TxProbes count and write the
        tick's frames into the trunk (or mini frames) in one compiled pass
        (``Endpoint.send_probes``)."""
        lnow = self._now()
        ep = self._ep
        for callno, exc in ep.send_probes(calls.probes(), now, lnow):
            log.debug("send_voice %d: %s", callno, exc)
            calls.pop(callno, None)
        ep.flush_trunks(lnow)
        self._flush()

    def _poll(self) -> None:
        """After a tick's sends: end the read hold (reading what waits) or read now."""
        tr = self._server.transport if self._server is not None else None
        if tr is None:
            return
        if self._reads_held:
            self._reads_held = False
            tr.release_reads()
            return
        poll = getattr(tr, "poll", None)
        if poll is not None:
            poll()

    def _flush(self) -> None:
        if self._server is not None:
            self._server.flush()

    def _on_datagram(self, direction: str, data: bytes, addr: Addr, now: float) -> None:
        d: Literal["tx", "rx"] = "tx" if direction == "out" else "rx"
        if self._pcap is not None:
            self._capture(direction, data, addr)
        n = len(data)
        if n < 4:
            return
        b0 = data[0]
        self._rx_nots = False
        if b0 & 0x80:
            self.stats.trunk.add(d, n, "full")
        elif b0 == 0 and data[1] == 0 and not data[2] & 0x80:
            sub, voice = trunk_entries(data) if n >= 8 else (0, 0)
            self._rx_nots = d == "rx" and not data[3] & 1
            self._saw_nots = self._saw_nots or self._rx_nots
            self.stats.trunk.add(d, n, "trunk", sub, voice)
        else:
            self.stats.trunk.add(d, n, "mini")

    def _on_datagrams(self, direction: str, items: list[Any], now: float) -> None:
        """A whole receive batch or send list at once (the batched server): one compiled count
        (``datagram_census``).  Trunk entries reach the calls' probes directly here, so no
        per-datagram "no entry timestamps" flag is needed for the media sink."""
        if self._pcap is not None:
            for item in items:
                self._capture(direction, item[0], item[1], item[2] if len(item) > 2 else 0.0)
        census = datagram_census(items)
        self.stats.trunk.add_census("tx" if direction == "out" else "rx", census)
        self._rx_nots = False
        if census[8] and direction != "out":
            self._saw_nots = True

    # --- periodic -------------------------------------------------------------------------

    def _periodic_begin(self, now: float) -> None:
        """About once a second, from the ticker: watchdog, and the statistics tick begins
        (``LoadStats.begin_tick``); the ticker sweeps its calls in slices and ends it
        (``_periodic_end``), and steps the GC pacer a few ticks later.  The ticker begins a
        statistics tick only when the last one has ended."""
        self._media_watchdog()
        self.stats.begin_tick(now)
        self._tick_open = True
        self._tick_began = now
        self._sweep_done = False

    def _periodic_end(self) -> None:
        self._tick_open = False
        self._sweep_done = False
        self.stats.rate_asked_cps = self.control.rate
        self.stats.paused = self.control.paused
        snap = self.stats.finish_tick(self.clock())
        if self.prom is not None:
            self.prom.on_tick(snap, self._ep, self.stats.setup_ms)
        if self.screen is not None:
            with contextlib.suppress(Exception):
                self.screen.capped = self.live_cap()
                self.screen.update(snap)

    def _media_watchdog(self) -> None:
        """End answered calls whose media stopped coming back, or never came (a peer that went
        away: killed after its ANSWER went out, the echo never arrives)."""
        if self.mode != "echo":
            return
        now = self.clock()
        limit = self.opts.media_timeout
        stale: list[tuple[LiveCall, str]] = []
        for c in self.media_calls.values():
            st = c.stats
            if st.t_first_rx is not None:
                if now - st.t_last_rx > limit:
                    stale.append((c, f"media stopped: nothing received for {limit:g} s"))
            elif st.t_answer is not None and now - st.t_answer > limit:
                stale.append((c, f"media never came: nothing received {limit:g} s after ANSWER"))
        for call, why in stale:
            call.dropped = True
            self.dropped += 1
            self._hangup(call, 16, ("HANGUP", why))
        if stale:
            self._flush()

    # --- the end --------------------------------------------------------------------------

    def result(self) -> LoadtestResult:
        now = self.clock()
        summary = self.stats.summary(now)
        records = self.stats.all_records(now)
        o = self.opts
        failed = int(summary.get("failed") or 0) + self.dropped
        audio = summary.get("audio") or {}
        audio_ok = True
        if self.mode != "none":
            checked = audio.get("checked") or 0
            audio_ok = (checked == (audio.get("verified") or 0)
                        and not audio.get("crossed") and not audio.get("one_way")
                        and not audio.get("silent"))
        targets = self.targets(int(summary.get("failed") or 0))
        summary["targets"] = targets
        if self.capacity is not None:
            summary["capacity"] = self.capacity.result()
        reasons = self.fail_reasons(summary, failed, audio_ok)
        exit_code = EXIT_FAIL if reasons else EXIT_PASS
        heard = self.stats.trunk.datagrams["rx"]
        if self.started_attempts and not heard:
            exit_code = EXIT_CANNOT_RUN
            reasons.insert(0, f"the target {self.target.peer_addr[0]}:"
                              f"{self.target.peer_addr[1]} never answered anything (not one "
                              "datagram came back): is it running, and is this its address?")
        if self.stop_signal is not None:
            exit_code = EXIT_SIGINT if self.stop_signal == signal.SIGINT else EXIT_SIGTERM
            reasons.insert(0, f"interrupted by {signal.Signals(self.stop_signal).name}")
        summary["control"] = self.control.summary()
        now_errors = udp_rcvbuf_errors()
        kernel_drops = (now_errors - self._rcvbuf_errors0
                        if now_errors is not None and self._rcvbuf_errors0 is not None else None)
        summary["loadtest"] = {
            "target": format_addr(self.target.peer_addr),
            "peer": self.target.peer,
            "local": format_addr(self.target.bind),
            "role": self.target.role,
            "mode": o.mode,
            "media": o.media,
            "extens": sorted(set(o.exten_list())),
            "calls": o.calls,
            "rate_cps": o.cps,
            "total": o.attempts,
            "duration_s": list(o.duration),
            "setup_timeout_s": o.setup_timeout,
            "failed_total": failed,
            "dropped": self.dropped,
            "max_failed": o.max_failed,
            "audio_ok": audio_ok,
            "audio_checked": self.mode != "none",
            "exit_code": exit_code,
            "fail_reasons": reasons,
            "allow_underrun": o.allow_underrun,
            "realtime": self.realtime,
            "hairpin_returned": self.returned_legs if o.mode == "hairpin" else None,
            "unmatched_incoming": self.unmatched_incoming,
            "callno_budget": self.budget.limit,
            "callno_budget_waits": self.budget.waits,
            "media_ticks": self.ticks,
            "late_ticks": self.late_ticks,
            "max_tick_ms": round(self.max_tick_ms, 3),
            "send_timing": send_timing(self.late_ms, self.work_ms),
            "gc_full_collections": self.gc.full_collections,
            "gc_full_ms_max": round(self.gc.full_ms_max, 1),
            "interrupted": self.interrupted,
            "deadline_hit": self.deadline_hit,
            "socket_buffers": {"rcv": self._server.rcvbuf, "snd": self._server.sndbuf}
            if self._server is not None else None,
            "kernel_udp_rcvbuf_errors": kernel_drops,
            "notes": self.notes + diagnose(summary, self.target),
        }
        lt = summary["loadtest"]
        limits = generator_limits(self.stats.cpu_samples, lt["send_timing"],
                                  targets.get("capped_by") or [], kernel_drops,
                                  realtime=self.realtime)
        summary["limited_by"] = limited_by(limits)
        if kernel_drops:
            summary["loadtest"]["notes"].append(
                f"the kernel dropped {kernel_drops} UDP datagram(s) on this machine for full "
                "receive buffers during the run (local overload, not network loss)")
        summary["loadtest"]["echo_missing_pct"] = (
            echo_missing_pct(records) if self.mode == "echo" else None)
        summary["loadtest"]["rx_trunk_without_ts"] = self._saw_nots
        summary["encryption"] = encryption_summary(self)
        if self.impairment is not None:
            summary["impair"] = self.impairment.snapshot()
            if self.mode == "echo":
                summary["impair"]["far_end_echo_pct"] = self.impairment.census.far_end_echo_pct()
        with contextlib.suppress(Exception):
            summary["endpoint"] = dict(self._ep.stats())
        return LoadtestResult(summary=summary, exit_code=exit_code, records=records,
                              timeseries=list(self.stats.timeseries),
                              call_ids=self.stats.call_columns,
                              failures=self.stats.failures)


def open_pcap(path: Path) -> PcapWriter:
    """--pcap FILE: created 0600, never through a link (gateway/safefs.py); a usage error if it
    cannot be."""
    try:
        return PcapWriter(path)
    except OSError as exc:
        raise ConfigUsageError(f"--pcap {path}: {exc.strerror or exc}") from None


def encryption_summary(runner: LoadRunner) -> dict[str, Any]:
    """summary.json's ``encryption``: what our peer entry offered and how many answered calls
    were encrypted."""
    entry = runner.target.config.entries[runner.target.peer]
    return {"offered": bool(entry.encryption), "forced": entry.forceencryption,
            "key_rotation": bool(entry.encryption & 0x8000),
            "answered": runner.answered_calls, "encrypted": runner.encrypted_calls,
            "trunk": entry.trunk}


def encryption_line(enc: dict[str, Any]) -> str:
    """The printed summary's line on encryption."""
    offered = "aes128" if enc.get("offered") else "off"
    if enc.get("forced"):
        offered += ", forced"
    answered, encrypted = enc.get("answered", 0), enc.get("encrypted", 0)
    line = f"encryption: {offered}; {encrypted} of {answered} answered calls encrypted"
    if encrypted and enc.get("trunk"):
        line += " (full and mini frames; trunked voice travels in the clear, as Asterisk's)"
    return line


def capacity_search(opts: LoadtestOptions) -> CapacitySearch | None:
    """The capacity search a run with ``--step`` does (None without)."""
    if opts.step is None or opts.max_calls is None:
        return None
    return CapacitySearch(opts.step, opts.step_time, opts.max_calls,
                          StopRule(opts.stop_when or DEFAULT_STOP_WHEN))


def fail_reasons(o: LoadtestOptions, summary: dict[str, Any], failed: int, audio_ok: bool,
                 deadline: str | None) -> list[str]:
    """Why a run fails (empty: it passes), one phrase each, for the verdict line; judged on
    the run's figures (one process's, or a sharded run's merged ones)."""
    out: list[str] = []
    cap = summary.get("capacity")
    if cap is not None:
        # failed calls are what a capacity search looks for: it fails only without a figure
        if cap.get("calls") is None:
            out.append(f"capacity search: no step held ({cap.get('reason')})")
        return out
    if failed > o.max_failed:
        out.append(f"{failed} failed call(s), more than --max-failed {o.max_failed}")
    if not audio_ok:
        a = summary.get("audio") or {}
        out.append(f"audio not verified on every call ({a.get('verified')} of "
                   f"{a.get('checked')} verified, crossed {a.get('crossed')}, one-way "
                   f"{a.get('one_way')}, silent {a.get('silent')})")
    if deadline:
        out.append(deadline)
    tg = summary.get("targets") or {}
    if not tg.get("met", True) and not o.allow_underrun:
        rate, calls = tg.get("rate") or {}, tg.get("calls") or {}
        out.append(f"target not reached (rate {_figure(rate.get('achieved'))}/"
                   f"{_figure(rate.get('asked'))} per s, calls {calls.get('peak')}/"
                   f"{calls.get('asked')}; "
                   "--allow-underrun passes anyway)")
    return out


def _figure(value: Any) -> str:
    """A rate as the verdict prints it: two decimals at most (``n/a`` when unknown)."""
    if isinstance(value, int | float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return "n/a" if value is None else str(value)


def _cap_detail(cap: str, runner: LoadRunner) -> str:
    o, w = runner.opts, runner.window
    if cap == CAP_AUTH:
        if w.rtt is None:
            return (f"the target's maxauthreq: at most {w.limit} calls awaiting authentication "
                    f"at once (--max-pending {w.limit}); no round trip measured")
        span = w.rtt + 2 * w._guard()
        return (f"the target's maxauthreq: at most {w.limit} unanswered AUTHREQs at once "
                f"(--max-pending {w.limit}) at a {1000 * w.rtt:.0f} ms round trip allow about "
                f"{w.limit / span:.0f} setups/s")
    if cap == CAP_CALLNOS:
        return (f"the target's call numbers: {runner.budget.limit} per source IP "
                "(maxcallnumbers), each held until 60 s after its call")
    if cap == CAP_LOOP:
        return "the load tester did not keep its own schedule (local CPU or event loop)"
    if cap == "duration":
        return (f"--duration {o.duration[0]:g} s: calls ended before the ramp to {o.calls} "
                "was over")
    if cap == "failed":
        return "calls that failed never came up"
    return cap


def send_timing(late_ms: Sequence[float], work_ms: Sequence[float]) -> dict[str, Any]:
    """Send-timing error of the media ticker over the ticks that sent media: how late each tick
    started against its 20 ms grid slot (``late_*``) and how long its sends took (``work_*``);
    the last frame of a tick leaves ``late + work`` after its slot."""
    if not late_ms:
        return {"ticks": 0}
    late = np.asarray(late_ms)
    work = np.asarray(work_ms) if work_ms else np.zeros(1)
    end = late[: len(work)] + work[: len(late)]

    def q(a: Any, p: float) -> float:
        return round(float(np.percentile(a, p)), 3)

    return {"ticks": len(late), "late_p50_ms": q(late, 50), "late_p99_ms": q(late, 99),
            "late_max_ms": round(float(late.max()), 3), "work_p50_ms": q(work, 50),
            "work_p99_ms": q(work, 99), "last_frame_p99_ms": q(end, 99),
            "over_2ms_pct": round(100.0 * float(np.count_nonzero(late > 2.0)) / len(late), 3)}


def diagnose(summary: dict[str, Any], target: Target) -> list[str]:
    """Plain-language notes on what the target did: refused, throttled, silent."""
    notes: list[str] = []
    causes: dict[str, int] = summary.get("causes") or {}
    attempted = summary.get("attempted") or 0
    where = format_addr(target.peer_addr)
    for key, n in sorted(causes.items(), key=lambda kv: -kv[1]):
        if key.startswith("REJECT"):
            if "forceencryption" in key.lower():
                notes.append(f"{n} call(s) ended by us: {key} -- the target does not agree to "
                             "encrypt: set encryption = aes128 for this user there, or run "
                             "without --encryption (and forceencryption = no for "
                             f"peer {target.peer!r})")
            elif "encryption" in key.lower():
                notes.append(f"{n} call(s) ended by us: {key}: give peer "
                             f"{target.peer!r} a secret and auth = md5")
            elif "throttled" in key.lower():
                notes.append(f"{n} call(s) refused by {where}: {key} -- the target throttles "
                             "this address after repeated failed authentications (iaxgw "
                             "serve's authfaillimit; Asterisk has no such lockout): the "
                             "username/secret may well be right now; wait out its "
                             "authfailwindow, or turn authfaillimit off there")
            elif "50" in key or "authority" in key.lower():
                entry = target.config.entries.get(target.peer)
                outkey = entry.outkey if entry is not None else None
                rsa = (f"; or our RSA signature (outkey {outkey}) is not verified by the "
                       "target's inkeys for us") if outkey else ""
                notes.append(f"{n} call(s) refused by {where}: {key} -- check the username/"
                             f"secret/auth of peer {target.peer!r} and the target's ACL; or the "
                             "target forces encryption (forceencryption = yes) and our NEW "
                             "offered none: Asterisk refuses that after our AUTHREP the same "
                             "way (run with --encryption, or encryption = aes128 for the peer)"
                             + rsa)
            elif "no cause" in key.lower():
                notes.append(f"{n} call(s) refused by {where} without a cause: a call-token or "
                             "call-number limit (maxcallnumbers 2048 per source IP)?")
            else:
                notes.append(f"{n} call(s) refused by {where}: {key}")
        elif key.startswith("TIMEOUT"):
            share = f" ({100 * n / attempted:.0f}% of attempts)" if attempted else ""
            notes.append(f"{n} call(s) got no answer in time from {where}{share}: {key}")
        elif key.startswith(("CONGESTION", "BUSY")):
            notes.append(f"{n} call(s) ended {key} by the target")
    if attempted and not summary.get("answered") and causes and \
            all(k.startswith("TIMEOUT") for k in causes):
        notes.append(f"nothing answered: is the target up at {where}?")
    return notes


def _get(obj: Any, key: str, default: Any) -> Any:
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def _new_loop() -> asyncio.AbstractEventLoop:
    """The load tester's event loop: uvloop (a dependency)."""
    import uvloop

    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


async def run_loadtest_async(opts: LoadtestOptions, *, config: IaxConfig | None = None,
                             screen: Any = None, impair: Any = None) -> LoadtestResult:
    """Run a load test on the running loop (tests call this next to an in-process server)."""
    if impair is not None and getattr(impair, "loss", 0.0) > 0:
        opts.warnings.extend(lossy_caller_settings(opts))
    target = load_target(opts, config)
    runner = LoadRunner(opts, target, screen=screen, impair=impair)
    return await runner.run()


def make_screen(opts: LoadtestOptions) -> Any:
    """The live screen (rich) for a run, or None with --quiet/--json."""
    if opts.quiet or opts.json_out:
        return None
    from iaxgw.sim.load.live import LiveScreen

    return LiveScreen(lines=True)


def check_report_dir(opts: LoadtestOptions) -> None:
    """Fail before the run (exit 2) when ``--report DIR`` cannot be written."""
    if opts.report_dir is not None:
        try:
            probe_report_dir(opts.report_dir)
        except ReportDirError as exc:
            raise ConfigUsageError(f"--report: {exc}") from None


@contextlib.contextmanager
def _signals_held() -> Iterator[list[int]]:
    """SIGINT / SIGTERM that arrive in the block are noted (the list) and acted on by nobody:
    the run is over, what is being written is its only record."""
    got: list[int] = []
    try:
        old = {s: signal.signal(s, lambda n, _f: got.append(n))
               for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:          # not the main thread: signals are not ours to hold
        yield got
        return
    try:
        yield got
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def write_report_files(opts: LoadtestOptions, result: LoadtestResult) -> None:
    """``--report DIR``: every file replaced at once (never left half written), and a Ctrl-C
    while they are written waits for them."""
    if opts.report_dir is None:
        return
    with _signals_held() as got:
        try:
            files = write_report(opts.report_dir, result.summary, result.records,
                                 result.timeseries, plots=True,
                                 call_ids=getattr(result, "call_ids", None),
                                 failures=getattr(result, "failures", None))
        except OSError as exc:
            print(f"iaxgw loadtest: cannot write report to {opts.report_dir}: {exc}",
                  file=sys.stderr)
            files = None
    cap = result.summary.get("capacity")
    if files is not None and cap is not None and files.plots_skipped is None:
        with contextlib.suppress(ImportError, OSError):
            write_capacity_plot(Path(opts.report_dir) / "capacity.png", cap)
            files.files.append(Path(opts.report_dir) / "capacity.png")
    if files is not None:
        result.report_files = list(files.files)
        if files.plots_skipped:
            print(f"iaxgw loadtest: no plots in {opts.report_dir}: {files.plots_skipped}",
                  file=sys.stderr)
    if got:
        print("iaxgw loadtest: interrupted while the report was written; it was finished "
              "first", file=sys.stderr)


def finish_output(opts: LoadtestOptions, result: LoadtestResult) -> None:
    """Report files, the final summary (stdout; stderr with --json) and the JSON."""
    write_report_files(opts, result)
    from rich.console import Console

    from iaxgw.sim.load.live import print_summary

    console = Console(stderr=opts.json_out)
    print_summary(result.summary, console)
    lt = result.summary.get("loadtest", {})
    for note in lt.get("notes", []):
        console.print(f"[yellow]note:[/] {note}")
    lab = result.summary.get("lab")
    if lab:
        rt = lab.get("far_end_realtime")
        console.print(f"lab: we are {lab.get('we_are')}; far end {lab.get('far_end')}, "
                      f"its CPU {lab.get('far_end_cpu_pct')} %"
                      + (f", scheduled {rt}" if rt else ""))
    imp = result.summary.get("impair")
    if imp:
        console.print(f"impair {imp.get('spec')} (seed {imp.get('seed')}): " + "; ".join(
            f"{d} dropped {c['dropped']}/{c['seen']}, dup {c['duplicated']}, "
            f"reordered {c['reordered']}" for d in ("send", "recv") if (c := imp.get(d)))
            + ("" if imp.get("far_end_echo_pct") is None else
               f"; the far end echoed {imp['far_end_echo_pct']} % of the voice frames that "
               "reached it"))
    enc = result.summary.get("encryption")
    if enc:
        console.print(encryption_line(enc), highlight=False)
    tr = result.summary.get("trunk", {})
    kinds = tr.get("by_kind") or {}
    if kinds:
        console.print("datagrams: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
                      + f"; echo frames missing {lt.get('echo_missing_pct')} %")
    for why in (result.summary.get("limited_by") or {}).get("reasons") or []:
        console.print(f"[yellow]limited by the load generator, not the target:[/] {why}",
                      highlight=False)
    cap = result.summary.get("capacity")
    if cap is not None:
        console.print("capacity search, step by step:", highlight=False)
        for line in step_lines(cap):
            console.print("  " + line, highlight=False)
        console.print(f"[bold]capacity: {cap.get('calls')} calls[/] held; failed at "
                      f"{cap.get('failed_at')}: {cap.get('reason')}", highlight=False)
    worst = result.summary.get("worst_calls") or {}
    for line in worst_lines(worst):
        console.print(line, highlight=False)
    verdict = {EXIT_PASS: "PASS", EXIT_CANNOT_RUN: "COULD NOT RUN"}.get(
        result.exit_code, "INTERRUPTED" if lt.get("interrupted") and result.exit_code in
        (EXIT_SIGINT, EXIT_SIGTERM) else "FAIL")
    checked = (result.summary.get("audio") or {}).get("checked")
    if lt.get("audio_checked", True) and not checked:
        audio_word = "not checked (no call was answered)"
    elif lt.get("audio_checked", True):
        audio_word = f"ok ({checked} calls verified)" if lt.get("audio_ok") else "NOT ok"
    else:
        audio_word = f"not checked (--media {lt.get('media')})"
    tg = result.summary.get("targets") or {}
    rate, calls = tg.get("rate") or {}, tg.get("calls") or {}
    reached = "reached" if tg.get("met", True) else (
        "NOT reached" + (" (allowed)" if lt.get("allow_underrun") else ""))
    caps = ", ".join(c["cap"] for c in tg.get("capped_by") or [])
    console.print(f"[bold]{verdict}[/]: failed {lt.get('failed_total')} "
                  f"(max {lt.get('max_failed')}), "
                  f"audio {audio_word}, "
                  f"target {reached}: rate {rate.get('achieved')}/{rate.get('asked')} per s, "
                  f"calls up {calls.get('peak')}/{calls.get('asked')}"
                  + (f", capped by {caps}" if caps else ""), highlight=False)
    for why in lt.get("fail_reasons") or []:
        console.print(f"  {verdict.lower()} because: {why}", highlight=False)
    if opts.json_out:
        sys.stdout.write(json.dumps(result.summary, indent=2, allow_nan=False) + "\n")
        sys.stdout.flush()


def run_loadtest_core(opts: LoadtestOptions, *, config: IaxConfig | None = None,
                      impair: Any = None) -> LoadtestResult:
    """Run a load test on a fresh uvloop (with the live screen); no final output."""
    screen = make_screen(opts)
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        return runner.run(run_loadtest_async(opts, config=config, screen=screen, impair=impair))


def run_loadtest(opts: LoadtestOptions, *, config: IaxConfig | None = None,
                 impair: Any = None) -> LoadtestResult:
    """The whole ``iaxgw loadtest``: run on uvloop, print, write the report."""
    check_report_dir(opts)
    result = run_loadtest_core(opts, config=config, impair=impair)
    finish_output(opts, result)
    return result
