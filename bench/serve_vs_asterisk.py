"""office-b's CPU: ``iaxgw serve`` versus a real Asterisk 22, same load, same run.

The lab's Asterisk office-a (127.0.0.10:4569) originates N Milliwatt calls
(``channel originate Local/300@internal application Milliwatt``) over the seed's trunk to
office-b (127.0.0.20:4569), which answers with Echo on 300.  office-b is, in turn:

1. ``iaxgw serve`` (a child process, the embedded office-b config);
2. the lab's Asterisk 22 office-b (the baseline of ``sim/lab/asterisk_baseline.py``).

For each, once the calls are up: office-b's CPU (utime+stime from /proc over a fixed window) and
office-a's.  For iaxgw, audio is verified on every call from ``iaxgw show channels --json``
frame counters read around the same window: each channel must have received >= 90 % of the
expected 50 frames/s and sent (echoed) as many.  For Asterisk, the calls up on both sides.

Usage (root, provisioned lab)::

    python3 bench/serve_vs_asterisk.py [--calls 200] [--window 10] [--rate 40] [--json PATH]
                                       [--profile PATH]   # cProfile of iaxgw serve under load

Target: CPU(iaxgw) / CPU(Asterisk) <= 0.10.  Takes the lab lock (as the test fixtures do).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from iaxgw.sim.lab.asterisk_baseline import cpu_ticks, wait_calls_up
from iaxgw.sim.lab.lab import AsteriskInstance, Lab, LabError
from iaxgw.sim.lab.labconfig import seed_site

CLK_TCK = os.sysconf("SC_CLK_TCK")
FRAMES_PER_S = 50
TARGET = 0.10


def cpu_window(pids: dict[str, int], window: float) -> dict[str, float]:
    before = {k: cpu_ticks(p) for k, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(window)
    after = {k: cpu_ticks(p) for k, p in pids.items()}
    el = time.monotonic() - t0
    return {k: round(100.0 * (after[k] - before[k]) / CLK_TCK / el, 1) for k in pids}


def originate(a: AsteriskInstance, n: int, rate: float) -> int:
    """``n`` originates at ``rate``/s (keeps AUTHREQs and call tokens within limits)."""
    ok = 0
    t0 = time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        try:
            a.originate("Local/300@internal", "Milliwatt")
            ok += 1
        except LabError:
            pass
    return ok


def show_json(ctl: str, what: str) -> Any:
    out = subprocess.run([sys.executable, "-m", "iaxgw.gateway.cli", "show", what, "--json",
                          "--control", ctl], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"iaxgw show {what}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def wait_until(pred: Any, timeout: float, what: str, poll: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def run_iaxgw(lab: Lab, calls: int, window: float, rate: float,
              profile: str | None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="iaxgw-bench-"))
    ctl = str(tmp / "b.sock")
    argv = [sys.executable]
    if profile:
        argv += ["-m", "cProfile", "-o", profile]
    argv += ["-m", "iaxgw.gateway.cli", "serve", "--peer", "office-a", "--control", ctl,
             "--spool", str(tmp / "spool")]
    serve = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    a = lab.instance("office-a", seed_site("office-a"))
    try:
        wait_until(lambda: os.path.exists(ctl) or serve.poll() is not None, 20, "iaxgw serve")
        if serve.poll() is not None:
            raise RuntimeError(f"iaxgw serve exited: {serve.communicate()[1]}")
        a.start()                      # after we are bound: its first POKE is answered
        a.wait_peer_ok("office-b", timeout=30)
        print(f"[iaxgw] originating {calls} calls at {rate:.0f}/s ...", flush=True)
        t0 = time.monotonic()
        originated = originate(a, calls, rate)

        def up() -> int:
            return sum(1 for c in show_json(ctl, "channels") if c["state"] == "UP")

        best, best_at, deadline = 0, time.monotonic(), time.monotonic() + 60
        while time.monotonic() < deadline:          # all up, or no progress for 5 s
            n = up()
            if n > best:
                best, best_at = n, time.monotonic()
            if n >= originated or time.monotonic() - best_at > 5:
                break
            time.sleep(1.0)
        if best < originated:
            print(f"[iaxgw] only {best} of {originated} calls came up; office-a active "
                  f"{a.active_calls()}; office-a log:\n{a.log_tail(8)}", flush=True)
        setup = time.monotonic() - t0
        time.sleep(1.0)
        q0 = time.monotonic()
        before = {c["callno"]: c for c in show_json(ctl, "channels")}
        q1 = time.monotonic()
        cpu = cpu_window({"office-b (iaxgw)": serve.pid, "office-a": a.pid or 0}, window)
        q2 = time.monotonic()
        after = {c["callno"]: c for c in show_json(ctl, "channels")}
        q3 = time.monotonic()
        # the counters' window: between the midpoints of the two queries
        span = (q2 + q3) / 2 - (q0 + q1) / 2
        stats = show_json(ctl, "stats")
        expected = FRAMES_PER_S * span
        rx = [after[k]["frames_rx"] - before[k]["frames_rx"] for k in after if k in before]
        tx = [after[k]["frames_tx"] - before[k]["frames_tx"] for k in after if k in before]
        good = sum(1 for r, t in zip(rx, tx) if r >= 0.9 * expected and t >= 0.9 * expected)
        a_up = a.active_calls()
        a.hangup_all()
        wait_until(lambda: not show_json(ctl, "channels"), 30, "iaxgw's channels to clear")
        return {
            "originated": originated, "calls_up": len(after), "office_a_active": a_up,
            "setup_s": round(setup, 1), "cpu": cpu,
            "audio_ok_calls": good, "frames_expected": round(expected),
            "rx_min": min(rx, default=0), "tx_min": min(tx, default=0),
            "late_ticks": stats.get("media", {}).get("late_ticks"),
            "trunk_in": stats.get("trunk", {}).get("datagrams_in"),
            "trunk_out": stats.get("trunk", {}).get("datagrams_out"),
        }
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)     # clean stop: writes the profile
            try:
                serve.wait(20)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait()
        a.stop()


def run_asterisk(lab: Lab, calls: int, window: float, rate: float) -> dict[str, Any]:
    b = lab.instance("office-b", seed_site("office-b"))
    a = lab.instance("office-a", seed_site("office-a"))
    try:
        b.start()
        a.start()
        a.wait_peer_ok("office-b", timeout=30)
        b.wait_peer_ok("office-a", timeout=30)
        print(f"[asterisk] originating {calls} calls at {rate:.0f}/s ...", flush=True)
        t0 = time.monotonic()
        originated = originate(a, calls, rate)
        up_b = wait_calls_up(b, originated, timeout=60)
        setup = time.monotonic() - t0
        time.sleep(1.0)
        assert a.pid is not None and b.pid is not None
        cpu = cpu_window({"office-b (asterisk)": b.pid, "office-a": a.pid}, window)
        up_b_end = b.active_calls()
        iax_b = len(b.channels())
        a_up = a.active_calls()
        a.hangup_all()
        return {"originated": originated, "calls_up": min(up_b, up_b_end),
                "office_b_iax_channels": iax_b, "office_a_active": a_up,
                "setup_s": round(setup, 1), "cpu": cpu}
    finally:
        a.stop()
        b.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--window", type=float, default=10.0, help="CPU window, s")
    ap.add_argument("--rate", type=float, default=40.0, help="call setups per second")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--profile", help="cProfile output of iaxgw serve (pstats file)")
    ap.add_argument("--only", choices=["iaxgw", "asterisk"], default=None)
    args = ap.parse_args(argv)
    lab = Lab()
    reason = lab.unavailable_reason()
    if reason is not None:
        print(f"lab unavailable: {reason}", file=sys.stderr)
        return 2
    res: dict[str, Any] = {"calls": args.calls, "window_s": args.window, "cpus": os.cpu_count()}
    with lab.lock(wait=600.0):
        if args.only != "asterisk":
            res["iaxgw"] = run_iaxgw(lab, args.calls, args.window, args.rate, args.profile)
            print("[iaxgw]", res["iaxgw"], flush=True)
        if args.only != "iaxgw":
            res["asterisk"] = run_asterisk(lab, args.calls, args.window, args.rate)
            print("[asterisk]", res["asterisk"], flush=True)
    print()
    print(f"office-a originates {args.calls} Milliwatt calls to office-b 300 (Echo); "
          f"CPU over {args.window:.0f} s (100% = one core, {os.cpu_count()} cores)")
    cpu_i = cpu_a = None
    if "iaxgw" in res:
        r = res["iaxgw"]
        cpu_i = r["cpu"]["office-b (iaxgw)"]
        print(f"  iaxgw serve : {r['calls_up']} calls up, CPU {cpu_i:.1f}% "
              f"(office-a {r['cpu']['office-a']:.1f}%); audio verified on "
              f"{r['audio_ok_calls']}/{r['calls_up']} calls (rx min {r['rx_min']}, tx min "
              f"{r['tx_min']} of {r['frames_expected']} frames)")
    if "asterisk" in res:
        r = res["asterisk"]
        cpu_a = r["cpu"]["office-b (asterisk)"]
        print(f"  Asterisk 22 : {r['calls_up']} calls up, CPU {cpu_a:.1f}% "
              f"(office-a {r['cpu']['office-a']:.1f}%)")
    code = 0
    if cpu_i is not None and cpu_a:
        ratio = cpu_i / cpu_a
        res["ratio"] = round(ratio, 3)
        verdict = "meets" if ratio <= TARGET else "MISSES"
        print(f"  ratio iaxgw/Asterisk = {ratio:.3f} ({verdict} the target <= {TARGET:.2f})")
        code = 0 if ratio <= TARGET else 1
    if "iaxgw" in res:
        r = res["iaxgw"]
        if r["audio_ok_calls"] != r["calls_up"] or r["calls_up"] < args.calls:
            print("  audio NOT verified on every call")
            code = 1
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main())
