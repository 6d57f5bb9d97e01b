"""Prometheus metrics of a running gateway or load test, on a private registry served over
HTTP at ``--metrics-addr HOST:PORT`` (``--metrics-port N``: 127.0.0.1:N).

Counters the app sees directly (datagrams in/out by kind, calls by outcome) are updated on the
event loop; numbers only the protocol core knows (retransmissions, trunk counters, peer RTT) are
copied from a snapshot the app refreshes about once a second (:meth:`Metrics.update_snapshot`),
so the HTTP thread never touches live protocol state.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from iaxgw._core.constants import FRAME_IAX, IE, IAXSubclass
from iaxgw._core.errors import FrameError
from iaxgw._core.frames import DatagramKind, classify, parse_full
from iaxgw._core.ies import parse_ies
from iaxgw.gateway.iax2.address import format_addr

_KIND_NAMES = {
    int(DatagramKind.FULL): "full",
    int(DatagramKind.MINI): "mini",
    int(DatagramKind.VIDEO_MINI): "video_mini",
    int(DatagramKind.META): "trunk",
    int(DatagramKind.TOO_SHORT): "runt",
}


def datagram_kind(data: bytes) -> str:
    """``full``, ``mini``, ``video_mini``, ``trunk`` (meta) or ``runt``."""
    try:
        return _KIND_NAMES.get(int(classify(data)), "other")
    except Exception:
        return "runt"


def _flat_numbers(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flat_numbers(f"{prefix}_{k}" if prefix else str(k), v, out)
    elif isinstance(value, bool):
        return
    elif isinstance(value, int | float):
        out[prefix] = float(value)


#: endpoint statistics that are levels, not counts: exported as gauges
_STAT_GAUGES = {"calls_active": ("iaxgw_endpoint_calls", "Calls the protocol endpoint holds"),
                "callnos_in_use": ("iaxgw_callnos_in_use", "Call numbers allocated now"),
                "trunk_max_datagram_bytes": ("iaxgw_trunk_max_datagram_bytes",
                                             "Largest trunk datagram sent (bytes)")}
#: counted elsewhere, by the datagram hook or by a family of their own
_STAT_SKIP = {"retransmissions", "trunk_datagrams_in", "trunk_datagrams_out"}


def peer_up(status: str) -> float | None:
    """1 for a qualified peer that answers (OK, LAGGED), 0 for UNREACHABLE, None (no sample)
    when it is not qualified or not poked yet (UNKNOWN, Unmonitored)."""
    word = status.split(" ", 1)[0]
    if word in ("OK", "LAGGED"):
        return 1.0
    if word == "UNREACHABLE":
        return 0.0
    return None


class _SnapshotCollector(Collector):
    """Exposes the last snapshot of the endpoint's own counters and the peers' state."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[str, float] = {}
        self._peers: dict[str, tuple[float | None, float | None]] = {}

    def set(self, stats: dict[str, float],
            peers: dict[str, tuple[float | None, float | None]]) -> None:
        with self._lock:
            self._stats = stats
            self._peers = peers

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            stats, peers = dict(self._stats), dict(self._peers)
        retrans = CounterMetricFamily("iaxgw_retransmissions", "Full frames sent again")
        retrans.add_metric([], stats.get("retransmissions", 0.0))
        yield retrans
        trunk = CounterMetricFamily("iaxgw_trunk_datagrams",
                                    "Trunk (meta) datagrams by direction", labels=["direction"])
        for direction in ("in", "out"):
            trunk.add_metric([direction], stats.get(f"trunk_datagrams_{direction}", 0.0))
        yield trunk
        yield from _stat_families(stats)
        yield from _peer_families(peers)


def _stat_families(stats: Mapping[str, float]) -> Iterator[Metric]:
    dropped = CounterMetricFamily("iaxgw_dropped_datagrams",
                                  "Datagrams or frames dropped, by reason", labels=["reason"])
    tokens = CounterMetricFamily("iaxgw_calltoken_events",
                                 "Call token exchanges by result", labels=["result"])
    events = CounterMetricFamily("iaxgw_protocol_events",
                                 "Every other counter of the protocol endpoint, by name",
                                 labels=["event"])
    for key in sorted(stats):
        value = stats[key]
        if key in _STAT_SKIP:
            continue
        if key in _STAT_GAUGES:
            name, doc = _STAT_GAUGES[key]
            gauge = GaugeMetricFamily(name, doc)
            gauge.add_metric([], value)
            yield gauge
        elif key.startswith("drop_"):
            dropped.add_metric([key[5:]], value)
        elif key.startswith("calltoken_"):
            tokens.add_metric([key[10:]], value)
        else:
            events.add_metric([key], value)
    yield dropped
    yield tokens
    yield events


def _peer_families(peers: Mapping[str, tuple[float | None, float | None]]) -> Iterator[Metric]:
    up = GaugeMetricFamily("iaxgw_peer_up",
                           "1 when qualify finds the peer (OK/LAGGED), 0 when UNREACHABLE; "
                           "no sample for a peer not qualified", labels=["peer"])
    rtt = GaugeMetricFamily("iaxgw_peer_rtt_seconds",
                            "Last qualify round trip of a reachable peer", labels=["peer"])
    for name in sorted(peers):
        state, seconds = peers[name]
        if state is not None:
            up.add_metric([name], state)
        if seconds is not None:
            rtt.add_metric([name], seconds)
    yield up
    yield rtt


class Metrics:
    """All gateway metrics, on a private :class:`CollectorRegistry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls_active = Gauge("iaxgw_calls_active", "Calls up now", registry=self.registry)
        self.calls_total = Counter("iaxgw_calls", "Calls by direction and outcome",
                                   ["direction", "outcome"], registry=self.registry)
        self.frames = Counter("iaxgw_frames", "Datagrams by direction and kind",
                              ["direction", "kind"], registry=self.registry)
        self.bytes = Counter("iaxgw_bytes", "UDP payload bytes by direction", ["direction"],
                             registry=self.registry)
        self.iax_frames = Counter("iaxgw_iax_frames",
                                  "IAX (type 6) full frames by direction and subclass, "
                                  "retransmissions included", ["direction", "subclass"],
                                  registry=self.registry)
        self.hangups = Counter("iaxgw_hangups", "HANGUP frames by direction and Q.931 cause "
                               "code (first transmissions only)", ["direction", "cause"],
                               registry=self.registry)
        self.rejects = Counter("iaxgw_rejects", "REJECT frames by direction and Q.931 cause "
                               "code, 'none' without one (first transmissions only)",
                               ["direction", "cause"], registry=self.registry)
        self._snapshot = _SnapshotCollector()
        self.registry.register(self._snapshot)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def on_datagram(self, direction: str, data: bytes) -> None:
        """Count one datagram (``direction`` ``"in"``/``"out"``).  Per-packet path: the labelled
        children are looked up once and kept (``labels()`` costs more than the count itself)."""
        kind = datagram_kind(data)
        children = self._children
        key = (direction, kind)
        pair = children.get(key)
        if pair is None:
            pair = children[key] = (self.frames.labels(direction, kind),
                                    self.bytes.labels(direction))
        pair[0].inc()
        pair[1].inc(len(data))
        if kind == "full" and len(data) >= 12 and data[10] == FRAME_IAX:
            self._on_iax_frame(direction, data)

    def _on_iax_frame(self, direction: str, data: bytes) -> None:
        try:
            frame = parse_full(data)
        except FrameError:
            return
        try:
            subclass = IAXSubclass(frame.subclass).name
        except ValueError:
            subclass = "unknown"
        self.iax_frames.labels(direction, subclass).inc()
        if subclass not in ("HANGUP", "REJECT") or frame.retransmit:
            return
        cause = "none"
        try:
            for ie, value in parse_ies(frame.payload):
                if ie == IE.CAUSECODE and isinstance(value, int):
                    cause = str(value)
        except (FrameError, ValueError):
            pass
        family = self.hangups if subclass == "HANGUP" else self.rejects
        family.labels(direction, cause).inc()

    def call_ended(self, direction: str, outcome: str) -> None:
        self.calls_total.labels(direction, outcome).inc()

    def update_snapshot(self, stats: Mapping[str, Any], peers: Iterable[Mapping[str, Any]]) -> None:
        flat: dict[str, float] = {}
        _flat_numbers("", stats, flat)
        states: dict[str, tuple[float | None, float | None]] = {}
        for peer in peers:
            name = str(peer.get("name", "?"))
            up = peer_up(str(peer.get("status") or ""))
            ms = peer.get("lastms", peer.get("rtt_ms"))
            seconds = int(ms) / 1000.0 if up == 1.0 and isinstance(ms, int | float) else None
            states[name] = (up, seconds)
        self._snapshot.set(flat, states)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))

    def start_http(self, port: int, addr: str = "127.0.0.1") -> tuple[str, int]:
        """Serve ``/metrics`` on ``addr:port`` (0 = any free port); returns the bound
        address and port."""
        from prometheus_client import start_http_server

        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server, self._thread = server, thread
        bound = server.server_address
        return str(bound[0]), int(bound[1])

    def stop_http(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None


def metrics_url(host: str, port: int) -> str:
    """``http://HOST:PORT/metrics``, an IPv6 host in brackets."""
    return f"http://{format_addr((host, port))}/metrics"
