"""The sans-IO IAX2 endpoint: one per UDP socket, many calls (modelled on aioquic's QuicConnection).

No sockets, no clock, no threads: the driver feeds datagrams with ``receive_datagram(data, addr,
now)``, sends what ``datagrams_to_send(now)`` returns, fires ``handle_timer(now)`` at
``get_timer()`` and drains ``next_event()``.  Behaviour follows the Asterisk 22 fact sheet
(``iax2-facts.md``); section numbers below refer to it.

Incoming NEWs that pass calltoken, ACL, authentication and codec negotiation are ACCEPTed by the
core (as Asterisk does) and then announced with :class:`IncomingCall`.
"""

from __future__ import annotations

import datetime
import heapq
import logging
import random
import struct
from collections import Counter, deque
from collections.abc import Callable
from functools import partial
from typing import Any

from iaxgw._core.constants import (
    CAUSES,
    CONTROL_ALLOWED_ON_WIRE,
    FORMAT_BITS,
    IE,
    ControlSubclass,
    FrameType,
    IAXSubclass,
    formats_to_codec_prefs,
)
from iaxgw._core.errors import FrameError
from iaxgw._core.frames import build_full, parse_full, uncompress_subclass
from iaxgw._core.ies import IEs, build_ies, capability_from, format_from
from iaxgw._core.trunk import TrunkMux, parse_trunk
from iaxgw.gateway import registration
from iaxgw.gateway.calls import (
    Call,
    CallKind,
    CallNumbers,
    CallState,
    ChannelInfo,
    NetStats,
    PeerInfo,
    Pending,
)
from iaxgw.gateway.calltoken import CallTokens, md5_result
from iaxgw.gateway.config import acl_allows, calltoken_optional
from iaxgw.gateway.events import (
    AuthFailed,
    CallEnded,
    CallProgress,
    DtmfReceived,
    Event,
    IncomingCall,
    ProtocolError,
    TextReceived,
    VoiceReceived,
)
from iaxgw.gateway.model import Entry, IaxConfig
from iaxgw.gateway.peers import QUALIFY_FREQ_NOTOK, PeerState, RegState

__all__ = ["Endpoint", "MediaSink", "md5_result"]

log = logging.getLogger("iaxgw.protocol")

Addr = tuple[str, int]
MediaSink = Callable[[int, int, bytes, float], None]
Timer = list[Any]   # [when, seq, fn, arg, alive]

S = CallState
X = IAXSubclass
_IAX = int(FrameType.IAX)
_VOICE = int(FrameType.VOICE)
_CONTROL = int(FrameType.CONTROL)
_MINI = struct.Struct(">HH")

#: Frames that neither advance ISeqno nor get an ACK, and are processed out of order (section 7).
_UNSEQUENCED = frozenset({X.ACK, X.INVAL, X.TXCNT, X.TXACC, X.VNAK})
#: Frames that do not move ``rx_last`` (section 8: not counting ACK/PONG/LAGRP).
_NO_TS_TRACK = frozenset({X.ACK, X.PONG, X.LAGRP})
#: Requests checked for a call token when they arrive with dcallno 0 (section 9).
_TOKEN_REQUESTS = frozenset({X.NEW, X.REGREQ, X.REGREL, X.FWDOWNL})
#: No INVAL is sent for these when their call is unknown (section 7; ACK to avoid ping-pong).
_NO_INVAL = frozenset({X.ACK, X.INVAL, X.TXCNT, X.TXACC, X.FWDOWNL})

MAX_RETRIES = 4               # sends in all (1 + 3 retries), section 7
PING_INTERVAL = 21.0
LAGRQ_INTERVAL = 10.0
TS_SKEW_MS = 160              # MAX_TIMESTAMP_SKEW
UNWRAP_MS = 50000
_STATELESS = 1                # call number of stateless replies
MAX_DATAGRAM = 4096           # Asterisk reads at most this much (section 12.14): larger is dropped

#: Bytes per millisecond of the codecs we can pace (for predicted voice timestamps).
_BYTES_PER_MS = {4: 8, 8: 8, 0x40: 16, 0x8000: 32, 0x1000: 8}

#: Table of IAX (type 6) frames: (state or None for "any state", subclass) -> handler, filled
#: in below the class.  A missing entry means "ignored in this state" (ACKed, counted).
Handler = Callable[["Endpoint", Call, Any, IEs, float], None]
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


def _s(ies: IEs, ie: int) -> str | None:
    v = ies.get(ie)
    return v if isinstance(v, str) else None


def _i(ies: IEs, ie: int) -> int | None:
    v = ies.get(ie)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def codec_bits(names: list[str]) -> list[int]:
    """Format bits of codec names, in order, skipping unknown names."""
    return [FORMAT_BITS[n] for n in names if n in FORMAT_BITS]


class _TrunkStream:
    """One outgoing trunk stream ("tpeer") per destination IP:port (section 3)."""

    __slots__ = ("addr", "epoch", "last_send", "last_ts", "mux", "next_at", "timer")

    def __init__(self, addr: Addr, mux: TrunkMux) -> None:
        self.addr = addr
        self.mux = mux
        self.epoch = -1.0
        self.last_ts = -1
        self.last_send = -1e18
        self.next_at = 0.0
        self.timer: Timer | None = None


class Endpoint:
    """The IAX2 protocol state of one UDP socket."""

    def __init__(self, config: IaxConfig, *, local_addr: Addr, rng: random.Random | None = None,
                 role_name: str = "iaxgw", wall_offset: float = 0.0) -> None:
        self.config = config
        self.local_addr = local_addr
        self.role_name = role_name
        #: Added to ``now`` to get Unix time (call tokens, DATETIME IEs); the driver sets it.
        self.wall_offset = wall_offset
        self._rng = rng if rng is not None else random.Random()
        g = config.general
        self._callnos = CallNumbers(self._rng, g.maxcallnumbers)
        self._tokens = CallTokens(self._rng.getrandbits(32), g.calltokenexpiration)
        self._calls: dict[int, Call] = {}
        self._by_remote: dict[tuple[Addr, int], Call] = {}
        self._out: list[tuple[bytes, Addr]] = []
        self._events: deque[Event] = deque()
        self._timers: list[Timer] = []
        self._timer_seq = 0
        self._sink: MediaSink | None = None
        self._started = False
        self._peers: dict[str, PeerState] = {
            name: PeerState(e) for name, e in config.entries.items() if e.is_peer}
        self._regs = [RegState(r, max(g.minregexpire, 60)) for r in g.registers]
        self._authreq: Counter[str] = Counter()     # unanswered AUTHREQs per user
        self._authfails: dict[str, deque[float]] = {}   # recent failed auths per source IP
        self._auto_validated: set[str] = set()     # requirecalltoken=auto entries seen with token
        self._trunks: dict[Addr, _TrunkStream] = {}
        self._trunk_rx_epoch: dict[Addr, float] = {}
        self._trunkfreq = min(max(g.trunkfreq, 10), 1000) / 1000.0
        self._stats: Counter[str] = Counter()
        self._warned: dict[str, float] = {}
        # hot-path counters (plain ints; folded into stats())
        self._n_mini_in = 0
        self._n_mini_out = 0
        self._n_trunk_entries_in = 0

    # ------------------------------------------------------------------ public API: I/O

    def start(self, now: float) -> None:
        """Begin qualify and registrations (also done lazily by the first I/O call)."""
        if self._started:
            return
        self._started = True
        for st in self._peers.values():
            if st.entry.qualify is not None and st.addr() is not None:
                self._schedule(now, partial(registration.qualify_tick, self), st)
        for rs in self._regs:
            self._schedule(now, partial(registration.register_tick, self), rs)

    def set_media_sink(self, sink: MediaSink | None) -> None:
        """Deliver voice payloads to ``sink(callno, ts, payload, now)`` instead of events."""
        self._sink = sink

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """Process one received UDP datagram."""
        n = len(data)
        if 4 <= n <= MAX_DATAGRAM:
            b0 = data[0]
            if b0 < 0x80 and (b0 or data[1]):
                # voice mini frame: the hot path (section 2)
                self._n_mini_in += 1
                call = self._by_remote.get((addr, (b0 << 8) | data[1]))
                if call is None or not call.format_rx or call.state > S.UP:
                    self._stats["drop_mini_unknown_call" if call is None
                                else "drop_mini_call_not_active"] += 1
                    return
                last = call.rx_last
                ts = (last & 0xFFFF0000) | (data[2] << 8) | data[3]
                if ts < last - UNWRAP_MS:
                    ts += 0x10000
                elif ts > last + UNWRAP_MS and ts >= 0x10000:
                    ts -= 0x10000
                if ts > last:
                    call.rx_last = ts
                payload = data[4:]
                call.rx.update(ts, n - 4, now)
                sink = self._sink
                if sink is not None:
                    sink(call.callno, ts, payload, now)
                else:
                    self._events.append(VoiceReceived(call.callno, ts, payload, call.format_rx))
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

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        """The datagrams queued since the last call, oldest first."""
        if not self._started:
            self.start(now)
        out = self._out
        self._out = []
        return out

    def get_timer(self) -> float | None:
        """When ``handle_timer`` should next run (loop time), or None."""
        h = self._timers
        while h and not h[0][4]:
            heapq.heappop(h)
        return h[0][0] if h else None

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``."""
        if not self._started:
            self.start(now)
        h = self._timers
        for _ in range(100000):
            if not h or h[0][0] > now:
                break
            t = heapq.heappop(h)
            if t[4]:
                t[4] = False
                t[2](now, t[3])

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
        call = self._new_call(callno, CallKind.CALL_OUT, S.NEW_SENT, addr, now)
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
        self._send(call, _IAX, X.NEW, build_ies(ies), now)
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
            call.state = S.UP

    def busy(self, callno: int, now: float) -> None:
        self._control(callno, ControlSubclass.BUSY, now)

    def congestion(self, callno: int, now: float) -> None:
        self._control(callno, ControlSubclass.CONGESTION, now)

    def hangup(self, callno: int, now: float, cause: int = 16) -> None:
        """Send HANGUP (CAUSECODE only) as our final frame; CallEnded(reason="local") follows."""
        call = self._calls.get(callno)
        if call is None or call.kind not in (CallKind.CALL_IN, CallKind.CALL_OUT):
            return
        if call.state == S.TERMINATING:
            return
        self._end(call, cause, "local")
        self._cancel_call_timers(call)
        call.state = S.TERMINATING
        self._send(call, _IAX, X.HANGUP, build_ies([(IE.CAUSECODE, cause & 0xFF)]), now,
                   final=True)

    def reject(self, callno: int, now: float, cause: int = 21, text: str | None = None) -> None:
        """Refuse a call: REJECT while it is not yet ACCEPTed, HANGUP afterwards."""
        call = self._calls.get(callno)
        if call is None:
            return
        if call.state == S.WAIT_AUTHREP:
            self._reject_call(call, cause, text, now)
        else:
            self.hangup(callno, now, cause)

    def send_voice(self, callno: int, payload: bytes, now: float, ts: int | None = None) -> bool:
        """Send one voice payload: full frame first (and on codec change), then mini or trunk."""
        call = self._calls.get(callno)
        if call is None or not S.ACCEPTED <= call.state <= S.UP:
            self._stats["drop_voice_no_call"] += 1
            return False
        if ts is None:
            ms = int((now - call.start) * 1000.0)
            pred = call.nextpred
            if call.last_voice_ts < 0 or not -TS_SKEW_MS <= ms - pred <= TS_SKEW_MS:
                ts = ms - ms % 20
                if ts <= call.last_voice_ts:
                    ts = call.last_voice_ts + 20
            else:
                ts = pred
        fmt = call.codec
        call.nextpred = ts + len(payload) // _BYTES_PER_MS.get(fmt, 8)
        prev = call.last_voice_ts
        call.last_voice_ts = ts
        call.tx_frames += 1
        if call.svoiceformat != fmt or (not call.trunk and (ts >> 16) - (prev >> 16) >= 2):
            call.svoiceformat = fmt
            call.last_full_voice_ts = ts
            call.lastsent = ts
            self._send(call, _VOICE, fmt, payload, now, ts=ts)
            return True
        call.lastsent = ts
        if call.trunk:
            st = self._trunks.get(call.addr)
            if st is None:
                st = self._trunk_stream(call.addr)
            st.mux.add(callno, ts, payload)
            if st.timer is None:
                st.next_at = now + self._trunkfreq
                st.timer = self._schedule(st.next_at, self._trunk_flush, st)
        else:
            self._n_mini_out += 1
            self._out.append((_MINI.pack(callno, ts & 0xFFFF) + payload, call.addr))
        return True

    def send_dtmf(self, callno: int, digit: str, now: float) -> None:
        """DTMF as Asterisk sends it: a type-12 (begin) then a type-1 (end) full frame."""
        call = self._calls.get(callno)
        if call is None or not S.ACCEPTED <= call.state <= S.UP or len(digit) != 1:
            return
        self._send(call, int(FrameType.DTMF_BEGIN), ord(digit), b"", now)
        self._send(call, int(FrameType.DTMF), ord(digit), b"", now)

    def send_text(self, callno: int, text: str, now: float) -> None:
        call = self._calls.get(callno)
        if call is None or not S.ACCEPTED <= call.state <= S.UP:
            return
        self._send(call, int(FrameType.TEXT), 0, text.encode() + b"\0", now)

    def poke(self, peer: str, now: float) -> None:
        """Send a POKE to ``peer`` now (qualify does this by itself for peers with qualify)."""
        st = self._peers.get(peer)
        if st is None:
            raise KeyError(f"no peer named {peer!r}")
        registration.send_poke(self, st, now)

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
                c.trunk))
        return out

    def netstats(self) -> list[NetStats]:
        out = []
        for c in self._calls.values():
            if c.kind not in (CallKind.CALL_IN, CallKind.CALL_OUT):
                continue
            out.append(NetStats(c.peer, c.callno, c.rtt_ms, self._rr_values(c),
                                dict(c.remote_rr)))
        return out

    def stats(self) -> dict[str, int]:
        d = dict(self._stats)
        d["frames_in_mini"] = self._n_mini_in
        d["frames_out_mini"] = self._n_mini_out
        d["trunk_entries_in"] = self._n_trunk_entries_in
        d["calls_active"] = sum(1 for c in self._calls.values()
                                if c.kind in (CallKind.CALL_IN, CallKind.CALL_OUT))
        d["callnos_in_use"] = self._callnos.in_use
        return d

    def registrations(self) -> list[tuple[str, str, Addr | None]]:
        """Our ``register =>`` lines: (label, status, apparent address)."""
        return [(r.label, r.status, r.apparent_addr) for r in self._regs]

    # ------------------------------------------------------------------ timers

    def _schedule(self, when: float, fn: Callable[[float, Any], None], arg: Any) -> Timer:
        self._timer_seq += 1
        t: Timer = [when, self._timer_seq, fn, arg, True]
        heapq.heappush(self._timers, t)
        return t

    @staticmethod
    def _cancel(t: Timer | None) -> None:
        if t is not None:
            t[4] = False

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
        self._calls[callno] = call
        return call

    def _bind_remote(self, call: Call, peer_callno: int) -> None:
        if call.peer_callno == peer_callno:
            if peer_callno:
                self._by_remote[(call.addr, peer_callno)] = call
            return
        if call.peer_callno:
            key = (call.addr, call.peer_callno)
            if self._by_remote.get(key) is call:
                del self._by_remote[key]
        call.peer_callno = peer_callno
        self._by_remote[(call.addr, peer_callno)] = call

    def _calc_ts(self, call: Call, now: float, frametype: int) -> int:
        """Section 8: IAX frames use the clock (at least last + 3); control/DTMF/text snap to
        last + 3 when within 160 ms of it."""
        ms = int((now - call.start) * 1000.0)
        if ms < 0:
            ms = 0
        last = call.lastsent
        if frametype == _IAX:
            if ms <= last:
                ms = last + 3
        elif -TS_SKEW_MS <= ms - last <= TS_SKEW_MS:
            ms = last + 3
        call.lastsent = ms
        return ms

    def _send(self, call: Call, frametype: int, subclass: int, payload: bytes, now: float, *,
              ts: int | None = None, final: bool = False) -> None:
        """Send a reliable full frame on ``call`` (retransmitted until acked, section 7)."""
        if ts is None:
            ts = self._calc_ts(call, now, frametype)
        oseq = call.oseqno
        data = build_full(call.callno, call.peer_callno, ts & 0xFFFFFFFF, oseq, call.iseqno,
                          frametype, subclass, payload)
        call.oseqno = (oseq + 1) & 0xFF
        self._out.append((data, call.addr))
        self._stats["frames_out_full"] += 1
        call.tx_full += 1
        interval = min(max(2 * call.pingtime, 100), 10000) / 1000.0
        p = Pending(oseq, ts & 0xFFFFFFFF, frametype, subclass, payload, final, interval)
        p.dcallno = call.peer_callno
        call.unacked[oseq] = p
        p.timer = self._schedule(now + interval, self._retransmit, (call, p))

    def _send_unreliable(self, call: Call, subclass: int, ts: int, oseqno: int) -> None:
        """ACK / VNAK: immediate, not retransmitted, OSeqno not advanced (section 7)."""
        data = build_full(call.callno, call.peer_callno, ts & 0xFFFFFFFF, oseqno & 0xFF,
                          call.iseqno, _IAX, subclass)
        self._out.append((data, call.addr))
        self._stats["frames_out_ack" if subclass == X.ACK else "frames_out_vnak"] += 1

    def _send_stateless(self, scallno: int, f: Any, addr: Addr, subclass: int,
                        payload: bytes = b"") -> None:
        """Reply from call 1 without state (CALLTOKEN, PONG to POKE, calltoken REJECT/REGREJ)."""
        data = build_full(_STATELESS, f.scallno, f.ts, 0, (f.iseqno + 1) & 0xFF, _IAX, subclass,
                          payload)
        self._out.append((data, addr))
        self._stats["frames_out_stateless"] += 1

    def _send_inval(self, f: Any, addr: Addr) -> None:
        """INVAL for a frame to an unknown call: ts 0, seqnos 0, src/dst swapped (section 7)."""
        data = build_full(f.dcallno, f.scallno, 0, 0, 0, _IAX, X.INVAL)
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
            t[4] = False
        call.timers.clear()

    def _destroy(self, call: Call, now: float) -> None:
        if self._calls.get(call.callno) is not call:
            return
        del self._calls[call.callno]
        if call.peer_callno:
            key = (call.addr, call.peer_callno)
            if self._by_remote.get(key) is call:
                del self._by_remote[key]
        for p in call.unacked.values():
            self._cancel(p.timer)
        call.unacked.clear()
        self._cancel_call_timers(call)
        call.state = S.TERMINATING
        self._callnos.release(call.callno, call.addr[0], now)
        if call.auth_pending:
            call.auth_pending = False
            self._authreq[call.peer] -= 1
        if call.kind == CallKind.POKE:
            st = self._peers.get(call.peer)
            if st is not None and st.poke_callno == call.callno:
                st.poke_callno = 0
        elif (call.kind == CallKind.REG_OUT and call.reg is not None
              and call.reg.callno == call.callno):
            call.reg.callno = 0

    # ------------------------------------------------------------------ reliability

    def _retransmit(self, now: float, arg: tuple[Call, Pending]) -> None:
        call, p = arg
        if call.unacked.get(p.oseqno) is not p:
            return
        if p.sends >= MAX_RETRIES:
            self._give_up(call, p, now)
            return
        p.sends += 1
        data = build_full(call.callno, p.dcallno, p.ts, p.oseqno, call.iseqno, p.frametype,
                          p.subclass, p.payload, retransmit=True)
        self._out.append((data, call.addr))
        self._stats["retransmissions"] += 1
        p.interval = min(p.interval * 10, 10.0)
        p.timer = self._schedule(now + p.interval, self._retransmit, (call, p))

    def _give_up(self, call: Call, p: Pending, now: float) -> None:
        """Section 7: a final frame just destroys; anything else ends the call with cause 27,
        without sending HANGUP; registrations go to Timeout."""
        self._stats["retransmit_giveups"] += 1
        del call.unacked[p.oseqno]
        if p.final or call.kind in (CallKind.REG_IN, CallKind.POKE):
            self._destroy(call, now)
            return
        if call.kind == CallKind.REG_OUT:
            rs = call.reg
            self._destroy(call, now)
            if rs is not None:
                registration.reg_status(self, rs, "Timeout", 0)
                self._cancel(rs.timer)
                rs.timer = self._schedule(now + QUALIFY_FREQ_NOTOK,
                                          partial(registration.register_tick, self), rs)
            return
        log.info("%s: call %d: no ACK for %s after %d sends, dropping (cause 27)",
                 self.role_name, call.callno, p.subclass, p.sends)
        self._end(call, 27, "timeout")
        self._destroy(call, now)

    def _ack_upto(self, call: Call, iseqno: int, now: float) -> bool:
        """Implicit ACK of our frames with OSeqno in [acked_to, iseqno).  True if the call was
        destroyed because its final frame got acked."""
        start = call.acked_to
        d = (iseqno - start) & 0xFF
        if d == 0 or d > ((call.oseqno - start) & 0xFF):
            return False
        final = False
        unacked = call.unacked
        x = start
        for _ in range(d):
            p = unacked.pop(x, None)
            if p is not None:
                p.timer[4] = False  # type: ignore[index]
                final = final or p.final
            x = (x + 1) & 0xFF
        call.acked_to = iseqno
        if final:
            self._destroy(call, now)
            return True
        return False

    def _on_vnak(self, call: Call, f: Any, ies: IEs | None, now: float) -> None:
        """Resend every unacked frame at or after the VNAK's ISeqno (Asterisk vnak_retransmit)."""
        for p in sorted(call.unacked.values(),
                        key=lambda q: (q.oseqno - f.iseqno) & 0xFF):
            if ((p.oseqno - f.iseqno) & 0xFF) < 128:
                data = build_full(call.callno, p.dcallno, p.ts, p.oseqno, call.iseqno,
                                  p.frametype, p.subclass, p.payload, retransmit=True)
                self._out.append((data, call.addr))
                self._stats["retransmissions_vnak"] += 1

    # ------------------------------------------------------------------ receive: full frames

    def _receive_full(self, data: bytes, addr: Addr, now: float) -> None:
        try:
            f = parse_full(data)
        except FrameError as exc:
            self._warn("drop_malformed_full", f"malformed full frame from {addr}: {exc}", now,
                       addr)
            return
        self._stats["frames_in_full"] += 1
        is_iax = f.frametype == _IAX
        sub = f.csub if is_iax else -2
        if f.dcallno:
            call = self._calls.get(f.dcallno)
            if call is not None and call.addr == addr and (
                    call.peer_callno == f.scallno or call.peer_callno == 0
                    or f.scallno == _STATELESS):
                if f.scallno == _STATELESS and call.peer_callno != _STATELESS:
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
            if is_iax and sub == X.POKE:
                self._stats["pokes_answered"] += 1
                self._send_stateless(_STATELESS, f, addr, X.PONG)
                return
        if f.dcallno == _STATELESS and is_iax and sub == X.ACK:
            return  # ACKs to call 1 are dropped
        if is_iax and sub in _NO_INVAL:
            self._stats["drop_unknown_call"] += 1
            return
        self._stats["drop_unknown_call"] += 1
        log.debug("%s: frame for unknown call %d from %s -> INVAL", self.role_name,
                  f.dcallno, addr)
        self._send_inval(f, addr)

    def _on_stateless_reply(self, call: Call, f: Any, now: float) -> None:
        """CALLTOKEN, PONG to POKE, calltoken REJECT/REGREJ: from call 1, no ACK, no seqnos."""
        if f.frametype != _IAX:
            return
        ies = self._parse_ies(f, call.addr, now)
        if ies is None:
            return
        sub = f.csub
        handler = _IAX_TABLE.get((call.state, sub))
        if handler is None and sub == X.REJECT and call.state == S.NEW_SENT:
            handler = Endpoint._on_reject
        if handler is None:
            self._stats["drop_stateless_unexpected"] += 1
            return
        handler(self, call, f, ies, now)

    def _parse_ies(self, f: Any, addr: Addr, now: float) -> IEs | None:
        try:
            return IEs.parse(f.payload)
        except FrameError as exc:
            self._warn("drop_malformed_ies", f"malformed IEs in IAX {f.csub} from {addr}: {exc}",
                       now, addr)
            return None

    def _on_call_frame(self, call: Call, f: Any, is_iax: bool, sub: int, now: float) -> None:
        if is_iax and sub == X.INVAL:
            self._stats["inval_received"] += 1
            if call.kind in (CallKind.CALL_IN, CallKind.CALL_OUT):
                self._end(call, 0, "inval", "INVAL received")
            elif call.kind == CallKind.REG_OUT and call.reg is not None:
                registration.reg_status(self, call.reg, "Rejected", 0)
            self._destroy(call, now)
            return
        if self._ack_upto(call, f.iseqno, now):
            return
        if not (is_iax and sub in _UNSEQUENCED):
            expected = call.iseqno
            if f.oseqno != expected:
                if ((expected - f.oseqno) & 0xFF) < 128:
                    self._stats["frames_in_dup"] += 1
                    self._send_unreliable(call, X.ACK, f.ts, f.iseqno)
                else:
                    self._stats["frames_in_gap"] += 1
                    self._send_unreliable(call, X.VNAK, call.lastsent, call.iseqno)
                return
            call.iseqno = (expected + 1) & 0xFF
            if not (is_iax and sub in _NO_TS_TRACK) and f.ts > call.rx_last:
                call.rx_last = f.ts
            if call.peer_callno == 0 and f.scallno:
                self._bind_remote(call, f.scallno)
            self._send_unreliable(call, X.ACK, f.ts, f.iseqno)
        elif call.peer_callno == 0 and f.scallno and sub != X.ACK:
            self._bind_remote(call, f.scallno)
        ft = f.frametype
        if is_iax:
            if sub == X.ACK:
                return
            ies = self._parse_ies(f, call.addr, now)
            if ies is None:
                return
            handler = _IAX_TABLE.get((call.state, sub)) or _IAX_TABLE.get((None, sub))
            if handler is None:
                if not 1 <= sub <= max(X):
                    self._stats["unsupport_sent"] += 1
                    self._send(call, _IAX, X.UNSUPPORT, build_ies([(IE.IAX_UNKNOWN, sub)]), now)
                else:
                    self._stats["ignored_iax_" + X(sub).name.lower()] += 1
                return
            handler(self, call, f, ies, now)
        elif ft == _VOICE:
            self._on_full_voice(call, f, now)
        elif ft == _CONTROL:
            self._on_control(call, f, now)
        elif ft == FrameType.DTMF:
            if S.ACCEPTED <= call.state <= S.UP:
                self._events.append(DtmfReceived(call.callno, chr(f.csub), f.ts))
        elif ft == FrameType.TEXT:
            if S.ACCEPTED <= call.state <= S.UP:
                self._events.append(TextReceived(
                    call.callno, f.payload.split(b"\0", 1)[0].decode("utf-8", "replace")))
        else:
            self._stats[f"ignored_frametype_{ft}"] += 1

    def _on_full_voice(self, call: Call, f: Any, now: float) -> None:
        if not S.ACCEPTED <= call.state <= S.UP:
            self._stats["drop_voice_before_accept"] += 1
            return
        try:
            fmt = uncompress_subclass(f.csub)
        except FrameError:
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

    def _on_control(self, call: Call, f: Any, now: float) -> None:
        sub = -1 if f.csub == 0xFF else f.csub
        if sub not in CONTROL_ALLOWED_ON_WIRE:
            self._stats["drop_control_not_allowed"] += 1
            return
        kind = _CONTROL_KIND.get(ControlSubclass(sub))
        if kind is None or call.state not in (S.ACCEPTED, S.UP):
            self._stats["ignored_control"] += 1
            return
        if sub == ControlSubclass.ANSWER:
            call.state = S.UP
        self._events.append(CallProgress(call.callno, kind))  # type: ignore[arg-type]

    def _control(self, callno: int, sub: int, now: float) -> Call | None:
        call = self._calls.get(callno)
        if call is None or not S.ACCEPTED <= call.state <= S.UP:
            return None
        self._send(call, _CONTROL, sub, b"", now)
        return call

    # ------------------------------------------------------------------ IAX handlers (calls)

    def _on_hangup(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        if call.kind in (CallKind.CALL_IN, CallKind.CALL_OUT):
            cause = _i(ies, IE.CAUSECODE) or 16
            self._end(call, cause, "hangup", _s(ies, IE.CAUSE))
        self._destroy(call, now)

    def _on_reject(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        cause = _i(ies, IE.CAUSECODE) or 21
        text = _s(ies, IE.CAUSE) or ("CallToken rejected" if f.scallno == _STATELESS else None)
        if call.kind == CallKind.CALL_OUT:
            log.info("%s: call %d to %s rejected: %s (cause %d)", self.role_name, call.callno,
                     call.peer, text, cause)
        self._end(call, cause, "reject", text)
        self._destroy(call, now)

    def _on_peer_gone(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        self._destroy(call, now)

    def _autokill(self, now: float, call: Call) -> None:
        """No answer to our NEW within 2 x maxms/autokill: congestion (section 9)."""
        if self._calls.get(call.callno) is not call or call.state != S.NEW_SENT:
            return
        if call.peer_callno:
            return  # the peer answered (AUTHREQ...)
        self._stats["calls_autokilled"] += 1
        self._end(call, 34, "timeout", "No response to NEW")
        self._destroy(call, now)

    def _on_calltoken(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        """Resend the NEW/REGREQ with the token byte-exact, seqnos reset, same call number."""
        token = ies.get(IE.CALLTOKEN)
        if not isinstance(token, bytes) or not token:
            self._stats["drop_calltoken_empty"] += 1
            return
        if call.new_ies and call.new_ies[-1][0] == IE.CALLTOKEN and call.new_ies[-1][1]:
            self._stats["drop_calltoken_repeated"] += 1
            return
        for p in call.unacked.values():
            self._cancel(p.timer)
        call.unacked.clear()
        call.oseqno = call.iseqno = call.acked_to = 0
        call.new_ies = [*call.new_ies[:-1], (IE.CALLTOKEN, token)]
        self._stats["calltoken_resends"] += 1
        sub = X.REGREQ if call.kind == CallKind.REG_OUT else X.NEW
        self._send(call, _IAX, sub, build_ies(call.new_ies), now)

    def _on_authreq(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        methods = _i(ies, IE.AUTHMETHODS) or 0
        challenge = _s(ies, IE.CHALLENGE)
        entry = call.entry
        secret = entry.secrets[0] if entry is not None and entry.secrets else ""
        if methods & 2 and challenge is not None:
            items: list[tuple[int, object]] = [(IE.MD5_RESULT, md5_result(challenge, secret))]
        elif methods & 1:
            items = [(IE.PASSWORD, secret)]
        else:
            self._end(call, 50, "local", "No usable authentication method offered")
            call.state = S.TERMINATING
            self._send(call, _IAX, X.HANGUP, build_ies([(IE.CAUSECODE, 50)]), now, final=True)
            return
        self._send(call, _IAX, X.AUTHREP, build_ies(items), now)

    def _on_accept(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        fmt = format_from(ies) or 0
        if not fmt & call.capability:
            self._end(call, 58, "local", "Unable to negotiate codec")
            call.state = S.TERMINATING
            self._send(call, _IAX, X.HANGUP, build_ies([(IE.CAUSECODE, 58)]), now, final=True)
            return
        if fmt & (fmt - 1):
            fmt = call.codec if fmt & call.codec else fmt & -fmt
        call.codec = fmt
        call.state = S.ACCEPTED
        self._start_call_timers(call, now)
        self._events.append(CallProgress(call.callno, "accepted", fmt))

    def _start_call_timers(self, call: Call, now: float) -> None:
        self._cancel_call_timers(call)
        call.timers.append(self._schedule(now + PING_INTERVAL, self._ping_tick, call))
        call.timers.append(self._schedule(now + LAGRQ_INTERVAL, self._lagrq_tick, call))

    def _ping_tick(self, now: float, call: Call) -> None:
        if self._calls.get(call.callno) is not call or call.state == S.TERMINATING:
            return
        self._send(call, _IAX, X.PING, b"", now)
        call.timers.append(self._schedule(now + PING_INTERVAL, self._ping_tick, call))

    def _lagrq_tick(self, now: float, call: Call) -> None:
        if self._calls.get(call.callno) is not call or call.state == S.TERMINATING:
            return
        self._send(call, _IAX, X.LAGRQ, b"", now)
        call.timers.append(self._schedule(now + LAGRQ_INTERVAL, self._lagrq_tick, call))

    def _rr_values(self, call: Call) -> dict[str, int]:
        rx = call.rx
        return {"jitter": int(rx.jitter), "lost": rx.lost, "loss_pct": rx.loss_pct,
                "frames": rx.frames, "delay": 0, "dropped": rx.dropped, "ooo": rx.ooo}

    def _on_ping(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        """PONG with the PING's ts and our receive report (RR IEs, section 9)."""
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
        self._send(call, _IAX, X.PONG, payload, now, ts=f.ts)

    def _on_lagrq(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        self._send(call, _IAX, X.LAGRP, b"", now, ts=f.ts)

    def _on_pong(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        rtt = int((now - call.start) * 1000.0) - f.ts
        if 0 <= rtt < 600000:
            call.rtt_ms = rtt
            call.pingtime = max(rtt, 1)
        rr = {}
        for ie, key in ((IE.RR_JITTER, "jitter"), (IE.RR_PKTS, "frames"), (IE.RR_DELAY, "delay"),
                        (IE.RR_DROPPED, "dropped"), (IE.RR_OOO, "ooo")):
            v = _i(ies, ie)
            if v is not None:
                rr[key] = v
        loss = _i(ies, IE.RR_LOSS)
        if loss is not None:
            rr["loss_pct"] = loss >> 24
            rr["lost"] = loss & 0xFFFFFF
        if rr:
            call.remote_rr = rr

    def _on_lagrp(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        lag = int((now - call.start) * 1000.0) - f.ts
        if 0 <= lag < 600000:
            call.lag_ms = lag

    def _on_call_poke(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        self._send(call, _IAX, X.PONG, b"", now, ts=f.ts)

    def _on_unsupport(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        self._stats["unsupport_received"] += 1
        log.info("%s: peer does not support IAX subclass %s", self.role_name,
                 _i(ies, IE.IAX_UNKNOWN))

    # ------------------------------------------------------------------ requests (dcallno 0)

    def _token_gate(self, f: Any, ies: IEs, addr: Addr, now: float, entry: Entry | None,
                    name: str, reject_sub: int) -> bool:
        """Section 9 CALLTOKEN: True when the request may allocate state."""
        token = ies.get(IE.CALLTOKEN, None)
        if token is None and IE.CALLTOKEN not in ies:
            mode = entry.requirecalltoken if entry is not None else None
            if mode in ("no", "auto") and not (mode == "auto" and name in self._auto_validated):
                return True
            if mode is None and calltoken_optional(self.config.general, addr[0]):
                return True
            self._stats["calltoken_missing_rejected"] += 1
            self._events.append(AuthFailed(addr, name, "call token required but missing"))
            self._send_stateless(_STATELESS, f, addr, reject_sub)
            return False
        if not token:
            self._stats["calltoken_issued"] += 1
            tok = self._tokens.issue(addr, now + self.wall_offset)
            self._send_stateless(_STATELESS, f, addr, X.CALLTOKEN,
                                 build_ies([(IE.CALLTOKEN, tok)]))
            return False
        raw = token.encode() if isinstance(token, str) else token
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raw = b""
        reason = self._tokens.check(bytes(raw), addr, now + self.wall_offset)
        if reason is not None:
            self._stats["calltoken_rejected"] += 1
            self._events.append(AuthFailed(addr, name, reason))
            log.info("%s: %s from %s: %s", self.role_name, X(f.csub).name, addr, reason)
            self._send_stateless(_STATELESS, f, addr, reject_sub)
            return False
        self._stats["calltoken_accepted"] += 1
        if entry is not None and entry.requirecalltoken == "auto":
            self._auto_validated.add(name)
        return True

    def _on_request(self, f: Any, addr: Addr, now: float) -> None:
        ies = self._parse_ies(f, addr, now)
        if ies is None:
            return
        sub = f.csub
        if sub == X.NEW:
            self._on_new(f, ies, addr, now)
        elif sub in (X.REGREQ, X.REGREL):
            registration.on_regreq_new(self, f, ies, addr, now)
        else:
            self._stats["drop_unsupported_request"] += 1

    def _guess_user(self, addr: Addr) -> Entry | None:
        """No USERNAME: a user without secret whose ACL admits the source (Asterisk scoring)."""
        for e in self.config.entries.values():
            if e.is_user and not e.secrets and acl_allows(e.acl, addr[0]):
                return e
        return None

    def _incoming_trunk(self, addr: Addr) -> bool:
        """Section 3: trunk iff a trunk=yes peer's host AND port equal the source."""
        for st in self._peers.values():
            if st.addr() == addr:
                return st.entry.trunk
        return False

    def _on_new(self, f: Any, ies: IEs, addr: Addr, now: float) -> None:
        username = _s(ies, IE.USERNAME)
        entry = self.config.user(username) if username else self._guess_user(addr)
        name = username or (entry.name if entry is not None else "guest")
        if not self._token_gate(f, ies, addr, now, entry, name, X.REJECT):
            return
        trunk = self._incoming_trunk(addr)
        callno = self._callnos.allocate(addr[0], now, trunk)
        if callno is None:
            self._warn("reject_callno_limit", f"no call number for {addr} (maxcallnumbers)", now)
            self._send_stateless(_STATELESS, f, addr, X.REJECT)
            return
        call = self._new_call(callno, CallKind.CALL_IN, S.WAIT_AUTHREP, addr, now)
        self._bind_remote(call, f.scallno)
        call.iseqno = (f.oseqno + 1) & 0xFF
        call.rx_last = f.ts
        call.trunk = trunk
        call.username = username or ""
        call.exten = _s(ies, IE.CALLED_NUMBER) or "s"
        call.new_ies = list(ies)
        self._stats["calls_in"] += 1
        self._stats["calls_total"] += 1
        fails = self._recent_authfails(addr[0], now)
        if fails is not None and len(fails) >= self.config.general.authfaillimit:
            self._warn("reject_auth_throttled", f"NEW from {addr} (user {username!r}) refused: "
                       f"{len(fails)} failed authentications from {addr[0]} in "
                       f"{self.config.general.authfailwindow} s", now)
            self._events.append(AuthFailed(addr, name, "too many failed authentications"))
            self._reject_call(call, 50, "No authority found", now, delay=True)
            return
        version = _i(ies, IE.VERSION)
        if version is not None and version > 2:
            self._reject_call(call, 111, "Protocol version not supported", now)
            return
        if entry is None:
            # unknown user: a fake AUTHREQ, then REJECT whatever comes back (section 9 step 2)
            call.fake_auth = True
            call.peer = username or ""
            self._send_authreq(call, 2, username or "", now)
            return
        call.entry = entry
        call.peer = entry.name
        if not acl_allows(entry.acl, addr[0]):
            self._auth_fail(call, f"{addr[0]} denied by the ACL of [{entry.name}]", now)
            return
        if entry.secrets:
            if self._authreq[entry.name] >= self.config.general.maxauthreq:
                self._events.append(AuthFailed(addr, name, "too many unanswered AUTHREQs"))
                self._reject_call(call, 21, "Unauthenticated call limit reached", now)
                return
            methods = (2 if "md5" in entry.auth else 0) | (1 if "plaintext" in entry.auth else 0)
            self._authreq[entry.name] += 1
            call.auth_pending = True
            self._send_authreq(call, methods or 2, entry.name, now)
            return
        self._accept_incoming(call, now)

    def _send_authreq(self, call: Call, methods: int, username: str, now: float) -> None:
        call.challenge = str(self._rng.randint(0, 999999999))
        items: list[tuple[int, object]] = [(IE.AUTHMETHODS, methods)]
        if methods & 2:
            items.append((IE.CHALLENGE, call.challenge))
        items.append((IE.USERNAME, username))
        self._send(call, _IAX, X.AUTHREQ, build_ies(items), now)

    def _recent_authfails(self, ip: str, now: float) -> deque[float] | None:
        """The times of failed auths from ``ip`` within ``authfailwindow`` (None: none/off)."""
        q = self._authfails.get(ip)
        if q is None:
            return None
        window = self.config.general.authfailwindow
        while q and (q[0] <= now - window or q[0] > now):
            q.popleft()
        if not q:
            del self._authfails[ip]
            return None
        return q

    def _auth_fail(self, call: Call, reason: str, now: float) -> None:
        self._stats["auth_failures"] += 1
        g = self.config.general
        if g.authfaillimit > 0 and g.authfailwindow > 0:
            ip = call.addr[0]
            q = self._recent_authfails(ip, now)
            if q is None:
                if len(self._authfails) >= 4096:     # bounded: forget the oldest source
                    del self._authfails[next(iter(self._authfails))]
                q = self._authfails[ip] = deque(maxlen=g.authfaillimit)
            q.append(now)
        log.info("%s: call from %s (user %r) refused: %s", self.role_name, call.addr,
                 call.username, reason)
        self._events.append(AuthFailed(call.addr, call.username, reason))
        self._reject_call(call, 50, "No authority found", now)

    def _reject_call(self, call: Call, cause: int, text: str | None, now: float,
                     delay: bool = False) -> None:
        if call.auth_pending:
            call.auth_pending = False
            self._authreq[call.peer] -= 1
        call.state = S.TERMINATING
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
        self._send(call, _IAX, X.REJECT, payload, now, final=True)

    def _on_authrep(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        if call.auth_pending:
            call.auth_pending = False
            self._authreq[call.peer] -= 1
        entry = call.entry
        if call.fake_auth or entry is None:
            self._auth_fail(call, f"unknown user {call.username!r}", now)
            return
        ok = False
        md5 = _s(ies, IE.MD5_RESULT)
        password = _s(ies, IE.PASSWORD)
        if md5 is not None and "md5" in entry.auth:
            got = md5.strip().lower()
            ok = any(md5_result(call.challenge, s) == got for s in entry.secrets)
        elif password is not None and "plaintext" in entry.auth:
            ok = password in entry.secrets
        if not ok:
            self._auth_fail(call, f"wrong secret for [{entry.name}]", now)
            return
        self._accept_incoming(call, now)

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
        call.state = S.ACCEPTED
        self._send(call, _IAX, X.ACCEPT,
                   build_ies([(IE.FORMAT, fmt & 0xFFFFFFFF), (IE.FORMAT2, fmt)]), now)
        self._start_call_timers(call, now)
        entry = call.entry
        context = (entry.context if entry is not None and entry.context else None) \
            or _s(ies, IE.CALLED_CONTEXT) or "default"
        call.context = context
        call.announced = True
        self._events.append(IncomingCall(
            call.callno, call.peer, call.exten, context, _s(ies, IE.CALLING_NUMBER) or "",
            _s(ies, IE.CALLING_NAME) or "", fmt, call.addr, call.trunk))

    # ------------------------------------------------------------------ media: trunk

    def _trunk_stream(self, addr: Addr) -> _TrunkStream:
        g = self.config.general
        st = _TrunkStream(addr, TrunkMux(g.trunkmtu, g.trunktimestamps))
        self._trunks[addr] = st
        return st

    def _trunk_flush(self, now: float, st: _TrunkStream) -> None:
        """Section 3: trunk ts = ms since the stream epoch, snapped to last + trunkfreq within
        160 ms, never repeated, 0 only when the stream (re)starts after > 5 s idle."""
        st.timer = None
        mux = st.mux
        if not mux.pending:
            return
        freq_ms = int(self._trunkfreq * 1000)
        if st.epoch < 0 or now - st.last_send > 5.0:
            st.epoch = now
            st.last_ts = -1
        ms = int((now - st.epoch) * 1000.0)
        last = st.last_ts
        if last >= 0:
            pred = last + freq_ms
            if -TS_SKEW_MS < ms - pred < TS_SKEW_MS:
                ms = pred
            if ms <= last:
                ms = last + 1
        st.last_ts = ms
        st.last_send = now
        for dg in mux.flush(ms & 0xFFFFFFFF):
            self._out.append((dg, st.addr))
            self._stats["trunk_datagrams_out"] += 1
        st.next_at += self._trunkfreq
        if st.next_at <= now:
            st.next_at = now + self._trunkfreq
        st.timer = self._schedule(st.next_at, self._trunk_flush, st)

    def _receive_meta(self, data: bytes, addr: Addr, now: float) -> None:
        try:
            tf = parse_trunk(data)
        except FrameError as exc:
            self._warn("drop_malformed_meta", f"bad meta frame from {addr}: {exc}", now, addr)
            return
        self._stats["trunk_datagrams_in"] += 1
        if tf.truncated:
            self._stats["trunk_truncated"] += 1
        epochs = self._trunk_rx_epoch
        epoch = epochs.get(addr)
        if epoch is None or tf.trunk_ts == 0:
            if len(epochs) > 4096:
                epochs.clear()
            epoch = epochs[addr] = now
        by_remote = self._by_remote
        sink = self._sink
        for callno, ts16, payload in tf.entries:
            self._n_trunk_entries_in += 1
            call = by_remote.get((addr, callno))
            if call is None:
                self._stats["drop_trunk_unknown_call"] += 1
                continue
            if not call.format_rx or call.state > S.UP:
                self._stats["drop_trunk_call_not_active"] += 1
                continue
            last = call.rx_last
            if ts16 is not None:
                ts = (last & 0xFFFF0000) | ts16
                if ts < last - UNWRAP_MS:
                    ts += 0x10000
                elif ts > last + UNWRAP_MS and ts >= 0x10000:
                    ts -= 0x10000
            else:
                ts = tf.trunk_ts + int((epoch - call.start) * 1000.0)
                if ts < 0:
                    ts = 0
            if ts > last:
                call.rx_last = ts
            body = bytes(payload)
            call.rx.update(ts, len(body), now)
            if sink is not None:
                sink(call.callno, ts, body, now)
            else:
                self._events.append(VoiceReceived(call.callno, ts, body, call.format_rx))


# Section 9 flows as a table.
_IAX_TABLE.update({
    (S.NEW_SENT, X.CALLTOKEN): Endpoint._on_calltoken,
    (S.NEW_SENT, X.AUTHREQ): Endpoint._on_authreq,
    (S.NEW_SENT, X.ACCEPT): Endpoint._on_accept,
    (S.WAIT_AUTHREP, X.AUTHREP): Endpoint._on_authrep,
    (S.POKE, X.PONG): registration.on_poke_pong,
    (S.REG_OUT, X.CALLTOKEN): Endpoint._on_calltoken,
    (S.REG_OUT, X.REGAUTH): registration.on_regauth,
    (S.REG_OUT, X.REGACK): registration.on_regack,
    (S.REG_OUT, X.REGREJ): registration.on_regrej,
    (S.REG_OUT, X.REJECT): registration.on_regrej,
    (S.REG_IN, X.REGREQ): registration.on_regreq_auth,
    (S.REG_IN, X.REGREL): registration.on_regreq_auth,
    (S.REG_IN, X.HANGUP): registration.on_reg_abort,
    (S.TERMINATING, X.HANGUP): Endpoint._on_peer_gone,
    (S.TERMINATING, X.REJECT): Endpoint._on_peer_gone,
    (None, X.HANGUP): Endpoint._on_hangup,
    (None, X.REJECT): Endpoint._on_reject,
    (None, X.PING): Endpoint._on_ping,
    (None, X.LAGRQ): Endpoint._on_lagrq,
    (None, X.PONG): Endpoint._on_pong,
    (None, X.LAGRP): Endpoint._on_lagrp,
    (None, X.VNAK): Endpoint._on_vnak,
    (None, X.POKE): Endpoint._on_call_poke,
    (None, X.UNSUPPORT): Endpoint._on_unsupport,
})
