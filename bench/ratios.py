"""Run every ``bench/bench_*.py`` with pytest-benchmark and print one table of speed ratios.

Convention (also used by ``bench_frames.py``): each benchmark sets ``benchmark.group`` and is
parametrized with an implementation id; ``c`` is the compiled core and every other id in the same
group (``py`` = pure-Python twin, ``numpy``, ``audioop``) is a baseline measured in the same run.
The ratio is baseline median / compiled median.  Targets come from ``TARGETS`` (group prefix,
baseline) or from ``benchmark.extra_info["target"]`` set on a baseline benchmark.

Usage: ``python3 bench/ratios.py [--json PATH] [--max-time SECONDS] [--from-json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
COMPILED_ID = "c"

# (group prefix, baseline id) -> (minimum ratio, note); the longest matching prefix wins
TARGETS: dict[tuple[str, str], tuple[float, str]] = {
    ("parse NEW", "py"): (20.0, ""),
    ("trunk demux", "py"): (20.0, ""),
    ("trunk mux tick", "py"): (20.0, ""),
    ("g711", "numpy"): (3.0, ""),
    ("g711 ulaw encode 1M", "audioop"): (10.0, ""),
    ("g711 ulaw->alaw", "audioop"): (10.0, ""),
    ("g711 ulaw decode 1M", "audioop"): (10.0, "audioop decode is a C table too"),
    ("g711 ulaw encode 160", "audioop"): (1.0, "not slower"),
    ("g711 ulaw decode 160", "audioop"): (1.0, "not slower"),
}


def _impl_id(bench: dict[str, Any]) -> str:
    param = bench.get("param")
    if param:
        return str(param).split("-")[-1]
    found = re.findall(r"\[(.*)\]", str(bench.get("name", "")))
    return found[0].split("-")[-1] if found else ""


def _target(group: str, baseline: str, extra: dict[str, Any]) -> tuple[float | None, str]:
    if "target" in extra:
        return float(extra["target"]), str(extra.get("note", ""))
    best: tuple[int, float, str] | None = None
    for (prefix, base), (value, note) in TARGETS.items():
        if base == baseline and group.startswith(prefix) and (
            best is None or len(prefix) > best[0]
        ):
            best = (len(prefix), value, note)
    return (best[1], best[2]) if best else (None, "")


def run(json_path: Path, max_time: float) -> int:
    files = sorted(str(p) for p in BENCH.glob("bench_*.py"))
    cmd = [
        sys.executable, "-m", "pytest", *files, "-q", "-p", "no:randomly", "-p", "no:warnings",
        "-o", "addopts=", "--benchmark-only", f"--benchmark-json={json_path}",
        f"--benchmark-max-time={max_time}", "--benchmark-min-rounds=5",
    ]
    return subprocess.run(cmd, cwd=BENCH.parent, stdout=subprocess.DEVNULL).returncode


def table(json_path: Path) -> int:
    data = json.loads(json_path.read_text())
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for b in data["benchmarks"]:
        groups.setdefault(str(b["group"]), {})[_impl_id(b)] = b
    head = ("group", "compared", "c µs", "base µs", "ratio", "target", "", "note")
    rows: list[tuple[str, ...]] = []
    misses = 0
    for group in sorted(groups):
        impls = groups[group]
        if COMPILED_ID not in impls:
            continue
        c_med = float(impls[COMPILED_ID]["stats"]["median"])
        for base, b in sorted(impls.items()):
            if base == COMPILED_ID:
                continue
            b_med = float(b["stats"]["median"])
            ratio = b_med / c_med
            target, note = _target(group, base, dict(b.get("extra_info") or {}))
            verdict = "-" if target is None else ("PASS" if ratio >= target else "MISS")
            misses += verdict == "MISS"
            rows.append((
                group, f"c vs {base}", f"{c_med * 1e6:,.2f}", f"{b_med * 1e6:,.2f}",
                f"{ratio:,.1f}x", "-" if target is None else f">= {target:g}x", verdict, note,
            ))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    print(f"\n{len(rows)} ratios, {misses} below target (medians; same run)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description="compiled-vs-baseline speed ratios")
    ap.add_argument("--json", type=Path, help="keep the pytest-benchmark JSON here")
    ap.add_argument("--max-time", type=float, default=0.3, help="seconds per benchmark")
    ap.add_argument("--from-json", type=Path, help="only print the table of an earlier run")
    args = ap.parse_args()
    if args.from_json:
        return table(args.from_json)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.json or Path(tmp) / "bench.json"
        rc = run(path, args.max_time)
        if not path.exists():
            print(f"pytest failed (exit {rc}) before writing {path}", file=sys.stderr)
            return rc or 1
        table(path)
        return rc


if __name__ == "__main__":
    sys.exit(main())
