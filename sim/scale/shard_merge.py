"""Merging the shards of a sharded load test: per-second rows, the live screen, the summary.

Pure functions and data (no I/O, no processes): :mod:`iaxgw.sim.scale.shards` runs the shards and
feeds their rows and results here.  Every percentile is computed over the pooled raw samples of
all shards (setup times, jitter and MOS of the calls up, tick lateness), never as an average of
the shards' percentiles; counts and rates are summed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from iaxgw.sim.report.report import (
    Row,
    Snapshot,
    echo_missing_pct,
    percentile,
    summarize,
    worst_calls,
)

#: Time-series fields summed over the shards (the rest are pooled medians or the wall clock).
SUMMED_ROW_FIELDS = ("calls_up", "attempts", "answered", "failed", "tx_pps", "rx_pps",
                     "cpu_pct", "attempts_total", "answered_total", "failed_total")


def pooled(lists: Sequence[Sequence[float]]) -> list[float]:
    """The samples of every shard in one list."""
    out: list[float] = []
    for values in lists:
        out.extend(values)
    return out


def _sum_or_none(values: Sequence[float | int | None]) -> float | int | None:
    """The sum, or None when any shard could not measure it (never a partial figure)."""
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None)


def merge_rows(rows: Sequence[Row], samples: Sequence[Mapping[str, Any]],
               time_s: float, unix_time_s: float) -> Row:
    """One merged time-series row from the shards' rows of the same second: counts and rates
    summed (the rate asked too: each shard was asked its share), medians over the pooled
    samples, loss from the summed frame counts; paused while every shard is."""
    out: Row = {"time_s": round(time_s, 3), "unix_time_s": round(unix_time_s, 3)}
    for name in SUMMED_ROW_FIELDS:
        out[name] = _sum_or_none([r.get(name) for r in rows])
    lost = sum(int(s.get("lost") or 0) for s in samples)
    expected = sum(int(s.get("expected") or 0) for s in samples)
    out["loss_pct"] = 100.0 * lost / expected if expected > 0 else None
    out["setup_p50_ms"] = percentile(pooled([s.get("setup_ms") or [] for s in samples]), 50)
    out["jitter_p50_ms"] = percentile(pooled([s.get("jitter_ms") or [] for s in samples]), 50)
    out["mos_p50"] = percentile(pooled([s.get("mos") or [] for s in samples]), 50)
    rate = _sum_or_none([r.get("rate_asked_cps") for r in rows])     # each shard its share
    out["rate_asked_cps"] = None if rate is None else round(rate, 4)
    paused = [r.get("paused") for r in rows]
    out["paused"] = (None if not paused or any(p is None for p in paused)
                     else min(int(p) for p in paused if p is not None))   # every shard paused
    return out


@dataclass(slots=True)
class Second:
    """One merged second: the live screen's snapshot, the time-series row, the pooled
    samples (what the capacity search judges)."""

    snapshot: Snapshot
    row: Row
    samples: dict[str, Any]


@dataclass(slots=True)
class LiveMerge:
    """The merged live screen, one shard row at a time: a second is merged once every shard
    still running has sent its row for it (a shard's n-th row is its n-th second)."""

    shards: int
    target: int | None = None
    pending: dict[int, dict[int, tuple[Row, Mapping[str, Any]]]] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)          # shards that ended
    rows_seen: dict[int, int] = field(default_factory=dict)
    setups: list[float] = field(default_factory=list)    # every setup time so far, pooled
    latest: dict[int, Mapping[str, Any]] = field(default_factory=dict)
    merged: list[Row] = field(default_factory=list)
    merged_samples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, shard: int, row: Row, samples: Mapping[str, Any]) -> list[Second]:
        """A shard's next row; returns the snapshots of the seconds now complete."""
        n = self.rows_seen.get(shard, 0)
        self.rows_seen[shard] = n + 1
        self.pending.setdefault(n, {})[shard] = (row, samples)
        return self._complete()

    def shard_ended(self, shard: int) -> list[Second]:
        self.done.add(shard)
        return self._complete()

    def flush(self) -> list[Second]:
        """Merge what is left (the run is over)."""
        self.done = set(range(self.shards))
        return self._complete()

    def _complete(self) -> list[Second]:
        out = []
        while self.pending:
            n = min(self.pending)
            have = self.pending[n]
            if any(s not in have and s not in self.done for s in range(self.shards)):
                break
            del self.pending[n]
            out.append(self._merge_second(have))
        return out

    def _merge_second(self, have: Mapping[int, tuple[Row, Mapping[str, Any]]]) -> Second:
        rows = [have[s][0] for s in sorted(have)]
        samples = [have[s][1] for s in sorted(have)]
        for s in sorted(have):
            self.latest[s] = {**have[s][1], "row": have[s][0]}
        t = max(float(r.get("time_s") or 0.0) for r in rows)
        unix = min(float(r.get("unix_time_s") or 0.0) for r in rows)
        row = merge_rows(rows, samples, t, unix)
        # totals from every shard's latest row (a shard that ended keeps its last figures)
        for name in ("attempts_total", "answered_total", "failed_total"):
            row[name] = sum(int(v["row"].get(name) or 0) for v in self.latest.values())
        self.merged.append(row)
        pooled_samples = pool_samples(samples)
        self.merged_samples.append(pooled_samples)
        self.setups.extend(pooled_samples["setup_ms"])
        return Second(self._snapshot(row, pooled_samples), row, pooled_samples)

    def _snapshot(self, row: Row, s: Mapping[str, Any]) -> Snapshot:
        causes: dict[str, int] = {}
        audio: dict[str, int] = {}
        setting_up = 0
        for v in self.latest.values():
            for k, c in (v.get("causes") or {}).items():
                causes[k] = causes.get(k, 0) + int(c)
            for k, c in (v.get("audio") or {}).items():
                audio[k] = audio.get(k, 0) + int(c)
            setting_up += int(v.get("setting_up") or 0)
        dt = max((float(v.get("dt") or 0.0) for v in self.latest.values()), default=0.0)
        mos = s["mos"]
        return Snapshot(
            elapsed_s=float(row["time_s"] or 0.0), calls_up=int(row["calls_up"] or 0),
            target=self.target, setting_up=setting_up,
            attempts=int(row["attempts_total"] or 0),
            attempt_rate=(int(row["attempts"] or 0) / dt) if dt > 0 else None,
            answered=int(row["answered_total"] or 0), failed=int(row["failed_total"] or 0),
            causes=causes, setup_p50_ms=percentile(self.setups, 50),
            setup_p95_ms=percentile(self.setups, 95),
            jitter_p50_ms=row["jitter_p50_ms"], jitter_max_ms=s["jitter_max_ms"],
            loss_pct=row["loss_pct"], mos_p50=row["mos_p50"],
            mos_min=min(mos) if mos else None, rtt_p50_ms=percentile(s["rtt_ms"], 50),
            tx_pps=row["tx_pps"], rx_pps=row["rx_pps"], cpu_pct=row["cpu_pct"], audio=audio)


def pool_samples(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The shards' raw samples of one second as one set (lists joined, counts summed)."""
    maxes = [float(s["jitter_max_ms"]) for s in samples if s.get("jitter_max_ms") is not None]
    cpus = [float(s["cpu_pct"]) for s in samples if s.get("cpu_pct") is not None]
    return {
        "setup_ms": pooled([s.get("setup_ms") or [] for s in samples]),
        "jitter_ms": pooled([s.get("jitter_ms") or [] for s in samples]),
        "mos": pooled([s.get("mos") or [] for s in samples]),
        "rtt_ms": pooled([s.get("rtt_ms") or [] for s in samples]),
        "jitter_max_ms": max(maxes) if maxes else None,
        "cpu_max_pct": max(cpus) if cpus else None,       # the busiest shard's CPU
        "lost": sum(int(s.get("lost") or 0) for s in samples),
        "expected": sum(int(s.get("expected") or 0) for s in samples),
    }


# ---------------------------------------------------------------------------------------------
# The end of the run
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ShardResult:
    """What a shard hands back at its end (pickled by the shard into a private folder)."""

    index: int
    local: str
    calls: int
    summary: dict[str, Any]
    records: list[Any]
    call_columns: dict[int, dict[str, Any]]
    late_ms: list[float]
    work_ms: list[float]
    trunk: Any
    cpu_samples: list[float]
    exit_code: int


def merge_send_timing(late: Sequence[Sequence[float]],
                      work: Sequence[Sequence[float]]) -> dict[str, Any]:
    """The shards' send timing over their pooled ticks (each shard's own ticker)."""
    from iaxgw.sim.load.loadtest import send_timing

    return send_timing(pooled(late), pooled(work))


def renumber(results: Sequence[ShardResult]) -> tuple[
        list[Any], dict[int, tuple[int | None, int | None, str | None]],
        dict[int, dict[str, Any]]]:
    """Every shard's records with run-wide indices (shard k's calls after shard k-1's), the
    ids ``worst_calls`` reads and calls.csv's columns by run-wide index."""
    records: list[Any] = []
    ids: dict[int, tuple[int | None, int | None, str | None]] = {}
    columns: dict[int, dict[str, Any]] = {}
    base = 0
    for res in results:
        top = -1
        for rec in res.records:
            cols = res.call_columns.get(rec.index, {})
            top = max(top, rec.index)
            rec = dataclasses.replace(rec, index=rec.index + base)
            records.append(rec)
            columns[rec.index] = cols
            ids[rec.index] = (cols.get("callno"), cols.get("peer_callno"), cols.get("exten"))
        base += max(top + 1, res.calls)
    return records, ids, columns


def merge_trunk(results: Sequence[ShardResult]) -> Any:
    """The shards' datagram counters summed (one TrunkCounters)."""
    from iaxgw.sim.load.metrics import TrunkCounters

    out = TrunkCounters()
    for res in results:
        t = res.trunk
        if t is None:
            continue
        for slot in TrunkCounters.__slots__:
            mine, theirs = getattr(out, slot), getattr(t, slot)
            if isinstance(mine, dict):
                for k, v in theirs.items():
                    mine[k] = mine.get(k, 0) + v
            else:
                setattr(out, slot, mine + theirs)
    return out


def summed_cpu(results: Sequence[ShardResult]) -> list[float]:
    """CPU of the shards together, second by second (% of one core; shards that ended drop
    out)."""
    n = max((len(r.cpu_samples) for r in results), default=0)
    return [sum(r.cpu_samples[i] for r in results if i < len(r.cpu_samples)) for i in range(n)]


def merge_summary(results: Sequence[ShardResult], rows: Sequence[Row], *, target: int,
                  mode: str, codec: str) -> tuple[dict[str, Any], list[Any],
                                                  dict[int, dict[str, Any]]]:
    """The run's summary.json from the shards' raw records: the same :func:`summarize` a
    one-process run uses, over every call; plus ``shards``.  Returns it, the records and
    calls.csv's columns."""
    records, ids, columns = renumber(results)
    duration = max((r.summary.get("duration_s") or 0.0) for r in results) if results else None
    peak = max((int(r.get("calls_up") or 0) for r in rows), default=0)
    summary = summarize(records, duration_s=duration, trunk=merge_trunk(results),
                        cpu_samples=summed_cpu(results), target=target, mode=mode, codec=codec,
                        max_concurrent=max(peak, max((r.summary.get("max_concurrent") or 0
                                                      for r in results), default=0)))
    starts = [str(r.summary["started_at"]) for r in results if r.summary.get("started_at")]
    summary["started_at"] = min(starts) if starts else None
    summary["worst_calls"] = worst_calls(records, ids)
    summary["targets"] = merge_targets([r.summary.get("targets") or {} for r in results])
    summary["shards"] = [shard_entry(r) for r in results]
    return summary, records, columns


def shard_entry(res: ShardResult) -> dict[str, Any]:
    """One shard in summary.json's ``shards``."""
    s, lt = res.summary, res.summary.get("loadtest") or {}
    st = lt.get("send_timing") or {}
    return {"index": res.index, "local": res.local, "calls": res.calls,
            "attempted": s.get("attempted"), "answered": s.get("answered"),
            "failed": s.get("failed"), "max_concurrent": s.get("max_concurrent"),
            "cpu_pct": s.get("cpu_pct"), "cpu_max_pct": s.get("cpu_max_pct"),
            "late_ticks": lt.get("late_ticks"), "send_late_p99_ms": st.get("late_p99_ms"),
            "realtime": lt.get("realtime"), "exit_code": res.exit_code,
            "fail_reasons": lt.get("fail_reasons") or []}


def merge_targets(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The shards' rate and concurrency targets added up; met only when every shard met its
    own; the caps of every shard (waits summed per cap)."""
    def total(key: str, sub: str) -> float | int | None:
        vals = [(p.get(key) or {}).get(sub) for p in parts]
        return _sum_or_none(vals)

    caps: dict[str, dict[str, Any]] = {}
    for p in parts:
        for c in p.get("capped_by") or []:
            have = caps.get(c.get("cap"))
            if have is None:
                caps[c.get("cap")] = dict(c)
            elif c.get("waited_s") is not None:
                have["waited_s"] = round((have.get("waited_s") or 0.0) + c["waited_s"], 3)
    return {"rate": {"asked": total("rate", "asked"), "achieved": total("rate", "achieved")},
            "calls": {"asked": total("calls", "asked"), "peak": total("calls", "peak")},
            "met": all(p.get("met", True) for p in parts),
            "capped_by": list(caps.values())}


def merge_loadtest(results: Sequence[ShardResult], base: Mapping[str, Any]) -> dict[str, Any]:
    """summary.json's ``loadtest`` of a sharded run: the options as asked (``base``), the
    shards' counters summed, their send timing pooled, their notes and reasons named."""
    lts = [r.summary.get("loadtest") or {} for r in results]
    out = dict(base)
    for key in ("failed_total", "dropped", "media_ticks", "late_ticks", "unmatched_incoming",
                "callno_budget_waits", "gc_full_collections"):
        out[key] = sum(int(lt.get(key) or 0) for lt in lts)
    out["max_tick_ms"] = max((float(lt.get("max_tick_ms") or 0.0) for lt in lts), default=0.0)
    out["send_timing"] = merge_send_timing([r.late_ms for r in results],
                                           [r.work_ms for r in results])
    drops = [lt.get("kernel_udp_rcvbuf_errors") for lt in lts]
    # the kernel's counter is machine-wide: every shard saw the same drops over its own span
    out["kernel_udp_rcvbuf_errors"] = (max(d for d in drops if d is not None)
                                       if any(d is not None for d in drops) else None)
    out["audio_ok"] = all(lt.get("audio_ok", True) for lt in lts)
    out["interrupted"] = any(lt.get("interrupted") for lt in lts)
    out["deadline_hit"] = any(lt.get("deadline_hit") for lt in lts)
    # "on" only when every shard's media loop ran so (each shard says why it did not)
    got = {lt.get("realtime") for lt in lts}
    out["realtime"] = got.pop() if len(got) == 1 else "mixed"
    notes: list[str] = []
    for r, lt in zip(results, lts, strict=True):
        for note in lt.get("notes") or []:
            text = f"shard {r.index} ({r.local}): {note}"
            if text not in notes:
                notes.append(text)
    out["notes"] = notes
    out["echo_missing_pct"] = (echo_missing_pct(rec for r in results for rec in r.records)
                               if base.get("media") == "tone" else None)
    return out


def result_to_json(res: ShardResult) -> dict[str, Any]:
    """A shard's result as plain JSON-able data (it crosses the network in a cluster run, where
    nothing is unpickled)."""
    t = res.trunk
    trunk: dict[str, Any] | None = None
    if t is not None:
        trunk = {slot: dict(getattr(t, slot)) for slot in t.__slots__ if slot != "kinds"}
        trunk["kinds"] = [[d, k, n] for (d, k), n in t.kinds.items()]
    return {"index": res.index, "local": res.local, "calls": res.calls, "summary": res.summary,
            "records": [r.as_dict() for r in res.records],
            "call_columns": [[k, v] for k, v in res.call_columns.items()],
            "late_ms": list(res.late_ms), "work_ms": list(res.work_ms), "trunk": trunk,
            "cpu_samples": list(res.cpu_samples), "exit_code": res.exit_code}


def result_from_json(d: Mapping[str, Any]) -> ShardResult:
    """:func:`result_to_json` back (ValueError / KeyError / TypeError on a malformed one)."""
    from iaxgw.sim.load.metrics import CallRecord, TrunkCounters

    names = set(CallRecord.field_names())
    records = []
    for r in d["records"]:
        if not isinstance(r, dict) or set(r) != names:
            raise ValueError("a call record with other fields than a CallRecord's")
        records.append(CallRecord(**r))
    trunk = None
    if d.get("trunk") is not None:
        trunk = TrunkCounters()
        for slot in TrunkCounters.__slots__:
            if slot == "kinds":
                trunk.kinds = {(str(a), str(b)): int(n) for a, b, n in d["trunk"]["kinds"]}
            else:
                setattr(trunk, slot, {str(k): int(v) for k, v in d["trunk"][slot].items()})
    return ShardResult(
        index=int(d["index"]), local=str(d["local"]), calls=int(d["calls"]),
        summary=dict(d["summary"]), records=records,
        call_columns={int(k): dict(v) for k, v in d["call_columns"]},
        late_ms=[float(v) for v in d["late_ms"]], work_ms=[float(v) for v in d["work_ms"]],
        trunk=trunk, cpu_samples=[float(v) for v in d["cpu_samples"]],
        exit_code=int(d["exit_code"]))
