"""``iaxgw loadtest`` against the lab's real Asterisk 22 (office-a, 127.0.0.10:4569).

We are office-b (127.0.0.20:4569, the embedded seed config) and call office-a's echo extension
200 (direct) or its hairpin extensions 29N, which office-a dials back over the trunk to our 30N:
we answer those returning legs and echo them, so the audio crosses Asterisk twice.

Proven here (every call answered, 0 failed, every call's audio verified by its own signature):
both modes, both codecs, trunk on and off.  To keep CI time bounded the 2 x 2 x 2 grid is
covered by four runs of ~10 s of media each, not eight:

* 200 calls, direct,  ulaw, trunk on
* 200 calls, hairpin, alaw, trunk on
*  50 calls, direct,  alaw, trunk off
*  50 calls, hairpin, ulaw, trunk off

plus the failure paths: wrong secret (REJECT 50), busy (202) and congestion (203) each counted
under its cause with exit code 1, and the target killed (SIGKILL) while calls are up: every call
ends with an outcome within the retransmission / media give-up time.

Every test starts its own office-a through the ``asterisk_factory`` fixture, which holds the
lab's lock (other sessions use the lab too) and stops the instance at the end of the module.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from iaxgw.gateway.conf.config import default_config_dir
from iaxgw.sim.load.loadtest import run_loadtest_async
from iaxgw.sim.load.loadtest_plan import LoadtestOptions

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(240)]

A_HOST = ("127.0.0.10", 4569)
B_BIND = ("127.0.0.20", 4569)


def _run(opts: LoadtestOptions) -> Any:
    import uvloop

    opts.check()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        return r.run(run_loadtest_async(opts))


def _opts(**kw: Any) -> LoadtestOptions:
    base: dict[str, Any] = {"quiet": True, "live": False, "peer": "office-a",
                            "peer_host": A_HOST, "bind": B_BIND}
    base.update(kw)
    return LoadtestOptions(**base)


def _office_b(tmp: Path, secret: str | None = None) -> Path:
    """The embedded office-b config (optionally with another secret) in ``tmp``."""
    dst = tmp / "office-b"
    dst.mkdir(parents=True, exist_ok=True)
    for f in default_config_dir("office-b").iterdir():
        if f.is_file():
            text = f.read_text()
            if secret is not None:
                text = text.replace("a-strong-shared-secret", secret)
            (dst / f.name).write_text(text)
    return dst


def _a_overrides(codec: str, trunk: bool) -> dict[str, Any]:
    """office-a's side of a variant: the codec first in its allow list, trunk on/off."""
    other = "ulaw" if codec == "alaw" else "alaw"
    return {"codecs": (codec, other), "trunk": trunk}


GRID = [
    pytest.param(200, "direct", "ulaw", True, id="200-direct-ulaw-trunk"),
    pytest.param(200, "hairpin", "alaw", True, id="200-hairpin-alaw-trunk"),
    pytest.param(50, "direct", "alaw", False, id="50-direct-alaw-notrunk"),
    pytest.param(50, "hairpin", "ulaw", False, id="50-hairpin-ulaw-notrunk"),
]


@pytest.mark.parametrize(("calls", "mode", "codec", "trunk"), GRID)
def test_all_calls_answered_and_verified(asterisk_factory: Any, calls: int, mode: str,
                                         codec: str, trunk: bool) -> None:
    inst = asterisk_factory("office-a", **_a_overrides(codec, trunk))
    o = _opts(calls=calls, rate=50.0, duration=(10.0, 10.0), codec=codec, trunk=trunk,
              mode=mode, setup_timeout=15.0)
    t0 = time.monotonic()
    res = _run(o)
    wall = time.monotonic() - t0
    s, lt = res.summary, res.summary["loadtest"]
    detail = (f"{calls} {mode} {codec} trunk={trunk}: causes {s['causes']}, audio {s['audio']}, "
              f"notes {lt['notes']}, wall {wall:.1f} s, asterisk log:\n{inst.log_tail(10)}")
    assert s["attempted"] == calls, detail
    assert s["answered"] == calls, detail
    assert lt["failed_total"] == 0 and not s["causes"], detail
    assert s["audio"]["checked"] == calls and s["audio"]["verified"] == calls, detail
    assert not s["audio"]["crossed"] and not s["audio"]["one_way"], detail
    assert res.exit_code == 0, detail
    if mode == "hairpin":
        assert lt["hairpin_returned"] == calls, detail
    kinds = (s.get("trunk") or {}).get("by_kind") or {}
    sent_trunk = any(k.endswith("trunk") and k.startswith("tx") and v for k, v in kinds.items())
    assert sent_trunk == trunk, kinds
    assert len(res.records) == calls
    assert all(r.outcome == "ANSWERED" and r.audio == "verified" for r in res.records)


def test_wrong_secret_busy_congestion_counted(asterisk_factory: Any, tmp_path: Path) -> None:
    asterisk_factory("office-a")
    res = _run(_opts(calls=10, rate=20.0, duration=(2.0, 2.0), extens=["202", "203"]))
    s = res.summary
    assert s["attempted"] == 10 and s["answered"] == 0, s["causes"]
    assert s["causes"] == {"BUSY": 5, "CONGESTION": 5}, s["causes"]
    assert {r.outcome for r in res.records} == {"BUSY", "CONGESTION"}
    assert res.exit_code == 1

    bad = _office_b(tmp_path, secret="not-the-secret")
    res = _run(_opts(calls=6, rate=20.0, duration=(2.0, 2.0), config_dir=bad, extens=["200"]))
    s = res.summary
    assert s["attempted"] == 6 and s["answered"] == 0
    rejected = {k: v for k, v in s["causes"].items() if k.startswith("REJECT")}
    assert sum(rejected.values()) == 6 and all("50" in k for k in rejected), s["causes"]
    assert all(r.outcome == "REJECT" and r.cause_code == 50 for r in res.records)
    assert res.exit_code == 1


def test_target_killed_mid_test(asterisk_factory: Any) -> None:
    """SIGKILL office-a while 40 calls are up and more are being placed: no HANGUP ever comes.
    Answered calls end when their echo stops (media timeout) and their HANGUP retransmissions
    give up; calls in setup end at the setup timeout: the run ends in bounded time."""
    inst = asterisk_factory("office-a")
    pid = inst.pid
    assert pid is not None
    o = _opts(calls=60, rate=10.0, duration=(30.0, 30.0), setup_timeout=8.0)

    async def main() -> Any:
        task = asyncio.ensure_future(run_loadtest_async(o))
        await asyncio.sleep(4.5)                # ~45 calls placed, most answered
        os.kill(pid, signal.SIGKILL)
        return await task

    import uvloop

    o.check()
    t0 = time.monotonic()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        res = r.run(main())
    wall = time.monotonic() - t0
    s = res.summary
    assert wall < 45.0, wall
    assert s["attempted"] == 60
    assert len(res.records) == 60
    assert all(r.outcome != "IN_PROGRESS" for r in res.records)
    assert all(r.outcome == "ANSWERED" or r.cause for r in res.records)
    answered = [r for r in res.records if r.outcome == "ANSWERED"]
    assert len(answered) >= 20, s["causes"]
    # answered calls were cut short: counted as dropped / failed, each with how it ended
    assert res.summary["loadtest"]["dropped"] == len(answered)
    assert all(r.cause for r in answered)
    assert res.exit_code == 1
    assert not s["loadtest"]["deadline_hit"]
