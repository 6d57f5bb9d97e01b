"""One IAX2 call as a dialplan :class:`~iaxgw.gateway.pbx.channel.Channel`, over the app's Endpoint.

The session never touches the socket: every command goes through :class:`CallControl` (the
app), which runs it on the Endpoint with the loop clock and flushes the datagrams.  The app feeds
the session the events of its call (progress, end, received voice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Literal, Protocol, TypeVar

from iaxgw.gateway.pbx.channel import Channel, DialOutcome, MediaHandler

log = logging.getLogger("iaxgw.session")

Direction = Literal["in", "out"]
_T = TypeVar("_T")


class CallControl(Protocol):
    """What a session needs from the app."""

    def command(self, fn: Callable[[float], _T]) -> _T:
        """Run ``fn(now)`` on the endpoint and flush what it queued."""

    def media_changed(self, session: IaxChannel) -> None:
        """The session's handler or media state changed (add to / drop from the ticker)."""

    def place_call(self, peer: str, exten: str, caller: Channel | None) -> IaxChannel:
        """Start an outgoing call; the session it returns gets the call's events."""

    @property
    def endpoint(self) -> object: ...


_INDICATIONS = ("ringing", "progress", "proceeding", "busy", "congestion")


async def wait_set(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until ``event`` is set; True if it was within ``timeout`` s (None: no limit)."""
    if event.is_set():
        return True
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


class IaxChannel:
    """A call on our Endpoint, seen by the dialplan (implements ``Channel``)."""

    def __init__(self, ctl: CallControl, callno: int, *, direction: Direction, peer: str,
                 exten: str, context: str, caller_num: str = "", caller_name: str = "",
                 codec: str = "ulaw") -> None:
        self._ctl = ctl
        self.callno = callno
        self.direction: Direction = direction
        self.peer = peer
        self.exten = exten
        self.context = context
        self.caller_num = caller_num
        self.caller_name = caller_name
        self.codec = codec
        self.variables: dict[str, str] = {}
        self.handler: MediaHandler | None = None
        self.answered = False          # in: we answered; out: the callee answered
        self.early_media = False       # progress indicated: media flows before answer
        self.cause = 0
        self.outcome = ""              # "answered", "busy", "congestion", "noanswer", ...
        self.task: asyncio.Task[None] | None = None   # the dialplan running on this call
        self._ended = asyncio.Event()
        self._progress = asyncio.Event()
        self._last_progress = ""
        self.name = f"IAX2/{peer}-{callno}"

    # --- Channel -------------------------------------------------------------------------

    @property
    def hungup(self) -> bool:
        return self._ended.is_set()

    @property
    def media_active(self) -> bool:
        return not self.hungup and self.handler is not None and (self.answered
                                                                 or self.early_media)

    async def answer(self) -> None:
        if self.hungup or self.answered:
            return
        ep = self._ctl.endpoint
        self._ctl.command(lambda now: ep.answer(self.callno, now))  # type: ignore[attr-defined]
        self.answered = True
        self.outcome = "answered"
        self._ctl.media_changed(self)

    async def indicate(self, what: str) -> None:
        what = what.lower()
        if what not in _INDICATIONS:
            raise ValueError(f"cannot indicate {what!r}; one of {', '.join(_INDICATIONS)}")
        if self.hungup:
            return
        ep = self._ctl.endpoint
        method = getattr(ep, what)
        self._ctl.command(lambda now: method(self.callno, now))
        if what == "progress":
            self.early_media = True
            self._ctl.media_changed(self)
        elif what in ("busy", "congestion"):
            self.outcome = what

    async def hangup(self, cause: int = 16) -> None:
        if self.hungup:
            return
        ep = self._ctl.endpoint
        self._ctl.command(lambda now: ep.hangup(self.callno, now, cause=cause))  # type: ignore[attr-defined]
        self.ended(cause)

    def set_media(self, handler: MediaHandler | None) -> None:
        self.handler = handler
        self._ctl.media_changed(self)

    async def wait_hangup(self, timeout: float | None) -> bool:
        return await wait_set(self._ended, timeout)

    async def dial_iax2(self, peer: str, exten: str, timeout: float | None) -> DialOutcome:
        return await dial_iax2(self._ctl, self, peer, exten, timeout)

    # --- fed by the app ------------------------------------------------------------------

    def progress(self, kind: str) -> None:
        """A CallProgress event of this call (outgoing legs mostly)."""
        self._last_progress = kind
        if kind == "answered":
            self.answered = True
            self.outcome = "answered"
            self._ctl.media_changed(self)
        elif kind == "progress":
            self.early_media = True
            self._ctl.media_changed(self)
        elif kind in ("busy", "congestion"):
            self.outcome = kind
        if kind in ("answered", "busy", "congestion"):
            self._progress.set()

    def ended(self, cause: int) -> None:
        """The call is over (CallEnded, or our own hangup)."""
        if self._ended.is_set():
            return
        self.cause = cause
        if not self.outcome:
            self.outcome = {17: "busy", 34: "congestion", 42: "congestion"}.get(cause, "failed")
        self._ended.set()
        self._progress.set()
        self._ctl.media_changed(self)

    def voice(self, payload: bytes, ts: int) -> None:
        """One received voice payload of this call."""
        handler = self.handler
        if handler is not None and not self.hungup:
            try:
                handler.on_voice(payload, ts)
            except Exception:
                log.exception("%s: media handler failed on_voice", self.name)
                self.handler = None

    async def wait_answer(self) -> str:
        """Wait for answered / busy / congestion / ended (outgoing legs)."""
        await self._progress.wait()
        if self.answered:
            return "answered"
        if self._last_progress in ("busy", "congestion"):
            return self._last_progress
        return "ended"

    async def join(self, timeout: float) -> None:
        """Wait for the dialplan task to finish (bounded)."""
        task = self.task
        if task is not None and not task.done():
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(task), timeout)

    def __repr__(self) -> str:
        return f"<IaxChannel {self.name} {self.direction} exten={self.exten!r}>"


async def dial_iax2(ctl: CallControl, caller: Channel, peer: str, exten: str,
                    timeout: float | None) -> DialOutcome:
    """``Dial(IAX2/peer/exten)`` from ``caller`` (a call of ours, or an emulated local phone):
    the outgoing leg placed through ``ctl``, its outcome as Dial reports it."""
    try:
        leg = ctl.place_call(peer, exten, caller)
    except (KeyError, ValueError) as exc:
        log.warning("Dial(IAX2/%s/%s): %s", peer, exten, exc)
        return DialOutcome("CHANUNAVAIL", cause=3)
    try:
        status = await asyncio.wait_for(leg.wait_answer(), timeout)
    except TimeoutError:
        await leg.hangup(19)
        return DialOutcome("NOANSWER", cause=19)
    except asyncio.CancelledError:
        await leg.hangup(16)
        raise
    if status == "answered":
        return DialOutcome("ANSWER", cause=16, leg=leg)
    if not leg.hungup:
        await leg.hangup(17 if status == "busy" else 34)
    if status == "busy":
        return DialOutcome("BUSY", cause=17)
    if status == "congestion":
        return DialOutcome("CONGESTION", cause=34)
    cause = leg.cause or 34
    if cause == 17:
        return DialOutcome("BUSY", cause=17)
    if cause in (18, 19):
        return DialOutcome("NOANSWER", cause=cause)
    if cause in (1, 3, 20, 21, 27, 38, 50, 58, 88):
        return DialOutcome("CHANUNAVAIL", cause=cause)
    return DialOutcome("CONGESTION", cause=cause)
