"""Caller-side setup on a lossy link and the truth of its causes (sans-IO, in-memory pair), and
the auth-slot pacing model of the load tester (:class:`~iaxgw.sim.load.loadtest_plan.AuthWindow`).

* a NEW whose AUTHREQ is lost twice still completes with qualify on: the target's CALLTOKEN and
  its ACK of our resent NEW cancel the autokill, as Asterisk cancels auto_congest on any IAX
  frame of the call;
* a call whose frames are never acknowledged ends naming the frame, its sends and the time;
* an AUTHREQ asking for encryption gets an AUTHREP encrypted with AES-128-CBC under
  MD5(challenge, secret), as Asterisk's authenticate_reply does;
* the CALLTOKEN round trip and our AUTHREP are reported (CallSetup) for the pacing;
* 20 calls over a 5 % lossy link (each way) with qualify off all come up.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from helpers_pair import ADDR_B, SECRET, Link, Pair, seed_configs

from iaxgw._core.constants import IE, FrameType, IAXSubclass
from iaxgw._core.frames import build_full, parse_full
from iaxgw._core.ies import IEs, build_ies
from iaxgw.gateway.iax2 import events as ev
from iaxgw.sim.load.loadtest_plan import AuthWindow


def _iax_sub(data: bytes) -> int:
    if not data[0] & 0x80:
        return -1
    f = parse_full(data)
    return f.csub if f.frametype == FrameType.IAX else -1


def _answering(p: Pair) -> None:
    for e in p.pop_events(p.b):
        if isinstance(e, ev.IncomingCall):
            p.b.answer(e.callno, p.now)


def _run_calls(p: Pair, n: int, spacing: float, until: float) -> dict[int, list[Any]]:
    """Place ``n`` calls a -> b ``spacing`` apart, b answers; the events of a per call."""
    placed: dict[int, list[Any]] = {}
    t_end = p.now + until
    next_at = p.now
    while p.now < t_end:
        if len(placed) < n and p.now >= next_at:
            placed[p.a.call("office-b", "300", p.now)] = []
            next_at = p.now + spacing
        horizon = next_at if len(placed) < n else t_end
        if not p.step(min(horizon, t_end)):
            if len(placed) >= n:
                break
            p.now = max(p.now, horizon)
        _answering(p)
        for e in p.pop_events(p.a):
            c = getattr(e, "callno", None)
            if c in placed:
                placed[c].append(e)
    return placed


def _answered(evs: list[Any]) -> bool:
    return any(isinstance(e, ev.CallProgress) and e.kind == "answered" for e in evs)


def test_lost_authreq_twice_does_not_autokill() -> None:
    """Qualify on (autokill 2 x 2000 ms): the first two AUTHREQs are lost; the target's ACK of
    our resent NEW arrives at 2 s, its third AUTHREQ ~10 s later: the call completes, as
    Asterisk's does (its auto_congest ends with the first IAX frame of the call)."""
    lost = {"authreq": 0}

    def drop(direction: str, data: bytes) -> bool:
        if direction == "b>a" and _iax_sub(data) == IAXSubclass.AUTHREQ and lost["authreq"] < 2:
            lost["authreq"] += 1
            return True
        return False

    ca, cb = seed_configs()
    assert ca.entries["office-b"].qualify == 2000
    p = Pair(ca, cb, drop=drop)
    placed = _run_calls(p, 1, 0.0, 40.0)
    (evs,) = placed.values()
    assert lost["authreq"] == 2
    ended = [e for e in evs if isinstance(e, ev.CallEnded)]
    assert _answered(evs), (evs, p.dropped)
    assert not ended, ended


def test_give_up_names_the_frame() -> None:
    """The target sends its CALLTOKEN and then nothing reaches us: our tokened NEW is sent 4
    times (0, 2, 12, 22 s) and the call ends at 32 s naming it."""
    ca, cb = seed_configs(qualify=None)

    def drop(direction: str, data: bytes) -> bool:
        return direction == "b>a" and _iax_sub(data) != IAXSubclass.CALLTOKEN

    p = Pair(ca, cb, drop=drop)
    placed = _run_calls(p, 1, 0.0, 40.0)
    (evs,) = placed.values()
    (end,) = [e for e in evs if isinstance(e, ev.CallEnded)]
    assert end.reason == "timeout" and end.cause == 27
    assert end.cause_text == "NEW never acknowledged after 4 sends (32 s)", end


def test_authreq_asking_for_encryption_gets_an_encrypted_authrep() -> None:
    ca, _ = seed_configs()
    p = Pair(ca, seed_configs()[1])
    a = p.a
    callno = a.call("office-b", "300", p.now)
    (new, _), = a.datagrams_to_send(p.now)
    f = parse_full(new)
    ies = build_ies([(IE.AUTHMETHODS, 2), (IE.CHALLENGE, "123456"), (IE.ENCRYPTION, 1),
                     (IE.USERNAME, "office-b")])
    authreq = build_full(
        777, callno, 5, 0, (f.oseqno + 1) & 0xFF, FrameType.IAX, IAXSubclass.AUTHREQ, ies
    )
    a.receive_datagram(authreq, ADDR_B, p.now + 0.01)
    out = a.datagrams_to_send(p.now + 0.01)
    assert not [d for d, _ in out if _iax_sub(d) == IAXSubclass.AUTHREP], "AUTHREP in the clear"
    key = hashlib.md5(("123456" + SECRET).encode()).digest()
    cipher = Cipher(algorithms.AES(key), modes.CBC(bytes(16)))
    plain = [d[:4] + (lambda ws: ws[16 + (ws[15] & 15):])(cipher.decryptor().update(d[4:]))
             for d, _ in out][-1]
    g = parse_full(plain)
    assert (g.frametype, g.csub, g.scallno, g.dcallno) == (
        FrameType.IAX,
        IAXSubclass.AUTHREP,
        callno,
        777,
    )
    assert IEs.parse(g.payload).get(IE.MD5_RESULT) == hashlib.md5(
        ("123456" + SECRET).encode()).hexdigest()
    assert a.call_encrypted(callno)


def test_setup_steps_report_round_trip_and_authrep() -> None:
    ca, cb = seed_configs()
    p = Pair(ca, cb, link_ab=Link(delay=0.040, seed=1), link_ba=Link(delay=0.040, seed=2))
    placed = _run_calls(p, 1, 0.0, 5.0)
    (evs,) = placed.values()
    steps = [e for e in evs if isinstance(e, ev.CallSetup)]
    assert [s.step for s in steps] == ["calltoken", "authrep"]
    assert math.isclose(steps[0].rtt_ms, 80.0, abs_tol=1.0), steps
    assert not steps[1].resend
    assert _answered(evs)


def test_20_calls_over_5pct_loss_each_way_all_come_up() -> None:
    """qualify off (no autokill), the callee's maxauthreq and token lifetime as the lab sets them
    on a lossy link: every call completes; the link really lost datagrams."""
    for seed in range(3):
        ca, cb = seed_configs(qualify=None, maxauthreq=1000, calltokenexpiration=40)
        link_ab, link_ba = Link(drop=0.05, seed=10 + seed), Link(drop=0.05, seed=20 + seed)
        p = Pair(ca, cb, link_ab=link_ab, link_ba=link_ba, seed=seed)
        placed = _run_calls(p, 20, 0.1, 60.0)
        assert link_ab.dropped and link_ba.dropped
        failed = {c: [e for e in evs if isinstance(e, ev.CallEnded)]
                  for c, evs in placed.items() if not _answered(evs)}
        assert not failed, failed


# --- the auth-slot model ---------------------------------------------------------------------

def test_auth_window_counts_slots_until_authrep_arrives() -> None:
    w = AuthWindow(3)
    for k in (1, 2, 3):                    # nothing measured yet: slots open, 3 at most
        assert w.admit(0.0)
        w.start(k, 0.0)
    assert not w.admit(0.0) and w.next_change(0.0) is None
    for k in (1, 2, 3):
        w.calltoken(k, 0.1, 0.1)           # 100 ms round trip, call tokens in use
    assert w.rtt is not None and math.isclose(w.rtt, 0.1)
    # a slot at the target: tokened NEW arrives at 0.15, AUTHREP at 0.25 (+ guards)
    assert not w.admit(0.1)
    w.authrep(1, 0.2)                      # arrives 0.25 + guard 0.03
    assert math.isclose(w.slot_end(1, 0.2), 0.28)
    lead = w.lead()
    assert math.isclose(lead, 0.12)
    assert not w.admit(0.15)               # 0.15 + 0.12 < 0.28: a new slot would overlap
    assert w.admit(0.17)
    assert math.isclose(w.next_change(0.15) or 0.0, 0.28 - lead)
    # a call whose AUTHREP never left (AUTHREQ lost): past its prediction its slot is open
    w.start(4, 1.0)
    assert w.slot_end(4, 1.0) < math.inf and w.slot_end(4, 1.5) == math.inf
    w.done(4)
    for k in (1, 2, 3):
        w.done(k)
    assert w.in_setup == 0 and w.admit(2.0)
    assert w.peak == 3
