"""Prometheus metrics: private registry, counters by kind, snapshot values, HTTP on 127.0.0.1."""

from __future__ import annotations

import urllib.request

from iaxgw._core.frames import build_full, build_mini
from iaxgw.gateway.metrics import Metrics, datagram_kind


def test_kinds_and_scrape() -> None:
    assert datagram_kind(build_full(2, 0, 0, 0, 0, 6, 30)) == "full"
    assert datagram_kind(build_mini(5, 1, b"x")) == "mini"
    assert datagram_kind(b"\x00\x00\x01\x00" + bytes(4)) == "trunk"
    m = Metrics()
    m.on_datagram("in", build_mini(5, 1, b"x" * 160))
    m.on_datagram("out", build_full(2, 0, 0, 0, 0, 6, 30))
    m.call_ended("in", "answered")
    m.calls_active.set(2)
    m.update_snapshot({"retransmissions": 3, "trunk_datagrams_out": 7},
                      [{"name": "office-a", "rtt_ms": 4}, {"name": "far", "rtt_ms": -1}])
    port = m.start_http(0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        m.stop_http()
    assert 'iaxgw_frames_total{direction="in",kind="mini"} 1.0' in text
    assert 'iaxgw_frames_total{direction="out",kind="full"} 1.0' in text
    assert 'iaxgw_calls_total{direction="in",outcome="answered"} 1.0' in text
    assert "iaxgw_calls_active 2.0" in text
    assert "iaxgw_retransmissions_total 3.0" in text
    assert 'iaxgw_trunk_datagrams_total{direction="out"} 7.0' in text
    assert 'iaxgw_peer_rtt_seconds{peer="office-a"} 0.004' in text
    assert 'iaxgw_peer_rtt_seconds{peer="far"} -1.0' in text
    # a private registry: nothing from the process-wide default one
    assert "python_gc_objects_collected_total" not in text
