"""IAX (type 6) handlers of a call once it has state (docs/protocol.md §9): the caller side
(CALLTOKEN resend, AUTHREQ answer, ACCEPT, autokill) and the in-call frames of either side
(HANGUP, REJECT, PING / PONG, LAGRQ / LAGRP, POKE, UNSUPPORT).

``protocol._IAX_TABLE`` maps (state, subclass) to these methods.
"""

from __future__ import annotations

import logging
from typing import Any

from iaxgw._core.constants import FRAME_IAX, IE, IAXSubclass
from iaxgw._core.ies import IEs, build_ies, format_from
from iaxgw.gateway.calls import STATELESS_CALLNO, Call, CallKind, CallState
from iaxgw.gateway.calltoken import md5_result
from iaxgw.gateway.crypto import AES128, CallCrypto, derive_key, merge_encryption
from iaxgw.gateway.events import CallProgress, CallSetup
from iaxgw.gateway.registration import ie_int, ie_str
from iaxgw.gateway.reliability import EndpointCore
from iaxgw.gateway.rsakeys import KeyProblem, sign_challenge

__all__ = ["CallFlowMixin"]

log = logging.getLogger("iaxgw.protocol")


class CallFlowMixin(EndpointCore):
    """Handlers of IAX frames on calls we hold: caller side and in-call control."""

    def _on_hangup(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        if call.kind in (CallKind.CALL_IN, CallKind.CALL_OUT):
            cause = ie_int(ies, IE.CAUSECODE) or 16
            self._end(call, cause, "hangup", ie_str(ies, IE.CAUSE))
        self._destroy(call, now)

    def _on_reject(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        cause = ie_int(ies, IE.CAUSECODE) or 21
        text = ie_str(ies, IE.CAUSE) or (
            "CallToken rejected" if f.scallno == STATELESS_CALLNO else None)
        if call.kind == CallKind.CALL_OUT:
            log.info("%s: call %d to %s rejected: %s (cause %d)", self.role_name, call.callno,
                     call.peer, text, cause)
        self._end(call, cause, "reject", text)
        self._destroy(call, now)

    def _on_peer_gone(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        self._destroy(call, now)

    def _autokill(self, now: float, call: Call) -> None:
        """No IAX frame answered our NEW within 2 x maxms/autokill: congestion (Asterisk's
        auto_congest).  Any IAX frame of the call (CALLTOKEN, ACK, AUTHREQ, ...) cancels it
        first (``_cancel_autokill``)."""
        if self._calls.get(call.callno) is not call or call.state != CallState.NEW_SENT:
            return
        if call.peer_callno:
            return  # the peer answered (AUTHREQ...)
        self._stats["calls_autokilled"] += 1
        waited = now - call.start
        self._end(call, 34, "timeout",
                  f"no reply to NEW within {waited:.0f} s (autokill)")
        self._destroy(call, now)

    def _cancel_autokill(self, call: Call) -> None:
        """An IAX frame of a call in setup arrived: the target is answering, no autokill (as
        Asterisk cancels auto_congest on the first IAX frame of the call, CALLTOKEN and ACK
        included, so a lost AUTHREQ is waited for through its retransmission)."""
        fn = self._autokill
        for t in call.timers:
            if t.alive and t.fn == fn:
                t.alive = False

    def _on_calltoken(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        """Resend the NEW/REGREQ with the token byte-exact, seqnos reset, same call number."""
        token = ies.get(IE.CALLTOKEN)
        if not isinstance(token, bytes) or not token:
            self._stats["drop_calltoken_empty"] += 1
            return
        if call.new_ies and call.new_ies[-1][0] == IE.CALLTOKEN and call.new_ies[-1][1]:
            self._stats["drop_calltoken_repeated"] += 1
            return
        once = all(p.sends == 1 for p in call.unacked.values())
        for p in call.unacked.values():
            self._cancel_pending(p)
        call.unacked.clear()
        call.oseqno = call.iseqno = call.acked_to = 0
        call.new_ies = [*call.new_ies[:-1], (IE.CALLTOKEN, token)]
        self._stats["calltoken_resends"] += 1
        sub = IAXSubclass.REGREQ if call.kind == CallKind.REG_OUT else IAXSubclass.NEW
        self._send(call, FRAME_IAX, sub, build_ies(call.new_ies), now)
        if call.kind == CallKind.CALL_OUT:
            # the call started with its first NEW: a round trip, unless that NEW was resent
            rtt = (now - call.start) * 1000.0 if once else -1.0
            self._events.append(CallSetup(call.callno, "calltoken", rtt))

    def _on_authreq(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        methods = ie_int(ies, IE.AUTHMETHODS) or 0
        challenge = ie_str(ies, IE.CHALLENGE)
        entry = call.entry
        secret = entry.secrets[0] if entry is not None and entry.secrets else ""
        items = self._auth_items(call, methods, challenge, secret, now)
        if isinstance(items, str):
            self._refuse_authreq(call, items, now)
            return
        refusal = self._encrypt_outgoing(call, ies, methods, challenge, secret)
        if refusal is not None:
            self._refuse_authreq(call, refusal, now)
            return
        self._send(call, FRAME_IAX, IAXSubclass.AUTHREP, build_ies(items), now)
        self._events.append(CallSetup(call.callno, "authrep"))

    def _auth_items(self, call: Call, methods: int, challenge: str | None, secret: str,
                    now: float) -> list[tuple[int, object]] | str:
        """The AUTHREP's IEs as Asterisk's authenticate(): our outkey's RSA signature of the
        challenge when the target takes RSA, else (or when the key cannot be used) the MD5
        result, else the plaintext secret; or why none can be sent."""
        outkey = call.entry.outkey if call.entry is not None else None
        if outkey and methods & 4 and challenge is not None:
            try:
                return [(IE.RSA_RESULT, sign_challenge(self._keys.private(outkey), challenge))]
            except KeyProblem as exc:
                self._warn("rsa_outkey_unreadable", f"outkey {outkey!r}: {exc}", now)
                if not secret:
                    return f"RSA outkey {outkey!r} cannot be used: {exc}"
        if methods & 2 and challenge is not None and secret:
            return [(IE.MD5_RESULT, md5_result(challenge, secret))]
        if methods & 1 and secret:
            return [(IE.PASSWORD, secret)]
        if methods & 4 and not outkey:
            return "target takes only RSA authentication and we have no outkey"
        if methods & 2 and challenge is not None:
            return [(IE.MD5_RESULT, md5_result(challenge, secret))]
        return "No usable authentication method offered"

    def _encrypt_outgoing(self, call: Call, ies: IEs, methods: int, challenge: str | None,
                          secret: str) -> str | None:
        """Encryption as the target's AUTHREQ settles it (Asterisk's authenticate_reply): its
        ENCRYPTION IE turns it on from our AUTHREP on, keyed by MD5(challenge, secret); none
        with our ``forceencryption`` ends the call.  Returns why the call cannot go on."""
        entry = call.entry
        ours = entry.encryption if entry is not None else 0
        asked = ie_int(ies, IE.ENCRYPTION) or 0
        if not asked:
            if entry is not None and entry.forceencryption:
                self._stats["authreq_unencrypted_refused"] += 1
                return ("target does not encrypt (its AUTHREQ asks for no encryption) "
                        "while forceencryption = yes")
            return None
        # Asterisk encrypts whenever the AUTHREQ asks, even beyond what our NEW offered
        agreed, rotate = merge_encryption(ours or AES128, asked)
        if not agreed or not methods & 6 or challenge is None or not secret:
            self._stats["authreq_encryption_unusable"] += 1
            return (f"target requires encryption (0x{asked:04x}) iaxgw cannot key "
                    "(AES-128 needs md5 or rsa auth and a secret)")
        cc = CallCrypto(methods=agreed, rotate=rotate)
        cc.set_key(derive_key(challenge, secret))
        self._crypt[call.callno] = cc
        self._stats["calls_encrypted"] += 1
        return None

    def _refuse_authreq(self, call: Call, text: str, now: float) -> None:
        log.info("%s: call %d: %s", self.role_name, call.callno, text)
        self._end(call, 50, "local", text)
        call.state = CallState.TERMINATING
        self._send(call, FRAME_IAX, IAXSubclass.HANGUP, build_ies([(IE.CAUSECODE, 50)]), now,
                   final=True)

    def _on_accept(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        fmt = format_from(ies) or 0
        if not fmt & call.capability:
            self._end(call, 58, "local", "Unable to negotiate codec")
            call.state = CallState.TERMINATING
            self._send(call, FRAME_IAX, IAXSubclass.HANGUP, build_ies([(IE.CAUSECODE, 58)]), now,
                       final=True)
            return
        if fmt & (fmt - 1):
            common = fmt & call.capability
            fmt = call.codec if fmt & call.codec else common & -common
        call.codec = fmt
        call.state = CallState.ACCEPTED
        self._start_call_timers(call, now)
        self._events.append(CallProgress(call.callno, "accepted", fmt))


    def _rr_values(self, call: Call) -> dict[str, int]:
        rx = call.rx
        return {"jitter": int(rx.jitter), "lost": rx.lost, "loss_pct": rx.loss_pct,
                "frames": rx.frames, "delay": 0, "dropped": rx.dropped, "ooo": rx.ooo}

    def _on_ping(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        """PONG with the PING's ts and our receive report (RR IEs, docs/protocol.md §9.5)."""
        rx = call.rx
        loss = (min(rx.loss_pct, 255) << 24) | (rx.lost & 0xFFFFFF)
        payload = build_ies([
            (IE.RR_JITTER, int(rx.jitter) & 0xFFFFFFFF),
            (IE.RR_LOSS, loss),
            (IE.RR_PKTS, rx.frames & 0xFFFFFFFF),
            (IE.RR_DELAY, 0),
            (IE.RR_DROPPED, rx.dropped & 0xFFFFFFFF),
            (IE.RR_OOO, rx.ooo & 0xFFFFFFFF),
        ])
        self._send(call, FRAME_IAX, IAXSubclass.PONG, payload, now, ts=f.ts)

    def _on_lagrq(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        self._send(call, FRAME_IAX, IAXSubclass.LAGRP, b"", now, ts=f.ts)

    def ping(self, callno: int, now: float) -> int | None:
        """PING call ``callno`` now, besides the regular PING of every call: its PONG brings
        the round trip (``call.rtt_ms``) and the peer's receive report (``call.remote_rr``,
        when the peer sends one, with the PING's timestamp in ``call.remote_rr_ts``).  Returns
        the PING's timestamp; None when there is no such call up."""
        call = self._calls.get(callno)
        if call is None or call.state == CallState.TERMINATING or call.kind not in (
                CallKind.CALL_IN, CallKind.CALL_OUT) or not call.peer_callno:
            return None
        return self._send(call, FRAME_IAX, IAXSubclass.PING, b"", now)

    def _on_pong(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        rtt = int((now - call.start) * 1000.0) - f.ts
        if 0 <= rtt < 600000:
            call.rtt_ms = rtt
            call.pingtime = max(rtt, 1)
        rr = {}
        for ie, key in ((IE.RR_JITTER, "jitter"), (IE.RR_PKTS, "frames"), (IE.RR_DELAY, "delay"),
                        (IE.RR_DROPPED, "dropped"), (IE.RR_OOO, "ooo")):
            v = ie_int(ies, ie)
            if v is not None:
                rr[key] = v
        loss = ie_int(ies, IE.RR_LOSS)
        if loss is not None:
            rr["loss_pct"] = loss >> 24
            rr["lost"] = loss & 0xFFFFFF
        if rr:
            call.remote_rr = rr
            call.remote_rr_ts = f.ts

    def _on_lagrp(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        lag = int((now - call.start) * 1000.0) - f.ts
        if 0 <= lag < 600000:
            call.lag_ms = lag

    def _on_call_poke(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        self._send(call, FRAME_IAX, IAXSubclass.PONG, b"", now, ts=f.ts)

    def _on_unsupport(self, call: Call, f: Any, ies: IEs, now: float) -> None:
        self._stats["unsupport_received"] += 1
        log.info("%s: peer does not support IAX subclass %s", self.role_name,
                 ie_int(ies, IE.IAX_UNKNOWN))

