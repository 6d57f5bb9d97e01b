"""The capacity search's rule and its steps, on made-up seconds (sim/scale/capacity.py), and the
options it plans (the first step, calls that stay up, enough attempts)."""

from __future__ import annotations

from typing import Any

import pytest

from iaxgw.sim.load.loadtest_plan import LoadtestOptions, PlanError
from iaxgw.sim.scale.capacity import CapacitySearch, RuleError, StopRule, step_lines


def test_rule_names_what_tripped_and_never_trips_on_na() -> None:
    r = StopRule("setup_fail_pct > 1 or (mos_p5 < 3.5 and loss_pct > 1)")
    assert r.tripped({"setup_fail_pct": 5.0, "mos_p5": 4.4, "loss_pct": 0.0}) == [
        "setup_fail_pct > 1 (setup_fail_pct = 5)"]
    assert r.tripped({"setup_fail_pct": 0.0, "mos_p5": 3.0, "loss_pct": 2.0}) == [
        "mos_p5 < 3.5 (mos_p5 = 3)", "loss_pct > 1 (loss_pct = 2)"]
    assert r.tripped({"setup_fail_pct": 0.0, "mos_p5": 3.0, "loss_pct": None}) == []
    assert StopRule("-1 < jitter_p95_ms <= 30").tripped({"jitter_p95_ms": 12.0})


@pytest.mark.parametrize(("text", "why"), [
    ("foo > 1", "unknown metric 'foo'"), ("import os", "not an expression"),
    ("__import__('os')", "not a comparison"), ("mos_p5 < 'a'", "neither a metric"),
    ("mos_p5 is None", "compare with"), ("mos_p5", "not a comparison")])
def test_rule_refuses_anything_else(text: str, why: str) -> None:
    with pytest.raises(RuleError, match=why):
        StopRule(text)


def _second(t: float, up: int, attempts: int = 0, failed: int = 0,
            mos: float = 4.4) -> tuple[dict[str, Any], dict[str, Any]]:
    return ({"time_s": t, "calls_up": up, "attempts": attempts, "failed": failed},
            {"mos": [mos] * up, "jitter_ms": [0.5] * up, "setup_ms": [10.0] * attempts,
             "lost": 0, "expected": 50 * up})


def test_steps_until_the_rule_trips() -> None:
    """A target that holds 10 calls: steps of 5 every 3 s; the 15-call step fails 5 setups."""
    s = CapacitySearch(5, 3.0, 40, StopRule("setup_fail_pct > 1"))
    asked = [s.calls]
    t = 0.0
    while not s.done and t < 60:
        t += 1.0
        want = s.calls
        up = min(want, 10)
        failed = want - up if t % 3 == 1 else 0
        action = s.second(*_second(t, up, attempts=want if t % 3 == 1 else 0, failed=failed))
        if action is not None and action.calls is not None:
            asked.append(action.calls)
    res = s.result()
    assert asked == [5, 10, 15]
    assert (res["calls"], res["failed_at"]) == (10, 15)
    assert res["reason"] == "setup_fail_pct > 1 (setup_fail_pct = 33.3)"
    assert [st["held"] for st in res["steps"]] == [True, True, False]
    lines = step_lines(res)
    assert len(lines) == 4 and "TRIPPED" in lines[-1] and lines[1].rstrip().endswith("held")


def test_max_calls_held_and_a_step_not_reached() -> None:
    s = CapacitySearch(4, 2.0, 8, StopRule("mos_p5 < 3"))
    for t, up in ((1, 4), (2, 4), (3, 8), (4, 8)):
        action = s.second(*_second(float(t), up))
    assert action is not None and action.stop
    assert s.result()["calls"] == 8 and s.result()["reason"] == "--max-calls 8 reached and held"
    # a step whose calls never came up does not hold, whatever the rule says
    s = CapacitySearch(4, 2.0, 8, StopRule("mos_p5 < 3"))
    s.second(*_second(1.0, 4))
    s.second(*_second(2.0, 4))
    s.second(*_second(3.0, 5))
    s.second(*_second(4.0, 5))
    assert s.result()["calls"] == 4 and s.result()["failed_at"] == 8
    assert s.result()["reason"] == "only 5 of 8 calls up at the step's end"


def test_options_plan_the_search() -> None:
    o = LoadtestOptions(step=5, step_time=10.0, max_calls=20)
    o.check()
    assert o.calls == 5 and o.allow_underrun
    assert o.duration[0] >= 4 * 10.0                     # calls stay up through the search
    assert o.attempts >= 20 + o.cps * 40                 # every step and its refused calls
    assert o.peak_calls == 20
    for kw, why in (({"step": 5}, "needs --max-calls"),
                    ({"step": 5, "max_calls": 3}, "at least --step"),
                    ({"max_calls": 30}, "give --step too"),
                    ({"step": 5, "max_calls": 10, "stop_when": "x > 1"}, "unknown metric"),
                    ({"step": 5, "max_calls": 10, "step_time": 1.0}, "at least 2 s")):
        with pytest.raises(PlanError, match=why):
            LoadtestOptions(**kw).check()
