"""Who limited a run: the target, or the load generator itself.

A figure a load test reports is the target's only when the generator kept up: its own CPU not
saturated, its media ticks on time, its scheduler on its own schedule, no datagrams dropped by
this machine's kernel.  :func:`generator_limits` names each way the generator fell short; a run
(and a capacity search's failing step) with any is flagged, so a capacity figure is never the
generator's limit taken for the target's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: A process busier than this (% of one core) in a second had no CPU to spare ...
CPU_BUSY_PCT = 90.0
#: ... and in more than this share of its seconds, the generator was CPU-bound.
CPU_BUSY_SHARE = 0.10
#: More than this % of media ticks starting over 2 ms late: the generator's timing failed.
LATE_TICKS_PCT = 1.0
#: how a reason about the whole machine (not one generator process) begins
MACHINE_WIDE = "this machine's"


def generator_limits(cpu_samples: Sequence[float], send_timing: Mapping[str, Any],
                     capped_by: Sequence[Mapping[str, Any]], kernel_drops: int | None,
                     who: str = "the load tester", realtime: str = "off") -> list[str]:
    """The ways one generator process fell short (empty: it kept up).  ``realtime``: what
    ``--realtime`` got; late ticks without it name it."""
    out: list[str] = []
    busy = sum(1 for c in cpu_samples if c >= CPU_BUSY_PCT)
    if cpu_samples and busy > CPU_BUSY_SHARE * len(cpu_samples):
        out.append(f"{who} was CPU-bound: >= {CPU_BUSY_PCT:.0f} % of a core in {busy} of "
                   f"{len(cpu_samples)} s")
    late = send_timing.get("over_2ms_pct")
    if late is not None and late > LATE_TICKS_PCT:
        hint = "" if realtime == "on" else (
            "; --realtime puts them ahead of the rest of this machine")
        out.append(f"{who}'s media ticks were late: {late:.1f} % started over 2 ms late "
                   f"(p99 {send_timing.get('late_p99_ms')} ms){hint}")
    if any(c.get("cap") == "scheduler_late" for c in capped_by):
        out.append(f"{who} did not keep its own call schedule (local CPU or event loop)")
    if kernel_drops:
        out.append(f"{MACHINE_WIDE} kernel dropped {kernel_drops} UDP datagram(s) for full "
                   "receive buffers (local overload, not network loss)")
    return out


def limited_by(reasons: Sequence[str]) -> dict[str, Any]:
    """summary.json's ``limited_by``."""
    return {"generator": bool(reasons), "reasons": list(reasons)}


def step_cpu_bound(cpu_by_second: Sequence[float]) -> bool:
    """A capacity step whose seconds saw a generator process CPU-bound."""
    busy = sum(1 for c in cpu_by_second if c >= CPU_BUSY_PCT)
    return bool(cpu_by_second) and busy > CPU_BUSY_SHARE * len(cpu_by_second)
