"""The callee / request path of the endpoint: requests that arrive with dcallno 0
(docs/protocol.md §9): the call-token gate, NEW with user lookup, ACL, throttling of failed
authentications, AUTHREQ / AUTHREP, codec negotiation, ACCEPT or (delayed) REJECT.

REGREQ / REGREL go on to :mod:`iaxgw.gateway.registration`.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from iaxgw._core.constants import CAUSES, FRAME_IAX, IE, IAXSubclass
from iaxgw._core.ies import IEs, build_ies, capability_from, format_from
from iaxgw.gateway import registration
from iaxgw.gateway.address import Addr
from iaxgw.gateway.calls import STATELESS_CALLNO, Call, CallKind, CallState
from iaxgw.gateway.calltoken import md5_result
from iaxgw.gateway.config import acl_allows, calltoken_optional
from iaxgw.gateway.crypto import CallCrypto, merge_encryption
from iaxgw.gateway.events import AuthFailed, IncomingCall
from iaxgw.gateway.model import Entry
from iaxgw.gateway.registration import ie_int, ie_str
from iaxgw.gateway.reliability import EndpointCore
from iaxgw.gateway.rsakeys import KeyProblem, verify_challenge

if TYPE_CHECKING:
    from iaxgw.gateway.protocol import Endpoint

__all__ = ["THROTTLED_TEXT", "CalleeMixin"]

#: The cause text of the REJECT 50 a throttled source gets (``authfaillimit``): it says why, so
#: the caller does not look for a wrong secret or ACL
THROTTLED_TEXT = "No authority found: throttled after repeated failed authentications"

log = logging.getLogger("iaxgw.protocol")


class CalleeMixin(EndpointCore):
    """Incoming requests: NEW (and REGREQ / REGREL handed to ``registration``)."""

    #: after a request (a NEW with or without call token, a REGREQ) arrives, the driver reads
    #: and sends at once for this long (s): a burst of call setups is answered datagram by
    #: datagram, as Asterisk does, so the AUTHREPs to earlier AUTHREQs are read before NEWs
    #: that arrive after them -- with batched reads they would wait in the socket while later
    #: NEWs are counted against ``maxauthreq``
    SETUP_PROMPT_S = 1.0
    _setup_until = -1.0

    def setup_pending(self, now: float) -> bool:
        """Whether a call setup (or another request) is in progress: an AUTHREQ unanswered,
        or a request within the last :data:`SETUP_PROMPT_S` seconds.  A batching driver then
        reads each datagram as it comes and sends what it produced at once."""
        return now < self._setup_until or any(self._authreq.values())

    def _token_gate(self, f: Any, ies: IEs, addr: Addr, now: float, entry: Entry | None,
                    name: str, reject_sub: int) -> bool:
        """docs/protocol.md §9.1 call token: True when the request may allocate state."""
        token = ies.get(IE.CALLTOKEN, None)
        if token is None and IE.CALLTOKEN not in ies:
            mode = entry.requirecalltoken if entry is not None else None
            if mode in ("no", "auto") and not (mode == "auto" and name in self._auto_validated):
                return True
            if mode is None and calltoken_optional(self.config.general, addr[0]):
                return True
            self._stats["calltoken_missing_rejected"] += 1
            self._events.append(AuthFailed(addr, name, "call token required but missing"))
            self._send_stateless(STATELESS_CALLNO, f, addr, reject_sub)
            return False
        if not token:
            self._stats["calltoken_issued"] += 1
            tok = self._tokens.issue(addr, now + self.wall_offset)
            self._send_stateless(STATELESS_CALLNO, f, addr, IAXSubclass.CALLTOKEN,
                                 build_ies([(IE.CALLTOKEN, tok)]))
            return False
        raw = token.encode() if isinstance(token, str) else token
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raw = b""
        reason = self._tokens.check(bytes(raw), addr, now + self.wall_offset)
        if reason is not None:
            self._stats["calltoken_rejected"] += 1
            self._events.append(AuthFailed(addr, name, reason))
            log.info("%s: %s from %s: %s", self.role_name, IAXSubclass(f.csub).name, addr, reason)
            self._send_stateless(STATELESS_CALLNO, f, addr, reject_sub)
            return False
        self._stats["calltoken_accepted"] += 1
        if entry is not None and entry.requirecalltoken == "auto":
            self._auto_validated.add(name)
        return True

    def _on_request(self, f: Any, addr: Addr, now: float) -> None:
        self._setup_until = now + self.SETUP_PROMPT_S
        self._rx_prompt = True
        self._rx_prompt_until = now + self.RX_PROMPT_REFRESH
        ies = self._parse_ies(f, addr, now)
        if ies is None:
            return
        sub = f.csub
        if sub == IAXSubclass.NEW:
            self._on_new(f, ies, addr, now)
        elif sub in (IAXSubclass.REGREQ, IAXSubclass.REGREL):
            registration.on_regreq_new(cast("Endpoint", self), f, ies, addr, now)
        else:
            self._stats["drop_unsupported_request"] += 1

    def _guess_user(self, addr: Addr) -> Entry | None:
        """No USERNAME: a user without secret whose ACL admits the source (Asterisk scoring)."""
        for e in self.config.entries.values():
            if e.is_user and not e.secrets and acl_allows(e.acl, addr[0]):
                return e
        return None

    def _incoming_trunk(self, addr: Addr) -> bool:
        """docs/protocol.md §3.4: trunk iff a trunk=yes peer's host AND port equal the source."""
        for st in self._peers.values():
            if st.addr() == addr:
                return st.entry.trunk
        return False

    def _on_new(self, f: Any, ies: IEs, addr: Addr, now: float) -> None:
        username = ie_str(ies, IE.USERNAME)
        entry = self.config.user(username) if username else self._guess_user(addr)
        name = username or (entry.name if entry is not None else "guest")
        if not self._token_gate(f, ies, addr, now, entry, name, IAXSubclass.REJECT):
            return
        trunk = self._incoming_trunk(addr)
        validated = bool(ies.get(IE.CALLTOKEN))     # past the gate: a valid token, or none
        callno = self._callnos.allocate(addr[0], now, trunk, validated)
        if callno is None:
            why = self._callnos.refusal(addr[0], trunk, validated)
            self._warn("reject_callno_limit", f"no call number for {addr}: {why}", now)
            self._send_stateless(STATELESS_CALLNO, f, addr, IAXSubclass.REJECT)
            return
        call = self._new_call(callno, CallKind.CALL_IN, CallState.WAIT_AUTHREP, addr, now)
        call.mark_msg(IAXSubclass.NEW)            # Asterisk's first_iax_message: Rx:NEW
        self._bind_remote(call, f.scallno)
        call.iseqno = (f.oseqno + 1) & 0xFF
        call.rx_last = f.ts
        call.trunk = trunk
        call.username = username or ""
        call.exten = ie_str(ies, IE.CALLED_NUMBER) or "s"
        call.new_ies = list(ies)
        self._start_pending_timers(call, now)
        self._stats["calls_in"] += 1
        self._stats["calls_total"] += 1
        if self._auth_throttled(addr, f"NEW from {addr} (user {username!r})", name, now):
            self._reject_call(call, 50, THROTTLED_TEXT, now, delay=True)
            return
        version = ie_int(ies, IE.VERSION)
        if version is not None and version > 2:
            self._reject_call(call, 111, "Protocol version not supported", now)
            return
        if entry is None or not acl_allows(entry.acl, addr[0]):
            self._fake_authreq(call, entry, username or "", now)
            return
        call.entry = entry
        call.peer = entry.name
        if entry.forceencryption and not entry.secrets:
            self._auth_fail(call, f"[{entry.name}] has no secret while forceencryption = yes "
                            "(no key to encrypt with)", now)
            return
        if entry.secrets or entry.inkeys:
            if self._authreq[entry.name] >= self.config.general.maxauthreq:
                self._events.append(AuthFailed(addr, name, "too many unanswered AUTHREQs"))
                self._reject_call(call, 21, "Unauthenticated call limit reached", now)
                return
            methods = ((2 if "md5" in entry.auth else 0) | (1 if "plaintext" in entry.auth else 0)
                       | (4 if "rsa" in entry.auth and entry.inkeys else 0)) or 2
            self._authreq[entry.name] += 1
            call.auth_pending = True
            offered = ie_int(ies, IE.ENCRYPTION) or 0
            enc, rotate = merge_encryption(entry.encryption, offered if methods & 6 else 0)
            self._send_authreq(call, methods, entry.name, now, enc)
            if enc:
                # from now on the caller's frames come encrypted with MD5(challenge, secret)
                self._crypt[call.callno] = CallCrypto(
                    methods=enc, rotate=rotate, challenge=call.challenge,
                    candidates=list(entry.secrets))
            return
        self._accept_incoming(call, now)

    def _fake_authreq(self, call: Call, entry: Entry | None, username: str,
                      now: float) -> None:
        """An unknown user, or a known one the ACL does not admit from this source: the same
        AUTHREQ (md5, a challenge, the name asked for), then REJECT 50 whatever comes back.
        Asterisk's user search skips users whose ACL denies the source, so to the caller the
        two look alike and neither tells which names exist."""
        call.fake_auth = (f"unknown user {username!r}" if entry is None else
                          f"{call.addr[0]} denied by the ACL of [{entry.name}]")
        call.peer = username
        self._send_authreq(call, 2, username, now)

    def _start_pending_timers(self, call: Call, now: float) -> None:
        """A call made by a request (NEW, REGREQ) runs its PING and LAGRQ timers from the
        start, as Asterisk runs them on every call it creates: a caller that goes silent after
        our AUTHREQ or REGAUTH (even one it acknowledged) leaves the LAGRQ unacknowledged, and
        the call goes after its retransmissions (about 42 s), its ``maxauthreq`` slot and
        call number with it."""
        self._start_call_timers(call, now)

    def _send_authreq(self, call: Call, methods: int, username: str, now: float,
                      encryption: int = 0) -> None:
        call.challenge = str(self._rng.randint(0, 999999999))
        items: list[tuple[int, object]] = [(IE.AUTHMETHODS, methods)]
        if methods & 6:             # md5 or rsa
            items.append((IE.CHALLENGE, call.challenge))
        if encryption:
            items.append((IE.ENCRYPTION, encryption))
        items.append((IE.USERNAME, username))
        self._send(call, FRAME_IAX, IAXSubclass.AUTHREQ, build_ies(items), now)

    def _recent_authfails(self, ip: str, now: float) -> deque[float] | None:
        """The times of failed auths from ``ip`` within ``authfailwindow`` (None: none/off)."""
        q = self._authfails.get(ip)
        if q is None:
            return None
        window = self.config.general.authfailwindow
        while q and (q[0] <= now - window or q[0] > now):
            q.popleft()
        if not q:
            del self._authfails[ip]
            return None
        return q

    def _auth_throttled(self, addr: Addr, what: str, name: str, now: float) -> bool:
        """Whether the failed authentications (calls and registrations) from ``addr``'s IP in
        the window reached ``authfaillimit`` (never while it is off); if so the refusal of
        ``what`` is logged and reported."""
        g = self.config.general
        fails = self._recent_authfails(addr[0], now) if g.authfaillimit > 0 else None
        if fails is None or len(fails) < g.authfaillimit:
            return False
        self._warn("reject_auth_throttled", f"{what} refused: {len(fails)} failed "
                   f"authentications from {addr[0]} in {g.authfailwindow} s", now)
        self._events.append(AuthFailed(addr, name, "too many failed authentications"))
        return True

    def _note_authfail(self, ip: str, now: float) -> None:
        """Count a failed authentication from ``ip`` (only while ``authfaillimit`` is on)."""
        self._stats["auth_failures"] += 1
        g = self.config.general
        if g.authfaillimit > 0 and g.authfailwindow > 0:
            q = self._recent_authfails(ip, now)
            if q is None:
                if len(self._authfails) >= 4096:     # bounded: forget the oldest source
                    del self._authfails[next(iter(self._authfails))]
                q = self._authfails[ip] = deque(maxlen=g.authfaillimit)
            q.append(now)

    def _auth_fail(self, call: Call, reason: str, now: float) -> None:
        self._note_authfail(call.addr[0], now)
        log.info("%s: call from %s (user %r) refused: %s", self.role_name, call.addr,
                 call.username, reason)
        self._events.append(AuthFailed(call.addr, call.username, reason))
        self._reject_call(call, 50, "No authority found", now)

    def _reject_call(self, call: Call, cause: int, text: str | None, now: float,
                     delay: bool = False) -> None:
        if call.auth_pending:
            call.auth_pending = False
            self._authreq[call.peer] -= 1
        call.state = CallState.TERMINATING
        if cause == 50 and (delay or self.config.general.delayreject):
            call.timers.append(self._schedule(now + 1.0, self._delayed_reject, (call, text)))
            return
        self._send_reject(call, cause, text, now)

    def _delayed_reject(self, now: float, arg: tuple[Call, str | None]) -> None:
        call, text = arg
        if self._calls.get(call.callno) is call:
            self._send_reject(call, 50, text, now)

    def _send_reject(self, call: Call, cause: int, text: str | None, now: float) -> None:
        payload = build_ies([(IE.CAUSE, text or CAUSES.get(cause, "")), (IE.CAUSECODE, cause)])
        self._send(call, FRAME_IAX, IAXSubclass.REJECT, payload, now, final=True)

    def _on_authrep(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        if call.auth_pending:
            call.auth_pending = False
            self._authreq[call.peer] -= 1
        entry = call.entry
        if call.fake_auth or entry is None:
            self._auth_fail(call, call.fake_auth or f"unknown user {call.username!r}", now)
            return
        if entry.forceencryption and call.callno not in self._crypt:
            self._stats["reject_unencrypted"] += 1
            self._auth_fail(call, "incoming call is unencrypted while forceencryption = yes "
                            "(the NEW offered no encryption)", now)
            return
        ok = False
        md5 = ie_str(ies, IE.MD5_RESULT)
        password = ie_str(ies, IE.PASSWORD)
        signature = ie_str(ies, IE.RSA_RESULT)
        if signature and "rsa" in entry.auth and entry.inkeys:
            # as Asterisk: the RSA result is checked first, and alone when present
            if not self._rsa_verifies(call, entry, signature, now):
                self._auth_fail(call, f"RSA signature does not verify with any of the inkeys "
                                f"of [{entry.name}] ({':'.join(entry.inkeys)})", now)
                return
            ok = True
        elif md5 is not None and "md5" in entry.auth:
            got = md5.strip().lower()
            ok = any(md5_result(call.challenge, s) == got for s in entry.secrets)
        elif password is not None and "plaintext" in entry.auth:
            ok = password in entry.secrets
        if not ok:
            self._auth_fail(call, f"wrong secret for [{entry.name}]", now)
            return
        self._accept_incoming(call, now)

    def _rsa_verifies(self, call: Call, entry: Entry, signature: str, now: float) -> bool:
        """Whether one of the entry's inkeys verifies the signature of our challenge; a key
        that cannot be read is logged and skipped (Asterisk: "Requested inkey ... does not
        exist")."""
        for name in entry.inkeys:
            try:
                key = self._keys.public(name)
            except KeyProblem as exc:
                self._warn("rsa_inkey_unreadable", f"inkey {name!r} of [{entry.name}]: {exc}",
                           now)
                continue
            if verify_challenge(key, call.challenge, signature):
                return True
        return False

    def _negotiate(self, entry: Entry | None, ies: IEs) -> int | None:
        ours = self._caps(entry)
        fmt = format_from(ies)
        cap = capability_from(ies)
        if cap is None:
            cap = fmt
        if cap is None:
            return None
        if fmt:
            for c in ours:
                if c & fmt and c & cap:
                    return c
        for c in ours:
            if c & cap:
                return c
        return None

    def _accept_incoming(self, call: Call, now: float) -> None:
        ies = IEs(call.new_ies)
        fmt = self._negotiate(call.entry, ies)
        if fmt is None:
            log.info("%s: call from %s: no common codec", self.role_name, call.addr)
            self._reject_call(call, 58, "Unable to negotiate codec", now)
            return
        call.codec = fmt
        call.capability = fmt
        call.state = CallState.ACCEPTED
        self._send(call, FRAME_IAX, IAXSubclass.ACCEPT,
                   build_ies([(IE.FORMAT, fmt & 0xFFFFFFFF), (IE.FORMAT2, fmt)]), now)
        self._start_call_timers(call, now)
        entry = call.entry
        context = (entry.context if entry is not None and entry.context else None) \
            or ie_str(ies, IE.CALLED_CONTEXT) or "default"
        call.context = context
        call.announced = True
        self._events.append(IncomingCall(
            call.callno, call.peer, call.exten, context, ie_str(ies, IE.CALLING_NUMBER) or "",
            ie_str(ies, IE.CALLING_NAME) or "", fmt, call.addr, call.trunk))

