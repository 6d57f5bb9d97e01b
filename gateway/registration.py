"""Qualify (POKE/PONG) and registration in both roles for :class:`~iaxgw.gateway.protocol.Endpoint`.

Functions over the endpoint's state (docs/protocol.md §9.6 qualify, §9.7 registration);
the endpoint's dispatch table and timers call them.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from iaxgw._core.constants import FRAME_IAX, IE, IAXSubclass
from iaxgw._core.ies import IEs, build_ies
from iaxgw.gateway.address import Addr
from iaxgw.gateway.calls import STATELESS_CALLNO, Call, CallKind, CallState
from iaxgw.gateway.calltoken import md5_result
from iaxgw.gateway.config import acl_allows
from iaxgw.gateway.events import AuthFailed, PeerStatusChanged, RegistrationChanged
from iaxgw.gateway.peers import QUALIFY_FREQ_NOTOK, QUALIFY_FREQ_OK, PeerState, RegState

if TYPE_CHECKING:
    from iaxgw.gateway.protocol import Endpoint

log = logging.getLogger("iaxgw.protocol")

#: The cause text of the REGREJ a source throttled by ``authfaillimit`` gets
REGREJ_THROTTLED_TEXT = "Registration Refused: throttled after repeated failed authentications"



def ie_str(ies: IEs, ie: int) -> str | None:
    """The string value of IE ``ie`` (None: absent or not a string)."""
    v = ies.get(ie)
    return v if isinstance(v, str) else None


def ie_int(ies: IEs, ie: int) -> int | None:
    """The integer value of IE ``ie`` (None: absent, a flag or not a number)."""
    v = ies.get(ie)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


# ---------------------------------------------------------------------- qualify

def qualify_tick(ep: Endpoint, now: float, st: PeerState) -> None:
    st.qualify_timer = None
    if st.addr() is None:
        return
    send_poke(ep, st, now)

def send_poke(ep: Endpoint, st: PeerState, now: float) -> None:
    addr = st.addr()
    if addr is None or st.poke_callno:
        return
    callno = ep._callnos.allocate(addr[0], now)
    if callno is None:
        return
    call = ep._new_call(callno, CallKind.POKE, CallState.POKE, addr, now)
    call.peer = st.name
    call.pingtime = max(st.maxms // 8, 1)
    call.poke_sent = now
    st.poke_callno = callno
    ep._stats["pokes_sent"] += 1
    ep._send(call, FRAME_IAX, IAXSubclass.POKE, build_ies([(IE.CALLTOKEN, b"")]), now)
    ep._cancel(st.poke_timer)
    st.poke_timer = ep._schedule(now + 2 * st.maxms / 1000.0, partial(poke_timeout, ep),
                                   (st, call))

def poke_timeout(ep: Endpoint, now: float, arg: tuple[PeerState, Call]) -> None:
    st, call = arg
    ep._destroy(call, now)
    set_peer_status(ep, st, "UNREACHABLE", -1)
    ep._cancel(st.qualify_timer)
    if st.entry.qualify is not None:
        st.qualify_timer = ep._schedule_soft(now + QUALIFY_FREQ_NOTOK,
                                             partial(qualify_tick, ep), st)

def on_poke_pong(ep: Endpoint, call: Call, f: Any, ies: IEs, now: float) -> None:
    st = ep._peers.get(call.peer)
    ep._destroy(call, now)
    if st is None:
        return
    ep._cancel(st.poke_timer)
    rtt = max(int((now - call.poke_sent) * 1000.0), 0)
    status = "LAGGED" if rtt > st.maxms else "OK"
    set_peer_status(ep, st, status, rtt)
    ep._cancel(st.qualify_timer)
    if st.entry.qualify is not None:
        delay = QUALIFY_FREQ_OK if status == "OK" else QUALIFY_FREQ_NOTOK
        st.qualify_timer = ep._schedule_soft(now + delay, partial(qualify_tick, ep), st)

def set_peer_status(ep: Endpoint, st: PeerState, status: str, rtt: int) -> None:
    changed = status != st.status
    st.status = status
    st.rtt_ms = rtt
    if changed:
        log.info("%s: peer %s is now %s (%d ms)", ep.role_name, st.name, status, rtt)
        ep._events.append(PeerStatusChanged(st.name, status, rtt))  # type: ignore[arg-type]

# ---------------------------------------------------------------------- registration: registrar

def on_regreq_new(ep: Endpoint, f: Any, ies: IEs, addr: Addr, now: float) -> None:
    username = ie_str(ies, IE.USERNAME) or ""
    entry = ep.config.peer(username) if username else None
    if not ep._token_gate(f, ies, addr, now, entry, username, IAXSubclass.REGREJ):
        return
    validated = bool(ies.get(IE.CALLTOKEN))
    callno = ep._callnos.allocate(addr[0], now, validated=validated)
    if callno is None:
        ep._warn("reject_callno_limit", f"no call number for {addr}: "
                 f"{ep._callnos.refusal(addr[0], validated=validated)}", now)
        ep._send_stateless(STATELESS_CALLNO, f, addr, IAXSubclass.REGREJ)
        return
    call = ep._new_call(callno, CallKind.REG_IN, CallState.REG_IN, addr, now)
    call.mark_msg(IAXSubclass.REGREQ)
    ep._bind_remote(call, f.scallno)
    call.iseqno = (f.oseqno + 1) & 0xFF
    call.username = username
    call.peer = username
    call.entry = entry
    ep._start_pending_timers(call, now)
    ep._stats["regreq_received"] += 1
    if ep._auth_throttled(addr, f"REGREQ from {addr} (peer {username!r})", username, now):
        call.state = CallState.TERMINATING
        _regrej_later(ep, call, REGREJ_THROTTLED_TEXT, now)
        return
    if entry is not None and entry.dynamic and not entry.secrets \
            and acl_allows(entry.acl, addr[0]):
        reg_accept(ep, call, ies, f.csub == IAXSubclass.REGREL, now)
        return
    challenge = str(ep._rng.randint(0, 999999999))
    call.challenge = challenge
    ep._send(call, FRAME_IAX, IAXSubclass.REGAUTH, build_ies([
        (IE.AUTHMETHODS, 2), (IE.CHALLENGE, challenge), (IE.USERNAME, username)]), now)

def on_regreq_auth(ep: Endpoint, call: Call, f: Any, ies: IEs, now: float) -> None:
    entry = call.entry
    md5 = (ie_str(ies, IE.MD5_RESULT) or "").strip().lower()
    reason = None
    if entry is None:
        reason = f"unknown peer {call.username!r}"
    elif not entry.dynamic:
        reason = f"peer [{entry.name}] is not host=dynamic"
    elif not acl_allows(entry.acl, call.addr[0]):
        reason = f"{call.addr[0]} denied by the ACL of [{entry.name}]"
    elif entry.secrets and not any(md5_result(call.challenge, s) == md5
                                   for s in entry.secrets):
        reason = f"wrong secret for [{entry.name}]"
    if reason is not None:
        ep._note_authfail(call.addr[0], now)
        ep._events.append(AuthFailed(call.addr, call.username, reason))
        log.info("%s: registration of %r from %s refused: %s", ep.role_name,
                 call.username, call.addr, reason)
        call.state = CallState.TERMINATING
        if ep.config.general.delayreject:
            _regrej_later(ep, call, "Registration Refused", now)
        else:
            send_regrej(ep, now, (call, "Registration Refused"))
        return
    reg_accept(ep, call, ies, f.csub == IAXSubclass.REGREL, now)

def _regrej_later(ep: Endpoint, call: Call, text: str, now: float) -> None:
    """REGREJ one second from now, as Asterisk's auth_fail sends it with ``delayreject``: a
    guesser learns nothing faster than once a second per registration attempt."""
    ep._keep_call_timer(call, ep._schedule(now + 1.0, partial(send_regrej, ep), (call, text)))

def send_regrej(ep: Endpoint, now: float, arg: tuple[Call, str]) -> None:
    call, text = arg
    if ep._calls.get(call.callno) is call:
        ep._send(
            call,
            FRAME_IAX,
            IAXSubclass.REGREJ,
            build_ies([(IE.CAUSE, text), (IE.CAUSECODE, 29)]),
            now,
            final=True,
        )

def reg_accept(ep: Endpoint, call: Call, ies: IEs, release: bool, now: float) -> None:
    g = ep.config.general
    st = ep._peers.get(call.peer)
    refresh = ie_int(ies, IE.REFRESH) or g.minregexpire
    refresh = 0 if release else min(max(refresh, g.minregexpire), g.maxregexpire)
    call.state = CallState.TERMINATING
    ep._send(call, FRAME_IAX, IAXSubclass.REGACK, build_ies([
        (IE.USERNAME, call.username),
        (IE.DATETIME, ep._wall_datetime(now)),
        (IE.REFRESH, refresh),
        (IE.APPARENT_ADDR, call.addr),
    ]), now, final=True)
    if st is None:
        return
    ep._cancel(st.reg_timer)
    if release:
        unregister_peer(ep, st, "Unregistered")
        return
    first = st.reg_addr != call.addr
    st.reg_addr = call.addr
    st.reg_expiry = now + refresh
    st.reg_timer = ep._schedule(st.reg_expiry, partial(reg_expire, ep), st)
    ep._events.append(RegistrationChanged(st.name, "Registered", call.addr, refresh))
    if first and st.entry.qualify is not None:
        ep._cancel(st.qualify_timer)
        st.qualify_timer = ep._schedule(now, partial(qualify_tick, ep), st)

def reg_expire(ep: Endpoint, now: float, st: PeerState) -> None:
    unregister_peer(ep, st, "Expired")

def unregister_peer(ep: Endpoint, st: PeerState, status: str) -> None:
    addr = st.reg_addr
    st.reg_addr = None
    ep._cancel(st.qualify_timer)
    ep._cancel(st.reg_timer)
    ep._events.append(RegistrationChanged(st.name, status, addr, 0))
    if st.status != "UNKNOWN":
        set_peer_status(ep, st, "UNKNOWN", -1)

def on_reg_abort(ep: Endpoint, call: Call, f: Any, ies: IEs, now: float) -> None:
    ep._destroy(call, now)

# ---------------------------------------------------------------------- registration: registrant

def register_tick(ep: Endpoint, now: float, rs: RegState) -> None:
    rs.timer = None
    if rs.callno:
        return
    callno = ep._callnos.allocate(rs.addr[0], now)
    if callno is None:
        rs.timer = ep._schedule(now + QUALIFY_FREQ_NOTOK, partial(register_tick, ep), rs)
        return
    call = ep._new_call(callno, CallKind.REG_OUT, CallState.REG_OUT, rs.addr, now)
    call.reg = rs
    call.username = rs.reg.username
    call.peer = rs.label
    rs.callno = callno
    call.new_ies = [(IE.USERNAME, rs.reg.username), (IE.REFRESH, rs.refresh),
                    (IE.CALLTOKEN, b"")]
    rs.status = "Request Sent"           # Asterisk's REG_STATE_REGSENT (no event: transient)
    ep._stats["regreq_sent"] += 1
    ep._send(call, FRAME_IAX, IAXSubclass.REGREQ, build_ies(call.new_ies), now)

def on_regauth(ep: Endpoint, call: Call, f: Any, ies: IEs, now: float) -> None:
    rs = call.reg
    methods = ie_int(ies, IE.AUTHMETHODS) or 0
    challenge = ie_str(ies, IE.CHALLENGE)
    secret = rs.reg.secret if rs is not None else ""
    items: list[tuple[int, object]] = [(IE.USERNAME, call.username),
                                       (IE.REFRESH, rs.refresh if rs else 60)]
    if methods & 2 and challenge is not None:
        items.append((IE.MD5_RESULT, md5_result(challenge, secret)))
    elif methods & 1:
        items.append((IE.PASSWORD, secret))
    if rs is not None:
        rs.status = "Auth. Sent"         # REG_STATE_AUTHSENT
    ep._send(call, FRAME_IAX, IAXSubclass.REGREQ, build_ies(items), now)

def on_regack(ep: Endpoint, call: Call, f: Any, ies: IEs, now: float) -> None:
    rs = call.reg
    ep._destroy(call, now)
    if rs is None:
        return
    refresh = ie_int(ies, IE.REFRESH) or rs.refresh
    apparent = ies.get(IE.APPARENT_ADDR)
    rs.apparent_addr = apparent if isinstance(apparent, tuple) else None
    rs.refresh = refresh                 # what the registrar granted, as Asterisk keeps it
    reg_status(ep, rs, "Registered", refresh)
    ep._cancel(rs.timer)
    rs.timer = ep._schedule_soft(now + max(5 * refresh / 6, 1.0), partial(register_tick, ep), rs)

def on_regrej(ep: Endpoint, call: Call, f: Any, ies: IEs, now: float) -> None:
    rs = call.reg
    ep._destroy(call, now)
    if rs is None:
        return
    reg_status(ep, rs, "Rejected", 0)
    ep._cancel(rs.timer)
    rs.timer = ep._schedule(now + rs.refresh, partial(register_tick, ep), rs)

def reg_status(ep: Endpoint, rs: RegState, status: str, refresh: int) -> None:
    rs.status = status
    ep._events.append(RegistrationChanged(rs.label, status, rs.apparent_addr, refresh,
                                            "registrant"))
