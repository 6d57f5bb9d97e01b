"""What AES-128 call encryption costs: one voice frame, and ``iaxgw serve`` at N calls.

1. Per frame: encrypt then decrypt a 160-byte G.711 voice mini frame (2 + 2 + 160 bytes; 194
   on the wire) with :class:`iaxgw.gateway.iax2.crypto.FrameCipher`, the median of many repetitions
   (the decrypted frame is checked against the original each time).
2. Whole process: ``iaxgw serve`` as office-b (echo on 300) and ``iaxgw loadtest`` as office-a
   placing N calls of 20 ms G.711, first in the clear, then encrypted (``encryption = aes128``
   + ``forceencryption = yes`` on both sides), in the same run; serve's CPU (utime + stime from
   /proc) over a window while all calls are up.  Mini frames by default (``--trunk`` for
   trunked calls, whose voice is not encrypted).

Usage::

    python3 bench/crypto_cost.py [--calls 200] [--window 10] [--trunk] [--json PATH]

Loopback only (127.0.31.10 / 127.0.31.20); no Asterisk needed.  The machine is shared: repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from iaxgw.gateway.iax2.crypto import FrameCipher
from iaxgw.sim.lab.asterisk_baseline import cpu_ticks
from iaxgw.sim.lab.loadtest_lab import write_site
from iaxgw.sim.load.loadtest_plan import LoadtestOptions

CLK_TCK = os.sysconf("SC_CLK_TCK")
A_IP, B_IP = "127.0.31.10", "127.0.31.20"     # not the lab's addresses: runs beside it


def frame_cost_us(repeats: int = 20_000) -> dict[str, float]:
    """Median and p90 of one encrypt + decrypt of a voice mini frame, in microseconds."""
    cipher = FrameCipher(os.urandom(16))
    frame = b"\x12\x34" + b"\x00\xa0" + os.urandom(160)
    samples: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(repeats // 100):
        t0 = clock()
        for _ in range(100):
            plain = cipher.decrypt(cipher.encrypt(frame, 2), 2)
        samples.append((clock() - t0) / 100 / 1000.0)
        if plain != frame:
            raise RuntimeError("decrypted frame differs from the original")
    samples.sort()
    return {"median_us": round(statistics.median(samples), 2),
            "p90_us": round(samples[int(0.9 * len(samples))], 2),
            "wire_bytes": len(cipher.encrypt(frame, 2))}


def _serve_cpu(calls: int, window: float, trunk: bool, encrypted: bool,
               work: Path) -> dict[str, Any]:
    opts = LoadtestOptions(trunk=trunk, encryption=encrypted or None)
    b_dir = write_site(work / "office-b", "office-b", opts, A_IP, B_IP)
    a_dir = write_site(work / "office-a", "office-a", opts, A_IP, B_IP)
    ctl = str(work / "b.sock")
    serve = subprocess.Popen(
        [sys.executable, "-m", "iaxgw.gateway.cli", "serve", "--peer", "office-a",
         "--config", str(b_dir), "--control", ctl, "--spool", str(work / "spool")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    hold = window + 15.0
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(ctl):
            if serve.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"iaxgw serve did not start: {serve.communicate()[1]}")
            time.sleep(0.05)
        argv = [sys.executable, "-m", "iaxgw.gateway.cli", "loadtest", "--config", str(a_dir),
                "--peer", "office-b", "--calls", str(calls), "--rate", "40",
                "--duration", f"{hold:g}", "--trunk" if trunk else "--no-trunk", "--quiet",
                "--json", "--allow-underrun"]
        if encrypted:
            argv.append("--encryption")
        lt = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)
        time.sleep(calls / 40.0 + 3.0)          # ramp, then the window while all are up
        t0, c0 = time.monotonic(), cpu_ticks(serve.pid)
        time.sleep(window)
        cpu = 100.0 * (cpu_ticks(serve.pid) - c0) / CLK_TCK / (time.monotonic() - t0)
        out, _ = lt.communicate(timeout=hold + 120)
        summary = json.loads(out)
        return {"serve_cpu_pct": round(cpu, 1), "answered": summary["answered"],
                "encrypted": summary["encryption"]["encrypted"],
                "audio_verified": summary["audio"]["verified"]}
    finally:
        serve.terminate()
        serve.wait(20)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--trunk", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    res: dict[str, Any] = {"frame": frame_cost_us(), "calls": args.calls,
                           "window_s": args.window, "trunk": args.trunk}
    print("encrypt + decrypt of a 160-byte voice mini frame:", res["frame"])
    for label, enc in (("clear", False), ("encrypted", True)):
        with tempfile.TemporaryDirectory(prefix="iaxgw-crypto-") as tmp:
            res[label] = _serve_cpu(args.calls, args.window, args.trunk, enc, Path(tmp))
        print(f"serve at {args.calls} {label} calls:", res[label])
    if res["clear"]["serve_cpu_pct"]:
        res["ratio"] = round(res["encrypted"]["serve_cpu_pct"] / res["clear"]["serve_cpu_pct"], 2)
        print("serve CPU encrypted / clear:", res["ratio"])
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
