"""Requests that probe authentication, sent byte for byte alike to the lab's Asterisk 22
office-a and to iaxgw's Endpoint with the same iax.conf (driven on a simulated clock), and the
answers compared:

- a caller that acknowledges the AUTHREQ and then goes silent (a NEW asking for a call token,
  the NEW with it, an ACK of the AUTHREQ, then nothing for 13 s from the ACK, 4 s in): both run
  the new call's LAGRQ timer from the start (10 s) and resend the unanswered LAGRQ on the
  retransmission schedule, which is what ends such a call (and frees its maxauthreq slot);
- a REGREQ with a wrong md5 for a ``host = dynamic`` peer: REGREJ 29 at once, or about 1 s
  later with ``delayreject = yes``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from iaxgw._core.constants import IE, IAXSubclass
from iaxgw._core.frames import build_full, parse_full
from iaxgw._core.ies import IEs, build_ies
from iaxgw.gateway.conf.config import load_iax_conf
from iaxgw.gateway.iax2.protocol import Endpoint
from iaxgw.sim.lab.labconfig import LabSiteConfig, render_iax_conf, seed_site

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(120)]

OFFICE_A = ("127.0.0.10", 4569)
OUR_IP = "127.0.0.20"            # office-a's ACL admits office-b's address, any port
SCALLNO = 0x155
LISTEN_S = 13.0
#: each recv listens for all of its time: the NEW with the token goes 2 s after the first one
T_NEW = 2.0

#: send(datagram), then recv(seconds) -> [(seconds since the first send, full frame)]
Wire = tuple[Callable[[bytes], None], Callable[[float], list[tuple[float, Any]]]]


def _new(token: bytes) -> bytes:
    return build_full(SCALLNO, 0, 3, 0, 0, 6, IAXSubclass.NEW, build_ies([
        (IE.VERSION, 2), (IE.CALLED_NUMBER, "200"), (IE.USERNAME, "office-b"),
        (IE.FORMAT, 4), (IE.CAPABILITY, 12), (IE.CALLTOKEN, token)]))


def _silent_caller(wire: Wire) -> list[tuple[float, Any]]:
    """The scenario; returns the LAGRQs the callee sent the silent caller, with their times."""
    send, recv = wire
    send(_new(b""))
    tok = [f for _, f in recv(2.0) if f.csub == IAXSubclass.CALLTOKEN]
    assert tok, "no CALLTOKEN"
    token = IEs.parse(tok[0].payload).get(IE.CALLTOKEN)
    assert isinstance(token, bytes)
    send(_new(token))
    areq = [f for _, f in recv(2.0) if f.csub == IAXSubclass.AUTHREQ]
    assert areq, "no AUTHREQ"
    a = areq[0]
    send(build_full(SCALLNO, a.scallno, a.ts, 1, (a.oseqno + 1) & 0xFF, 6, IAXSubclass.ACK))
    return [(t, f) for t, f in recv(LISTEN_S) if f.csub == IAXSubclass.LAGRQ]


def _asterisk_wire() -> tuple[Wire, socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((OUR_IP, 0))
    t0: list[float] = []

    def send(data: bytes) -> None:
        if not t0:
            t0.append(time.monotonic())
        sock.sendto(data, OFFICE_A)

    def recv(seconds: float) -> list[tuple[float, Any]]:
        out = []
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, _ = sock.recvfrom(4096)
            except TimeoutError:
                break
            if data[0] & 0x80:
                out.append((time.monotonic() - t0[0], parse_full(data)))
        return out

    return (send, recv), sock


def _iaxgw_wire(tmp_path: Path, cfg: LabSiteConfig) -> Wire:
    conf = tmp_path / "iax.conf"
    conf.write_text(render_iax_conf(cfg))
    ep = Endpoint(load_iax_conf(conf), local_addr=OFFICE_A, role_name="office-a",
                  wall_offset=time.time() - 1000.0)
    src = (OUR_IP, 40000)
    clock = [1000.0]

    def send(data: bytes) -> None:
        ep.receive_datagram(data, src, clock[0])

    def recv(seconds: float) -> list[tuple[float, Any]]:
        out = []
        end = clock[0] + seconds
        while clock[0] < end:
            for data, addr in ep.datagrams_to_send(clock[0]):
                if addr == src and data[0] & 0x80:
                    out.append((clock[0] - 1000.0, parse_full(data)))
            clock[0] += 0.01
            ep.handle_timer(clock[0])
        return out

    return send, recv


def test_silent_caller_after_authreq_gets_lagrq_from_both(asterisk_factory: Any,
                                                          tmp_path: Path) -> None:
    cfg = seed_site("office-a", qualify="no")
    ast, gw = _both(asterisk_factory, tmp_path, cfg, _silent_caller)
    print("Asterisk LAGRQs:", [(round(t, 2), f.retransmit) for t, f in ast])
    print("iaxgw    LAGRQs:", [(round(t, 2), f.retransmit) for t, f in gw])
    seen = {name: [(round(t, 2), f.oseqno, f.retransmit) for t, f in side]
            for name, side in (("asterisk", ast), ("iaxgw", gw))}
    for side in (ast, gw):
        assert len(side) >= 2, seen
        (t1, first), (t2, again) = side[0], side[1]
        assert 9.5 <= t1 - T_NEW <= 11.0 and not first.retransmit, seen   # 10 s after NEW
        assert again.oseqno == first.oseqno and again.retransmit   # unanswered: resent
        assert 1.5 <= t2 - t1 <= 2.6                          # after 2 x pingtime (1 s)
    assert abs(ast[0][0] - gw[0][0]) < 1.0 and abs(ast[1][0] - gw[1][0]) < 1.0


def _both(asterisk_factory: Any, tmp_path: Path, cfg: LabSiteConfig,
          scenario: Callable[[Wire], Any]) -> tuple[Any, Any]:
    """``scenario`` against Asterisk running ``cfg``, then against iaxgw with the same file."""
    asterisk_factory("office-a", cfg)
    wire, sock = _asterisk_wire()
    try:
        ast = scenario(wire)
    finally:
        sock.close()
    return ast, scenario(_iaxgw_wire(tmp_path, cfg))


REG_PEER = ("[regtest]", "type = peer", "host = dynamic", "secret = reg-secret",
            "context = from-iax")


def _wrong_registration(wire: Wire) -> list[tuple[float, int, Any]]:
    """REGREQ, token, REGAUTH answered with a wrong md5: (seconds after that answer, subclass,
    CAUSECODE) of each frame that comes back within 3 s."""
    send, recv = wire

    def regreq(scallno: int, items: list[tuple[int, object]], oseqno: int = 0,
               iseqno: int = 0, dcallno: int = 0) -> bytes:
        return build_full(scallno, dcallno, 5, oseqno, iseqno, 6, IAXSubclass.REGREQ, build_ies(
            [(IE.USERNAME, "regtest"), (IE.REFRESH, 60), *items]))

    send(regreq(0x166, [(IE.CALLTOKEN, b"")]))
    tok = [f for _, f in recv(1.0) if f.csub == IAXSubclass.CALLTOKEN]
    assert tok, "no CALLTOKEN"
    send(regreq(0x166, [(IE.CALLTOKEN, IEs.parse(tok[0].payload).get(IE.CALLTOKEN))]))
    auth = [f for _, f in recv(1.0) if f.csub == IAXSubclass.REGAUTH]
    assert auth, "no REGAUTH"
    a = auth[0]
    send(regreq(0x166, [(IE.MD5_RESULT, "0" * 32)], 1, (a.oseqno + 1) & 0xFF, a.scallno))
    return [(round(t - 2.0, 1), f.csub, IEs.parse(f.payload).get(IE.CAUSECODE))
            for t, f in recv(3.0) if not f.retransmit]


@pytest.mark.parametrize("delayreject", [False, True])
def test_wrong_registration_secret_regrej_timing(asterisk_factory: Any, tmp_path: Path,
                                                 delayreject: bool) -> None:
    cfg = seed_site("office-a", qualify="no", extra_general=(
        f"delayreject = {'yes' if delayreject else 'no'}", "", *REG_PEER, ""))
    ast, gw = _both(asterisk_factory, tmp_path, cfg, _wrong_registration)
    print(f"delayreject={delayreject}: Asterisk {ast}; iaxgw {gw}")

    def shape(frames: list[tuple[float, int, Any]]) -> list[tuple[bool, int, Any]]:
        # (REGREJ about 1 s late?, subclass, cause) of everything but ACKs
        return [(t >= 0.8, sub, cause) for t, sub, cause in frames if sub != IAXSubclass.ACK]

    assert shape(ast) == shape(gw) == [(delayreject, IAXSubclass.REGREJ, 29)], (ast, gw)
    for frames in (ast, gw):
        (t_rej,) = [t for t, sub, _ in frames if sub == IAXSubclass.REGREJ]
        assert t_rej <= 1.3 if delayreject else t_rej <= 0.2
