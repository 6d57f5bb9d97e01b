"""A seedable bad network between the datagram driver and its UDP transport (``--impair``).

``iaxgw serve``, ``iaxgw loadtest`` and ``iaxgw lab`` take ``--impair SPEC``::

    loss=5%,burst=3,delay=40ms,jitter=20ms,reorder=1%,dup=1%[,gap=50ms][,dist=uniform|normal]
    [,seed=N][,dir=send|recv|both]

Per datagram and per impaired direction, in this order:

* **loss**: dropped.  Without ``burst`` every datagram is dropped independently (Bernoulli, mean
  burst length ``1/(1-loss)``).  With ``burst=B`` losses follow a two-state Gilbert-Elliott chain
  (Good: deliver, Bad: drop) with ``P(Bad->Good) = r = 1/B`` and ``P(Good->Bad) = p =
  loss*r/(1-loss)``: the mean burst length is ``B`` and the stationary loss ``p/(p+r) = loss``.
* **dup**: a surviving datagram is delivered twice (each copy with its own delay).
* **delay/jitter**: each copy waits ``delay + J`` with J uniform on ``[-jitter, +jitter]`` (netem's
  "delay 40ms 20ms") or, with ``dist=normal``, normal with sigma = ``jitter``; the sum is clamped
  at 0.  Jitter larger than half the spacing of a flow's datagrams reorders them, as netem does.
* **reorder**: a fraction of copies is held back ``gap`` more (default 50 ms, more than a
  20 ms frame interval), so it arrives after datagrams sent later.

``dir`` (default ``both``): which way is impaired.  ``both`` models a WAN link: every direction sees
the whole spec, each with its own loss chain (a round trip then loses ``1-(1-loss)^2``).
``send``/``recv`` impair only what this process sends/receives.  ``seed`` makes a run repeatable
(default: a random seed, reported in the counters).

Expected RFC 3550 interarrival jitter (``J += (|D|-J)/16`` converges to ``E|D|``, D = difference of
the transit times of consecutive packets): for i.i.d. delays ``X``, ``E|X1-X2|`` is ``2*jitter/3``
(0.667 x) for the uniform +-jitter model and ``2*sigma/sqrt(pi)`` (1.128 x) for the normal one,
exactly when packets are not reordered by the jitter (spacing >= 2 x jitter, uniform);
:func:`expected_rfc3550_jitter` computes it for any spacing by simulating this same model.

Voice frame census (:class:`VoiceCensus`, the ``voice`` key of each direction's counters): the
datagram counters count datagrams, and a trunk datagram carries one voice frame of many calls,
among signalling datagrams that carry none, so the share of datagrams dropped is not the share
of voice frames dropped.  Every datagram offered is also read for its voice frames (the entries
of a trunk datagram with or without per-entry timestamps, a voice mini frame, a full voice frame
that is not a retransmission) and those are counted per direction and per call (source address
and the sender's call number: ours on ``send``, the peer's on ``recv``) as offered, dropped and
delivered copies.  That is the figure to hold a measured loss against.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from iaxgw.gateway.iax2.address import Addr

__all__ = [
    "Direction",
    "ImpairError",
    "ImpairSpec",
    "ImpairedLink",
    "Impairment",
    "VoiceCensus",
    "expected_rfc3550_jitter",
]

Direction = Literal["send", "recv"]

DEFAULT_GAP = 0.050


class ImpairError(ValueError):
    """A bad ``--impair`` spec (the CLI turns it into a usage error)."""


_KEYS = ("loss", "burst", "delay", "jitter", "reorder", "dup", "gap", "dist", "seed", "dir")


def _pct(key: str, text: str) -> float:
    t = text.strip()
    try:
        v = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise ImpairError(f"{key}={text!r}: expected a percentage like 5% (or a fraction 0.05)"
                          ) from None
    if not t.endswith("%") and v > 1.0:
        raise ImpairError(f"{key}={text!r}: a fraction must be <= 1; write {t}% for percent")
    if not 0.0 <= v <= 1.0 or math.isnan(v):
        raise ImpairError(f"{key}={text!r}: must be between 0% and 100%")
    return v


_TIME = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|us)?\s*$")


def _secs(key: str, text: str) -> float:
    m = _TIME.match(text)
    if not m:
        raise ImpairError(f"{key}={text!r}: expected a duration like 40ms, 0.04s or 40 (ms)")
    v = float(m.group(1))
    unit = m.group(2) or "ms"
    s = v / 1000.0 if unit == "ms" else v / 1e6 if unit == "us" else v
    if s > 10.0:
        raise ImpairError(f"{key}={text!r}: at most 10 s")
    return s


@dataclass(frozen=True, slots=True)
class ImpairSpec:
    """What ``--impair`` asked for (fractions and seconds)."""

    loss: float = 0.0
    burst: float | None = None       # mean loss-burst length; None: independent losses
    delay: float = 0.0
    jitter: float = 0.0
    reorder: float = 0.0
    dup: float = 0.0
    gap: float = DEFAULT_GAP         # extra delay of a reordered datagram
    dist: Literal["uniform", "normal"] = "uniform"
    seed: int | None = None
    dir: Literal["send", "recv", "both"] = "both"

    @classmethod
    def parse(cls, text: str) -> ImpairSpec:
        """``"loss=5%,burst=3,delay=40ms,..."`` -> spec; :class:`ImpairError` says what is wrong."""
        if text is None or not text.strip():
            raise ImpairError("empty spec: expected e.g. loss=5%,jitter=20ms")
        kw: dict[str, Any] = {}
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            key, eq, val = part.partition("=")
            key = key.strip().lower()
            if not eq or not val.strip():
                raise ImpairError(f"{part!r}: expected KEY=VALUE (keys: {', '.join(_KEYS)})")
            if key not in _KEYS:
                raise ImpairError(f"unknown key {key!r} (keys: {', '.join(_KEYS)})")
            if key in kw:
                raise ImpairError(f"{key!r} given twice")
            val = val.strip()
            if key in ("loss", "reorder", "dup"):
                kw[key] = _pct(key, val)
            elif key in ("delay", "jitter", "gap"):
                kw[key] = _secs(key, val)
            elif key == "burst":
                try:
                    b = float(val)
                except ValueError:
                    raise ImpairError(f"burst={val!r}: expected a mean burst length >= 1 "
                                      "(datagrams)") from None
                if not 1.0 <= b <= 1000.0:
                    raise ImpairError(f"burst={val!r}: mean burst length must be in 1..1000")
                kw[key] = b
            elif key == "seed":
                try:
                    kw[key] = int(val, 0)
                except ValueError:
                    raise ImpairError(f"seed={val!r}: expected an integer") from None
            elif key == "dir":
                v = val.lower()
                if v not in ("send", "recv", "both"):
                    raise ImpairError(f"dir={val!r}: expected send, recv or both")
                kw[key] = v
            else:  # dist
                v = val.lower()
                if v not in ("uniform", "normal"):
                    raise ImpairError(f"dist={val!r}: expected uniform or normal")
                kw[key] = v
        spec = cls(**kw)
        spec.check()
        return spec

    def check(self) -> None:
        if self.loss >= 1.0:
            raise ImpairError("loss=100% drops everything: use less than 100%")
        if self.burst is not None and self.loss > 0:
            p = self.loss / (self.burst * (1.0 - self.loss))
            if p > 1.0:
                raise ImpairError(f"loss={self.loss:.0%} with burst={self.burst:g} is impossible "
                                  f"(needs loss <= burst/(burst+1))")

    def directions(self) -> tuple[Direction, ...]:
        return ("send", "recv") if self.dir == "both" else (self.dir,)

    def __str__(self) -> str:
        parts = []
        if self.loss:
            parts.append(f"loss={self.loss * 100:g}%")
        if self.burst is not None:
            parts.append(f"burst={self.burst:g}")
        if self.delay:
            parts.append(f"delay={self.delay * 1000:g}ms")
        if self.jitter:
            parts.append(f"jitter={self.jitter * 1000:g}ms")
        if self.reorder:
            parts.append(f"reorder={self.reorder * 100:g}%")
        if self.dup:
            parts.append(f"dup={self.dup * 100:g}%")
        if self.gap != DEFAULT_GAP:
            parts.append(f"gap={self.gap * 1000:g}ms")
        if self.dist != "uniform":
            parts.append(f"dist={self.dist}")
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        parts.append(f"dir={self.dir}")
        return ",".join(parts)


@dataclass(slots=True)
class Counters:
    """What the impairment did to one direction."""

    seen: int = 0            # datagrams offered
    dropped: int = 0
    bursts: int = 0          # runs of consecutive drops
    duplicated: int = 0
    reordered: int = 0       # copies held back by ``gap``
    delivered: int = 0       # copies handed on (includes duplicates)
    delay_sum: float = 0.0   # s, over delivered copies
    delay_sq: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        n = self.seen
        d = self.delivered
        mean = self.delay_sum / d if d else 0.0
        var = max(0.0, self.delay_sq / d - mean * mean) if d else 0.0
        return {"seen": n, "dropped": self.dropped, "loss_bursts": self.bursts,
                "duplicated": self.duplicated, "reordered": self.reordered, "delivered": d,
                "loss_pct": round(100.0 * self.dropped / n, 3) if n else None,
                "mean_burst": round(self.dropped / self.bursts, 3) if self.bursts else None,
                "dup_pct": round(100.0 * self.duplicated / n, 3) if n else None,
                "reorder_pct": round(100.0 * self.reordered / n, 3) if n else None,
                "delay_mean_ms": round(mean * 1000.0, 3),
                "delay_std_ms": round(math.sqrt(var) * 1000.0, 3)}


def voice_callnos(data: bytes) -> list[int]:
    """The sender's call number of each voice frame in one datagram (empty: none, or not IAX):
    the entries of a meta trunk frame (with or without per-entry timestamps), a voice mini
    frame, a full voice frame that is not a retransmission.  A truncated trunk entry ends the
    list."""
    n = len(data)
    if n < 4:
        return []
    b0, b1 = data[0], data[1]
    if b0 & 0x80:
        # full frame: voice (type 2), the first transmission only (R bit of dcallno clear)
        if n >= 12 and data[10] == 2 and not data[2] & 0x80:
            return [(b0 & 0x7F) << 8 | b1]
        return []
    if b0 or b1:
        return [b0 << 8 | b1]                    # voice mini frame
    if data[2] != 1 or n < 8:                     # video mini or other meta: no voice
        return []
    out: list[int] = []
    pos = 8
    if data[3] & 1:                               # entries: len, callno, ts16, payload
        while pos + 6 <= n:
            length = data[pos] << 8 | data[pos + 1]
            if pos + 6 + length > n:
                break
            out.append((data[pos + 2] & 0x7F) << 8 | data[pos + 3])
            pos += 6 + length
    else:                                         # entries: callno, len, payload
        while pos + 4 <= n:
            length = data[pos + 2] << 8 | data[pos + 3]
            if pos + 4 + length > n:
                break
            out.append((data[pos] & 0x7F) << 8 | data[pos + 1])
            pos += 4 + length
    return out


class VoiceCensus:
    """Voice frames the impairment was offered, per direction and per call (module doc).

    ``calls[(direction, addr, callno)]`` = ``[offered, dropped, delivered copies]``; a call
    number used again by a later call adds to the same row.  ``drops`` keeps, per row, the
    offered positions (0-based) of the dropped frames, so a receive report that covers only the
    first frames of a call can be held to the same frames (:meth:`call_prefix`)."""

    __slots__ = ("calls", "drops", "totals")

    def __init__(self) -> None:
        self.calls: dict[tuple[str, Addr, int], list[int]] = {}
        self.drops: dict[tuple[str, Addr, int], list[int]] = {}
        self.totals: dict[str, list[int]] = {"send": [0, 0, 0], "recv": [0, 0, 0]}

    def count(self, direction: str, data: bytes, addr: Addr, copies: int) -> None:
        """One datagram offered in ``direction`` and delivered ``copies`` times (0: dropped)."""
        callnos = voice_callnos(data)
        if not callnos:
            return
        calls = self.calls
        for callno in callnos:
            key = (direction, addr, callno)
            row = calls.get(key)
            if row is None:
                row = calls[key] = [0, 0, 0]
            if copies:
                row[2] += copies
            else:
                row[1] += 1
                self.drops.setdefault(key, []).append(row[0])
            row[0] += 1
        t = self.totals[direction]
        k = len(callnos)
        t[0] += k
        if copies:
            t[2] += k * copies
        else:
            t[1] += k

    def call(self, direction: str, addr: Addr, callno: int) -> tuple[int, int, int]:
        """``(offered, dropped, delivered copies)`` of one call's voice frames one way."""
        row = self.calls.get((direction, addr, callno))
        return (row[0], row[1], row[2]) if row is not None else (0, 0, 0)

    def call_prefix(self, direction: str, addr: Addr, callno: int, n: int) -> tuple[int, int]:
        """``(offered, dropped)`` among the first ``n`` voice frames one call offered one way."""
        offered = min(n, self.call(direction, addr, callno)[0])
        dropped = sum(1 for i in self.drops.get((direction, addr, callno), ()) if i < offered)
        return offered, dropped

    def far_end_echo_pct(self) -> float | None:
        """For a far end that echoes (a load test against an echo extension): of the voice
        frames delivered to it (every copy), the share it sent back, counted as it left the far
        end, before the receive impairment.  It tells the far end's own losses apart from the
        link's.  A perfect echo gives about 100 %: a little under for the frames delivered after
        it hung up, a little over for frames it sends of its own (the lab's Asterisk: 99.96 to
        100.18 %).  None when nothing was delivered."""
        delivered = self.totals["send"][2]
        if not delivered:
            return None
        return round(100.0 * self.totals["recv"][0] / delivered, 3)

    def as_dict(self, direction: str) -> dict[str, Any]:
        seen, dropped, delivered = self.totals[direction]
        return {"frames": seen, "dropped": dropped, "delivered": delivered,
                "loss_pct": round(100.0 * dropped / seen, 3) if seen else None}


@dataclass(slots=True)
class _Chain:
    bad: bool = False
    last_dropped: bool = False
    counters: Counters = field(default_factory=Counters)


class Impairment:
    """Decides per datagram: drop, or the delays (s) of each delivered copy.  No I/O."""

    def __init__(self, spec: ImpairSpec, rng: random.Random | None = None) -> None:
        self.spec = spec
        self.seed = spec.seed if spec.seed is not None else random.SystemRandom().randrange(2**31)
        self.rng = rng if rng is not None else random.Random(self.seed)
        self._dirs = spec.directions()
        self._chains: dict[str, _Chain] = {d: _Chain() for d in ("send", "recv")}
        self.census = VoiceCensus()
        b = spec.burst
        if b is not None and spec.loss > 0:
            self._r = 1.0 / b
            self._p = spec.loss * self._r / (1.0 - spec.loss)
        else:
            self._r = self._p = 0.0

    def applies(self, direction: Direction) -> bool:
        return direction in self._dirs

    def counters(self, direction: Direction) -> Counters:
        return self._chains[direction].counters

    def _lost(self, chain: _Chain) -> bool:
        spec = self.spec
        if spec.loss <= 0.0:
            return False
        u = self.rng.random()
        if spec.burst is None:
            return u < spec.loss
        if chain.bad:
            if u < self._r:
                chain.bad = False
        elif u < self._p:
            chain.bad = True
        return chain.bad

    def _delay(self) -> float:
        spec = self.spec
        d = spec.delay
        if spec.jitter:
            if spec.dist == "normal":
                d += self.rng.gauss(0.0, spec.jitter)
            else:
                d += (2.0 * self.rng.random() - 1.0) * spec.jitter
            if d < 0.0:
                d = 0.0
        return d

    def decide(self, direction: Direction) -> list[float]:
        """Delays (s) of the copies to deliver: ``[]`` = dropped, two entries = duplicated."""
        chain = self._chains[direction]
        c = chain.counters
        c.seen += 1
        if direction not in self._dirs:
            c.delivered += 1
            return [0.0]
        if self._lost(chain):
            c.dropped += 1
            if not chain.last_dropped:
                c.bursts += 1
            chain.last_dropped = True
            return []
        chain.last_dropped = False
        spec = self.spec
        rng = self.rng
        copies = 1
        if spec.dup and rng.random() < spec.dup:
            copies = 2
            c.duplicated += 1
        out = []
        for _ in range(copies):
            d = self._delay()
            if spec.reorder and rng.random() < spec.reorder:
                d += spec.gap
                c.reordered += 1
            c.delay_sum += d
            c.delay_sq += d * d
            out.append(d)
        c.delivered += copies
        return out

    def snapshot(self) -> dict[str, Any]:
        """The spec and what was injected, per impaired direction (JSON-able)."""
        out: dict[str, Any] = {"spec": str(self.spec), "seed": self.seed,
                               "expected_rfc3550_jitter_factor": round(
                                   _factor(self.spec.dist), 4)}
        for d in self._dirs:
            out[d] = self._chains[d].counters.as_dict()
            out[d]["voice"] = self.census.as_dict(d)
        return out


def _factor(dist: str) -> float:
    return 2.0 / 3.0 if dist == "uniform" else 2.0 / math.sqrt(math.pi)


class ImpairedLink:
    """Applies an :class:`Impairment` on an event loop: immediate or ``loop.call_at`` delivery.

    ``pass_on(direction, data, addr, deliver)`` calls ``deliver(data, addr)`` zero, one or two
    times, now or later.  ``close()`` cancels every datagram still in flight (none leaks a timer).
    """

    def __init__(self, impairment: Impairment, loop: asyncio.AbstractEventLoop) -> None:
        self.impairment = impairment
        self.loop = loop
        self._pending: dict[int, asyncio.TimerHandle] = {}
        self._ids = itertools.count()
        self.closed = False

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def pass_on(self, direction: Direction, data: bytes, addr: Addr,
                deliver: Callable[[bytes, Addr], None]) -> None:
        if self.closed:
            return
        imp = self.impairment
        delays = imp.decide(direction)
        imp.census.count(direction, data, addr, len(delays))
        if not delays:
            return
        now = self.loop.time()
        for d in delays:
            if d <= 0.0:
                deliver(data, addr)
            else:
                key = next(self._ids)
                self._pending[key] = self.loop.call_at(now + d, self._fire, key, data, addr,
                                                       deliver)

    def _fire(self, key: int, data: bytes, addr: Addr,
              deliver: Callable[[bytes, Addr], None]) -> None:
        self._pending.pop(key, None)
        deliver(data, addr)

    def close(self) -> None:
        self.closed = True
        for h in self._pending.values():
            h.cancel()
        self._pending.clear()


def expected_rfc3550_jitter(spec: ImpairSpec, spacing: float, *, n: int = 20000,
                            seed: int = 12345, arrival_order_ts: bool = False) -> float:
    """RFC 3550 jitter (ms) a receiver should measure on one flow of datagrams sent every
    ``spacing`` s through ``spec`` (delay, jitter, reorder; loss and dup ignored), by simulating
    the same model.  ``arrival_order_ts``: the receiver numbers frames in arrival order (trunk
    frames without timestamps) instead of using their send timestamps."""
    imp = Impairment(ImpairSpec(delay=spec.delay, jitter=spec.jitter, reorder=spec.reorder,
                                gap=spec.gap, dist=spec.dist, seed=seed, dir="recv"))
    arrivals = []
    for i in range(n):
        d = imp.decide("recv")[0]
        arrivals.append((i * spacing + d, i * spacing))
    arrivals.sort()
    j = total = 0.0
    prev = None
    for k, (a, ts) in enumerate(arrivals):
        t = a - (k * spacing if arrival_order_ts else ts)
        if prev is not None:
            j += (abs(t - prev) - j) / 16.0
            total += j
        prev = t
    return 1000.0 * total / max(1, n - 1)      # the mean of J over the flow, as jitter_mean
