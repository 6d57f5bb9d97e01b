"""The impairment's voice frame census (``gateway.driver.impair.VoiceCensus``): the truth the load
tester's loss is held against (tests/test_loss_truth_asterisk.py runs it against Asterisk)."""

from __future__ import annotations

import asyncio
import random

import pytest

from iaxgw._core.frames import build_full, build_mini
from iaxgw._core.trunk import pack_trunk
from iaxgw.gateway.driver.impair import ImpairedLink, Impairment, ImpairSpec, voice_callnos

PEER = ("127.0.0.10", 4569)


@pytest.mark.parametrize("timestamps", [False, True])
def test_voice_callnos_of_trunk_datagrams(timestamps: bool) -> None:
    entries = [(c, 20 * i, bytes([c & 0xFF]) * 160) for i, c in enumerate((2, 16385, 7, 32767))]
    (dgram,) = pack_trunk(entries, 1234, timestamps)
    assert voice_callnos(dgram) == [2, 16385, 7, 32767]
    # a cut-off last entry is not counted; the header alone holds none
    assert voice_callnos(dgram[:-1]) == [2, 16385, 7]
    assert voice_callnos(dgram[:8]) == []
    # several datagrams when the MTU is small: every entry once
    many = pack_trunk([(c, 0, b"\xff" * 160) for c in range(1, 21)], 0, timestamps, mtu=400)
    assert len(many) > 1 and [c for d in many for c in voice_callnos(d)] == list(range(1, 21))


def test_voice_callnos_of_mini_full_and_others() -> None:
    assert voice_callnos(build_mini(300, 40, b"\x7f" * 160)) == [300]
    voice = build_full(4001, 9, 100, 3, 2, 2, 4, b"\x7f" * 160)
    assert voice_callnos(voice) == [4001]
    # a resend of a full voice frame is the same frame again: not counted twice
    assert voice_callnos(build_full(4001, 9, 100, 3, 2, 2, 4, b"\x7f" * 160,
                                    retransmit=True)) == []
    assert voice_callnos(build_full(4001, 9, 100, 3, 2, 6, 2)) == []       # IAX PING
    assert voice_callnos(b"\x00\x00\x80\x05" + b"\x00" * 20) == []        # video mini
    assert voice_callnos(b"\x00\x00\x02\x00" + b"\x00" * 20) == []        # other meta
    assert voice_callnos(b"\x01\x02") == [] and voice_callnos(b"") == []


def test_census_counts_frames_not_datagrams() -> None:
    """Trunk datagrams of 10 calls and signalling datagrams between them, 3 % dropped: the
    census's per-call and total counts equal the frames of the datagrams that were dropped."""
    imp = Impairment(ImpairSpec.parse("loss=3%,dup=1%,seed=5,dir=send"))
    calls = list(range(100, 110))
    truth = {c: [0, 0] for c in calls}
    positions: dict[int, list[int]] = {c: [] for c in calls}
    ping = build_full(100, 9, 0, 0, 0, 6, 2)
    rng = random.Random(1)
    for i in range(3000):
        live = [c for c in calls if rng.random() < 0.9]     # not every call in every datagram
        (dgram,) = pack_trunk([(c, 0, b"\xd5" * 160) for c in live], 20 * i, mtu=2000)
        copies = len(imp.decide("send"))
        imp.census.count("send", dgram, PEER, copies)
        for c in live:
            truth[c][0] += 1
            truth[c][1] += copies == 0
            if copies == 0:
                positions[c].append(truth[c][0] - 1)
        if i % 7 == 0:
            imp.census.count("send", ping, PEER, len(imp.decide("send")))
    for c in calls:
        seen, dropped, delivered = imp.census.call("send", PEER, c)
        assert (seen, dropped) == tuple(truth[c])
        assert delivered >= seen - dropped
        # the first n frames: the drops at offered positions below n, whatever n
        for n in (0, 1, 150, seen // 3, seen, seen + 50):
            want = sum(1 for i in positions[c] if i < n)
            assert imp.census.call_prefix("send", PEER, c, n) == (min(n, seen), want)
    assert sum(map(len, positions.values())) > 0
    snap = imp.snapshot()["send"]
    frames = sum(t[0] for t in truth.values())
    dropped = sum(t[1] for t in truth.values())
    assert snap["voice"]["frames"] == frames and snap["voice"]["dropped"] == dropped
    assert snap["voice"]["loss_pct"] == pytest.approx(100.0 * dropped / frames, abs=1e-3)
    # the datagram counters count the PINGs too: a different figure
    assert snap["seen"] == 3000 + len(range(0, 3000, 7))
    assert imp.census.call("recv", PEER, 100) == (0, 0, 0)


def test_link_feeds_the_census_both_ways() -> None:
    """Through ``ImpairedLink.pass_on`` (as the server drives it): the unimpaired direction is
    counted too (all delivered), duplicates as extra delivered copies."""
    loop = asyncio.new_event_loop()
    try:
        imp = Impairment(ImpairSpec.parse("loss=10%,dup=5%,seed=2,dir=recv"))
        link = ImpairedLink(imp, loop)
        got: list[bytes] = []
        for i in range(500):
            link.pass_on("recv", build_mini(77, i, b"\x11" * 160), PEER,
                         lambda d, a: got.append(d))
            link.pass_on("send", build_mini(5, i, b"\x11" * 160), PEER, lambda d, a: None)
        seen, dropped, delivered = imp.census.call("recv", PEER, 77)
        assert seen == 500 and dropped == imp.counters("recv").dropped > 0
        assert delivered == len(got) == 500 - dropped + imp.counters("recv").duplicated
        assert imp.census.call("send", PEER, 5) == (500, 0, 500)
        snap = imp.snapshot()
        assert "send" not in snap and snap["recv"]["voice"]["dropped"] == dropped
    finally:
        loop.close()


def test_far_end_echo_share_from_the_census() -> None:
    """``far_end_echo_pct``: frames the far end sent / copies delivered to it; an echo that
    drops half of what one call received shows, the link's own loss does not."""
    imp = Impairment(ImpairSpec.parse("loss=10%,seed=4,dir=send"))
    assert imp.census.far_end_echo_pct() is None
    delivered = 0
    for i in range(400):
        copies = len(imp.decide("send"))
        imp.census.count("send", build_mini(5, i, b"\x11" * 160), PEER, copies)
        delivered += copies
        if copies and (i % 2 or i < 200):          # the far end echoes only half of the last 200
            imp.census.count("recv", build_mini(9, i, b"\x11" * 160), PEER, 1)
    echoed = imp.census.call("recv", PEER, 9)[0]
    assert 0 < delivered < 400 and echoed < delivered
    assert imp.census.far_end_echo_pct() == pytest.approx(100.0 * echoed / delivered, abs=1e-3)
    assert 70.0 < imp.census.far_end_echo_pct() < 80.0


def test_echo_missing_counts_a_duplicate_once() -> None:
    """The round trip's missing frames: a frame that came back twice is one frame back, not
    two (it hid a lost one before); only answered calls count; nothing sent is n/a."""
    from types import SimpleNamespace

    from iaxgw.sim.report.report import echo_missing_pct

    def rec(outcome: str, tx: int, rx: int, dup: int) -> SimpleNamespace:
        return SimpleNamespace(outcome=outcome, tx_frames=tx, rx_frames=rx, duplicates=dup)

    assert echo_missing_pct([rec("ANSWERED", 100, 95, 5)]) == 10.0
    assert echo_missing_pct([rec("ANSWERED", 100, 95, 5), rec("FAILED", 50, 0, 0),
                             rec("ANSWERED", 100, 100, 0)]) == 5.0
    assert echo_missing_pct([rec("FAILED", 50, 0, 0)]) is None


def test_forward_return_split_from_the_receive_report() -> None:
    """Forward loss from the far end's RR: what it received of what we had sent at our PING
    (1 - frames / sent), or lost / (frames + lost) when that count is unknown; the return leg
    is the rest of the round trip; a report of 1 frame (Asterisk without jitterbuffer) means
    n/a."""
    from types import SimpleNamespace

    from iaxgw.sim.load.live import _loss_row
    from iaxgw.sim.load.metrics import CallStats, return_loss_pct
    from iaxgw.sim.report.report import _forward_pct, _return_pct

    assert return_loss_pct(100.0 * (1 - 0.97 * 0.98), 3.0) == pytest.approx(2.0)
    assert return_loss_pct(1.0, 3.0) == 0.0          # never negative
    assert return_loss_pct(5.0, None) is None and return_loss_pct(5.0, 100.0) is None
    st = CallStats(0, mode="echo")
    assert st.loss_forward_pct is None
    st.remote_rr = {"frames": 1, "lost": 0, "loss_pct": 0}
    assert st.loss_forward_pct is None
    st.remote_rr = {"frames": 485, "lost": 15, "loss_pct": 1}   # its own pct: a moving average
    assert st.loss_forward_pct == pytest.approx(3.0)
    assert st.rr_frames == 500
    # Asterisk's lost count has play-out slots no frame was sent for: 485 of 490 sent, not 500
    st.remote_rr_sent = 490
    assert st.loss_forward_pct == pytest.approx(100.0 * 5 / 490) and st.rr_frames == 490
    st.remote_rr = {"frames": 495, "lost": 0}        # duplicates counted: never below 0
    assert st.loss_forward_pct == 0.0
    st.remote_rr_sent = 10                             # too few to mean anything: the counts
    st.remote_rr = {"frames": 485, "lost": 15}
    assert st.loss_forward_pct == pytest.approx(3.0) and st.rr_frames == 500
    recs = [SimpleNamespace(loss_forward_pct=3.0, tx_frames=500, loss_method="stamp"),
            SimpleNamespace(loss_forward_pct=1.0, tx_frames=1500, loss_method="stamp")]
    assert _forward_pct(recs) == pytest.approx(1.5)  # type: ignore[arg-type]
    assert _return_pct(recs, 100.0 * (1 - 0.985 * 0.99)) == pytest.approx(1.0)  # type: ignore[arg-type]
    recs.append(SimpleNamespace(loss_forward_pct=None, tx_frames=500, loss_method="stamp"))
    assert _forward_pct(recs) is None and _return_pct(recs, 3.0) is None  # type: ignore[arg-type]
    row = _loss_row({"loss_pct": 4.0, "loss_method": "stamp", "loss_forward_pct": None,
                     "impair": {"send": {"voice": {"loss_pct": 2.5}}}})
    assert "forward/return n/a" in row and "send 2.50 %" in row
    row = _loss_row({"loss_pct": 4.0, "loss_method": "stamp", "loss_forward_pct": 2.0,
                     "loss_return_pct": 2.04})
    assert "forward 2.00 %" in row and "return 2.04 %" in row
