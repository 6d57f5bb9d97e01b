"""Trunk speed: compiled core vs pure-Python twin (pytest-benchmark; ``python3 bench/ratios.py``).

Targets (compiled vs twin): demux of a full trunk datagram (7 × 160-byte entries, each variant)
>= 20x; one 20 ms tick for 200 calls (200 × ``add`` + ``flush``) >= 20x.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from iaxgw._core._select import both

TRUNK = {m.__name__.rsplit("_", 1)[-1]: m for m in both("trunk")}
IMPL_IDS = sorted(TRUNK)
RNG = np.random.default_rng(1240)
PAYLOADS = [RNG.integers(0, 256, 160, dtype=np.uint8).tobytes() for _ in range(200)]
CALLS = [(16384 + 7 * i, 48_000 + 20 * i, PAYLOADS[i]) for i in range(200)]


def _datagram(ts: bool) -> bytes:
    first = TRUNK["py"].pack_trunk(CALLS[:8], 123_456, timestamps=ts, mtu=1240)[0]
    assert len(first) == 8 + 7 * (166 if ts else 164)
    return first  # type: ignore[no-any-return]


@pytest.mark.parametrize("impl", IMPL_IDS)
@pytest.mark.parametrize("ts", [False, True], ids=["nots", "ts"])
def test_demux(benchmark: Any, ts: bool, impl: str) -> None:
    benchmark.group = f"trunk demux 7x160 ({'with' if ts else 'no'} per-call ts)"
    data = _datagram(ts)
    feed = TRUNK[impl].TrunkDemux().feed

    def run() -> int:
        return len(feed(data).entries)

    assert benchmark(run) == 7


@pytest.mark.parametrize("impl", IMPL_IDS)
def test_mux_tick(benchmark: Any, impl: str) -> None:
    benchmark.group = "trunk mux tick: 200 x add + flush"
    mux = TRUNK[impl].TrunkMux(mtu=1240)
    add, flush = mux.add, mux.flush

    def run() -> int:
        for callno, ts, payload in CALLS:
            add(callno, ts, payload)
        return len(flush(20))

    assert benchmark(run) == 29  # ceil(200 / 7)


@pytest.mark.parametrize("impl", IMPL_IDS)
def test_pack_tick(benchmark: Any, impl: str) -> None:
    benchmark.group = "trunk pack_trunk tick: 200 calls"
    pack = TRUNK[impl].pack_trunk
    assert len(benchmark(pack, CALLS, 20)) == 29
