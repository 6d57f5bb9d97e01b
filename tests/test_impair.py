"""``gateway/driver/impair.py``: the spec parser and the statistics of the injected impairments.

Seeded, N = 20,000 datagrams per check.  Bounds (about 4-5 standard deviations):
* loss 5 %: Bernoulli sd = sqrt(p(1-p)/N) = 0.15 pp; the Gilbert-Elliott chain with burst 3 has
  lag-1 correlation 1 - p - r = 0.65, which inflates the variance by (1+rho)/(1-rho) = 4.7
  (sd 0.33 pp): bound +-1.5 pp;
* mean burst 3: ~333 bursts of a geometric length (sd sqrt(6)): sd of the mean 0.13: bound +-0.6;
* dup/reorder 1 %: sd 0.07 pp: bound +-0.35 pp;
* delay uniform 40 +- 20 ms: mean sd 0.08 ms, std 20/sqrt(3) = 11.55 ms.
"""

from __future__ import annotations

import asyncio
import math
import random

import pytest
from click.testing import CliRunner

from iaxgw.gateway.driver.impair import (
    ImpairedLink,
    ImpairError,
    Impairment,
    ImpairSpec,
    expected_rfc3550_jitter,
)

N = 20_000


def _run(spec: str, n: int = N, direction: str = "send") -> tuple[Impairment, list[list[float]]]:
    imp = Impairment(ImpairSpec.parse(spec))
    return imp, [imp.decide(direction) for _ in range(n)]  # type: ignore[arg-type]


def test_parse_full_spec() -> None:
    s = ImpairSpec.parse("loss=5%,burst=3,delay=40ms,jitter=20ms,reorder=1%,dup=1%,seed=9,dir=recv")
    assert s.loss == pytest.approx(0.05) and s.burst == 3 and s.delay == pytest.approx(0.04)
    assert s.jitter == pytest.approx(0.02) and s.reorder == pytest.approx(0.01)
    assert s.dup == pytest.approx(0.01) and s.seed == 9 and s.dir == "recv"
    assert s.directions() == ("recv",)
    assert ImpairSpec.parse(str(s)) == s
    assert ImpairSpec.parse("loss=0.05").loss == pytest.approx(0.05)
    assert ImpairSpec.parse("delay=0.1s,jitter=500us").jitter == pytest.approx(0.0005)
    assert ImpairSpec.parse("loss=1%").dir == "both"       # default: both ways


@pytest.mark.parametrize("text, words", [
    ("", "empty"), ("loss", "KEY=VALUE"), ("los=5%", "unknown key"), ("loss=5", "fraction"),
    ("loss=101%", "between"), ("loss=100%", "100%"), ("loss=x%", "percentage"),
    ("delay=fast", "duration"), ("delay=20s", "10 s"), ("burst=0.5", "1..1000"),
    ("seed=abc", "integer"), ("dir=up", "send, recv or both"), ("dist=pareto", "uniform"),
    ("loss=1%,loss=2%", "twice"), ("loss=80%,burst=1", "impossible"),
])
def test_parse_errors(text: str, words: str) -> None:
    with pytest.raises(ImpairError, match=words):
        ImpairSpec.parse(text)


def test_cli_bad_spec_is_a_usage_error() -> None:
    from iaxgw.gateway.serve.serve_cli import serve
    from iaxgw.sim.load.loadtest_cli import loadtest

    for cmd in (serve, loadtest):
        args = ["--impair", "loss=7"] + (["--peer", "office-a"] if cmd is serve else [])
        r = CliRunner().invoke(cmd, args)
        assert r.exit_code == 2, r.output
        assert "--impair" in r.output and "write 7% for percent" in r.output


def test_bernoulli_loss() -> None:
    imp, out = _run("loss=5%,seed=1")
    c = imp.counters("send")
    assert c.seen == N and c.dropped == sum(1 for d in out if not d)
    assert abs(c.dropped / N - 0.05) < 0.015
    # independent losses: mean burst 1/(1-p)
    assert abs(c.dropped / c.bursts - 1 / 0.95) < 0.1


@pytest.mark.parametrize("burst", [1.0, 3.0, 8.0])
def test_gilbert_elliott_loss_and_burst(burst: float) -> None:
    imp, out = _run(f"loss=5%,burst={burst:g},seed=2")
    c = imp.counters("send")
    assert abs(c.dropped / N - 0.05) < 0.015 * (1 if burst <= 3 else 2)
    runs, cur = [], 0
    for d in out:
        if not d:
            cur += 1
        elif cur:
            runs.append(cur)
            cur = 0
    assert len(runs) == c.bursts or len(runs) == c.bursts - 1
    mean = sum(runs) / len(runs)
    sd = math.sqrt(max(burst * (burst - 1), 0.25)) / math.sqrt(len(runs))
    assert abs(mean - burst) < max(0.6, 4.5 * sd), (mean, burst)
    if burst == 1.0:
        assert max(runs) == 1


def test_dup_and_reorder() -> None:
    imp, out = _run("dup=1%,reorder=1%,delay=40ms,seed=3")
    c = imp.counters("send")
    assert c.dropped == 0
    assert abs(sum(1 for d in out if len(d) == 2) / N - 0.01) < 0.0035
    assert abs(c.duplicated / N - 0.01) < 0.0035
    held = sum(1 for d in out for x in d if x > 0.04 + 1e-9)
    assert held == c.reordered and abs(c.reordered / c.delivered - 0.01) < 0.0035
    assert all(abs(x - 0.04) < 1e-9 or abs(x - 0.09) < 1e-9 for d in out for x in d)


def test_uniform_delay_distribution() -> None:
    imp, out = _run("delay=40ms,jitter=20ms,seed=4")
    xs = [d[0] * 1000 for d in out]
    mean = sum(xs) / N
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / N)
    assert abs(mean - 40.0) < 0.4
    assert abs(std - 20 / math.sqrt(3)) < 0.4
    assert 20.0 <= min(xs) < 20.1 and 59.9 < max(xs) <= 60.0
    snap = imp.snapshot()["send"]
    assert abs(snap["delay_mean_ms"] - mean) < 0.01 and abs(snap["delay_std_ms"] - std) < 0.01


def test_normal_delay_distribution() -> None:
    _, out = _run("delay=100ms,jitter=10ms,dist=normal,seed=5")
    xs = [d[0] * 1000 for d in out]
    mean = sum(xs) / N
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / N)
    assert abs(mean - 100.0) < 0.3 and abs(std - 10.0) < 0.3
    within = sum(1 for x in xs if abs(x - 100) <= 10) / N
    assert abs(within - 0.6827) < 0.015


def test_seed_repeats_and_direction() -> None:
    a, out_a = _run("loss=5%,burst=3,jitter=5ms,delay=5ms,dup=1%,seed=42")
    b, out_b = _run("loss=5%,burst=3,jitter=5ms,delay=5ms,dup=1%,seed=42")
    assert out_a == out_b and a.snapshot() == b.snapshot()
    imp = Impairment(ImpairSpec.parse("loss=50%,dir=send,seed=1"))
    assert all(imp.decide("recv") == [0.0] for _ in range(1000))
    assert imp.applies("send") and not imp.applies("recv")
    assert set(imp.snapshot()) >= {"spec", "seed", "send"} and "recv" not in imp.snapshot()
    assert Impairment(ImpairSpec.parse("loss=1%")).seed is not None    # random, reported


def test_rfc3550_jitter_factor() -> None:
    """E|X1-X2| = 2a/3 for X uniform on +-a; 2 sigma/sqrt(pi) for normal: the RFC 3550 estimator
    converges to it while the jitter does not reorder the flow (spacing >= 2a)."""
    u = ImpairSpec.parse("delay=40ms,jitter=9ms")
    assert expected_rfc3550_jitter(u, 0.020) == pytest.approx(6.0, rel=0.05)
    g = ImpairSpec.parse("delay=60ms,jitter=5ms,dist=normal")
    assert expected_rfc3550_jitter(g, 0.020) == pytest.approx(2 * 5 / math.sqrt(math.pi),
                                                               rel=0.05)
    # wider jitter than the spacing reorders: arrival-order numbering sees less
    w = ImpairSpec.parse("delay=40ms,jitter=20ms")
    assert expected_rfc3550_jitter(w, 0.020, arrival_order_ts=True) < \
        expected_rfc3550_jitter(w, 0.020)


def test_link_delivers_late_and_close_cancels() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        imp = Impairment(ImpairSpec.parse("delay=30ms,jitter=10ms,dup=20%,loss=10%,seed=6"))
        link = ImpairedLink(imp, loop)
        got: list[tuple[bytes, float]] = []
        t0 = loop.time()
        for i in range(200):
            link.pass_on("send", bytes([i]), ("127.0.0.1", 9),
                         lambda d, a: got.append((d, loop.time() - t0)))
        assert not got and link.in_flight == imp.counters("send").delivered
        await asyncio.sleep(0.08)
        c = imp.counters("send")
        assert len(got) == c.delivered == 200 - c.dropped + c.duplicated
        assert all(0.019 <= t <= 0.07 for _, t in got)
        assert link.in_flight == 0
        for _ in range(50):
            link.pass_on("send", b"x", ("127.0.0.1", 9), lambda d, a: got.append((d, 0.0)))
        n = len(got)
        link.close()
        assert link.in_flight == 0
        await asyncio.sleep(0.08)
        assert len(got) == n                        # nothing delivered after close

    asyncio.run(main())


def test_random_source_is_private() -> None:
    random.seed(0)
    a = Impairment(ImpairSpec.parse("loss=5%,seed=3"))
    random.random()
    b = Impairment(ImpairSpec.parse("loss=5%,seed=3"))
    assert [a.decide("recv") for _ in range(500)] == [b.decide("recv") for _ in range(500)]
