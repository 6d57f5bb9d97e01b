"""Load-test measurement cost (pytest-benchmark).

Run: ``python3 -m pytest bench/bench_metrics.py --benchmark-only -p no:randomly``
(``--benchmark-disable`` runs each once as a smoke test).

What matters:

* ``on_rx`` / ``on_tx`` per frame: 2,000 calls x 50 frames/s each way is 200k calls a second, so
  each must stay around a microsecond.  The benchmarks time 1,000 frames per round; divide by
  1,000.
* ``analyze`` per call-second (50 frames of echoed audio: decode, tone pairs, silence, marker
  correlation) and per-call ``finish``: budget for N calls = N x this figure per second of run.
"""

from __future__ import annotations

import random
from typing import Any

from iaxgw.sim.load import signature as sig
from iaxgw.sim.load.metrics import CallStats
from iaxgw.sim.report.report import LoadStats

PLAN = sig.default_plan()
DET = sig.Detector(PLAN)
FRAMES = 1000


def _arrivals(n: int, index: int = 3) -> list[tuple[int, float, bytes]]:
    rng = random.Random(index)
    p = PLAN.payloads(index)
    return [(k * 20, 1.0 + 0.02 * k + 0.1 + rng.uniform(0, 0.005), p[k % 50]) for k in range(n)]


def _bench_rx(benchmark: Any, mode: str) -> None:
    frames = _arrivals(FRAMES)

    def setup() -> tuple[tuple[CallStats], dict[str, Any]]:
        c = CallStats(3, mode=mode, detector=DET,  # type: ignore[arg-type]
                      inline_analysis=False)
        return (c,), {}

    def run(c: CallStats) -> None:
        rx = c.on_rx
        for ts, at, p in frames:
            rx(ts, at, p)

    benchmark.pedantic(run, setup=setup, rounds=200)


def test_on_rx_1000_frames_echo(benchmark: Any) -> None:
    """Per-frame receive path with audio kept for batch analysis (as under LoadStats: no inline
    analysis; the oldest pending audio is dropped every 100 frames here)."""
    benchmark.group = "per frame x1000"
    _bench_rx(benchmark, "echo")


def test_on_rx_1000_frames_no_audio(benchmark: Any) -> None:
    benchmark.group = "per frame x1000"
    _bench_rx(benchmark, "none")


def test_on_tx_1000_frames(benchmark: Any) -> None:
    benchmark.group = "per frame x1000"
    c = CallStats(3, mode="echo", detector=DET)

    def run() -> bytes:
        tx = c.on_tx
        p = b""
        for k in range(FRAMES):
            p = tx(k * 20, k * 0.02)
        return p

    assert len(benchmark(run)) == 160


def _analyze_setup(mode: str) -> Any:
    frames = _arrivals(50 * 4)

    def setup() -> tuple[tuple[CallStats], dict[str, Any]]:
        c = CallStats(3, mode=mode, detector=DET)  # type: ignore[arg-type]
        for k in range(200):
            c.on_tx(k * 20, 1.0 + 0.02 * k)
        for ts, at, p in frames[:150]:
            c.on_rx(ts, at, p)
        c.analyze()
        for ts, at, p in frames[150:]:
            c.on_rx(ts, at, p)
        return (c,), {}

    return setup


def test_analyze_call_second_echo(benchmark: Any) -> None:
    """One second of echoed audio: decode + tone pairs + silence + marker correlation."""
    benchmark.group = "batch per call-second"
    benchmark.pedantic(lambda c: c.analyze(), setup=_analyze_setup("echo"), rounds=200)


def test_analyze_call_second_tone(benchmark: Any) -> None:
    """Tone mode: no marker correlation."""
    benchmark.group = "batch per call-second"
    benchmark.pedantic(lambda c: c.analyze(), setup=_analyze_setup("tone"), rounds=200)


def test_tones_25_windows(benchmark: Any) -> None:
    benchmark.group = "batch per call-second"
    pcm = sig.decode(b"".join(PLAN.payloads(9)), "ulaw").astype(float)
    res = benchmark(DET.tones, pcm, PLAN.signature(9).sid)
    assert res.own >= 20


def test_tick_200_calls(benchmark: Any) -> None:
    """The collector's once-a-second work for 200 echo calls (analysis included)."""
    benchmark.group = "tick"
    frames = _arrivals(50)

    def setup() -> tuple[tuple[LoadStats], dict[str, Any]]:
        st = LoadStats(mode="echo")
        for i in range(200):
            c = st.new_call(0.0, i)
            c.on_setup_event("ANSWER", 0.1)
            for k in range(50):
                c.on_tx(k * 20, 1.0 + 0.02 * k)
            for ts, at, p in frames:
                c.on_rx(ts, at, p)
        return (st,), {}

    benchmark.pedantic(lambda st: st.tick(2.0), setup=setup, rounds=5)
