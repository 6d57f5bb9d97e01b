"""The endpoint's reliability part on its own: full-frame timestamps and sequence numbers,
retransmission with back-off and give-up, implicit ACK, VNAK resends, unsequenced ACK."""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

from iaxgw._core.constants import FRAME_CONTROL, FRAME_IAX, ControlSubclass, IAXSubclass
from iaxgw._core.frames import parse_full
from iaxgw.gateway.iax2.calls import Call, CallKind, CallState, Pending
from iaxgw.gateway.iax2.events import CallSetup, Event
from iaxgw.gateway.iax2.reliability import MAX_SENDS, Reliability
from iaxgw.gateway.iax2.timers import TimerQueue

PEER = ("127.0.0.10", 4569)


class Harness:
    def __init__(self) -> None:
        self.out: list[tuple[bytes, Any]] = []
        self.timers = TimerQueue(0.025)
        self.stats: Counter[str] = Counter()
        self.events: deque[Event] = deque()
        self.gave_up: list[tuple[Call, Pending, float]] = []
        self.rel = Reliability(self.out, self.timers, self.stats, self.events,
                               lambda c, p, now: self.gave_up.append((c, p, now)))
        self.call = Call(300, CallKind.CALL_OUT, CallState.UP, PEER, 0.0)
        self.call.peer_callno = 700
        self.call.pingtime = 50          # first retransmission after 100 ms

    def frames(self) -> list[Any]:
        got = [parse_full(d) for d, _ in self.out]
        self.out.clear()
        return got

    def run_until(self, t: float) -> None:
        while (d := self.timers.deadline()) is not None and d <= t:
            self.timers.fire_due(d)


def test_send_numbers_frames_and_stamps_them_from_the_call_start() -> None:
    h = Harness()
    ts1 = h.rel.send(h.call, FRAME_IAX, IAXSubclass.PING, b"", 1.0)
    ts2 = h.rel.send(h.call, FRAME_IAX, IAXSubclass.LAGRQ, b"", 1.0)     # same ms: last + 3
    ts3 = h.rel.send(h.call, FRAME_CONTROL, ControlSubclass.ANSWER, b"", 1.05)   # snaps
    f1, f2, f3 = h.frames()
    assert (ts1, ts2, ts3) == (1000, 1003, 1006)
    assert [f.oseqno for f in (f1, f2, f3)] == [0, 1, 2]
    assert (f1.scallno, f1.dcallno, f1.ts) == (300, 700, 1000)
    assert set(h.call.unacked) == {0, 1, 2} and h.stats["frames_out_full"] == 3


def test_an_unacknowledged_frame_is_resent_with_back_off_then_given_up() -> None:
    h = Harness()
    h.rel.send(h.call, FRAME_IAX, IAXSubclass.PING, b"", 0.0)
    h.frames()
    h.run_until(0.099)
    assert not h.out                                   # first resend after 2 x pingtime
    h.run_until(0.1)
    (f,) = h.frames()
    assert f.retransmit and f.oseqno == 0
    h.run_until(1.0999)
    assert not h.out                                   # then 10 x longer
    h.run_until(1.1)
    assert len(h.frames()) == 1
    h.run_until(60.0)
    assert h.stats["retransmissions"] == MAX_SENDS - 1 and len(h.gave_up) == 1
    call, p, _ = h.gave_up[0]
    assert call is h.call and p.oseqno == 0 and p.timer is None and not h.call.unacked
    assert h.stats["retransmit_giveups"] == 1


def test_implicit_ack_stops_resends_and_says_when_the_final_frame_was_acked() -> None:
    h = Harness()
    for sub in (IAXSubclass.PING, IAXSubclass.LAGRQ):
        h.rel.send(h.call, FRAME_IAX, sub, b"", 0.0)
    h.rel.send(h.call, FRAME_IAX, IAXSubclass.HANGUP, b"", 0.0, final=True)
    assert not h.rel.ack_upto(h.call, 2)               # PING and LAGRQ acknowledged
    assert set(h.call.unacked) == {2}
    assert not h.rel.ack_upto(h.call, 200)             # beyond what we sent: ignored
    assert h.rel.ack_upto(h.call, 3)                   # the HANGUP: the call is over
    h.frames()
    h.run_until(60.0)
    assert not h.out and not h.gave_up


def test_a_vnak_resends_from_its_iseqno_in_order() -> None:
    h = Harness()
    for _ in range(4):
        h.rel.send(h.call, FRAME_IAX, IAXSubclass.PING, b"", 0.0)
    h.frames()
    h.rel.resend_from(h.call, 2)
    assert [(f.oseqno, f.retransmit) for f in h.frames()] == [(2, True), (3, True)]
    assert h.stats["retransmissions_vnak"] == 2


def test_ack_is_unsequenced_and_authrep_resends_are_reported() -> None:
    h = Harness()
    h.rel.send_unreliable(h.call, IAXSubclass.ACK, 1234, 5)
    (ack,) = h.frames()
    assert (ack.ts, ack.oseqno, ack.csub) == (1234, 5, IAXSubclass.ACK)
    assert h.call.oseqno == 0 and not h.call.unacked
    h.rel.send(h.call, FRAME_IAX, IAXSubclass.AUTHREP, b"", 0.0)
    h.run_until(0.1)
    assert [e for e in h.events if isinstance(e, CallSetup) and e.resend]


def test_forget_cancels_every_pending_resend() -> None:
    h = Harness()
    for _ in range(3):
        h.rel.send(h.call, FRAME_IAX, IAXSubclass.PING, b"", 0.0)
    pend = list(h.call.unacked.values())
    h.rel.forget(h.call)
    assert not h.call.unacked and all(p.timer is None for p in pend)
    h.frames()
    h.run_until(60.0)
    assert not h.out and not h.gave_up
