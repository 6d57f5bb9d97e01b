"""The sans-IO IAX2 endpoint: one per UDP socket, many calls (modelled on aioquic's QuicConnection).

No sockets, no clock, no threads: the driver feeds datagrams with ``receive_datagram(data, addr,
now)``, sends what ``datagrams_to_send(now)`` returns, fires ``handle_timer(now)`` at
``get_timer()`` and drains ``next_event()``.  Behaviour follows Asterisk 22 as
docs/protocol.md describes it; the §N and PN below are its sections and pitfalls.

:class:`Endpoint` is one class, as h11 keeps its state machine in one place: the public API, the
datagram entry (mini frames inline: the hot path), the full-frame dispatch with its section-9
table and every signalling handler, in this order:

- state, receive pacing, timers and helpers;
- reliability: reliable send with OSeqno / ISeqno and timestamps, ACK / VNAK, retransmission
  with back-off, give-up, implicit ACK, the per-call PING / LAGRQ keepalive, teardown;
- public API (I/O, calls, introspection) and full-frame receive;
- requests that arrive with dcallno 0: the call-token gate, NEW with user lookup, ACL,
  throttling of failed authentications, AUTHREQ / AUTHREP, codec negotiation, ACCEPT or REJECT;
- handlers of calls we hold: caller side (CALLTOKEN resend, AUTHREQ answer, ACCEPT, autokill)
  and in-call frames (HANGUP, REJECT, PING / PONG, LAGRQ / LAGRP, POKE, UNSUPPORT);
- qualify (POKE / PONG) and registration as registrar and registrant;
- voice: send (full / mini / trunk), trunk streams, trunk and full-voice receive.

Incoming NEWs that pass calltoken, ACL, authentication and codec negotiation are ACCEPTed by the
core (as Asterisk does) and then announced with :class:`IncomingCall`.

The state the endpoint keeps lives in parts that own it, each given its collaborators (the
datagram queue, the timer queue, the counters) and none importing this module:

- ``reliability.Reliability``: full-frame timestamps, sequence numbers, frames kept until
  acknowledged, retransmission; it calls back ``_give_up`` when a frame goes unacknowledged;
- ``calltable.CallTable``: the calls by our call number and by the peer's, the number pool;
- ``admission.Admission``: call tokens, unanswered AUTHREQs, failed-authentication throttling
  (verdicts only: the endpoint sends the replies);
- ``timers.TimerQueue``; ``trunks.TrunkStreams``: the outgoing trunk streams and their flushes;
- ``peers.PeerState`` / ``RegState`` (qualify and registration state, one per peer and
  ``register =>`` line) and ``crypto.CallCrypto`` (one per encrypted call).

The media hot paths (mini frames, trunk receive, batched sends) are compiled in ``_core.media``;
the endpoint hands them its maps and queues.
"""

from __future__ import annotations

import datetime
import logging
import random
import struct
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from iaxgw._core.constants import (
    CAUSES,
    CONTROL_ALLOWED_ON_WIRE,
    FORMAT_BITS,
    FRAME_CONTROL,
    FRAME_IAX,
    FRAME_VOICE,
    IE,
    ControlSubclass,
    FrameType,
    IAXSubclass,
    formats_to_codec_prefs,
)
from iaxgw._core.errors import FrameError
from iaxgw._core.frames import FullFrame, build_full, parse_full, uncompress_subclass
from iaxgw._core.ies import IEs, build_ies, capability_from, format_from
from iaxgw._core.media import (
    TrunkRunTotals,
    arrival_time,
    next_voice_ts,
    receive_media_run,
    receive_mini,
    receive_trunk,
    send_trunk_voice,
    trunk_epoch,
    tx_tick_send,
    voice_sent,
)
from iaxgw._core.probe import RxProbe, TxProbe
from iaxgw.gateway.conf.config import acl_allows
from iaxgw.gateway.conf.model import Entry, IaxConfig
from iaxgw.gateway.iax2.address import Addr
from iaxgw.gateway.iax2.admission import Admission, TokenCheck
from iaxgw.gateway.iax2.calls import (
    STATELESS_CALLNO,
    Call,
    CallKind,
    CallNumbers,
    CallState,
    ChannelInfo,
    NetStats,
    PeerInfo,
    Pending,
    msg_text,
)
from iaxgw.gateway.iax2.calltable import CallTable
from iaxgw.gateway.iax2.calltoken import KEY_BYTES, md5_result
from iaxgw.gateway.iax2.crypto import (
    AES128,
    KEY_ROTATE_MIN_S,
    KEY_ROTATE_SPREAD_S,
    CallCrypto,
    decrypt_datagram,
    derive_key,
    encrypt_datagrams,
    merge_encryption,
    rotation_key,
)
from iaxgw.gateway.iax2.events import (
    AuthFailed,
    CallEnded,
    CallProgress,
    CallSetup,
    DtmfReceived,
    Event,
    IncomingCall,
    PeerStatusChanged,
    ProtocolError,
    RegistrationChanged,
    TextReceived,
    VoiceReceived,
)
from iaxgw.gateway.iax2.peers import (
    QUALIFY_FREQ_NOTOK,
    QUALIFY_FREQ_OK,
    REG_DEFAULT_REFRESH,
    PeerState,
    RegState,
)
from iaxgw.gateway.iax2.reliability import Reliability
from iaxgw.gateway.iax2.rsakeys import KeyProblem, KeyStore, sign_challenge, verify_challenge
from iaxgw.gateway.iax2.timers import Timer, TimerFn, TimerQueue
from iaxgw.gateway.iax2.trunks import TrunkStream, TrunkStreams

__all__ = ["THROTTLED_TEXT", "Endpoint", "MediaSink", "codec_bits", "frame_name"]

log = logging.getLogger("iaxgw.protocol")

MediaSink = Callable[[int, int, bytes, float], None]

#: How late a soft timer (``Endpoint._schedule_soft``) may fire, in seconds: a little more
#: than the default 20 ms trunk period, so that with a trunk running it rides a trunk flush.
SOFT_SLACK = 0.025
PING_INTERVAL = 21.0
LAGRQ_INTERVAL = 10.0


def frame_name(frametype: int, subclass: int) -> str:
    """A full frame's kind as a person reads it: ``NEW``, ``ANSWER``, ``voice frame``."""
    try:
        if frametype == FRAME_IAX:
            return IAXSubclass(subclass).name
        if frametype == FRAME_CONTROL:
            return ControlSubclass(subclass).name
        return f"{FrameType(frametype).name.lower()} frame"
    except ValueError:
        return f"frame {frametype}/{subclass}"


def codec_bits(names: list[str]) -> list[int]:
    """Format bits of codec names, in order, skipping unknown names."""
    return [FORMAT_BITS[n] for n in names if n in FORMAT_BITS]


_MINI = struct.Struct(">HH")
_ACCEPTED = int(CallState.ACCEPTED)
_UP = int(CallState.UP)

_NO_CALLS: dict[int, Call] = {}

#: Voice formats are single bits of a signed 64-bit mask; a subclass that decodes to 0, -1
#: (0xFF) or bit 63 names no audio format.
_FORMAT_LIMIT = 1 << 63

#: At most one VNAK per call this often for media that arrives before its first full voice frame.
NO_VOICE_VNAK_S = 0.1



#: The cause text of the REJECT 50 a throttled source gets (``authfaillimit``): it says why, so
#: the caller does not look for a wrong secret or ACL
THROTTLED_TEXT = "No authority found: throttled after repeated failed authentications"

#: The cause text of the REGREJ a source throttled by ``authfaillimit`` gets
REGREJ_THROTTLED_TEXT = "Registration Refused: throttled after repeated failed authentications"


MAX_DATAGRAM = 4096           # Asterisk's read limit, larger is dropped (docs/protocol.md §2.5)

#: Frames that neither advance ISeqno nor get an ACK, taken out of order (docs/protocol.md §7.2).
_UNSEQUENCED = frozenset(
    {IAXSubclass.ACK, IAXSubclass.INVAL, IAXSubclass.TXCNT, IAXSubclass.TXACC, IAXSubclass.VNAK}
)
#: Frames that do not move ``rx_last`` (docs/protocol.md §8.2: not ACK/PONG/LAGRP).
_NO_TS_TRACK = frozenset({IAXSubclass.ACK, IAXSubclass.PONG, IAXSubclass.LAGRP})
#: Requests checked for a call token when they arrive with dcallno 0 (docs/protocol.md §9.1).
_TOKEN_REQUESTS = frozenset(
    {IAXSubclass.NEW, IAXSubclass.REGREQ, IAXSubclass.REGREL, IAXSubclass.FWDOWNL}
)
#: No INVAL is sent for these when their call is unknown (docs/protocol.md §7.7: no ping-pong).
_NO_INVAL = frozenset(
    {IAXSubclass.ACK, IAXSubclass.INVAL, IAXSubclass.TXCNT, IAXSubclass.TXACC, IAXSubclass.FWDOWNL}
)

#: Table of IAX (type 6) frames: (state or None for "any state", subclass) -> handler, filled
#: in below the class.  A missing entry means "ignored in this state" (ACKed, counted).
Handler = Callable[["Endpoint", Call, FullFrame, IEs, float], None]
_IAX_TABLE: dict[tuple[CallState | None, int], Handler] = {}

_CONTROL_KIND = {
    ControlSubclass.RINGING: "ringing",
    ControlSubclass.PROCEEDING: "proceeding",
    ControlSubclass.PROGRESS: "progress",
    ControlSubclass.ANSWER: "answered",
    ControlSubclass.BUSY: "busy",
    ControlSubclass.CONGESTION: "congestion",
    ControlSubclass.STOP_SOUNDS: "stop_sounds",
    ControlSubclass.HOLD: "hold",
    ControlSubclass.UNHOLD: "unhold",
}


class Endpoint:
    """The IAX2 protocol state of one UDP socket."""


    def __init__(self, config: IaxConfig, *, local_addr: Addr, rng: random.Random | None = None,
                 role_name: str = "iaxgw", wall_offset: float = 0.0) -> None:
        self.config = config
        self.local_addr = local_addr
        self.role_name = role_name
        #: Added to ``now`` to get Unix time (call tokens, DATETIME IEs); the driver sets it.
        self.wall_offset = wall_offset
        # call numbers and auth challenges: the system's CSPRNG unless a test seeds them
        self._rng = rng if rng is not None else random.SystemRandom()
        g = config.general
        self._table = CallTable(CallNumbers(self._rng, g.maxcallnumbers,
                                            nonval_limit=g.maxcallnumbers_nonvalidated))
        # the table's maps and pool, bound once: the hot paths read them directly
        self._calls = self._table.by_callno
        self._by_remote = self._table.by_remote
        self._by_addr = self._table.by_addr
        self._callnos = self._table.numbers
        self._admission = Admission(g, None if rng is None else rng.randbytes(KEY_BYTES))
        self._out: list[tuple[bytes, Addr]] = []
        #: encrypted calls by our call number; ``_flush_gen`` counts ``datagrams_to_send``
        self._crypt: dict[int, CallCrypto] = {}
        self._keys = KeyStore(config.keys_dir)      # auth = rsa
        #: keys of calls destroyed since the last flush: their last frames (the ACK of a
        #: HANGUP) still leave encrypted, as Asterisk's
        self._crypt_gone: list[tuple[int, CallCrypto]] = []
        self._flush_gen = 0
        self._events: deque[Event] = deque()
        self._timers = TimerQueue(SOFT_SLACK)
        self._sink: MediaSink | None = None
        self._started = False
        self._peers: dict[str, PeerState] = {
            name: PeerState(e) for name, e in config.entries.items() if e.is_peer}
        self._regs = [RegState(r, max(g.minregexpire, REG_DEFAULT_REFRESH))
                      for r in g.registers]
        self._trunk_rx_epoch: dict[Addr, float] = {}
        self._echo_used = False          # some call echoes inside the endpoint (set_echo)
        self._stats: Counter[str] = Counter()
        self._warned: dict[str, float] = {}
        # hot-path counters (plain ints; folded into stats())
        self._n_mini_in = 0
        self._n_mini_out = 0
        self._n_trunk_entries_in = 0
        self._n_trunk_datagrams_in = 0
        # rx_prompt(): cached answer and until when it holds
        self._rx_prompt = True
        self._rx_prompt_until = -1.0
        self._setup_until = -1.0        # setup_pending(): until when a request keeps it True
        self._rel = Reliability(self._out, self._timers, self._stats, self._events,
                                self._give_up)
        self._streams = TrunkStreams(g, self._out, self._timers, self._stats)
        self._trunks = self._streams.by_addr        # bound once: the media paths read it

    # ------------------------------------------------------------------ receive pacing

    #: how long rx_prompt() reuses its answer (s); a new call number refreshes it at once
    RX_PROMPT_REFRESH = 0.1

    def rx_prompt(self, now: float) -> bool:
        """Whether datagrams should be read promptly rather than at the next timer.

        False only while every call is an answered call whose voice travels in trunk
        datagrams: what arrives for those is voice whose answer (an echo, a bridged leg's
        trunk) waits for the next trunk flush anyway, so a driver that reads in batches may
        read just before that flush.  A call being set up or torn down, a qualify poke, a
        registration or a call without trunking needs prompt reading.  Cached for
        ``RX_PROMPT_REFRESH`` seconds (an O(calls) scan)."""
        if now < self._rx_prompt_until:
            return self._rx_prompt
        up = CallState.UP
        prompt = False
        for c in self._calls.values():
            if c.state != up or not c.trunk:
                prompt = True
                break
        self._rx_prompt = prompt
        self._rx_prompt_until = now + self.RX_PROMPT_REFRESH
        return prompt

    # ------------------------------------------------------------------ timers

    def _schedule(self, when: float, fn: TimerFn, arg: Any) -> Timer:
        return self._timers.schedule(when, fn, arg)

    def _schedule_soft(self, when: float, fn: TimerFn, arg: Any) -> Timer:
        """A timer that may fire up to :data:`SOFT_SLACK` late (gateway/iax2/timers.py), for
        periodic work whose exact moment does not matter (PING, LAGRQ, qualify, registration
        refresh)."""
        return self._timers.schedule_soft(when, fn, arg)

    @staticmethod
    def _cancel(t: Timer | None) -> None:
        if t is not None:
            t.alive = False

    # ------------------------------------------------------------------ helpers

    def _warn(self, key: str, msg: str, now: float, addr: Addr | None = None) -> None:
        """Count, log at debug, warn at most every 10 s per key, emit ProtocolError likewise."""
        self._stats[key] += 1
        log.debug("%s: %s", self.role_name, msg)
        last = self._warned.get(key)
        if last is None or now - last >= 10.0:
            self._warned[key] = now
            log.warning("%s: %s", self.role_name, msg)
            if addr is not None:
                self._events.append(ProtocolError(addr, msg))

    def _wall_datetime(self, now: float) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(max(now + self.wall_offset, 946684800.0))

    def _caps(self, entry: Entry | None) -> list[int]:
        names = entry.codecs if entry is not None and entry.codecs else self.config.general.codecs
        return codec_bits(names) or [4]

    def _new_call(self, callno: int, kind: CallKind, state: CallState, addr: Addr,
                  now: float) -> Call:
        call = Call(callno, kind, state, addr, now)
        self._table.add(call)
        self._rx_prompt = True          # until the next rx_prompt() scan
        self._rx_prompt_until = now + self.RX_PROMPT_REFRESH
        return call

    def _send_stateless(self, scallno: int, f: FullFrame, addr: Addr, subclass: int,
                        payload: bytes = b"") -> None:
        """Reply from call 1 without state (CALLTOKEN, PONG to POKE, calltoken REJECT/REGREJ)."""
        data = build_full(STATELESS_CALLNO, f.scallno, f.ts, 0, (f.iseqno + 1) & 0xFF, FRAME_IAX,
                          subclass, payload)
        self._out.append((data, addr))
        self._stats["frames_out_stateless"] += 1

    def _send_inval(self, f: FullFrame, addr: Addr) -> None:
        """INVAL for an unknown call: ts 0, seqnos 0, src/dst swapped (docs/protocol.md §7.7)."""
        data = build_full(f.dcallno, f.scallno, 0, 0, 0, FRAME_IAX, IAXSubclass.INVAL)
        self._out.append((data, addr))
        self._stats["frames_out_inval"] += 1

    def _end(self, call: Call, cause: int, reason: Any, text: str | None = None) -> None:
        """Emit CallEnded once, for calls the application knows about."""
        if call.ended:
            return
        call.ended = True
        if call.announced:
            self._events.append(CallEnded(call.callno, cause,
                                          text or CAUSES.get(cause, f"cause {cause}"), reason))

    def _cancel_call_timers(self, call: Call) -> None:
        for t in call.timers:
            t.alive = False
        call.timers.clear()

    def _destroy(self, call: Call, now: float) -> None:
        if not self._table.remove(call, now):
            return
        cc = self._crypt.get(call.callno)
        if cc is not None:
            self._crypt_gone.append((call.callno, cc))
        self._rel.forget(call)
        self._cancel_call_timers(call)
        call.state = CallState.TERMINATING
        if call.auth_pending:
            call.auth_pending = False
            self._admission.authreq_done(call.peer)
        if call.kind == CallKind.POKE:
            st = self._peers.get(call.peer)
            if st is not None and st.poke_callno == call.callno:
                st.poke_callno = 0
        elif (call.kind == CallKind.REG_OUT and call.reg is not None
              and call.reg.callno == call.callno):
            call.reg.callno = 0

    # ------------------------------------------------------------------ reliability

    def _give_up(self, call: Call, p: Pending, now: float) -> None:
        """docs/protocol.md §7.6: a final frame just destroys; anything else ends the call with
        cause 27, without sending HANGUP; registrations go to Timeout (``Reliability`` calls
        this when ``p``, taken out of ``call.unacked``, went unacknowledged)."""
        if p.final or call.kind in (CallKind.REG_IN, CallKind.POKE):
            self._destroy(call, now)
            return
        if call.kind == CallKind.REG_OUT:
            rs = call.reg
            self._destroy(call, now)
            if rs is not None:
                # as Asterisk's __attempt_transmit: no perceived address, default refresh
                rs.apparent_addr = None
                rs.refresh = REG_DEFAULT_REFRESH
                self._reg_status(rs, "Timeout", 0)
                self._cancel(rs.timer)
                rs.timer = self._schedule(now + QUALIFY_FREQ_NOTOK,
                                          self._register_tick, rs)
            return
        what = frame_name(p.frametype, p.subclass)
        waited = max(0.0, now - call.start - p.ts / 1000.0)
        log.info("%s: call %d: no ACK for %s after %d sends, dropping (cause 27)",
                 self.role_name, call.callno, what, p.sends)
        self._end(call, 27, "timeout",
                  f"{what} never acknowledged after {p.sends} sends ({waited:.0f} s)")
        self._destroy(call, now)

    def _on_vnak(self, call: Call, f: FullFrame, ies: IEs | None, now: float) -> None:
        self._rel.resend_from(call, f.iseqno)

    def _parse_ies(self, f: FullFrame, addr: Addr, now: float) -> IEs | None:
        try:
            return IEs.parse(f.payload)
        except FrameError as exc:
            self._warn("drop_malformed_ies", f"malformed IEs in IAX {f.csub} from {addr}: {exc}",
                       now, addr)
            return None


    @staticmethod
    def _keep_call_timer(call: Call, t: Timer) -> None:
        """Keep ``t`` with ``call`` (cancelled when the call goes).  Timers that fired or were
        cancelled are dropped here, so the list holds the call's live timers and a few more
        however long the call lasts (PING and LAGRQ re-arm every 10-20 s)."""
        timers = call.timers
        if len(timers) >= 4:
            timers[:] = [x for x in timers if x.alive]
        timers.append(t)

    def _start_call_timers(self, call: Call, now: float) -> None:
        self._cancel_call_timers(call)
        self._keep_call_timer(call, self._schedule_soft(now + PING_INTERVAL, self._ping_tick,
                                                        call))
        self._keep_call_timer(call, self._schedule_soft(now + LAGRQ_INTERVAL, self._lagrq_tick,
                                                        call))

    def _ping_tick(self, now: float, call: Call) -> None:
        if self._calls.get(call.callno) is not call or call.state == CallState.TERMINATING:
            return
        self._rel.send(call, FRAME_IAX, IAXSubclass.PING, b"", now)
        self._keep_call_timer(call, self._schedule_soft(now + PING_INTERVAL, self._ping_tick,
                                                        call))

    def _lagrq_tick(self, now: float, call: Call) -> None:
        if self._calls.get(call.callno) is not call or call.state == CallState.TERMINATING:
            return
        self._rel.send(call, FRAME_IAX, IAXSubclass.LAGRQ, b"", now)
        self._keep_call_timer(call, self._schedule_soft(now + LAGRQ_INTERVAL, self._lagrq_tick,
                                                        call))


    # ------------------------------------------------------------------ public API: I/O

    def start(self, now: float) -> None:
        """Begin qualify and registrations (also done lazily by the first I/O call)."""
        if self._started:
            return
        self._started = True
        self._callnos.start(now)
        for st in self._peers.values():
            if st.entry.qualify is not None and st.addr() is not None:
                self._schedule(now, self._qualify_tick, st)
        for rs in self._regs:
            self._schedule(now, self._register_tick, rs)

    def set_media_sink(self, sink: MediaSink | None) -> None:
        """Deliver voice payloads to ``sink(callno, ts, payload, now)`` instead of events."""
        self._sink = sink

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """Process one received UDP datagram."""
        if self._crypt and 4 <= len(data) <= MAX_DATAGRAM:
            plain = self._decrypt(data, addr, now)
            if plain is None:
                return
            data = plain
        self._receive_plain(data, addr, now)

    def _decrypt(self, data: bytes, addr: Addr, now: float) -> bytes | None:
        """A frame of an encrypted call, decrypted (``crypto.decrypt_datagram``); a frame that
        should have been encrypted and is not decryptable is dropped, counted and logged."""
        plain = decrypt_datagram(data, addr, self._crypt, self._calls, self._by_remote)
        if plain is None:
            self._warn("drop_decrypt_failed", f"frame from {addr} of an encrypted call does "
                       "not decrypt with its key (in the clear, or a wrong secret)", now, addr)
        return plain

    def _receive_plain(self, data: bytes, addr: Addr, now: float) -> None:
        """One received datagram, decrypted if it was encrypted."""
        n = len(data)
        if 4 <= n <= MAX_DATAGRAM:
            b0 = data[0]
            if b0 < 0x80 and (b0 or data[1]):
                # voice mini frame: the hot path (docs/protocol.md §2)
                self._n_mini_in += 1
                call = self._by_remote.get((addr, (b0 << 8) | data[1]))
                if call is None or not call.format_rx or call.state > CallState.UP:
                    self._stats["drop_mini_unknown_call" if call is None
                                else "drop_mini_call_not_active"] += 1
                    if call is not None and not call.format_rx:
                        call.rx_early += 1
                        self._vnak_no_voice(call, now)
                    return
                # timestamp unwrap, receive statistics, then the payload to the sink, to the
                # call's probe, or (an echoing call, Echo()) straight back as a mini frame
                if receive_mini(call, data, now, self._sink or self._voice_event, self._out):
                    self._n_mini_out += 1
                return
        if not self._started:
            self.start(now)
        if n < 4:
            self._stats["drop_too_short"] += 1
            return
        if n > MAX_DATAGRAM:
            self._warn("drop_oversize", f"oversize datagram ({n} bytes) from {addr}", now)
            return
        if data[0] & 0x80:
            self._receive_full(data, addr, now)
        elif data[2] & 0x80:
            self._stats["drop_video_mini"] += 1
        else:
            self._receive_meta(data, addr, now)

    def receive_batch(self, batch: list[tuple[bytes, Addr, float]], loop_now: float,
                      floor: float) -> float:
        """A burst of received datagrams ``(data, addr, age_s)``, in order, each at its arrival
        time ``loop_now - age_s`` (never before ``floor`` nor the previous one); returns the
        last arrival time.  Runs of media datagrams (trunk datagrams, mini frames of active
        calls) are taken in one compiled pass, the others one by one (``receive_datagram``); the
        same outcome as receiving each in turn."""
        if self._crypt:
            batch = self._decrypt_batch(batch, loop_now)
        i, n = 0, len(batch)
        while i < n:
            if self._started:
                i, floor = self._receive_media_run(batch, i, loop_now, floor, MAX_DATAGRAM)
                if i >= n:
                    break
            data, addr, age = batch[i]
            now = floor = arrival_time(loop_now, age, floor)
            i += 1
            try:
                self._receive_plain(data, addr, now)
            except Exception:  # the endpoint must survive anything a peer sends
                log.exception("endpoint failed on a datagram from %s", addr)
        return floor

    def _decrypt_batch(self, batch: list[tuple[bytes, Addr, float]], loop_now: float
                       ) -> list[tuple[bytes, Addr, float]]:
        """The batch with the frames of encrypted calls decrypted, in order (an RTKEY changes
        the key for what follows it), and those that do not decrypt left out."""
        out: list[tuple[bytes, Addr, float]] = []
        for item in batch:
            data, addr, age = item
            if not 4 <= len(data) <= MAX_DATAGRAM:
                out.append(item)
                continue
            plain = self._decrypt(data, addr, loop_now - age)
            if plain is data:
                out.append(item)
            elif plain is not None:
                out.append((plain, addr, age))
        return out

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        """The datagrams queued since the last call, oldest first (the frames of encrypted
        calls encrypted)."""
        if not self._started:
            self.start(now)
        out = self._out
        self._out = self._rel.out = self._streams.out = []
        if self._crypt:
            encrypt_datagrams(out, self._crypt, self._flush_gen)
            for callno, cc in self._crypt_gone:
                if self._crypt.get(callno) is cc:
                    del self._crypt[callno]
            self._crypt_gone.clear()
        self._flush_gen += 1
        return out

    def call_encrypted(self, callno: int) -> bool:
        """Whether the call's frames are encrypted (AES-128 negotiated and keyed)."""
        cc = self._crypt.get(callno)
        return cc is not None and cc.tx is not None

    def get_timer(self) -> float | None:
        """When ``handle_timer`` should next run (loop time), or None."""
        return self._timers.deadline()

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``."""
        if not self._started:
            self.start(now)
        self._timers.fire_due(now)

    def next_event(self) -> Event | None:
        """The oldest queued event, or None."""
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ public API: calls

    def call(self, peer: str, exten: str, now: float, *, codec: int | None = None,
             caller_num: str = "", caller_name: str = "", context: str | None = None) -> int:
        """Place a call to ``peer`` (a peer/friend entry); returns our call number."""
        if not self._started:
            self.start(now)
        st = self._peers.get(peer)
        if st is None:
            raise KeyError(f"no peer named {peer!r}")
        addr = st.addr()
        if addr is None:
            raise ValueError(f"peer {peer!r} has no address (dynamic and not registered)")
        entry = st.entry
        caps = self._caps(entry)
        if codec is None:
            codec = caps[0] if caps else 4
        callno = self._callnos.allocate(addr[0], now, entry.trunk)
        if callno is None:
            raise RuntimeError(f"no call number left for {addr[0]}")
        call = self._new_call(callno, CallKind.CALL_OUT, CallState.NEW_SENT, addr, now)
        call.entry = entry
        call.peer = entry.name
        call.trunk = entry.trunk
        call.codec = codec
        call.exten = exten
        call.announced = True
        capmask = 0
        for c in caps:
            capmask |= c
        capmask |= codec
        call.capability = capmask
        autokill = entry.qualify or self.config.general.autokill
        if autokill:
            call.pingtime = max(autokill // 2, 1)
            call.timers.append(self._schedule(now + 2 * autokill / 1000.0, self._autokill, call))
        prefs = [codec] + [c for c in caps if c != codec]
        ies: list[tuple[int, object]] = [
            (IE.VERSION, 2),
            (IE.CALLED_NUMBER, exten),
            (IE.CODEC_PREFS, formats_to_codec_prefs(prefs)),
        ]
        if caller_num:
            ies.append((IE.CALLING_NUMBER, caller_num))
        ies += [(IE.CALLINGPRES, 0), (IE.CALLINGTON, 0), (IE.CALLINGTNS, 0),
                (IE.CALLINGANI2, 0)]
        if caller_name:
            ies.append((IE.CALLING_NAME, caller_name))
        ctx = context if context is not None else entry.peercontext
        if ctx:
            ies.append((IE.CALLED_CONTEXT, ctx))
        if entry.username:
            ies.append((IE.USERNAME, entry.username))
            call.username = entry.username
        if entry.encryption:
            ies.append((IE.ENCRYPTION, entry.encryption))
        ies += [
            (IE.FORMAT, codec & 0xFFFFFFFF),
            (IE.FORMAT2, codec),
            (IE.CAPABILITY, capmask & 0xFFFFFFFF),
            (IE.CAPABILITY2, capmask),
            (IE.ADSICPE, 2),
            (IE.DATETIME, self._wall_datetime(now)),
            (IE.CALLTOKEN, b""),
        ]
        call.new_ies = ies
        self._stats["calls_out"] += 1
        self._stats["calls_total"] += 1
        self._rel.send(call, FRAME_IAX, IAXSubclass.NEW, build_ies(ies), now)
        return callno

    def ringing(self, callno: int, now: float) -> None:
        self._control(callno, ControlSubclass.RINGING, now)

    def proceeding(self, callno: int, now: float) -> None:
        self._control(callno, ControlSubclass.PROCEEDING, now)

    def progress(self, callno: int, now: float) -> None:
        self._control(callno, ControlSubclass.PROGRESS, now)

    def answer(self, callno: int, now: float) -> None:
        call = self._control(callno, ControlSubclass.ANSWER, now)
        if call is not None:
            call.state = CallState.UP

    def busy(self, callno: int, now: float) -> None:
        self._control(callno, ControlSubclass.BUSY, now)

    def congestion(self, callno: int, now: float) -> None:
        self._control(callno, ControlSubclass.CONGESTION, now)

    def hangup(self, callno: int, now: float, cause: int = 16) -> None:
        """Send HANGUP (CAUSECODE only) as our final frame; CallEnded(reason="local") follows."""
        call = self._calls.get(callno)
        if call is None or call.kind not in (CallKind.CALL_IN, CallKind.CALL_OUT):
            return
        if call.state == CallState.TERMINATING:
            return
        self._end(call, cause, "local")
        self._cancel_call_timers(call)
        call.state = CallState.TERMINATING
        self._rel.send(call, FRAME_IAX, IAXSubclass.HANGUP,
                       build_ies([(IE.CAUSECODE, cause & 0xFF)]), now, final=True)

    def reject(self, callno: int, now: float, cause: int = 21, text: str | None = None) -> None:
        """Refuse a call: REJECT while it is not yet ACCEPTed, HANGUP afterwards."""
        call = self._calls.get(callno)
        if call is None:
            return
        if call.state == CallState.WAIT_AUTHREP:
            self._reject_call(call, cause, text, now)
        else:
            self.hangup(callno, now, cause)


    def send_dtmf(self, callno: int, digit: str, now: float) -> None:
        """DTMF as Asterisk sends it: a type-12 (begin) then a type-1 (end) full frame."""
        call = self._calls.get(callno)
        if call is None or not CallState.ACCEPTED <= call.state <= CallState.UP or len(digit) != 1:
            return
        self._rel.send(call, int(FrameType.DTMF_BEGIN), ord(digit), b"", now)
        self._rel.send(call, int(FrameType.DTMF), ord(digit), b"", now)

    def send_text(self, callno: int, text: str, now: float) -> None:
        call = self._calls.get(callno)
        if call is None or not CallState.ACCEPTED <= call.state <= CallState.UP:
            return
        self._rel.send(call, int(FrameType.TEXT), 0, text.encode() + b"\0", now)

    def poke(self, peer: str, now: float) -> None:
        """Send a POKE to ``peer`` now (qualify does this by itself for peers with qualify)."""
        st = self._peers.get(peer)
        if st is None:
            raise KeyError(f"no peer named {peer!r}")
        self._send_poke(st, now)

    # ------------------------------------------------------------------ introspection

    def call_info(self, callno: int) -> Call | None:
        """The live record of call ``callno`` (read-only use)."""
        return self._calls.get(callno)

    def peers(self) -> list[PeerInfo]:
        out = []
        for st in self._peers.values():
            out.append(PeerInfo(st.name, st.addr(), st.status_text(), st.entry.trunk, st.rtt_ms,
                                st.entry.dynamic))
        return out

    def channels(self) -> list[ChannelInfo]:
        out = []
        for c in self._calls.values():
            if c.kind not in (CallKind.CALL_IN, CallKind.CALL_OUT):
                continue
            out.append(ChannelInfo(
                c.peer, c.addr, c.callno, c.peer_callno, c.oseqno, c.iseqno, c.codec,
                c.state.name, "out" if c.kind == CallKind.CALL_OUT else "in",
                round(c.rx.jitter, 1), c.rx.lost, c.rx.loss_pct, c.rx.frames, c.tx_frames,
                c.trunk, c.username, msg_text(c.first_msg), msg_text(c.last_msg)))
        return out

    def netstats(self) -> list[NetStats]:
        out = []
        for c in self._calls.values():
            if c.kind not in (CallKind.CALL_IN, CallKind.CALL_OUT):
                continue
            out.append(NetStats(c.peer, c.callno, c.rtt_ms, self._rr_values(c),
                                dict(c.remote_rr), msg_text(c.first_msg),
                                msg_text(c.last_msg)))
        return out

    def stats(self) -> dict[str, int]:
        d = dict(self._stats)
        d["frames_in_mini"] = self._n_mini_in
        d["frames_out_mini"] = self._n_mini_out
        d["trunk_entries_in"] = self._n_trunk_entries_in
        if self._n_trunk_datagrams_in:
            d["trunk_datagrams_in"] = self._n_trunk_datagrams_in
        d["calls_active"] = sum(1 for c in self._calls.values()
                                if c.kind in (CallKind.CALL_IN, CallKind.CALL_OUT))
        d["callnos_in_use"] = self._callnos.in_use
        return d

    def outstanding(self) -> tuple[int, int]:
        """Full frames sent and not yet acknowledged, and how many of them end their call
        (Asterisk's "Outstanding frames" / "Packets in transmit queue" of ``iax2 show stats``)."""
        total = final = 0
        for c in self._calls.values():
            total += len(c.unacked)
            final += sum(1 for p in c.unacked.values() if p.final)
        return total, final

    def registry(self) -> list[RegState]:
        """Our ``register =>`` lines' live state (``iaxgw show registry``; read only)."""
        return list(self._regs)

    def registrations(self) -> list[tuple[str, str, Addr | None]]:
        """Our ``register =>`` lines: (label, status, apparent address)."""
        return [(r.label, r.status, r.apparent_addr) for r in self._regs]


    # ------------------------------------------------------------------ receive: full frames

    def _receive_full(self, data: bytes, addr: Addr, now: float) -> None:
        try:
            f = parse_full(data)
        except FrameError as exc:
            self._warn("drop_malformed_full", f"malformed full frame from {addr}: {exc}", now,
                       addr)
            return
        self._stats["frames_in_full"] += 1
        is_iax = f.frametype == FRAME_IAX
        sub = f.csub if is_iax else -2
        if f.dcallno:
            call = self._calls.get(f.dcallno)
            if call is not None and call.addr == addr and (
                    call.peer_callno == f.scallno or call.peer_callno == 0
                    or f.scallno == STATELESS_CALLNO):
                if f.scallno == STATELESS_CALLNO and call.peer_callno != STATELESS_CALLNO:
                    self._on_stateless_reply(call, f, now)
                    return
                self._on_call_frame(call, f, is_iax, sub, now)
                return
        else:
            call = self._by_remote.get((addr, f.scallno))
            if call is not None:
                self._on_call_frame(call, f, is_iax, sub, now)
                return
            if is_iax and sub in _TOKEN_REQUESTS:
                self._on_request(f, addr, now)
                return
            if is_iax and sub == IAXSubclass.POKE:
                self._stats["pokes_answered"] += 1
                self._send_stateless(STATELESS_CALLNO, f, addr, IAXSubclass.PONG)
                return
        if f.dcallno == STATELESS_CALLNO and is_iax and sub == IAXSubclass.ACK:
            return  # ACKs to call 1 are dropped
        if is_iax and sub in _NO_INVAL:
            self._stats["drop_unknown_call"] += 1
            return
        self._stats["drop_unknown_call"] += 1
        log.debug("%s: frame for unknown call %d from %s -> INVAL", self.role_name,
                  f.dcallno, addr)
        self._send_inval(f, addr)
        if (f.dcallno > STATELESS_CALLNO and not (is_iax and sub == IAXSubclass.HANGUP)
                and self._callnos.is_free(f.dcallno)
                and any(st.addr() == addr for st in self._peers.values())
                and self._callnos.quarantine(f.dcallno, addr[0], now)):
            # a configured peer may still hold a call on this number of ours (we restarted,
            # or it missed our HANGUP): a new call on it would be taken as the old one.  A
            # HANGUP needs no hold (the peer is ending the call and forgets it at our INVAL);
            # CallNumbers.quarantine bounds what forged frames can hold.
            self._stats["callnos_quarantined"] += 1

    def _on_stateless_reply(self, call: Call, f: FullFrame, now: float) -> None:
        """CALLTOKEN, PONG to POKE, calltoken REJECT/REGREJ: from call 1, no ACK, no seqnos."""
        if f.frametype != FRAME_IAX:
            return
        ies = self._parse_ies(f, call.addr, now)
        if ies is None:
            return
        sub = f.csub
        if call.state == CallState.NEW_SENT:
            self._cancel_autokill(call)
        handler = _IAX_TABLE.get((call.state, sub))
        if handler is None and sub == IAXSubclass.REJECT and call.state == CallState.NEW_SENT:
            handler = Endpoint._on_reject
        if handler is None:
            self._stats["drop_stateless_unexpected"] += 1
            return
        handler(self, call, f, ies, now)


    def _on_call_frame(self, call: Call, f: FullFrame, is_iax: bool, sub: int, now: float) -> None:
        if is_iax and sub == IAXSubclass.INVAL:
            self._stats["inval_received"] += 1
            if call.kind in (CallKind.CALL_IN, CallKind.CALL_OUT):
                self._end(call, 0, "inval", "INVAL received")
            elif call.kind == CallKind.REG_OUT and call.reg is not None:
                self._reg_status(call.reg, "Rejected", 0)
            self._destroy(call, now)
            return
        if self._rel.ack_upto(call, f.iseqno):
            self._destroy(call, now)       # its final frame was acknowledged
            return
        if not (is_iax and sub in _UNSEQUENCED):
            expected = call.iseqno
            if f.oseqno != expected:
                if ((expected - f.oseqno) & 0xFF) < 128:
                    self._stats["frames_in_dup"] += 1
                    self._rel.send_unreliable(call, IAXSubclass.ACK, f.ts, f.iseqno)
                else:
                    self._stats["frames_in_gap"] += 1
                    self._rel.send_unreliable(call, IAXSubclass.VNAK, call.lastsent, call.iseqno)
                return
            call.iseqno = (expected + 1) & 0xFF
            if not (is_iax and sub in _NO_TS_TRACK) and f.ts > call.rx_last:
                call.rx_last = f.ts
            if call.peer_callno == 0 and f.scallno:
                self._table.bind_remote(call, f.scallno)
            self._rel.send_unreliable(call, IAXSubclass.ACK, f.ts, f.iseqno)
        elif call.peer_callno == 0 and f.scallno and sub != IAXSubclass.ACK:
            self._table.bind_remote(call, f.scallno)
        ft = f.frametype
        if is_iax:
            call.mark_msg(sub)
            if call.state == CallState.NEW_SENT:
                self._cancel_autokill(call)
            if sub == IAXSubclass.ACK:
                return
            ies = self._parse_ies(f, call.addr, now)
            if ies is None:
                return
            handler = _IAX_TABLE.get((call.state, sub)) or _IAX_TABLE.get((None, sub))
            if handler is None:
                if not 1 <= sub <= max(IAXSubclass):
                    self._stats["unsupport_sent"] += 1
                    self._rel.send(call, FRAME_IAX, IAXSubclass.UNSUPPORT,
                                   build_ies([(IE.IAX_UNKNOWN, sub)]), now)
                else:
                    self._stats["ignored_iax_" + IAXSubclass(sub).name.lower()] += 1
                return
            handler(self, call, f, ies, now)
        elif ft == FRAME_VOICE:
            self._on_full_voice(call, f, now)
        elif ft == FRAME_CONTROL:
            self._on_control(call, f, now)
        elif ft == FrameType.DTMF:
            if CallState.ACCEPTED <= call.state <= CallState.UP:
                self._events.append(DtmfReceived(call.callno, chr(f.csub), f.ts))
        elif ft == FrameType.TEXT:
            if CallState.ACCEPTED <= call.state <= CallState.UP:
                self._events.append(TextReceived(
                    call.callno, f.payload.split(b"\0", 1)[0].decode("utf-8", "replace")))
        else:
            self._stats[f"ignored_frametype_{ft}"] += 1


    def _on_rtkey(self, call: Call, f: FullFrame, ies: IEs, now: float) -> None:
        """The peer's new key took effect when the RTKEY was decrypted (``crypto``); an RTKEY
        on a call that is not encrypted is ignored (Asterisk warns "bad things will happen")."""
        if call.callno in self._crypt:
            self._stats["key_rotations_received"] += 1
        else:
            self._warn("rtkey_unencrypted", f"call {call.callno}: RTKEY on a call that is not "
                       "encrypted, ignored", now, call.addr)

    def _on_control(self, call: Call, f: FullFrame, now: float) -> None:
        sub = -1 if f.csub == 0xFF else f.csub
        if sub not in CONTROL_ALLOWED_ON_WIRE:
            self._stats["drop_control_not_allowed"] += 1
            return
        kind = _CONTROL_KIND.get(ControlSubclass(sub))
        if kind is None or call.state not in (CallState.ACCEPTED, CallState.UP):
            self._stats["ignored_control"] += 1
            return
        if sub == ControlSubclass.ANSWER:
            call.state = CallState.UP
        self._events.append(CallProgress(call.callno, kind))  # type: ignore[arg-type]

    def _control(self, callno: int, sub: int, now: float) -> Call | None:
        call = self._calls.get(callno)
        if call is None or not CallState.ACCEPTED <= call.state <= CallState.UP:
            return None
        self._rel.send(call, FRAME_CONTROL, sub, b"", now)
        return call

    # ------------------------------------------------------------------ requests (dcallno 0)


    #: after a request (a NEW with or without call token, a REGREQ) arrives, the driver reads
    #: and sends at once for this long (s): a burst of call setups is answered datagram by
    #: datagram, as Asterisk does, so the AUTHREPs to earlier AUTHREQs are read before NEWs
    #: that arrive after them -- with batched reads they would wait in the socket while later
    #: NEWs are counted against ``maxauthreq``
    SETUP_PROMPT_S = 1.0

    def setup_pending(self, now: float) -> bool:
        """Whether a call setup (or another request) is in progress: an AUTHREQ unanswered,
        or a request within the last :data:`SETUP_PROMPT_S` seconds.  A batching driver then
        reads each datagram as it comes and sends what it produced at once."""
        return now < self._setup_until or self._admission.authreq_pending()

    def _token_gate(self, f: FullFrame, ies: IEs, addr: Addr, now: float, entry: Entry | None,
                    name: str, reject_sub: int) -> bool:
        """docs/protocol.md §9.1 call token: True when the request may allocate state;
        otherwise the CALLTOKEN or the REJECT / REGREJ (``reject_sub``) it gets is sent."""
        present = IE.CALLTOKEN in ies
        v = self._admission.token_verdict(ies.get(IE.CALLTOKEN, None), present, addr,
                                          now + self.wall_offset, entry, name)
        check = v.check
        if check is TokenCheck.PASS:
            if present:
                self._stats["calltoken_accepted"] += 1
            return True
        if check is TokenCheck.ISSUE:
            self._stats["calltoken_issued"] += 1
            self._send_stateless(STATELESS_CALLNO, f, addr, IAXSubclass.CALLTOKEN,
                                 build_ies([(IE.CALLTOKEN, v.token)]))
            return False
        if check is TokenCheck.MISSING:
            self._stats["calltoken_missing_rejected"] += 1
        else:
            self._stats["calltoken_rejected"] += 1
            log.info("%s: %s from %s: %s", self.role_name, IAXSubclass(f.csub).name, addr,
                     v.reason)
        self._events.append(AuthFailed(addr, name, v.reason))
        self._send_stateless(STATELESS_CALLNO, f, addr, reject_sub)
        return False

    def _on_request(self, f: FullFrame, addr: Addr, now: float) -> None:
        self._setup_until = now + self.SETUP_PROMPT_S
        self._rx_prompt = True
        self._rx_prompt_until = now + self.RX_PROMPT_REFRESH
        ies = self._parse_ies(f, addr, now)
        if ies is None:
            return
        sub = f.csub
        if sub == IAXSubclass.NEW:
            self._on_new(f, ies, addr, now)
        elif sub in (IAXSubclass.REGREQ, IAXSubclass.REGREL):
            self._on_regreq_new(f, ies, addr, now)
        else:
            self._stats["drop_unsupported_request"] += 1

    def _guess_user(self, addr: Addr) -> Entry | None:
        """No USERNAME: a user without secret whose ACL admits the source (Asterisk scoring)."""
        for e in self.config.entries.values():
            if e.is_user and not e.secrets and acl_allows(e.acl, addr[0]):
                return e
        return None

    def _incoming_trunk(self, addr: Addr) -> bool:
        """docs/protocol.md §3.4: trunk iff a trunk=yes peer's host AND port equal the source."""
        for st in self._peers.values():
            if st.addr() == addr:
                return st.entry.trunk
        return False

    def _on_new(self, f: FullFrame, ies: IEs, addr: Addr, now: float) -> None:
        username = ies.get_str(IE.USERNAME)
        entry = self.config.user(username) if username else self._guess_user(addr)
        name = username or (entry.name if entry is not None else "guest")
        if not self._token_gate(f, ies, addr, now, entry, name, IAXSubclass.REJECT):
            return
        trunk = self._incoming_trunk(addr)
        validated = bool(ies.get(IE.CALLTOKEN))     # past the gate: a valid token, or none
        callno = self._callnos.allocate(addr[0], now, trunk, validated)
        if callno is None:
            why = self._callnos.refusal(addr[0], trunk, validated)
            self._warn("reject_callno_limit", f"no call number for {addr}: {why}", now)
            self._send_stateless(STATELESS_CALLNO, f, addr, IAXSubclass.REJECT)
            return
        call = self._new_call(callno, CallKind.CALL_IN, CallState.WAIT_AUTHREP, addr, now)
        call.mark_msg(IAXSubclass.NEW)            # Asterisk's first_iax_message: Rx:NEW
        self._table.bind_remote(call, f.scallno)
        call.iseqno = (f.oseqno + 1) & 0xFF
        call.rx_last = f.ts
        call.trunk = trunk
        call.username = username or ""
        call.exten = ies.get_str(IE.CALLED_NUMBER) or "s"
        call.new_ies = list(ies)
        self._start_pending_timers(call, now)
        self._stats["calls_in"] += 1
        self._stats["calls_total"] += 1
        if self._auth_throttled(addr, f"NEW from {addr} (user {username!r})", name, now):
            self._reject_call(call, 50, THROTTLED_TEXT, now, delay=True)
            return
        version = ies.get_int(IE.VERSION)
        if version is not None and version > 2:
            self._reject_call(call, 111, "Protocol version not supported", now)
            return
        if entry is None or not acl_allows(entry.acl, addr[0]):
            self._fake_authreq(call, entry, username or "", now)
            return
        call.entry = entry
        call.peer = entry.name
        if entry.forceencryption and not entry.secrets:
            self._auth_fail(call, f"[{entry.name}] has no secret while forceencryption = yes "
                            "(no key to encrypt with)", now)
            return
        if entry.secrets or entry.inkeys:
            if self._admission.authreq_full(entry.name):
                self._events.append(AuthFailed(addr, name, "too many unanswered AUTHREQs"))
                self._reject_call(call, 21, "Unauthenticated call limit reached", now)
                return
            methods = ((2 if "md5" in entry.auth else 0) | (1 if "plaintext" in entry.auth else 0)
                       | (4 if "rsa" in entry.auth and entry.inkeys else 0)) or 2
            self._admission.authreq_sent(entry.name)
            call.auth_pending = True
            offered = ies.get_int(IE.ENCRYPTION) or 0
            enc, rotate = merge_encryption(entry.encryption, offered if methods & 6 else 0)
            self._send_authreq(call, methods, entry.name, now, enc)
            if enc:
                # from now on the caller's frames come encrypted with MD5(challenge, secret)
                self._crypt[call.callno] = CallCrypto(
                    methods=enc, rotate=rotate, challenge=call.challenge,
                    candidates=list(entry.secrets))
            return
        self._accept_incoming(call, now)

    def _fake_authreq(self, call: Call, entry: Entry | None, username: str,
                      now: float) -> None:
        """An unknown user, or a known one the ACL does not admit from this source: the same
        AUTHREQ (md5, a challenge, the name asked for), then REJECT 50 whatever comes back.
        Asterisk's user search skips users whose ACL denies the source, so to the caller the
        two look alike and neither tells which names exist."""
        call.fake_auth = (f"unknown user {username!r}" if entry is None else
                          f"{call.addr[0]} denied by the ACL of [{entry.name}]")
        call.peer = username
        self._send_authreq(call, 2, username, now)

    def _start_pending_timers(self, call: Call, now: float) -> None:
        """A call made by a request (NEW, REGREQ) runs its PING and LAGRQ timers from the
        start, as Asterisk runs them on every call it creates: a caller that goes silent after
        our AUTHREQ or REGAUTH (even one it acknowledged) leaves the LAGRQ unacknowledged, and
        the call goes after its retransmissions (about 42 s), its ``maxauthreq`` slot and
        call number with it."""
        self._start_call_timers(call, now)

    def _send_authreq(self, call: Call, methods: int, username: str, now: float,
                      encryption: int = 0) -> None:
        call.challenge = str(self._rng.randint(0, 999999999))
        items: list[tuple[int, object]] = [(IE.AUTHMETHODS, methods)]
        if methods & 6:             # md5 or rsa
            items.append((IE.CHALLENGE, call.challenge))
        if encryption:
            items.append((IE.ENCRYPTION, encryption))
        items.append((IE.USERNAME, username))
        self._rel.send(call, FRAME_IAX, IAXSubclass.AUTHREQ, build_ies(items), now)

    def _auth_throttled(self, addr: Addr, what: str, name: str, now: float) -> bool:
        """Whether the failed authentications (calls and registrations) from ``addr``'s IP in
        the window reached ``authfaillimit`` (never while it is off); if so the refusal of
        ``what`` is logged and reported."""
        fails = self._admission.throttled(addr[0], now)
        if not fails:
            return False
        self._warn("reject_auth_throttled", f"{what} refused: {fails} failed "
                   f"authentications from {addr[0]} in {self.config.general.authfailwindow} s",
                   now)
        self._events.append(AuthFailed(addr, name, "too many failed authentications"))
        return True

    def _note_authfail(self, ip: str, now: float) -> None:
        """Count a failed authentication from ``ip`` (throttled with ``authfaillimit``)."""
        self._stats["auth_failures"] += 1
        self._admission.note_failure(ip, now)

    def _auth_fail(self, call: Call, reason: str, now: float) -> None:
        self._note_authfail(call.addr[0], now)
        log.info("%s: call from %s (user %r) refused: %s", self.role_name, call.addr,
                 call.username, reason)
        self._events.append(AuthFailed(call.addr, call.username, reason))
        self._reject_call(call, 50, "No authority found", now)

    def _reject_call(self, call: Call, cause: int, text: str | None, now: float,
                     delay: bool = False) -> None:
        if call.auth_pending:
            call.auth_pending = False
            self._admission.authreq_done(call.peer)
        call.state = CallState.TERMINATING
        if cause == 50 and (delay or self.config.general.delayreject):
            call.timers.append(self._schedule(now + 1.0, self._delayed_reject, (call, text)))
            return
        self._send_reject(call, cause, text, now)

    def _delayed_reject(self, now: float, arg: tuple[Call, str | None]) -> None:
        call, text = arg
        if self._calls.get(call.callno) is call:
            self._send_reject(call, 50, text, now)

    def _send_reject(self, call: Call, cause: int, text: str | None, now: float) -> None:
        payload = build_ies([(IE.CAUSE, text or CAUSES.get(cause, "")), (IE.CAUSECODE, cause)])
        self._rel.send(call, FRAME_IAX, IAXSubclass.REJECT, payload, now, final=True)

    def _on_authrep(self, call: Call, f: FullFrame, ies: IEs, now: float) -> None:
        if call.auth_pending:
            call.auth_pending = False
            self._admission.authreq_done(call.peer)
        entry = call.entry
        if call.fake_auth or entry is None:
            self._auth_fail(call, call.fake_auth or f"unknown user {call.username!r}", now)
            return
        if entry.forceencryption and call.callno not in self._crypt:
            self._stats["reject_unencrypted"] += 1
            self._auth_fail(call, "incoming call is unencrypted while forceencryption = yes "
                            "(the NEW offered no encryption)", now)
            return
        ok = False
        md5 = ies.get_str(IE.MD5_RESULT)
        password = ies.get_str(IE.PASSWORD)
        signature = ies.get_str(IE.RSA_RESULT)
        if signature and "rsa" in entry.auth and entry.inkeys:
            # as Asterisk: the RSA result is checked first, and alone when present
            if not self._rsa_verifies(call, entry, signature, now):
                self._auth_fail(call, f"RSA signature does not verify with any of the inkeys "
                                f"of [{entry.name}] ({':'.join(entry.inkeys)})", now)
                return
            ok = True
        elif md5 is not None and "md5" in entry.auth:
            got = md5.strip().lower()
            ok = any(md5_result(call.challenge, s) == got for s in entry.secrets)
        elif password is not None and "plaintext" in entry.auth:
            ok = password in entry.secrets
        if not ok:
            self._auth_fail(call, f"wrong secret for [{entry.name}]", now)
            return
        self._accept_incoming(call, now)

    def _rsa_verifies(self, call: Call, entry: Entry, signature: str, now: float) -> bool:
        """Whether one of the entry's inkeys verifies the signature of our challenge; a key
        that cannot be read is logged and skipped (Asterisk: "Requested inkey ... does not
        exist")."""
        for name in entry.inkeys:
            try:
                key = self._keys.public(name)
            except KeyProblem as exc:
                self._warn("rsa_inkey_unreadable", f"inkey {name!r} of [{entry.name}]: {exc}",
                           now)
                continue
            if verify_challenge(key, call.challenge, signature):
                return True
        return False

    def _negotiate(self, entry: Entry | None, ies: IEs) -> int | None:
        ours = self._caps(entry)
        fmt = format_from(ies)
        cap = capability_from(ies)
        if cap is None:
            cap = fmt
        if cap is None:
            return None
        if fmt:
            for c in ours:
                if c & fmt and c & cap:
                    return c
        for c in ours:
            if c & cap:
                return c
        return None

    def _accept_incoming(self, call: Call, now: float) -> None:
        ies = IEs(call.new_ies)
        fmt = self._negotiate(call.entry, ies)
        if fmt is None:
            log.info("%s: call from %s: no common codec", self.role_name, call.addr)
            self._reject_call(call, 58, "Unable to negotiate codec", now)
            return
        call.codec = fmt
        call.capability = fmt
        call.state = CallState.ACCEPTED
        self._rel.send(call, FRAME_IAX, IAXSubclass.ACCEPT,
                       build_ies([(IE.FORMAT, fmt & 0xFFFFFFFF), (IE.FORMAT2, fmt)]), now)
        self._start_call_timers(call, now)
        entry = call.entry
        context = (entry.context if entry is not None and entry.context else None) \
            or ies.get_str(IE.CALLED_CONTEXT) or "default"
        call.context = context
        call.announced = True
        self._events.append(IncomingCall(
            call.callno, call.peer, call.exten, context, ies.get_str(IE.CALLING_NUMBER) or "",
            ies.get_str(IE.CALLING_NAME) or "", fmt, call.addr, call.trunk))

    # ------------------------------------------------------------------ calls we hold


    def _on_hangup(self, call: Call, f: FullFrame, ies: IEs, now: float) -> None:
        if call.kind in (CallKind.CALL_IN, CallKind.CALL_OUT):
            cause = ies.get_int(IE.CAUSECODE) or 16
            self._end(call, cause, "hangup", ies.get_str(IE.CAUSE))
        self._destroy(call, now)

    def _on_reject(self, call: Call, f: FullFrame, ies: IEs, now: float) -> None:
        cause = ies.get_int(IE.CAUSECODE) or 21
        text = ies.get_str(IE.CAUSE) or (
            "CallToken rejected" if f.scallno == STATELESS_CALLNO else None)
        if call.kind == CallKind.CALL_OUT:
            log.info("%s: call %d to %s rejected: %s (cause %d)", self.role_name, call.callno,
                     call.peer, text, cause)
        self._end(call, cause, "reject", text)
        self._destroy(call, now)

    def _on_peer_gone(self, call: Call, f: FullFrame, ies: IEs, now: float) -> None:
        self._destroy(call, now)

    def _autokill(self, now: float, call: Call) -> None:
        """No IAX frame answered our NEW within 2 x maxms/autokill: congestion (Asterisk's
        auto_congest).  Any IAX frame of the call (CALLTOKEN, ACK, AUTHREQ, ...) cancels it
        first (``_cancel_autokill``)."""
        if self._calls.get(call.callno) is not call or call.state != CallState.NEW_SENT:
            return
        if call.peer_callno:
            return  # the peer answered (AUTHREQ...)
        self._stats["calls_autokilled"] += 1
        waited = now - call.start
        self._end(call, 34, "timeout",
                  f"no reply to NEW within {waited:.0f} s (autokill)")
        self._destroy(call, now)

    def _cancel_autokill(self, call: Call) -> None:
        """An IAX frame of a call in setup arrived: the target is answering, no autokill (as
        Asterisk cancels auto_congest on the first IAX frame of the call, CALLTOKEN and ACK
        included, so a lost AUTHREQ is waited for through its retransmission)."""
        fn = self._autokill
        for t in call.timers:
            if t.alive and t.fn == fn:
                t.alive = False

    def _on_calltoken(self, call: Call, f: FullFrame, ies: IEs, now: float) -> None:
        """Resend the NEW/REGREQ with the token byte-exact, seqnos reset, same call number."""
        token = ies.get(IE.CALLTOKEN)
        if not isinstance(token, bytes) or not token:
            self._stats["drop_calltoken_empty"] += 1
            return
        if call.new_ies and call.new_ies[-1][0] == IE.CALLTOKEN and call.new_ies[-1][1]:
            self._stats["drop_calltoken_repeated"] += 1
            return
        once = all(p.sends == 1 for p in call.unacked.values())
        self._rel.forget(call)
        call.oseqno = call.iseqno = call.acked_to = 0
        call.new_ies = [*call.new_ies[:-1], (IE.CALLTOKEN, token)]
        self._stats["calltoken_resends"] += 1
        sub = IAXSubclass.REGREQ if call.kind == CallKind.REG_OUT else IAXSubclass.NEW
        self._rel.send(call, FRAME_IAX, sub, build_ies(call.new_ies), now)
        if call.kind == CallKind.CALL_OUT:
            # the call started with its first NEW: a round trip, unless that NEW was resent
            rtt = (now - call.start) * 1000.0 if once else -1.0
            self._events.append(CallSetup(call.callno, "calltoken", rtt))

    def _on_authreq(self, call: Call, f: FullFrame, ies: IEs, now: float) -> None:
        methods = ies.get_int(IE.AUTHMETHODS) or 0
        challenge = ies.get_str(IE.CHALLENGE)
        entry = call.entry
        secret = entry.secrets[0] if entry is not None and entry.secrets else ""
        items = self._auth_items(call, methods, challenge, secret, now)
        if isinstance(items, str):
            self._refuse_authreq(call, items, now)
            return
        refusal = self._encrypt_outgoing(call, ies, methods, challenge, secret)
        if refusal is not None:
            self._refuse_authreq(call, refusal, now)
            return
        self._rel.send(call, FRAME_IAX, IAXSubclass.AUTHREP, build_ies(items), now)
        self._events.append(CallSetup(call.callno, "authrep"))

    def _auth_items(self, call: Call, methods: int, challenge: str | None, secret: str,
                    now: float) -> list[tuple[int, object]] | str:
        """The AUTHREP's IEs as Asterisk's authenticate(): our outkey's RSA signature of the
        challenge when the target takes RSA, else (or when the key cannot be used) the MD5
        result, else the plaintext secret; or why none can be sent."""
        outkey = call.entry.outkey if call.entry is not None else None
        if outkey and methods & 4 and challenge is not None:
            try:
                return [(IE.RSA_RESULT, sign_challenge(self._keys.private(outkey), challenge))]
            except KeyProblem as exc:
                self._warn("rsa_outkey_unreadable", f"outkey {outkey!r}: {exc}", now)
                if not secret:
                    return f"RSA outkey {outkey!r} cannot be used: {exc}"
        if methods & 2 and challenge is not None and secret:
            return [(IE.MD5_RESULT, md5_result(challenge, secret))]
        if methods & 1 and secret:
            return [(IE.PASSWORD, secret)]
        if methods & 4 and not outkey:
            return "target takes only RSA authentication and we have no outkey"
        if methods & 2 and challenge is not None:
            return [(IE.MD5_RESULT, md5_result(challenge, secret))]
        return "No usable authentication method offered"

    def _encrypt_outgoing(self, call: Call, ies: IEs, methods: int, challenge: str | None,
                          secret: str) -> str | None:
        """Encryption as the target's AUTHREQ settles it (Asterisk's authenticate_reply): its
        ENCRYPTION IE turns it on from our AUTHREP on, keyed by MD5(challenge, secret); none
        with our ``forceencryption`` ends the call.  Returns why the call cannot go on."""
        entry = call.entry
        ours = entry.encryption if entry is not None else 0
        asked = ies.get_int(IE.ENCRYPTION) or 0
        if not asked:
            if entry is not None and entry.forceencryption:
                self._stats["authreq_unencrypted_refused"] += 1
                return ("target does not encrypt (its AUTHREQ asks for no encryption) "
                        "while forceencryption = yes")
            return None
        # Asterisk encrypts whenever the AUTHREQ asks, even beyond what our NEW offered
        agreed, rotate = merge_encryption(ours or AES128, asked)
        if not agreed or not methods & 6 or challenge is None or not secret:
            self._stats["authreq_encryption_unusable"] += 1
            return (f"target requires encryption (0x{asked:04x}) iaxgw cannot key "
                    "(AES-128 needs md5 or rsa auth and a secret)")
        cc = CallCrypto(methods=agreed, rotate=rotate)
        cc.set_key(derive_key(challenge, secret))
        self._crypt[call.callno] = cc
        self._stats["calls_encrypted"] += 1
        return None

    def _refuse_authreq(self, call: Call, text: str, now: float) -> None:
        log.info("%s: call %d: %s", self.role_name, call.callno, text)
        self._end(call, 50, "local", text)
        call.state = CallState.TERMINATING
        self._rel.send(call, FRAME_IAX, IAXSubclass.HANGUP, build_ies([(IE.CAUSECODE, 50)]), now,
                       final=True)

    def _on_accept(self, call: Call, f: FullFrame, ies: IEs, now: float) -> None:
        fmt = format_from(ies) or 0
        if not fmt & call.capability:
            self._end(call, 58, "local", "Unable to negotiate codec")
            call.state = CallState.TERMINATING
            self._rel.send(call, FRAME_IAX, IAXSubclass.HANGUP,
                           build_ies([(IE.CAUSECODE, 58)]), now, final=True)
            return
        if fmt & (fmt - 1):
            common = fmt & call.capability
            fmt = call.codec if fmt & call.codec else common & -common
        call.codec = fmt
        call.state = CallState.ACCEPTED
        self._start_call_timers(call, now)
        self._events.append(CallProgress(call.callno, "accepted", fmt))


    def _rr_values(self, call: Call) -> dict[str, int]:
        rx = call.rx
        return {"jitter": int(rx.jitter), "lost": rx.lost, "loss_pct": rx.loss_pct,
                "frames": rx.frames, "delay": 0, "dropped": rx.dropped, "ooo": rx.ooo}

    def _on_ping(self, call: Call, f: FullFrame, ies: IEs, now: float) -> None:
        """PONG with the PING's ts and our receive report (RR IEs, docs/protocol.md §9.5)."""
        rx = call.rx
        loss = (min(rx.loss_pct, 255) << 24) | (rx.lost & 0xFFFFFF)
        payload = build_ies([
            (IE.RR_JITTER, int(rx.jitter) & 0xFFFFFFFF),
            (IE.RR_LOSS, loss),
            (IE.RR_PKTS, rx.frames & 0xFFFFFFFF),
            (IE.RR_DELAY, 0),
            (IE.RR_DROPPED, rx.dropped & 0xFFFFFFFF),
            (IE.RR_OOO, rx.ooo & 0xFFFFFFFF),
        ])
        self._rel.send(call, FRAME_IAX, IAXSubclass.PONG, payload, now, ts=f.ts)

    def _on_lagrq(self, call: Call, f: FullFrame, ies: IEs, now: float) -> None:
        self._rel.send(call, FRAME_IAX, IAXSubclass.LAGRP, b"", now, ts=f.ts)

    def ping(self, callno: int, now: float) -> int | None:
        """PING call ``callno`` now, besides the regular PING of every call: its PONG brings
        the round trip (``call.rtt_ms``) and the peer's receive report (``call.remote_rr``,
        when the peer sends one, with the PING's timestamp in ``call.remote_rr_ts``).  Returns
        the PING's timestamp; None when there is no such call up."""
        call = self._calls.get(callno)
        if call is None or call.state == CallState.TERMINATING or call.kind not in (
                CallKind.CALL_IN, CallKind.CALL_OUT) or not call.peer_callno:
            return None
        return self._rel.send(call, FRAME_IAX, IAXSubclass.PING, b"", now)

    def _on_pong(self, call: Call, f: FullFrame, ies: IEs, now: float) -> None:
        rtt = int((now - call.start) * 1000.0) - f.ts
        if 0 <= rtt < 600000:
            call.rtt_ms = rtt
            call.pingtime = max(rtt, 1)
        rr = {}
        for ie, key in ((IE.RR_JITTER, "jitter"), (IE.RR_PKTS, "frames"), (IE.RR_DELAY, "delay"),
                        (IE.RR_DROPPED, "dropped"), (IE.RR_OOO, "ooo")):
            v = ies.get_int(ie)
            if v is not None:
                rr[key] = v
        loss = ies.get_int(IE.RR_LOSS)
        if loss is not None:
            rr["loss_pct"] = loss >> 24
            rr["lost"] = loss & 0xFFFFFF
        if rr:
            call.remote_rr = rr
            call.remote_rr_ts = f.ts

    def _on_lagrp(self, call: Call, f: FullFrame, ies: IEs, now: float) -> None:
        lag = int((now - call.start) * 1000.0) - f.ts
        if 0 <= lag < 600000:
            call.lag_ms = lag

    def _on_call_poke(self, call: Call, f: FullFrame, ies: IEs, now: float) -> None:
        self._rel.send(call, FRAME_IAX, IAXSubclass.PONG, b"", now, ts=f.ts)

    def _on_unsupport(self, call: Call, f: FullFrame, ies: IEs, now: float) -> None:
        self._stats["unsupport_received"] += 1
        log.info("%s: peer does not support IAX subclass %s", self.role_name,
                 ies.get_int(IE.IAX_UNKNOWN))

    # ------------------------------------------------------------------ qualify

    def _qualify_tick(self, now: float, st: PeerState) -> None:
        st.qualify_timer = None
        if st.addr() is None:
            return
        self._send_poke(st, now)

    def _send_poke(self, st: PeerState, now: float) -> None:
        addr = st.addr()
        if addr is None or st.poke_callno:
            return
        callno = self._callnos.allocate(addr[0], now)
        if callno is None:
            return
        call = self._new_call(callno, CallKind.POKE, CallState.POKE, addr, now)
        call.peer = st.name
        call.pingtime = max(st.maxms // 8, 1)
        call.poke_sent = now
        st.poke_callno = callno
        self._stats["pokes_sent"] += 1
        self._rel.send(call, FRAME_IAX, IAXSubclass.POKE, build_ies([(IE.CALLTOKEN, b"")]), now)
        self._cancel(st.poke_timer)
        st.poke_timer = self._schedule(now + 2 * st.maxms / 1000.0, self._poke_timeout,
                                       (st, call))

    def _poke_timeout(self, now: float, arg: tuple[PeerState, Call]) -> None:
        st, call = arg
        self._destroy(call, now)
        self._set_peer_status(st, "UNREACHABLE", -1)
        self._cancel(st.qualify_timer)
        if st.entry.qualify is not None:
            st.qualify_timer = self._schedule_soft(now + QUALIFY_FREQ_NOTOK,
                                                 self._qualify_tick, st)

    def _on_poke_pong(self, call: Call, f: FullFrame, ies: IEs, now: float) -> None:
        st = self._peers.get(call.peer)
        self._destroy(call, now)
        if st is None:
            return
        self._cancel(st.poke_timer)
        rtt = max(int((now - call.poke_sent) * 1000.0), 0)
        status = "LAGGED" if rtt > st.maxms else "OK"
        self._set_peer_status(st, status, rtt)
        self._cancel(st.qualify_timer)
        if st.entry.qualify is not None:
            delay = QUALIFY_FREQ_OK if status == "OK" else QUALIFY_FREQ_NOTOK
            st.qualify_timer = self._schedule_soft(now + delay, self._qualify_tick, st)

    def _set_peer_status(self, st: PeerState, status: str, rtt: int) -> None:
        changed = status != st.status
        st.status = status
        st.rtt_ms = rtt
        if changed:
            log.info("%s: peer %s is now %s (%d ms)", self.role_name, st.name, status, rtt)
            self._events.append(PeerStatusChanged(st.name, status, rtt))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ registration: registrar

    def _on_regreq_new(self, f: FullFrame, ies: IEs, addr: Addr, now: float) -> None:
        username = ies.get_str(IE.USERNAME) or ""
        entry = self.config.peer(username) if username else None
        if not self._token_gate(f, ies, addr, now, entry, username, IAXSubclass.REGREJ):
            return
        validated = bool(ies.get(IE.CALLTOKEN))
        callno = self._callnos.allocate(addr[0], now, validated=validated)
        if callno is None:
            self._warn("reject_callno_limit", f"no call number for {addr}: "
                     f"{self._callnos.refusal(addr[0], validated=validated)}", now)
            self._send_stateless(STATELESS_CALLNO, f, addr, IAXSubclass.REGREJ)
            return
        call = self._new_call(callno, CallKind.REG_IN, CallState.REG_IN, addr, now)
        call.mark_msg(IAXSubclass.REGREQ)
        self._table.bind_remote(call, f.scallno)
        call.iseqno = (f.oseqno + 1) & 0xFF
        call.username = username
        call.peer = username
        call.entry = entry
        self._start_pending_timers(call, now)
        self._stats["regreq_received"] += 1
        if self._auth_throttled(addr, f"REGREQ from {addr} (peer {username!r})", username, now):
            call.state = CallState.TERMINATING
            self._regrej_later(call, REGREJ_THROTTLED_TEXT, now)
            return
        if entry is not None and entry.dynamic and not entry.secrets \
                and acl_allows(entry.acl, addr[0]):
            self._reg_accept(call, ies, f.csub == IAXSubclass.REGREL, now)
            return
        challenge = str(self._rng.randint(0, 999999999))
        call.challenge = challenge
        self._rel.send(call, FRAME_IAX, IAXSubclass.REGAUTH, build_ies([
            (IE.AUTHMETHODS, 2), (IE.CHALLENGE, challenge), (IE.USERNAME, username)]), now)

    def _on_regreq_auth(self, call: Call, f: FullFrame, ies: IEs, now: float) -> None:
        entry = call.entry
        md5 = (ies.get_str(IE.MD5_RESULT) or "").strip().lower()
        reason = None
        if entry is None:
            reason = f"unknown peer {call.username!r}"
        elif not entry.dynamic:
            reason = f"peer [{entry.name}] is not host=dynamic"
        elif not acl_allows(entry.acl, call.addr[0]):
            reason = f"{call.addr[0]} denied by the ACL of [{entry.name}]"
        elif entry.secrets and not any(md5_result(call.challenge, s) == md5
                                       for s in entry.secrets):
            reason = f"wrong secret for [{entry.name}]"
        if reason is not None:
            self._note_authfail(call.addr[0], now)
            self._events.append(AuthFailed(call.addr, call.username, reason))
            log.info("%s: registration of %r from %s refused: %s", self.role_name,
                     call.username, call.addr, reason)
            call.state = CallState.TERMINATING
            if self.config.general.delayreject:
                self._regrej_later(call, "Registration Refused", now)
            else:
                self._send_regrej(now, (call, "Registration Refused"))
            return
        self._reg_accept(call, ies, f.csub == IAXSubclass.REGREL, now)

    def _regrej_later(self, call: Call, text: str, now: float) -> None:
        """REGREJ one second from now, as Asterisk's auth_fail sends it with ``delayreject``: a
        guesser learns nothing faster than once a second per registration attempt."""
        self._keep_call_timer(call, self._schedule(now + 1.0, self._send_regrej, (call, text)))

    def _send_regrej(self, now: float, arg: tuple[Call, str]) -> None:
        call, text = arg
        if self._calls.get(call.callno) is call:
            self._rel.send(
                call,
                FRAME_IAX,
                IAXSubclass.REGREJ,
                build_ies([(IE.CAUSE, text), (IE.CAUSECODE, 29)]),
                now,
                final=True,
            )

    def _reg_accept(self, call: Call, ies: IEs, release: bool, now: float) -> None:
        g = self.config.general
        st = self._peers.get(call.peer)
        refresh = ies.get_int(IE.REFRESH) or g.minregexpire
        refresh = 0 if release else min(max(refresh, g.minregexpire), g.maxregexpire)
        call.state = CallState.TERMINATING
        self._rel.send(call, FRAME_IAX, IAXSubclass.REGACK, build_ies([
            (IE.USERNAME, call.username),
            (IE.DATETIME, self._wall_datetime(now)),
            (IE.REFRESH, refresh),
            (IE.APPARENT_ADDR, call.addr),
        ]), now, final=True)
        if st is None:
            return
        self._cancel(st.reg_timer)
        if release:
            self._unregister_peer(st, "Unregistered")
            return
        first = st.reg_addr != call.addr
        st.reg_addr = call.addr
        st.reg_expiry = now + refresh
        st.reg_timer = self._schedule(st.reg_expiry, self._reg_expire, st)
        self._events.append(RegistrationChanged(st.name, "Registered", call.addr, refresh))
        if first and st.entry.qualify is not None:
            self._cancel(st.qualify_timer)
            st.qualify_timer = self._schedule(now, self._qualify_tick, st)

    def _reg_expire(self, now: float, st: PeerState) -> None:
        self._unregister_peer(st, "Expired")

    def _unregister_peer(self, st: PeerState, status: str) -> None:
        addr = st.reg_addr
        st.reg_addr = None
        self._cancel(st.qualify_timer)
        self._cancel(st.reg_timer)
        self._events.append(RegistrationChanged(st.name, status, addr, 0))
        if st.status != "UNKNOWN":
            self._set_peer_status(st, "UNKNOWN", -1)

    def _on_reg_abort(self, call: Call, f: FullFrame, ies: IEs, now: float) -> None:
        self._destroy(call, now)

    # ------------------------------------------------------------------ registration: registrant

    def _register_tick(self, now: float, rs: RegState) -> None:
        rs.timer = None
        if rs.callno:
            return
        callno = self._callnos.allocate(rs.addr[0], now)
        if callno is None:
            rs.timer = self._schedule(now + QUALIFY_FREQ_NOTOK, self._register_tick, rs)
            return
        call = self._new_call(callno, CallKind.REG_OUT, CallState.REG_OUT, rs.addr, now)
        call.reg = rs
        call.username = rs.reg.username
        call.peer = rs.label
        rs.callno = callno
        call.new_ies = [(IE.USERNAME, rs.reg.username), (IE.REFRESH, rs.refresh),
                        (IE.CALLTOKEN, b"")]
        rs.status = "Request Sent"           # Asterisk's REG_STATE_REGSENT (no event: transient)
        self._stats["regreq_sent"] += 1
        self._rel.send(call, FRAME_IAX, IAXSubclass.REGREQ, build_ies(call.new_ies), now)

    def _on_regauth(self, call: Call, f: FullFrame, ies: IEs, now: float) -> None:
        rs = call.reg
        methods = ies.get_int(IE.AUTHMETHODS) or 0
        challenge = ies.get_str(IE.CHALLENGE)
        secret = rs.reg.secret if rs is not None else ""
        items: list[tuple[int, object]] = [(IE.USERNAME, call.username),
                                           (IE.REFRESH, rs.refresh if rs else 60)]
        if methods & 2 and challenge is not None:
            items.append((IE.MD5_RESULT, md5_result(challenge, secret)))
        elif methods & 1:
            items.append((IE.PASSWORD, secret))
        if rs is not None:
            rs.status = "Auth. Sent"         # REG_STATE_AUTHSENT
        self._rel.send(call, FRAME_IAX, IAXSubclass.REGREQ, build_ies(items), now)

    def _on_regack(self, call: Call, f: FullFrame, ies: IEs, now: float) -> None:
        rs = call.reg
        self._destroy(call, now)
        if rs is None:
            return
        refresh = ies.get_int(IE.REFRESH) or rs.refresh
        apparent = ies.get(IE.APPARENT_ADDR)
        rs.apparent_addr = apparent if isinstance(apparent, tuple) else None
        rs.refresh = refresh                 # what the registrar granted, as Asterisk keeps it
        self._reg_status(rs, "Registered", refresh)
        self._cancel(rs.timer)
        rs.timer = self._schedule_soft(now + max(5 * refresh / 6, 1.0), self._register_tick, rs)

    def _on_regrej(self, call: Call, f: FullFrame, ies: IEs, now: float) -> None:
        rs = call.reg
        self._destroy(call, now)
        if rs is None:
            return
        self._reg_status(rs, "Rejected", 0)
        self._cancel(rs.timer)
        rs.timer = self._schedule(now + rs.refresh, self._register_tick, rs)

    def _reg_status(self, rs: RegState, status: str, refresh: int) -> None:
        rs.status = status
        self._events.append(RegistrationChanged(rs.label, status, rs.apparent_addr, refresh,
                                                "registrant"))

    # ------------------------------------------------------------------ media


    # ------------------------------------------------------------------ media: send

    def send_voice(self, callno: int, payload: bytes, now: float, ts: int | None = None) -> bool:
        """Send one voice payload: full frame first (and on codec change), then mini or trunk."""
        call = self._calls.get(callno)
        if call is None or not _ACCEPTED <= call.state <= _UP:
            self._stats["drop_voice_no_call"] += 1
            return False
        if ts is None:
            ts = next_voice_ts(call, now)          # the rule lives in _core.media
        fmt = call.codec
        prev = call.last_voice_ts
        full = call.svoiceformat != fmt or (not call.trunk and (ts >> 16) - (prev >> 16) >= 2)
        if full and self._crypt:
            self._rotate_at_first_voice(call, now)
        voice_sent(call, ts, len(payload))
        if full:
            call.svoiceformat = fmt
            call.last_full_voice_ts = ts
            self._rel.send(call, FRAME_VOICE, fmt, payload, now, ts=ts)
            return True
        if call.trunk:
            st = self._trunks.get(call.addr) or self._streams.stream(call.addr)
            st.mux.add(callno, ts, payload)
            self._streams.start(st, now)
        else:
            self._n_mini_out += 1
            self._out.append((_MINI.pack(callno, ts & 0xFFFF) + payload, call.addr))
        return True

    def _rotate_at_first_voice(self, call: Call, now: float) -> None:
        """An encrypted call with key rotation sends its first RTKEY just before its first
        voice frame (as Asterisk's iax2_send), then one every 120-300 s."""
        cc = self._crypt.get(call.callno)
        if cc is not None and cc.rotate and not cc.rotated and cc.tx is not None:
            cc.rotated = True
            self._rotate_key(now, call)

    def _rotate_key(self, now: float, call: Call) -> None:
        """RTKEY (CHALLENGE = the new 16-byte key), sent with the old key; our frames after it
        use the new one (``CallCrypto.rotate_tx``)."""
        cc = self._crypt.get(call.callno)
        if cc is None or self._calls.get(call.callno) is not call or call.state > CallState.UP:
            return
        key = rotation_key(self._rng)
        self._rel.send(call, FRAME_IAX, IAXSubclass.RTKEY, build_ies([(IE.CHALLENGE, key)]), now)
        cc.rotate_tx(key, self._flush_gen, len(self._out))
        self._stats["key_rotations"] += 1
        when = now + KEY_ROTATE_MIN_S + self._rng.random() * KEY_ROTATE_SPREAD_S
        call.timers.append(self._schedule(when, self._rotate_key, call))

    def send_voice_many(self, items: list[tuple[int, bytes]], now: float
                        ) -> list[tuple[int, Exception]]:
        """``send_voice(callno, payload, now)`` for each item, the trunked ones and the mini
        frames in one compiled pass (``_core.media.send_trunk_voice``: same timestamps, same
        trunk entries and mini frames; full voice frames are left to ``send_voice``).  Returns
        the calls whose send raised, with the exception (the others were sent or dropped as
        ``send_voice`` would)."""
        out = self._out
        before = len(out)
        rest, streams = send_trunk_voice(self._calls, items, now, self._trunks, out)
        return self._batch_sent(rest, streams, len(out) - before, now)

    def send_probes(self, probes: list[TxProbe], probe_now: float, now: float
                    ) -> list[tuple[int, Exception]]:
        """``send_voice_many(tx_tick(probes, probe_now), now)`` in one compiled pass
        (``_core.media.tx_tick_send``): each load-test probe's next frame is counted and written
        straight into its trunk entry or mini frame.  Returns the calls whose send raised."""
        out = self._out
        before = len(out)
        rest, streams = tx_tick_send(probes, probe_now, self._calls, now, self._trunks, out)
        return self._batch_sent(rest, streams, len(out) - before, now)

    def _batch_sent(self, rest: list[tuple[int, bytes]], streams: list[Any], minis: int,
                    now: float) -> list[tuple[int, Exception]]:
        """After a batched send: count its mini frames, start the flush timer of each stream
        that got entries, and send the items it left one by one (``send_voice``)."""
        self._n_mini_out += minis
        for st in streams:
            self._streams.start(st, now)
        failed: list[tuple[int, Exception]] = []
        for callno, payload in rest:
            try:
                self.send_voice(callno, payload, now)
            except Exception as exc:       # reported to the caller, per call
                failed.append((callno, exc))
        return failed

    def flush_trunks(self, now: float) -> int:
        """Flush now every outgoing trunk stream that has entries waiting, instead of at its
        timer; returns how many trunk datagrams that queued.

        For a driver that sends a whole period's voice of all its calls at one instant (the
        load tester's media tick): the frames leave with the tick instead of half a period
        later, and the flush's work (building and sending every datagram) runs next to the
        tick's, not in the middle of the period where it met the peer's traffic being read.
        The stream's timer stays as a safety net for voice sent outside such ticks: it moves
        to half a period after this flush (where it finds nothing and only keeps the grid)."""
        return self._streams.flush_all(now)

    # ------------------------------------------------------------------ media: receive

    def _vnak_no_voice(self, call: Call, now: float) -> None:
        """Mini/trunk media of an accepted call before its first full voice frame: that frame
        was lost (or is late), so VNAK at once as Asterisk does (docs/protocol.md §3.3, P4) -- the
        sender resends it now instead of after its 2 s / 10 s retransmission timer, which left
        a call without audio for 2-12 s (a whole short call when lost twice).  Rate-limited."""
        if not _ACCEPTED <= call.state <= _UP or now - call.vnak_at < NO_VOICE_VNAK_S:
            return
        call.vnak_at = now
        self._stats["vnak_no_full_voice"] += 1
        self._rel.send_unreliable(call, IAXSubclass.VNAK, call.lastsent, call.iseqno)

    def _on_full_voice(self, call: Call, f: FullFrame, now: float) -> None:
        if not CallState.ACCEPTED <= call.state <= CallState.UP:
            self._stats["drop_voice_before_accept"] += 1
            return
        try:
            fmt = uncompress_subclass(f.csub)
        except FrameError:
            return
        if not 0 < fmt < _FORMAT_LIMIT:
            # 0xFF (-1) or the C bit with shift 63: no audio format.  Dropped and counted,
            # the call goes on (a hostile or broken peer must not end it).
            self._warn("drop_voice_bad_format", f"call {call.callno}: voice frame with "
                       f"subclass byte {f.csub:#x} names no audio format, dropped", now, call.addr)
            return
        call.format_rx = fmt
        call.rx_full_frames += 1
        payload = f.payload
        if fmt in (4, 8) and payload:
            call.rx.ptime = max(len(payload) >> 3, 1)
        call.rx.update(f.ts, len(payload), now)
        sink = self._sink
        if sink is not None:
            sink(call.callno, f.ts, payload, now)
        else:
            self._events.append(VoiceReceived(call.callno, f.ts, payload, fmt))


    # ------------------------------------------------------------------ media: trunk receive

    def _receive_meta(self, data: bytes, addr: Addr, now: float) -> None:
        """A trunk datagram: per entry, the call by (source, call number), its ts, the receive
        stats and the payload to the sink, or back into the trunk for an echoing call.  The
        per-entry loop is ``_core.media.receive_trunk`` (compiled): it runs ~10,000 times a
        second at 200 trunked calls."""
        calls = self._by_addr.get(addr)
        trunk_ts = int.from_bytes(data[4:8], "big") if len(data) >= 8 else -1
        epoch = trunk_epoch(self._trunk_rx_epoch, self._by_addr, addr, now, trunk_ts == 0)
        st = self._trunks.get(addr) if self._echo_used else None
        if st is None and self._echo_used and calls:
            st = self._streams.stream(addr)
        try:
            result = receive_trunk(
                data, calls if calls is not None else _NO_CALLS, epoch, now,
                self._sink or self._voice_event, st.mux if st is not None else None)
        except FrameError as exc:
            self._warn("drop_malformed_meta", f"bad meta frame from {addr}: {exc}", now, addr)
            return
        self._trunk_received(result, st, now)

    def _trunk_received(self, result: tuple[int, int, int, int, bool, list[Call]],
                        st: TrunkStream | None, now: float) -> None:
        """The bookkeeping after ``receive_trunk`` took one datagram."""
        n, unknown, inactive, echoed, truncated, vnak = result
        self._n_trunk_datagrams_in += 1
        self._n_trunk_entries_in += n
        if truncated:
            self._stats["trunk_truncated"] += 1
        if unknown:
            self._stats["drop_trunk_unknown_call"] += unknown
        if inactive:
            self._stats["drop_trunk_call_not_active"] += inactive
        self._trunk_attention(vnak, echoed, st, now)

    def _trunk_attention(self, vnak: list[Call], echoed: int, st: TrunkStream | None,
                         now: float) -> None:
        """After a trunk datagram: VNAK the calls that had media before their first full voice
        frame; echoed entries on a stream without a flush timer start its grid."""
        for call in vnak:
            self._vnak_no_voice(call, now)
        if echoed and st is not None:
            self._streams.start(st, now)

    def _receive_media_run(self, batch: list[tuple[bytes, Addr, float]], start: int,
                           loop_now: float, floor: float, max_datagram: int
                           ) -> tuple[int, float]:
        """``_receive_meta`` and ``receive_datagram``'s mini-frame branch for the consecutive
        media datagrams of a received batch from ``start`` (trunk datagrams, mini frames of
        active calls), in one compiled pass (``_core.media.receive_media_run``: the arrival
        times, epochs, echo streams and echoed mini frames as here, the counts summed in
        ``TrunkRunTotals``).  Returns the index of the first datagram not taken (the caller
        hands it to ``receive_datagram``) and the last arrival time."""
        acc: list[tuple[Addr, float, list[Call], int]] = []
        trunks = self._trunks
        tot = TrunkRunTotals(start, floor)
        try:
            receive_media_run(batch, loop_now, self._by_addr, self._trunk_rx_epoch,
                              self._sink or self._voice_event, trunks, self._echo_used,
                              max_datagram, tot, acc, self._out)
        except Exception as exc:    # not expected (headers are checked first): skip that one
            tot.index += 1
            self._warn("drop_malformed_meta", f"media datagram dropped: {exc!r}", tot.floor)
        self._n_mini_in += tot.mini
        self._n_mini_out += tot.mini_out
        if tot.datagrams:
            self._n_trunk_datagrams_in += tot.datagrams
            self._n_trunk_entries_in += tot.entries
            if tot.truncated:
                self._stats["trunk_truncated"] += tot.truncated
            if tot.unknown:
                self._stats["drop_trunk_unknown_call"] += tot.unknown
            if tot.inactive:
                self._stats["drop_trunk_call_not_active"] += tot.inactive
            echo = self._echo_used
            for addr, now, vnak, echoed in acc:
                self._trunk_attention(vnak, echoed, trunks.get(addr) if echo else None, now)
        return tot.index, tot.floor

    def _voice_event(self, callno: int, ts: int, payload: bytes, now: float) -> None:
        """Without a media sink: voice as ``VoiceReceived`` events."""
        call = self._calls.get(callno)
        self._events.append(VoiceReceived(callno, ts, payload, call.format_rx if call else 0))

    def set_rx_probe(self, callno: int, probe: RxProbe | None) -> bool:
        """Count the trunk entries of ``callno`` in ``probe`` (a load tester's ``RxProbe``:
        jitter, loss window, payloads kept for analysis) instead of handing them to the media
        sink: one compiled pass per datagram, no Python call per entry.  The probe gets each
        entry's arrival time (``now``), so it should be set only when that is the exact arrival
        time.  Other voice frames still reach the sink.  False if there is no such call."""
        call = self._calls.get(callno)
        if call is None:
            return False
        call.probe = probe
        return True

    def set_echo(self, callno: int, on: bool = True) -> bool:
        """Echo the voice of ``callno`` back as it arrives (Echo()), inside the endpoint: its
        trunk entries are put straight back into the trunk towards the peer (no media sink
        call); other voice frames still reach the sink.  False if there is no such call."""
        call = self._calls.get(callno)
        if call is None:
            return False
        call.echo = bool(on)
        if on:
            self._echo_used = True
        return True


# The call flows of docs/protocol.md §9 as a table.
_IAX_TABLE.update({
    (CallState.NEW_SENT, IAXSubclass.CALLTOKEN): Endpoint._on_calltoken,
    (CallState.NEW_SENT, IAXSubclass.AUTHREQ): Endpoint._on_authreq,
    (CallState.NEW_SENT, IAXSubclass.ACCEPT): Endpoint._on_accept,
    (CallState.WAIT_AUTHREP, IAXSubclass.AUTHREP): Endpoint._on_authrep,
    (CallState.POKE, IAXSubclass.PONG): Endpoint._on_poke_pong,
    (CallState.REG_OUT, IAXSubclass.CALLTOKEN): Endpoint._on_calltoken,
    (CallState.REG_OUT, IAXSubclass.REGAUTH): Endpoint._on_regauth,
    (CallState.REG_OUT, IAXSubclass.REGACK): Endpoint._on_regack,
    (CallState.REG_OUT, IAXSubclass.REGREJ): Endpoint._on_regrej,
    (CallState.REG_OUT, IAXSubclass.REJECT): Endpoint._on_regrej,
    (CallState.REG_IN, IAXSubclass.REGREQ): Endpoint._on_regreq_auth,
    (CallState.REG_IN, IAXSubclass.REGREL): Endpoint._on_regreq_auth,
    (CallState.REG_IN, IAXSubclass.HANGUP): Endpoint._on_reg_abort,
    (CallState.TERMINATING, IAXSubclass.HANGUP): Endpoint._on_peer_gone,
    (CallState.TERMINATING, IAXSubclass.REJECT): Endpoint._on_peer_gone,
    (None, IAXSubclass.HANGUP): Endpoint._on_hangup,
    (None, IAXSubclass.REJECT): Endpoint._on_reject,
    (None, IAXSubclass.PING): Endpoint._on_ping,
    (None, IAXSubclass.LAGRQ): Endpoint._on_lagrq,
    (None, IAXSubclass.PONG): Endpoint._on_pong,
    (None, IAXSubclass.LAGRP): Endpoint._on_lagrp,
    (None, IAXSubclass.VNAK): Endpoint._on_vnak,
    (None, IAXSubclass.POKE): Endpoint._on_call_poke,
    (None, IAXSubclass.UNSUPPORT): Endpoint._on_unsupport,
    (None, IAXSubclass.RTKEY): Endpoint._on_rtkey,
})
