"""Admission of requests: call tokens, unanswered AUTHREQs and failed-authentication throttling.

A part of the endpoint (``protocol.Endpoint``) that owns this state and returns verdicts; it
sends nothing and logs nothing, the endpoint acts on what it says (docs/protocol.md §9.1 call
token and docs/protocol.md §9.2 MD5 authentication).  What a stranger can make it hold is
bounded: one token key, one counter per configured user, at most :data:`MAX_THROTTLED_SOURCES`
source addresses.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from enum import Enum

from iaxgw.gateway.conf.config import calltoken_optional
from iaxgw.gateway.conf.model import Entry, General
from iaxgw.gateway.iax2.address import Addr
from iaxgw.gateway.iax2.calltoken import CallTokens

__all__ = ["MAX_THROTTLED_SOURCES", "Admission", "TokenCheck", "TokenVerdict"]

#: How many source addresses the failed-authentication window remembers; beyond that the
#: oldest is forgotten.
MAX_THROTTLED_SOURCES = 4096


class TokenCheck(Enum):
    """What the call-token gate says about one request."""

    PASS = "pass"          # may allocate state (a valid token, or none needed)
    ISSUE = "issue"        # an empty token IE: answer CALLTOKEN with ``token``
    MISSING = "missing"    # no token IE where one is required: reject
    INVALID = "invalid"    # a token that does not check: reject, ``reason`` says why


@dataclass(frozen=True, slots=True)
class TokenVerdict:
    check: TokenCheck
    token: bytes = b""
    reason: str = ""


class Admission:
    """Call tokens, unanswered AUTHREQs per user and recent failed authentications per IP."""

    def __init__(self, general: General, token_key: bytes | None) -> None:
        self._general = general
        self.tokens = CallTokens(token_key, general.calltokenexpiration)
        #: unanswered AUTHREQs per user (``maxauthreq``)
        self.authreq: Counter[str] = Counter()
        #: times of recent failed authentications per source IP (``authfaillimit``)
        self.authfails: dict[str, deque[float]] = {}
        #: ``requirecalltoken = auto`` entries that have been seen with a token
        self._auto_validated: set[str] = set()

    # ------------------------------------------------------------------ call tokens

    def token_verdict(self, token: object, present: bool, addr: Addr, unix_now: float,
                      entry: Entry | None, name: str) -> TokenVerdict:
        """The call-token gate for a request from ``addr`` for ``entry`` (``name`` as asked):
        ``present`` whether it carried a CALLTOKEN IE, ``token`` its value."""
        if not present:
            mode = entry.requirecalltoken if entry is not None else None
            if mode in ("no", "auto") and not (mode == "auto" and name in self._auto_validated):
                return TokenVerdict(TokenCheck.PASS)
            if mode is None and calltoken_optional(self._general, addr[0]):
                return TokenVerdict(TokenCheck.PASS)
            return TokenVerdict(TokenCheck.MISSING, reason="call token required but missing")
        if not token:
            return TokenVerdict(TokenCheck.ISSUE, token=self.tokens.issue(addr, unix_now))
        raw = token.encode() if isinstance(token, str) else token
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raw = b""
        reason = self.tokens.check(bytes(raw), addr, unix_now)
        if reason is not None:
            return TokenVerdict(TokenCheck.INVALID, reason=reason)
        if entry is not None and entry.requirecalltoken == "auto":
            self._auto_validated.add(name)
        return TokenVerdict(TokenCheck.PASS)

    # ------------------------------------------------------------------ unanswered AUTHREQs

    def authreq_full(self, user: str) -> bool:
        """Whether ``user`` has ``maxauthreq`` AUTHREQs unanswered (a new one is refused)."""
        return self.authreq[user] >= self._general.maxauthreq

    def authreq_sent(self, user: str) -> None:
        self.authreq[user] += 1

    def authreq_done(self, user: str) -> None:
        """An AUTHREQ of ``user`` was answered, or its call went."""
        self.authreq[user] -= 1

    def authreq_pending(self) -> bool:
        return any(self.authreq.values())

    # ------------------------------------------------------------------ failed authentications

    def _recent(self, ip: str, now: float) -> deque[float] | None:
        """The times of failed auths from ``ip`` within ``authfailwindow`` (None: none)."""
        q = self.authfails.get(ip)
        if q is None:
            return None
        window = self._general.authfailwindow
        while q and (q[0] <= now - window or q[0] > now):
            q.popleft()
        if not q:
            del self.authfails[ip]
            return None
        return q

    def throttled(self, ip: str, now: float) -> int:
        """How many failed authentications from ``ip`` in the window, when that reached
        ``authfaillimit`` (the source is refused); 0 otherwise, and always while it is off."""
        limit = self._general.authfaillimit
        fails = self._recent(ip, now) if limit > 0 else None
        if fails is None or len(fails) < limit:
            return 0
        return len(fails)

    def note_failure(self, ip: str, now: float) -> None:
        """Count a failed authentication from ``ip`` (only while ``authfaillimit`` is on)."""
        g = self._general
        if g.authfaillimit > 0 and g.authfailwindow > 0:
            q = self._recent(ip, now)
            if q is None:
                if len(self.authfails) >= MAX_THROTTLED_SOURCES:
                    del self.authfails[next(iter(self.authfails))]
                q = self.authfails[ip] = deque(maxlen=g.authfaillimit)
            q.append(now)
