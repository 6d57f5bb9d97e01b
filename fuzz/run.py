"""Run the fuzz targets for a bounded time each and fail on any crash.

    python3 fuzz/run.py --all --seconds 60          # each target 60 s, one after another
    python3 fuzz/run.py --target ies --seconds 600
    python3 fuzz/run.py --all --seconds 3600 --jobs 2

``--seconds`` is per target.  The corpus grows under ``fuzz/corpus/<target>/`` (gitignored);
the seeds are ``tests/vectors/*.bin`` plus ``fuzz/corpus/seeds/``.  Crash inputs are written to
``fuzz/crashes/``.  A summary (executions, coverage, crashes per target) is printed and written
to ``fuzz/last-run.json``.

Each target runs in two stages when ``--asan DIR`` is given (``fuzz/run.sh`` does that):

1. coverage-guided, 2/3 of the time, against the normal build: atheris instruments the Python
   twins and the gateway, so inputs that reach new twin/Endpoint paths (and, by the cross-check,
   the matching compiled paths) grow the corpus;
2. under AddressSanitizer + UBSan, 1/3 of the time: the whole corpus is executed and mutated
   against ``DIR`` (the ASan build), with libasan preloaded and ``PYTHONMALLOC=malloc``.  gcc's
   libasan defines the sanitizer-coverage hooks itself, which leaves libFuzzer without coverage
   feedback in this stage: it mutates the corpus of stage 1 but does not grow it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGETS = ["frames", "ies", "trunk", "trunk_media", "g711", "endpoint", "endpoint_encrypted"]
_DONE = re.compile(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)")
_STAT = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)")


def _seed_dir(tmp: Path) -> Path:
    seeds = tmp / "seeds"
    seeds.mkdir()
    for p in sorted((ROOT / "tests" / "vectors").glob("*.bin")):
        shutil.copy(p, seeds / p.name)
    extra = HERE / "corpus" / "seeds"
    if extra.is_dir():
        for p in sorted(extra.iterdir()):
            if p.is_file() and not p.name.startswith("."):
                shutil.copy(p, seeds / ("seed_" + p.name))
    return seeds


def asan_env(build: str) -> dict[str, str]:
    """The environment of the ASan stage: libasan preloaded, the ASan build first on the path."""
    libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                             text=True, check=True).stdout.strip()
    env = dict(os.environ)
    env.update({
        "LD_PRELOAD": libasan,
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1:symbolize=1:quarantine_size_mb=64"
                        ":allocator_may_return_null=1",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
        "PYTHONMALLOC": "malloc",
        "PYTHONPATH": build + os.pathsep + env.get("PYTHONPATH", ""),
        "IAXGW_FUZZ_EXPECT_ASAN": build,
    })
    return env


def run_target(name: str, seconds: int, seeds: Path, log_dir: Path, stage: str = "cov",
               env: dict[str, str] | None = None) -> dict[str, object]:
    corpus = HERE / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    crashes = HERE / "crashes"
    crashes.mkdir(exist_ok=True)
    log = log_dir / f"{name}-{stage}.log"
    dirs = [str(corpus), str(seeds)]
    scratch = None
    if stage == "asan":       # no coverage feedback: keep its "new" units out of the corpus
        scratch = tempfile.mkdtemp(prefix=f"iaxgw-asan-{name}-")
        dirs.insert(0, scratch)
    cmd = [sys.executable, str(HERE / "fuzz_one.py"), name,
           f"-max_total_time={seconds}", "-timeout=20", "-rss_limit_mb=3072",
           "-max_len=4096", "-print_final_stats=1",
           f"-artifact_prefix={crashes}/{name}-{stage}-", *dirs]
    t0 = time.monotonic()
    try:
        with open(log, "w") as fh:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                timeout=seconds + 600).returncode
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    text = log.read_text(errors="replace")
    m = _DONE.search(text)
    stats = _STAT.findall(text)
    last = m.groups() if m else (stats[-1] if stats else ("0", "0", "0", "0"))
    units = re.search(r"stat::number_of_executed_units: (\d+)", text)
    if units:
        last = (units.group(1), *last[1:])
    crashed = rc != 0
    return {
        "target": name, "stage": stage, "seconds": round(time.monotonic() - t0, 1),
        "returncode": rc,
        "executions": int(last[0]), "cov": int(last[1]), "ft": int(last[2]),
        "corpus": int(last[3]), "crashed": crashed,
        "asan_report": "AddressSanitizer" in text or "runtime error:" in text,
        "log": str(log),
        "tail": text[-3000:] if crashed else "",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=60, help="fuzzing time per target")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--all", action="store_true", help="every target (the default)")
    g.add_argument("--target", action="append", choices=TARGETS)
    ap.add_argument("--jobs", type=int, default=1, help="targets run in parallel")
    ap.add_argument("--asan", metavar="DIR", help="ASan build (fuzz/asan-build) for stage 2")
    args = ap.parse_args(argv)
    names = args.target or TARGETS
    env = asan_env(str(Path(args.asan).resolve())) if args.asan else None
    jobs: list[tuple[str, int, str]] = []
    for n in names:
        if env is None:
            jobs.append((n, args.seconds, "cov"))
        else:
            cov = max(1, args.seconds * 2 // 3)
            jobs += [(n, cov, "cov"), (n, max(1, args.seconds - cov), "asan")]
    tmp = Path(tempfile.mkdtemp(prefix="iaxgw-fuzz-"))
    try:
        seeds = _seed_dir(tmp)
        log_dir = HERE / "logs"
        log_dir.mkdir(exist_ok=True)
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            results = list(pool.map(
                lambda j: run_target(j[0], j[1], seeds, log_dir, j[2],
                                     env if j[2] == "asan" else None), jobs))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    asan = env["IAXGW_FUZZ_EXPECT_ASAN"] if env else ""
    print(f"{'target':10} {'stage':5} {'seconds':>8} {'executions':>11} {'cov':>6} {'ft':>6} "
          f"{'corpus':>7}  result")
    for r in results:
        print(f"{r['target']:10} {r['stage']:5} {r['seconds']:>8} {r['executions']:>11} "
              f"{r['cov']:>6} {r['ft']:>6} {r['corpus']:>7}  {'CRASH' if r['crashed'] else 'ok'}")
    total = sum(int(r["executions"]) for r in results)  # type: ignore[call-overload]
    print(f"total executions {total}; stage 2 against "
          f"{'the ASan/UBSan build ' + asan if asan else '(none: no --asan)'}")
    (HERE / "last-run.json").write_text(json.dumps(
        {"asan_build": asan, "results": results}, indent=1))
    bad = [r for r in results if r["crashed"]]
    for r in bad:
        print(f"\n==== {r['target']} crashed (rc {r['returncode']}), log {r['log']}:\n"
              f"{r['tail']}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
