"""Prometheus metrics scraped over HTTP from a running ``iaxgw serve`` (subprocess, office-b)
while an in-process office-a (with its own metrics) places calls whose causes we choose."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import select
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from test_pcap import _ipv6_loopback
from test_serve_e2e import _free_udp_port

from iaxgw.gateway.serve.app import GatewayApp, ServeOptions

pytestmark = pytest.mark.timeout(120)


class _Tone:
    def on_voice(self, payload: bytes, ts: int) -> None:
        pass

    def next_payload(self) -> bytes | None:
        return b"\x55" * 160


def scrape(url: str) -> dict[str, float]:
    """``name{labels}`` -> value of every sample (labels as the exposition prints them)."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def _wait_url(proc: subprocess.Popen[str], deadline: float) -> tuple[str, str]:
    """serve's stderr line "metrics on http://HOST:PORT/metrics" (port 0 asked: the real one),
    and all stderr read so far."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    seen = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            seen += os.read(fd, 4096).decode(errors="replace")
            m = re.search(r"metrics on (http://\S+/metrics)", seen)
            if m:
                return m.group(1), seen
        assert proc.poll() is None, seen
    raise AssertionError(f"no metrics line in {seen!r}")


def test_serve_metrics_count_the_calls_placed(tmp_path: Path) -> None:
    b_port = _free_udp_port("127.0.0.20")
    a_port = _free_udp_port("127.0.0.10")
    proc = subprocess.Popen(
        [sys.executable, "-m", "iaxgw.gateway.cli", "serve", "--peer", "office-a",
         "--bind", f"127.0.0.20:{b_port}", "--peer-host", f"127.0.0.10:{a_port}",
         "--control", str(tmp_path / "b.sock"), "--spool", str(tmp_path / "spool"),
         "--metrics-addr", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url, _seen = _wait_url(proc, time.monotonic() + 20)
        assert not url.endswith(":0/metrics")

        async def office_a() -> tuple[dict[str, float], dict[str, float]]:
            a = GatewayApp.from_options(ServeOptions(
                peer="office-b", site="office-a", bind=("127.0.0.10", a_port),
                peer_host=("127.0.0.20", b_port), spool=tmp_path / "spool-a",
                metrics_addr=("127.0.0.1", 0)))
            await a.start()
            try:
                assert a.metrics_bound is not None
                causes = [16, 16, 31]
                for cause in causes:
                    call = a.place_call("office-b", "300", None)
                    assert await asyncio.wait_for(call.wait_answer(), 10) == "answered"
                    call.set_media(_Tone())
                    await asyncio.sleep(0.3)
                    await call.hangup(cause)
                busy = a.place_call("office-b", "302", None)
                assert await asyncio.wait_for(busy.wait_answer(), 10) == "busy"
                await busy.hangup(17)
                b: dict[str, float] = {}
                for _ in range(60):          # the snapshot is refreshed once a second
                    await asyncio.sleep(0.25)
                    b = await asyncio.to_thread(scrape, url)
                    if (b.get('iaxgw_peer_up{peer="office-a"}') == 1.0
                            and b.get('iaxgw_calls_active') == 0.0
                            and b.get('iaxgw_calltoken_events_total{result="issued"}') == 4.0
                            and b.get("iaxgw_endpoint_calls") == 0.0):
                        break
                mine = await asyncio.to_thread(
                    scrape, f"http://127.0.0.1:{a.metrics_bound[1]}/metrics")
                return b, mine
            finally:
                await a.stop()

        b, a_side = asyncio.run(office_a())
        # office-b received what office-a sent: 3 hangups 16/16/31 after echo, 17 after busy
        assert b['iaxgw_hangups_total{cause="16",direction="in"}'] == 2.0
        assert b['iaxgw_hangups_total{cause="31",direction="in"}'] == 1.0
        assert b['iaxgw_hangups_total{cause="17",direction="in"}'] == 1.0
        assert a_side['iaxgw_hangups_total{cause="16",direction="out"}'] == 2.0
        assert b['iaxgw_iax_frames_total{direction="in",subclass="NEW"}'] >= 4.0
        assert sum(v for k, v in b.items()
                   if k.startswith('iaxgw_calls_total{direction="in"')) == 4.0
        assert b["iaxgw_calls_active"] == 0.0
        assert b['iaxgw_peer_up{peer="office-a"}'] == 1.0
        # the qualify round trip `iaxgw show peers` shows, in seconds
        shown = subprocess.run([sys.executable, "-m", "iaxgw.gateway.cli", "show", "peers",
                                "--json", "--control", str(tmp_path / "b.sock")],
                               capture_output=True, text=True, timeout=30)
        row = json.loads(shown.stdout)[0]
        assert b['iaxgw_peer_rtt_seconds{peer="office-a"}'] == row["lastms"] / 1000.0
        # one call token for each of the 4 NEWs (the snapshot of the endpoint's counters)
        assert b['iaxgw_calltoken_events_total{result="issued"}'] == 4.0
        assert b['iaxgw_calltoken_events_total{result="accepted"}'] == 4.0
        voice_in = sum(b.get(f'iaxgw_frames_total{{direction="in",kind="{k}"}}', 0.0)
                       for k in ("mini", "trunk"))
        assert voice_in > 0
        assert a_side['iaxgw_peer_up{peer="office-b"}'] == 1.0
    finally:
        if proc.poll() is None:
            proc.terminate()
        _out, err = proc.communicate(timeout=10)
    assert "Traceback" not in err


_NETS = itertools.cycle(random.Random(os.getpid() + 23).sample(range(100, 250), 150))


def run_scraped(opts: Any, calls_up: int) -> tuple[Any, dict[str, float], dict[str, float],
                                                    str | None]:
    """Run the load test ``opts``; scrape its metrics over HTTP until ``calls_up`` calls are
    up.  Returns the result, that scrape, the registry at the end, and the metrics URL."""
    import uvloop

    from iaxgw.sim.load.loadtest import LoadRunner, load_target

    urls: list[str | None] = []

    async def main() -> tuple[Any, dict[str, float], dict[str, float]]:
        runner = LoadRunner(opts, load_target(opts))
        task = asyncio.ensure_future(runner.run())
        live: dict[str, float] = {}
        for _ in range(100):
            await asyncio.sleep(0.1)
            url = runner.prom.url if runner.prom else None
            if url is None:
                continue
            live = await asyncio.to_thread(scrape, url)
            # the calls up and their setup times (counted by the tick that saw them answered,
            # which may be the next scrape's on a busy machine)
            if live.get("iaxgw_loadtest_calls_up") == float(calls_up) \
                    and live.get("iaxgw_loadtest_setup_seconds_count") == float(calls_up):
                break
        res = await task
        assert runner.prom is not None
        urls.append(runner.prom.url)
        after = {}
        for line in runner.prom.metrics.render().decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                after[key] = float(value)
        return res, live, after

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        res, live, after = r.run(main())
    return res, live, after, urls[0]


def check_run_metrics(res: Any, live: Mapping[str, float], after: Mapping[str, float], *,
                      attempts: int, answered: int, failed: Mapping[str, int]) -> None:
    """The scrape taken while the answered calls were up and the registry at the end against
    the run's own records: attempts, answered, failures by outcome and the cause code each
    record holds, the setup-time histogram and the MOS histogram."""
    assert len(res.records) == attempts
    assert live["iaxgw_loadtest_calls_up"] == float(answered)
    assert live["iaxgw_loadtest_calls_attempted_total"] == float(attempts)
    assert live["iaxgw_loadtest_calls_answered_total"] == float(answered)
    for outcome, count in failed.items():
        recs = [rec for rec in res.records if rec.outcome == outcome]
        assert len(recs) == count and len({rec.cause_code for rec in recs}) == 1
        cause = "none" if recs[0].cause_code is None else recs[0].cause_code
        key = f'iaxgw_loadtest_calls_failed_total{{cause="{cause}",outcome="{outcome}"}}'
        assert live[key] == float(count), key
    # the setup times of the calls up, counted by the tick that saw them answered
    assert live["iaxgw_loadtest_setup_seconds_count"] == float(answered)
    # the endpoint's own counters: every call placed
    assert live['iaxgw_protocol_events_total{event="calls_out"}'] == float(attempts)
    # at the end, every call ended: histograms hold the answered ones
    done = [rec for rec in res.records if rec.answer_ms is not None]
    assert len(done) == answered == res.summary["answered"]
    assert after["iaxgw_loadtest_setup_seconds_count"] == float(answered)
    assert after["iaxgw_loadtest_setup_seconds_sum"] == pytest.approx(
        sum(rec.answer_ms for rec in done) / 1000.0)
    with_mos = [rec for rec in done if rec.mos is not None]
    assert after["iaxgw_loadtest_call_mos_count"] == float(len(with_mos))
    assert sum(v for k, v in after.items()
               if k.startswith("iaxgw_loadtest_calls_failed_total")) == res.summary["failed"]


def test_loadtest_metrics_scraped_while_it_runs(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """3 calls to serve's echo (300), Milliwatt (301) and Busy (302): scraped over HTTP while
    the two answered calls are up, then the histograms against the run's own records; the
    run's --pcap holds its calls."""
    from iaxgw.sim.lab.loadtest_lab import ServeProcess, write_site
    from iaxgw.sim.load.loadtest_plan import LoadtestOptions

    n = next(_NETS)
    a_ip, b_ip = f"127.0.{n}.10", f"127.0.{n}.20"
    opts = LoadtestOptions(calls=3, total=3, rate=10, duration=(4.0, 4.0), quiet=True,
                           live=False, extens=["300", "301", "302"], peer="office-b",
                           peer_host=(b_ip, 4569), bind=(a_ip, 4569), max_failed=3,
                           metrics_addr=("127.0.0.1", 0), pcap=tmp_path / "lt.pcap")
    opts.config_dir = write_site(tmp_path / "office-a", "office-a", opts, a_ip, b_ip)
    b_dir = write_site(tmp_path / "office-b", "office-b", opts, a_ip, b_ip)
    opts.check()
    serve = ServeProcess(b_dir, tmp_path)
    serve.start()
    try:
        res, live, after, url = run_scraped(opts, calls_up=2)
    finally:
        serve.stop()
    # the address it bound (port 0 asked), said on stderr at the start
    assert url is not None and not url.endswith(":0/metrics")
    assert f"iaxgw loadtest: metrics on {url}\n" in capsys.readouterr().err
    assert live["iaxgw_loadtest_calls_target"] == 3.0
    check_run_metrics(res, live, after, attempts=3, answered=2, failed={"BUSY": 1})
    check_pcap(tmp_path / "lt.pcap", (a_ip, 4569), (b_ip, 4569), calls=3)


def check_pcap(path: Path, us: tuple[str, int], them: tuple[str, int], calls: int) -> None:
    """The load test's capture: private (0600), only datagrams between the two sites, our
    NEWs twice each (without, then with the call token), the far end's CALLTOKENs and
    ACCEPTs, and our HANGUPs: ``calls`` of each."""
    import stat

    from iaxgw._core.constants import FrameType, IAXSubclass
    from iaxgw._core.frames import parse_full
    from iaxgw.gateway.driver.pcap import read_pcap

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    recs = list(read_pcap(path))
    assert recs and all({r.src, r.dst} == {us, them} for r in recs)

    def iax(src: tuple[str, int], sub: IAXSubclass) -> int:
        n = 0
        for r in recs:
            if r.src == src and r.payload[:1] >= b"\x80":
                f = parse_full(r.payload)
                n += f.frametype == FrameType.IAX and f.subclass == sub and not f.retransmit
        return n

    assert iax(us, IAXSubclass.NEW) == 2 * calls
    assert iax(them, IAXSubclass.CALLTOKEN) == calls
    assert iax(them, IAXSubclass.ACCEPT) == calls
    assert iax(us, IAXSubclass.HANGUP) == calls   # the load tester ends every call, BUSY too


@pytest.mark.parametrize("option,host", [
    (["--metrics-port", "0"], "127.0.0.1"),
    pytest.param(["--metrics-addr", "[::1]:0"], "[::1]", marks=pytest.mark.skipif(
        not _ipv6_loopback(), reason="no IPv6 loopback")),
])
def test_serve_prints_the_bound_metrics_address(tmp_path: Path, option: list[str],
                                                host: str) -> None:
    b_port = _free_udp_port("127.0.0.20")
    proc = subprocess.Popen(
        [sys.executable, "-m", "iaxgw.gateway.cli", "serve", "--peer", "office-a",
         "--bind", f"127.0.0.20:{b_port}", "--peer-host", "127.0.0.10:9",
         "--control", str(tmp_path / "b.sock"), "--spool", str(tmp_path / "spool"), *option],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url, seen = _wait_url(proc, time.monotonic() + 20)
        assert f"serving on 127.0.0.20:{b_port}" in seen
        m = re.fullmatch(r"http://(.+):(\d+)/metrics", url)
        assert m is not None and m.group(1) == host and int(m.group(2)) > 0, url
        samples = scrape(url)
        assert samples["iaxgw_calls_active"] == 0.0
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "Traceback" not in err
