"""One scenario with the lab's Asterisk 22 as office-b, then with ``iaxgw serve`` as office-b,
office-a the real Asterisk both times (``iaxgw.sim.lab.sidebyside``); prints the comparison.

Usage (root, provisioned lab)::

    python3 bench/side_by_side.py burst [--calls 200] [--burst 50] [--json PATH] [--keep DIR]
    python3 bench/side_by_side.py wrong-secret | acl | qualify

Exit code 0 when the outcomes are the same.  Takes the lab lock (as the test fixtures do).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from iaxgw.sim.lab.lab import Lab
from iaxgw.sim.lab.sidebyside import Scenario, run_side_by_side


def scenario(name: str, calls: int, burst: int) -> Scenario:
    if name == "burst":
        return Scenario(f"{calls} calls in bursts of {burst}", calls=calls, burst=burst,
                        hold_s=2.0)
    if name == "wrong-secret":
        return Scenario(name, calls=2, hold_s=0.0, a={"secret": "not-the-shared-secret"})
    if name == "acl":
        return Scenario(name, calls=2, hold_s=0.0, b={"permit": ("127.0.0.99/255.255.255.255",)})
    return Scenario(name, calls=0, down_cycle=True,
                    a={"extra_peer": ("qualifyfreqok = 2000", "qualifyfreqnotok = 2000")})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("case", choices=["burst", "wrong-secret", "acl", "qualify"])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--burst", type=int, default=50)
    ap.add_argument("--json", help="write both outcomes and the differences here")
    ap.add_argument("--keep", help="keep the captures and serve's log in this folder")
    args = ap.parse_args(argv)
    lab = Lab()
    reason = lab.unavailable_reason()
    if reason is not None:
        print(f"lab unavailable: {reason}", file=sys.stderr)
        return 2
    with lab.lock(wait=600.0):
        cmp_ = run_side_by_side(lab, scenario(args.case, args.calls, args.burst),
                                Path(args.keep) if args.keep else None)
    print(cmp_.text())
    if args.json:
        Path(args.json).write_text(json.dumps({
            "asterisk": cmp_.asterisk.as_dict(), "iaxgw": cmp_.iaxgw.as_dict(),
            "diffs": cmp_.diffs}, indent=2))
    return 0 if cmp_.same else 1


if __name__ == "__main__":
    sys.exit(main())
