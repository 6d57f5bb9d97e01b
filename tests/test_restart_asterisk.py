"""``iaxgw serve`` killed / terminated mid-call and restarted, against the real Asterisk 22
(office-a originates to our echo 300; ``bench/restart.py`` runs the scenario).

What Asterisk 22 was seen to do, and the bounds asserted:

* qualify (``qualifyfreqok=2000``, ``qualifyfreqnotok=1000`` ms, maxms 2000): office-b is
  UNREACHABLE within ~3 s of the stop (a POKE unanswered for maxms after the next qualify:
  <= 2 + 2 s, 8 s allowed) and OK again < 1 s after the restart (5 s allowed).
* SIGTERM: serve sends HANGUP cause 16 for every call; Asterisk ACKs and ends them at once
  (HANGUPCAUSE 16 on office-a, its IAX2 table empty within 2 s of the stop).
* SIGKILL: nothing is sent.  Asterisk's voice goes on into the void (trunk/mini: unreliable);
  its next reliable frame on each call (PING every 21 s, LAGRQ every 10 s) reaches the
  restarted serve, which answers INVAL, and Asterisk destroys the call (HANGUPCAUSE 16 was
  logged).  Observed ~19-20 s after the kill; bound: the next keepalive (<= 21 s) plus, if it was
  sent while we were down, its retransmissions (2 s, then 10 s) -> 35 s allowed.  Were serve down
  longer, Asterisk would give up after 4 sends (~32 s) with cause 27.
* the restarted serve keeps none of it (its table is empty), holds the numbers Asterisk still
  named for 60 s, and never hands out one of the numbers in use before the restart (call
  numbers are random per start; docs/protocol.md P15);
* new calls after the restart are UP with audio both ways, and after hanging up both tables are
  empty within 2 s (Asterisk ``iax2 show channels``: 0; ``iaxgw show channels``: []).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(90)]

_BENCH = Path(__file__).resolve().parent.parent / "bench" / "restart.py"


def _restart_module() -> Any:
    spec = importlib.util.spec_from_file_location("iaxgw_bench_restart", _BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("mode", ["term", "kill"])
def test_serve_restart_mid_call(lab: Any, tmp_path: Path, mode: str) -> None:
    restart = _restart_module()
    inst = lab.instance("office-a", restart.site_config()).start()
    try:
        r = restart.run(inst, tmp_path, mode=mode, calls=3, down_s=3.0)
    finally:
        inst.stop()
    print(r)
    assert r["peer_ok_s"] is not None and r["calls_up_s"] is not None
    assert len(r["our_callnos_before"]) == 3 and len(r["ast_callnos_before"]) == 3
    assert r["serve_exit"] == (-9 if mode == "kill" else 0)
    assert r["unreachable_s"] is not None and r["unreachable_s"] <= 8.0
    assert r["peer_ok_again_s"] is not None and r["peer_ok_again_s"] <= 5.0
    assert r["ast_old_gone_after_restart_s"] is not None
    old = [c for c, _status in r["ast_causes_old"]]
    if mode == "term":
        assert r["ast_channels_at_restart"] == 0          # ended by our HANGUPs at once
        assert old == ["16"] * 3
        assert r["restarted_stats"].get("frames_out_inval", 0) == 0
    else:
        assert r["ast_channels_at_restart"] == 3          # Asterisk does not know yet
        assert r["ast_old_gone_after_stop_s"] <= 35.0
        assert len(old) == 3 and all(c in ("16", "27") for c in old), old
        # ended by our INVAL (or, were we down > ~30 s, by Asterisk's own give-up: cause 27)
        assert r["restarted_stats"].get("frames_out_inval", 0) >= 1 or old == ["27"] * 3
    assert r["restarted_channels_after_old"] == 0
    assert not set(r["our_callnos_after"]) & set(r["our_callnos_before"])
    assert r["new_calls_up_s"] is not None and len(r["our_callnos_after"]) == 3
    assert all(rx > 20 and tx > 20 for rx, tx in r["new_frames"])
    assert [c for c, _s in r["ast_causes_new"]] == ["16"] * 3
    assert r["new_ended_ast_s"] is not None and r["new_ended_ast_s"] <= 2.0
    assert r["new_ended_ours_s"] is not None and r["new_ended_ours_s"] <= 2.0
    assert r["ast_active_calls_end"] == 0
    assert r["ast_iax2_channels_end"] == ["0 active IAX channels"]
    assert r["our_channels_end"] == []
    assert r["restarted_exit"] == 0
