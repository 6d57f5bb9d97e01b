"""IAX2 call tokens, server side (fact sheet section 9 "CALLTOKEN"; Asterisk ``handle_call_token``).

A token is ``"<unix time>?<sha1 hex>"``: the time it was issued and a SHA1 over the requester's
``ip:port``, that time and a secret picked when the endpoint starts.  It is stateless: nothing is
stored between the CALLTOKEN reply and the resent request.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["CallTokens", "format_addr", "md5_result"]


def md5_result(challenge: str, secret: str) -> str:
    """MD5_RESULT: lowercase hex MD5 over the challenge then the secret (section 9, pitfall 12)."""
    return hashlib.md5((challenge + secret).encode("utf-8", "surrogateescape")).hexdigest()


def format_addr(addr: tuple[str, int]) -> str:
    """``ip:port``, or ``[ip6]:port`` for IPv6, as Asterisk prints a source address."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class CallTokens:
    """Issues and checks call tokens with one per-endpoint random ``secret``."""

    __slots__ = ("expiration", "secret")

    def __init__(self, secret: int, expiration: int = 10) -> None:
        self.secret = secret
        self.expiration = expiration

    def _digest(self, addr: tuple[str, int], issued: int) -> str:
        text = f"{format_addr(addr)}{issued}{self.secret}"
        return hashlib.sha1(text.encode()).hexdigest()

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
