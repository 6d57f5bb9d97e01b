#!/usr/bin/env python3
"""Generator cost: ``iaxgw loadtest`` vs Asterisk generating the same N calls (needs root + lab).

    python3 bench/loadtest_vs_asterisk.py --calls 200 --window 10 [--profile out.txt]

Same far end for both: the lab's **Asterisk office-b** (127.0.0.20:4569) answering extension 300
with Echo, trunked as in the seed.  One run, two phases:

1. ``iaxgw loadtest`` (a child process, as office-a at 127.0.0.10) places N calls to 300 with its
   per-call signature tone and verifies every echo; once N calls are up we take the utime+stime
   of our process (and of office-b) over ``--window`` seconds.
2. Asterisk **office-a** originates N calls ``channel originate Local/300@internal application
   Milliwatt`` (as ``iaxgw.sim.lab.asterisk_baseline`` does); once office-b has N calls up, the same
   measurement on office-a's process.

Prints a table: CPU % (100 = one core) of each generator and of the far end, and the ratio ours /
Asterisk's (target <= 0.10).  ``--profile FILE`` also samples our generator with py-spy during
its window and prints the functions with the most self time.  Holds the lab's lock
(``/var/cache/iaxgw/lab.lock``) for the whole run, as the test fixtures do.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from iaxgw.sim.lab.asterisk_baseline import cpu_ticks, originate_calls, wait_calls_up
from iaxgw.sim.lab.lab import Lab
from iaxgw.sim.lab.labconfig import seed_site
from iaxgw.sim.lab.loadtest_lab import write_site
from iaxgw.sim.load.loadtest_plan import LoadtestOptions

CLK_TCK = os.sysconf("SC_CLK_TCK")


def measure(pids: dict[str, int], window: float) -> dict[str, float]:
    """CPU % of each pid over ``window`` s (utime+stime deltas, all threads)."""
    before = {k: cpu_ticks(p) for k, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(window)
    after = {k: cpu_ticks(p) for k, p in pids.items()}
    dt = time.monotonic() - t0
    return {k: 100.0 * (after[k] - before[k]) / CLK_TCK / dt for k in pids}


def top_self(raw: Path, n: int = 15) -> list[tuple[str, float]]:
    """py-spy ``--format raw`` (collapsed stacks) -> the functions with the most self samples."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, c = line.rpartition(" ")
        if not c.isdigit():
            continue
        leaf = stack.split(";")[-1]
        counts[leaf] += int(c)
        total += int(c)
    return [(k, 100.0 * v / max(total, 1)) for k, v in counts.most_common(n)]


def phase_ours(b: Any, calls: int, window: float, ramp: float, media: str,
               profile: Path | None, work: Path) -> dict[str, Any]:
    opts = LoadtestOptions(trunk=None)
    a_dir = write_site(work / "office-a", "office-a", opts)
    rate = max(20.0, calls / ramp)
    hold = ramp + 3.0 + window + 3.0
    argv = [sys.executable, "-m", "iaxgw.gateway.cli", "loadtest", "--config", str(a_dir),
            "--peer", "office-b", "--peer-host", "127.0.0.20", "--bind", "127.0.0.10",
            "--exten", "300", "--calls", str(calls), "--rate", f"{rate:g}",
            "--duration", f"{hold:g}", "--media", media, "--json", "--setup-timeout", "15"]
    out_path = work / "ours.json"
    with out_path.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL)
    try:
        time.sleep(calls / rate + 3.0)
        up_before = b.active_calls()
        spy = None
        if profile is not None and shutil.which("py-spy"):
            spy = subprocess.Popen(["py-spy", "record", "--pid", str(proc.pid), "--duration",
                                    str(int(window)), "--rate", "200", "--format", "raw",
                                    "--nonblocking", "--output", str(profile)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu = measure({"ours": proc.pid, "office-b": b.pid}, window)
        up_after = b.active_calls()
        if spy is not None:
            spy.wait(30)
        proc.wait(hold + 60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
    summary = json.loads(out_path.read_text() or "{}")
    return {"cpu": cpu, "up": (up_before, up_after), "summary": summary}


def phase_asterisk(lab: Lab, b: Any, calls: int, window: float) -> dict[str, Any]:
    a = lab.instance("office-a", seed_site("office-a")).start()
    try:
        a.wait_peer_ok("office-b", timeout=30)
        originated = originate_calls(a, calls)
        up_b = wait_calls_up(b, calls, timeout=120)
        assert a.pid is not None and b.pid is not None
        cpu = measure({"office-a": a.pid, "office-b": b.pid}, window)
        up_after = b.active_calls()
        a.hangup_all()
        return {"cpu": cpu, "up": (up_b, up_after), "originated": originated}
    finally:
        a.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--window", type=float, default=10.0, help="CPU window, s (default 10)")
    ap.add_argument("--ramp", type=float, default=5.0, help="our ramp-up time, s (default 5)")
    ap.add_argument("--media", default="tone", help="our media: tone (default) or silence")
    ap.add_argument("--profile", type=Path, default=None,
                    help="py-spy raw samples of our generator during its window go here")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    lab = Lab()
    reason = lab.unavailable_reason()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    with lab.lock(wait=600.0), tempfile.TemporaryDirectory(prefix="iaxgw-bench-") as tmp:
        b = lab.instance("office-b", seed_site("office-b")).start()
        try:
            ours = phase_ours(b, args.calls, args.window, args.ramp, args.media, args.profile,
                              Path(tmp))
            b.hangup_all()
            time.sleep(2.0)
            ast = phase_asterisk(lab, b, args.calls, args.window)
        finally:
            b.stop()
    s = ours["summary"]
    lt = s.get("loadtest", {})
    ratio = ours["cpu"]["ours"] / ast["cpu"]["office-a"] if ast["cpu"]["office-a"] else None
    result = {
        "calls": args.calls, "window_s": args.window, "far_end": "Asterisk 22 office-b, Echo (300)",
        "ours_cpu_pct": round(ours["cpu"]["ours"], 1),
        "ours_far_end_cpu_pct": round(ours["cpu"]["office-b"], 1),
        "ours_calls_up": ours["up"], "ours_answered": s.get("answered"),
        "ours_verified": (s.get("audio") or {}).get("verified"),
        "ours_send_timing": lt.get("send_timing"),
        "asterisk_cpu_pct": round(ast["cpu"]["office-a"], 1),
        "asterisk_far_end_cpu_pct": round(ast["cpu"]["office-b"], 1),
        "asterisk_calls_up": ast["up"],
        "ratio": round(ratio, 3) if ratio is not None else None,
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"generator cost, {args.calls} calls, CPU over {args.window:g} s "
              f"(far end for both: {result['far_end']})")
        print(f"{'generator':<34}{'gen CPU %':>10}{'far end %':>11}{'calls up':>12}")
        print(f"{'iaxgw loadtest (' + args.media + ', verified)':<34}"
              f"{result['ours_cpu_pct']:>10.1f}{result['ours_far_end_cpu_pct']:>11.1f}"
              f"{ours['up']!s:>12}")
        print(f"{'Asterisk office-a (Milliwatt)':<34}{result['asterisk_cpu_pct']:>10.1f}"
              f"{result['asterisk_far_end_cpu_pct']:>11.1f}{ast['up']!s:>12}")
        print(f"ratio ours / Asterisk: {result['ratio']} (target <= 0.10); ours answered "
              f"{result['ours_answered']}, verified {result['ours_verified']}")
        st = result["ours_send_timing"] or {}
        print(f"our send timing: late p99 {st.get('late_p99_ms')} ms, sends p99 "
              f"{st.get('work_p99_ms')} ms/tick")
    if args.profile is not None and args.profile.is_file():
        print(f"\npy-spy, our generator, self time ({args.profile}):")
        for name, pct in top_self(args.profile):
            print(f"{pct:6.1f} %  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
