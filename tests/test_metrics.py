"""Prometheus metrics: private registry, counters by kind, snapshot values, HTTP on 127.0.0.1."""

from __future__ import annotations

import urllib.request

from iaxgw._core.constants import IE, FrameType, IAXSubclass
from iaxgw._core.frames import build_full, build_mini
from iaxgw._core.ies import build_ies
from iaxgw.gateway.serve.prometheus import Metrics, datagram_kind, peer_up


def _has_samples(text: str, samples: list[str]) -> None:
    lines = set(text.splitlines())
    missing = [line for line in samples if line not in lines]
    assert not missing, (missing, text)


def test_kinds_and_scrape() -> None:
    assert datagram_kind(build_full(2, 0, 0, 0, 0, 6, 30)) == "full"
    assert datagram_kind(build_mini(5, 1, b"x")) == "mini"
    assert datagram_kind(b"\x00\x00\x01\x00" + bytes(4)) == "trunk"
    m = Metrics()
    m.on_datagram("in", build_mini(5, 1, b"x" * 160))
    m.on_datagram("out", build_full(2, 0, 0, 0, 0, 6, 30))
    m.call_ended("in", "answered")
    m.calls_active.set(2)
    m.update_snapshot({"retransmissions": 3, "trunk_datagrams_out": 7, "drop_oversize": 2,
                       "calltoken_issued": 5, "pokes_sent": 9, "callnos_in_use": 4},
                      [{"name": "office-a", "status": "OK (4 ms)", "rtt_ms": 4},
                       {"name": "far", "status": "UNREACHABLE", "rtt_ms": -1},
                       {"name": "quiet", "status": "Unmonitored", "rtt_ms": 0}])
    host, port = m.start_http(0)
    assert host == "127.0.0.1"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        m.stop_http()
    _has_samples(text, [
        'iaxgw_frames_total{direction="in",kind="mini"} 1.0',
        'iaxgw_frames_total{direction="out",kind="full"} 1.0',
        'iaxgw_calls_total{direction="in",outcome="answered"} 1.0',
        "iaxgw_calls_active 2.0",
        "iaxgw_retransmissions_total 3.0",
        'iaxgw_trunk_datagrams_total{direction="out"} 7.0',
        'iaxgw_peer_rtt_seconds{peer="office-a"} 0.004'])
    # unreachable or unqualified: no RTT sample (not measured is not a number)
    assert 'iaxgw_peer_rtt_seconds{peer="far"}' not in text
    assert 'iaxgw_peer_rtt_seconds{peer="quiet"}' not in text
    assert 'iaxgw_peer_up{peer="office-a"} 1.0' in text
    assert 'iaxgw_peer_up{peer="far"} 0.0' in text
    assert 'iaxgw_peer_up{peer="quiet"}' not in text
    assert 'iaxgw_dropped_datagrams_total{reason="oversize"} 2.0' in text
    assert 'iaxgw_calltoken_events_total{result="issued"} 5.0' in text
    assert 'iaxgw_protocol_events_total{event="pokes_sent"} 9.0' in text
    assert "iaxgw_callnos_in_use 4.0" in text
    assert "# TYPE iaxgw_protocol_events_total counter" in text
    # a private registry: nothing from the process-wide default one
    assert "python_gc_objects_collected_total" not in text


def _iax(sub: IAXSubclass, ies: bytes = b"", retransmit: bool = False) -> bytes:
    return build_full(2, 3, 100, 1, 1, int(FrameType.IAX), int(sub), ies, retransmit)


def test_hangups_and_rejects_by_cause() -> None:
    m = Metrics()
    m.on_datagram("in", _iax(IAXSubclass.HANGUP, build_ies([(IE.CAUSECODE, 16)])))
    m.on_datagram("in", _iax(IAXSubclass.HANGUP, build_ies([(IE.CAUSECODE, 16)]), True))
    m.on_datagram("out", _iax(IAXSubclass.HANGUP, build_ies([(IE.CAUSECODE, 17)])))
    m.on_datagram("out", _iax(IAXSubclass.REJECT, build_ies([(IE.CAUSE, "No authority found"),
                                                              (IE.CAUSECODE, 50)])))
    m.on_datagram("out", _iax(IAXSubclass.REJECT))
    m.on_datagram("in", _iax(IAXSubclass.REJECT, b"\x2a\x05junk"))   # bad IE: still counted
    text = m.render().decode()
    # the retransmitted HANGUP is one more IAX frame, not one more hangup
    _has_samples(text, [
        'iaxgw_hangups_total{cause="16",direction="in"} 1.0',
        'iaxgw_iax_frames_total{direction="in",subclass="HANGUP"} 2.0',
        'iaxgw_hangups_total{cause="17",direction="out"} 1.0',
        'iaxgw_rejects_total{cause="50",direction="out"} 1.0',
        'iaxgw_rejects_total{cause="none",direction="out"} 1.0',
        'iaxgw_rejects_total{cause="none",direction="in"} 1.0'])


def test_peer_up_words() -> None:
    assert peer_up("OK (3 ms)") == 1.0 and peer_up("LAGGED (2300 ms)") == 1.0
    assert peer_up("UNREACHABLE") == 0.0
    assert peer_up("UNKNOWN") is None and peer_up("Unmonitored") is None and peer_up("") is None
