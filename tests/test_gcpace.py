"""The garbage-collector pacing of the media loops (``gateway/driver/gcpace.py``: the load
tester's and serve's) and the untracked receive tuples it relies on."""

from __future__ import annotations

import gc

import pytest

from iaxgw._core._select import both
from iaxgw.gateway.driver.gcpace import GcPacer

PROBE = both("probe")


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_pacer_collects_only_when_asked_and_restores_the_collector() -> None:
    was_enabled = gc.isenabled()
    pacer = GcPacer()
    pacer.start()
    try:
        assert not gc.isenabled() and pacer.full_collections == 1
        # young garbage cycles: left alone until idle() finds enough allocated
        gc.collect(0)
        for _ in range(50):
            Cycle()
        assert gc.get_count()[0] >= 50
        pacer.idle()                                # below GEN0_LIMIT: nothing
        assert gc.get_count()[0] >= 50
        for _ in range(GcPacer.GEN0_LIMIT):
            Cycle()
        pacer.idle()
        assert gc.get_count()[0] < 50
        # step(): survivors are frozen (not scanned by later collections)
        keep = [Cycle() for _ in range(100)]
        frozen0 = gc.get_freeze_count()
        pacer.step()
        assert gc.get_freeze_count() >= frozen0 + 100 and pacer.steps == 1
        # the process grew past grow_limit: a full collection unfreezes and collects
        pacer.grow_limit = -1
        pacer.step()
        assert pacer.full_collections == 2 and pacer.full_ms_max > 0.0
        del keep
    finally:
        pacer.stop()
    assert gc.isenabled() == was_enabled
    assert gc.get_freeze_count() == 0
    pacer.stop()                                    # twice: harmless


@pytest.mark.parametrize("mod", PROBE, ids=lambda m: m.__name__.rsplit("_", 1)[-1])
def test_probe_pending_tuples(mod: object) -> None:
    probe = mod.RxProbe(20)  # type: ignore[attr-defined]
    for k in range(5):
        probe.on_rx(20 * k, 1.0 + 0.02 * k, bytes(160))
    assert [t[0] for t in probe.pending] == [0, 20, 40, 60, 80]
    if mod.__name__.endswith("_c"):  # type: ignore[attr-defined]
        # compiled: untracked at once (they can be in no cycle), so young collections never
        # scan the tens of thousands waiting for analysis
        assert not any(gc.is_tracked(t) for t in probe.pending)


@pytest.mark.parametrize("mod", PROBE, ids=lambda m: m.__name__.rsplit("_", 1)[-1])
def test_probe_exact_echo_bookkeeping(mod: object) -> None:
    own = [bytes([i]) * 160 for i in range(1, 4)]
    probe = mod.RxProbe(20, True, 8)  # type: ignore[attr-defined]
    probe.own = frozenset(own)
    probe.first = own[0]
    for k, p in enumerate([own[0], own[1], b"\x09" * 160, own[2], own[0]]):
        probe.on_rx(20 * k, 1.0 + 0.02 * k, p)
    strays, firsts, lost = probe.take_exact()
    assert strays == [b"\x09" * 160] and firsts == [1.0, 1.08] and not lost
    assert probe.take_exact() == ([], [], False)
    for k in range(8):                          # past the limit: kept frames were dropped
        probe.on_rx(200 + 20 * k, 2.0 + 0.02 * k, own[1])
    assert probe.take_exact()[2] is True
