"""Per-peer state of the endpoint: qualify (POKE/PONG) and registration, both roles.

Plain records; ``protocol.Endpoint`` drives them (docs/protocol.md §9.7 registration, §9.6
qualify).
"""

from __future__ import annotations

from iaxgw.gateway.conf.model import Entry, Register
from iaxgw.gateway.iax2.address import Addr
from iaxgw.gateway.iax2.timers import Timer

__all__ = ["QUALIFY_FREQ_NOTOK", "QUALIFY_FREQ_OK", "REG_DEFAULT_REFRESH", "PeerState",
           "RegState"]


#: Asterisk qualifyfreqok / qualifyfreqnotok (seconds).
QUALIFY_FREQ_OK = 60.0
QUALIFY_FREQ_NOTOK = 10.0
#: the refresh a registration asks for and falls back to after a timeout (Asterisk
#: IAX_DEFAULT_REG_EXPIRE, seconds)
REG_DEFAULT_REFRESH = 60


class PeerState:
    """What we know about one ``peer``/``friend`` entry: address, qualify result, registration."""

    __slots__ = ("entry", "name", "poke_callno", "poke_timer", "qualify_timer", "reg_addr",
                 "reg_expiry", "reg_timer", "rtt_ms", "status")

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self.name = entry.name
        self.status = "UNKNOWN"          # OK / LAGGED / UNREACHABLE / UNKNOWN
        self.rtt_ms = -1
        self.poke_callno = 0
        self.poke_timer: Timer | None = None
        self.qualify_timer: Timer | None = None
        self.reg_addr: Addr | None = None     # learnt by registration (host=dynamic)
        self.reg_expiry = 0.0
        self.reg_timer: Timer | None = None

    @property
    def maxms(self) -> int:
        return self.entry.qualify or 2000

    def addr(self) -> Addr | None:
        """Where to send calls and POKEs: the static host, else the registered address."""
        e = self.entry
        if e.dynamic or e.host is None:
            return self.reg_addr
        return (e.host, e.port)

    def status_text(self) -> str:
        if self.entry.qualify is None and self.status == "UNKNOWN":
            return "Unmonitored"
        if self.status in ("OK", "LAGGED"):
            return f"{self.status} ({self.rtt_ms} ms)"
        return self.status


class RegState:
    """One ``register =>`` line: our registration to a registrar."""

    __slots__ = ("addr", "apparent_addr", "callno", "refresh", "reg", "status", "timer")

    def __init__(self, reg: Register, refresh: int) -> None:
        self.reg = reg
        self.addr: Addr = (reg.host, reg.port)
        self.callno = 0
        self.status = "Unregistered"
        self.refresh = refresh
        self.timer: Timer | None = None
        self.apparent_addr: Addr | None = None

    @property
    def label(self) -> str:
        return f"{self.reg.username}@{self.reg.host}:{self.reg.port}"
