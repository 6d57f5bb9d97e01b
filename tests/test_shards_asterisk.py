"""Sharded load tests against the lab's real Asterisk 22 (office-a, 127.0.0.10:4569), whose
``permit`` lines let the shard addresses in: we are office-b from 127.0.0.20 and 127.0.0.21.

* two shards: every call answered and its audio verified, the merged report equal to the sum
  and the pooled percentiles of the shards' own reports;
* a shard address outside office-a's ACL: that shard's calls are refused by Asterisk (REJECT
  50), the permitted shard's calls are not -- the ACL is what lets a shard in.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from iaxgw.sim.load.loadtest import write_report_files
from iaxgw.sim.load.loadtest_plan import LoadtestOptions
from iaxgw.sim.scale.shards import run_sharded

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(240)]

A_HOST = ("127.0.0.10", 4569)
SHARDS = [("127.0.0.20", 4569), ("127.0.0.21", 4569)]


def _permit(*ips: str) -> tuple[str, ...]:
    return tuple(f"{ip}/255.255.255.255" for ip in ips)


def _opts(binds: list[tuple[str, int]], report: Path, **kw: Any) -> LoadtestOptions:
    o = LoadtestOptions(quiet=True, live=False, peer="office-a", peer_host=A_HOST,
                        bind=binds[0], binds=binds, extens=["200"], report_dir=report, **kw)
    o.check()
    return o


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_two_shards_against_asterisk(asterisk_factory: Any, tmp_path: Path) -> None:
    inst = asterisk_factory("office-a", permit=_permit("127.0.0.20", "127.0.0.21"))
    report = tmp_path / "rep"
    opts = _opts(SHARDS, report, calls=12, rate=20.0, duration=(5.0, 5.0))
    res = run_sharded(opts)
    write_report_files(opts, res)
    s, lt = res.summary, res.summary["loadtest"]
    detail = f"causes {s['causes']}, notes {lt['notes']}, log:\n{inst.log_tail(10)}"
    assert res.exit_code == 0, detail
    assert s["attempted"] == 12 and s["answered"] == 12, detail
    assert s["audio"]["verified"] == 12 and not s["audio"]["crossed"], detail
    assert [sh["local"] for sh in s["shards"]] == ["127.0.0.20:4569", "127.0.0.21:4569"]
    assert [sh["answered"] for sh in s["shards"]] == [6, 6]
    # the merged report against the shards' own
    own = [json.loads((report / "shards" / f"shard-{k}" / "summary.json").read_text())
           for k in range(2)]
    for key in ("attempted", "answered"):
        assert s[key] == sum(o[key] for o in own), key
    assert s["frames"]["expected"] == sum(o["frames"]["expected"] for o in own)
    assert s["frames"]["lost"] == sum(o["frames"]["lost"] for o in own)
    parts = [_csv(report / "shards" / f"shard-{k}" / "calls.csv") for k in range(2)]
    pooled = [float(r["answer_ms"]) for p in parts for r in p]
    assert s["setup_ms"]["p50"] == pytest.approx(np.percentile(pooled, 50), rel=1e-5)
    assert s["setup_ms"]["p95"] == pytest.approx(np.percentile(pooled, 95), rel=1e-5)
    mos = [float(r["mos"]) for p in parts for r in p]
    assert s["mos"]["p5"] == pytest.approx(np.percentile(mos, 5), rel=1e-5)
    assert len(_csv(report / "calls.csv")) == 12


def test_a_shard_outside_the_acl_is_refused(asterisk_factory: Any, tmp_path: Path) -> None:
    asterisk_factory("office-a", permit=_permit("127.0.0.20"))
    binds = [("127.0.0.20", 4569), ("127.0.0.22", 4569)]
    res = run_sharded(_opts(binds, tmp_path / "rep", calls=4, rate=10.0, duration=(2.0, 2.0)))
    by_local = {sh["local"]: sh for sh in res.summary["shards"]}
    assert by_local["127.0.0.20:4569"]["answered"] == 2
    assert by_local["127.0.0.22:4569"]["answered"] == 0
    refused = {k: v for k, v in res.summary["causes"].items() if k.startswith("REJECT")}
    assert sum(refused.values()) == 2 and all("50" in k for k in refused), refused
    assert res.exit_code == 1


# --- capacity search against an Asterisk limited by maxcalls --------------------------------


def _capacity_opts(binds: list[tuple[str, int]], report: Path) -> LoadtestOptions:
    return _opts(binds, report, step=4, step_time=4.0, max_calls=16,
                 stop_when="setup_fail_pct > 1 or mos_p5 < 3.5")


@pytest.mark.parametrize("shards", [1, 2], ids=["one-process", "two-shards"])
def test_capacity_search_finds_maxcalls(asterisk_factory: Any, tmp_path: Path,
                                        shards: int) -> None:
    """office-a's asterisk.conf says ``maxcalls = 8``: the 9th call gets no dialplan.  Steps
    of 4 calls every 4 s: 4 and 8 hold, 12 trips on setup failures."""
    binds = SHARDS[:shards]
    inst = asterisk_factory("office-a", maxcalls=8,
                            permit=_permit(*(ip for ip, _ in binds)))
    opts = _capacity_opts(binds, tmp_path / "rep")
    if shards == 1:
        import asyncio

        import uvloop

        from iaxgw.sim.load.loadtest import run_loadtest_async

        opts.binds = None
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
            res = r.run(run_loadtest_async(opts))
    else:
        res = run_sharded(opts)
    write_report_files(opts, res)
    cap = res.summary["capacity"]
    detail = f"{cap}, causes {res.summary['causes']}, log:\n{inst.log_tail(8)}"
    assert cap["calls"] == 8 and cap["failed_at"] == 12, detail
    assert "setup_fail_pct > 1" in cap["reason"], detail
    assert [s["calls"] for s in cap["steps"]] == [4, 8, 12], detail
    assert [s["held"] for s in cap["steps"]] == [True, True, False], detail
    assert cap["steps"][1]["calls_up"] == 8 and cap["steps"][1]["setup_fail_pct"] == 0.0
    assert res.exit_code == 0, res.summary["loadtest"]["fail_reasons"]
    assert (tmp_path / "rep" / "capacity.png").is_file()
    saved = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert saved["capacity"]["calls"] == 8


def test_asterisk_trunks_back_only_to_trunk_peer_hosts(asterisk_factory: Any,
                                                        tmp_path: Path) -> None:
    """Asterisk (the oracle for serve's rule, docs/protocol.md P6) trunks a call's echo back
    to its source only when a trunk peer's host is that source: with two shards and only
    office-b's entry, the second shard's echo comes as mini frames; with the lab's extra
    trunk peer per shard address (``shard_trunk_sections``, as ``iaxgw lab --asterisk
    --shards`` writes them) every echo comes trunked."""
    from iaxgw.sim.lab.loadtest_lab import shard_trunk_sections

    kinds = {}
    for label, with_peers in (("office-b only", False), ("a trunk peer per shard", True)):
        opts = _opts(SHARDS, tmp_path / label, calls=6, rate=20.0, duration=(3.0, 3.0))
        sections = shard_trunk_sections("office-b", [h for h, _ in SHARDS], opts, True)
        asterisk_factory("office-a", permit=_permit("127.0.0.20", "127.0.0.21"),
                         extra_sections=sections if with_peers else ())
        res = run_sharded(opts)
        assert res.summary["answered"] == 6, (label, res.summary["causes"])
        kinds[label] = res.summary["trunk"]["by_kind"]
    assert kinds["office-b only"].get("rx_mini", 0) > 50, kinds
    assert kinds["a trunk peer per shard"].get("rx_mini", 0) == 0, kinds
    assert kinds["a trunk peer per shard"].get("rx_trunk", 0) > 50, kinds
