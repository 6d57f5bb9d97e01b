"""Reliable full frames of one endpoint (docs/protocol.md §7 and §8.1).

A part of ``protocol.Endpoint`` that owns the rules of reliable delivery: the timestamp of
each full frame, OSeqno / ISeqno, the frames kept until acknowledged (``Call.unacked``),
retransmission with back-off, implicit ACK, VNAK resends, unsequenced ACK / VNAK.  It is given
its collaborators: the endpoint's outgoing datagram queue (``out``, replaced at each flush), its
timer queue, its counters and events, and ``give_up``, called when a frame was sent
:data:`MAX_SENDS` times unacknowledged (the endpoint decides what that does to the call).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable

from iaxgw._core.constants import FRAME_IAX, TS_SKEW_MS, IAXSubclass
from iaxgw._core.frames import build_full
from iaxgw.gateway.iax2.address import Addr
from iaxgw.gateway.iax2.calls import MSG_TX, Call, CallKind, Pending
from iaxgw.gateway.iax2.events import CallSetup, Event
from iaxgw.gateway.iax2.timers import TimerQueue

__all__ = ["MAX_SENDS", "Reliability"]

MAX_SENDS = 4               # sends in all (1 + 3 retries), docs/protocol.md §7.6


class Reliability:
    """Reliable send, acknowledgement and retransmission of full frames."""

    def __init__(self, out: list[tuple[bytes, Addr]], timers: TimerQueue, stats: Counter[str],
                 events: deque[Event], give_up: Callable[[Call, Pending, float], None]) -> None:
        #: the endpoint's queue of datagrams to send; it hands a fresh one at each flush
        self.out = out
        self._timers = timers
        self._stats = stats
        self._events = events
        self._give_up = give_up

    @staticmethod
    def calc_ts(call: Call, now: float, frametype: int) -> int:
        """docs/protocol.md §8.1: IAX frames use the clock (at least last + 3); control / DTMF /
        text snap to last + 3 when within 160 ms of it."""
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

    def send(self, call: Call, frametype: int, subclass: int, payload: bytes, now: float, *,
             ts: int | None = None, final: bool = False) -> int:
        """Send a reliable full frame on ``call`` (resent until acked, docs/protocol.md §7.6);
        returns its timestamp.  ``final``: the frame ends the call (its ACK destroys it)."""
        if ts is None:
            ts = self.calc_ts(call, now, frametype)
        oseq = call.oseqno
        data = build_full(call.callno, call.peer_callno, ts & 0xFFFFFFFF, oseq, call.iseqno,
                          frametype, subclass, payload)
        call.oseqno = (oseq + 1) & 0xFF
        self.out.append((data, call.addr))
        if frametype == FRAME_IAX:
            call.mark_msg(subclass | MSG_TX)
        self._stats["frames_out_full"] += 1
        call.tx_full += 1
        interval = min(max(2 * call.pingtime, 100), 10000) / 1000.0
        p = Pending(oseq, ts & 0xFFFFFFFF, frametype, subclass, payload, final, interval)
        p.dcallno = call.peer_callno
        call.unacked[oseq] = p
        p.timer = self._timers.schedule(now + interval, self._retransmit, (call, p))
        return p.ts

    def send_unreliable(self, call: Call, subclass: int, ts: int, oseqno: int) -> None:
        """ACK / VNAK: immediate, not retransmitted, OSeqno not advanced
        (docs/protocol.md §7.1)."""
        data = build_full(call.callno, call.peer_callno, ts & 0xFFFFFFFF, oseqno & 0xFF,
                          call.iseqno, FRAME_IAX, subclass)
        self.out.append((data, call.addr))
        call.mark_msg(subclass | MSG_TX)
        self._stats["frames_out_ack" if subclass == IAXSubclass.ACK else "frames_out_vnak"] += 1

    def _retransmit(self, now: float, arg: tuple[Call, Pending]) -> None:
        call, p = arg
        if call.unacked.get(p.oseqno) is not p:
            return
        if p.sends >= MAX_SENDS:
            self._stats["retransmit_giveups"] += 1
            del call.unacked[p.oseqno]
            p.timer = None          # the timer that just fired (see cancel_pending)
            self._give_up(call, p, now)
            return
        p.sends += 1
        data = build_full(call.callno, p.dcallno, p.ts, p.oseqno, call.iseqno, p.frametype,
                          p.subclass, p.payload, retransmit=True)
        self.out.append((data, call.addr))
        self._stats["retransmissions"] += 1
        if (
            p.subclass == IAXSubclass.AUTHREP
            and p.frametype == FRAME_IAX
            and call.kind == CallKind.CALL_OUT
        ):
            self._events.append(CallSetup(call.callno, "authrep", resend=True))
        p.interval = min(p.interval * 10, 10.0)
        p.timer = self._timers.schedule(now + p.interval, self._retransmit, (call, p))

    @staticmethod
    def cancel_pending(p: Pending) -> None:
        """``p`` leaves ``call.unacked``: cancel its retransmission and forget the timer.

        The timer's argument is ``(call, p)``, so ``p.timer`` closes a reference cycle.  Left
        set, every acknowledged frame (with its call, when that was destroyed with frames
        unacked) became cyclic garbage: promoted to the oldest GC generation while its timer
        was pending, it waited for a full collection, which a long run makes rarely, so the
        garbage (about 35 KiB/s at 200 calls) grew the heap for minutes.  Same in ``ack_upto``,
        inlined."""
        t = p.timer
        if t is not None:
            t.alive = False
            p.timer = None

    def forget(self, call: Call) -> None:
        """Stop resending every frame of ``call`` (it went, or starts over)."""
        for p in call.unacked.values():
            self.cancel_pending(p)
        call.unacked.clear()

    @staticmethod
    def ack_upto(call: Call, iseqno: int) -> bool:
        """Implicit ACK of our frames with OSeqno in [acked_to, iseqno).  True when one of them
        was the call's final frame (the call is over)."""
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
                t = p.timer             # cancel_pending, inlined: no reference cycle left
                if t is not None:
                    t.alive = False
                    p.timer = None
                final = final or p.final
            x = (x + 1) & 0xFF
        call.acked_to = iseqno
        return final

    def resend_from(self, call: Call, iseqno: int) -> None:
        """A VNAK: resend every unacked frame at or after its ISeqno (Asterisk's
        vnak_retransmit)."""
        for p in sorted(call.unacked.values(), key=lambda q: (q.oseqno - iseqno) & 0xFF):
            if ((p.oseqno - iseqno) & 0xFF) < 128:
                data = build_full(call.callno, p.dcallno, p.ts, p.oseqno, call.iseqno,
                                  p.frametype, p.subclass, p.payload, retransmit=True)
                self.out.append((data, call.addr))
                self._stats["retransmissions_vnak"] += 1
