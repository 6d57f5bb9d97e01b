"""A cluster run against the lab's real Asterisk 22 (office-a, 127.0.0.10:4569): a master and two
``iaxgw worker``s as separate processes on loopback, the workers from 127.0.0.20 and 127.0.0.21
(office-a's ``permit`` lets both in).  Every call answered and verified; the merged report
against each worker's shard entry and the pooled percentiles of calls.csv."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_cluster import CLI, Cluster

from iaxgw.gateway.conf.config import default_config_dir

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(240),
              pytest.mark.skipif(importlib.util.find_spec("locust") is None,
                                 reason="Locust not installed: pip install 'iaxgw[cluster]'")]


def test_master_two_workers_against_asterisk(asterisk_factory: Any, tmp_path: Path) -> None:
    inst = asterisk_factory("office-a", permit=("127.0.0.20/255.255.255.255",
                                                "127.0.0.21/255.255.255.255"))
    site = {"a": default_config_dir("office-b"), "net": "127.0.0", "peer": "office-a"}
    report = tmp_path / "rep"
    c = Cluster(site, report, ["127.0.0.20", "127.0.0.21"], "-l", "10", "-r", "20", "-d", "5",
                "--exten", "200", "--peer-host", "127.0.0.10:4569")
    try:
        out = c.wait()
    finally:
        c.kill_all()
    assert c.master.returncode == 0, f"{out}\n{inst.log_tail(10)}"
    s = json.loads((report / "summary.json").read_text())
    assert sorted(sh["local"] for sh in s["shards"]) == ["127.0.0.20:4569", "127.0.0.21:4569"]
    assert s["answered"] == 10 == sum(sh["answered"] for sh in s["shards"])
    assert s["attempted"] == sum(sh["attempted"] for sh in s["shards"])
    assert s["audio"]["verified"] == 10 and not s["causes"]
    with (report / "calls.csv").open() as fh:
        calls = list(csv.DictReader(fh))
    assert len(calls) == 10 and {c["exten"] for c in calls} == {"200"}
    setups = [float(r["answer_ms"]) for r in calls]
    assert s["setup_ms"]["p95"] == pytest.approx(np.percentile(setups, 95), rel=1e-5)
    assert CLI[-1] == "iaxgw.gateway.cli"
