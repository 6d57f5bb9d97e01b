"""Baseline: what two real Asterisk 22 sites cost when trunking N calls (the yardstick for iaxgw).

office-a originates N Milliwatt calls (``channel originate Local/300@internal application
Milliwatt``) over the trunk to office-b, which answers with Echo.  We then measure, over a fixed
window, the CPU of each Asterisk process (utime+stime deltas from ``/proc/PID/stat``) and, from a
short loopback capture decoded by tshark, the datagrams per second each way.

The measuring functions (``cpu_ticks``, ``cpu_percent``, ``trunk_rates``) take plain pids and
addresses, so a benchmark can measure an iaxgw process with them in the same run.
"""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from iaxgw.sim.lab.capture import Capture, IaxCounts, decode_counts
from iaxgw.sim.lab.lab import AsteriskInstance, Lab, LabError, running_pair
from iaxgw.sim.lab.labconfig import LabSiteConfig, seed_site

CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- measuring -------------------------------------------------------------------------------

def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return int(fields[11]) + int(fields[12])


def cpu_percent(pids: dict[str, int], window: float) -> dict[str, float]:
    """CPU% of each named pid over ``window`` seconds (100 = one core busy)."""
    before = {name: cpu_ticks(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    time.sleep(window)
    after = {name: cpu_ticks(pid) for name, pid in pids.items()}
    elapsed = time.monotonic() - t0
    return {name: round(100.0 * (after[name] - before[name]) / CLK_TCK / elapsed, 1)
            for name in pids}


@dataclass
class TrunkRates:
    """Datagrams per second on the wire, from a tshark-decoded capture."""

    seconds: float
    total_per_s: float
    trunk_per_s: float
    full_per_s: float
    mini_per_s: float
    entries_per_trunk: float
    by_direction_per_s: dict[str, float] = field(default_factory=dict)


def rates_from_counts(counts: IaxCounts, seconds: float) -> TrunkRates:
    s = max(seconds, 1e-9)
    return TrunkRates(
        seconds=round(seconds, 2),
        total_per_s=round(counts.total / s, 1),
        trunk_per_s=round(counts.trunk / s, 1),
        full_per_s=round(counts.full / s, 1),
        mini_per_s=round(counts.mini / s, 1),
        entries_per_trunk=round(counts.trunk_entries / counts.trunk, 2) if counts.trunk else 0.0,
        by_direction_per_s={f"{src}->{dst}": round(n / s, 1)
                            for (src, dst), n in sorted(counts.by_direction.items())},
    )


def trunk_rates(seconds: float, capture_filter: str = "udp port 4569 and host 127.0.0.10",
                pcap: str | os.PathLike[str] | None = None) -> TrunkRates:
    """Capture on ``lo`` for ``seconds`` and return datagram rates."""
    with tempfile.TemporaryDirectory(prefix="iaxgw-baseline-") as tmp:
        path = Path(pcap) if pcap else Path(tmp) / "baseline.pcapng"
        with Capture(path, capture_filter) as cap:
            time.sleep(seconds)
        return rates_from_counts(decode_counts(path), cap.seconds)


# --- driving Asterisk --------------------------------------------------------------------------

def originate_calls(inst: AsteriskInstance, n: int, dest: str = "Local/300@internal",
                    app: str = "Milliwatt", workers: int = 4) -> int:
    """Originate ``n`` calls (a few ``-rx`` at a time); returns how many commands succeeded."""
    def one(_: int) -> bool:
        try:
            inst.originate(dest, app)
        except LabError:
            return False
        return True

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(one, range(n)))


def wait_calls_up(inst: AsteriskInstance, n: int, timeout: float, settle: float = 3.0) -> int:
    """Wait until ``inst`` has ``n`` active calls, or the count stops growing for ``settle`` s."""
    deadline = time.monotonic() + timeout
    best, best_at = 0, time.monotonic()
    while time.monotonic() < deadline:
        up = inst.active_calls()
        if up > best:
            best, best_at = up, time.monotonic()
        if up >= n or time.monotonic() - best_at > settle:
            return up
        time.sleep(0.5)
    return inst.active_calls()


@dataclass
class BaselineResult:
    calls: int
    originated: int
    calls_up_a: int
    calls_up_b: int
    window: float
    cpu_percent: dict[str, float]
    rates: TrunkRates | None
    asterisk_version: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        lines = [
            f"{self.asterisk_version}: {self.calls} calls requested, {self.originated} "
            f"originated, up: office-a {self.calls_up_a}, office-b {self.calls_up_b}",
            f"CPU over {self.window:.0f} s: "
            + ", ".join(f"{k} {v:.1f}%" for k, v in self.cpu_percent.items()),
        ]
        if self.rates is not None:
            r = self.rates
            lines.append(f"datagrams/s over {r.seconds:.1f} s: {r.total_per_s:.0f} total, "
                         f"{r.trunk_per_s:.0f} trunk ({r.entries_per_trunk:.2f} media frames "
                         f"each), {r.mini_per_s:.0f} mini, {r.full_per_s:.0f} full")
            lines += [f"  {d}: {v:.0f}/s" for d, v in r.by_direction_per_s.items()]
        return "\n".join(lines)


def run_baseline(calls: int = 200, window: float = 10.0, *, capture_seconds: float = 3.0,
                 root: str | None = None, config_a: LabSiteConfig | None = None,
                 config_b: LabSiteConfig | None = None, setup_timeout: float = 120.0,
                 log: Any = print) -> BaselineResult:
    """Start both sites, put ``calls`` calls up, measure, tear down."""
    lab = Lab(root)
    info = lab.info()
    if info is None:
        raise LabError(f"the lab at {lab.root} is not provisioned (run: iaxgw lab provision)")
    with running_pair(lab, config_a or seed_site("office-a"),
                      config_b or seed_site("office-b")) as (a, b):
        a.wait_peer_ok("office-b", timeout=30)
        b.wait_peer_ok("office-a", timeout=30)
        log(f"originating {calls} calls ...")
        originated = originate_calls(a, calls)
        up_b = wait_calls_up(b, calls, timeout=setup_timeout)
        up_a = a.active_calls()
        log(f"{up_b} calls up on office-b ({up_a} on office-a); measuring CPU for {window} s")
        assert a.pid is not None and b.pid is not None
        cpu = cpu_percent({"office-a": a.pid, "office-b": b.pid}, window)
        rates = trunk_rates(capture_seconds) if capture_seconds > 0 else None
        up_b_end = b.active_calls()
        a.hangup_all()
        return BaselineResult(calls=calls, originated=originated, calls_up_a=up_a,
                              calls_up_b=min(up_b, up_b_end), window=window, cpu_percent=cpu,
                              rates=rates, asterisk_version=info.asterisk_version)
