"""``--realtime``: a media loop (the load tester's, serve's) under SCHED_RR for the run, and the
lab's defaults (real-time on for the load tester and, one priority step below, for serve)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from iaxgw.gateway.driver.realtime import RT_PRIORITY, realtime
from iaxgw.sim.load.limits import generator_limits
from iaxgw.sim.load.loadtest_plan import LoadtestOptions

needs_sched = pytest.mark.skipif(not hasattr(os, "sched_setscheduler"),
                                 reason="no sched_setscheduler here")


def _policy() -> int:
    return os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK


def _child_policy() -> int:
    out = subprocess.run([sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
                         capture_output=True, check=True, timeout=30)
    return int(out.stdout)


@needs_sched
def test_not_asked_changes_nothing() -> None:
    before = (_policy(), os.sched_getparam(0).sched_priority)
    with realtime(False) as got:
        assert got == "off"
        assert (_policy(), os.sched_getparam(0).sched_priority) == before


@needs_sched
def test_on_for_the_run_then_back_and_never_inherited() -> None:
    before = (_policy(), os.sched_getparam(0).sched_priority)
    with realtime(True) as got:
        if got != "on":                       # not root: the reason, and nothing changed
            assert got == "refused: needs root or CAP_SYS_NICE", got
            assert (_policy(), os.sched_getparam(0).sched_priority) == before
            return
        assert _policy() == os.SCHED_RR
        assert os.sched_getparam(0).sched_priority == RT_PRIORITY
        # a child (the far end the lab starts, a tool) runs at the ordinary policy
        assert _child_policy() == os.SCHED_OTHER
    assert (_policy(), os.sched_getparam(0).sched_priority) == before


@needs_sched
def test_priority_is_the_one_asked() -> None:
    with pytest.raises(ValueError, match=r"1\.\.99"), realtime(True, 0):
        pass
    from iaxgw.sim.lab.loadtest_lab import scheduling

    assert scheduling(os.getpid()) == "ordinary"
    with realtime(True, 5) as got:
        if got != "on":
            pytest.skip(got)
        assert _policy() == os.SCHED_RR and os.sched_getparam(0).sched_priority == 5
        assert scheduling(os.getpid()) == "SCHED_RR 5"
    assert scheduling(os.getpid()) == "ordinary"
    assert scheduling(2 ** 22 + 1) == "unknown"          # no such process


@needs_sched
def test_refused_is_said_and_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []

    def refuse(*args: Any) -> None:
        calls.append(args)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with realtime(True) as got:
        assert got == "refused: needs root or CAP_SYS_NICE"
    assert len(calls) == 1                    # nothing to restore: one attempt only


@needs_sched
def test_restored_when_the_run_fails() -> None:
    before = (_policy(), os.sched_getparam(0).sched_priority)
    with pytest.raises(RuntimeError), realtime(True):
        raise RuntimeError("the run broke")
    assert (_policy(), os.sched_getparam(0).sched_priority) == before


def test_late_ticks_name_realtime_unless_it_was_on() -> None:
    late = {"over_2ms_pct": 4.0, "late_p99_ms": 3.7}
    off = generator_limits([], late, [], 0)
    on = generator_limits([], late, [], 0, realtime="on")
    assert len(off) == len(on) == 1
    assert off[0].endswith("; --realtime puts them ahead of the rest of this machine"), off
    assert "--realtime" not in on[0], on


def test_lab_defaults_realtime_on_unless_told() -> None:
    from iaxgw.sim.lab.loadtest_lab import lab_defaults

    lab = LoadtestOptions(calls=5000)
    lab_defaults(lab)
    assert lab.realtime is True and lab.rate is None and not lab.warnings
    asked = LoadtestOptions(calls=5000, realtime=False)      # --no-realtime stands
    lab_defaults(asked)
    assert asked.realtime is False
    # a plain load test leaves it off
    assert LoadtestOptions().realtime is None
