"""Qualify (POKE/PONG) and registration, both roles (docs/protocol.md §9.6, §9.7): the endpoint
driving the per-peer records of ``gateway.iax2.peers``."""

from __future__ import annotations

from helpers_pair import (
    ADDR_A,
    ADDR_B,
    Pair,
    drain,
    full_frames,
    iax,
    reg_configs,
)
from test_protocol import callee

from iaxgw._core.constants import IE, FrameType, IAXSubclass
from iaxgw._core.frames import build_full, parse_full
from iaxgw._core.ies import IEs, build_ies
from iaxgw.gateway.conf.model import Entry
from iaxgw.gateway.iax2.events import (
    AuthFailed,
    IncomingCall,
    PeerStatusChanged,
    RegistrationChanged,
)


def test_poke_answered_statelessly_from_call_1() -> None:
    ep = callee()
    ep.start(0.0)
    poke = build_full(
        555, 0, 4321, 0, 0, FrameType.IAX, IAXSubclass.POKE, build_ies([(IE.CALLTOKEN, b"")])
    )
    ep.receive_datagram(poke, ADDR_A, 1.0)
    (f,) = [parse_full(d) for d, _ in drain(ep, 1.0)]
    assert (f.scallno, f.dcallno, f.ts, f.oseqno, f.iseqno, f.csub) == (
        1,
        555,
        4321,
        0,
        1,
        IAXSubclass.PONG,
    )
    assert not ep._calls
    ep.receive_datagram(build_full(555, 1, 4321, 0, 1, FrameType.IAX, IAXSubclass.ACK), ADDR_A, 1.0)
    assert drain(ep, 1.0) == []                  # ACKs to call 1 are dropped silently


def test_qualify_ok_unreachable_ok_and_lagged() -> None:
    p = Pair()
    p.run(1)
    assert p.ev(p.a, PeerStatusChanged) == [PeerStatusChanged("office-b", "OK", 1)]
    poke = iax(full_frames(p.wire, "a>b"), IAXSubclass.POKE)[0]
    assert poke.dcallno == 0 and poke.oseqno == 0 and poke.scallno > 1
    assert IEs.parse(poke.payload).items == [(IE.CALLTOKEN, b"")]
    assert p.a.peers()[0].status == "OK (1 ms)"
    p.links[id(p.b)].drop = 1.0                  # b's PONGs are lost
    p.run(65)
    assert p.ev(p.a, PeerStatusChanged)[-1] == PeerStatusChanged("office-b", "UNREACHABLE", -1)
    assert p.a.peers()[0].status == "UNREACHABLE"
    p.links[id(p.b)].drop = 0.0
    p.links[id(p.b)].delay = p.links[id(p.a)].delay = 1.2    # rtt 2.4 s > maxms 2000
    p.run(12)
    assert p.ev(p.a, PeerStatusChanged)[-1].status == "LAGGED"
    p.links[id(p.b)].delay = p.links[id(p.a)].delay = 0.001
    p.run(12)
    assert p.ev(p.a, PeerStatusChanged)[-1].status == "OK"
    # POKE calls never linger
    assert not [c for c in p.a._calls.values()]
    # UNREACHABLE came after 2 x maxms without PONG: retries of the POKE at maxms/4
    pokes = [t for t, dr, d, _ in p.wire if dr == "a>b" and d[0] & 0x80
             and parse_full(d).csub == IAXSubclass.POKE and parse_full(d).retransmit]
    assert pokes


def test_registration_both_roles_and_refresh() -> None:
    ca, cb = reg_configs()
    p = Pair(ca, cb)
    assert p.a.peers()[0].addr is None
    p.run(2)
    ra = p.ev(p.a, RegistrationChanged)
    rb = p.ev(p.b, RegistrationChanged)
    assert ra == [RegistrationChanged("office-b", "Registered", ADDR_B, 60)]
    assert rb == [RegistrationChanged("office-b@127.0.0.10:4569", "Registered", ADDR_B, 60,
                                      "registrant")]
    ba, ab = full_frames(p.wire, "b>a"), full_frames(p.wire, "a>b")
    regreqs = iax(ba, IAXSubclass.REGREQ)
    assert [k for k, _ in IEs.parse(regreqs[0].payload)] == [IE.USERNAME, IE.REFRESH, IE.CALLTOKEN]
    assert iax(ab, IAXSubclass.CALLTOKEN) and iax(ab, IAXSubclass.REGAUTH)
    assert IE.MD5_RESULT in IEs.parse(regreqs[-1].payload)
    regack = IEs.parse(iax(ab, IAXSubclass.REGACK)[0].payload)
    assert [k for k, _ in regack] == [IE.USERNAME, IE.DATETIME, IE.REFRESH, IE.APPARENT_ADDR]
    assert regack.get(IE.APPARENT_ADDR) == ADDR_B
    assert p.a.peers()[0].addr == ADDR_B
    # a qualifies the newly registered peer and can call it
    assert p.ev(p.a, PeerStatusChanged)[0].status == "OK"
    p.a.call("office-b", "300", p.now)
    assert p.run_until(lambda: p.ev(p.b, IncomingCall), 5)
    # re-registration at 5/6 of 60 s keeps it alive past the expiry
    p.run(130)
    assert [e.status for e in p.ev(p.a, RegistrationChanged)].count("Expired") == 0
    assert len(iax(full_frames(p.wire, "b>a"), IAXSubclass.REGREQ)) >= 6
    assert not [c for c in p.a._calls.values() if c.kind.name.startswith("REG")]


def test_registration_wrong_secret_and_expiry() -> None:
    ca, cb = reg_configs(secret_b="bad")
    p = Pair(ca, cb)
    p.run(2)
    assert p.ev(p.b, RegistrationChanged)[-1].status == "Rejected"
    assert any("wrong secret" in e.reason for e in p.ev(p.a, AuthFailed))
    rej = IEs.parse(iax(full_frames(p.wire, "a>b"), IAXSubclass.REGREJ)[0].payload)
    assert rej.items == [(IE.CAUSE, "Registration Refused"), (IE.CAUSECODE, 29)]
    assert p.a.peers()[0].addr is None
    # a good registration that then stops: expires after 60 s
    ca, cb = reg_configs()
    p = Pair(ca, cb)
    p.run(2)
    p.links[id(p.b)].drop = 1.0
    p.run(70)
    assert [e.status for e in p.ev(p.a, RegistrationChanged)] == ["Registered", "Expired"]
    assert p.a.peers()[0].addr is None


def test_regreq_for_unknown_name_gets_regauth_then_regrej() -> None:
    ca, _ = reg_configs()
    ca.entries["x"] = Entry(name="x", type="user")
    from iaxgw.gateway.iax2.protocol import Endpoint

    ep = Endpoint(ca, local_addr=ADDR_A)
    ep.config.entries["office-b"].requirecalltoken = "no"
    ep.start(0.0)
    ies = build_ies([(IE.USERNAME, "ghost"), (IE.REFRESH, 60), (IE.CALLTOKEN, b"")])
    ep.receive_datagram(build_full(9, 0, 3, 0, 0, 6, IAXSubclass.REGREQ, ies), ADDR_B, 1.0)
    (tok,) = [parse_full(d) for d, _ in drain(ep, 1.0)]
    token = IEs.parse(tok.payload).get(IE.CALLTOKEN)
    ies = build_ies([(IE.USERNAME, "ghost"), (IE.REFRESH, 60), (IE.CALLTOKEN, token)])
    ep.receive_datagram(build_full(9, 0, 3, 0, 0, 6, IAXSubclass.REGREQ, ies), ADDR_B, 1.1)
    (auth,) = [parse_full(d) for d, _ in drain(ep, 1.1)]
    assert auth.csub == IAXSubclass.REGAUTH
    ies = build_ies([(IE.USERNAME, "ghost"), (IE.REFRESH, 60), (IE.MD5_RESULT, "0" * 32)])
    ep.receive_datagram(
        build_full(9, auth.scallno, 10, 1, 1, 6, IAXSubclass.REGREQ, ies), ADDR_B, 1.2
    )
    out = [parse_full(d) for d, _ in drain(ep, 1.2)]
    assert [f.csub for f in out] == [IAXSubclass.ACK, IAXSubclass.REGREJ]
