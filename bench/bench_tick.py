"""The load tester's media tick at scale (pytest-benchmark; ``python3 bench/ratios.py``).

One 20 ms tick of ``CALLS`` answered, trunked echo-test calls, as ``sim.load.loadtest`` sends it:
every call's ``TxProbe`` (its own one-second cycle of 50 distinct 160-byte payloads, each frame
stamped with its counter) gives its next frame, the frames go into the trunk of their peer and the
trunk is flushed into datagrams.  The cycles of 2,000 calls (16 MB) do not fit the caches, as in a
real run.

- ``c``: ``tx_tick_send`` (one compiled pass: each frame counted and written, stamped, straight
  into its trunk entry) + flush;
- ``split``: ``tx_tick`` (a ``(callno, stamped payload)`` list) then ``send_trunk_voice`` +
  flush, both compiled: what the load tester did before.

Both runs check that they put out the same datagrams.  Per call: the round time / ``CALLS``.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import pytest

from iaxgw._core._select import flavours

TRUNK = {m.__name__.rsplit("_", 1)[-1]: m for m in flavours("trunk", "probe", "media")}
pytestmark = pytest.mark.skipif("c" not in TRUNK, reason="compiled core not built")
CALLS = 2000
CYCLE = 50
PEER = ("127.0.0.20", 4569)


class _Stream:
    def __init__(self, mux: Any) -> None:
        self.mux = mux
        self.timer = None


def _setup() -> tuple[Any, list[Any], dict[int, Any], dict[Any, Any]]:
    mod = TRUNK["c"]
    rng = np.random.default_rng(2000)
    calls: dict[int, Any] = {}
    probes = []
    for i in range(CALLS):
        callno = 2 + i
        c = mod.CallMedia()
        c.callno, c.state, c.codec, c.svoiceformat = callno, 4, 4, 4
        c.trunk, c.addr, c.last_voice_ts, c.nextpred = True, PEER, 0, 20
        calls[callno] = c
        cycle = [rng.integers(0, 256, 160, dtype=np.uint8).tobytes() for _ in range(CYCLE)]
        p = mod.TxProbe(cycle, 20, deque(maxlen=8), offset=i % CYCLE)
        p.callno = callno
        p.stamp = True
        probes.append(p)
    trunks = {PEER: _Stream(mod.TrunkMux(1240, False))}
    return mod, probes, calls, trunks


@pytest.mark.parametrize("impl", ["c", "split"])
def test_tick(benchmark: Any, impl: str) -> None:
    benchmark.group = f"load tester tick: {CALLS} stamped calls into a trunk + flush"
    benchmark.extra_info["calls"] = CALLS
    mod, probes, calls, trunks = _setup()
    mux = trunks[PEER].mux
    clock = {"now": 10.0}

    def run() -> int:
        now = clock["now"]
        clock["now"] = now + 0.02
        if impl == "c":
            rest, _ = mod.tx_tick_send(probes, now, calls, now, trunks, [])
        else:
            rest, _ = mod.send_trunk_voice(calls, mod.tx_tick(probes, now), now, trunks, [])
        assert not rest
        return len(mux.flush(1000))

    assert benchmark(run) == -(-CALLS // 7)


def test_tick_outputs_agree() -> None:
    """The two ways put out the same datagrams, tick after tick."""
    got = []
    for impl in ("c", "split"):
        mod, probes, calls, trunks = _setup()
        sent = []
        for k in range(3):
            now = 10.0 + 0.02 * k
            if impl == "c":
                mod.tx_tick_send(probes, now, calls, now, trunks, [])
            else:
                mod.send_trunk_voice(calls, mod.tx_tick(probes, now), now, trunks, [])
            sent.append(trunks[PEER].mux.flush(k))
        got.append(sent)
    assert got[0] == got[1]
