"""Real-time priority for a media loop: ``iaxgw loadtest --realtime`` and ``iaxgw serve
--realtime``, as ``asterisk -p`` (``highpriority`` in asterisk.conf) runs Asterisk.

A load test on one machine shares its cores with whatever else runs there: in the lab, with
the far end it measures.  Under the ordinary scheduler the generator's 20 ms media ticks then
wait behind the far end's bursts of work; at 5,000 calls on two cores 1 to 7 % of the ticks
started over 2 ms late and the run was limited by the generator, not by the target.  Asterisk
has the same need for its own media and answers it with real-time round-robin scheduling,
priority 10.  :func:`realtime` does the same for the process that runs a media loop (each
shard's, or serve's), for the time of the run only, and restores the ordinary policy after it.
Children never inherit it.

It needs root or CAP_SYS_NICE; without them the run goes on at the ordinary priority and says
so.  The kernel's real-time throttling (``kernel.sched_rt_runtime_us``, 95 % by default) keeps
a saturated process from taking every last cycle from the rest of the machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["RT_PRIORITY", "realtime"]

#: SCHED_RR priority, as ``asterisk -p`` takes (the load tester's)
RT_PRIORITY = 10


@contextmanager
def realtime(wanted: bool, priority: int = RT_PRIORITY) -> Iterator[str]:
    """Run the body under SCHED_RR at ``priority`` (1-99) when ``wanted``; yields what the run
    got: ``"on"``, ``"off"`` (not asked) or ``"refused: <why>"``.  The process's own policy
    comes back at the end, whatever happened in the body."""
    if not 1 <= priority <= 99:
        raise ValueError(f"real-time priority {priority}: must be 1..99")
    if not wanted:
        yield "off"
        return
    setter = getattr(os, "sched_setscheduler", None)
    if setter is None:
        yield "refused: this system has no sched_setscheduler"
        return
    pid = 0
    before_policy = os.sched_getscheduler(pid)
    before_param = os.sched_getparam(pid)
    try:
        setter(pid, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(priority))
    except PermissionError:
        yield "refused: needs root or CAP_SYS_NICE"
        return
    except OSError as exc:
        yield f"refused: {exc.strerror or exc}"
        return
    try:
        yield "on"
    finally:
        setter(pid, before_policy, before_param)
