"""Events the sans-IO IAX2 endpoint (:class:`~iaxgw.gateway.iax2.protocol.Endpoint`) hands out.

Every event is a frozen, slotted dataclass.  The endpoint queues them; the application drains the
queue with ``Endpoint.next_event()``.  The core never calls back into the application, except the
optional media sink (``Endpoint.set_media_sink``), which replaces :class:`VoiceReceived`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from iaxgw.gateway.iax2.address import Addr

ProgressKind = Literal[
    "accepted", "ringing", "proceeding", "progress", "answered", "busy", "congestion",
    "stop_sounds", "hold", "unhold",
]
EndReason = Literal["hangup", "reject", "timeout", "inval", "local"]
SetupStep = Literal["calltoken", "authrep"]
PeerStatus = Literal["OK", "LAGGED", "UNREACHABLE", "UNKNOWN"]

__all__ = [
    "AuthFailed",
    "CallEnded",
    "CallProgress",
    "CallSetup",
    "DtmfReceived",
    "Event",
    "IncomingCall",
    "PeerStatusChanged",
    "ProtocolError",
    "RegistrationChanged",
    "TextReceived",
    "VoiceReceived",
]


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of every endpoint event."""


@dataclass(frozen=True, slots=True)
class IncomingCall(Event):
    """A NEW passed calltoken, ACL, authentication and codec checks and was ACCEPTed.

    The application goes on with ``ringing``/``progress``/``answer``/``hangup`` on ``callno``.
    """

    callno: int
    peer: str            # the [user]/[friend] entry that matched
    exten: str           # CALLED_NUMBER ("s" when absent)
    context: str         # the entry's context, else CALLED_CONTEXT, else "default"
    caller_num: str
    caller_name: str
    codec: int           # negotiated format bit (FORMAT_ULAW, ...)
    addr: Addr
    trunk: bool = False


@dataclass(frozen=True, slots=True)
class CallProgress(Event):
    """The remote side accepted, rang, answered, ... (control frames and ACCEPT)."""

    callno: int
    kind: ProgressKind
    codec: int = 0       # set for kind "accepted": the format the callee chose


@dataclass(frozen=True, slots=True)
class CallSetup(Event):
    """A caller-side setup step of an outgoing call, for drivers that pace their setups.

    ``"calltoken"``: the target's CALLTOKEN reply arrived and the NEW went out again with it;
    ``rtt_ms`` is the NEW -> CALLTOKEN round trip when that NEW was sent once (else -1).
    ``"authrep"``: our AUTHREP left (``resend``: a retransmission of it).  The target counts
    the call against its ``maxauthreq`` from its AUTHREQ until that AUTHREP arrives."""

    callno: int
    step: SetupStep
    rtt_ms: float = -1.0
    resend: bool = False


@dataclass(frozen=True, slots=True)
class CallEnded(Event):
    """A call is over (its call number may still be held until our final frame is acked)."""

    callno: int
    cause: int
    cause_text: str
    reason: EndReason


@dataclass(frozen=True, slots=True)
class VoiceReceived(Event):
    """One voice payload (full, mini or trunk entry); ``ts`` is the unwrapped 32-bit stamp."""

    callno: int
    ts: int
    payload: bytes
    codec: int = 0


@dataclass(frozen=True, slots=True)
class DtmfReceived(Event):
    """A DTMF digit ended (frame type 1); type 12 (begin) frames are accepted silently."""

    callno: int
    digit: str
    ts: int = 0


@dataclass(frozen=True, slots=True)
class TextReceived(Event):
    """A TEXT frame (type 7), NUL terminator removed."""

    callno: int
    text: str


@dataclass(frozen=True, slots=True)
class PeerStatusChanged(Event):
    """Qualify (POKE/PONG) changed a peer's status; ``rtt_ms`` is -1 when unreachable."""

    peer: str
    status: PeerStatus
    rtt_ms: int


@dataclass(frozen=True, slots=True)
class RegistrationChanged(Event):
    """A registration changed, as registrar (``role="registrar"``) or registrant."""

    peer: str            # registrar: the dynamic peer; registrant: "user@host:port"
    status: str          # "Registered", "Unregistered", "Expired", "Rejected", "Timeout", ...
    addr: Addr | None
    refresh: int = 0
    role: Literal["registrar", "registrant"] = "registrar"


@dataclass(frozen=True, slots=True)
class AuthFailed(Event):
    """A call or registration failed authentication or ACL (Asterisk logs these)."""

    addr: Addr
    username: str
    reason: str


@dataclass(frozen=True, slots=True)
class ProtocolError(Event):
    """A peer sent something we drop (rate-limited; the counters in ``stats()`` are complete)."""

    addr: Addr
    reason: str
