"""The endpoint's state and its reliability layer (docs/protocol.md §7 and §8).

:class:`EndpointCore` holds everything one :class:`~iaxgw.gateway.protocol.Endpoint` keeps and the
machinery every other part of it sends through: the timer heap, full-frame send with OSeqno /
ISeqno and timestamps, ACK / VNAK, retransmission with back-off, give-up, implicit ACK, the
per-call PING / LAGRQ keepalive and call teardown.  The call-flow parts (``callee``, ``callflow``,
``media``) are mixins over it; ``protocol.Endpoint`` composes them, so a method call between parts
is an ordinary bound-method call, never an extra hop per frame.
"""

from __future__ import annotations

import datetime
import logging
import random
from collections import Counter, deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from iaxgw._core.constants import (
    CAUSES,
    FORMAT_BITS,
    FRAME_CONTROL,
    FRAME_IAX,
    ControlSubclass,
    FrameType,
    IAXSubclass,
)
from iaxgw._core.errors import FrameError
from iaxgw._core.frames import build_full
from iaxgw._core.ies import IEs
from iaxgw.gateway import registration
from iaxgw.gateway.address import Addr
from iaxgw.gateway.calls import (
    MSG_TX,
    STATELESS_CALLNO,
    Call,
    CallKind,
    CallNumbers,
    CallState,
    Pending,
)
from iaxgw.gateway.calltoken import KEY_BYTES, CallTokens
from iaxgw.gateway.crypto import CallCrypto
from iaxgw.gateway.events import CallEnded, CallSetup, Event, ProtocolError
from iaxgw.gateway.model import Entry, IaxConfig
from iaxgw.gateway.peers import QUALIFY_FREQ_NOTOK, REG_DEFAULT_REFRESH, PeerState, RegState
from iaxgw.gateway.rsakeys import KeyStore
from iaxgw.gateway.timers import Timer, TimerFn, TimerQueue

if TYPE_CHECKING:
    from iaxgw.gateway.media import TrunkStream
    from iaxgw.gateway.protocol import Endpoint

__all__ = ["EndpointCore", "MediaSink", "codec_bits"]

log = logging.getLogger("iaxgw.protocol")

MediaSink = Callable[[int, int, bytes, float], None]


MAX_RETRIES = 4               # sends in all (1 + 3 retries), docs/protocol.md §7.6
#: How late a soft timer (``EndpointCore._schedule_soft``) may fire, in seconds: a little more
#: than the default 20 ms trunk period, so that with a trunk running it rides a trunk flush.
SOFT_SLACK = 0.025
PING_INTERVAL = 21.0
LAGRQ_INTERVAL = 10.0
TS_SKEW_MS = 160              # MAX_TIMESTAMP_SKEW
UNWRAP_MS = 50000


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


class EndpointCore:
    """State of one UDP socket's IAX2 endpoint, timers and reliable full-frame send."""

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
        self._callnos = CallNumbers(self._rng, g.maxcallnumbers,
                                    nonval_limit=g.maxcallnumbers_nonvalidated)
        self._tokens = CallTokens(None if rng is None else rng.randbytes(KEY_BYTES),
                                  g.calltokenexpiration)
        self._calls: dict[int, Call] = {}
        self._by_remote: dict[tuple[Addr, int], Call] = {}
        self._by_addr: dict[Addr, dict[int, Call]] = {}     # _by_remote per address
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
        self._authreq: Counter[str] = Counter()     # unanswered AUTHREQs per user
        self._authfails: dict[str, deque[float]] = {}   # recent failed auths per source IP
        self._auto_validated: set[str] = set()     # requirecalltoken=auto entries seen with token
        self._trunks: dict[Addr, TrunkStream] = {}
        self._trunk_rx_epoch: dict[Addr, float] = {}
        self._echo_used = False          # some call echoes inside the endpoint (set_echo)
        self._trunkfreq = min(max(g.trunkfreq, 10), 1000) / 1000.0
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
        """A timer that may fire up to :data:`SOFT_SLACK` late (gateway/timers.py), for
        periodic work whose exact moment does not matter (PING, LAGRQ, qualify, registration
        refresh)."""
        return self._timers.schedule_soft(when, fn, arg)

    @staticmethod
    def _cancel(t: Timer | None) -> None:
        if t is not None:
            t.alive = False

    @staticmethod
    def _cancel_pending(p: Pending) -> None:
        """``p`` leaves ``call.unacked``: cancel its retransmission and forget the timer.

        The timer's argument is ``(call, p)``, so ``p.timer`` closes a reference cycle.  Left
        set, every acknowledged frame (with its call, when that was destroyed with frames
        unacked) became cyclic garbage: promoted to the oldest GC generation while its timer
        was pending, it waited for a full collection, which a long run makes rarely, so the
        garbage (about 35 KiB/s at 200 calls) grew the heap for minutes.  Same in ``_ack_upto``,
        inlined."""
        t = p.timer
        if t is not None:
            t.alive = False
            p.timer = None

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
        self._rx_prompt = True          # until the next rx_prompt() scan
        self._rx_prompt_until = now + self.RX_PROMPT_REFRESH
        return call

    def _bind_remote(self, call: Call, peer_callno: int) -> None:
        if call.peer_callno == peer_callno:
            if peer_callno:
                self._by_remote[(call.addr, peer_callno)] = call
                self._index_remote(call, peer_callno)
            return
        if call.peer_callno:
            self._unbind_remote(call)
        call.peer_callno = peer_callno
        self._by_remote[(call.addr, peer_callno)] = call
        self._index_remote(call, peer_callno)

    def _index_remote(self, call: Call, peer_callno: int) -> None:
        """``_by_addr``: the same map as ``_by_remote``, per source address (trunk receive
        looks the address up once per datagram, then each entry by its call number)."""
        calls = self._by_addr.get(call.addr)
        if calls is None:
            calls = self._by_addr[call.addr] = {}
        calls[peer_callno] = call

    def _unbind_remote(self, call: Call) -> None:
        key = (call.addr, call.peer_callno)
        if self._by_remote.get(key) is call:
            del self._by_remote[key]
        calls = self._by_addr.get(call.addr)
        if calls is not None and calls.get(call.peer_callno) is call:
            del calls[call.peer_callno]
            if not calls:
                del self._by_addr[call.addr]

    def _calc_ts(self, call: Call, now: float, frametype: int) -> int:
        """docs/protocol.md §8.1: IAX frames use the clock (at least last + 3); control/DTMF/text
        snap to last + 3 when within 160 ms of it."""
        ms = int((now - call.start) * 1000.0)
        if ms < 0:
            ms = 0
        last = call.lastsent
        if frametype == FRAME_IAX:
            if ms <= last:
                ms = last + 3
        elif -TS_SKEW_MS <= ms - last <= TS_SKEW_MS:
            ms = last + 3
        call.lastsent = ms
        return ms

    def _send(self, call: Call, frametype: int, subclass: int, payload: bytes, now: float, *,
              ts: int | None = None, final: bool = False) -> int:
        """Send a reliable full frame on ``call`` (resent until acked, docs/protocol.md §7.6);
        returns its timestamp."""
        if ts is None:
            ts = self._calc_ts(call, now, frametype)
        oseq = call.oseqno
        data = build_full(call.callno, call.peer_callno, ts & 0xFFFFFFFF, oseq, call.iseqno,
                          frametype, subclass, payload)
        call.oseqno = (oseq + 1) & 0xFF
        self._out.append((data, call.addr))
        if frametype == FRAME_IAX:
            call.mark_msg(subclass | MSG_TX)
        self._stats["frames_out_full"] += 1
        call.tx_full += 1
        interval = min(max(2 * call.pingtime, 100), 10000) / 1000.0
        p = Pending(oseq, ts & 0xFFFFFFFF, frametype, subclass, payload, final, interval)
        p.dcallno = call.peer_callno
        call.unacked[oseq] = p
        p.timer = self._schedule(now + interval, self._retransmit, (call, p))
        return p.ts

    def _send_unreliable(self, call: Call, subclass: int, ts: int, oseqno: int) -> None:
        """ACK / VNAK: immediate, not retransmitted, OSeqno not advanced (docs/protocol.md §7.1)."""
        data = build_full(call.callno, call.peer_callno, ts & 0xFFFFFFFF, oseqno & 0xFF,
                          call.iseqno, FRAME_IAX, subclass)
        self._out.append((data, call.addr))
        call.mark_msg(subclass | MSG_TX)
        self._stats["frames_out_ack" if subclass == IAXSubclass.ACK else "frames_out_vnak"] += 1

    def _send_stateless(self, scallno: int, f: Any, addr: Addr, subclass: int,
                        payload: bytes = b"") -> None:
        """Reply from call 1 without state (CALLTOKEN, PONG to POKE, calltoken REJECT/REGREJ)."""
        data = build_full(STATELESS_CALLNO, f.scallno, f.ts, 0, (f.iseqno + 1) & 0xFF, FRAME_IAX,
                          subclass, payload)
        self._out.append((data, addr))
        self._stats["frames_out_stateless"] += 1

    def _send_inval(self, f: Any, addr: Addr) -> None:
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
        if self._calls.get(call.callno) is not call:
            return
        del self._calls[call.callno]
        cc = self._crypt.get(call.callno)
        if cc is not None:
            self._crypt_gone.append((call.callno, cc))
        if call.peer_callno:
            self._unbind_remote(call)
        for p in call.unacked.values():
            self._cancel_pending(p)
        call.unacked.clear()
        self._cancel_call_timers(call)
        call.state = CallState.TERMINATING
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
        if (
            p.subclass == IAXSubclass.AUTHREP
            and p.frametype == FRAME_IAX
            and call.kind == CallKind.CALL_OUT
        ):
            self._events.append(CallSetup(call.callno, "authrep", resend=True))
        p.interval = min(p.interval * 10, 10.0)
        p.timer = self._schedule(now + p.interval, self._retransmit, (call, p))

    def _give_up(self, call: Call, p: Pending, now: float) -> None:
        """docs/protocol.md §7.6: a final frame just destroys; anything else ends the call with
        cause 27, without sending HANGUP; registrations go to Timeout."""
        self._stats["retransmit_giveups"] += 1
        del call.unacked[p.oseqno]
        p.timer = None          # the timer that just fired (see _cancel_pending)
        if p.final or call.kind in (CallKind.REG_IN, CallKind.POKE):
            self._destroy(call, now)
            return
        if call.kind == CallKind.REG_OUT:
            rs = call.reg
            self._destroy(call, now)
            if rs is not None:
                ep = cast("Endpoint", self)
                # as Asterisk's __attempt_transmit: no perceived address, default refresh
                rs.apparent_addr = None
                rs.refresh = REG_DEFAULT_REFRESH
                registration.reg_status(ep, rs, "Timeout", 0)
                self._cancel(rs.timer)
                rs.timer = self._schedule(now + QUALIFY_FREQ_NOTOK,
                                          partial(registration.register_tick, ep), rs)
            return
        what = frame_name(p.frametype, p.subclass)
        waited = max(0.0, now - call.start - p.ts / 1000.0)
        log.info("%s: call %d: no ACK for %s after %d sends, dropping (cause 27)",
                 self.role_name, call.callno, what, p.sends)
        self._end(call, 27, "timeout",
                  f"{what} never acknowledged after {p.sends} sends ({waited:.0f} s)")
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
                t = p.timer             # _cancel_pending, inlined: no reference cycle left
                if t is not None:
                    t.alive = False
                    p.timer = None
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


    def _parse_ies(self, f: Any, addr: Addr, now: float) -> IEs | None:
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
        self._send(call, FRAME_IAX, IAXSubclass.PING, b"", now)
        self._keep_call_timer(call, self._schedule_soft(now + PING_INTERVAL, self._ping_tick,
                                                        call))

    def _lagrq_tick(self, now: float, call: Call) -> None:
        if self._calls.get(call.callno) is not call or call.state == CallState.TERMINATING:
            return
        self._send(call, FRAME_IAX, IAXSubclass.LAGRQ, b"", now)
        self._keep_call_timer(call, self._schedule_soft(now + LAGRQ_INTERVAL, self._lagrq_tick,
                                                        call))

