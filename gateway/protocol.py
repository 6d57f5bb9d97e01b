"""The sans-IO IAX2 endpoint: one per UDP socket, many calls (modelled on aioquic's QuicConnection).

No sockets, no clock, no threads: the driver feeds datagrams with ``receive_datagram(data, addr,
now)``, sends what ``datagrams_to_send(now)`` returns, fires ``handle_timer(now)`` at
``get_timer()`` and drains ``next_event()``.  Behaviour follows Asterisk 22 as
docs/protocol.md describes it; the §N and PN below are its sections and pitfalls.

Incoming NEWs that pass calltoken, ACL, authentication and codec negotiation are ACCEPTed by the
core (as Asterisk does) and then announced with :class:`IncomingCall`.

:class:`Endpoint` is the public API, the datagram entry (mini frames inline: the hot path) and
the full-frame dispatch with its section-9 table; its parts are mixins over
:class:`~iaxgw.gateway.reliability.EndpointCore` (state, timers, send / ACK / retransmit):
:mod:`~iaxgw.gateway.callee` (requests: NEW, call token, auth), :mod:`~iaxgw.gateway.callflow`
(handlers of calls we hold) and :mod:`~iaxgw.gateway.media` (voice send, trunks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from iaxgw._core.constants import (
    CONTROL_ALLOWED_ON_WIRE,
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
from iaxgw._core.frames import parse_full
from iaxgw._core.ies import IEs, build_ies
from iaxgw._core.trunk import receive_mini
from iaxgw.gateway import registration
from iaxgw.gateway.address import Addr
from iaxgw.gateway.callee import CalleeMixin
from iaxgw.gateway.callflow import CallFlowMixin
from iaxgw.gateway.calls import (
    STATELESS_CALLNO,
    Call,
    CallKind,
    CallState,
    ChannelInfo,
    NetStats,
    PeerInfo,
    msg_text,
)
from iaxgw.gateway.crypto import decrypt_datagram, encrypt_datagrams
from iaxgw.gateway.events import (
    CallProgress,
    DtmfReceived,
    Event,
    TextReceived,
)
from iaxgw.gateway.media import MediaMixin
from iaxgw.gateway.peers import RegState
from iaxgw.gateway.reliability import (
    MediaSink,
)

__all__ = ["Endpoint"]

log = logging.getLogger("iaxgw.protocol")


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


class Endpoint(MediaMixin, CalleeMixin, CallFlowMixin):
    """The IAX2 protocol state of one UDP socket."""


    # ------------------------------------------------------------------ public API: I/O

    def start(self, now: float) -> None:
        """Begin qualify and registrations (also done lazily by the first I/O call)."""
        if self._started:
            return
        self._started = True
        self._callnos.start(now)
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
            now = loop_now - age
            if now < floor:
                now = floor
            floor = now
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
        self._out = []
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
        self._send(call, FRAME_IAX, IAXSubclass.NEW, build_ies(ies), now)
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
        self._send(call, FRAME_IAX, IAXSubclass.HANGUP,
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
        self._send(call, int(FrameType.DTMF_BEGIN), ord(digit), b"", now)
        self._send(call, int(FrameType.DTMF), ord(digit), b"", now)

    def send_text(self, callno: int, text: str, now: float) -> None:
        call = self._calls.get(callno)
        if call is None or not CallState.ACCEPTED <= call.state <= CallState.UP:
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

    def _on_stateless_reply(self, call: Call, f: Any, now: float) -> None:
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


    def _on_call_frame(self, call: Call, f: Any, is_iax: bool, sub: int, now: float) -> None:
        if is_iax and sub == IAXSubclass.INVAL:
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
                    self._send_unreliable(call, IAXSubclass.ACK, f.ts, f.iseqno)
                else:
                    self._stats["frames_in_gap"] += 1
                    self._send_unreliable(call, IAXSubclass.VNAK, call.lastsent, call.iseqno)
                return
            call.iseqno = (expected + 1) & 0xFF
            if not (is_iax and sub in _NO_TS_TRACK) and f.ts > call.rx_last:
                call.rx_last = f.ts
            if call.peer_callno == 0 and f.scallno:
                self._bind_remote(call, f.scallno)
            self._send_unreliable(call, IAXSubclass.ACK, f.ts, f.iseqno)
        elif call.peer_callno == 0 and f.scallno and sub != IAXSubclass.ACK:
            self._bind_remote(call, f.scallno)
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
                    self._send(call, FRAME_IAX, IAXSubclass.UNSUPPORT,
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


    def _on_rtkey(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        """The peer's new key took effect when the RTKEY was decrypted (``crypto``); an RTKEY
        on a call that is not encrypted is ignored (Asterisk warns "bad things will happen")."""
        if call.callno in self._crypt:
            self._stats["key_rotations_received"] += 1
        else:
            self._warn("rtkey_unencrypted", f"call {call.callno}: RTKEY on a call that is not "
                       "encrypted, ignored", now, call.addr)

    def _on_control(self, call: Call, f: Any, now: float) -> None:
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
        self._send(call, FRAME_CONTROL, sub, b"", now)
        return call



# The call flows of docs/protocol.md §9 as a table.
_IAX_TABLE.update({
    (CallState.NEW_SENT, IAXSubclass.CALLTOKEN): Endpoint._on_calltoken,
    (CallState.NEW_SENT, IAXSubclass.AUTHREQ): Endpoint._on_authreq,
    (CallState.NEW_SENT, IAXSubclass.ACCEPT): Endpoint._on_accept,
    (CallState.WAIT_AUTHREP, IAXSubclass.AUTHREP): Endpoint._on_authrep,
    (CallState.POKE, IAXSubclass.PONG): registration.on_poke_pong,
    (CallState.REG_OUT, IAXSubclass.CALLTOKEN): Endpoint._on_calltoken,
    (CallState.REG_OUT, IAXSubclass.REGAUTH): registration.on_regauth,
    (CallState.REG_OUT, IAXSubclass.REGACK): registration.on_regack,
    (CallState.REG_OUT, IAXSubclass.REGREJ): registration.on_regrej,
    (CallState.REG_OUT, IAXSubclass.REJECT): registration.on_regrej,
    (CallState.REG_IN, IAXSubclass.REGREQ): registration.on_regreq_auth,
    (CallState.REG_IN, IAXSubclass.REGREL): registration.on_regreq_auth,
    (CallState.REG_IN, IAXSubclass.HANGUP): registration.on_reg_abort,
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
