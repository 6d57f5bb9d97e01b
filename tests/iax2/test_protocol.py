"""Call setup of the sans-IO endpoint: calltoken, md5 auth, ACL, codec negotiation, hangup."""

from __future__ import annotations

import hashlib
import random
from typing import Any

from helpers_pair import (
    ADDR_A,
    ADDR_B,
    Pair,
    answered_call,
    drain,
    events,
    full_frames,
    iax,
    seed_configs,
    site_config,
)

from iaxgw._core.constants import IE, FrameType, IAXSubclass
from iaxgw._core.frames import build_full, parse_full
from iaxgw._core.ies import IEs, build_ies
from iaxgw.gateway.iax2.events import AuthFailed, CallEnded, CallProgress, IncomingCall
from iaxgw.gateway.iax2.protocol import Endpoint

NEW_ORDER = [IE.VERSION, IE.CALLED_NUMBER, IE.CODEC_PREFS, IE.CALLING_NUMBER, IE.CALLINGPRES,
             IE.CALLINGTON, IE.CALLINGTNS, IE.CALLINGANI2, IE.CALLING_NAME, IE.CALLED_CONTEXT,
             IE.USERNAME, IE.FORMAT, IE.FORMAT2, IE.CAPABILITY, IE.CAPABILITY2, IE.ADSICPE,
             IE.DATETIME, IE.CALLTOKEN]


def empty(ep: Endpoint) -> bool:
    return not ep.channels() and ep.stats()["calls_active"] == 0 and not ep._calls


def setup_call(p: Pair, **kw: object) -> tuple[int, int]:
    p.run(0.5)
    cn = p.a.call("office-b", "300", p.now, caller_num="200", caller_name="Alice", **kw)
    assert p.run_until(lambda: p.ev(p.b, IncomingCall) and p.ev(p.a, CallProgress), 10)
    return cn, p.ev(p.b, IncomingCall)[-1].callno


def test_call_setup_calltoken_md5_wire_order() -> None:
    p = Pair()
    cn, bcn = setup_call(p)
    ab, ba = full_frames(p.wire, "a>b"), full_frames(p.wire, "b>a")
    news = iax(ab, IAXSubclass.NEW)
    assert len(news) == 2
    first, second = news
    ies1 = IEs.parse(first.payload)
    assert [k for k, _ in ies1] == NEW_ORDER
    assert ies1.get(IE.CALLTOKEN) == b"" and ies1.get(IE.VERSION) == 2
    assert ies1.get(IE.USERNAME) == "office-a" and ies1.get(IE.CALLED_CONTEXT) == "from-iax"
    assert ies1.get(IE.FORMAT) == 4 and ies1.get(IE.CAPABILITY) == 12
    assert ies1.get(IE.CODEC_PREFS) == "DE"
    # stateless CALLTOKEN reply from call 1, ts echoed, OSeqno 0, ISeqno = received + 1
    tok = iax(ba, IAXSubclass.CALLTOKEN)[0]
    assert (tok.scallno, tok.dcallno, tok.ts, tok.oseqno, tok.iseqno) == (1, cn, first.ts, 0, 1)
    token = IEs.parse(tok.payload).get(IE.CALLTOKEN)
    assert isinstance(token, bytes) and b"?" in token
    ts_text, _, digest = token.decode().partition("?")
    assert ts_text.isdigit() and len(digest) == 40
    # resent NEW: same call number, seqnos reset, token byte-exact and last
    assert (second.scallno, second.dcallno, second.oseqno, second.iseqno) == (cn, 0, 0, 0)
    ies2 = IEs.parse(second.payload)
    assert ies2.items[-1] == (IE.CALLTOKEN, token)
    assert [k for k, _ in ies2] == NEW_ORDER
    # AUTHREQ md5 with a decimal challenge, AUTHREP = md5(challenge + secret)
    areq = IEs.parse(iax(ba, IAXSubclass.AUTHREQ)[0].payload)
    assert areq.get(IE.AUTHMETHODS) == 2
    chal = areq.get(IE.CHALLENGE)
    assert isinstance(chal, str) and chal.isdigit() and len(chal) <= 9
    arep = IEs.parse(iax(ab, IAXSubclass.AUTHREP)[0].payload)
    assert arep.get(IE.MD5_RESULT) == hashlib.md5(
        (chal + "a-strong-shared-secret").encode()).hexdigest()
    acc = iax(ba, IAXSubclass.ACCEPT)[0]
    assert [k for k, _ in IEs.parse(acc.payload)] == [IE.FORMAT, IE.FORMAT2]
    # our ACK of the ACCEPT (docs/protocol.md P3): echoed ts, exact call numbers
    acks = [f for f in iax(ab, IAXSubclass.ACK) if f.ts == acc.ts and f.oseqno == acc.iseqno]
    assert acks and acks[0].dcallno == acc.scallno == bcn and acks[0].scallno == cn
    inc = p.ev(p.b, IncomingCall)[0]
    assert (inc.peer, inc.exten, inc.context, inc.caller_num, inc.caller_name, inc.codec) == (
        "office-a", "300", "from-iax", "200", "Alice", 4)
    assert inc.trunk and cn >= 16384 and bcn >= 16384     # trunk=yes -> trunk call numbers
    assert p.ev(p.a, CallProgress)[0].kind == "accepted"


def test_call_setup_other_direction_and_hangup_causes() -> None:
    p = Pair()
    p.run(0.5)
    cn, acn = answered_call(p, p.b, p.a, "office-a", "200")
    p.a.hangup(acn, p.now, cause=17)
    assert p.run_until(lambda: p.ev(p.b, CallEnded), 5)
    end = p.ev(p.b, CallEnded)[0]
    assert (end.callno, end.cause, end.reason) == (cn, 17, "hangup")
    assert p.ev(p.a, CallEnded)[0].reason == "local"
    hang = iax(full_frames(p.wire, "a>b"), IAXSubclass.HANGUP)[0]
    assert IEs.parse(hang.payload).items == [(IE.CAUSECODE, 17)]
    p.run(2)
    assert empty(p.a) and empty(p.b)


def test_wrong_secret_reject_50_no_state() -> None:
    ca, cb = seed_configs()
    ca.entries["office-b"].secrets = ["wrong"]
    p = Pair(ca, cb)
    p.run(0.5)
    cn = p.a.call("office-b", "300", p.now)
    assert p.run_until(lambda: p.ev(p.a, CallEnded), 10)
    end = p.ev(p.a, CallEnded)[0]
    assert (end.callno, end.cause, end.reason, end.cause_text) == (
        cn, 50, "reject", "No authority found")
    assert not p.ev(p.b, IncomingCall)
    assert any("wrong secret" in e.reason for e in p.ev(p.b, AuthFailed))
    rej = iax(full_frames(p.wire, "b>a"), IAXSubclass.REJECT)[0]
    assert IEs.parse(rej.payload).items == [(IE.CAUSE, "No authority found"), (IE.CAUSECODE, 50)]
    p.run(2)
    assert empty(p.a) and empty(p.b)
    assert p.b.stats()["auth_failures"] == 1


def test_unknown_username_gets_fake_authreq_then_reject() -> None:
    ca, cb = seed_configs()
    ca.entries["office-b"].username = "nobody"
    p = Pair(ca, cb)
    p.run(0.5)
    p.a.call("office-b", "300", p.now)
    assert p.run_until(lambda: p.ev(p.a, CallEnded), 10)
    assert p.ev(p.a, CallEnded)[0].cause == 50
    ba = full_frames(p.wire, "b>a")
    assert IEs.parse(iax(ba, IAXSubclass.AUTHREQ)[0].payload).get(IE.USERNAME) == "nobody"
    assert iax(ba, IAXSubclass.REJECT)
    p.run(2)
    assert empty(p.b)


def _acl_or_unknown_run(username: str | None, acl_denies: bool) -> tuple[list[Any], Pair]:
    ca, cb = seed_configs()
    if username is not None:
        ca.entries["office-b"].username = username
    if acl_denies:
        cb = site_config("office-b", "office-a", ("127.0.0.99", 4569))   # permits only .99
        cb.entries["office-a"].qualify = None
    p = Pair(ca, cb)
    p.run(0.5)
    p.a.call("office-b", "300", p.now)
    assert p.run_until(lambda: p.ev(p.a, CallEnded), 10)
    assert p.ev(p.a, CallEnded)[0].cause == 50
    return [
        f for f in full_frames(p.wire, "b>a") if f.csub in (IAXSubclass.AUTHREQ, IAXSubclass.REJECT)
    ], p


def test_acl_denied_known_user_looks_like_an_unknown_one() -> None:
    """Asterisk's user search skips a user whose ACL denies the source, so the caller gets
    the fake AUTHREQ an unknown name gets, then REJECT 50: the answers do not tell which
    user names exist.  The log still says why."""
    denied, p = _acl_or_unknown_run("office-a", acl_denies=True)
    unknown, _ = _acl_or_unknown_run("office-a-typo", acl_denies=False)

    def shape(frames: list[Any], name: str) -> list[Any]:
        out = []
        for f in frames:
            ies = IEs.parse(f.payload)
            out.append((f.csub, ies.get(IE.AUTHMETHODS), len(ies.get(IE.CHALLENGE) or "") > 0,
                        ies.get(IE.USERNAME) == name, ies.get(IE.CAUSECODE),
                        ies.get(IE.CAUSE)))
        return out

    assert shape(denied, "office-a") == shape(unknown, "office-a-typo") == [
        (IAXSubclass.AUTHREQ, 2, True, True, None, None),
        (IAXSubclass.REJECT, None, False, False, 50, "No authority found")]
    assert any("denied by the ACL of [office-a]" in e.reason for e in p.ev(p.b, AuthFailed))
    assert p.b._admission.authreq["office-a"] == 0      # a fake AUTHREQ takes no maxauthreq slot
    p.run(2)
    assert empty(p.b)


def raw_new(scallno: int, ies: list[tuple[int, object]], oseqno: int = 0, ts: int = 3) -> bytes:
    return build_full(scallno, 0, ts, oseqno, 0, FrameType.IAX, IAXSubclass.NEW, build_ies(ies))


def new_ies(token: bytes | None = b"", username: str = "office-a") -> list[tuple[int, object]]:
    items: list[tuple[int, object]] = [(IE.VERSION, 2), (IE.CALLED_NUMBER, "300"),
                                       (IE.USERNAME, username), (IE.FORMAT, 4),
                                       (IE.CAPABILITY, 12)]
    if token is not None:
        items.append((IE.CALLTOKEN, token))
    return items


def callee(**general: object) -> Endpoint:
    _, cb = seed_configs(qualify=None, **general)
    return Endpoint(cb, local_addr=ADDR_B, rng=random.Random(5), wall_offset=1.7e9)


def get_token(ep: Endpoint, now: float, addr: tuple[str, int] = ADDR_A) -> bytes:
    ep.receive_datagram(raw_new(77, new_ies()), addr, now)
    (data, to), = drain(ep, now)
    f = parse_full(data)
    assert (to, f.scallno, f.dcallno, f.csub) == (addr, 1, 77, IAXSubclass.CALLTOKEN)
    tok = IEs.parse(f.payload).get(IE.CALLTOKEN)
    assert isinstance(tok, bytes)
    return tok


def only_reply(ep: Endpoint, now: float) -> object:
    out = drain(ep, now)
    assert len(out) == 1
    return parse_full(out[0][0])


def test_calltoken_missing_rejected_without_state() -> None:
    ep = callee()
    ep.start(0.0)
    drain(ep, 0.0)
    ep.receive_datagram(raw_new(77, new_ies(token=None)), ADDR_A, 1.0)
    f = only_reply(ep, 1.0)
    assert (f.scallno, f.dcallno, f.csub, f.payload) == (1, 77, IAXSubclass.REJECT, b"")  # type: ignore[attr-defined]
    assert ep.stats()["callnos_in_use"] == 0 and not ep._calls
    assert ep.stats()["calltoken_missing_rejected"] == 1


def test_calltoken_not_required_when_entry_says_no() -> None:
    ep = callee()
    ep.config.entries["office-a"].requirecalltoken = "no"
    ep.start(0.0)
    drain(ep, 0.0)
    ep.receive_datagram(raw_new(77, new_ies(token=None)), ADDR_A, 1.0)
    f = only_reply(ep, 1.0)
    assert f.csub == IAXSubclass.AUTHREQ and f.scallno > 1  # type: ignore[attr-defined]


def test_calltokenoptional_acl_exempts_source() -> None:
    from helpers_pair import acl_only

    ep = callee(calltokenoptional=acl_only("127.0.0.10")[1:])
    ep.start(0.0)
    drain(ep, 0.0)
    ep.receive_datagram(raw_new(77, new_ies(token=None)), ADDR_A, 1.0)
    assert only_reply(ep, 1.0).csub == IAXSubclass.AUTHREQ  # type: ignore[attr-defined]


def test_calltoken_valid_expired_foreign_other_address() -> None:
    ep = callee()
    ep.start(0.0)
    drain(ep, 0.0)
    tok = get_token(ep, 1.0)
    assert not ep._calls                          # the CALLTOKEN reply allocates nothing
    # expired: 10 s is the limit
    ep.receive_datagram(raw_new(78, new_ies(tok)), ADDR_A, 11.5)
    f = only_reply(ep, 11.5)
    assert (f.scallno, f.csub, f.payload) == (1, IAXSubclass.REJECT, b"")  # type: ignore[attr-defined]
    # foreign (another endpoint's secret)
    other = callee()
    other._admission.tokens.key = bytes(b ^ 0x5A for b in other._admission.tokens.key)
    other.start(0.0)
    drain(other, 0.0)
    ftok = get_token(other, 20.0)
    ep.receive_datagram(raw_new(79, new_ies(ftok)), ADDR_A, 20.0)
    assert only_reply(ep, 20.0).csub == IAXSubclass.REJECT  # type: ignore[attr-defined]
    # valid token but presented from another port
    tok2 = get_token(ep, 30.0)
    ep.receive_datagram(raw_new(80, new_ies(tok2)), ("127.0.0.10", 4570), 30.5)
    assert only_reply(ep, 30.5).csub == IAXSubclass.REJECT  # type: ignore[attr-defined]
    assert not ep._calls
    # valid
    ep.receive_datagram(raw_new(81, new_ies(tok2)), ADDR_A, 31.0)
    f = only_reply(ep, 31.0)
    assert f.csub == IAXSubclass.AUTHREQ and f.dcallno == 81  # type: ignore[attr-defined]
    assert ep.stats()["calltoken_rejected"] == 3 and ep.stats()["calltoken_accepted"] == 1
    assert len([e for e in events(ep) if isinstance(e, AuthFailed)]) == 3


def test_codec_negotiation_alaw_and_no_overlap() -> None:
    ca, cb = seed_configs()
    ca.entries["office-b"].codecs = ["alaw"]
    p = Pair(ca, cb)
    setup_call(p)
    assert p.ev(p.b, IncomingCall)[0].codec == 8
    assert p.ev(p.a, CallProgress)[0].codec == 8
    ca, cb = seed_configs()
    ca.entries["office-b"].codecs = ["gsm"]
    p = Pair(ca, cb)
    p.run(0.5)
    p.a.call("office-b", "300", p.now)
    assert p.run_until(lambda: p.ev(p.a, CallEnded), 10)
    end = p.ev(p.a, CallEnded)[0]
    assert (end.cause, end.cause_text) == (58, "Unable to negotiate codec")
    p.run(2)
    assert empty(p.a) and empty(p.b)


def test_format2_wins_over_format() -> None:
    ep = callee()
    ep.config.entries["office-a"].secrets = []
    ep.config.entries["office-a"].requirecalltoken = "no"
    ep.start(0.0)
    drain(ep, 0.0)
    ies = [(IE.USERNAME, "office-a"), (IE.FORMAT, 4), (IE.CAPABILITY, 4), (IE.FORMAT2, 8),
           (IE.CAPABILITY2, 8)]
    ep.receive_datagram(raw_new(90, ies), ADDR_A, 1.0)
    f = only_reply(ep, 1.0)
    assert f.csub == IAXSubclass.ACCEPT  # type: ignore[attr-defined]
    assert IEs.parse(f.payload).items == [(IE.FORMAT, 8), (IE.FORMAT2, 8)]  # type: ignore[attr-defined]
    # neither FORMAT nor CAPABILITY -> REJECT 58
    ep.receive_datagram(raw_new(91, [(IE.USERNAME, "office-a")]), ADDR_A, 2.0)
    f = only_reply(ep, 2.0)
    assert f.csub == IAXSubclass.REJECT  # type: ignore[attr-defined]
    assert IEs.parse(f.payload).get(IE.CAUSECODE) == 58  # type: ignore[attr-defined]


def test_accept_with_several_formats_picks_one_we_offered() -> None:
    """An ACCEPT naming several formats (gsm | alaw) where our preferred one (ulaw) is absent:
    the call runs on the one we can do (alaw), never on the lowest bit (gsm)."""
    ca, _ = seed_configs(qualify=None)
    ep = Endpoint(ca, local_addr=ADDR_A, rng=random.Random(6), wall_offset=1.7e9)
    ep.start(0.0)
    drain(ep, 0.0)
    cn = ep.call("office-b", "300", 0.5)
    (data, to), = drain(ep, 0.5)
    new = parse_full(data)
    assert (to, new.csub, IEs.parse(new.payload).get(IE.CAPABILITY)) == (
        ADDR_B,
        IAXSubclass.NEW,
        12,
    )
    ep.receive_datagram(build_full(0x55, cn, 10, 0, 1, FrameType.IAX, IAXSubclass.ACCEPT,
                                   build_ies([(IE.FORMAT, 2 | 8), (IE.FORMAT2, 2 | 8)])),
                        ADDR_B, 0.6)
    accepted = [e for e in events(ep) if isinstance(e, CallProgress) and e.kind == "accepted"]
    assert [e.codec for e in accepted] == [8]


def test_maxauthreq_rejects_21() -> None:
    ep = callee()
    ep.config.entries["office-a"].requirecalltoken = "no"
    ep.start(0.0)
    drain(ep, 0.0)
    for i in range(3):
        ep.receive_datagram(raw_new(100 + i, new_ies(token=None)), ADDR_A, 1.0)
        assert only_reply(ep, 1.0).csub == IAXSubclass.AUTHREQ  # type: ignore[attr-defined]
    ep.receive_datagram(raw_new(110, new_ies(token=None)), ADDR_A, 1.0)
    f = only_reply(ep, 1.0)
    assert f.csub == IAXSubclass.REJECT and IEs.parse(f.payload).get(IE.CAUSECODE) == 21  # type: ignore[attr-defined]


def test_delayreject_sends_reject_one_second_late() -> None:
    ep = callee(delayreject=True)
    ep.config.entries["office-a"].requirecalltoken = "no"
    ep.start(0.0)
    drain(ep, 0.0)
    ep.receive_datagram(raw_new(120, new_ies(token=None)), ADDR_A, 1.0)
    areq = only_reply(ep, 1.0)
    assert areq.csub == IAXSubclass.AUTHREQ  # type: ignore[attr-defined]
    rep = build_full(120, areq.scallno, 10, 1, 1, FrameType.IAX, IAXSubclass.AUTHREP,  # type: ignore[attr-defined]
                     build_ies([(IE.MD5_RESULT, "0" * 32)]))
    ep.receive_datagram(rep, ADDR_A, 1.1)
    assert [parse_full(d).csub for d, _ in drain(ep, 1.1)] == [IAXSubclass.ACK]
    ep.handle_timer(2.2)
    out = [parse_full(d) for d, _ in drain(ep, 2.2)]
    assert [f.csub for f in out] == [IAXSubclass.REJECT]


def test_restart_call_numbers_a_peer_still_holds_are_not_reused() -> None:
    """docs/protocol.md P15 after a restart: a configured peer's frame for a call number we do not
    know (its old call) gets INVAL, and that number is held for 60 s so no new call takes it (the
    peer would take the new call's frames as the old call's); strangers cannot hold numbers."""
    _ca, cb = seed_configs(qualify=None)
    b = Endpoint(cb, local_addr=ADDR_B, rng=random.Random(3))
    now = 1000.0
    lagrq = build_full(4242, 20000, 5000, 7, 7, FrameType.IAX, IAXSubclass.LAGRQ)
    assert b._callnos.is_free(20000)
    b.receive_datagram(lagrq, ADDR_A, now)            # office-a's old call on our 20000
    out = [parse_full(d) for d, _ in b.datagrams_to_send(now)]
    assert [(f.csub, f.scallno, f.dcallno) for f in out] == [(IAXSubclass.INVAL, 20000, 4242)]
    assert not b._callnos.is_free(20000)
    assert b.stats()["callnos_quarantined"] == 1
    assert b._callnos.count(ADDR_A[0], now) == 0      # not counted against the peer's IP
    # a new call never gets it: the whole rest of the trunk pool is handed out without it
    got = {b._callnos.allocate(f"10.0.0.{i // 2048}", now + 1, trunk=True)
           for i in range(16383)}
    assert 20000 not in got and None not in got and len(got) == 16383
    assert b._callnos.allocate("10.0.1.1", now + 1, trunk=True) is None
    assert b._callnos.is_free(20000) is False
    b._callnos._prune(now + 61)
    assert b._callnos.is_free(20000)
    # from an address that is no peer: INVAL, but nothing held
    b.receive_datagram(build_full(4243, 10005, 5000, 7, 7, FrameType.IAX, IAXSubclass.LAGRQ),
                       ("127.0.0.99", 4569), now)
    assert b._callnos.is_free(10005)
