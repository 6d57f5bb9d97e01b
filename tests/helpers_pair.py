"""Two sans-IO endpoints connected in memory over a seedable impaired link.

``Pair`` runs a discrete-event simulation with a fake clock: datagrams leave one endpoint, cross a
``Link`` (drop / duplicate / reorder / delay), arrive at the other; timers fire at their deadlines.
``transfer(a, b, now)`` is the simple lossless, instant exchange.
"""

from __future__ import annotations

import heapq
import ipaddress
import random
from dataclasses import dataclass, field
from typing import Any

from iaxgw.gateway.conf.model import AclRule, Entry, General, IaxConfig, Register
from iaxgw.gateway.iax2.address import Addr
from iaxgw.gateway.iax2.events import CallProgress, Event, IncomingCall
from iaxgw.gateway.iax2.protocol import Endpoint

ADDR_A: Addr = ("127.0.0.10", 4569)
ADDR_B: Addr = ("127.0.0.20", 4569)
SECRET = "a-strong-shared-secret"


def acl_only(ip: str) -> list[AclRule]:
    """``deny = 0.0.0.0/0`` then ``permit = ip/32`` as in the seed."""
    return [AclRule(False, ipaddress.ip_network("0.0.0.0/0")),
            AclRule(True, ipaddress.ip_network(f"{ip}/32"))]


def site_config(me: str, other: str, other_addr: Addr, *, secret: str = SECRET,
                trunk: bool = True, qualify: int | None = 2000,
                codecs: list[str] | None = None, **general: Any) -> IaxConfig:
    """iax.conf of one site of the seed: a friend named after the remote site."""
    g = General(**general)
    e = Entry(name=other, type="friend", username=me, secrets=[secret], auth=frozenset({"md5"}),
              host=other_addr[0], port=other_addr[1], acl=acl_only(other_addr[0]),
              context="from-iax", peercontext="from-iax", qualify=qualify, trunk=trunk,
              codecs=codecs or ["ulaw", "alaw"])
    return IaxConfig(general=g, entries={other: e})


def seed_configs(**kw: Any) -> tuple[IaxConfig, IaxConfig]:
    """(office-a config, office-b config) mirroring the seed on 127.0.0.10 / 127.0.0.20."""
    return (site_config("office-a", "office-b", ADDR_B, **kw),
            site_config("office-b", "office-a", ADDR_A, **kw))


@dataclass
class Link:
    """One direction of the network: independent, seedable impairments."""

    drop: float = 0.0        # probability a datagram is lost
    dup: float = 0.0         # probability it is delivered twice
    reorder: float = 0.0     # probability it is held back by ``reorder_delay``
    delay: float = 0.001     # base one-way delay (s)
    reorder_delay: float = 0.03
    jitter: float = 0.0      # uniform extra delay 0..jitter (s)
    seed: int = 0
    rng: random.Random = field(init=False)
    sent: int = 0
    dropped: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def deliveries(self, now: float) -> list[float]:
        """Arrival times of one datagram sent at ``now`` (empty when dropped)."""
        self.sent += 1
        r = self.rng
        if r.random() < self.drop:
            self.dropped += 1
            return []
        out = []
        for _ in range(2 if r.random() < self.dup else 1):
            t = now + self.delay + (r.random() * self.jitter if self.jitter else 0.0)
            if r.random() < self.reorder:
                t += self.reorder_delay
            out.append(t)
        return out


class Pair:
    """Endpoints ``a`` and ``b`` on a simulated network with a shared fake clock."""

    def __init__(self, cfg_a: IaxConfig | None = None, cfg_b: IaxConfig | None = None, *,
                 addr_a: Addr = ADDR_A, addr_b: Addr = ADDR_B, link_ab: Link | None = None,
                 link_ba: Link | None = None, seed: int = 1, now: float = 1000.0,
                 wall_offset: float = 1.7e9, drop: Any = None) -> None:
        if cfg_a is None or cfg_b is None:
            cfg_a, cfg_b = seed_configs()
        self.now = now
        self.a = Endpoint(cfg_a, local_addr=addr_a, rng=random.Random(seed), role_name="a",
                          wall_offset=wall_offset)
        self.b = Endpoint(cfg_b, local_addr=addr_b, rng=random.Random(seed + 1), role_name="b",
                          wall_offset=wall_offset)
        self.addr = {id(self.a): addr_a, id(self.b): addr_b}
        self.links = {id(self.a): link_ab or Link(seed=seed),
                      id(self.b): link_ba or Link(seed=seed + 7)}
        self.events: dict[int, list[Event]] = {id(self.a): [], id(self.b): []}
        self.wire: list[tuple[float, str, bytes, Addr]] = []   # (time, "a>b"/"b>a", data, dst)
        self._inflight: list[tuple[float, int, int, bytes, Addr]] = []
        self._seq = 0
        self.stray: list[tuple[str, bytes, Addr]] = []          # sent to neither endpoint
        #: ``drop(direction, data) -> bool``: the network also loses the datagrams it picks
        self.drop = drop
        self.dropped: list[tuple[float, str, bytes]] = []

    # -- plumbing

    def _peer_of(self, ep: Endpoint) -> Endpoint:
        return self.b if ep is self.a else self.a

    def _collect(self) -> None:
        for ep in (self.a, self.b):
            name = "a>b" if ep is self.a else "b>a"
            for data, dst in ep.datagrams_to_send(self.now):
                self.wire.append((self.now, name, data, dst))
                other = self._peer_of(ep)
                if dst != self.addr[id(other)]:
                    self.stray.append((name, data, dst))
                    continue
                if self.drop is not None and self.drop(name, data):
                    self.dropped.append((self.now, name, data))
                    continue
                for t in self.links[id(ep)].deliveries(self.now):
                    self._seq += 1
                    heapq.heappush(self._inflight, (t, self._seq, id(other), data,
                                                    self.addr[id(ep)]))
            while (ev := ep.next_event()) is not None:
                self.events[id(ep)].append(ev)

    def step(self, until: float) -> bool:
        """Advance to the next timer or arrival not after ``until``; False when none."""
        self._collect()
        cands = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None]
        if self._inflight:
            cands.append(self._inflight[0][0])
        if not cands:
            return False
        t = min(cands)
        if t > until:
            return False
        self.now = max(self.now, t)
        while self._inflight and self._inflight[0][0] <= self.now:
            _, _, dst, data, src = heapq.heappop(self._inflight)
            ep = self.a if dst == id(self.a) else self.b
            ep.receive_datagram(data, src, self.now)
        for ep in (self.a, self.b):
            t2 = ep.get_timer()
            if t2 is not None and t2 <= self.now:
                ep.handle_timer(self.now)
        self._collect()
        return True

    def run(self, duration: float, max_steps: int = 2_000_000) -> None:
        """Run the simulation for ``duration`` seconds of fake time."""
        until = self.now + duration
        for _ in range(max_steps):
            if not self.step(until):
                break
        self.now = max(self.now, until)
        self._collect()

    def run_until(self, pred: Any, timeout: float = 60.0, max_steps: int = 2_000_000) -> bool:
        """Run until ``pred()`` is true (checked after each step) or ``timeout`` fake seconds."""
        until = self.now + timeout
        for _ in range(max_steps):
            if pred():
                return True
            if not self.step(until):
                self.now = until
                return bool(pred())
        return bool(pred())

    def ev(self, ep: Endpoint, cls: type | None = None) -> list[Any]:
        evs = self.events[id(ep)]
        return [e for e in evs if cls is None or isinstance(e, cls)]

    def pop_events(self, ep: Endpoint) -> list[Event]:
        evs = self.events[id(ep)]
        self.events[id(ep)] = []
        return evs


def transfer(a: Endpoint, b: Endpoint, now: float, rounds: int = 50) -> int:
    """Lossless instant exchange between ``a`` and ``b`` until both are quiet; datagrams count."""
    n = 0
    for _ in range(rounds):
        moved = 0
        for src, dst in ((a, b), (b, a)):
            for data, to in src.datagrams_to_send(now):
                if to == dst.local_addr:
                    dst.receive_datagram(data, src.local_addr, now)
                    moved += 1
        n += moved
        if not moved:
            break
    return n


# ---------------------------------------------------------------- raw frames for direct tests

def full_frames(wire: list[tuple[float, str, bytes, Addr]], direction: str) -> list[Any]:
    """Parsed full frames of one direction ("a>b"/"b>a") of a Pair's wire log."""
    from iaxgw._core.frames import parse_full

    return [parse_full(d) for _, dr, d, _ in wire if dr == direction and d[0] & 0x80]


def iax(frames: list[Any], subclass: int) -> list[Any]:
    """The IAX (type 6) frames of ``subclass``."""
    return [f for f in frames if f.frametype == 6 and f.csub == subclass]


def drain(ep: Endpoint, now: float) -> list[tuple[bytes, Addr]]:
    return ep.datagrams_to_send(now)


def events(ep: Endpoint) -> list[Event]:
    out = []
    while (e := ep.next_event()) is not None:
        out.append(e)
    return out


def answered_call(p: Pair, caller: Endpoint, callee: Endpoint, peer: str,
                  exten: str) -> tuple[int, int]:
    """``caller`` calls ``peer``/``exten``, ``callee`` answers: (caller's callno, callee's)."""
    cn = caller.call(peer, exten, p.now)
    assert p.run_until(lambda: p.ev(callee, IncomingCall), 10)
    callee_cn = p.ev(callee, IncomingCall)[0].callno
    callee.answer(callee_cn, p.now)
    assert p.run_until(lambda: any(e.kind == "answered" for e in p.ev(caller, CallProgress)),
                       5)
    return cn, callee_cn


def reg_configs(secret_b: str = SECRET) -> tuple[IaxConfig, IaxConfig]:
    """The seed sites with office-b registering to office-a (office-a's entry for it is
    ``host = dynamic``, with qualify)."""
    ca, cb = seed_configs(qualify=None)
    e = ca.entries["office-b"]
    e.dynamic, e.host, e.qualify = True, None, 2000
    cb.general.registers = [Register(username="office-b", secret=secret_b, host=ADDR_A[0])]
    return ca, cb
