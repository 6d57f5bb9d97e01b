#!/usr/bin/env python3
"""Calls held against ``iaxgw serve`` on this machine, by the number of load-test shards.

    python3 bench/loadtest_shards.py --runs 2000x1,4000x2,5000x3 [--duration S]

Each run is ``iaxgw lab --calls N --shards K`` (serve as office-b in a child process, the load
tester as office-a in K shards, each from its own loopback address; serve's ACL lets each one
in) on a loopback pair of its own, so serve and the generator share this machine's cores.  A
run *holds* when every call was answered and its audio verified, the calls were up at once
(the most up at once within 10 % of the calls, as the run's own concurrency target), loss
< 0.1 % and the p99 send-timing error (how late a media tick starts against its 20 ms grid,
pooled over every shard's ticks) < 2 ms.  Prints one row per run: calls, shards, answered,
verified, the most calls up at once, loss, send timing, each shard's CPU, serve's CPU, whether
the generator limited the run, held or not.
Bounded: each run is a child process with a deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

ADDRS = "127.0.11.10,127.0.11.20"


def run(calls: int, shards: int, duration: float | None, timeout: float) -> dict[str, Any]:
    env = {**os.environ, "IAXGW_LAB_ADDRS": ADDRS}
    argv = [sys.executable, "-m", "iaxgw.gateway.cli", "lab", "--calls", str(calls),
            "--shards", str(shards), "--json", "--allow-underrun"]
    if duration is not None:
        argv += ["-d", f"{duration:g}"]
    t0 = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, timeout=timeout, check=False)
    wall = time.monotonic() - t0
    try:
        summary: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        return {"calls": calls, "shards": shards, "error": proc.stderr.decode()[-400:],
                "wall_s": wall}
    return {"calls": calls, "shards": shards, "summary": summary, "wall_s": wall,
            "exit_code": proc.returncode}


def row(r: dict[str, Any]) -> str:
    if "summary" not in r:
        return f"{r['calls']:>6} {r['shards']:>3}  error: {r.get('error')}"
    s = r["summary"]
    lt = s["loadtest"]
    st = lt.get("send_timing") or {}
    loss = s.get("loss_pct")
    verified = (s.get("audio") or {}).get("verified")
    peak = ((s.get("targets") or {}).get("calls") or {}).get("peak")
    held = (s["answered"] == r["calls"] and verified == r["calls"] and loss is not None
            and peak is not None and peak >= 0.9 * r["calls"]
            and loss < 0.1 and (st.get("late_p99_ms") or 99.0) < 2.0)
    cpus = "/".join(f"{sh.get('cpu_pct') or 0:.0f}" for sh in s.get("shards") or []) \
        or f"{s.get('cpu_pct') or 0:.0f}"
    far = (s.get("lab") or {}).get("far_end_cpu_pct")
    gen = "yes" if (s.get("limited_by") or {}).get("generator") else "no"
    return (f"{r['calls']:>6} {r['shards']:>3} {s['answered']:>7} {verified!s:>8} {peak!s:>6} "
            f"{'n/a' if loss is None else f'{loss:.3f}':>7} {st.get('late_p99_ms')!s:>8} "
            f"{cpus:>14} {far!s:>7} {gen:>5} {'HOLDS' if held else 'no':>6}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default="2000x1,4000x2,5000x3",
                    help="CALLSxSHARDS,... (default %(default)s)")
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds each call holds (default: the lab's, 20 s or, where it slows "
                         "the ramp to 200/s, the ramp + 20 s)")
    ap.add_argument("--json", help="keep every run's summary here")
    a = ap.parse_args()
    runs = []
    print(f"{'calls':>6} {'sh':>3} {'answerd':>7} {'verified':>8} {'peak':>6} {'loss%':>7} "
          f"{'late99ms':>8} {'cpu%/shard':>14} {'serve%':>7} {'gen?':>5} {'held':>6}",
          flush=True)
    for spec in a.runs.split(","):
        calls, _, shards = spec.partition("x")
        r = run(int(calls), int(shards or 1), a.duration,
                timeout=(a.duration or int(calls) / 200 + 20) + 600)
        runs.append(r)
        print(row(r), flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(runs, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
