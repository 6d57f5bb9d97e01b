"""Hostile peers against the sans-IO Endpoint (bounded loops, no sockets).

Endpoint ``b`` (office-b) has a bystander call up with ``a`` (office-a, trunk, media flowing both
ways).  Every hostile case sends its datagrams to ``b`` and then checks that the bystander call
kept its state, call numbers and sequence numbers in step and still carries media both ways.

``CASES`` (single datagrams or short bursts) and ``SCENARIOS`` (floods, call tokens, limits,
auth throttling) are the table of every hostile case tried and its expected outcome; README's
"Hostile input" section summarises it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from _vectors import all_vectors
from helpers_pair import ADDR_A, ADDR_B, SECRET, Pair, seed_configs

from iaxgw._core.constants import IE, FrameType, IAXSubclass
from iaxgw._core.frames import build_full, build_mini, parse_full
from iaxgw._core.ies import IEs, build_ies
from iaxgw._core.trunk import pack_trunk
from iaxgw.gateway.conf.model import General
from iaxgw.gateway.iax2.address import Addr
from iaxgw.gateway.iax2.calls import CallState
from iaxgw.gateway.iax2.events import (
    AuthFailed,
    CallEnded,
    CallProgress,
    IncomingCall,
    VoiceReceived,
)
from iaxgw.gateway.iax2.protocol import Endpoint

STRANGER: Addr = ("127.0.0.66", 4569)
SAME_IP_OTHER_PORT: Addr = (ADDR_A[0], 40000)
VOICE = bytes(range(160))


# ---------------------------------------------------------------- the bystander call

@dataclass
class Ctx:
    p: Pair
    acn: int        # a's call number (b's peer_callno)
    bcn: int        # b's call number

    @property
    def bcall(self) -> Any:
        return self.p.b.call_info(self.bcn)

    @property
    def acall(self) -> Any:
        return self.p.a.call_info(self.acn)


def bystander(**general: Any) -> Ctx:
    ca, cb = seed_configs(**general)
    p = Pair(ca, cb)
    p.run(0.5)
    acn = p.a.call("office-b", "300", p.now)
    assert p.run_until(lambda: p.ev(p.b, IncomingCall) and p.ev(p.a, CallProgress), 10)
    bcn = p.ev(p.b, IncomingCall)[-1].callno
    p.b.answer(bcn, p.now)
    assert p.run_until(lambda: any(e.kind == "answered" for e in p.ev(p.a, CallProgress)), 5)
    ctx = Ctx(p, acn, bcn)
    media_flows(ctx)
    return ctx


def snapshot(ctx: Ctx) -> tuple[Any, ...]:
    a, b = ctx.acall, ctx.bcall
    return (a.state, a.peer_callno, a.oseqno, a.iseqno, b.state, b.peer_callno, b.oseqno,
            b.iseqno, b.addr, len(a.unacked), len(b.unacked))


def media_flows(ctx: Ctx) -> None:
    """Five voice frames each way arrive (full frame first, then trunk entries)."""
    p = ctx.p
    got_b0, got_a0 = len(p.ev(p.b, VoiceReceived)), len(p.ev(p.a, VoiceReceived))
    for _ in range(5):
        assert p.a.send_voice(ctx.acn, VOICE, p.now)
        assert p.b.send_voice(ctx.bcn, VOICE, p.now)
        p.run(0.02)
    p.run(0.1)
    rx_b = [e for e in p.ev(p.b, VoiceReceived)[got_b0:] if e.callno == ctx.bcn]
    rx_a = [e for e in p.ev(p.a, VoiceReceived)[got_a0:] if e.callno == ctx.acn]
    assert len(rx_b) == 5 and len(rx_a) == 5
    assert all(e.payload == VOICE for e in rx_a + rx_b)


def in_step(ctx: Ctx) -> None:
    """Both ends agree on call numbers and sequence numbers and nothing is left unacked."""
    a, b = ctx.acall, ctx.bcall
    assert a is not None and b is not None, "bystander call destroyed"
    assert a.state == b.state == CallState.UP
    assert (a.peer_callno, b.peer_callno) == (ctx.bcn, ctx.acn)
    assert (a.oseqno, a.iseqno) == (b.iseqno, b.oseqno)
    assert not a.unacked and not b.unacked
    assert not [e for e in ctx.p.ev(ctx.p.b, CallEnded) if e.callno == ctx.bcn]


def inject(ctx: Ctx, data: bytes, src: Addr) -> list[bytes]:
    """Hand ``data`` to b as if from ``src``; the datagrams b sent back to ``src``."""
    p = ctx.p
    i0 = len(p.wire)
    p.b.receive_datagram(data, src, p.now)
    p._collect()
    return [d for _, n, d, dst in p.wire[i0:] if n == "b>a" and dst == src]


def full(ctx: Ctx, sub: int, *, scallno: int | None = None, dcallno: int | None = None,
         ftype: int = int(FrameType.IAX), payload: bytes = b"", ts: int = 500,
         oseqno: int | None = None) -> bytes:
    """A full frame that looks like the bystander's next frame from a (unless overridden)."""
    b = ctx.bcall
    return build_full(ctx.acn if scallno is None else scallno,
                      ctx.bcn if dcallno is None else dcallno, ts,
                      b.iseqno if oseqno is None else oseqno, b.oseqno, ftype, sub, payload)


def peer_sends(ctx: Ctx, ftype: int, sub: int, payload: bytes = b"") -> list[Any]:
    """a itself sends a frame on the bystander call (a peer with odd frames, seqnos kept)."""
    p = ctx.p
    i0 = len(p.wire)
    p.a._rel.send(ctx.acall, ftype, sub, payload, p.now)
    p.run(0.2)
    return [parse_full(d) for _, n, d, _ in p.wire[i0:] if n == "b>a" and d[0] & 0x80]


def iax_subs(frames: list[Any]) -> list[int]:
    return [f.csub for f in frames if f.frametype == FrameType.IAX]


def inval_to(replies: list[bytes]) -> bool:
    return any(
        d[0] & 0x80 and parse_full(d).frametype == 6 and parse_full(d).csub == IAXSubclass.INVAL
        for d in replies
    )


# ---------------------------------------------------------------- single-datagram cases

@dataclass(frozen=True)
class Case:
    name: str
    send: str
    expect: str
    run: Callable[[Ctx], None]
    from_stranger: bool = True   # the bystander's records must be bit-for-bit unchanged


def _oversize(ctx: Ctx) -> None:
    s0 = ctx.p.b.stats().get("drop_oversize", 0)
    big_voice = full(ctx, 4, ftype=int(FrameType.VOICE), payload=bytes(5000))
    assert inject(ctx, big_voice, ADDR_A) == []
    assert inject(ctx, build_mini(ctx.acn, 1, bytes(4093)), ADDR_A) == []
    assert inject(ctx, bytes(4097), STRANGER) == []
    assert ctx.p.b.stats()["drop_oversize"] == s0 + 3
    assert inject(ctx, build_mini(ctx.acn, 1, bytes(4092)), ADDR_A) == []   # 4096: accepted
    assert ctx.p.b.stats()["drop_oversize"] == s0 + 3


def _truncated(ctx: Ctx) -> None:
    n = 0
    for data in all_vectors().values():
        for i in range(len(data) + 1):
            for src in (STRANGER, ADDR_A):
                for d in inject(ctx, data[:i], src):
                    f = parse_full(d)
                    assert f.frametype == 6 and f.csub in (
                        IAXSubclass.INVAL,
                        IAXSubclass.CALLTOKEN,
                        IAXSubclass.PONG,
                        IAXSubclass.REJECT,
                    )
                n += 1
    assert n > 1000


def _mini_callno0(ctx: Ctx) -> None:
    s0 = ctx.p.b.stats().get("drop_malformed_meta", 0)
    assert inject(ctx, b"\x00\x00\x00\x10" + VOICE, ADDR_A) == []
    assert ctx.p.b.stats()["drop_malformed_meta"] == s0 + 1


def _scallno1_stranger(ctx: Ctx) -> None:
    replies = inject(ctx, full(ctx, IAXSubclass.HANGUP, scallno=1), STRANGER)
    assert inval_to(replies)


def _scallno1_peer(ctx: Ctx) -> None:
    for sub in (IAXSubclass.HANGUP, IAXSubclass.REJECT, IAXSubclass.INVAL, IAXSubclass.ACCEPT):
        assert inject(ctx, full(ctx, sub, scallno=1), ADDR_A) == []


def _dcallno1(ctx: Ctx) -> None:
    assert inval_to(inject(ctx, full(ctx, IAXSubclass.HANGUP, dcallno=1), STRANGER))
    assert inject(ctx, full(ctx, IAXSubclass.ACK, dcallno=1), STRANGER) == []


def _unknown_frametype(ctx: Ctx) -> None:
    s0 = ctx.p.b.stats().get("ignored_frametype_48", 0)
    back = peer_sends(ctx, 0x30, 1, b"junk")
    assert IAXSubclass.ACK in iax_subs(back)
    assert ctx.p.b.stats()["ignored_frametype_48"] == s0 + 1


def _unknown_iax_subclass(ctx: Ctx) -> None:
    back = peer_sends(ctx, int(FrameType.IAX), 0x60)
    uns = [f for f in back if f.frametype == 6 and f.csub == IAXSubclass.UNSUPPORT]
    assert len(uns) == 1 and IEs.parse(uns[0].payload).get(IE.IAX_UNKNOWN) == 0x60


def _unknown_control(ctx: Ctx) -> None:
    s0 = ctx.p.b.stats().get("drop_control_not_allowed", 0)
    back = peer_sends(ctx, int(FrameType.CONTROL), 0x55)
    assert IAXSubclass.ACK in iax_subs(back)
    assert ctx.p.b.stats()["drop_control_not_allowed"] == s0 + 1


def _wrong_ie_length(ctx: Ctx) -> None:
    bad = bytes([IE.CAUSECODE, 2, 0, 16])                  # CAUSECODE is a u8
    back = peer_sends(ctx, int(FrameType.IAX), IAXSubclass.HANGUP, bad)
    assert IAXSubclass.ACK in iax_subs(back)
    assert ctx.p.b.stats()["drop_malformed_ies"] >= 1
    new = build_full(0x1234, 0, 3, 0, 0, 6, IAXSubclass.NEW, bytes([IE.VERSION, 3, 0, 0, 2]))
    assert inject(ctx, new, STRANGER) == []


def _trunk_unknown_calls(ctx: Ctx) -> None:
    p = ctx.p
    got0 = len(p.ev(p.b, VoiceReceived))
    s0 = p.b.stats().get("drop_trunk_unknown_call", 0)
    dg = pack_trunk([(7, 0, VOICE), (ctx.acn ^ 1, 0, VOICE), (ctx.acn, 0, VOICE)], 100)[0]
    assert inject(ctx, dg, STRANGER) == []                  # every entry: unknown at this source
    assert inject(ctx, dg, ADDR_A) == []                    # only the bystander's entry counts
    p.run(0.05)
    assert p.b.stats()["drop_trunk_unknown_call"] == s0 + 5
    assert len([e for e in p.ev(p.b, VoiceReceived)[got0:] if e.callno == ctx.bcn]) == 1


def _ack_unknown_call(ctx: Ctx) -> None:
    assert inject(ctx, full(ctx, IAXSubclass.ACK, dcallno=777), STRANGER) == []
    assert inject(ctx, full(ctx, IAXSubclass.ACK), STRANGER) == []
    assert inject(ctx, full(ctx, IAXSubclass.ACK, dcallno=777), ADDR_A) == []


def _ack_out_of_window(ctx: Ctx) -> None:
    b = ctx.bcall
    ack = build_full(ctx.acn, ctx.bcn, 500, b.iseqno, (b.oseqno + 100) & 0xFF, 6, IAXSubclass.ACK)
    assert inject(ctx, ack, ADDR_A) == []


def _hangup_wrong_source(ctx: Ctx) -> None:
    for src in (STRANGER, SAME_IP_OTHER_PORT):
        assert inval_to(
            inject(ctx, full(ctx, IAXSubclass.HANGUP, payload=bytes([IE.CAUSECODE, 1, 16])), src)
        )


def _inval_wrong_source(ctx: Ctx) -> None:
    for src in (STRANGER, SAME_IP_OTHER_PORT):
        assert inject(ctx, full(ctx, IAXSubclass.INVAL), src) == []


def _wrong_scallno(ctx: Ctx) -> None:
    assert inval_to(inject(ctx, full(ctx, IAXSubclass.HANGUP, scallno=ctx.acn ^ 0x10), ADDR_A))


def _mini_wrong_source(ctx: Ctx) -> None:
    s0 = ctx.p.b.stats().get("drop_mini_unknown_call", 0)
    for src in (STRANGER, SAME_IP_OTHER_PORT):
        assert inject(ctx, build_mini(ctx.acn, 9, VOICE), src) == []
    assert ctx.p.b.stats()["drop_mini_unknown_call"] == s0 + 2


def _video_and_meta_junk(ctx: Ctx) -> None:
    for dg in (b"\x00\x00\x80\x05\x00\x10" + VOICE, b"\x00\x00\x02\x00" + bytes(8),
               b"\x00\x00\x01\x07" + bytes(8)):
        assert inject(ctx, dg, ADDR_A) == []


def _duplicate_and_gap(ctx: Ctx) -> None:
    b = ctx.bcall
    dup = full(ctx, IAXSubclass.LAGRQ, oseqno=(b.iseqno - 1) & 0xFF)
    assert [parse_full(d).csub for d in inject(ctx, dup, ADDR_A)] == [IAXSubclass.ACK]
    gap = full(ctx, IAXSubclass.LAGRQ, oseqno=(b.iseqno + 5) & 0xFF)
    assert [parse_full(d).csub for d in inject(ctx, gap, ADDR_A)] == [IAXSubclass.VNAK]


def _voice_no_format(ctx: Ctx) -> None:
    # 0xBF = C bit with shift 63 (1 << 63 overflows a signed 64-bit format), 0xFF = -1, 0x00.
    s0 = ctx.p.b.stats().get("drop_voice_bad_format", 0)
    for subclass in (1 << 63, -1, 0):
        replies = peer_sends(ctx, int(FrameType.VOICE), subclass, VOICE)
        assert IAXSubclass.ACK in iax_subs(replies)
    assert ctx.p.b.stats()["drop_voice_bad_format"] == s0 + 3
    assert ctx.bcall.format_rx == 4


CASES: list[Case] = [
    Case("oversize", "5000-byte full voice frame and 4097-byte mini from the peer's address, "
         "4097 bytes of junk from a stranger", "dropped, counted drop_oversize (4096 accepted)",
         _oversize),
    Case("truncated_vectors", "every prefix of every tests/vectors/*.bin, from a stranger and "
         "from the peer's address", "no exception; INVAL/CALLTOKEN/PONG at most", _truncated),
    Case("mini_callno_0", "mini frame with call number 0 (first word 0x0000)",
         "parsed as meta, malformed: dropped", _mini_callno0),
    Case("scallno_1_stranger", "HANGUP scallno 1, dcallno = bystander, from a stranger",
         "INVAL to the stranger", _scallno1_stranger),
    Case("scallno_1_peer", "HANGUP/REJECT/INVAL/ACCEPT with scallno 1 from the peer's address",
         "taken as a stateless reply, no handler in state UP: dropped", _scallno1_peer),
    Case("dcallno_1", "HANGUP and ACK to dcallno 1 from a stranger",
         "INVAL for the HANGUP; the ACK is dropped", _dcallno1),
    Case("unknown_frametype", "frame type 0x30 on the bystander call (from the peer)",
         "ACKed and ignored (ignored_frametype_48)", _unknown_frametype, from_stranger=False),
    Case("unknown_iax_subclass", "IAX subclass 0x60 on the bystander call (from the peer)",
         "ACK + UNSUPPORT with IAX_UNKNOWN 0x60, as Asterisk", _unknown_iax_subclass,
         from_stranger=False),
    Case("unknown_control", "CONTROL subclass 0x55 on the bystander call (from the peer)",
         "ACKed, dropped (drop_control_not_allowed)", _unknown_control, from_stranger=False),
    Case("wrong_ie_length", "HANGUP with a 2-byte CAUSECODE (from the peer); NEW with a 3-byte "
         "VERSION from a stranger", "ACKed, IEs undecodable: frame dropped, call stays; the NEW "
         "is dropped without state", _wrong_ie_length, from_stranger=False),
    Case("trunk_unknown_calls", "trunk datagram with entries for unknown call numbers and the "
         "bystander's, from a stranger and from the peer",
         "unknown entries dropped one by one; the bystander's entry from the peer delivered",
         _trunk_unknown_calls, from_stranger=False),
    Case("ack_unknown_call", "ACK to an unknown call; ACK with the bystander's numbers from a "
         "stranger", "dropped silently (no INVAL ping-pong)", _ack_unknown_call),
    Case("ack_out_of_window", "ACK from the peer acknowledging 100 frames never sent",
         "ignored: outside the window", _ack_out_of_window),
    Case("hangup_wrong_source", "HANGUP with the bystander's call numbers and seqnos from a "
         "stranger and from the peer's IP on another port", "INVAL to the sender; call lives",
         _hangup_wrong_source),
    Case("inval_wrong_source", "INVAL with the bystander's call numbers from a stranger / other "
         "port", "dropped (an INVAL is never answered)", _inval_wrong_source),
    Case("wrong_scallno", "HANGUP from the peer's address with the right dcallno but another "
         "scallno", "not the call: INVAL", _wrong_scallno),
    Case("mini_wrong_source", "mini frame with the bystander's call number from a stranger and "
         "from the peer's IP on another port", "dropped (drop_mini_unknown_call)",
         _mini_wrong_source),
    Case("video_meta_junk", "video mini, meta command 2, trunk cmddata 7 from the peer",
         "dropped", _video_and_meta_junk),
    Case("voice_no_format", "full voice frames with subclass bytes 0xBF (bit 63), 0xFF and 0x00 "
         "on the bystander call (from the peer)", "ACKed, dropped (drop_voice_bad_format)",
         _voice_no_format, from_stranger=False),
    Case("duplicate_and_gap", "LAGRQ with an old OSeqno, then one 5 ahead, from the peer",
         "duplicate re-ACKed, gap VNAKed, both dropped", _duplicate_and_gap),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_case_leaves_bystander_intact(case: Case,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="iaxgw")
    ctx = bystander()
    before = snapshot(ctx)
    case.run(ctx)
    ctx.p.run(0.3)
    if case.from_stranger:
        assert snapshot(ctx) == before
    in_step(ctx)
    media_flows(ctx)
    in_step(ctx)


# ---------------------------------------------------------------- scenarios: raw requests

def new_frame(scallno: int, token: bytes | None, *, username: str = "office-a",
              oseqno: int = 0) -> bytes:
    ies: list[tuple[int, object]] = [(IE.VERSION, 2), (IE.CALLED_NUMBER, "300"),
                                     (IE.USERNAME, username), (IE.FORMAT, 4),
                                     (IE.CAPABILITY, 12)]
    if token is not None:
        ies.append((IE.CALLTOKEN, token))
    return build_full(scallno, 0, 3, oseqno, 0, 6, IAXSubclass.NEW, build_ies(ies))


def replies(ep: Endpoint, now: float, to: Addr) -> list[Any]:
    return [parse_full(d) for d, a in ep.datagrams_to_send(now) if a == to and d[0] & 0x80]


def get_token(ep: Endpoint, src: Addr, now: float, scallno: int = 0x222) -> bytes:
    ep.receive_datagram(new_frame(scallno, b""), src, now)
    tok = [f for f in replies(ep, now, src) if f.csub == IAXSubclass.CALLTOKEN]
    assert len(tok) == 1 and tok[0].scallno == 1
    value = IEs.parse(tok[0].payload).get(IE.CALLTOKEN)
    assert isinstance(value, bytes)
    return value


def gateway(**general: Any) -> Endpoint:
    _, cb = seed_configs(qualify=None, **general)
    return Endpoint(cb, local_addr=ADDR_B, role_name="b", wall_offset=1.7e9)


def held(ep: Endpoint) -> tuple[int, int, int, int]:
    return (len(ep._calls), ep._callnos.in_use, len(ep._by_remote), len(ep._trunk_rx_epoch))


def test_new_flood_without_tokens_allocates_nothing_and_a_real_call_completes() -> None:
    ctx = bystander()
    p = ctx.p
    b = p.b
    base = held(b)
    calls0 = len(p.ev(p.b, IncomingCall))
    a_call = None
    sent = 0
    for i in range(5000):                  # 5,000 NEWs from 500 source ports, 2 kinds
        src = ("127.0.0.77", 20000 + i % 500)
        tok = b"" if i % 2 else None        # empty token (-> CALLTOKEN) or none (-> REJECT)
        b.receive_datagram(new_frame(0x100 + i % 0x7000, tok), src, p.now)
        sent += 1
        if i == 2500:
            a_call = p.a.call("office-b", "301", p.now)
        if i % 50 == 0:
            p.step(p.now + 0.01)
            assert held(b)[1] <= base[1] + 1
    assert sent == 5000 and a_call is not None
    assert p.run_until(lambda: len(p.ev(p.b, IncomingCall)) > calls0, 10)
    st = b.stats()
    assert st["calltoken_issued"] >= 2500 and st["calltoken_missing_rejected"] >= 2500
    assert held(b)[0] == base[0] + 1 and held(b)[1] == base[1] + 1     # only the real call
    assert len([c for c in b.channels() if c.addr[0] == "127.0.0.77"]) == 0
    adm = b._admission
    assert len(adm.authreq) <= 1 and len(adm.authfails) == 0 and len(b._warned) < 20
    in_step(ctx)


def test_new_flood_alone_leaves_channels_empty() -> None:
    b = gateway()
    for i in range(5000):
        b.receive_datagram(new_frame(0x100 + i, b"" if i % 2 else None),
                           ("127.0.0.77", 20000 + i % 500), 1000.0 + i / 1000)
        b.datagrams_to_send(1000.0)
        while b.next_event() is not None:
            pass
    assert b.channels() == [] and held(b) == (0, 0, 0, 0)
    assert b._callnos.count("127.0.0.77", 1010.0) == 0


def test_token_expired_replayed_foreign_garbage_refused() -> None:
    b = gateway()
    src = ("127.0.0.10", 4569)
    now = 1000.0
    tok = get_token(b, src, now)
    cases = {
        "expired": (tok, src, now + 11.0),
        "replayed_other_port": (tok, ("127.0.0.10", 4570), now + 1),
        "replayed_other_ip": (tok, ("127.0.0.11", 4569), now + 1),
        "foreign_hash": (tok[:-4] + b"0000", src, now + 1),
        "garbage": (b"\xff\xfe garbage", src, now + 1),
        "no_separator": (b"1700000000" + b"a" * 40, src, now + 1),
        "future": (f"{int(1.7e9 + now + 100)}?{'0' * 40}".encode(), src, now + 1),
    }
    for name, (t, s, at) in cases.items():
        b.receive_datagram(new_frame(0x333, t), s, at)
        out = replies(b, at, s)
        assert [(f.csub, f.scallno, f.payload) for f in out] == [(IAXSubclass.REJECT, 1, b"")], name
        assert held(b) == (0, 0, 0, 0), name
    # the genuine token, in time and from the right source, is accepted
    b.receive_datagram(new_frame(0x333, tok), src, now + 2)
    assert [f.csub for f in replies(b, now + 2, src)] == [IAXSubclass.AUTHREQ]
    assert b.stats()["calltoken_rejected"] == len(cases)


def _answer_authreq(b: Endpoint, src: Addr, now: float, scallno: int, secret: str) -> Any:
    areq = [f for f in replies(b, now, src) if f.csub == IAXSubclass.AUTHREQ]
    assert len(areq) == 1
    chal = IEs.parse(areq[0].payload).get(IE.CHALLENGE)
    md5 = hashlib.md5(f"{chal}{secret}".encode()).hexdigest()
    b.receive_datagram(build_full(scallno, areq[0].scallno, 10, 1, 1, 6, IAXSubclass.AUTHREP,
                                  build_ies([(IE.MD5_RESULT, md5)])), src, now)
    return areq[0]


def test_maxcallnumbers_per_source_ip() -> None:
    b = gateway(maxcallnumbers=3)
    now = 1000.0
    for i in range(4):
        src = ("127.0.0.10", 5000 + i)
        tok = get_token(b, src, now)
        b.receive_datagram(new_frame(0x400 + i, tok), src, now)
        subs = [(f.csub, f.scallno) for f in replies(b, now, src)]
        if i < 3:
            assert [s for s, _ in subs] == [IAXSubclass.AUTHREQ]
        else:
            assert subs == [(IAXSubclass.REJECT, 1)]       # stateless: no number left for this IP
    assert b.stats()["reject_callno_limit"] == 1 and b._callnos.in_use == 3
    other = ("127.0.0.11", 4569)      # another IP still gets a call number (the ACL's fake
    b.receive_datagram(new_frame(0x500, get_token(b, other, now)), other, now)  # AUTHREQ)
    assert [(f.csub, f.scallno != 1) for f in replies(b, now, other)] == [
        (IAXSubclass.AUTHREQ, True)
    ]
    assert b._callnos.in_use == 4


def test_maxauthreq_unanswered() -> None:
    b = gateway(maxauthreq=3)
    now = 1000.0
    out = []
    for i in range(5):
        src = ("127.0.0.10", 6000 + i)
        b.receive_datagram(new_frame(0x600 + i, get_token(b, src, now)), src, now)
        out.append([(f.csub, IEs.parse(f.payload).get(IE.CAUSECODE))
                    for f in replies(b, now, src)])
    assert out[:3] == [[(IAXSubclass.AUTHREQ, None)]] * 3
    assert out[3:] == [[(IAXSubclass.REJECT, 21)]] * 2


def test_delayreject_wrong_secret() -> None:
    b = gateway(delayreject=True)
    now = 1000.0
    src = ("127.0.0.10", 4569)
    b.receive_datagram(new_frame(0x700, get_token(b, src, now)), src, now)
    _answer_authreq(b, src, now, 0x700, "not-the-secret")
    assert [f.csub for f in replies(b, now, src)] == [IAXSubclass.ACK]          # no REJECT yet
    b.handle_timer(now + 0.9)
    assert [f.csub for f in replies(b, now + 0.9, src)] == []
    b.handle_timer(now + 1.01)
    rej = replies(b, now + 1.01, src)
    assert [(f.csub, IEs.parse(f.payload).get(IE.CAUSECODE)) for f in rej] == [
        (IAXSubclass.REJECT, 50)
    ]


def test_repeated_wrong_secrets_logged_and_throttled(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="iaxgw.protocol")
    b = gateway(authfaillimit=3, authfailwindow=60)
    now = 1000.0
    src = ("127.0.0.10", 4569)

    def attempt(i: int, secret: str, at: float) -> list[Any]:
        b.receive_datagram(new_frame(0x800 + i, get_token(b, src, at, 0x800 + i)), src, at)
        out = [_answer_authreq(b, src, at, 0x800 + i, secret)] if secret else []
        out += replies(b, at, src)
        b.handle_timer(at + 1.5)
        out += replies(b, at + 1.5, src)
        for d in out:                       # ACK our final frames so the calls are destroyed
            if d.csub == IAXSubclass.REJECT and d.scallno != 1:
                b.receive_datagram(
                    build_full(
                        0x800 + i,
                        d.scallno,
                        d.ts,
                        d.iseqno,
                        (d.oseqno + 1) & 0xFF,
                        6,
                        IAXSubclass.ACK,
                    ),
                    src,
                    at + 1.5,
                )
        return out

    for i in range(3):                                   # three wrong secrets: REJECT 50 each
        out = attempt(i, "wrong", now + 2 * i)
        assert [f.csub for f in out if f.csub != IAXSubclass.ACK] == [
            IAXSubclass.AUTHREQ,
            IAXSubclass.REJECT,
        ]
    assert sum("refused" in r.message and "127.0.0.10" in r.message
               for r in caplog.records) == 3
    # the fourth NEW from that IP gets no AUTHREQ but a REJECT 50 one second later
    out = attempt(3, "", now + 6)
    assert [(f.csub, IEs.parse(f.payload).get(IE.CAUSECODE)) for f in out
            if f.csub != IAXSubclass.ACK] == [(IAXSubclass.REJECT, 50)]
    assert [IEs.parse(f.payload).get(IE.CAUSE) for f in out if f.csub == IAXSubclass.REJECT] == [
        "No authority found: throttled after repeated failed authentications"]
    assert b.stats()["reject_auth_throttled"] == 1
    assert any("failed authentications from 127.0.0.10" in r.message for r in caplog.records)
    ev = [e for e in iter(b.next_event, None) if isinstance(e, AuthFailed)]
    assert ev[-1].reason == "too many failed authentications"
    # even the right secret is refused while throttled; after the window it works again
    out = attempt(4, "", now + 8)
    assert IAXSubclass.AUTHREQ not in [f.csub for f in out]
    later = now + 70
    b.receive_datagram(new_frame(0x900, get_token(b, src, later, 0x900)), src, later)
    _answer_authreq(b, src, later, 0x900, SECRET)
    assert IAXSubclass.ACCEPT in [f.csub for f in replies(b, later, src)]


def test_throttle_is_per_source_ip_and_configurable() -> None:
    assert General().authfaillimit == 0          # off by default: Asterisk 22 has no lockout
    b = gateway()
    now = 1000.0
    src = ("127.0.0.10", 4569)
    for i in range(8):
        b.receive_datagram(new_frame(0xA00 + i, get_token(b, src, now, 0xA00 + i)), src, now)
        _answer_authreq(b, src, now, 0xA00 + i, "wrong")
        replies(b, now, src)
    assert "reject_auth_throttled" not in b.stats() and not b._admission.authfails


def _ack(b: Endpoint, f: Any, scallno: int, src: Addr, now: float) -> None:
    """Acknowledge our frame ``f`` as the caller ``scallno`` would (and nothing more)."""
    b.receive_datagram(build_full(scallno, f.scallno, f.ts, f.iseqno, (f.oseqno + 1) & 0xFF,
                                  6, IAXSubclass.ACK), src, now)


def _silence(b: Endpoint, src: Addr, start: float, seconds: float) -> list[tuple[float, Any]]:
    """Run ``b``'s timers for ``seconds`` while ``src`` answers nothing; what b sent it."""
    out: list[tuple[float, Any]] = []
    t = start
    while t < start + seconds:
        t += 0.5
        b.handle_timer(t)
        out += [(t, f) for f in replies(b, t, src)]
    return out


def test_pending_authreq_acked_then_silent_expires_and_frees_maxauthreq() -> None:
    """Three NEWs whose AUTHREQ is acknowledged once and then nothing: they hold office-a's
    three maxauthreq slots, so the real office-a is refused (REJECT 21) -- but, as on Asterisk,
    every new call runs LAGRQ (10 s) and PING (21 s): unanswered, the calls go after the
    retransmissions (~42 s), the slots and numbers with them, and office-a gets in again."""
    b = gateway(maxauthreq=3)
    now = 1000.0
    src = ("127.0.0.10", 4569)
    for i in range(3):
        b.receive_datagram(new_frame(0x600 + i, get_token(b, src, now, 0x600 + i)), src, now)
        (areq,) = [f for f in replies(b, now, src) if f.csub == IAXSubclass.AUTHREQ]
        _ack(b, areq, 0x600 + i, src, now)
    assert b._admission.authreq["office-a"] == 3
    b.receive_datagram(new_frame(0x610, get_token(b, src, now, 0x610)), src, now)
    assert [
        IEs.parse(f.payload).get(IE.CAUSECODE)
        for f in replies(b, now, src)
        if f.csub == IAXSubclass.REJECT
    ] == [21]  # the real user is locked out
    sent = _silence(b, src, now, 40.0)
    lagrq = [t - now for t, f in sent if f.csub == IAXSubclass.LAGRQ and f.dcallno == 0x600]
    assert 10.0 <= lagrq[0] <= 10.5                            # the first LAGRQ at 10 s
    assert b._admission.authreq["office-a"] == 3 and len(b._calls) == 3  # still retransmitting it
    _silence(b, src, now + 40.0, 4.0)                          # its 4th send + 10 s: gone
    assert b._admission.authreq["office-a"] == 0 and len(b._calls) == 0
    later = now + 50.0
    b.receive_datagram(new_frame(0x620, get_token(b, src, later, 0x620)), src, later)
    _answer_authreq(b, src, later, 0x620, SECRET)
    assert IAXSubclass.ACCEPT in [f.csub for f in replies(b, later, src)]


def _regreq(scallno: int, token: bytes | None, md5: str | None = None,
            username: str = "office-a", oseqno: int = 0, iseqno: int = 0,
            dcallno: int = 0) -> bytes:
    ies: list[tuple[int, object]] = [(IE.USERNAME, username), (IE.REFRESH, 60)]
    if md5 is not None:
        ies.append((IE.MD5_RESULT, md5))
    if token is not None:
        ies.append((IE.CALLTOKEN, token))
    return build_full(scallno, dcallno, 5, oseqno, iseqno, 6, IAXSubclass.REGREQ, build_ies(ies))


def _registrar(**general: Any) -> Endpoint:
    b = gateway(**general)
    b.config.entries["office-a"].dynamic = True       # office-a registers (host = dynamic)
    return b


def _register(b: Endpoint, src: Addr, now: float, scallno: int, secret: str) -> list[Any]:
    """A REGREQ with a token, the REGAUTH's challenge answered with ``secret``; b's replies
    to that answer at ``now`` but ACKs."""
    b.receive_datagram(_regreq(scallno, get_token(b, src, now, scallno)), src, now)
    auth = [f for f in replies(b, now, src) if f.csub == IAXSubclass.REGAUTH]
    if not auth:
        return []
    chal = IEs.parse(auth[0].payload).get(IE.CHALLENGE)
    md5 = hashlib.md5(f"{chal}{secret}".encode()).hexdigest()
    b.receive_datagram(_regreq(scallno, None, md5, oseqno=1, iseqno=1,
                               dcallno=auth[0].scallno), src, now)
    return [f for f in replies(b, now, src) if f.csub != IAXSubclass.ACK]


def test_pending_regauth_acked_then_silent_expires() -> None:
    b = _registrar()
    now = 1000.0
    src = ("127.0.0.10", 4569)
    b.receive_datagram(_regreq(0x700, get_token(b, src, now, 0x700)), src, now)
    (auth,) = [f for f in replies(b, now, src) if f.csub == IAXSubclass.REGAUTH]
    _ack(b, auth, 0x700, src, now)
    assert len(b._calls) == 1
    _silence(b, src, now, 40.0)
    assert len(b._calls) == 1
    _silence(b, src, now + 40.0, 4.0)
    assert len(b._calls) == 0


def test_regreq_wrong_secret_regrej_delayed_with_delayreject_as_asterisk() -> None:
    src = ("127.0.0.10", 4569)
    now = 1000.0
    b = _registrar()                                   # delayreject = no: REGREJ at once
    assert [f.csub for f in _register(b, src, now, 0x710, "wrong")] == [IAXSubclass.REGREJ]
    b = _registrar(delayreject=True)
    assert _register(b, src, now, 0x711, "wrong") == []   # only the ACK of the answer
    b.handle_timer(now + 0.9)
    assert replies(b, now + 0.9, src) == []
    b.handle_timer(now + 1.01)
    rej = replies(b, now + 1.01, src)
    assert [(f.csub, IEs.parse(f.payload).get(IE.CAUSECODE)) for f in rej] == [
        (IAXSubclass.REGREJ, 29)
    ]
    assert [f.csub for f in _register(b, src, now + 2, 0x712, SECRET)] == [IAXSubclass.REGACK]


def test_regreq_guesses_share_the_authfaillimit_throttle_only_when_configured() -> None:
    src = ("127.0.0.10", 4569)
    now = 1000.0
    b = _registrar()                                   # off by default, as Asterisk
    for i in range(8):
        assert [f.csub for f in _register(b, src, now + i, 0x720 + i, "wrong")] == [
            IAXSubclass.REGREJ
        ]
    assert [f.csub for f in _register(b, src, now + 9, 0x730, SECRET)] == [IAXSubclass.REGACK]
    assert "reject_auth_throttled" not in b.stats()

    b = _registrar(authfaillimit=3, authfailwindow=60)
    for i in range(3):
        assert [f.csub for f in _register(b, src, now + i, 0x740 + i, "wrong")] == [
            IAXSubclass.REGREJ
        ]
    # the fourth REGREQ (even with the right secret) gets no REGAUTH: a REGREJ after 1 s
    assert _register(b, src, now + 4, 0x750, SECRET) == []
    b.handle_timer(now + 5.01)
    rej = [
        f for f in replies(b, now + 5.01, src) if f.csub != IAXSubclass.ACK and f.dcallno == 0x750
    ]
    assert [(f.csub, IEs.parse(f.payload).get(IE.CAUSE)) for f in rej] == [
        (
            IAXSubclass.REGREJ,
            "Registration Refused: throttled after repeated failed authentications",
        )
    ]
    assert b.stats()["reject_auth_throttled"] == 1
    # the same count throttles calls from that IP
    b.receive_datagram(new_frame(0x760, get_token(b, src, now + 6, 0x760)), src, now + 6)
    assert IAXSubclass.AUTHREQ not in [f.csub for f in replies(b, now + 6, src)]
    later = now + 70                                   # after the window: registers again
    assert [f.csub for f in _register(b, src, later, 0x770, SECRET)] == [IAXSubclass.REGACK]


def _flood_unknown_callnos(b: Endpoint, src: Addr, now: float) -> None:
    """A full frame for every call number (HANGUP on odd, LAGRQ on even) from ``src``."""
    for n in range(2, 32768):
        sub = IAXSubclass.HANGUP if n % 2 else IAXSubclass.LAGRQ
        b.receive_datagram(build_full(0x1234, n, 5000, 0, 0, 6, sub), src, now)
        if n % 1024 == 0:
            b.datagrams_to_send(now)
    b.datagrams_to_send(now)


def test_spoofed_peer_frames_for_unknown_calls_do_not_take_the_pool() -> None:
    """32,766 forged frames with office-a's address, one per call number: Asterisk answers
    INVAL and holds nothing; b holds at most the numbers office-a really used, bounded, so
    new calls both ways still get call numbers."""
    ctx = bystander()
    p = ctx.p
    b = p.b
    p.run(61.0)                               # past the restart window
    in_step(ctx)
    cn = b._callnos
    _flood_unknown_callnos(b, ADDR_A, p.now)
    quarantined = b.stats().get("callnos_quarantined", 0)
    assert quarantined <= cn.limit
    assert quarantined <= sum(1 for n, ip in cn._last_ip.items() if ip == ADDR_A[0])
    assert b.stats()["drop_unknown_call"] >= 32766 - 2
    n_in = len(p.ev(b, IncomingCall))
    for i in range(3):                        # real calls from office-a complete
        p.a.call("office-b", f"30{i}", p.now)
    assert p.run_until(lambda: len(p.ev(b, IncomingCall)) == n_in + 3, 10)
    out = b.call("office-a", "300", p.now)    # and b's own outgoing call gets a number
    assert out is not None
    assert p.run_until(lambda: any(e.callno == out for e in p.ev(b, CallProgress)), 10)
    in_step(ctx)


def test_restart_window_quarantine_is_bounded() -> None:
    """Just after a start any number a peer refers to is held (its calls from before the
    restart), but at most ``maxcallnumbers`` per source and 1/8 of each pool."""
    b = gateway(maxcallnumbers=3000)
    b.start(1000.0)
    _flood_unknown_callnos(b, ADDR_A, 1001.0)
    cn = b._callnos
    assert b.stats().get("callnos_quarantined", 0) == 3000
    assert cn._q_pool[0] <= 16382 // 8 and cn._q_pool[1] <= 16384 // 8
    _flood_unknown_callnos(b, ("127.0.0.99", 4569), 1001.0)     # no peer: holds nothing
    assert b.stats().get("callnos_quarantined", 0) == 3000
    for i in range(200):                      # the pools still give numbers
        assert cn.allocate("127.0.0.10", 1002.0, trunk=bool(i % 2)) is not None
    cn._prune(1062.0)
    assert cn._q_pool == [0, 0] and not cn._q_per_ip


def test_nonvalidated_budget_is_global_and_allocation_constant_time(
        caplog: pytest.LogCaptureFixture) -> None:
    """With a ``requirecalltoken = no`` user, token-less NEWs from many (forged) IPs take at
    most ``maxcallnumbers_nonvalidated`` numbers over all IPs, as Asterisk; then a stateless
    REJECT.  Token-validated calls still get numbers."""
    caplog.set_level(logging.WARNING, logger="iaxgw.protocol")
    _, cb = seed_configs(qualify=None, maxcallnumbers_nonvalidated=1000)
    cb.entries["office-a"].requirecalltoken = "no"
    b = Endpoint(cb, local_addr=ADDR_B, role_name="b", wall_offset=1.7e9)
    now = 1000.0
    out = []
    for i in range(1500):
        src = (f"10.9.{i // 250}.{i % 250 + 1}", 4569)    # 250 calls per IP, under 2048
        b.receive_datagram(new_frame(0x100 + i, None), src, now)
        out += replies(b, now, src)
        while b.next_event() is not None:
            pass
    assert sum(1 for f in out if f.csub == IAXSubclass.REJECT and f.scallno == 1) == 500
    assert b.stats()["reject_callno_limit"] == 500
    cn = b._callnos
    assert cn.nonvalidated(now) == 1000
    assert "maxcallnumbers_nonvalidated (1000)" in caplog.text
    # a token-validated call from the peer still gets a number
    tok = get_token(b, ADDR_A, now)
    b.receive_datagram(new_frame(0x7777, tok), ADDR_A, now)
    assert [f.csub for f in replies(b, now, ADDR_A)] == [IAXSubclass.AUTHREQ]
    # released numbers count until reusable (60 s after their call), then the budget is back
    t = now
    def flood_calls() -> int:
        return sum(1 for c in b._calls.values() if c.addr[0].startswith("10.9."))

    while (nt := b.get_timer()) is not None and nt < now + 200 and flood_calls():
        t = nt
        b.handle_timer(t)
        b.datagrams_to_send(t)
    assert flood_calls() == 0 and cn.nonvalidated(t) == 1000
    assert cn.nonvalidated(t + 61) == 0


def test_call_number_allocation_cost_does_not_grow_with_the_pool() -> None:
    """Allocation draws one random number whatever the pool holds (no scan of the pool)."""
    from iaxgw.gateway.iax2.calls import CallNumbers

    class Counting(random.Random):
        draws = 0

        def randrange(self, *a: Any, **k: Any) -> int:     # type: ignore[override]
            Counting.draws += 1
            return super().randrange(*a, **k)

        def randint(self, a: int, b: int) -> int:
            Counting.draws += 1
            return super().randint(a, b)

    cn = CallNumbers(Counting(1), limit=1 << 20)
    for _ in range(16381):
        assert cn.allocate("10.0.0.1", 0.0) is not None
    Counting.draws = 0
    last = cn.allocate("10.0.0.1", 0.0)             # the one number left
    assert last is not None and Counting.draws <= 1
    assert cn.allocate("10.0.0.1", 0.0) is None
    assert cn.refusal("10.0.0.1") == "normal call number pool exhausted"


def test_call_token_key_is_long_random_and_hmac() -> None:
    """The token key is >= 128 random bits (not a 32-bit seed one observed token gives away),
    the hash an HMAC-SHA1 keyed with it, the text Asterisk's ``<time>?<40 hex>``; call numbers
    and challenges come from the system's CSPRNG."""
    b1, b2 = gateway(), gateway()
    key = getattr(b1._admission.tokens, "key", b"")
    other = getattr(b2._admission.tokens, "key", b"")
    assert isinstance(key, bytes) and len(key) >= 16 and key != other
    assert isinstance(b1._rng, random.SystemRandom)
    tok = get_token(b1, ADDR_A, 1000.0).decode()
    issued, sep, digest = tok.partition("?")
    assert sep and issued == str(int(1.7e9 + 1000.0)) and len(digest) == 40
    want = hmac.new(key, f"127.0.0.10:4569?{issued}".encode(), hashlib.sha1).hexdigest()
    assert digest == want
    # the other endpoint (another key) refuses it; the issuer accepts it
    assert b2._admission.tokens.check(tok.encode(), ADDR_A, 1.7e9 + 1001) is not None
    assert b1._admission.tokens.check(tok.encode(), ADDR_A, 1.7e9 + 1001) is None
    # a seeded endpoint (tests, fuzzing) stays deterministic
    _, cb = seed_configs(qualify=None)
    e1, e2 = (Endpoint(cb, local_addr=ADDR_B, rng=random.Random(4)) for _ in range(2))
    assert e1._admission.tokens.key == e2._admission.tokens.key


def _epoch_run(flood: str) -> tuple[int, list[int]]:
    """The bystander call after 4,098 8-byte trunk headers from as many strangers (one by one,
    as one received batch, or none): its lost count and the timestamps b saw."""
    ctx = bystander()
    p = ctx.p
    b = p.b
    epochs = b._trunk_rx_epoch
    ep0 = epochs.get(ADDR_A)
    assert ep0 is not None
    dgs = [(bytes([0, 0, 1, 0]) + (7000 + i).to_bytes(4, "big"),
            (f"10.8.{i // 250}.{i % 250 + 1}", 4569), 0.0) for i in range(4098)]
    n0 = len(p.ev(b, VoiceReceived))
    if flood == "batched":
        b.receive_batch(dgs, p.now, p.now)
    elif flood == "one_by_one":
        for data, src, _ in dgs:
            b.receive_datagram(data, src, p.now)
    assert epochs.get(ADDR_A) == ep0 and len(epochs) <= 4096
    media_flows(ctx)
    media_flows(ctx)
    in_step(ctx)
    return ctx.bcall.rx.lost, [e.ts for e in p.ev(b, VoiceReceived)[n0:] if e.callno == ctx.bcn]


@pytest.mark.parametrize("flood", ["one_by_one", "batched"])
def test_strangers_trunk_frames_keep_live_calls_epochs(flood: str) -> None:
    """Strangers' trunk headers leave the epoch table's entry for office-a alone (at most
    4,096 entries kept): the bystander call's timestamps and loss are those of a run without
    them."""
    assert _epoch_run(flood) == _epoch_run("none")


SCENARIOS: list[tuple[str, str, str]] = [
    ("new_flood", "5,000 NEWs without a valid token (half empty IE 54, half none) from 500 "
     "source ports while a real call with token + md5 is set up",
     "CALLTOKEN or IE-less REJECT from call 1 each; no call numbers, calls or table entries "
     "held; the real call completes; the bystander call keeps going"),
    ("token_refused", "call token expired (11 s), replayed from another port or IP, foreign "
     "hash, garbage, no separator, from the future",
     "IE-less REJECT from call 1, no state; the genuine token still works"),
    ("maxcallnumbers", "4 token-validated NEWs from one IP with maxcallnumbers = 3",
     "4th gets a stateless REJECT; other IPs unaffected"),
    ("maxauthreq", "5 NEWs for office-a leaving AUTHREQs unanswered (maxauthreq = 3)",
     "4th and 5th: REJECT cause 21"),
    ("delayreject", "wrong md5 with delayreject = yes", "REJECT 50 sent 1 s later, not at once"),
    ("auth_throttle", "3 wrong secrets from one IP (authfaillimit = 3, authfailwindow = 60)",
     "each logged with the source; further NEWs from that IP: no AUTHREQ, REJECT 50 after 1 s, "
     "logged; accepted again after the window"),
    ("spoofed_unknown_callnos", "a HANGUP or LAGRQ for each of the 32,766 call numbers with "
     "the trunk peer's source address, 61 s after start; the same just after start (restart "
     "window) and from a stranger",
     "INVAL each (as Asterisk); held only numbers the peer's IP had calls on, at most "
     "maxcallnumbers per source and 1/8 of a pool (none from strangers, none for a HANGUP); "
     "real calls both ways still get numbers"),
    ("nonvalidated_budget", "1,500 token-less NEWs from 6 IPs for a requirecalltoken = no "
     "user with maxcallnumbers_nonvalidated = 1000",
     "1,000 get numbers (counted over all IPs until reusable, 60 s after the call), the rest a "
     "stateless REJECT, logged; token-validated calls unaffected; allocation is O(1)"),
    ("token_key", "an observed call token, offline", "no key recovery: HMAC-SHA1 with a 160-bit "
     "key from secrets (token text as Asterisk's); call numbers and challenges from "
     "SystemRandom"),
    ("pending_expiry", "3 NEWs (and a REGREQ) whose AUTHREQ / REGAUTH is ACKed once, then "
     "silence, with maxauthreq = 3",
     "the real user gets REJECT 21 meanwhile; as on Asterisk every new call runs LAGRQ (10 s) "
     "and PING (21 s): unanswered, the calls go after the retransmissions (~42 s), freeing "
     "the maxauthreq slots and call numbers; the real user gets in again"),
    ("regreq_guessing", "wrong md5 in REGREQs for a host = dynamic peer: with and without "
     "delayreject, with and without authfaillimit",
     "REGREJ 29 at once (delayreject = no, as Asterisk) or 1 s later (yes); authfaillimit off "
     "by default (8 guesses: 8 REGREJs, then the right secret registers); when set, failed "
     "registrations and calls share the per-IP count: later REGREQs get no REGAUTH, a REGREJ "
     "saying throttled after 1 s, logged"),
    ("acl_enumeration", "a NEW for a known user from outside its ACL, and one for an unknown "
     "name", "the same fake AUTHREQ (md5, challenge, the name asked for), then REJECT 50 for "
     "both, as Asterisk (its user search skips ACL-denied users); the log names the ACL"),
    ("trunk_epochs", "4,098 8-byte trunk headers from as many strangers (one by one and as "
     "one received batch)", "the epochs of sources with calls are kept (never cleared), "
     "strangers' evicted, at most 4,096 kept; the bystander's timestamps do not jump"),
]


def test_table_is_complete() -> None:
    names = [c.name for c in CASES] + [s[0] for s in SCENARIOS]
    assert len(names) == len(set(names))
    assert all(c.send and c.expect for c in CASES)
