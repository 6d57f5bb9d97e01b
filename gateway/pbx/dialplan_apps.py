"""Dialplan applications, written against :class:`iaxgw.gateway.pbx.channel.Channel`.

Each application is ``async def app(session, data) -> Result`` where ``data`` is the argument
text after variable substitution.  It returns None to go on with the next priority,
:class:`Stop` to end the dialplan (hanging up with its cause) or :class:`Jump` to continue
elsewhere.  Names are case-insensitive, as in Asterisk.

Media is 8 kHz G.711 in the channel's codec, 160 bytes (20 ms) per payload.  Files (Playback,
Record, Voicemail) are 8 kHz mono 16-bit WAV.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import io
import json
import logging
import math
import os
import re
import sys
import time
import wave
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from iaxgw._core import g711
from iaxgw.gateway.conf.config import PhoneBehaviour, PhonesConfig, parse_callerid
from iaxgw.gateway.pbx.channel import Channel, MediaHandler
from iaxgw.gateway.pbx.dialplan import Dialplan, split_args, substitute
from iaxgw.gateway.safefs import private_subdir, write_private_file

__all__ = ["APPLICATIONS", "Jump", "Session", "Stop", "decode", "encode", "run"]

log = logging.getLogger("iaxgw.apps")

RATE = 8000
FRAME = 160                      # samples (and G.711 bytes) per 20 ms
SILENCE = {"ulaw": b"\xff", "alaw": b"\xd5"}
SILENCE_THRESHOLD = 256          # mean |sample| below this is silence (Asterisk's default)
TONE_AMPLITUDE = 22900           # about 0 dBm0 in G.711
_NAME_RE = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True, slots=True)
class Stop:
    """End the dialplan; hang up with ``cause`` unless already hung up."""

    cause: int = 16


@dataclass(frozen=True, slots=True)
class Jump:
    """Continue at ``context``/``exten``/``priority``."""

    context: str
    exten: str
    priority: int


Result = Stop | Jump | None
App = Callable[["Session", str], Awaitable[Result]]


# --- audio helpers ----------------------------------------------------------------------------

def _wav_byte_order(pcm: bytes) -> bytes:
    """Native-endian 16-bit samples <-> little-endian (WAV order)."""
    if sys.byteorder == "little":
        return pcm
    a = array.array("h", pcm)
    a.byteswap()
    return a.tobytes()


def encode(pcm: bytes, codec: str) -> bytes:
    """Native-endian 16-bit PCM -> G.711 in ``codec``."""
    return g711.alaw_encode(pcm) if codec == "alaw" else g711.ulaw_encode(pcm)


def decode(payload: bytes, codec: str) -> bytes:
    """G.711 in ``codec`` -> native-endian 16-bit PCM."""
    return g711.alaw_decode(payload) if codec == "alaw" else g711.ulaw_decode(payload)


def transcode(payload: bytes, src: str, dst: str) -> bytes:
    if src == dst:
        return payload
    return g711.ulaw_to_alaw(payload) if src == "ulaw" else g711.alaw_to_ulaw(payload)


def tone_pcm(freq: float, seconds: float, amplitude: int = TONE_AMPLITUDE,
             phase0: int = 0) -> bytes:
    n = round(seconds * RATE)
    w = 2 * math.pi * freq / RATE
    return array.array("h", (round(amplitude * math.sin(w * (k + phase0)))
                             for k in range(n))).tobytes()


def frames(encoded: bytes, codec: str) -> list[bytes]:
    """Cut G.711 into 160-byte payloads, padding the last with silence."""
    out = [encoded[i:i + FRAME] for i in range(0, len(encoded), FRAME)]
    if out and len(out[-1]) < FRAME:
        out[-1] = out[-1] + SILENCE[codec] * (FRAME - len(out[-1]))
    return out


def read_wav(path: Path) -> bytes | None:
    """8 kHz mono 16-bit WAV -> native PCM; None (with a warning) if missing or another format."""
    try:
        with wave.open(str(path), "rb") as w:
            if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, RATE):
                log.warning("%s: not 8 kHz mono 16-bit WAV (%d ch, %d bit, %d Hz); skipped", path,
                            w.getnchannels(), 8 * w.getsampwidth(), w.getframerate())
                return None
            return _wav_byte_order(w.readframes(w.getnframes()))
    except FileNotFoundError:
        log.warning("%s: file not found", path)
    except (OSError, wave.Error, EOFError) as exc:
        log.warning("%s: cannot read WAV: %s", path, exc)
    return None


def wav_bytes(pcm: bytes) -> bytes:
    """8 kHz mono 16-bit WAV file contents for native PCM."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(_wav_byte_order(pcm))
    return buf.getvalue()


def write_wav(path: Path, pcm: bytes, *, exclusive: bool = False) -> None:
    """Write a WAV file as a new 0600 file renamed into place (never through a link);
    ``exclusive``: FileExistsError if ``path`` exists."""
    write_private_file(path, wav_bytes(pcm), exclusive=exclusive)


def write_numbered_wav(pattern: str, pcm: bytes) -> tuple[int, Path]:
    """Write the WAV at the first ``pattern % n`` (n = 0, 1, ...) that does not exist yet;
    taken atomically, so two calls never get the same file."""
    n = 0
    while True:
        path = Path(pattern % n)
        if not path.exists():
            try:
                write_wav(path, pcm, exclusive=True)
                return n, path
            except FileExistsError:
                pass
        n += 1


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def line_safe(value: object) -> str:
    """``value`` for one ``key=value`` line: control characters (newlines) become spaces."""
    return _CONTROL_CHARS.sub(" ", str(value))


# --- media handlers -----------------------------------------------------------------------

class PlaySource:
    """Sends a list of payloads once (then ``done`` is set) or forever (``loop``)."""

    def __init__(self, payloads: list[bytes], loop: bool = False) -> None:
        self.payloads = payloads
        self.loop = loop
        self.pos = 0
        self.done = asyncio.Event()
        if not payloads:
            self.done.set()

    def on_voice(self, payload: bytes, ts: int) -> None:
        pass

    def next_payload(self) -> bytes | None:
        if self.pos >= len(self.payloads):
            if not self.loop or not self.payloads:
                self.done.set()
                return None
            self.pos = 0
        p = self.payloads[self.pos]
        self.pos += 1
        if self.pos >= len(self.payloads) and not self.loop:
            self.done.set()
        return p


class Echo:
    """Sends back what it receives, unchanged (same codec), keeping at most ``depth`` queued.

    ``immediate`` tells a channel that can send outside the 20 ms tick to echo each payload as
    it arrives (as Asterisk's Echo does) instead of queueing it for the next tick: a queue that
    fills under bursty (trunked) arrival would otherwise add a standing delay to every frame.
    """

    immediate = True

    def __init__(self, depth: int = 10) -> None:
        self.q: deque[bytes] = deque(maxlen=depth)

    def on_voice(self, payload: bytes, ts: int) -> None:
        self.q.append(payload)

    def next_payload(self) -> bytes | None:
        return self.q.popleft() if self.q else None


class Recorder:
    """Collects received audio as PCM; sets ``done`` on max length or silence."""

    def __init__(self, codec: str, max_seconds: float | None = None,
                 silence_seconds: float | None = None) -> None:
        self.codec = codec
        self.pcm = bytearray()
        self.max_samples = int(max_seconds * RATE) if max_seconds else None
        self.silence_samples = int(silence_seconds * RATE) if silence_seconds else None
        self.silent_run = 0
        self.reason = ""
        self.done = asyncio.Event()

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / RATE

    def on_voice(self, payload: bytes, ts: int) -> None:
        if self.done.is_set():
            return
        pcm = decode(payload, self.codec)
        if self.max_samples is not None:
            pcm = pcm[:2 * (self.max_samples - len(self.pcm) // 2)]
        self.pcm += pcm
        if self.silence_samples is not None:
            samples = array.array("h", pcm)
            level = sum(abs(s) for s in samples) / max(len(samples), 1)
            self.silent_run = self.silent_run + len(samples) if level < SILENCE_THRESHOLD else 0
            if self.silent_run >= self.silence_samples:
                self.reason = "SILENCE"
                self.done.set()
        if self.max_samples is not None and len(self.pcm) // 2 >= self.max_samples:
            self.reason = "TIMEOUT"
            self.done.set()

    def next_payload(self) -> bytes | None:
        return None


class _BridgeSide:
    def __init__(self, outq: deque[bytes], inq: deque[bytes],
                 conv: Callable[[bytes], bytes]) -> None:
        self.outq, self.inq, self.conv = outq, inq, conv

    def on_voice(self, payload: bytes, ts: int) -> None:
        self.outq.append(self.conv(payload))

    def next_payload(self) -> bytes | None:
        return self.inq.popleft() if self.inq else None


async def _event_wait(event: asyncio.Event) -> bool:
    await event.wait()
    return True


# --- the session ----------------------------------------------------------------------------

@dataclass(slots=True)
class Session:
    """One dialplan run on one channel."""

    dialplan: Dialplan
    channel: Channel
    phones: PhonesConfig | None = None
    spool_dir: Path = Path(".")
    sounds_dir: Path | None = None
    vm_max_seconds: float = 300.0
    time_scale: float = 1.0        # multiplies dialplan waits (Wait, Dial timeouts, phones)
    context: str = ""
    exten: str = ""
    priority: int = 1
    answered: bool = False

    # variables
    def get_var(self, name: str) -> str | None:
        ch = self.channel
        builtin = {"EXTEN": self.exten, "CONTEXT": self.context, "PRIORITY": str(self.priority),
                   "CALLERIDNUM": ch.caller_num, "CALLERIDNAME": ch.caller_name,
                   "CHANNEL": f"IAX2/{ch.peer}", "EPOCH": str(int(time.time()))}
        if name in ch.variables:
            return ch.variables[name]
        if name in builtin:
            return builtin[name]
        return self.dialplan.globals.get(name)

    def function(self, name: str, arg: str) -> str | None:
        ch = self.channel
        if name == "CALLERID":
            what = arg.strip().lower()
            if what in ("num", "number"):
                return ch.caller_num
            if what == "name":
                return ch.caller_name
            if what == "all":
                return f'"{ch.caller_name}" <{ch.caller_num}>'
            return None
        if name == "LEN":
            return str(len(arg))
        if name == "GLOBAL":
            return self.dialplan.globals.get(arg.strip())
        if name == "EXISTS":
            return "1" if self.get_var(arg.strip()) else "0"
        log.warning("function %s() is not supported; empty", name)
        return None

    def substitute(self, text: str) -> str:
        return substitute(text, self.get_var, self.function)

    def set_var(self, name: str, value: str) -> None:
        ch = self.channel
        if name.upper().startswith("GLOBAL(") and name.endswith(")"):
            self.dialplan.globals[name[7:-1]] = value
        elif name.upper() in ("CALLERID(NUM)", "CALLERID(NUMBER)"):
            ch.caller_num = value
        elif name.upper() == "CALLERID(NAME)":
            ch.caller_name = value
        elif name.upper() == "CALLERID(ALL)":
            ch.caller_name, ch.caller_num = parse_callerid(value)
        else:
            ch.variables[name] = value

    def secs(self, seconds: float | None) -> float | None:
        """A dialplan duration scaled by ``time_scale`` (None stays None)."""
        return None if seconds is None else seconds * self.time_scale

    async def ensure_answered(self) -> None:
        if not self.answered:
            await self.channel.answer()
            self.answered = True

    async def wait(self, event: asyncio.Event | None, timeout: float | None) -> str:
        """Wait for ``event``, hangup or ``timeout``: "done", "hangup" or "timeout"."""
        ch = self.channel
        if ch.hungup:
            return "hangup"
        hang = asyncio.ensure_future(ch.wait_hangup(timeout))
        tasks: set[asyncio.Future[bool]] = {hang}
        evt: asyncio.Future[bool] | None = None
        if event is not None:
            evt = asyncio.ensure_future(_event_wait(event))
            tasks.add(evt)
        try:
            done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                if not t.done():
                    t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if hang in done and hang.result():
            return "hangup"
        if evt is not None and evt in done:
            return "done"
        return "hangup" if ch.hungup else "timeout"

    async def play(self, payloads: list[bytes]) -> bool:
        """Send payloads to the caller; False if the call ended first."""
        src = PlaySource(payloads)
        self.channel.set_media(src)
        try:
            res = await self.wait(src.done, None)
        finally:
            self.channel.set_media(None)
        return res == "done"

    async def play_pcm(self, pcm: bytes) -> bool:
        return await self.play(frames(encode(pcm, self.channel.codec), self.channel.codec))

    async def beep(self) -> bool:
        return await self.play_pcm(tone_pcm(1000.0, 0.25, 8000))

    def sound_path(self, name: str) -> Path | None:
        if self.sounds_dir is None or not name or ".." in Path(name).parts:
            return None
        p = self.sounds_dir / name
        return p if p.suffix else p.with_suffix(".wav")

    # execution
    async def run(self, context: str, exten: str, priority: int = 1) -> int:
        plan, ch = self.dialplan, self.channel
        self.context, self.exten, self.priority = context, exten, priority
        ch.context, ch.exten = context, exten
        if plan.find(context, exten, priority) is None:
            if plan.find(context, "i", 1) is not None:
                ch.variables["INVALID_EXTEN"] = exten
                self._goto(context, "i", 1)
            else:
                log.info("no extension %s@%s; hanging up (cause 3)", exten, context)
                await ch.hangup(3)
                return 3
        cause = await self._loop()
        hctx = self.context
        if plan.find(hctx, "h", 1) is not None and self.exten != "h":
            self._goto(hctx, "h", 1)
            await self._loop(limit=100)
        return cause

    def _goto(self, context: str, exten: str, priority: int) -> None:
        self.context, self.exten, self.priority = context, exten, priority
        self.channel.context, self.channel.exten = context, exten

    async def _loop(self, limit: int | None = None) -> int:
        plan, ch = self.dialplan, self.channel
        steps = 0
        while True:
            if ch.hungup and self.exten != "h":
                return 16
            step = plan.step(self.context, self.exten, self.priority)
            if step is None:
                return await self._fallthrough()
            steps += 1
            if limit is not None and steps > limit:
                return 16
            app = APPLICATIONS.get(step.app.lower())
            data = self.substitute(step.data)
            log.debug("%s@%s:%d %s(%s)", self.exten, self.context, self.priority, step.app, data)
            if app is None:
                log.warning("%s: no application '%s'; hanging up", step.source, step.app)
                await ch.hangup(16)
                return 16
            res = await app(self, data)
            if isinstance(res, Stop):
                await ch.hangup(res.cause)
                return res.cause
            if isinstance(res, Jump):
                self._goto(res.context, res.exten, res.priority)
                if plan.step(res.context, res.exten, res.priority) is None:
                    log.warning("%s: Goto to missing %s,%s,%d; hanging up", step.source,
                                res.context, res.exten, res.priority)
                    await ch.hangup(16)
                    return 16
                continue
            self.priority += 1

    async def _fallthrough(self) -> int:
        ch = self.channel
        if ch.hungup:
            return 16
        status = ch.variables.get("DIALSTATUS", "")
        if status == "BUSY":
            await ch.indicate("busy")
            await ch.wait_hangup(self.secs(10.0))
            cause = 17
        elif status in ("CONGESTION", "CHANUNAVAIL"):
            await ch.indicate("congestion")
            await ch.wait_hangup(self.secs(10.0))
            cause = 34
        else:
            cause = 16
        await ch.hangup(cause)
        return cause


# --- applications ---------------------------------------------------------------------------

def _seconds(text: str, default: float | None) -> float | None:
    text = text.strip()
    if not text:
        return default
    try:
        v = float(text)
    except ValueError:
        log.warning("%r is not a number of seconds; using %s", text, default)
        return default
    return v if v > 0 else default


async def app_answer(s: Session, data: str) -> Result:
    await s.ensure_answered()
    delay = _seconds(data, None)
    if delay and await s.wait(None, s.secs(delay / 1000.0)) == "hangup":
        return Stop()
    return None


async def app_ringing(s: Session, data: str) -> Result:
    await s.channel.indicate("ringing")
    return None


async def app_progress(s: Session, data: str) -> Result:
    await s.channel.indicate("progress")
    return None


async def app_wait(s: Session, data: str) -> Result:
    secs = _seconds(data, 0.0) or 0.0
    if await s.wait(None, s.secs(secs)) == "hangup":
        return Stop()
    return None


async def app_echo(s: Session, data: str) -> Result:
    s.channel.set_media(Echo())
    try:
        await s.wait(None, None)
    finally:
        s.channel.set_media(None)
    return Stop()


def milliwatt_payloads(codec: str, freq: float = 1004.0) -> list[bytes]:
    """One exact repeat period of the tone (1004 Hz: 2000 samples = 250 ms) as payloads."""
    period = RATE // math.gcd(int(freq), RATE)
    reps = FRAME // math.gcd(period, FRAME)
    pcm = tone_pcm(freq, period * reps / RATE)
    return frames(encode(pcm, codec), codec)


async def app_milliwatt(s: Session, data: str) -> Result:
    await s.ensure_answered()
    s.channel.set_media(PlaySource(milliwatt_payloads(s.channel.codec), loop=True))
    try:
        await s.wait(None, None)
    finally:
        s.channel.set_media(None)
    return Stop()


async def app_playback(s: Session, data: str) -> Result:
    args = split_args(data)
    options = args[1] if len(args) > 1 else ""
    if "noanswer" not in options:
        await s.ensure_answered()
    status = "SUCCESS"
    for name in args[0].split("&"):
        path = s.sound_path(name.strip())
        pcm = read_wav(path) if path is not None else None
        if pcm is None:
            log.warning("Playback(%s): file not found or unusable; continuing", name)
            status = "FAILED"
            continue
        if not await s.play_pcm(pcm):
            s.channel.variables["PLAYBACKSTATUS"] = status
            return Stop()
    s.channel.variables["PLAYBACKSTATUS"] = status
    return None


async def _record(s: Session, max_seconds: float | None, silence: float | None) -> Recorder:
    rec = Recorder(s.channel.codec, max_seconds, silence)
    s.channel.set_media(rec)
    try:
        # wall-clock guard for callers that stop sending audio
        guard = max_seconds + 2.0 if max_seconds else None
        res = await s.wait(rec.done, guard)
    finally:
        s.channel.set_media(None)
    if res == "hangup":
        rec.reason = "HANGUP"
    elif res == "timeout":
        rec.reason = "TIMEOUT"
    return rec


async def app_record(s: Session, data: str) -> Result:
    args = split_args(data)
    name = args[0].strip()
    silence = _seconds(args[1], None) if len(args) > 1 else None
    maxdur = _seconds(args[2], None) if len(args) > 2 else None
    options = args[3] if len(args) > 3 else ""
    fname = Path(name)
    if fname.suffix.lower() != ".wav" or not name:
        log.warning("Record(%s): only .wav is supported", name)
        s.channel.variables["RECORD_STATUS"] = "ERROR"
        return None
    if fname.is_absolute() or ".." in fname.parts:
        log.warning("Record(%s): path must be relative to the spool; using %s", name,
                    fname.name)
        fname = Path(fname.name)
    await s.ensure_answered()
    if "q" not in options and not await s.beep():
        s.channel.variables["RECORD_STATUS"] = "HANGUP"
        return Stop()
    rec = await _record(s, maxdur, silence)
    try:
        base = private_subdir(s.spool_dir, "recordings", *fname.parent.parts)
        if "%d" in name:
            pattern = str(base / fname.name).replace("%", "%%").replace("%%d", "%d")
            _, path = write_numbered_wav(pattern, bytes(rec.pcm))
        else:
            path = base / fname.name
            write_wav(path, bytes(rec.pcm))
    except OSError as exc:
        log.error("Record(%s): not written: %s", name, exc)
        s.channel.variables["RECORD_STATUS"] = "ERROR"
        return Stop() if rec.reason == "HANGUP" else None
    s.channel.variables["RECORDED_FILE"] = str(path.with_suffix(""))
    s.channel.variables["RECORD_STATUS"] = rec.reason or "DTMF"
    return Stop() if rec.reason == "HANGUP" else None


def _save_voicemail(s: Session, box: str, vmctx: str, rec: Recorder, started: float) -> Path:
    """msgNNNN.wav, .json and .txt in the mailbox folder (made private under the spool)."""
    folder = private_subdir(s.spool_dir, "voicemail", vmctx, box)
    _n, wav = write_numbered_wav(str(folder / "msg%04d.wav"), bytes(rec.pcm))
    meta = {"mailbox": box, "context": vmctx, "callerid_num": s.channel.caller_num,
            "callerid_name": s.channel.caller_name, "exten": s.exten,
            "dialplan_context": s.context, "peer": s.channel.peer,
            "origtime": int(started), "duration": round(rec.seconds, 3),
            "file": wav.name}
    write_private_file(wav.with_suffix(".json"), (json.dumps(meta, indent=1) + "\n").encode())
    lines = "".join(f"{k}={line_safe(v)}\n" for k, v in (
        ("origmailbox", box), ("context", s.context), ("exten", s.exten),
        ("callerid", f'"{s.channel.caller_name}" <{s.channel.caller_num}>'),
        ("origtime", int(started)), ("duration", round(rec.seconds))))
    write_private_file(wav.with_suffix(".txt"),
                       ("[message]\n" + lines).encode("utf-8", "surrogateescape"))
    return wav


async def app_voicemail(s: Session, data: str) -> Result:
    args = split_args(data)
    box_spec = args[0].split("&")[0].strip()
    options = args[1].lower() if len(args) > 1 else ""
    box, _, vmctx = box_spec.partition("@")
    vmctx = vmctx or "default"
    if not _NAME_RE.match(box) or not _NAME_RE.match(vmctx):
        log.warning("VoiceMail(%s): invalid mailbox", box_spec)
        s.channel.variables["VMSTATUS"] = "FAILED"
        return None
    folder = s.spool_dir / "voicemail" / vmctx / box
    await s.ensure_answered()
    greeting = folder / ("busy.wav" if "b" in options else "unavail.wav")
    if ("u" in options or "b" in options) and greeting.exists():
        pcm = read_wav(greeting)
        if pcm is not None and not await s.play_pcm(pcm):
            s.channel.variables["VMSTATUS"] = "FAILED"
            return Stop()
    if not await s.beep():
        s.channel.variables["VMSTATUS"] = "FAILED"
        return Stop()
    started = time.time()
    rec = await _record(s, s.vm_max_seconds, None)
    if not rec.pcm:
        log.info("VoiceMail(%s): nothing recorded", box_spec)
        s.channel.variables["VMSTATUS"] = "FAILED"
    else:
        try:
            wav = _save_voicemail(s, box, vmctx, rec, started)
        except OSError as exc:
            log.error("VoiceMail(%s): message not saved: %s", box_spec, exc)
            s.channel.variables["VMSTATUS"] = "FAILED"
        else:
            log.info("voicemail for %s@%s: %s (%.1f s)", box, vmctx, wav, rec.seconds)
            s.channel.variables["VMSTATUS"] = "SUCCESS"
    return Stop() if rec.reason == "HANGUP" else None


def _cause_arg(data: str, default: int) -> int:
    try:
        return int(data.strip()) if data.strip() else default
    except ValueError:
        log.warning("bad hangup cause %r; using %d", data, default)
        return default


async def _signal(s: Session, what: str, data: str, cause: int) -> Result:
    await s.channel.indicate(what)
    await s.wait(None, s.secs(_seconds(data, None)))
    return Stop(cause)


async def app_busy(s: Session, data: str) -> Result:
    return await _signal(s, "busy", data, 17)


async def app_congestion(s: Session, data: str) -> Result:
    return await _signal(s, "congestion", data, 34)


async def app_hangup(s: Session, data: str) -> Result:
    return Stop(_cause_arg(data, 16))


async def app_set(s: Session, data: str) -> Result:
    name, eq, value = data.partition("=")
    if not eq or not name.strip():
        log.warning("Set(%s): expected VAR=value", data)
        return None
    s.set_var(name.strip(), value)
    return None


async def app_noop(s: Session, data: str) -> Result:
    log.info("NoOp(%s)", data)
    return None


def _target(s: Session, spec: str) -> Jump | None:
    parts = [p.strip() for p in split_args(spec)]
    if len(parts) == 1:
        ctx, ext, pri = s.context, s.exten, parts[0]
    elif len(parts) == 2:
        ctx, (ext, pri) = s.context, parts
    elif len(parts) == 3:
        ctx, ext, pri = parts
    else:
        return None
    if pri.isdigit():
        return Jump(ctx, ext, int(pri))
    found = s.dialplan.find_label(ctx, ext, pri)
    if found is None:
        log.warning("Goto: no label %r in %s,%s", pri, ctx, ext)
        return None
    return Jump(ctx, ext, found)


async def app_goto(s: Session, data: str) -> Result:
    j = _target(s, data)
    return j if j is not None else Stop()


async def app_gotoif(s: Session, data: str) -> Result:
    cond, _, rest = data.partition("?")
    yes, _, no = rest.partition(":")
    c = cond.strip()
    truth = c not in ("", "0")
    dest = yes if truth else no
    if not dest.strip():
        return None
    j = _target(s, dest)
    return j if j is not None else Stop()


# Dial -----------------------------------------------------------------------------------------

async def _bridge(s: Session, a: Channel, b: Channel) -> str:
    """Connect the audio of ``a`` and ``b`` until one hangs up; return "a" or "b"."""
    a2b: deque[bytes] = deque(maxlen=10)
    b2a: deque[bytes] = deque(maxlen=10)
    a.set_media(_BridgeSide(a2b, b2a, lambda p: transcode(p, a.codec, b.codec)))
    b.set_media(_BridgeSide(b2a, a2b, lambda p: transcode(p, b.codec, a.codec)))
    ta = asyncio.ensure_future(a.wait_hangup(None))
    tb = asyncio.ensure_future(b.wait_hangup(None))
    try:
        done, _ = await asyncio.wait({ta, tb}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (ta, tb):
            t.cancel()
        await asyncio.gather(ta, tb, return_exceptions=True)
        a.set_media(None)
        b.set_media(None)
    return "a" if ta in done or a.hungup else "b"


async def _dial_iax2(s: Session, resource: str, timeout: float | None, options: str) -> Result:
    ch = s.channel
    target, _, exten = resource.partition("/")
    peer = target.rpartition("@")[2].split(":")[0]
    exten = exten.partition("@")[0]
    if not peer:
        log.warning("Dial(IAX2/%s): no peer", resource)
        ch.variables["DIALSTATUS"] = "CHANUNAVAIL"
        return None
    dial = asyncio.ensure_future(ch.dial_iax2(peer, exten, timeout))
    hang = asyncio.ensure_future(ch.wait_hangup(None))
    try:
        await asyncio.wait({dial, hang}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not dial.done():
            dial.cancel()
        hang.cancel()
        await asyncio.gather(hang, return_exceptions=True)
    if not dial.done() or dial.cancelled():
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await dial
        ch.variables["DIALSTATUS"] = "CANCEL"
        return Stop()
    try:
        outcome = dial.result()
    except Exception as exc:      # the server failed to place the call
        log.warning("Dial(IAX2/%s) failed: %s", resource, exc)
        ch.variables["DIALSTATUS"] = "CHANUNAVAIL"
        return None
    ch.variables["DIALSTATUS"] = outcome.status
    ch.variables["HANGUPCAUSE"] = str(outcome.cause)
    if outcome.status != "ANSWER":
        return None
    leg = outcome.leg
    if leg is None:
        log.warning("Dial(IAX2/%s): answered without a leg", resource)
        ch.variables["DIALSTATUS"] = "CHANUNAVAIL"
        return None
    if ch.hungup:
        await leg.hangup(16)
        return Stop()
    await s.ensure_answered()
    who = await _bridge(s, ch, leg)
    if who == "a":
        await leg.hangup(16)
        return Stop()
    return None if "g" in options else Stop(16)


def _phone_media(s: Session, b: PhoneBehaviour) -> MediaHandler:
    codec = s.channel.codec
    if b.media == "echo":
        return Echo()
    if b.media == "tone":
        return PlaySource(milliwatt_payloads(codec), loop=True)
    if b.media.startswith("playback:"):
        path = s.sound_path(b.media.split(":", 1)[1])
        pcm = read_wav(path) if path is not None else None
        if pcm is not None:
            payloads = frames(encode(pcm, codec), codec)
            silence = SILENCE[codec] * FRAME
            return _Then(PlaySource(payloads), silence)
    return PlaySource([SILENCE[codec] * FRAME], loop=True)


class _Then:
    """Plays a source, then silence."""

    def __init__(self, first: PlaySource, silence: bytes) -> None:
        self.first, self.silence = first, silence

    def on_voice(self, payload: bytes, ts: int) -> None:
        pass

    def next_payload(self) -> bytes | None:
        p = self.first.next_payload()
        return p if p is not None else self.silence


async def _dial_phone(s: Session, exten: str, timeout: float | None, options: str) -> Result:
    ch = s.channel
    phones = s.phones or PhonesConfig()
    b = phones.get(exten)
    if b.mode in ("busy", "congestion", "unavailable"):
        ch.variables["DIALSTATUS"] = {"busy": "BUSY", "congestion": "CONGESTION",
                                      "unavailable": "CHANUNAVAIL"}[b.mode]
        return None
    if b.ring:
        await ch.indicate("ringing")
    ring = s.secs(b.answer_after) if b.mode == "answer" else None
    if timeout is not None and (ring is None or timeout <= ring):
        if await s.wait(None, timeout) == "hangup":
            ch.variables["DIALSTATUS"] = "CANCEL"
            return Stop()
        ch.variables["DIALSTATUS"] = "NOANSWER"
        return None
    if await s.wait(None, ring) == "hangup":
        ch.variables["DIALSTATUS"] = "CANCEL"
        return Stop()
    await s.ensure_answered()
    ch.variables["DIALSTATUS"] = "ANSWER"
    ch.set_media(_phone_media(s, b))
    try:
        res = await s.wait(None, s.secs(b.hangup_after))
    finally:
        ch.set_media(None)
    if res == "hangup":
        return Stop()
    return None if "g" in options else Stop(16)


async def app_dial(s: Session, data: str) -> Result:
    args = split_args(data)
    dests = [d.strip() for d in args[0].split("&") if d.strip()]
    timeout = s.secs(_seconds(args[1], None) if len(args) > 1 else None)
    options = args[2] if len(args) > 2 else ""
    s.channel.variables["DIALSTATUS"] = ""
    if not dests:
        log.warning("Dial(): no destination")
        s.channel.variables["DIALSTATUS"] = "CHANUNAVAIL"
        return None
    if len(dests) > 1:
        log.warning("Dial(%s): only the first destination is dialled", args[0])
    tech, _, resource = dests[0].partition("/")
    if tech.upper() == "IAX2":
        return await _dial_iax2(s, resource, timeout, options)
    if tech.upper() in ("PJSIP", "SIP"):
        return await _dial_phone(s, resource.partition("@")[0], timeout, options)
    log.warning("Dial(%s): technology %s is not available", dests[0], tech)
    s.channel.variables["DIALSTATUS"] = "CHANUNAVAIL"
    return None


APPLICATIONS: dict[str, App] = {
    "answer": app_answer,
    "ringing": app_ringing,
    "progress": app_progress,
    "wait": app_wait,
    "echo": app_echo,
    "milliwatt": app_milliwatt,
    "playback": app_playback,
    "record": app_record,
    "voicemail": app_voicemail,
    "busy": app_busy,
    "congestion": app_congestion,
    "hangup": app_hangup,
    "set": app_set,
    "noop": app_noop,
    "goto": app_goto,
    "gotoif": app_gotoif,
    "dial": app_dial,
}


# --- running an extension -------------------------------------------------------------------

async def run(dialplan: Dialplan, channel: Channel, context: str, exten: str, *,
              phones: PhonesConfig | None = None, spool_dir: str | os.PathLike[str],
              sounds_dir: str | os.PathLike[str] | None = None, priority: int = 1,
              vm_max_seconds: float = 300.0, time_scale: float = 1.0) -> int:
    """Run ``exten`` in ``context`` on ``channel`` until hangup; return the hangup cause.

    Priorities run in order (p, p+1, ...); the extension ends at the first missing priority.
    Then, like Asterisk's autofallthrough: DIALSTATUS BUSY -> busy (cause 17), CONGESTION or
    CHANUNAVAIL -> congestion (34), else hang up with 16.  An unknown extension goes to the
    context's ``i`` extension if present (``INVALID_EXTEN`` set), else hangs up with cause 3.
    After the call ends the ``h`` extension runs, if the context has one.

    ``phones`` drives ``Dial(PJSIP/...)``; Voicemail/Record write under ``spool_dir``; Playback
    reads ``sounds_dir``.  ``vm_max_seconds`` caps a voicemail message; ``time_scale`` multiplies
    the dialplan's waits (Wait, Dial timeouts, phone delays), e.g. 0.01 in tests.
    """
    session = Session(dialplan=dialplan, channel=channel, phones=phones,
                      spool_dir=Path(spool_dir),
                      sounds_dir=Path(sounds_dir) if sounds_dir is not None else None,
                      vm_max_seconds=vm_max_seconds, time_scale=time_scale)
    return await session.run(context, exten, priority)
