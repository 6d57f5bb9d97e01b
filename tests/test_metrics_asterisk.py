"""The load test's Prometheus metrics and --pcap against the lab's Asterisk 22 office-a: two
calls to its echo (200), one to its Busy (202), one to its Congestion (203)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_metrics_e2e import check_pcap, check_run_metrics, run_scraped

from iaxgw.sim.load.loadtest_plan import LoadtestOptions

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


def test_serve_metrics_for_calls_from_asterisk(lab: Any, tmp_path: Path) -> None:
    """office-a (the lab's Asterisk) places two calls to serve's echo and hangs them up:
    serve's scrape counts them, their HANGUPs by the cause each call ended with, office-a up
    with the round trip `iaxgw show peers` shows."""
    import time
    from collections import Counter

    from test_metrics_e2e import scrape
    from test_serve_interop_matrix import Gw

    from iaxgw.gateway.serve.prometheus import metrics_url
    from iaxgw.sim.lab.labconfig import seed_site

    inst = lab.instance("office-a", seed_site("office-a")).start()
    try:
        gw = Gw(tmp_path)
        gw.app.metrics_addr = ("127.0.0.1", 0)
        with gw:
            assert gw.app.metrics_bound is not None
            url = metrics_url(*gw.app.metrics_bound)
            inst.wait_peer_ok("office-b", timeout=30)
            gw.wait(lambda: gw.peer_status().startswith("OK"), 30, "our peer office-a OK")
            for _ in range(2):
                inst.originate("Local/300@internal", "Milliwatt")
            gw.wait(lambda: len(gw.incoming()) == 2, 15, "two calls from office-a")
            time.sleep(1.0)
            inst.hangup_all()
            gw.wait(lambda: len(gw.ended()) == 2, 15, "both calls ended")
            causes = Counter(str(e.cause) for e in gw.ended().values())
            deadline = time.monotonic() + 5
            samples = scrape(url)
            while samples.get("iaxgw_endpoint_calls") != 0.0 and time.monotonic() < deadline:
                time.sleep(0.25)
                samples = scrape(url)
            lastms = gw.call(gw.app.peer_rows)[0]["lastms"]
    finally:
        inst.stop()
    print(causes, {k: v for k, v in samples.items() if "hangups" in k or "calls_total" in k})
    for cause, n in causes.items():
        assert samples[f'iaxgw_hangups_total{{cause="{cause}",direction="in"}}'] == float(n)
    assert sum(v for k, v in samples.items()
               if k.startswith('iaxgw_calls_total{direction="in"')) == 2.0
    assert samples['iaxgw_iax_frames_total{direction="in",subclass="NEW"}'] >= 2.0
    assert samples['iaxgw_peer_up{peer="office-a"}'] == 1.0
    assert samples['iaxgw_peer_rtt_seconds{peer="office-a"}'] == lastms / 1000.0
