"""Soak: 200 concurrent calls against the lab's real Asterisk 22 (office-a echo) for N minutes.

    python bench/soak.py --minutes 10 [--calls 200] [--duration 20] [--impair SPEC]

Not part of CI.  The load tester keeps ``--calls`` calls up (each ``--duration`` s, replaced as it
ends) until ``calls x ceil(minutes x 60 / duration)`` attempts were made.  Samples this process's
resident memory (VmRSS) and open file descriptors (/proc/self/fd) every 5 s; after the warm-up
(the first 25 % of the run, at least 30 s) vs the end.  Exit 0 only when no call failed or was
dropped, RSS grew < 5 % and the fd count did not grow.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def soak(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from iaxgw.gateway.driver.impair import ImpairSpec
    from iaxgw.sim.lab.loadtest_lab import lossy_link_settings, write_site
    from iaxgw.sim.load.loadtest import LoadRunner, load_target
    from iaxgw.sim.load.loadtest_plan import LoadtestOptions

    rounds = max(1, math.ceil(args.minutes * 60 / args.duration))
    opts = LoadtestOptions(calls=args.calls, rate=args.calls / 5, total=args.calls * rounds,
                           duration=(args.duration, args.duration), quiet=True, live=False,
                           extens=["200"], peer="office-a", peer_host=("127.0.0.10", 4569),
                           bind=("127.0.0.20", 4569))
    opts.config_dir = write_site(work / "office-b", "office-b", opts)
    spec = ImpairSpec.parse(args.impair) if args.impair else None
    if spec is not None:
        lossy_link_settings(opts, opts.config_dir / "iax.conf")
    opts.check()
    runner = LoadRunner(opts, load_target(opts), impair=spec)
    samples: list[tuple[float, int, int, int]] = []
    t0 = time.monotonic()

    async def sampler() -> None:
        while True:
            live = sum(1 for c in runner.by_index.values() if c.answered and not c.ended)
            samples.append((time.monotonic() - t0, rss_kib(), fd_count(), live))
            await asyncio.sleep(5.0)

    task = asyncio.get_running_loop().create_task(sampler())
    try:
        res = await runner.run()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    samples.append((time.monotonic() - t0, rss_kib(), fd_count(), 0))
    wall = samples[-1][0]
    warm_t = max(30.0, 0.25 * wall)
    warm = next((s for s in samples if s[0] >= warm_t), samples[0])
    end = [s for s in samples if s[3] > 0][-1] if any(s[3] for s in samples) else samples[-1]
    s = res.summary
    lt = s["loadtest"]
    growth = 100.0 * (end[1] - warm[1]) / warm[1] if warm[1] else 0.0
    out = {"minutes": round(wall / 60, 2), "attempted": s["attempted"], "answered": s["answered"],
           "failed": lt["failed_total"], "dropped": lt["dropped"],
           "max_concurrent": s.get("max_concurrent"),
           "rss_warm_kib": warm[1], "rss_end_kib": end[1], "rss_growth_pct": round(growth, 2),
           "rss_warm_at_s": round(warm[0]), "rss_end_at_s": round(end[0]),
           "fds_warm": warm[2], "fds_end": end[2], "fds_after": samples[-1][2],
           "echo_missing_pct": lt["echo_missing_pct"], "jitter_ms_p50": s["jitter_ms"]["p50"],
           "causes": s.get("causes"), "impair": s.get("impair"),
           "rss_series_kib": [[round(t), r, f, n] for t, r, f, n in samples]}
    out["ok"] = (out["failed"] == 0 and out["dropped"] == 0 and growth < 5.0
                 and end[2] <= warm[2] and samples[-1][2] <= warm[2])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--duration", type=float, default=20.0, help="s per call")
    ap.add_argument("--impair", default=None, help="--impair SPEC on our socket")
    ap.add_argument("--json", dest="json_path", default=None, help="also write the figures here")
    args = ap.parse_args()

    from iaxgw.sim.lab.lab import Lab

    lab = Lab()
    reason = lab.unavailable_reason()
    if reason:
        print(f"soak: {reason}", file=sys.stderr)
        return 2
    with lab.lock(wait=600.0):                     # the test fixtures' lock: one lab user
        return _run_locked(args, lab)


def _run_locked(args: argparse.Namespace, lab: Any) -> int:
    import uvloop

    from iaxgw.sim.lab.labconfig import seed_site
    from iaxgw.sim.lab.loadtest_lab import LOSSY_CALLEE_GENERAL

    extra = {"extra_general": LOSSY_CALLEE_GENERAL} if args.impair else {}
    inst = lab.instance("office-a", seed_site("office-a", **extra)).start()
    try:
        with tempfile.TemporaryDirectory(prefix="iaxgw-soak-") as tmp, \
                asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
            out = r.run(soak(args, Path(tmp)))
        deadline = time.monotonic() + 40
        while inst.active_calls() and time.monotonic() < deadline:
            time.sleep(1)
        out["asterisk_active_calls_after"] = inst.active_calls()
        last = inst.cli("iax2 show channels").strip().splitlines()[-1]
        out["asterisk_iax2_channels_after"] = last
    finally:
        inst.stop()
    series = out.pop("rss_series_kib")
    print(json.dumps(out, indent=2))
    print("t_s rss_kib fds calls_up: " + " ".join(f"{t}:{r}:{f}:{n}" for t, r, f, n in series))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({**out, "series": series}, indent=2))
    ok = out["ok"] and out["asterisk_active_calls_after"] == 0
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
