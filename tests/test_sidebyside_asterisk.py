"""Side by side: each scenario with the lab's Asterisk 22 as office-b, then with ``iaxgw serve``
as office-b (same iax.conf / extensions.conf, same address), the real Asterisk office-a calling in
both; the outcomes must match (``iaxgw.sim.lab.sidebyside``).  Every comparison is printed (``-s``).
"""

from __future__ import annotations

from typing import Any

import pytest

from iaxgw.sim.lab.sidebyside import Comparison, Scenario, run_side_by_side

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(420)]


def _run(lab: Any, sc: Scenario, tmp_path: Any, **tol: Any) -> Comparison:
    cmp_ = run_side_by_side(lab, sc, tmp_path, **tol)
    print(cmp_.text())
    return cmp_


def test_burst_of_parallel_originates(lab: Any, tmp_path: Any) -> None:
    """200 calls, ``channel originate`` 50 at a time in parallel: serve brings up as many as the
    Asterisk office-b (maxauthreq 3 on both), with audio echoed on each."""
    sc = Scenario("200 calls in bursts of 50", calls=200, burst=50, burst_gap_s=0.5, hold_s=1.5)
    c = _run(lab, sc, tmp_path)
    ast, gw = c.asterisk, c.iaxgw
    # serve refuses a NEW with cause 21 only when the wire shows maxauthreq AUTHREQs unanswered
    # at its arrival: its count is the wire's, whatever the machine's load
    assert gw.unfounded_limit_rejects() == [], c.diffs
    rej_ast = sum(n for k, n in ast.causes.items() if k.startswith("REJECT 21"))
    rej_gw = sum(n for k, n in gw.causes.items() if k.startswith("REJECT 21"))
    # office-a itself (busy with 50 CLI connections) drops datagrams at its socket on a loaded
    # machine (a_rx_drops) and bunches its NEWs by chance; a lost AUTHREQ stays unanswered for
    # 2 s and costs REJECT 21s with either office-b (measured: 0-15 per run with the Asterisk
    # office-b): 3 % of slack, and on top what office-a's burst pressed harder on serve's
    # limit than on Asterisk's (NEWs that arrived with maxauthreq AUTHREQs unanswered on the
    # wire; serve's replies are held to Asterisk's below).  Before the fix serve brought up
    # 16-25 calls fewer than the Asterisk office-b.
    slack = max(3, round(0.03 * sc.calls))
    pressed = max(0, gw.over_limit_news() - ast.over_limit_news())
    assert gw.a_up >= ast.a_up - slack - pressed, c.diffs
    assert gw.a_up >= 0.9 * sc.calls - gw.over_limit_news(), c.diffs
    assert rej_gw <= rej_ast + slack + pressed, (rej_ast, rej_gw)
    # what the fix is about: each NEW answered about as fast as Asterisk answers it (before:
    # median 3.6-4.4 ms, 90th percentile 12-42 ms, against Asterisk's 0.3-0.5 and 2-4 ms)
    for q in (0.5, 0.9):
        r_ast, r_gw = ast.reply_ms(q), gw.reply_ms(q)
        assert r_ast is not None and r_gw is not None
        assert r_gw <= max(3 * r_ast, r_ast + 1.0 + 4 * q), (q, r_ast, r_gw)
    # echoed audio on every call, or at least on as many as with the Asterisk office-b (on a
    # loaded machine office-a's own socket drops can cost either side its voice)
    ok, ok_ast = gw.audio_ok(), ast.audio_ok()
    assert ok is not None and ok_ast is not None
    assert ok >= min(gw.answered - 2, ok_ast - slack), c.diffs
    assert gw.setup_ms is not None and ast.setup_ms is not None
    assert gw.setup_ms <= max(3 * ast.setup_ms, ast.setup_ms + 20), (ast.setup_ms, gw.setup_ms)


def test_wrong_secret_same_causes(lab: Any, tmp_path: Any) -> None:
    sc = Scenario("office-a's secret wrong", calls=2, hold_s=0.0, settle_s=2.0,
                  a={"secret": "not-the-shared-secret"})
    c = _run(lab, sc, tmp_path)
    assert c.asterisk.causes == c.iaxgw.causes, c.diffs
    assert c.iaxgw.causes == {"REJECT 50 No authority found": 2}
    assert c.asterisk.a_up == c.iaxgw.a_up == 0


def test_acl_denial_same_outcome(lab: Any, tmp_path: Any) -> None:
    sc = Scenario("office-b's ACL excludes office-a", calls=2, hold_s=0.0, settle_s=2.0,
                  b={"permit": ("127.0.0.99/255.255.255.255",)})
    c = _run(lab, sc, tmp_path)
    assert c.asterisk.causes == c.iaxgw.causes, c.diffs
    assert c.asterisk.a_up == c.iaxgw.a_up == 0
    assert all(k.startswith("REJECT") for k in c.iaxgw.causes), c.iaxgw.causes
    # Asterisk's user search skips a user its ACL denies: the caller gets the fake AUTHREQ an
    # unknown name gets (so the answers do not tell names apart), and so does it from serve
    assert [x.authreqs for x in c.asterisk.calls] == [x.authreqs for x in c.iaxgw.calls] \
        == [1, 1], c.diffs


def test_qualify_up_down_and_back(lab: Any, tmp_path: Any) -> None:
    """office-a's ``iax2 show peers`` sees office-b OK with a similar latency; office-b stopped:
    office-a marks it unreachable about as fast; started again: OK again about as fast."""
    sc = Scenario("qualify", calls=0, down_cycle=True, down_timeout_s=20.0, qualify_samples=3,
                  a={"extra_peer": ("qualifyfreqok = 2000", "qualifyfreqnotok = 2000")})
    c = _run(lab, sc, tmp_path)
    assert c.asterisk.peer_status == c.iaxgw.peer_status == "OK", c.diffs
    assert c.same, c.diffs
    assert c.iaxgw.down_status == "UNREACHABLE" and c.iaxgw.back_ok_s is not None
