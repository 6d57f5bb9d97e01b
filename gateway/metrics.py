"""Prometheus metrics of a running gateway, on a private registry served at 127.0.0.1:N.

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

from iaxgw._core.frames import DatagramKind, classify

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


class _SnapshotCollector(Collector):
    """Exposes the last snapshot of the endpoint's own counters and the peers' RTT."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[str, float] = {}
        self._rtt: dict[str, float] = {}

    def set(self, stats: dict[str, float], rtt: dict[str, float]) -> None:
        with self._lock:
            self._stats = stats
            self._rtt = rtt

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            stats, rtt = dict(self._stats), dict(self._rtt)
        retrans = CounterMetricFamily("iaxgw_retransmissions", "Full frames sent again")
        retrans.add_metric([], stats.get("retransmissions", stats.get("retransmits", 0.0)))
        yield retrans
        trunk = CounterMetricFamily("iaxgw_trunk_datagrams",
                                    "Trunk (meta) datagrams by direction", labels=["direction"])
        for direction in ("in", "out"):
            trunk.add_metric([direction], stats.get(f"trunk_datagrams_{direction}", 0.0))
        yield trunk
        core = GaugeMetricFamily("iaxgw_endpoint_stat",
                                 "Every numeric counter of the protocol endpoint",
                                 labels=["name"])
        for key in sorted(stats):
            core.add_metric([key], stats[key])
        yield core
        gauge = GaugeMetricFamily("iaxgw_peer_rtt_seconds",
                                  "Last qualify round-trip time per peer (-1 = unreachable)",
                                  labels=["peer"])
        for peer in sorted(rtt):
            gauge.add_metric([peer], rtt[peer])
        yield gauge


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

    def call_ended(self, direction: str, outcome: str) -> None:
        self.calls_total.labels(direction, outcome).inc()

    def update_snapshot(self, stats: Mapping[str, Any], peers: Iterable[Mapping[str, Any]]) -> None:
        flat: dict[str, float] = {}
        _flat_numbers("", stats, flat)
        rtt: dict[str, float] = {}
        for peer in peers:
            name = str(peer.get("name", "?"))
            ms = peer.get("lastms", peer.get("rtt_ms"))
            if ms is None:
                continue
            rtt[name] = -1.0 if int(ms) < 0 else int(ms) / 1000.0
        self._snapshot.set(flat, rtt)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))

    def start_http(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``addr:port`` (0 = any free port); returns the bound port."""
        from prometheus_client import start_http_server

        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server, self._thread = server, thread
        return int(server.server_address[1])

    def stop_http(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
