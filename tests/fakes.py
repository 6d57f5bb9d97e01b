"""A fake :class:`iaxgw.gateway.pbx.channel.Channel` that records calls and drives media ticks.

``FakeChannel.start_clock()`` runs a media tick every ``tick`` seconds (default 2 ms, i.e. 10x
real time): each tick hands the next payload of ``feed`` (what the far end "sends") to the
installed handler and stores what the handler returns in ``sent``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

from iaxgw.gateway.pbx.channel import DialOutcome, MediaHandler

DialFn = Callable[[str, str, float | None], Awaitable[DialOutcome]]


class FakeChannel:
    def __init__(self, exten: str = "300", context: str = "from-iax", *, codec: str = "ulaw",
                 caller_num: str = "200", caller_name: str = "Alice", peer: str = "office-a",
                 feed: Iterable[bytes] = (), hangup_after_feed: bool = False,
                 feed_when: Callable[[MediaHandler], bool] | None = None,
                 dial: DialFn | None = None, tick: float = 0.002,
                 hangup_on: dict[str, float] | None = None) -> None:
        self.exten, self.context = exten, context
        self.caller_num, self.caller_name, self.peer = caller_num, caller_name, peer
        self.codec = codec
        self.variables: dict[str, str] = {}
        self.events: list[tuple[object, ...]] = []
        self.sent: list[bytes] = []
        self.feed: deque[bytes] = deque(feed)
        self.hangup_after_feed = hangup_after_feed
        self.feed_when = feed_when
        self.media: MediaHandler | None = None
        self.hangup_cause: int | None = None
        self.far_hung = False
        self.dials: list[tuple[str, str, float | None]] = []
        self._dial = dial
        self._hung = asyncio.Event()
        self._tick = tick
        self._ts = 0
        self._clock: asyncio.Task[None] | None = None
        self.hangup_on = hangup_on or {}     # indication -> seconds until the far end hangs up

    # Channel API
    async def answer(self) -> None:
        self.events.append(("answer",))

    async def indicate(self, what: str) -> None:
        self.events.append(("indicate", what))
        if what in self.hangup_on:
            asyncio.get_running_loop().call_later(self.hangup_on[what], self.far_hangup)

    async def hangup(self, cause: int = 16) -> None:
        if self._hung.is_set():
            return
        self.hangup_cause = cause
        self.events.append(("hangup", cause))
        self._hung.set()

    def set_media(self, handler: MediaHandler | None) -> None:
        self.media = handler
        self.events.append(("media", type(handler).__name__ if handler else None))

    async def wait_hangup(self, timeout: float | None) -> bool:
        try:
            await asyncio.wait_for(self._hung.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def hungup(self) -> bool:
        return self._hung.is_set()

    async def dial_iax2(self, peer: str, exten: str, timeout: float | None) -> DialOutcome:
        self.dials.append((peer, exten, timeout))
        if self._dial is None:
            return DialOutcome("CHANUNAVAIL", 20)
        return await self._dial(peer, exten, timeout)

    # test driving
    def far_hangup(self) -> None:
        if not self._hung.is_set():
            self.far_hung = True
            self.events.append(("far_hangup",))
            self._hung.set()

    def tick_once(self) -> None:
        h = self.media
        if h is None or self.hungup:
            return
        self._ts += 20
        if self.feed and (self.feed_when is None or self.feed_when(h)):
            h.on_voice(self.feed.popleft(), self._ts)
            if not self.feed and self.hangup_after_feed:
                self.far_hangup()
                return
        out = h.next_payload()
        if out is not None:
            self.sent.append(out)

    def start_clock(self) -> None:
        async def clock() -> None:
            while not self.hungup:
                self.tick_once()
                await asyncio.sleep(self._tick)

        self._clock = asyncio.ensure_future(clock())

    async def stop_clock(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock

    def kinds(self) -> list[object]:
        return [e[0] if len(e) == 1 else e for e in self.events if e[0] != "media"]
