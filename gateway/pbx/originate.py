"""Calls a running ``iaxgw serve`` places on demand: ``iaxgw ctl originate EXTEN``.

As Asterisk's ``channel originate Local/EXTEN@CONTEXT``: an emulated local phone (a
:class:`PhoneChannel`, the way office-b's own phones call) runs serve's dialplan at
``CONTEXT``/``EXTEN`` -- in the seed's office-b, ``[internal]`` dials ``IAX2/office-a/...`` --
and speaks ``tone``, ``echo``, ``silence`` or a WAV file for ``--duration`` seconds once the
call is answered, then hangs up.  What it hears is counted: frames, and with ``tone`` how many
were its own tone coming back (an echo at the far end).  :class:`Originator` keeps the calls by
id for the control socket (``originate``, ``originate_status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iaxgw.gateway.pbx.channel import DialOutcome, MediaHandler
from iaxgw.gateway.pbx.dialplan_apps import FRAME, SILENCE, frames, milliwatt_payloads, read_wav
from iaxgw.gateway.pbx.dialplan_apps import encode as g711_encode
from iaxgw.gateway.pbx.session import CallControl, dial_iax2, wait_set
from iaxgw.gateway.serve.control import CommandRefused

log = logging.getLogger("iaxgw.originate")

TICK = 0.020
PHONE_TONE_HZ = 697.0          # 8,000 samples to repeat: 50 distinct payloads, a signature
DEFAULT_CONTEXT = "internal"
DEFAULT_DURATION = 10.0
MAX_DURATION = 3600.0
KEEP_ENDED = 50                # ended originates kept for `originate_status`
MEDIA_CHOICES = ("tone", "echo", "silence")


@dataclass(slots=True)
class PhoneAudio:
    """What the phone said and heard."""

    sent: int = 0
    heard: int = 0
    heard_own: int = 0           # heard payloads that are the phone's own tone (echoed)
    heard_silent: int = 0
    first_heard_s: float | None = None
    own: frozenset[bytes] = field(default_factory=frozenset)

    def on_heard(self, payload: bytes, silence: bytes, elapsed_s: float) -> None:
        self.heard += 1
        if self.first_heard_s is None:
            self.first_heard_s = elapsed_s
        if payload in self.own:
            self.heard_own += 1
        elif payload == silence:
            self.heard_silent += 1


def phone_payloads(media: str, codec: str) -> list[bytes] | None:
    """The payloads a phone plays in a loop (None: it echoes what it hears)."""
    if media == "echo":
        return None
    if media == "tone":
        return milliwatt_payloads(codec, PHONE_TONE_HZ)
    if media == "silence":
        return [SILENCE[codec] * FRAME]
    pcm = read_wav(Path(media))
    if pcm is None:
        raise CommandRefused(f"--media {media}: not an 8 kHz mono 16-bit WAV file we can read")
    return frames(g711_encode(pcm, codec), codec) or [SILENCE[codec] * FRAME]


class PhoneChannel:
    """An emulated local phone placing a call into the dialplan (implements ``Channel``)."""

    def __init__(self, ctl: CallControl, ident: int, *, exten: str, context: str,
                 media: str, duration: float, codec: str = "ulaw") -> None:
        self._ctl = ctl
        self.ident = ident
        self.exten = exten
        self.context = context
        self.caller_num = ""
        self.caller_name = "iaxgw ctl originate"
        self.peer = "Local"
        self.codec = codec
        self.variables: dict[str, str] = {}
        self.name = f"Local/{exten}@{context}-{ident:04d}"
        self.media = media
        self.duration = duration
        self.handler: MediaHandler | None = None
        self.audio = PhoneAudio()
        self._says = phone_payloads(media, codec)
        if media == "tone" and self._says:
            self.audio.own = frozenset(self._says)
        self.started = time.monotonic()
        self.answered_s: float | None = None
        self.ended_s: float | None = None
        self.cause = 0
        self.leg: str | None = None
        self.indications: list[str] = []
        self._ended = asyncio.Event()
        self._media_task: asyncio.Task[None] | None = None

    # --- Channel --------------------------------------------------------------------------

    @property
    def hungup(self) -> bool:
        return self._ended.is_set()

    async def answer(self) -> None:
        """The phone is the caller: it is off hook from the start."""

    async def indicate(self, what: str) -> None:
        self.indications.append(what.lower())

    async def hangup(self, cause: int = 16) -> None:
        if self._ended.is_set():
            return
        self.cause = cause
        self.ended_s = time.monotonic() - self.started
        self._ended.set()
        self.handler = None
        task = self._media_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def set_media(self, handler: MediaHandler | None) -> None:
        """The dialplan connects the phone (Dial's bridge, or a local phone's audio): it
        starts talking and hears what comes back, for ``duration`` s, then hangs up."""
        self.handler = handler
        if handler is not None and self.answered_s is None and not self.hungup:
            self.answered_s = time.monotonic() - self.started
            self._media_task = asyncio.get_running_loop().create_task(
                self._talk(), name=f"phone-{self.name}")

    async def wait_hangup(self, timeout: float | None) -> bool:
        return await wait_set(self._ended, timeout)

    async def dial_iax2(self, peer: str, exten: str, timeout: float | None) -> DialOutcome:
        outcome = await dial_iax2(self._ctl, self, peer, exten, timeout)
        if outcome.leg is not None:
            self.leg = str(getattr(outcome.leg, "name", "")) or None
        return outcome

    # --- the phone's side of the audio ----------------------------------------------------

    async def _talk(self) -> None:
        """On a 20 ms grid: say the next payload, hear what the far end sent; hang up when
        ``duration`` is over."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        silence = SILENCE[self.codec] * FRAME
        last_heard = silence
        k = 0
        try:
            while not self.hungup and k * TICK < self.duration:
                k += 1
                await asyncio.sleep(max(0.0, start + k * TICK - loop.time()))
                handler = self.handler
                if handler is None:
                    continue
                says = self._says
                payload = last_heard if says is None else says[(k - 1) % len(says)]
                handler.on_voice(payload, int(k * TICK * 1000))
                self.audio.sent += 1
                heard = handler.next_payload()
                if heard is not None:
                    last_heard = heard
                    self.audio.on_heard(heard, silence, loop.time() - start)
        finally:
            if not self.hungup:
                await self.hangup(16)

    def status(self) -> dict[str, Any]:
        a = self.audio
        return {
            "id": self.ident, "channel": self.name, "exten": self.exten,
            "context": self.context, "media": self.media, "duration_s": self.duration,
            "state": "ended" if self.hungup else ("up" if self.answered_s is not None
                                                  else "dialling"),
            "dialstatus": self.variables.get("DIALSTATUS") or None,
            "answered": self.answered_s is not None,
            "answer_ms": round(self.answered_s * 1000, 1) if self.answered_s is not None
            else None,
            "ended_s": round(self.ended_s, 3) if self.ended_s is not None else None,
            "cause": self.cause or None, "leg": self.leg,
            "indications": list(self.indications),
            "frames_sent": a.sent, "frames_heard": a.heard,
            "heard_own_tone": a.heard_own if self.media == "tone" else None,
            "heard_silent": a.heard_silent,
            "first_heard_ms": round(a.first_heard_s * 1000, 1) if a.first_heard_s is not None
            else None,
        }


RunDialplan = Callable[[PhoneChannel], Coroutine[Any, Any, None]]


class Originator:
    """The calls ``iaxgw ctl originate`` asked a serve for, by id."""

    def __init__(self, ctl: CallControl, dialplan: Any, run_dialplan: RunDialplan) -> None:
        self._ctl = ctl
        self._dialplan = dialplan
        self._run = run_dialplan
        self._ids = itertools.count(1)
        self.calls: dict[int, PhoneChannel] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def originate(self, request: Mapping[str, Any]) -> dict[str, Any]:
        exten, context, media, duration = _originate_args(request)
        if self._dialplan is None or self._dialplan.find(context, exten) is None:
            raise CommandRefused(f"extension {exten}@{context} does not exist in this serve's "
                                 "extensions.conf")
        phone = PhoneChannel(self._ctl, next(self._ids), exten=exten, context=context,
                             media=media, duration=duration)
        self.calls[phone.ident] = phone
        task = asyncio.get_running_loop().create_task(self._run(phone),
                                                      name=f"originate-{phone.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._forget_old()
        log.info("originate %s (media %s, %g s)", phone.name, media, duration)
        return phone.status()

    def status(self, request: Mapping[str, Any]) -> dict[str, Any]:
        ident = request.get("id")
        phone = self.calls.get(ident) if isinstance(ident, int) else None
        if phone is None:
            raise CommandRefused(f"no originated call with id {ident!r}")
        return phone.status()

    def _forget_old(self) -> None:
        ended = [i for i, p in self.calls.items() if p.hungup]
        for i in ended[:max(0, len(ended) - KEEP_ENDED)]:
            del self.calls[i]

    async def stop(self) -> None:
        for phone in list(self.calls.values()):
            await phone.hangup(16)
        tasks = [t for t in self._tasks if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        for t in tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)


def _originate_args(request: Mapping[str, Any]) -> tuple[str, str, str, float]:
    exten = request.get("exten")
    context = request.get("context") or DEFAULT_CONTEXT
    media = request.get("media") or "tone"
    duration = request.get("duration", DEFAULT_DURATION)
    if not isinstance(exten, str) or not exten or not all(c.isalnum() or c in "*#+"
                                                          for c in exten):
        raise CommandRefused(f"originate needs an extension of digits, * or #, not {exten!r}")
    if not isinstance(context, str) or not context.replace("-", "").replace("_", "").isalnum():
        raise CommandRefused(f"bad context {context!r}")
    if not isinstance(media, str) or (media not in MEDIA_CHOICES
                                      and not media.lower().endswith(".wav")):
        raise CommandRefused(f"--media must be tone, echo, silence or a FILE.wav, not {media!r}")
    if isinstance(duration, bool) or not isinstance(duration, int | float) \
            or not 0 < duration <= MAX_DURATION:
        raise CommandRefused(f"--duration must be in (0, {MAX_DURATION:g}] s, not {duration!r}")
    return exten, context, media, float(duration)
