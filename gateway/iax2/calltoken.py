"""IAX2 call tokens, server side (docs/protocol.md §9.1; Asterisk ``handle_call_token``).

A token is ``"<unix time>?<40 hex>"`` as Asterisk's: the time it was issued and an HMAC-SHA1,
keyed with a random key of :data:`KEY_BYTES` bytes picked when the endpoint starts, over the
requester's ``ip:port`` and that time.  It is stateless: nothing is stored between the
CALLTOKEN reply and the resent request.  The key cannot be recovered from observed tokens, so
tokens cannot be forged for other source addresses.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from iaxgw.gateway.iax2.address import format_addr

__all__ = ["KEY_BYTES", "CallTokens", "md5_result"]

#: Length of the token key (160 bits, SHA1's block-size-independent strength).
KEY_BYTES = 20


def md5_result(challenge: str, secret: str) -> str:
    """MD5_RESULT: lowercase hex MD5 of the challenge then the secret (docs/protocol.md P13)."""
    return hashlib.md5((challenge + secret).encode("utf-8", "surrogateescape")).hexdigest()


class CallTokens:
    """Issues and checks call tokens with one per-endpoint random ``key`` (by default from
    :mod:`secrets`; a test may pass a fixed one)."""

    __slots__ = ("expiration", "key")

    def __init__(self, key: bytes | None = None, expiration: int = 10) -> None:
        if key is None:
            key = secrets.token_bytes(KEY_BYTES)
        if len(key) < 16:
            raise ValueError("call token key shorter than 128 bits")
        self.key = key
        self.expiration = expiration

    def _digest(self, addr: tuple[str, int], issued: int) -> str:
        text = f"{format_addr(addr)}?{issued}"
        return hmac.new(self.key, text.encode(), hashlib.sha1).hexdigest()

    def issue(self, addr: tuple[str, int], unix_now: float) -> bytes:
        """A fresh token for a request from ``addr``."""
        issued = int(unix_now)
        return f"{issued}?{self._digest(addr, issued)}".encode()

    def check(self, token: bytes, addr: tuple[str, int], unix_now: float) -> str | None:
        """``None`` when ``token`` is valid for ``addr`` now, else the reason it is not."""
        try:
            text = token.decode("ascii")
        except UnicodeDecodeError:
            return "malformed token"
        issued_s, sep, digest = text.partition("?")
        if not sep or not issued_s.isdigit() or len(digest) != 40:
            return "malformed token"
        issued = int(issued_s)
        if not hmac.compare_digest(digest, self._digest(addr, issued)):
            return "token hash mismatch (foreign token or other source address)"
        age = int(unix_now) - issued
        if age < 0 or age >= self.expiration:
            return f"token expired (age {age} s, limit {self.expiration} s)"
        return None
