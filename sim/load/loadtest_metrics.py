"""Prometheus metrics of a running load test (``iaxgw loadtest --metrics-addr HOST:PORT``).

The registry is the gateway's (:class:`iaxgw.gateway.serve.prometheus.Metrics`: the protocol
endpoint's counters, peers up and their qualify round trip) plus the run's own figures:

- counters: calls attempted (NEW sent), answered, failed by outcome and Q.931 cause;
- gauges: calls up, calls in setup, the concurrency asked for, and over the calls up the median
  jitter and MOS, the lowest MOS, and the loss of the last second (no sample while a figure
  is not measurable);
- histograms: setup time (NEW -> ANSWER) of the answered calls, counted once a second; MOS,
  jitter and loss of the ended calls.

The snapshot figures are copied from the once-a-second statistics tick; the HTTP thread never
touches live call state.

A run over several shards serves the metrics from its parent (:meth:`LoadtestMetrics.on_merged`):
the merged second's snapshot (the live screen's), the setup times the shards measured in it,
and each ended call as its shard reports it (:func:`ended_entry`), so the run's own figures are
the single process's.  The protocol endpoint's counters and peers are each shard's own and are
not exported there.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from iaxgw.gateway.iax2.address import format_addr
from iaxgw.gateway.serve.control import to_jsonable
from iaxgw.gateway.serve.prometheus import Metrics, metrics_url
from iaxgw.sim.load.metrics import CallRecord
from iaxgw.sim.report.report import Snapshot

_SETUP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_MOS_BUCKETS = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.3, 4.4, 4.5)
_JITTER_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
_LOSS_BUCKETS = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


class _SnapshotCollector(Collector):
    """The last statistics tick's figures (``Snapshot``)."""

    def __init__(self, target_calls: int) -> None:
        self._lock = threading.Lock()
        self._snap: Snapshot | None = None
        self._target = target_calls

    def set(self, snap: Snapshot) -> None:
        with self._lock:
            self._snap = snap

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snap = self._snap
        yield _gauge("iaxgw_loadtest_calls_target", "Concurrent calls asked for (--calls)",
                     float(self._target))
        attempted = CounterMetricFamily("iaxgw_loadtest_calls_attempted",
                                        "Call attempts (NEW sent)")
        answered = CounterMetricFamily("iaxgw_loadtest_calls_answered", "Calls answered")
        attempted.add_metric([], float(snap.attempts) if snap else 0.0)
        answered.add_metric([], float(snap.answered) if snap else 0.0)
        yield attempted
        yield answered
        if snap is None:
            return
        yield _gauge("iaxgw_loadtest_calls_up", "Answered calls up now", float(snap.calls_up))
        yield _gauge("iaxgw_loadtest_calls_setting_up", "Calls placed, not answered yet",
                     float(snap.setting_up))
        for name, doc, value in (
                ("iaxgw_loadtest_jitter_seconds", "Median over the calls up of each one's "
                 "RFC 3550 jitter", _scaled(snap.jitter_p50_ms, 1e-3)),
                ("iaxgw_loadtest_loss_ratio", "Voice frames lost in the last second, share "
                 "of those expected", _scaled(snap.loss_pct, 1e-2)),
                ("iaxgw_loadtest_mos", "Median over the calls up of each one's MOS",
                 snap.mos_p50),
                ("iaxgw_loadtest_mos_min", "Lowest MOS of the calls up", snap.mos_min),
                ("iaxgw_loadtest_rtt_seconds", "Median round trip of the echoed audio",
                 _scaled(snap.rtt_p50_ms, 1e-3))):
            if value is not None:
                yield _gauge(name, doc, float(value))


def ended_entry(rec: CallRecord) -> list[Any]:
    """What the metrics take of an ended call (a shard sends it to its parent as JSON):
    outcome, cause code, answered, MOS, jitter (ms), loss (%)."""
    return [rec.outcome, rec.cause_code, rec.answer_ms is not None, rec.mos, rec.jitter_ms,
            rec.loss_pct]


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc)
    g.add_metric([], value)
    return g


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


class LoadtestMetrics:
    """The load test's registry and HTTP server (``metrics.start_http``)."""

    def __init__(self, target_calls: int) -> None:
        self.metrics = Metrics()
        self.url: str | None = None          # once serving
        registry = self.metrics.registry
        self._snapshot = _SnapshotCollector(target_calls)
        registry.register(self._snapshot)
        self.failed = Counter("iaxgw_loadtest_calls_failed",
                              "Calls that failed, by outcome (BUSY, REJECT, TIMEOUT, ...) and "
                              "Q.931 cause code ('none' without one)", ["outcome", "cause"],
                              registry=registry)
        self._setups_seen = 0
        self.setup = Histogram("iaxgw_loadtest_setup_seconds",
                               "NEW -> ANSWER of the answered calls (each at its answer)",
                               buckets=_SETUP_BUCKETS, registry=registry)
        self.mos = Histogram("iaxgw_loadtest_call_mos", "MOS of each ended, measured call",
                             buckets=_MOS_BUCKETS, registry=registry)
        self.jitter = Histogram("iaxgw_loadtest_call_jitter_seconds",
                                "RFC 3550 jitter of each ended call at its end",
                                buckets=_JITTER_BUCKETS, registry=registry)
        self.loss = Histogram("iaxgw_loadtest_call_loss_ratio",
                              "Voice frames lost of each ended, measured call (share)",
                              buckets=_LOSS_BUCKETS, registry=registry)

    def on_record(self, rec: CallRecord) -> None:
        """A call ended (``LoadStats.on_record``): failures as the summary counts them
        (every outcome but ANSWERED and IN_PROGRESS: a setup a graceful stop cancelled), the
        figures of the calls that were answered."""
        self.on_ended(ended_entry(rec))

    def on_ended(self, entry: Sequence[Any]) -> None:
        """A call ended, as :func:`ended_entry` gives it (a shard's report of one)."""
        outcome, cause_code, answered, mos, jitter_ms, loss_pct = entry
        if outcome not in ("ANSWERED", "IN_PROGRESS"):
            cause = "none" if cause_code is None else str(cause_code)
            self.failed.labels(str(outcome), cause).inc()
        if not answered:
            return
        if mos is not None:
            self.mos.observe(float(mos))
        if jitter_ms is not None:
            self.jitter.observe(float(jitter_ms) / 1000.0)
        if loss_pct is not None:
            self.loss.observe(float(loss_pct) / 100.0)

    def on_merged(self, snap: Snapshot, setup_ms: Sequence[float]) -> None:
        """Once a merged second of a sharded run: its snapshot and the setup times the
        shards measured in it (the ended calls come with :meth:`on_ended`)."""
        self._snapshot.set(snap)
        for ms in setup_ms:
            self.setup.observe(float(ms) / 1000.0)

    def on_tick(self, snap: Snapshot, endpoint: Any, setup_ms: Sequence[float]) -> None:
        """Once a second: the run's snapshot, the setup times of the calls answered since the
        last tick (``LoadStats.setup_ms``, appended at each answer), the endpoint's counters
        and peers."""
        self._snapshot.set(snap)
        for ms in setup_ms[self._setups_seen:]:
            self.setup.observe(ms / 1000.0)
        self._setups_seen = len(setup_ms)
        with contextlib.suppress(Exception):
            self.metrics.update_snapshot(to_jsonable(endpoint.stats()),
                                         to_jsonable(endpoint.peers()))

    def start(self, addr: tuple[str, int]) -> str:
        """Serve ``/metrics`` on ``addr`` (port 0: any free one); returns its URL.  An address
        that cannot be bound: ``OSError`` whose ``strerror`` is the whole reason to print."""
        try:
            self.url = metrics_url(*self.metrics.start_http(addr[1], addr[0]))
        except OSError as exc:
            raise OSError(exc.errno, f"metrics: cannot bind {format_addr(addr)}: "
                                     f"{exc.strerror or exc}") from None
        return self.url

    def stop(self) -> None:
        self.metrics.stop_http()
