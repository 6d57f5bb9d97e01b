"""Batched UDP I/O (``_core.udp``, compiled and twin) and the server's BatchedTransport: order,
addresses, kernel arrival times, oversize datagrams, refused destinations, partial sends."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest

from iaxgw._core._select import both
from iaxgw.gateway.driver.server import BatchedTransport, DatagramServer

UDP = both("udp")


def pair(mod: Any, batch: int = 8, family: int = socket.AF_INET) -> tuple[Any, Any, Any, Any]:
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    a = socket.socket(family, socket.SOCK_DGRAM)
    b = socket.socket(family, socket.SOCK_DGRAM)
    for s in (a, b):
        s.bind((host, 0))
        s.setblocking(False)
    return a, b, mod.UdpIO(a, batch), mod.UdpIO(b, batch)


def drain(io: Any) -> list[tuple[bytes, tuple[str, int], float]]:
    got: list[tuple[bytes, tuple[str, int], float]] = []
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        batch = io.recv()
        if not io.gro:          # with receive offload, a message may carry many datagrams
            assert len(batch) <= io.batch
        if not batch:
            if got:
                break
            time.sleep(0.005)
            continue
        got += batch
    return got


@pytest.mark.parametrize("mod", UDP, ids=lambda m: m.__name__.rsplit("_", 1)[-1])
def test_round_trip_order_addresses_and_ages(mod: Any) -> None:
    a, b, ia, ib = pair(mod)
    # Linux turns receive timestamping on for the whole stack from a work queue, a moment after
    # the first socket asks; a datagram that passes before then is stamped when it is read
    time.sleep(0.05)
    try:
        dst = b.getsockname()
        items = [(bytes([i]) * (i + 1), dst) for i in range(30)]
        assert ia.send(items) == 30 and ia.send_errors == 0
        time.sleep(0.02)
        got = drain(ib)
        assert [d for d, _, _ in got] == [d for d, _ in items]       # all, in order
        assert {addr for _, addr, _ in got} == {a.getsockname()}
        assert ib.timestamps
        ages = [age for _, _, age in got]
        assert all(0.015 <= age < 1.0 for age in ages), ages       # they waited >= 20 ms
        assert ib.recv() == []
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("mod", UDP, ids=lambda m: m.__name__.rsplit("_", 1)[-1])
def test_oversize_and_bad_destinations(mod: Any) -> None:
    a, b, ia, ib = pair(mod)
    try:
        dst = b.getsockname()
        items = [(b"x" * 5000, dst), (b"y", ("not-an-address", 1)), (b"z", (dst[0], 70000)),
                 (b"w", dst)]
        assert ia.send(items) == 4
        assert ia.send_errors == 2 and "70000" in (ia.last_send_error or "")
        got = drain(ib)
        # an oversize datagram arrives longer than the protocol core's 4,096-byte limit (it is
        # dropped there, counted), never cut to a plausible length
        slot = mod.GRO_SLOT if ib.gro else mod.SLOT
        assert [len(d) for d, _, _ in got] == [min(5000, slot), 1]
        assert mod.SLOT > 4096
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("mod", UDP, ids=lambda m: m.__name__.rsplit("_", 1)[-1])
def test_ipv6(mod: Any) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        a, b, ia, ib = pair(mod, family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        assert ia.send([(b"hello", b.getsockname()[:2])]) == 1
        got = drain(ib)
        assert [(d, addr) for d, addr, _ in got] == [(b"hello", ("::1", a.getsockname()[1]))]
    finally:
        a.close()
        b.close()


def test_compiled_and_twin_agree() -> None:
    if len(UDP) < 2:
        pytest.skip("compiled core not built")
    seen = []
    for mod in UDP:
        a, b, ia, ib = pair(mod, batch=5)
        try:
            dst = b.getsockname()
            items = [(bytes([i % 256]) * (i * 37 % 1500 + 1), dst) for i in range(23)]
            items.insert(7, (b"bad", ("nowhere", 5)))
            sent = ia.send(items)
            got = drain(ib)
            seen.append((sent, ia.send_errors, ia.last_send_error,
                         [d for d, _, _ in got], [x.batch for x in (ia, ib)]))
        finally:
            a.close()
            b.close()
    assert seen[0] == seen[1]


class _Recorder:
    """A stand-in endpoint: records what the server hands it."""

    def __init__(self) -> None:
        self.got: list[tuple[bytes, tuple[str, int], float]] = []
        self.out: list[tuple[bytes, tuple[str, int]]] = []
        self.wall_offset = 0.0

    def start(self, now: float) -> None:
        pass

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        self.got.append((data, addr, now))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        out, self.out = self.out, []
        return out

    def next_event(self) -> None:
        return None

    def get_timer(self) -> None:
        return None


def _transport(ep: Any = None, io: Any = None) -> tuple[Any, DatagramServer, socket.socket,
                                                       BatchedTransport]:
    """A started BatchedTransport on a loopback socket, its server and endpoint (a recorder
    unless given); ``io(sock)`` replaces its UdpIO.  Inside a running loop."""
    loop = asyncio.get_running_loop()
    ep = _Recorder() if ep is None else ep
    server = DatagramServer(ep, loop=loop)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    tr = BatchedTransport(loop, sock, server)
    if io is not None:
        tr._io = io(sock)
    tr.start()
    server.transport = tr
    return ep, server, sock, tr


def test_batched_transport_hands_over_kernel_arrival_times() -> None:
    """Datagrams that wait in the socket while the loop is busy reach the endpoint with their
    own arrival times (5 ms apart), not the time they were read."""
    import uvloop

    async def main() -> list[float]:
        ep, server, sock, tr = _transport()
        assert server.rx_time_exact
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dst = sock.getsockname()
        sent_at = []
        for i in range(8):                  # the loop is blocked meanwhile: nothing is read
            sent_at.append(time.monotonic())
            tx.sendto(bytes([i]) * 10, dst)
            time.sleep(0.005)
        await asyncio.sleep(0.05)
        tx.close()
        tr.close()
        await asyncio.sleep(0.01)
        assert [d[0] for d, _, _ in ep.got] == list(range(8))
        assert tr.received == 8 and tr.wakeups >= 1
        return [now - s for (_, _, now), s in zip(ep.got, sent_at, strict=True)]

    lags = uvloop.run(main())
    assert all(-0.0005 < lag < 0.003 for lag in lags), lags


def test_batched_transport_keeps_unsent_datagrams_in_order() -> None:
    """A send the socket cannot take at once is finished when it becomes writable, and later
    sends queue behind it."""

    class Stingy:
        batch = 8
        timestamps = True
        send_errors = 0

        def __init__(self) -> None:
            self.sent: list[bytes] = []
            self.room = 2

        def send(self, items: list[Any], start: int = 0) -> int:
            take = min(self.room, len(items) - start)
            self.sent += [d for d, _ in items[start:start + take]]
            self.room = 0
            return start + take

        def recv(self) -> list[Any]:
            return []

    async def main() -> None:
        io = Stingy()
        _ep, server, _sock, tr = _transport(io=lambda _: io)
        dst = ("127.0.0.1", 9)
        tr.send_many([(b"1", dst), (b"2", dst), (b"3", dst)])
        tr.sendto(b"4", dst)
        assert io.sent == [b"1", b"2"] and tr.get_write_buffer_size() == 2
        io.room = 10
        await asyncio.sleep(0.02)           # the writer callback runs
        assert io.sent == [b"1", b"2", b"3", b"4"] and tr.get_write_buffer_size() == 0
        tr.close()
        await asyncio.sleep(0.01)
        assert server.closed.done()

    import uvloop

    uvloop.run(main())


@pytest.mark.parametrize("mod", UDP, ids=lambda m: m.__name__.rsplit("_", 1)[-1])
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["v4", "v6"])
def test_segmented_send_delivers_the_same_datagrams(mod: Any, family: int) -> None:
    """Runs of equal-size datagrams to one address leave as segmented buffers (UDP GSO); the
    receiver must get exactly the datagrams of a plain send, in order: runs broken by another
    address, a shorter datagram (which ends a run), a longer one, an empty one, and a run
    longer than one buffer's segment limit."""
    a, b, ia, ib = pair(mod, batch=16, family=family)
    c = socket.socket(family, socket.SOCK_DGRAM)
    c.bind((b.getsockname()[0], 0))
    c.setblocking(False)
    ic = mod.UdpIO(c, 16)
    try:
        dst, other = b.getsockname()[:2], c.getsockname()[:2]
        full = [(bytes([i]) * 1170, dst) for i in range(5)]
        items = [*full, (b"\x07" * 300, dst), (b"\x08" * 1170, dst), (b"\x09" * 1170, other),
                 (b"\x0a" * 1170, dst), (b"\x0b" * 1300, dst), (b"", dst),
                 *[(bytes([0x10 + i % 200]) * 900, dst) for i in range(mod.GSO_MAX_SEGMENTS + 9)],
                 (b"\x0c" * 20, dst)]
        ia.gso = True
        assert ia.send(items) == len(items) and ia.send_errors == 0
        time.sleep(0.02)
        got = [d for d, _, _ in drain(ib)]
        assert got == [d for d, addr in items if addr == dst]
        assert [d for d, _, _ in drain(ic)] == [b"\x09" * 1170]
        import sys
        if sys.platform.startswith("linux"):
            assert ia.gso, "the kernel refused a segmented send"
            assert ia.gso_datagrams >= 5 + mod.GSO_MAX_SEGMENTS
            # received whole and cut back here (UDP_GRO): the same datagrams
            assert ib.gro and ib.gro_datagrams >= 5 + mod.GSO_MAX_SEGMENTS
        # a receiver without offload gets the same datagrams
        plain = mod.UdpIO(b, 16, gro=False)
        assert not plain.gro
        ia.send(items)
        time.sleep(0.02)
        assert [d for d, _, _ in drain(plain)] == got and plain.gro_datagrams == 0
        ib = mod.UdpIO(b, 16, gro=True)
        # the same items with segmentation off: the same datagrams
        ia.gso = False
        before = ia.gso_datagrams
        assert ia.send(items) == len(items)
        time.sleep(0.02)
        assert [d for d, _, _ in drain(ib)] == got
        assert ia.gso_datagrams == before
    finally:
        for s in (a, b, c):
            s.close()


def test_timer_read_of_a_full_batch_then_realign() -> None:
    """The endpoint timer's read (``poll``) finds a full batch, so the next read is set for the
    next loop pass (under uvloop a plain Handle, without ``when()``); re-aligning the read
    schedule after the timer must leave that alone, and the rest is read in that next pass."""
    import uvloop

    from iaxgw._core.udp import UdpIO

    async def main() -> None:
        ep, server, sock, tr = _transport(io=lambda sock: UdpIO(sock, 4))
        tr._after_read(1)                   # as after a read: the next one is scheduled
        assert tr._resume is not None
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(10):
            tx.sendto(bytes([i]) * 10, sock.getsockname())
        time.sleep(0.01)
        server._on_timer()                  # reads 4, a full batch
        assert len(ep.got) == 4
        await asyncio.sleep(0.02)
        assert [d[0] for d, _, _ in ep.got] == list(range(10))
        tx.close()
        tr.close()
        await asyncio.sleep(0.01)

    uvloop.run(main())


def test_held_reads_wait_and_keep_their_arrival_times() -> None:
    """``hold_reads``: nothing is read (not on readability, not by the timer's ``poll``) until
    ``release_reads``, which reads what waited, stamped with when it arrived; then reading goes
    on as usual."""
    import uvloop

    async def main() -> None:
        ep, server, sock, tr = _transport()
        tr.release_reads()                  # not held: nothing happens
        tr.hold_reads()
        tr.hold_reads()                     # twice is once
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dst = sock.getsockname()
        sent_at = []
        for i in range(3):
            sent_at.append(time.monotonic())
            tx.sendto(bytes([i]) * 10, dst)
        await asyncio.sleep(0.03)           # readable all along, but held
        tr.poll()
        server._on_timer()
        assert ep.got == [] and tr.received == 0
        released_at = time.monotonic()
        tr.release_reads()
        assert [d[0] for d, _, _ in ep.got] == [0, 1, 2]
        lags = [now - s for (_, _, now), s in zip(ep.got, sent_at, strict=True)]
        assert all(-0.0005 < lag < 0.01 for lag in lags), lags
        assert all(now < released_at - 0.015 for _, _, now in ep.got)
        tx.sendto(b"\x09" * 10, dst)        # reading goes on
        await asyncio.sleep(0.03)
        assert [d[0] for d, _, _ in ep.got] == [0, 1, 2, 9]
        tr.hold_reads()
        tr.close()                          # closing while held
        tr.release_reads()
        tx.close()
        await asyncio.sleep(0.01)
        assert server.closed.done()

    uvloop.run(main())


def test_backlogged_after_a_full_batch_until_drained() -> None:
    """``backlogged()``: the last read took a full batch (more may wait), until a read that
    takes less."""
    import uvloop

    from iaxgw._core.udp import UdpIO

    async def main() -> None:
        ep, _server, sock, tr = _transport(io=lambda sock: UdpIO(sock, 4))
        assert not tr.backlogged()
        tr._after_read(1)                   # reads are being coalesced
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(10):
            tx.sendto(bytes([i]) * 10, sock.getsockname())
        time.sleep(0.01)
        tr.poll()                           # 4 of 10: a full batch
        assert len(ep.got) == 4 and tr.backlogged()
        await asyncio.sleep(0.02)           # the next loop passes read the rest
        assert len(ep.got) == 10 and not tr.backlogged()
        tx.close()
        tr.close()
        await asyncio.sleep(0.01)

    uvloop.run(main())


def test_a_coalesced_read_goes_over_a_batch_at_a_time() -> None:
    """A read of coalesced messages (UDP_GRO) that brings more than a batch hands the protocol
    one batch per loop pass, in order, each aged by its wait (so arrival times stay exact), and
    counts as a full batch until the last."""
    import sys

    import uvloop

    from iaxgw._core.udp import UdpIO

    if not sys.platform.startswith("linux"):
        pytest.skip("UDP_GRO is Linux's")

    class Batches(_Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.sizes: list[int] = []

        def receive_batch(self, batch: list[Any], now: float, floor: float) -> float:
            self.sizes.append(len(batch))
            for data, addr, age in batch:
                self.got.append((data, addr, now - age))
            return floor

    async def main() -> None:
        ep, _server, sock, tr = _transport(Batches(), io=lambda sock: UdpIO(sock, 4, gro=True))
        assert tr._io.gro
        tr._after_read(1)                   # reads are being coalesced
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.setblocking(False)
        sent_at = time.monotonic()
        assert UdpIO(tx, 16, gso=True).send([(bytes([i]) * 100, sock.getsockname())
                                             for i in range(10)]) == 10
        time.sleep(0.01)
        tr.poll()                           # one message of 10: the first 4 now
        assert ep.sizes == [4] and tr.backlogged()
        await asyncio.sleep(0.02)
        assert ep.sizes == [4, 4, 2] and not tr.backlogged()
        assert [d[0] for d, _, _ in ep.got] == list(range(10))
        arrivals = [t for _, _, t in ep.got]
        assert all(abs(t - arrivals[0]) < 0.002 for t in arrivals), arrivals
        assert -0.001 < arrivals[0] - sent_at < 0.005
        tx.close()
        tr.close()
        await asyncio.sleep(0.01)

    uvloop.run(main())
