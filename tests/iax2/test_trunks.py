"""The endpoint's trunk streams on their own: the flush grid, trunk timestamps, MTU splits and
the counters ``iax2 show stats`` reads."""

from __future__ import annotations

from collections import Counter
from typing import Any

from iaxgw._core.trunk import parse_trunk
from iaxgw.gateway.conf.model import General
from iaxgw.gateway.iax2.timers import TimerQueue
from iaxgw.gateway.iax2.trunks import TRUNK_GRID_KEEP, TrunkStreams

PEER = ("127.0.0.10", 4569)


def streams(**general: Any) -> tuple[TrunkStreams, TimerQueue, Counter[str]]:
    timers = TimerQueue(0.025)
    stats: Counter[str] = Counter()
    return TrunkStreams(General(**general), [], timers, stats), timers, stats


def run_until(timers: TimerQueue, t: float) -> None:
    while (d := timers.deadline()) is not None and d <= t:
        timers.fire_due(d)


def sent(ts: TrunkStreams) -> list[Any]:
    out = [parse_trunk(d) for d, addr in ts.out if addr == PEER]
    ts.out.clear()
    return out


def test_a_stream_flushes_half_a_period_after_its_first_voice_then_every_period() -> None:
    ts, timers, stats = streams(trunkfreq=20)
    st = ts.stream(PEER)
    assert ts.stream(PEER) is st and ts.by_addr == {PEER: st}
    st.mux.add(300, 0, b"\xff" * 160)
    ts.start(st, 1.0)
    run_until(timers, 1.0099)
    assert not ts.out
    run_until(timers, 1.010)
    (first,) = sent(ts)
    assert first.trunk_ts == 0 and len(first.entries) == 1      # the stream's epoch
    for k in range(1, 4):
        st.mux.add(300, 20 * k, b"\xff" * 160)
        run_until(timers, 1.010 + 0.020 * k)
        assert [f.trunk_ts for f in sent(ts)] == [20 * k]
    assert stats["trunk_datagrams_out"] == 4 and stats["trunk_timed"] == 4


def test_an_idle_stream_keeps_its_grid_a_while_then_restarts_its_epoch() -> None:
    ts, timers, _ = streams(trunkfreq=20)
    st = ts.stream(PEER)
    st.mux.add(300, 0, b"\xff" * 160)
    ts.start(st, 0.0)
    run_until(timers, 0.010)
    sent(ts)
    run_until(timers, 0.010 + TRUNK_GRID_KEEP / 2)    # empty ticks: the grid is kept
    assert st.timer is not None and st.timer.alive and timers.deadline() == st.next_at
    assert not ts.out
    run_until(timers, 1.0)                            # then it stops
    assert timers.deadline() is None
    st.mux.add(300, 0, b"\xff" * 160)
    ts.start(st, 7.0)                                 # > 5 s idle: a new epoch, ts 0 again
    run_until(timers, 7.010)
    assert [f.trunk_ts for f in sent(ts)] == [0]


def test_flush_all_sends_now_and_the_mtu_splits_a_flush() -> None:
    ts, timers, stats = streams(trunkfreq=20, trunkmtu=400)
    st = ts.stream(PEER)
    for callno in range(300, 305):
        st.mux.add(callno, 0, b"\xff" * 160)
    ts.start(st, 2.0)
    assert ts.flush_all(2.0) == 3                     # 5 x 164-byte entries under a 400 MTU
    frames = sent(ts)
    assert sum(len(f.entries) for f in frames) == 5
    assert stats["trunk_untimed"] == 2 and stats["trunk_max_datagram_bytes"] <= 400
    assert ts.flush_all(2.001) == 0                   # nothing left
    run_until(timers, 2.0099)                         # the grid moved half a period on
    assert not ts.out and st.timer is not None and st.timer.alive
