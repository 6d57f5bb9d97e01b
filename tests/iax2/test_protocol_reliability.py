"""Sequence numbers, ACK, VNAK, retransmission, give-up, INVAL, lossy link (docs/protocol.md §7)."""

from __future__ import annotations

from helpers_pair import ADDR_A, Link, Pair, drain, events, full_frames, iax, seed_configs
from test_protocol import callee, empty, raw_new, setup_call

from iaxgw._core.constants import IE, FrameType, IAXSubclass
from iaxgw._core.frames import build_full, parse_full
from iaxgw._core.ies import IEs, build_ies
from iaxgw.gateway.iax2.events import CallEnded, CallProgress, IncomingCall
from iaxgw.gateway.iax2.protocol import PING_INTERVAL


def test_every_full_frame_acked_with_echoed_ts_and_exact_callnos() -> None:
    p = Pair()
    cn, bcn = setup_call(p)
    p.b.ringing(bcn, p.now)
    p.b.answer(bcn, p.now)
    p.b.send_dtmf(bcn, "5", p.now)
    p.b.send_text(bcn, "hi", p.now)
    p.run(1)
    ba = [f for f in full_frames(p.wire, "b>a") if f.dcallno == cn and f.scallno == bcn]
    ab_acks = iax(full_frames(p.wire, "a>b"), IAXSubclass.ACK)
    need = [
        f
        for f in ba
        if not (
            f.frametype == 6 and f.csub in (IAXSubclass.ACK, IAXSubclass.INVAL, IAXSubclass.VNAK)
        )
    ]
    assert len(need) >= 6
    for f in need:
        assert any(a.ts == f.ts and a.scallno == cn and a.dcallno == bcn and a.oseqno == f.iseqno
                   for a in ab_acks), f
    # ACK/VNAK do not advance OSeqno: b's OSeqnos of non-ACK frames are consecutive
    seqs = [f.oseqno for f in need if not f.retransmit]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def _up_call(**kw: object) -> tuple[Pair, int, int]:
    ca, cb = seed_configs(qualify=None, trunk=False)
    p = Pair(ca, cb, **kw)  # type: ignore[arg-type]
    cn, bcn = setup_call(p)
    p.run(0.5)
    return p, cn, bcn


def test_duplicate_reacked_and_dropped_gap_vnaked_and_dropped() -> None:
    p, cn, bcn = _up_call()
    call_a = p.a.call_info(cn)
    assert call_a is not None
    expected = call_a.iseqno
    ring = build_full(bcn, cn, 500, expected, call_a.oseqno, FrameType.CONTROL, 3)
    p.a.receive_datagram(ring, p.b.local_addr, p.now)
    p.a.receive_datagram(ring, p.b.local_addr, p.now)        # duplicate
    out = [parse_full(d) for d, _ in drain(p.a, p.now)]
    assert [(f.csub, f.ts) for f in out] == [(IAXSubclass.ACK, 500), (IAXSubclass.ACK, 500)]
    assert [e.kind for e in events(p.a) if isinstance(e, CallProgress)] == ["ringing"]
    assert p.a.stats()["frames_in_dup"] == 1
    # a gap: OSeqno one ahead -> VNAK with our ISeqno, frame dropped
    gap = build_full(bcn, cn, 600, (expected + 2) & 0xFF, call_a.oseqno, FrameType.CONTROL, 4)
    p.a.receive_datagram(gap, p.b.local_addr, p.now)
    (vn,) = [parse_full(d) for d, _ in drain(p.a, p.now)]
    assert vn.csub == IAXSubclass.VNAK and vn.iseqno == (expected + 1) & 0xFF
    assert not events(p.a) and p.a.stats()["frames_in_gap"] == 1


def test_vnak_triggers_resend_of_unacked_frames() -> None:
    p, cn, bcn = _up_call()
    p.links[id(p.b)].drop = 1.0          # b -> a dead
    p.b.ringing(bcn, p.now)
    p.b.progress(bcn, p.now)
    p.run(0.01)
    call_b = p.b.call_info(bcn)
    assert call_b is not None and len(call_b.unacked) == 2
    first = min(call_b.unacked)
    vnak = build_full(cn, bcn, 0, 0, first, FrameType.IAX, IAXSubclass.VNAK)
    p.b.receive_datagram(vnak, p.a.local_addr, p.now)
    out = [parse_full(d) for d, _ in drain(p.b, p.now)]
    assert [(f.frametype, f.csub, f.retransmit) for f in out] == [(4, 3, True), (4, 14, True)]


def test_retransmission_schedule_and_giveup_cause_27_without_hangup() -> None:
    p, _cn, bcn = _up_call()
    p.links[id(p.b)].drop = 1.0          # b's frames never arrive
    t0 = p.now
    p.b.ringing(bcn, p.now)
    assert p.run_until(lambda: p.ev(p.b, CallEnded), 40)
    rings = [(t, parse_full(d)) for t, dr, d, _ in p.wire
             if dr == "b>a" and d[0] & 0x80 and parse_full(d).frametype == 4]
    assert [round(t - t0, 3) for t, _ in rings] == [0.0, 2.0, 12.0, 22.0]
    assert [f.retransmit for _, f in rings] == [False, True, True, True]
    end = p.ev(p.b, CallEnded)[0]
    assert (end.cause, end.reason) == (27, "timeout")
    assert round(p.now - t0, 3) == 32.0
    assert not [1 for t, dr, d, _ in p.wire if dr == "b>a" and t >= t0 and d[0] & 0x80
                and parse_full(d).frametype == 6 and parse_full(d).csub == IAXSubclass.HANGUP]
    assert empty(p.b)


def test_final_frame_given_up_destroys_call() -> None:
    p, cn, _bcn = _up_call()
    p.links[id(p.a)].drop = 1.0
    p.a.hangup(cn, p.now)
    p.run(40)
    assert len(p.ev(p.a, CallEnded)) == 1 and empty(p.a)
    assert p.a.stats()["retransmit_giveups"] >= 1


def test_retransmission_refreshes_iseqno() -> None:
    p, cn, bcn = _up_call()
    p.links[id(p.b)].drop = 1.0
    p.b.ringing(bcn, p.now)
    p.run(0.1)
    p.a.answer(cn, p.now)   # a -> b frame advances b's ISeqno
    p.run(2.5)
    rings = [parse_full(d) for _, dr, d, _ in p.wire if dr == "b>a" and d[0] & 0x80
             and parse_full(d).frametype == 4 and parse_full(d).csub == 3]
    assert rings[1].iseqno == (rings[0].iseqno + 1) & 0xFF and rings[1].retransmit


def test_inval_for_unknown_call_not_for_ack() -> None:
    ep = callee()
    ep.start(0.0)
    drain(ep, 0.0)
    ep.receive_datagram(build_full(333, 999, 1234, 5, 6, FrameType.CONTROL, 3), ADDR_A, 1.0)
    (f,) = [parse_full(d) for d, _ in drain(ep, 1.0)]
    assert (f.scallno, f.dcallno, f.ts, f.oseqno, f.iseqno, f.csub) == (
        999, 333, 0, 0, 0, IAXSubclass.INVAL)
    ep.receive_datagram(
        build_full(333, 999, 1234, 5, 6, FrameType.IAX, IAXSubclass.ACK), ADDR_A, 1.0
    )
    ep.receive_datagram(
        build_full(333, 999, 1234, 5, 6, FrameType.IAX, IAXSubclass.INVAL), ADDR_A, 1.0
    )
    assert drain(ep, 1.0) == []


def test_destroyed_call_frames_get_inval() -> None:
    p, cn, bcn = _up_call()
    p.a.hangup(cn, p.now)
    p.run(1)
    assert empty(p.a) and empty(p.b)
    p.b.receive_datagram(build_full(cn, bcn, 9000, 9, 9, FrameType.CONTROL, 3), p.a.local_addr,
                         p.now)
    (f,) = [parse_full(d) for d, _ in drain(p.b, p.now)]
    assert f.csub == IAXSubclass.INVAL and (f.scallno, f.dcallno) == (bcn, cn)


def test_inval_received_ends_call() -> None:
    p, cn, bcn = _up_call()
    p.a.receive_datagram(
        build_full(bcn, cn, 0, 0, 0, FrameType.IAX, IAXSubclass.INVAL), p.b.local_addr, p.now
    )
    assert p.a.next_event() == CallEnded(cn, 0, "INVAL received", "inval")
    assert empty(p.a)


def test_unknown_iax_subclass_gets_unsupport() -> None:
    p, cn, bcn = _up_call()
    call_a = p.a.call_info(cn)
    assert call_a is not None
    p.a.receive_datagram(build_full(bcn, cn, 700, call_a.iseqno, call_a.oseqno, 6, 99),
                         p.b.local_addr, p.now)
    out = [parse_full(d) for d, _ in drain(p.a, p.now)]
    uns = [f for f in out if f.csub == IAXSubclass.UNSUPPORT]
    assert uns and IEs.parse(uns[0].payload).items == [(IE.IAX_UNKNOWN, 99)]


def test_hangup_from_peer_acked_at_once_and_destroyed() -> None:
    p, cn, bcn = _up_call()
    call_a = p.a.call_info(cn)
    assert call_a is not None
    h = build_full(bcn, cn, 800, call_a.iseqno, call_a.oseqno, 6, IAXSubclass.HANGUP,
                   build_ies([(IE.CAUSECODE, 34)]))
    p.a.receive_datagram(h, p.b.local_addr, p.now)
    (ack,) = [parse_full(d) for d, _ in drain(p.a, p.now)]
    assert (ack.csub, ack.ts, ack.dcallno) == (IAXSubclass.ACK, 800, bcn)
    assert events(p.a) == [CallEnded(cn, 34, "Circuit/channel congestion", "hangup")]
    assert empty(p.a)


def test_garbage_never_crashes() -> None:
    import random

    ep = callee()
    ep.start(0.0)
    rng = random.Random(3)
    for i in range(3000):
        n = rng.choice([0, 1, 3, 4, 5, 11, 12, 13, 20, 40, 200])
        data = bytes(rng.getrandbits(8) for _ in range(n))
        if i % 3 == 0 and n >= 12:
            data = bytes([data[0] | 0x80]) + data[1:]
        if i % 7 == 0 and n >= 8:
            data = b"\x00\x00\x01" + data[3:]
        ep.receive_datagram(data, ADDR_A, 1.0 + i * 0.001)
        ep.datagrams_to_send(1.0)
    ep.receive_datagram(raw_new(5, [])[:14] + b"\x09\x05", ADDR_A, 5.0)   # overrunning IE
    st = ep.stats()
    assert st["drop_too_short"] > 0 and not ep._calls


def test_lossy_link_calls_set_up_and_tear_down_tables_empty() -> None:
    ca, cb = seed_configs(qualify=None)
    p = Pair(ca, cb, link_ab=Link(drop=0.05, dup=0.05, reorder=0.05, jitter=0.01, seed=11),
             link_ba=Link(drop=0.05, dup=0.05, reorder=0.05, jitter=0.01, seed=12), seed=3)
    p.run(0.5)
    calls = []
    for i in range(12):          # staggered: more than 3 unanswered AUTHREQs per user -> REJECT 21
        calls.append(p.a.call("office-b", f"30{i}", p.now))
        p.run(0.3)
    assert p.run_until(lambda: len(p.ev(p.b, IncomingCall)) == 12
                       and len(p.ev(p.a, CallProgress)) >= 12, 60)
    for inc in p.ev(p.b, IncomingCall):
        p.b.answer(inc.callno, p.now)
    for _ in range(100):                 # 2 s of voice both ways
        for cn in calls:
            p.a.send_voice(cn, b"\xff" * 160, p.now)
        for inc in p.ev(p.b, IncomingCall):
            p.b.send_voice(inc.callno, b"\x7f" * 160, p.now)
        p.run(0.02)
    for i, cn in enumerate(calls):
        (p.a if i % 2 else p.b).hangup(
            cn if i % 2 else p.ev(p.b, IncomingCall)[i].callno, p.now)
    # the other half hung up from b: map by order of IncomingCall is per-arrival, so hang up all
    for inc in p.ev(p.b, IncomingCall):
        p.b.hangup(inc.callno, p.now)
    p.run(60)
    assert len(p.ev(p.a, CallEnded)) == 12 and len(p.ev(p.b, CallEnded)) == 12
    assert empty(p.a) and empty(p.b)
    assert p.a.stats()["retransmissions"] + p.b.stats()["retransmissions"] > 0


def test_settled_frames_and_ended_calls_leave_no_reference_cycles() -> None:
    """A reliable frame's timer holds ``(call, frame)`` and the frame holds its timer.  Once the
    frame is acked, given up or dropped with its call, that link must go: else every frame (and
    a call ended with frames unacked) is cyclic garbage that only a full collection frees, and
    a long load test's heap grew by megabytes (issue #6)."""
    import gc

    from iaxgw.gateway.iax2.calls import Call, Pending

    gc.collect()
    gc.disable()
    try:
        p, cn, bcn = _up_call()
        p.b.ringing(bcn, p.now)
        p.b.answer(bcn, p.now)
        p.b.send_dtmf(bcn, "5", p.now)
        p.run(25)                        # PING and LAGRQ acked; every timer past its deadline
        p.a.hangup(cn, p.now)            # acked HANGUP: both calls destroyed
        p2, cn2, _ = _up_call()
        p2.links[id(p2.a)].drop = 1.0
        p2.a.hangup(cn2, p2.now)         # never acked: given up
        p.run(40)
        p2.run(40)
        assert empty(p.a) and empty(p.b) and empty(p2.a)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        cyclic = [type(o).__name__ for o in gc.garbage if isinstance(o, Call | Pending)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert cyclic == []


def test_soft_timers_ride_other_wakeups_and_have_their_own_deadline() -> None:
    """PING/LAGRQ/qualify/registration timers are soft: they fire at the first timer run at or
    after their time (a trunk flush, under load) and ask for a wake-up of their own only
    SOFT_SLACK later; cancelled ones never fire."""
    from iaxgw.gateway.iax2.protocol import SOFT_SLACK

    ep = callee()
    ep.start(0.0)
    drain(ep, 0.0)
    ep._timers.clear()
    fired: list[tuple[str, float]] = []
    ep._schedule_soft(10.0, lambda now, arg: fired.append((arg, now)), "soft")
    assert ep.get_timer() == 10.0 + SOFT_SLACK          # nothing else: its own deadline
    ep._schedule(10.01, lambda now, arg: fired.append((arg, now)), "hard")
    assert ep.get_timer() == 10.01                      # the earlier hard timer wakes first
    ep.handle_timer(9.995)                              # not yet due (nothing fires early)
    assert fired == []
    ep.handle_timer(10.01)                              # the hard timer's run takes it along
    assert fired == [("hard", 10.01), ("soft", 10.01)]
    assert ep.get_timer() is None
    gone = ep._schedule_soft(11.0, lambda now, arg: fired.append((arg, now)), "cancelled")
    ep._cancel(gone)
    assert ep.get_timer() is None
    ep.handle_timer(12.0)
    assert len(fired) == 2


def test_call_pings_are_soft_and_still_sent() -> None:
    p = Pair(*seed_configs(qualify=None))
    cn, _bcn = setup_call(p)
    call = p.a._calls[cn]
    soft = {t.fn.__name__ for t in p.a._timers.live_soft() if t.arg is call}
    assert soft == {"_ping_tick", "_lagrq_tick"}
    mark = len(p.wire)
    p.run(22.0)
    sent = full_frames(p.wire[mark:], "a>b")
    assert iax([f for f in sent if f.scallno == cn], IAXSubclass.PING)
    assert len(iax([f for f in sent if f.scallno == cn], IAXSubclass.LAGRQ)) == 2


def test_long_call_timer_state_stays_bounded() -> None:
    """Three hours of an answered call on the simulated clock (PING and LAGRQ re-armed every
    PING_INTERVAL / LAGRQ_INTERVAL, qualify): each call's timer list and the endpoints' timer
    heaps stay as small after hours as after a minute, and the call is still up."""
    ca, cb = seed_configs(trunk=False)
    p = Pair(ca, cb)
    cn, bcn = setup_call(p)
    p.run(60.0)
    sizes = []
    for _ in range(3 * 6):            # 3 h in 10-minute steps
        p.run(600.0)
        a, b = p.a.call_info(cn), p.b.call_info(bcn)
        assert a is not None and b is not None
        sizes.append((len(a.timers), len(b.timers), len(p.a._timers), len(p.b._timers)))
    assert max(max(s[0], s[1]) for s in sizes) <= 5
    assert max(max(s[2], s[3]) for s in sizes) <= 12
    pings = [f for _, n, d, _ in p.wire if n == "a>b" and d[0] & 0x80
             and (f := parse_full(d)).frametype == FrameType.IAX and f.csub == IAXSubclass.PING]
    assert len(pings) >= 3 * 3600 // PING_INTERVAL - 5        # the timers kept firing
    assert [e for e in events(p.a) if isinstance(e, CallEnded)] == []
