"""A burst of call setups is answered datagram by datagram, as Asterisk does.

While every call is an answered trunked call the driver reads the socket only at the trunk flush
(up to 20 ms later) and otherwise every 3 ms; a burst of NEWs then piled up in the socket and was
answered in one go, the AUTHREPs to the first AUTHREQs waited in the socket while later NEWs were
counted against ``maxauthreq``, and calls were refused with REJECT 21 that Asterisk accepts.  Once
a request arrives the endpoint says a setup is pending (``Endpoint.setup_pending``): the driver
reads each datagram as it comes and sends each reply before handling the next datagram.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from typing import Any

from helpers_pair import Pair, seed_configs
from test_hostile import _answer_authreq, get_token, new_frame, replies

from iaxgw._core.constants import IE, IAXSubclass
from iaxgw._core.frames import build_full, parse_full
from iaxgw._core.ies import IEs, build_ies
from iaxgw.gateway.driver.server import DatagramServer, open_endpoint
from iaxgw.gateway.iax2.calls import CallState
from iaxgw.gateway.iax2.events import IncomingCall
from iaxgw.gateway.iax2.protocol import Endpoint


def _trunked_pair_with_calls(n: int) -> Pair:
    p = Pair(*seed_configs())
    p.run(0.5)
    for i in range(n):
        p.a.call("office-b", "300", p.now)
        assert p.run_until(lambda i=i: len(p.ev(p.b, IncomingCall)) == i + 1, 10)
    for inc in p.ev(p.b, IncomingCall):
        p.b.answer(inc.callno, p.now)
    assert p.run_until(lambda: all(c.state == CallState.UP and c.trunk
                                   for c in p.b._calls.values()) and len(p.b._calls) == n, 10)
    p.run(p.b.SETUP_PROMPT_S + 0.5)
    return p


def test_a_new_without_token_turns_prompt_reading_on_at_once() -> None:
    """All calls up and trunked: reads may wait for the trunk flush.  A NEW (before its call
    token, so no call number yet) must end that at once, not 100 ms later."""
    p = _trunked_pair_with_calls(2)
    b, now = p.b, p.now
    assert not b.rx_prompt(now) and not b.setup_pending(now)
    src = ("127.0.0.10", 4569)
    b.receive_datagram(new_frame(0x333, b""), src, now)
    assert [f.csub for f in replies(b, now, src)] == [IAXSubclass.CALLTOKEN]
    assert b.setup_pending(now + 0.01) and b.rx_prompt(now + 0.01)
    assert not b.setup_pending(now + b.SETUP_PROMPT_S + 0.01)


def test_setup_pending_while_an_authreq_is_unanswered() -> None:
    b = Endpoint(seed_configs(qualify=None)[1], local_addr=("127.0.0.20", 4569), role_name="b",
                 wall_offset=1.7e9)
    now = 1000.0
    src = ("127.0.0.10", 4569)
    b.receive_datagram(new_frame(0x400, get_token(b, src, now)), src, now)
    later = now + 5.0                      # long after the request itself
    assert b.setup_pending(later)
    _answer_authreq(b, src, later, 0x400, "a-strong-shared-secret")
    assert [f.csub for f in replies(b, later, src)][-1] == IAXSubclass.ACCEPT
    assert not b.setup_pending(later)


def test_burst_accounting_follows_arrival_order() -> None:
    """NEW, NEW, NEW, AUTHREP (to the first), NEW: the AUTHREP arrived before the fourth NEW, so
    only two AUTHREQs are unanswered when it is handled -- four AUTHREQs, no REJECT 21."""
    b = Endpoint(seed_configs(qualify=None, maxauthreq=3)[1], local_addr=("127.0.0.20", 4569),
                 role_name="b", wall_offset=1.7e9)
    now = 1000.0
    src = ("127.0.0.10", 4569)
    toks = [get_token(b, src, now, 0x500 + i) for i in range(4)]
    for i in range(3):
        b.receive_datagram(new_frame(0x500 + i, toks[i]), src, now)
    areqs = [f for f in replies(b, now, src) if f.csub == IAXSubclass.AUTHREQ]
    assert len(areqs) == 3
    first = areqs[0]
    chal = IEs.parse(first.payload).get(IE.CHALLENGE)
    md5 = hashlib.md5(f"{chal}a-strong-shared-secret".encode()).hexdigest()
    b.receive_datagram(build_full(first.dcallno, first.scallno, 10, 1, 1, 6, IAXSubclass.AUTHREP,
                                  build_ies([(IE.MD5_RESULT, md5)])), src, now)
    b.receive_datagram(new_frame(0x503, toks[3]), src, now)
    subs = [(f.csub, IEs.parse(f.payload).get(IE.CAUSECODE)) for f in replies(b, now, src)]
    assert (IAXSubclass.REJECT, 21) not in subs and (IAXSubclass.AUTHREQ, None) in subs, subs


class _Recorder(asyncio.DatagramTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sends: list[list[tuple[bytes, Any]]] = []

    def send_many(self, items: list[tuple[bytes, Any]]) -> None:
        self.sends.append(list(items))

    def sendto(self, data: Any, addr: Any = None) -> None:
        self.sends.append([(bytes(data), addr)])

    def is_closing(self) -> bool:
        return False


def test_replies_leave_one_by_one_while_a_setup_is_pending() -> None:
    """A batch of three NEWs: each CALLTOKEN is sent before the next NEW is handled (three
    sends), as a datagram-at-a-time reader would."""
    async def main() -> list[list[tuple[bytes, Any]]]:
        ep = Endpoint(seed_configs(qualify=None)[1], local_addr=("127.0.0.20", 4569),
                      role_name="b", wall_offset=1.7e9)
        server = DatagramServer(ep)
        rec = _Recorder()
        server.connection_made(rec)
        rec.sends.clear()
        src = ("127.0.0.10", 4569)
        server.datagrams_received([(new_frame(0x600 + i, b""), src, 0.0) for i in range(3)])
        return rec.sends

    sends = asyncio.run(main())
    assert [[parse_full(d).csub for d, _ in s] for s in sends] == [[IAXSubclass.CALLTOKEN]] * 3


def test_transport_reads_at_once_while_a_setup_is_pending() -> None:
    """After a read that brought a NEW the transport waits on the socket (reads the next
    datagram when it comes) instead of scheduling a coalesced read (here 0.5 s) later."""
    async def main() -> tuple[bool, bool, list[int]]:
        server = await open_endpoint(seed_configs(qualify=None)[1], ("127.0.0.77", 0),
                                     rx_coalesce=0.5)
        tr: Any = server.transport
        port = tr.get_extra_info("sockname")[1]
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.10", 0))
        peer.setblocking(False)
        try:
            peer.sendto(new_frame(0x700, b""), ("127.0.0.77", port))
            await asyncio.sleep(0.05)
            got: list[int] = []
            while True:
                try:
                    got.append(parse_full(peer.recv(4096)).csub)
                except BlockingIOError:
                    break
            return tr._resume is None, tr._reading, got
        finally:
            peer.close()
            server.close()

    no_resume, reading, got = asyncio.run(main())
    assert got == [IAXSubclass.CALLTOKEN]
    assert no_resume and reading
