"""The load tester's targets, causes and retransmission against the lab's real Asterisk 22
(office-a at 127.0.0.10:4569; we are office-b).

* a 50 calls/s target over a 100 ms round trip (``--impair delay=50ms`` each way): the target's
  maxauthreq (3) caps the setups; the run either reaches the rate or fails naming that cap, and
  with ``allow_underrun`` passes and still names it;
* office-a with ``encryption = aes128`` + ``forceencryption = yes``: Asterisk REJECTs 50 after our
  AUTHREP (its AUTHREQ carries no ENCRYPTION IE when the NEW offered none), and the note names
  forced encryption next to the username/secret;
* 20 calls over a 3 % (receive, no trunk) and a 5 % (both ways, trunked) lossy link all come up.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iaxgw.gateway.driver.impair import ImpairSpec
from iaxgw.sim.lab.loadtest_lab import LOSSY_CALLEE_GENERAL
from iaxgw.sim.load.loadtest import run_loadtest_async
from iaxgw.sim.load.loadtest_plan import LoadtestOptions

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(300)]

A_HOST = ("127.0.0.10", 4569)
B_BIND = ("127.0.0.20", 4569)


def _run(impair: str | None = None, **kw: Any) -> Any:
    import uvloop

    base: dict[str, Any] = {"quiet": True, "live": False, "peer": "office-a",
                            "peer_host": A_HOST, "bind": B_BIND}
    base.update(kw)
    opts = LoadtestOptions(**base)
    opts.check()
    spec = ImpairSpec.parse(impair) if impair else None
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        return r.run(run_loadtest_async(opts, impair=spec))


def _detail(res: Any) -> str:
    s = res.summary
    return (f"targets {s.get('targets')}, causes {s['causes']}, "
            f"notes {s['loadtest']['notes']}, impair {s.get('impair')}")


def test_rate_over_a_delayed_link(asterisk_factory: Any) -> None:
    asterisk_factory("office-a")
    res = _run("delay=50ms,seed=3", calls=30, rate=50.0, duration=(3.0, 3.0))
    tg = res.summary["targets"]
    assert res.summary["answered"] == 30, _detail(res)
    assert tg["setup_rtt_ms"] is not None and 95 <= tg["setup_rtt_ms"] <= 130, _detail(res)
    if tg["met"]:
        assert res.exit_code == 0, _detail(res)
    else:
        assert res.exit_code == 1, _detail(res)
        assert tg["capped_by"][0]["cap"] == "maxauthreq", _detail(res)
    assert tg["auth_slot_peak"] <= 3
    print("delayed link:", tg)
    ok = _run("delay=50ms,seed=4", calls=30, rate=50.0, duration=(3.0, 3.0),
              allow_underrun=True)
    tg2 = ok.summary["targets"]
    assert ok.exit_code == 0 and ok.summary["answered"] == 30, _detail(ok)
    assert tg2["met"] or tg2["capped_by"][0]["cap"] == "maxauthreq", _detail(ok)
    print("delayed link, allow underrun:", tg2)


def test_forced_encryption_reject_is_named(asterisk_factory: Any) -> None:
    inst = asterisk_factory("office-a", extra_general=("encryption = aes128",
                                                       "forceencryption = yes"))
    res = _run(calls=3, rate=10.0, duration=(2.0, 2.0))
    s = res.summary
    assert s["answered"] == 0 and res.exit_code == 1, _detail(res)
    assert all(r.outcome == "REJECT" and r.cause_code == 50 for r in res.records), _detail(res)
    notes = " ".join(s["loadtest"]["notes"])
    assert "forceencryption" in notes and "secret" in notes, notes
    assert "unencrypted while force encrypt" in inst.log_tail(40)


@pytest.mark.parametrize(("impair", "trunk", "callee"), [
    pytest.param("loss=3%,dir=recv,seed=11", False, (), id="3pct-recv-notrunk"),
    pytest.param("loss=5%,seed=12", True, LOSSY_CALLEE_GENERAL, id="5pct-both-trunk"),
])
def test_calls_over_a_lossy_link_all_complete(asterisk_factory: Any, impair: str, trunk: bool,
                                              callee: tuple[str, ...]) -> None:
    asterisk_factory("office-a", trunk=trunk, extra_general=callee)
    res = _run(impair, calls=20, rate=10.0, duration=(6.0, 6.0), trunk=trunk,
               max_pending=1000 if callee else 3)
    s = res.summary
    imp = s["impair"]
    lost = sum((imp.get(d) or {}).get("dropped", 0) for d in ("send", "recv"))
    assert lost > 0, imp
    assert s["answered"] == 20 and not s["causes"], _detail(res)
    assert res.exit_code == 0, _detail(res)
    print(impair, "lost", lost, "setup_ms", s["setup_ms"], "endpoint",
          {k: v for k, v in (s.get("endpoint") or {}).items() if "retrans" in k or "vnak" in k})
