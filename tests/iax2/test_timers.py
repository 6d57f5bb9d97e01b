"""The endpoint's timer queue (gateway/iax2/timers.py): order, soft slack, cancellation, bounds."""

from __future__ import annotations

from typing import Any

import pytest

from iaxgw.gateway.iax2.timers import Timer, TimerQueue


def _rec(log: list[tuple[Any, float]]) -> Any:
    return lambda now, arg: log.append((arg, now))


def test_hard_timers_fire_in_time_then_creation_order_never_early() -> None:
    q = TimerQueue(0.025)
    log: list[tuple[Any, float]] = []
    for name, when in (("c", 3.0), ("a", 1.0), ("b1", 2.0), ("b2", 2.0)):
        q.schedule(when, _rec(log), name)
    assert q.deadline() == 1.0
    q.fire_due(0.999)
    assert log == []
    q.fire_due(2.0)
    assert log == [("a", 2.0), ("b1", 2.0), ("b2", 2.0)]
    assert q.deadline() == 3.0 and len(q.live()) == 1
    q.fire_due(10.0)
    assert [a for a, _ in log] == ["a", "b1", "b2", "c"] and q.deadline() is None


def test_soft_timers_wait_for_a_wakeup_within_their_slack() -> None:
    q = TimerQueue(0.025)
    log: list[tuple[Any, float]] = []
    q.schedule_soft(5.0, _rec(log), "soft")
    assert q.deadline() == pytest.approx(5.025)      # its own wake-up, slack later
    q.schedule(5.01, _rec(log), "hard")
    assert q.deadline() == 5.01                      # an earlier hard timer wakes first
    q.fire_due(5.01)
    assert log == [("hard", 5.01), ("soft", 5.01)]   # it rode the hard one's wake-up
    assert [t.fn for t in q.live_soft()] == []


def test_cancelled_timers_never_fire_and_leave_the_heap_at_the_top() -> None:
    q = TimerQueue(0.025)
    log: list[tuple[Any, float]] = []
    gone = q.schedule(1.0, _rec(log), "gone")
    q.schedule(2.0, _rec(log), "kept")
    gone.cancel()
    gone.cancel()                                    # idempotent
    assert "cancelled" in repr(gone) and len(q) == 2
    assert q.deadline() == 2.0 and len(q) == 1       # dropped once it reached the top
    q.fire_due(5.0)
    assert log == [("kept", 5.0)] and not q.live()


def test_a_timer_scheduled_while_firing_runs_when_due() -> None:
    q = TimerQueue(0.025)
    log: list[tuple[Any, float]] = []

    def chain(now: float, arg: int) -> None:
        log.append((arg, now))
        if arg < 3:
            q.schedule(now, chain, arg + 1)              # due at once
            q.schedule(now + 1.0, chain, 100)            # not due in this run

    q.schedule(1.0, chain, 1)
    q.fire_due(1.0)
    assert [a for a, _ in log] == [1, 2, 3]
    assert q.deadline() == 2.0


def test_a_timer_is_a_typed_record() -> None:
    t = Timer(1.5, lambda now, arg: None, "x")
    assert (t.when, t.arg, t.alive) == (1.5, "x", True)
    with pytest.raises(AttributeError):
        t.other = 1  # type: ignore[attr-defined]
