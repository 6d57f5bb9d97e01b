"""The endpoint's call table: every call it holds, found by our call number or by the peer's.

A part of ``protocol.Endpoint`` that owns the maps and the call-number pool; it sends nothing.
Frames that name our call number find their call in :attr:`CallTable.by_callno`; those that
name only the peer's (dcallno 0, mini frames, trunk entries) in :attr:`CallTable.by_remote`,
keyed by (source address, the peer's call number), and trunk receive looks a source up once
per datagram in :attr:`CallTable.by_addr` (the same map, per address).
"""

from __future__ import annotations

from iaxgw.gateway.iax2.address import Addr
from iaxgw.gateway.iax2.calls import Call, CallNumbers

__all__ = ["CallTable"]


class CallTable:
    """Calls by our call number, by (address, peer call number), and the latter per address."""

    __slots__ = ("by_addr", "by_callno", "by_remote", "numbers")

    def __init__(self, numbers: CallNumbers) -> None:
        self.numbers = numbers
        self.by_callno: dict[int, Call] = {}
        self.by_remote: dict[tuple[Addr, int], Call] = {}
        self.by_addr: dict[Addr, dict[int, Call]] = {}

    def __len__(self) -> int:
        return len(self.by_callno)

    def add(self, call: Call) -> None:
        """A new call, on a call number taken from :attr:`numbers`."""
        self.by_callno[call.callno] = call

    def bind_remote(self, call: Call, peer_callno: int) -> None:
        """The peer's call number of ``call`` is ``peer_callno`` (0: not known yet)."""
        if call.peer_callno != peer_callno:
            if call.peer_callno:
                self.unbind_remote(call)
            call.peer_callno = peer_callno
        elif not peer_callno:
            return
        self.by_remote[(call.addr, peer_callno)] = call
        calls = self.by_addr.get(call.addr)
        if calls is None:
            calls = self.by_addr[call.addr] = {}
        calls[peer_callno] = call

    def unbind_remote(self, call: Call) -> None:
        key = (call.addr, call.peer_callno)
        if self.by_remote.get(key) is call:
            del self.by_remote[key]
        calls = self.by_addr.get(call.addr)
        if calls is not None and calls.get(call.peer_callno) is call:
            del calls[call.peer_callno]
            if not calls:
                del self.by_addr[call.addr]

    def remove(self, call: Call, now: float) -> bool:
        """Forget ``call`` and hold its number (``CallNumbers.release``); False when the
        table no longer holds it (it went before)."""
        if self.by_callno.get(call.callno) is not call:
            return False
        del self.by_callno[call.callno]
        if call.peer_callno:
            self.unbind_remote(call)
        self.numbers.release(call.callno, call.addr[0], now)
        return True
