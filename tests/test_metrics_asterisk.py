"""The load test's Prometheus metrics and --pcap against the lab's Asterisk 22 office-a: two
calls to its echo (200), one to its Busy (202), one to its Congestion (203)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_metrics_e2e import check_pcap, check_run_metrics, run_scraped

from iaxgw.sim.loadtest_plan import LoadtestOptions

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(180)]


def test_loadtest_metrics_against_asterisk(asterisk_factory: Any, tmp_path: Path) -> None:
    asterisk_factory("office-a")
    opts = LoadtestOptions(calls=4, total=4, rate=10, duration=(4.0, 4.0), quiet=True,
                           live=False, extens=["200", "202", "200", "203"], peer="office-a",
                           peer_host=("127.0.0.10", 4569), bind=("127.0.0.20", 4569),
                           max_failed=4, metrics_addr=("127.0.0.1", 0),
                           pcap=tmp_path / "b.pcap")
    opts.check()
    res, live, after, _url = run_scraped(opts, calls_up=2)
    print({k: v for k, v in live.items() if k.startswith("iaxgw_loadtest")})
    check_run_metrics(res, live, after, attempts=4, answered=2,
                      failed={"BUSY": 1, "CONGESTION": 1})
    check_pcap(tmp_path / "b.pcap", ("127.0.0.20", 4569), ("127.0.0.10", 4569), calls=4)
