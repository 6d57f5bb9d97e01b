"""The side-by-side harness's wire decoder against calls built here (known truth): outcome and
cause per call, setup time, voice each way in the window and the echo check."""

from __future__ import annotations

from dataclasses import dataclass

from iaxgw._core.constants import IE
from iaxgw._core.frames import build_full, build_mini
from iaxgw._core.ies import build_ies
from iaxgw._core.trunk import pack_trunk
from iaxgw.sim.lab.sidebyside import A_ADDR, B_ADDR, SideOutcome, analyse_wire

IAX, CONTROL = 6, 4


@dataclass
class Rec:
    time: float
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


def _a(t: float, data: bytes) -> Rec:
    return Rec(t, A_ADDR, B_ADDR, data)


def _b(t: float, data: bytes) -> Rec:
    return Rec(t, B_ADDR, A_ADDR, data)


def test_answered_echoed_rejected_and_silent_calls() -> None:
    recs = [
        # call 1 (office-a 100 <-> office-b 200): token, auth, accept, answer after 5 ms
        _a(0.000, build_full(100, 0, 0, 0, 0, IAX, 1)),
        _b(0.001, build_full(1, 100, 0, 0, 1, IAX, 0x28)),
        _a(0.002, build_full(100, 0, 0, 0, 0, IAX, 1)),
        _b(0.003, build_full(200, 100, 1, 0, 1, IAX, 8)),
        _a(0.004, build_full(100, 200, 2, 1, 1, IAX, 9)),
        _b(0.004, build_full(200, 100, 3, 1, 2, IAX, 7)),
        _b(0.005, build_full(200, 100, 4, 2, 2, CONTROL, 4)),
        # call 2 (office-a 101): REJECT 21 with its text
        _a(0.010, build_full(101, 0, 0, 0, 0, IAX, 1)),
        _b(0.011, build_full(300, 101, 1, 0, 1, IAX, 6, build_ies([
            (IE.CAUSE, "Unauthenticated call limit reached"), (IE.CAUSECODE, 21)]))),
        # call 3 (office-a 102): nothing back
        _a(0.020, build_full(102, 0, 0, 0, 0, IAX, 1)),
    ]
    # voice of call 1: office-a sends 10 frames, office-b echoes 8 of them and sends 1 foreign;
    # one frame each way before the window is not counted
    sent = [bytes([i]) * 160 for i in range(12)]
    recs.append(_a(0.5, build_mini(100, 1, sent[11])))
    recs.append(_b(0.5, build_mini(200, 1, sent[11])))
    for i in range(10):
        t = 1.0 + 0.02 * i
        recs.append(_a(t, pack_trunk([(100, i, sent[i])], i)[0]))
        if i < 8:
            recs.append(_b(t + 0.001, pack_trunk([(200, i, sent[i])], i)[0]))
    recs.append(_b(1.3, build_mini(200, 5, b"\x55" * 160)))
    recs.sort(key=lambda r: r.time)

    calls = analyse_wire(recs, (0.9, 1.5))
    assert [(c.a_callno, c.label) for c in calls] == [
        (100, "answered"), (101, "REJECT 21 Unauthenticated call limit reached"),
        (102, "no answer")]
    one = calls[0]
    assert one.b_callno == 200 and one.authreqs == 1
    assert abs(one.answered_at - one.new_at - 0.005) < 1e-9
    assert (one.voice_to_b, one.voice_from_b, one.echoed) == (10, 9, 8)
    # NEW -> CALLTOKEN 1 ms, NEW -> AUTHREQ 1 ms; the REJECT 1 ms; the silent call none
    assert [round(1000 * x, 3) for c in calls for x in c.reply_s] == [1.0, 1.0, 1.0]

    side = SideOutcome("iaxgw", calls=calls, hold_s=0.2)
    assert side.setup_ms == 5.0 and side.reply_ms(0.5) == 1.0
    # 0.2 s window: 10 frames expected each way; 9 back of which 8 echoed -> below 90 %
    assert side.audio_ok() == 0
    assert side.audio_ok(fraction=0.8) == 1


def _setup(no: int, b_no: int, t: float, *, authrep_at: float | None) -> list[Rec]:
    """A tokened NEW from office-a call ``no`` at ``t``, office-b's AUTHREQ 0.1 ms later and
    office-a's AUTHREP at ``authrep_at`` (None: never)."""
    recs = [_a(t, build_full(no, 0, 0, 0, 0, IAX, 1)),
            _b(t + 0.0001, build_full(b_no, no, 1, 0, 1, IAX, 8))]
    if authrep_at is not None:
        recs.append(_a(authrep_at, build_full(no, b_no, 1, 1, 1, IAX, 9)))
    return recs


def _reject21(no: int, b_no: int, t: float) -> Rec:
    return _b(t, build_full(b_no, no, 1, 0, 1, IAX, 6, build_ies([
        (IE.CAUSE, "Unauthenticated call limit reached"), (IE.CAUSECODE, 21)])))


def test_unanswered_authreqs_at_each_new_and_unfounded_limit_rejects() -> None:
    # calls 1-3 get AUTHREQs that office-a answers only at 10 ms; call 4's NEW at 5 ms meets
    # three unanswered: its REJECT 21 is founded.  Call 5's NEW at 11 ms meets none (the three
    # AUTHREPs came at 10 ms): a REJECT 21 then is unfounded.  Call 6 at 12 ms is accepted.
    recs: list[Rec] = []
    for i in range(3):
        recs += _setup(10 + i, 20 + i, 0.001 * (i + 1), authrep_at=0.010)
    recs += [_a(0.005, build_full(13, 0, 0, 0, 0, IAX, 1)), _reject21(13, 23, 0.0051)]
    recs += [_a(0.011, build_full(14, 0, 0, 0, 0, IAX, 1)), _reject21(14, 24, 0.0111)]
    recs += _setup(15, 25, 0.012, authrep_at=None)
    recs.sort(key=lambda r: r.time)
    calls = analyse_wire(recs, (0.0, 0.0))
    assert [(c.a_callno, c.pending_at_new) for c in calls] == [
        (10, 0), (11, 1), (12, 2), (13, 3), (14, 0), (15, 0)]
    side = SideOutcome("iaxgw", calls=calls)
    assert side.over_limit_news() == 1
    assert [c.a_callno for c in side.unfounded_limit_rejects()] == [14]
    assert side.unfounded_limit_rejects(maxauthreq=4) == [calls[3], calls[4]]
