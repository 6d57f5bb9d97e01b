"""Media of the sans-IO endpoint: full then mini, trunk (both variants), ts unwrap, PING/LAGRQ."""

from __future__ import annotations

import itertools

import pytest
from helpers_pair import Pair, drain, events, full_frames, iax, seed_configs
from test_protocol import setup_call

from iaxgw._core.constants import IE, FrameType, IAXSubclass
from iaxgw._core.frames import build_full, build_mini, parse_full
from iaxgw._core.ies import IEs
from iaxgw._core.trunk import pack_trunk, parse_trunk
from iaxgw.gateway.iax2.calls import RxStats
from iaxgw.gateway.iax2.events import CallProgress, DtmfReceived, TextReceived, VoiceReceived

TONE = bytes(range(160))


def pair(trunk: bool, **general: object) -> tuple[Pair, int, int]:
    ca, cb = seed_configs(qualify=None, trunk=trunk, **general)
    p = Pair(ca, cb)
    cn, bcn = setup_call(p)
    p.b.answer(bcn, p.now)
    p.run(0.1)
    return p, cn, bcn


def voice(p: Pair, cn: int, n: int) -> None:
    for _ in range(n):
        assert p.a.send_voice(cn, TONE, p.now)
        p.run(0.02)


def test_first_voice_full_then_minis() -> None:
    p, cn, bcn = pair(trunk=False)
    mark = len(p.wire)
    voice(p, cn, 10)
    sent = [d for _, dr, d, _ in p.wire[mark:] if dr == "a>b" and not iax(
        [parse_full(d)] if d[0] & 0x80 else [], IAXSubclass.ACK)]
    kinds = ["full" if d[0] & 0x80 else "mini" for d in sent if not (
        d[0] & 0x80 and parse_full(d).frametype == 6)]
    assert kinds == ["full"] + ["mini"] * 9
    first = parse_full(sent[0])
    assert (first.frametype, first.csub, first.payload) == (2, 4, TONE)
    got = p.ev(p.b, VoiceReceived)
    assert len(got) == 10 and all(v.payload == TONE and v.callno == bcn for v in got)
    ts = [v.ts for v in got]
    assert all(b - a == 20 for a, b in itertools.pairwise(ts)) and ts[0] % 20 == 0
    ch = p.b.channels()[0]
    assert ch.frames_rx == 10 and ch.lost == 0


def _trunk_datagrams(p: Pair, mark: int) -> list[bytes]:
    return [d for _, dr, d, _ in p.wire[mark:] if dr == "a>b" and d[:3] == b"\x00\x00\x01"]


def test_trunk_without_timestamps() -> None:
    p, cn, _bcn = pair(trunk=True)
    mark = len(p.wire)
    voice(p, cn, 30)
    p.run(0.1)
    dgs = _trunk_datagrams(p, mark)
    assert len(dgs) >= 25
    frames = [parse_trunk(d) for d in dgs]
    assert all(not f.timestamps and [e[0] for e in f.entries] == [cn] for f in frames)
    tts = [f.trunk_ts for f in frames]
    assert tts[0] == 0 and all(b > a for a, b in itertools.pairwise(tts))
    assert len(p.ev(p.b, VoiceReceived)) == 30
    assert p.b.stats()["trunk_datagrams_in"] == len(dgs)


def test_trunk_with_timestamps_and_mtu() -> None:
    p, cn, _bcn = pair(trunk=True, trunktimestamps=True)
    cn2 = p.a.call("office-b", "301", p.now)
    p.run(1)
    mark = len(p.wire)
    for _ in range(10):
        p.a.send_voice(cn, TONE, p.now)
        p.a.send_voice(cn2, TONE, p.now)
        p.run(0.02)
    frames = [parse_trunk(d) for d in _trunk_datagrams(p, mark)]
    assert frames and all(f.timestamps for f in frames)
    two = [f for f in frames if len(f.entries) == 2]
    assert two and {e[0] for e in two[0].entries} == {cn, cn2}
    mine = [e for f in frames for e in f.entries if e[0] == cn]
    call = p.a.call_info(cn)
    assert call is not None and mine[-1][1] == call.last_voice_ts & 0xFFFF


def test_trunk_entry_for_unknown_call_does_not_disturb_others() -> None:
    p, cn, _bcn = pair(trunk=True)
    voice(p, cn, 2)
    before = len(p.ev(p.b, VoiceReceived))
    for dg in pack_trunk([(4321, 0, b"x" * 160), (cn, 0, b"y" * 160)], 5000):
        p.b.receive_datagram(dg, p.a.local_addr, p.now)
    got = p.ev(p.b, VoiceReceived)[before:] + [e for e in events(p.b)
                                                if isinstance(e, VoiceReceived)]
    assert [v.payload for v in got] == [b"y" * 160]
    assert p.b.stats()["drop_trunk_unknown_call"] == 1


def test_trunk_receive_stats_match_rxstats() -> None:
    """The trunk path inlines RxStats.update: same jitter, loss, dup and OOO as the method."""
    p, cn, bcn = pair(trunk=True)
    voice(p, cn, 2)
    call = p.b.call_info(bcn)
    assert call is not None
    seen: list[tuple[int, int, float]] = []
    p.b.set_media_sink(lambda c, ts, payload, now: seen.append((ts, len(payload), now)))
    base = call.rx_last & 0xFFFF
    ref = RxStats()
    ref.ptime = call.rx.ptime
    start = (call.rx.frames, call.rx.max_ts)
    ref.frames, ref.max_ts = start
    ref.bytes, ref.jitter, ref.jitter_max = call.rx.bytes, call.rx.jitter, call.rx.jitter_max
    ref.prev_transit, ref.lost = call.rx.prev_transit, call.rx.lost
    ref.ooo, ref.dup = call.rx.ooo, call.rx.dup
    steps = [20, 40, 100, 80, 100, 140, 145, 200]       # gap, OOO, dup, odd spacing
    for k, step in enumerate(steps):
        now = p.now + 0.02 * k + 0.003 * (k % 3)
        for dg in pack_trunk([(cn, (base + step) & 0xFFFF, TONE)], 5000 + k,
                             timestamps=True):
            p.b.receive_datagram(dg, p.a.local_addr, now)
    for ts, n, now in seen:
        ref.update(ts, n, now)
    assert len(seen) == len(steps)
    for slot in RxStats.FIELDS:
        assert getattr(call.rx, slot) == getattr(ref, slot), slot
    assert call.rx.lost > 0 and call.rx.ooo > 0 and call.rx.dup > 0


def test_media_before_accept_and_before_full_voice_dropped() -> None:
    p, cn, _bcn = pair(trunk=False)
    p.b.receive_datagram(build_mini(cn, 100, TONE), p.a.local_addr, p.now)   # no full voice yet
    assert not [e for e in events(p.b) if isinstance(e, VoiceReceived)]
    assert p.b.stats()["drop_mini_call_not_active"] == 1
    call_b = p.b.call_info(_bcn)
    assert call_b is not None and call_b.rx_early == 1


def test_mini_ts_unwrap_across_16_bits() -> None:
    p, cn, bcn = pair(trunk=False)
    call_b = p.b.call_info(bcn)
    call_a = p.a.call_info(cn)
    assert call_b is not None and call_a is not None
    full = build_full(cn, bcn, 65480, call_b.iseqno, call_a.iseqno, FrameType.VOICE, 4, TONE)
    p.b.receive_datagram(full, p.a.local_addr, p.now)
    for ts in (65500, 65520, 4, 24, 65535 & (24 - 40)):
        p.b.receive_datagram(build_mini(cn, ts & 0xFFFF, TONE), p.a.local_addr, p.now)
    got = [e.ts for e in events(p.b) if isinstance(e, VoiceReceived)]
    assert got == [65480, 65500, 65520, 65540, 65560, 65520]
    assert p.b.channels()[0].frames_rx == 6


def test_media_sink_replaces_events() -> None:
    p, cn, bcn = pair(trunk=False)
    seen: list[tuple[int, int, bytes]] = []
    p.b.set_media_sink(lambda c, ts, pl, now: seen.append((c, ts, bytes(pl))))
    voice(p, cn, 3)
    assert [s[0] for s in seen] == [bcn] * 3 and not p.ev(p.b, VoiceReceived)


def test_dtmf_begin_end_and_text() -> None:
    p, cn, _bcn = pair(trunk=False)
    p.a.send_dtmf(cn, "7", p.now)
    p.a.send_text(cn, "hello", p.now)
    p.run(0.5)
    ab = full_frames(p.wire, "a>b")
    assert [(f.frametype, f.csub) for f in ab if f.frametype in (1, 12)] == [(12, 55), (1, 55)]
    assert [e.digit for e in p.ev(p.b, DtmfReceived)] == ["7"]
    assert [e.text for e in p.ev(p.b, TextReceived)] == ["hello"]
    text = next(f for f in ab if f.frametype == 7)
    assert text.payload == b"hello\x00"


def test_control_frames_progress_events() -> None:
    p, _cn, bcn = pair(trunk=False)
    for fn in (p.b.ringing, p.b.proceeding, p.b.progress, p.b.busy, p.b.congestion):
        fn(bcn, p.now)
    p.run(0.5)
    kinds = [e.kind for e in p.ev(p.a, CallProgress)]
    assert kinds == ["accepted", "answered", "ringing", "proceeding", "progress", "busy",
                     "congestion"]


def test_ping_lagrq_answered_with_echoed_ts_and_rr_ies() -> None:
    p, cn, _bcn = pair(trunk=False)
    for _ in range(1200):          # 24 s of voice: PING at 21 s, LAGRQ at 10 and 20 s
        p.a.send_voice(cn, TONE, p.now)
        p.run(0.02)
    ab, ba = full_frames(p.wire, "a>b"), full_frames(p.wire, "b>a")
    for req, rep, frames_req, frames_rep in (
        (IAXSubclass.PING, IAXSubclass.PONG, ab, ba),
        (IAXSubclass.LAGRQ, IAXSubclass.LAGRP, ab, ba),
        (IAXSubclass.PING, IAXSubclass.PONG, ba, ab),
    ):
        reqs = iax(frames_req, req)
        reps = iax(frames_rep, rep)
        assert reqs and {f.ts for f in reqs} <= {f.ts for f in reps}
    pong = next(f for f in iax(ba, IAXSubclass.PONG) if f.dcallno == cn)
    rr = IEs.parse(pong.payload)
    assert [k for k, _ in rr] == [IE.RR_JITTER, IE.RR_LOSS, IE.RR_PKTS, IE.RR_DELAY,
                                  IE.RR_DROPPED, IE.RR_OOO]
    assert isinstance(rr.get(IE.RR_PKTS), int) and rr.get(IE.RR_PKTS) > 1000  # type: ignore[operator]
    ns = next(n for n in p.a.netstats() if n.local_callno == cn)
    assert ns.remote["frames"] > 1000 and ns.rtt_ms >= 0
    # the PONGs are acked like any full frame
    assert any(a.ts == pong.ts for a in iax(ab, IAXSubclass.ACK))
    drain(p.a, p.now)


@pytest.mark.parametrize("trunk", [False, True])
def test_lost_first_full_voice_is_vnaked_by_media(trunk: bool) -> None:
    """docs/protocol.md §3.3 / P4: minis or trunk entries before the first full voice frame are
    dropped and VNAKed, so the sender resends the lost full frame at once instead of after its
    2 s (then 10 s) retransmission timer -- without this a call whose first voice frame was lost
    twice carried no audio for 12 s."""
    p, cn, _bcn = pair(trunk=trunk)
    assert p.a.send_voice(cn, TONE, p.now)
    lost = p.a.datagrams_to_send(p.now)           # the first (full) voice frame: lost
    assert [parse_full(d).frametype for d, _ in lost] == [FrameType.VOICE]
    voice(p, cn, 10)                               # 200 ms of minis / trunk entries
    p.run(0.1)
    got = p.ev(p.b, VoiceReceived)
    assert got and got[0].payload == TONE and p.b.channels()[0].frames_rx == len(got)
    assert len(got) >= 9, len(got)                 # all but the frames before its resend
    call_b = p.b.call_info(_bcn)                   # ... which are counted on the call
    assert call_b is not None and call_b.rx_early == 10 - (len(got) - 1), call_b.rx_early
    assert 1 <= p.b.stats()["vnak_no_full_voice"] <= 3           # rate-limited
    assert p.a.stats()["retransmissions_vnak"] >= 1
    assert p.a.stats().get("retransmissions", 0) == 0            # no timer retransmission


def test_no_vnak_for_media_before_accept_or_after_voice() -> None:
    p, cn, _bcn = pair(trunk=False)
    voice(p, cn, 5)
    assert p.b.stats().get("vnak_no_full_voice", 0) == 0


def test_trunk_transmit_counters_are_the_flushes_seen_on_the_wire() -> None:
    """``show stats``'s transmits: one timed per flush of the stream, one untimed per datagram
    past the first when the MTU split a flush; the largest trunk datagram's size.  Held against
    the datagrams on the wire: a trunkmtu that fits one entry splits every flush of two calls."""
    p, cn, _bcn = pair(trunk=True, trunkmtu=200)
    cn2 = p.a.call("office-b", "301", p.now)
    p.run(1)
    before = p.a.stats()
    mark = len(p.wire)
    for _ in range(10):
        p.a.send_voice(cn, TONE, p.now)
        p.a.send_voice(cn2, TONE, p.now)
        p.run(0.02)
    p.run(0.1)
    after = p.a.stats()
    dgs = _trunk_datagrams(p, mark)
    by_ts: dict[int, int] = {}
    for d in dgs:
        f = parse_trunk(d)
        assert len(f.entries) == 1                       # the MTU fits one entry
        by_ts[f.trunk_ts] = by_ts.get(f.trunk_ts, 0) + 1
    flushes, extra = len(by_ts), sum(n - 1 for n in by_ts.values())
    assert extra >= 9 and flushes >= 9
    assert after["trunk_untimed"] - before.get("trunk_untimed", 0) == extra
    assert after["trunk_timed"] - before.get("trunk_timed", 0) == flushes
    assert after["trunk_max_datagram_bytes"] == max(len(d) for d in dgs)
    assert after["trunk_datagrams_out"] - before.get("trunk_datagrams_out", 0) == len(dgs)
