"""Per-call state of the IAX2 endpoint: call numbers, the call record, receive statistics.

Pure data and small helpers; the protocol logic that drives them lives in ``protocol.py`` (the
``Endpoint``) and its parts (``reliability``, ``calltable``, ``admission``, ``trunks``).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from iaxgw._core.constants import CallState
from iaxgw._core.media import CallMedia, RxStats
from iaxgw.gateway.iax2.address import Addr
from iaxgw.gateway.iax2.timers import Timer

__all__ = [
    "Call",
    "CallKind",
    "CallNumbers",
    "CallState",
    "ChannelInfo",
    "NetStats",
    "PeerInfo",
    "Pending",
    "RxStats",
]


#: Call number of stateless replies (CALLTOKEN, a PONG to a POKE, token REJECT/REGREJ); no call
#: owns it (docs/protocol.md P14).
STATELESS_CALLNO = 1
#: Call number pools (docs/protocol.md §1.3): 2..16383 normal, 16384..32767 trunked calls.
NORMAL_POOL = (2, 16383)
TRUNK_POOL = (16384, 32767)
#: A freed call number is held this long before reuse, and counts against its IP meanwhile.
CALLNO_HOLD_S = 60.0
#: Share of a pool that frames for unknown calls may ever hold (the rest stays allocatable).
QUARANTINE_POOL_SHARE = 8


class _FreeList:
    """The free numbers of one pool: O(1) random take, O(1) removal and return."""

    __slots__ = ("items", "lo", "pos")

    def __init__(self, lo: int, hi: int) -> None:
        self.lo = lo
        self.items = list(range(lo, hi + 1))
        self.pos = list(range(hi - lo + 1))      # index in items of lo + i, -1 when taken

    def take(self, rng: random.Random) -> int | None:
        items = self.items
        if not items:
            return None
        callno = items[rng.randrange(len(items))]
        self.remove(callno)
        return callno

    def remove(self, callno: int) -> None:
        items, pos = self.items, self.pos
        i = pos[callno - self.lo]
        last = items.pop()
        if last != callno:
            items[i] = last
            pos[last - self.lo] = i
        pos[callno - self.lo] = -1

    def add(self, callno: int) -> None:
        self.pos[callno - self.lo] = len(self.items)
        self.items.append(callno)


#: what a hold entry stands for
_HOLD_CALL, _HOLD_NONVAL, _HOLD_QUARANTINE = 0, 1, 2


class CallNumbers:
    """Random call number allocation with a 60 s hold, a per-source-IP limit and a global
    budget for calls set up without a call token (Asterisk ``maxcallnumbers_nonvalidated``).

    Each pool keeps its free numbers in a :class:`_FreeList`, so allocation costs the same
    whether the pool is empty or full."""

    __slots__ = ("_born", "_free", "_holdq", "_last_ip", "_nonval", "_per_ip", "_q_per_ip",
                 "_q_pool", "_rng", "_used", "hold", "limit", "nonval_limit")

    def __init__(self, rng: random.Random, limit: int = 2048, hold: float = CALLNO_HOLD_S,
                 nonval_limit: int = 8192) -> None:
        self._rng = rng
        self.limit = limit
        self.hold = hold
        self.nonval_limit = nonval_limit
        self._free = (_FreeList(*NORMAL_POOL), _FreeList(*TRUNK_POOL))
        self._used: dict[int, bool] = {}             # number -> set up with a valid call token
        self._holdq: deque[tuple[float, int, str, int]] = deque()
        self._per_ip: dict[str, int] = {}
        self._nonval = 0          # numbers of token-less calls, in use or held
        #: IP of the last call on each number (kept after release: what a peer really held)
        self._last_ip: dict[int, str] = {}
        self._q_per_ip: dict[str, int] = {}         # quarantined numbers per source IP
        self._q_pool = [0, 0]                       # quarantined numbers per pool (normal, trunk)
        self._born: float | None = None             # first ``now`` seen: start of the process

    def _prune(self, now: float) -> None:
        if self._born is None:
            self._born = now
        q = self._holdq
        while q and q[0][0] <= now:
            _, callno, ip, kind = q.popleft()
            trunk = callno >= TRUNK_POOL[0]
            self._free[trunk].add(callno)
            if kind == _HOLD_QUARANTINE:
                self._q_pool[trunk] -= 1
                _dec(self._q_per_ip, ip)
                continue
            if kind == _HOLD_NONVAL:
                self._nonval -= 1
            _dec(self._per_ip, ip)

    def start(self, now: float) -> None:
        """The endpoint starts at ``now`` (the restart window of :meth:`quarantine` opens)."""
        self._born = now

    def allocate(self, ip: str, now: float, trunk: bool = False,
                 validated: bool = True) -> int | None:
        """A free call number for a call with ``ip``, or None (IP over its limit, token-less
        budget spent, pool empty: :meth:`refusal` says which).  ``validated``: the request
        came with a valid call token (or we are the caller)."""
        self._prune(now)
        if self._per_ip.get(ip, 0) >= self.limit:
            return None
        if not validated and self._nonval >= self.nonval_limit:
            return None
        callno = self._free[trunk].take(self._rng)
        if callno is None:
            return None
        self._used[callno] = validated
        if not validated:
            self._nonval += 1
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        self._last_ip[callno] = ip
        return callno

    def refusal(self, ip: str, trunk: bool = False, validated: bool = True) -> str:
        """Why :meth:`allocate` just returned None for these arguments."""
        if self._per_ip.get(ip, 0) >= self.limit:
            return f"maxcallnumbers ({self.limit}) reached for {ip}"
        if not validated and self._nonval >= self.nonval_limit:
            return (f"maxcallnumbers_nonvalidated ({self.nonval_limit}) reached by calls "
                    "without a call token")
        return ("trunk" if trunk else "normal") + " call number pool exhausted"

    def release(self, callno: int, ip: str, now: float) -> None:
        """Free ``callno``; it stays held (and counted for ``ip``, and against the token-less
        budget if it was such a call) for ``hold`` seconds."""
        validated = self._used.pop(callno, None)
        if validated is None:
            return
        self._holdq.append((now + self.hold, callno, ip,
                            _HOLD_CALL if validated else _HOLD_NONVAL))

    def quarantine(self, callno: int, ip: str, now: float) -> bool:
        """Hold a free ``callno`` for ``hold`` s because a peer at ``ip`` still refers to it
        (frames for an unknown call), so that a new call does not take it; True if held.

        Only a number whose last call was with ``ip`` is held -- or any number during the
        first ``hold`` seconds of the process, when a peer's calls from before a restart
        still refer to us.  At most ``limit`` numbers per source IP (what it can really hold)
        and never more than 1/``QUARANTINE_POOL_SHARE`` of a pool: forged frames with a
        peer's address cannot take the call numbers away from real calls."""
        self._prune(now)
        if not self.is_free(callno):
            return False
        restart = self._born is not None and now < self._born + self.hold
        if not restart and self._last_ip.get(callno) != ip:
            return False
        trunk = callno >= TRUNK_POOL[0]
        lo, hi = TRUNK_POOL if trunk else NORMAL_POOL
        if (self._q_per_ip.get(ip, 0) >= self.limit
                or self._q_pool[trunk] >= (hi - lo + 1) // QUARANTINE_POOL_SHARE):
            return False
        self._q_per_ip[ip] = self._q_per_ip.get(ip, 0) + 1
        self._q_pool[trunk] += 1
        self._free[trunk].remove(callno)
        self._holdq.append((now + self.hold, callno, ip, _HOLD_QUARANTINE))
        return True

    def count(self, ip: str, now: float) -> int:
        """Numbers in use or held for ``ip``."""
        self._prune(now)
        return self._per_ip.get(ip, 0)

    def nonvalidated(self, now: float) -> int:
        """Numbers in use or held by calls set up without a call token."""
        self._prune(now)
        return self._nonval

    @property
    def in_use(self) -> int:
        return len(self._used)

    def is_free(self, callno: int) -> bool:
        """Neither in use nor held (only numbers of the two pools can be free)."""
        if not NORMAL_POOL[0] <= callno <= TRUNK_POOL[1]:
            return False
        fl = self._free[callno >= TRUNK_POOL[0]]
        return fl.pos[callno - fl.lo] >= 0


def _dec(counts: dict[str, int], ip: str) -> None:
    left = counts.get(ip, 0) - 1
    if left > 0:
        counts[ip] = left
    else:
        counts.pop(ip, None)


class CallKind(IntEnum):
    CALL_OUT = 1
    CALL_IN = 2
    POKE = 3
    REG_OUT = 4
    REG_IN = 5


class Pending:
    """One reliable full frame we sent and keep until acked (docs/protocol.md §7.6)."""

    __slots__ = ("dcallno", "final", "frametype", "interval", "oseqno", "payload", "sends",
                 "subclass", "timer", "ts")

    def __init__(self, oseqno: int, ts: int, frametype: int, subclass: int, payload: bytes,
                 final: bool, interval: float) -> None:
        self.oseqno = oseqno
        self.ts = ts
        self.frametype = frametype
        self.subclass = subclass
        self.payload = payload
        self.final = final
        self.sends = 1
        self.dcallno = 0
        self.interval = interval
        self.timer: Timer | None = None


class Call(CallMedia):
    """Everything the endpoint keeps for one of its call numbers (the media fields, read by the
    compiled trunk receive path, are in :class:`~iaxgw._core.media.CallMedia`)."""

    __slots__ = (
        "acked_to",
        "announced",
        "auth_pending",
        "capability",
        "challenge",
        "context",
        "ended",
        "entry",
        "exten",
        "fake_auth",
        "first_msg",
        "iseqno",
        "kind",
        "lag_ms",
        "last_msg",
        "new_ies",
        "oseqno",
        "peer",
        "peer_callno",
        "pingtime",
        "poke_sent",
        "reg",
        "remote_rr",
        "remote_rr_ts",
        "rtt_ms",
        "rx_full_frames",
        "timers",
        "tx_full",
        "unacked",
        "username",
        "vnak_at",
    )

    def __init__(self, callno: int, kind: CallKind, state: CallState, addr: Addr,
                 now: float) -> None:
        super().__init__()
        self.callno = callno
        self.kind = kind
        self.state = state
        self.addr = addr
        self.peer_callno = 0
        self.start = now
        self.oseqno = 0
        self.iseqno = 0
        self.acked_to = 0             # lowest OSeqno of ours not yet acked (Asterisk rseqno)
        self.lastsent = 0
        self.nextpred = 0
        self.unacked: dict[int, Pending] = {}
        self.peer = ""
        self.username = ""
        self.entry: Any = None
        self.exten = ""
        self.context = ""
        self.codec = 0
        self.capability = 0
        self.format_rx = 0            # format of the last full voice frame received
        self.svoiceformat = 0         # format of the last full voice frame sent
        self.vnak_at = -1e18          # last VNAK for media before the first full voice frame
        self.last_full_voice_ts = 0
        self.last_voice_ts = -1
        self.trunk = False
        self.rx_last = 0              # highest ts received (not ACK/PONG/LAGRP)
        self.rx = RxStats()
        self.tx_frames = 0
        self.tx_full = 0
        self.rx_full_frames = 0
        self.pingtime = 1000
        self.rtt_ms = -1
        self.lag_ms = -1
        self.remote_rr: dict[str, int] = {}
        #: the timestamp of the PING (ours) whose PONG brought ``remote_rr``
        self.remote_rr_ts = -1
        self.challenge = ""
        #: why an AUTHREQ we sent is a fake whose answer is refused unread (unknown user,
        #: ACL); empty for a real one
        self.fake_auth = ""
        self.auth_pending = False
        self.new_ies: list[tuple[int, object]] = []
        self.ended = False
        self.announced = False     # the application knows this call (events due)
        self.timers: list[Timer] = []
        self.poke_sent = 0.0
        self.reg: Any = None
        #: the first and the latest IAX subclass sent (| MSG_TX) or received in sequence, as
        #: Asterisk's first_iax_message / last_iax_message (``show channels`` FirstMsg/LastMsg)
        self.first_msg = 0
        self.last_msg = 0

    def mark_msg(self, code: int) -> None:
        """Note an IAX frame sent (``subclass | MSG_TX``) or received (``subclass``)."""
        self.last_msg = code
        if not self.first_msg:
            self.first_msg = code


#: marks a sent subclass in Call.first_msg / last_msg (Asterisk: MARK_IAX_SUBCLASS_TX)
MSG_TX = 0x10000

#: how Asterisk's ``iax2 show channels`` names an IAX subclass (7 columns, its spellings)
_MSG_NAMES = {1: "NEW", 2: "PING", 3: "PONG", 4: "ACK", 5: "HANGUP", 6: "REJECT", 7: "ACCEPT",
              8: "AUTHREQ", 9: "AUTHREP", 10: "INVAL", 11: "LAGRQ", 12: "LAGRP", 13: "REGREQ",
              14: "REGAUTH", 15: "REGACK", 16: "REGREJ", 17: "REGREL", 18: "VNAK", 19: "DPREQ",
              20: "DPREP", 21: "DIAL", 22: "TXREQ", 23: "TXCNT", 24: "TXACC", 25: "TXREADY",
              26: "TXREL", 27: "TXREJ", 28: "QUELCH", 29: "UNQUELCH", 30: "POKE", 31: "PAGE",
              32: "MWI", 33: "UNSPRTD", 34: "TRANSFR", 35: "PROVISN", 36: "FWDWNLD",
              37: "FWDATA", 38: "TXMEDIA", 39: "RTKEY", 40: "CTOKEN"}


def msg_text(code: int) -> str:
    """``"Tx:NEW    "`` / ``"Rx:ACK    "``: direction and the subclass name padded to 7."""
    name = _MSG_NAMES.get(code & ~MSG_TX, "Unknown")
    return ("Tx:" if code & MSG_TX else "Rx:") + f"{name:<7}"


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """One row of ``iaxgw show peers``."""

    name: str
    addr: Addr | None
    status: str          # "OK (12 ms)", "LAGGED (2300 ms)", "UNREACHABLE", "UNKNOWN", "Unmonitored"
    trunk: bool
    rtt_ms: int
    dynamic: bool = False


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """One row of ``iaxgw show channels``."""

    peer: str
    addr: Addr
    local_callno: int
    remote_callno: int
    oseqno: int
    iseqno: int
    format: int
    state: str
    direction: str
    jitter_ms: float
    lost: int
    loss_pct: int
    frames_rx: int
    frames_tx: int
    trunk: bool
    username: str = ""
    first_msg: str = ""
    last_msg: str = ""


@dataclass(frozen=True, slots=True)
class NetStats:
    """One row of ``iaxgw show netstats``: local receive stats and the peer's RR report."""

    peer: str
    local_callno: int
    rtt_ms: int
    local: dict[str, int] = field(default_factory=dict)
    remote: dict[str, int] = field(default_factory=dict)
    first_msg: str = ""
    last_msg: str = ""
