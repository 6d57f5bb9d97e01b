"""Per-call metrics: RFC 3550 jitter, timestamp loss, setup timing, E-model, trunk counters."""

from __future__ import annotations

import math
import random

import pytest
from iaxgw.sim.metrics import (
    BPL_NO_PLC,
    BPL_PLC,
    CallStats,
    TrunkCounters,
    TsUnwrap,
    delay_impairment,
    mos_from_r,
    one_way_delay_ms,
    r_factor,
    unwrap16,
)

PAYLOAD = b"\xff" * 160


def _plain(**kw: object) -> CallStats:
    return CallStats(0, mode="none", **kw)  # type: ignore[arg-type]


# -- jitter ------------------------------------------------------------------------------------


def test_jitter_hand_computed_rfc3550() -> None:
    # ts (ms) and arrivals (ms): transit 100, 105, 98, 105 -> |D| = 5, 7, 7
    # J1 = 5/16 = 0.3125; J2 = 0.3125 + (7 - 0.3125)/16 = 0.73046875;
    # J3 = 0.73046875 + (7 - 0.73046875)/16 = 1.1223144531
    c = _plain()
    for ts, arr in ((0, 100), (20, 125), (40, 138), (60, 165)):
        c.on_rx(ts, arr / 1000.0, PAYLOAD)
    assert c.jitter == pytest.approx(1.1223144531, abs=1e-6)
    assert c.jitter_max == pytest.approx(1.1223144531, abs=1e-6)
    assert c.jitter_mean == pytest.approx((0.3125 + 0.73046875 + 1.1223144531) / 3, abs=1e-6)


def test_jitter_zero_for_constant_delay() -> None:
    c = _plain()
    for k in range(200):
        c.on_rx(k * 20, 3.0 + k * 0.02 + 0.150, PAYLOAD)
    assert c.jitter == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("x_ms", [2.0, 10.0, 30.0])
def test_jitter_uniform_noise(x_ms: float) -> None:
    """Arrival noise n ~ U(-X, X) i.i.d.: D = n_i - n_(i-1) has a triangular distribution on
    [-2X, 2X], so E|D| = 2X/3 and J (an average of |D|) converges to 2X/3.

    Var|D| = (2X)^2/18; the EWMA with gain 1/16 keeps about 1/31 of it (neighbouring D are
    correlated, which only shrinks it), so sd(J) <= 2X / (sqrt(18) sqrt(31)) ~ 0.085 X.  The
    final J must lie within 4 sd; the mean of J over 20,000 frames within 3 %."""
    rng = random.Random(int(x_ms * 10))
    c = _plain()
    for k in range(20000):
        c.on_rx(k * 20, 10.0 + k * 0.02 + rng.uniform(-x_ms, x_ms) / 1000.0, PAYLOAD)
    expect = 2.0 * x_ms / 3.0
    assert c.jitter == pytest.approx(expect, abs=4 * 0.085 * x_ms)
    assert c.jitter_mean == pytest.approx(expect, rel=0.03)
    assert c.jitter_max > c.jitter_mean


# -- loss, duplicates, reordering, 16-bit wrap ---------------------------------------------


def test_unwrap16() -> None:
    assert unwrap16(100, 0) == 100
    assert unwrap16(0x0010, 0xFFF0) == 0x10010          # forward across the wrap
    assert unwrap16(0xFFF0, 0x10010) == 0xFFF0          # a late frame from before the wrap
    assert unwrap16(0x1234, 5 * 0x10000 + 0x1000) == 5 * 0x10000 + 0x1234
    u = TsUnwrap(60000)                              # seeded by a full frame's timestamp
    seen = [u(t & 0xFFFF) for t in range(60000, 200000, 20)]
    assert seen == list(range(60000, 200000, 20))


def test_loss_across_16bit_wrap() -> None:
    start = 0xFFFF - 20 * 30           # wraps after 30 frames
    n = 400
    dropped = {5, 29, 30, 31, 200, 399 - 1}
    u = TsUnwrap(start)
    c = _plain()
    for k in range(n):
        if k in dropped:
            continue
        ts = u((start + 20 * k) & 0xFFFF)
        c.on_rx(ts, 1.0 + 0.02 * k, PAYLOAD)
    assert c.expected == n
    assert c.lost == len(dropped)
    assert c.loss_pct == pytest.approx(100.0 * len(dropped) / n)
    assert c.duplicates == 0 and c.out_of_order == 0


def test_duplicates_and_reordering() -> None:
    c = _plain()
    order = [0, 1, 2, 4, 3, 5, 5, 6, 8, 9, 2, 10]      # 3 late, 5 and 2 duplicated, 7 lost
    for i, k in enumerate(order):
        c.on_rx(k * 20, i * 0.02, PAYLOAD)
    assert c.duplicates == 2
    assert c.out_of_order == 1
    assert c.expected == 11
    assert c.lost == 1
    assert c.rx_frames == len(order)


def test_loss_when_first_frames_missing_is_not_counted() -> None:
    # expected is measured over what arrived: a stream starting at ts 1000 has no loss
    c = _plain()
    for k in range(50, 100):
        c.on_rx(k * 20, k * 0.02, PAYLOAD)
    assert (c.expected, c.lost) == (50, 0)


def test_no_media_gives_none() -> None:
    c = _plain()
    assert c.loss_pct is None and c.jitter_mean is None
    assert c.quality() == (None, None, None)
    rec = c.finish(1.0)
    assert rec.loss_pct is None and rec.mos is None and rec.jitter_ms is None


# -- E-model ----------------------------------------------------------------------------------


def test_emodel_known_points() -> None:
    assert r_factor(0.0) == pytest.approx(93.2)
    assert mos_from_r(93.2) == pytest.approx(4.41, abs=0.005)
    # 5 % loss, G.711 with PLC: Ie,eff = 95 * 5 / 30.1 = 15.78 -> R = 77.42, MOS 3.92
    assert r_factor(5.0, bpl=BPL_PLC) == pytest.approx(77.42, abs=0.01)
    assert mos_from_r(r_factor(5.0)) == pytest.approx(3.92, abs=0.01)
    # without PLC (Bpl 4.3): Ie,eff = 51.08 -> R = 42.12, MOS 2.17
    assert r_factor(5.0, bpl=BPL_NO_PLC) == pytest.approx(42.12, abs=0.01)
    assert mos_from_r(r_factor(5.0, bpl=BPL_NO_PLC)) == pytest.approx(2.17, abs=0.01)


def test_emodel_delay() -> None:
    assert delay_impairment(100.0) == pytest.approx(2.4)
    # past the 177.3 ms knee: 0.024 * 200 + 0.11 * 22.7
    assert delay_impairment(200.0) == pytest.approx(7.297)
    assert r_factor(0.0, 200.0) == pytest.approx(93.2 - 7.297)
    assert one_way_delay_ms(100.0, 5.0) == pytest.approx(60.0)       # 100/2 + 2 x 5
    assert one_way_delay_ms(None, 5.0) is None
    assert r_factor(0.0, None) == r_factor(0.0)


def test_emodel_clamps() -> None:
    assert r_factor(100.0, 2000.0) == 0.0
    assert mos_from_r(0.0) == 1.0
    assert mos_from_r(-5.0) == 1.0
    assert mos_from_r(100.0) == pytest.approx(4.5)
    assert mos_from_r(120.0) == 4.5
    rs = [mos_from_r(r) for r in range(0, 101)]
    assert all(1.0 <= m <= 4.5 for m in rs)
    assert rs == sorted(rs)


def test_call_quality_uses_loss_and_rtt() -> None:
    c = _plain()
    for k in range(100):
        if k % 20 == 7:
            continue                      # 5 % loss
        c.on_rx(k * 20, k * 0.02, PAYLOAD)
    delay, r, mos = c.quality()
    assert delay is None                  # no RTT known: Id = 0
    assert r == pytest.approx(r_factor(5.0))
    c.on_rtt(300.0)
    delay, r, mos = c.quality()
    assert delay == pytest.approx(150.0)  # jitter is zero here
    assert r == pytest.approx(r_factor(5.0, 150.0))
    assert mos == pytest.approx(mos_from_r(r_factor(5.0, 150.0)))


# -- setup ------------------------------------------------------------------------------------


def test_setup_times_and_outcome() -> None:
    c = _plain()
    c.on_setup_event("NEW", 10.0)
    c.on_setup_event("ACCEPT", 10.012)
    c.on_setup_event("RINGING", 10.050)
    c.on_setup_event("ANSWER", 11.5)
    c.on_setup_event("HANGUP", 20.0, "Normal Clearing", 16)
    rec = c.finish(20.0)
    assert rec.outcome == "ANSWERED"
    assert rec.accept_ms == pytest.approx(12.0)
    assert rec.ringing_ms == pytest.approx(50.0)
    assert rec.answer_ms == pytest.approx(1500.0)
    assert rec.duration_s == pytest.approx(8.5)
    assert (rec.cause, rec.cause_code) == ("Normal Clearing", 16)
    assert rec.audio == "n/a"


def test_failures_and_defaults() -> None:
    c = _plain()
    c.on_setup_event("NEW", 0.0)
    rec = c.finish(1.0, "REJECT", "No authority found")
    assert (rec.outcome, rec.cause, rec.answer_ms) == ("REJECT", "No authority found", None)
    c = _plain()
    c.on_setup_event("NEW", 0.0)
    assert c.finish(32.0).outcome == "TIMEOUT"                 # nothing came back
    c = _plain()
    c.on_setup_event("NEW", 0.0)
    c.on_setup_event("ACCEPT", 0.1)
    assert c.finish(60.0).outcome == "NO_ANSWER"
    c = _plain()
    c.on_setup_event("NEW", 0.0)
    c.on_setup_event("BUSY", 0.2)
    c.on_setup_event("ANSWER", 0.3)                             # too late to count
    assert c.finish(1.0).outcome == "BUSY"
    with pytest.raises(ValueError):
        c.on_setup_event("BOGUS", 1.0)


def test_on_tx_returns_cycle_and_counts() -> None:
    c = CallStats(11, mode="echo")
    sent = [c.on_tx(k * 20, k * 0.02) for k in range(120)]
    assert sent[:50] == c.payloads and sent[50:100] == c.payloads
    assert c.tx_frames == 120 and c.tx_bytes == 120 * 160
    assert list(c.tx_marks) == pytest.approx([0.0, 1.0, 2.0])
    rec = c.finish(2.4)
    assert rec.tx_pps == pytest.approx(50.0)
    assert rec.tx_bytes_per_s == pytest.approx(8000.0)


# -- trunk counters ---------------------------------------------------------------------------


def test_trunk_saving_matches_field_notes() -> None:
    """7 G.711 calls per trunk datagram: -85 % datagrams, about -12 % wire bytes (B1)."""
    t = TrunkCounters()
    for _ in range(10):
        t.add("tx", 8 + 7 * (4 + 160), "trunk", subframes=7, voice_bytes=7 * 160)
    s = t.saving("tx")
    assert s["datagrams_pct"] == pytest.approx(100 * (1 - 10 / 70))
    assert s["bytes_pct"] == pytest.approx(100 * (1 - (11560 + 280) / (70 * 192)))
    assert 11.0 < s["bytes_pct"] < 13.0          # type: ignore[operator]
    assert t.saving("rx") == {"datagrams_pct": None, "bytes_pct": None}
    t.add("rx", 164, "mini")
    t.add("rx", 40, "full")
    assert t.datagrams == {"tx": 10, "rx": 2}
    assert t.kinds[("rx", "mini")] == 1 and t.kinds[("rx", "full")] == 1
    assert t.saving("rx")["datagrams_pct"] is None
    assert math.isclose(t.copy().bytes["tx"], t.bytes["tx"])
