"""The channel interface the dialplan applications are written against.

The datagram server implements :class:`Channel` for each IAX2 call (and for the outgoing leg of a
``Dial(IAX2/...)``); tests use a fake.  It is deliberately small:

* signalling: :meth:`Channel.answer`, :meth:`Channel.indicate`, :meth:`Channel.hangup`,
  :meth:`Channel.wait_hangup`, :attr:`Channel.hungup`;
* media: the application installs a :class:`MediaHandler` with :meth:`Channel.set_media`; on its
  20 ms media tick the server hands every received voice payload to ``on_voice`` and sends what
  ``next_payload`` returns (``None`` = send nothing this tick).  Payloads are raw G.711 in the
  channel's ``codec`` (160 bytes per 20 ms); applications never see frames or timestamps math;
* an outgoing leg: :meth:`Channel.dial_iax2`.

All methods are called from the event loop thread.  ``exten`` and ``context`` are updated by the
dialplan when it jumps (Goto); ``variables`` holds the channel variables (``Set``, ``DIALSTATUS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["Channel", "DialOutcome", "DialStatus", "MediaHandler"]

DialStatus = Literal["ANSWER", "BUSY", "CONGESTION", "NOANSWER", "CHANUNAVAIL"]


class MediaHandler(Protocol):
    """Consumes and produces a channel's audio; called by the server on its 20 ms media tick."""

    def on_voice(self, payload: bytes, ts: int) -> None:
        """One received voice payload (channel codec) and its timestamp in ms."""

    def next_payload(self) -> bytes | None:
        """The payload to send now (channel codec), or None to send nothing this tick."""


class Channel(Protocol):
    """One call as the dialplan sees it."""

    exten: str
    context: str
    caller_num: str
    caller_name: str
    peer: str                      # name of the iax.conf entry the call belongs to
    codec: str                     # "ulaw" | "alaw"
    variables: dict[str, str]

    async def answer(self) -> None:
        """Answer the call (CONTROL ANSWER); calling it twice is harmless."""

    async def indicate(self, what: str) -> None:
        """Send "ringing", "progress", "proceeding", "busy" or "congestion"."""

    async def hangup(self, cause: int = 16) -> None:
        """Hang up with a Q.850 cause; no-op once hung up."""

    def set_media(self, handler: MediaHandler | None) -> None:
        """Route the call's audio to ``handler`` (None: drop received audio, send nothing)."""

    async def wait_hangup(self, timeout: float | None) -> bool:
        """Wait until the call is hung up (either side); True if it was within ``timeout`` s."""

    @property
    def hungup(self) -> bool:
        """True once the call is over."""

    async def dial_iax2(self, peer: str, exten: str, timeout: float | None) -> DialOutcome:
        """Place an outgoing call to iax.conf entry ``peer`` for ``exten`` ("" = none given).

        Returns when the callee answers (status ANSWER, ``leg`` set, not yet bridged) or the
        attempt fails.  ``timeout`` (s, None = no limit) gives NOANSWER.  The caller may cancel
        the coroutine (our caller hung up): the implementation then hangs up the outgoing leg.
        """


@dataclass(frozen=True, slots=True)
class DialOutcome:
    """Result of :meth:`Channel.dial_iax2`; ``cause`` is the Q.850 cause (16 when answered)."""

    status: DialStatus
    cause: int = 16
    leg: Channel | None = None
