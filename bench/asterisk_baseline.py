#!/usr/bin/env python3
"""Baseline of two real Asterisk 22 sites trunking N calls (needs root and ``iaxgw lab provision``).

    python3 bench/asterisk_baseline.py --calls 200 --window 10

Prints calls up, CPU% of each Asterisk over the window, and datagrams/s from a tshark capture.
The measuring code lives in ``iaxgw.sim.lab.asterisk_baseline`` so other benchmarks can reuse it.
"""

from __future__ import annotations

import argparse
import json
import sys

from iaxgw.sim.lab.asterisk_baseline import run_baseline
from iaxgw.sim.lab.lab import LabError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200, help="calls to put up (default 200)")
    ap.add_argument("--window", type=float, default=10.0, help="CPU window in s (default 10)")
    ap.add_argument("--capture-seconds", type=float, default=3.0,
                    help="tshark capture length for datagrams/s, 0 to skip (default 3)")
    ap.add_argument("--root", default=None, help="lab root (default /var/cache/iaxgw)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    try:
        result = run_baseline(args.calls, args.window, capture_seconds=args.capture_seconds,
                              root=args.root, log=lambda m: print(m, file=sys.stderr))
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.as_dict(), indent=1) if args.json else result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
