"""``iaxgw probe``: talk to a live IAX2 peer step by step and say where the trunk stops working.

Steps (each a :class:`Step`; the first failing one is where it stops):

1. ``poke``: POKE -> PONG and its RTT (no PONG in 2 s: UDP blocked, wrong host/port, remote down).
2. ``calltoken``: the NEW of a test call; did the peer send CALLTOKEN, and did it take our resend?
3. ``auth``: a call to an extension that does not exist (``iaxgw-probe-0``), so nothing rings.
   REJECT 3 "No such context/extension" after our AUTHREP means authentication passed; REJECT 50
   lists the config mistakes that cause it.
4. ``codec``: a NEW for ``TBD`` (Asterisk skips the extension check for it and ACCEPTs or rejects
   58 on codecs alone; the call never reaches the dialplan) -- or the ``--exten`` call itself.
5. ``media`` (``--exten`` of an echo extension): ~2 s of voice; which frame kinds come back
   (trunk datagrams or mini frames), and whether that matches our ``trunk`` setting.
6. ``nat``: our address as the peer sees it -- only a REGACK's APPARENT_ADDR tells; without a
   ``register =>`` line to that host it is reported as unknown.

Uses the sans-IO :class:`~iaxgw.gateway.iax2.protocol.Endpoint` through ``open_endpoint`` and only
watches raw datagrams (``on_datagram``) to see what the peer sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from iaxgw._core.constants import FORMAT_BITS, IE, DatagramKind, FrameType, IAXSubclass
from iaxgw._core.frames import classify, parse_full
from iaxgw._core.ies import IEs
from iaxgw.gateway.conf.asterisk_conf import ConfigError
from iaxgw.gateway.conf.config import load_iax_conf
from iaxgw.gateway.conf.model import Entry, General, IaxConfig
from iaxgw.gateway.driver.server import open_endpoint
from iaxgw.gateway.iax2.address import Addr, format_addr
from iaxgw.gateway.iax2.events import (
    CallEnded,
    CallProgress,
    Event,
    IncomingCall,
    RegistrationChanged,
)

__all__ = ["ProbeReport", "Step", "probe", "run_probe"]

Status = Literal["ok", "fail", "warn", "skip", "info"]
PROBE_EXTEN = "iaxgw-probe-0"
POKE_WAIT = 2.0
CALL_WAIT = 4.0
MEDIA_SECONDS = 2.0
_NAMES = {v: k for k, v in FORMAT_BITS.items()}


@dataclass(slots=True)
class Step:
    name: str
    status: Status
    detail: str
    hint: str = ""


@dataclass(slots=True)
class ProbeReport:
    target: str
    peer: str
    steps: list[Step] = field(default_factory=list)

    @property
    def stopped_at(self) -> str | None:
        for s in self.steps:
            if s.status == "fail":
                return s.name
        return None

    @property
    def ok(self) -> bool:
        return self.stopped_at is None

    def step(self, name: str) -> Step | None:
        for s in self.steps:
            if s.name == name:
                return s
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "peer": self.peer, "ok": self.ok,
                "stopped_at": self.stopped_at,
                "steps": [dataclasses.asdict(s) for s in self.steps]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format(self) -> str:
        lines = [f"probe {self.target} as [{self.peer}]"]
        for s in self.steps:
            lines.append(f"  {s.name:<10} {s.status.upper():<5} {s.detail}")
            if s.hint:
                for h in s.hint.splitlines():
                    lines.append(f"  {'':<10} {'':<5} -> {h}")
        warn = any(s.status == "warn" for s in self.steps)
        lines.append("result: " + (f"stops at {self.stopped_at}" if not self.ok else
                                   "trunk works, with warnings" if warn else "trunk OK"))
        return "\n".join(lines)


def _codec_names(mask: int) -> str:
    names = [n for b, n in sorted(_NAMES.items()) if mask & b]
    return ",".join(names) or f"{mask:#x}"


class _Wire:
    """What the peer sent us, from the raw datagrams."""

    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.frames: list[tuple[float, int, int, int, IEs | None, int]] = []
        #  (time, scallno, dcallno, subclass, ies, frametype)
        self.kinds = {"mini": 0, "meta": 0, "full_voice": 0}
        self.out_kinds = {"mini": 0, "meta": 0, "full_voice": 0}
        self.other_sources: set[tuple[str, int]] = set()
        self.meta_ts = {True: 0, False: 0}     # trunk datagrams in with/without timestamps

    def hook(self, direction: str, data: bytes, addr: tuple[str, int], now: float) -> None:
        kind = classify(data)
        counts = self.kinds if direction == "in" else self.out_kinds
        if direction == "in" and addr != self.peer:
            self.other_sources.add(addr)
        if kind == DatagramKind.MINI:
            counts["mini"] += 1
        elif kind == DatagramKind.META:
            counts["meta"] += 1
            if direction == "in" and data[2] == 1:
                self.meta_ts[bool(data[3] & 1)] += 1
        elif kind == DatagramKind.FULL and direction == "in":
            try:
                f = parse_full(data)
            except Exception:
                return
            if f.frametype == FrameType.VOICE:
                counts["full_voice"] += 1
                return
            if f.frametype != FrameType.IAX:
                return
            ies: IEs | None
            try:
                ies = IEs.parse(f.payload)
            except Exception:
                ies = None
            self.frames.append((now, f.scallno, f.dcallno, f.csub, ies, f.frametype))
        elif kind == DatagramKind.FULL:
            with_voice = data[10] == FrameType.VOICE if len(data) > 10 else False
            if with_voice:
                counts["full_voice"] += 1

    def seen(self, sub: int, dcallno: int | None = None) -> list[tuple[Any, ...]]:
        return [f for f in self.frames if f[3] == sub and (dcallno is None or f[2] == dcallno)]


def _entry_for(peer: str, host: str, port: int, config_dir: str | None, username: str | None,
               secret: str | None) -> tuple[IaxConfig, Entry, list[str]]:
    notes: list[str] = []
    general = General()
    base: Entry | None = None
    if config_dir is not None:
        cfg = load_iax_conf(Path(config_dir) / "iax.conf")
        general = cfg.general
        base = cfg.entries.get(peer)
        if base is None:
            raise ConfigError(f"no [{peer}] in {Path(config_dir) / 'iax.conf'} "
                              f"(sections: {', '.join(cfg.entries) or 'none'})")
    entry = dataclasses.replace(base) if base is not None else Entry(name=peer, type="friend")
    entry.host, entry.dynamic, entry.port = host, False, port
    entry.qualify = None
    if username is not None:
        entry.username = username
    if secret is not None:
        entry.secrets = [secret]
    if base is None and username is None:
        notes.append("no --config: the test call carries no USERNAME and no secret")
    general = dataclasses.replace(general, registers=[r for r in general.registers
                                                      if r.host == host],
                                  bindaddr=general.bindaddr)
    return IaxConfig(general=general, entries={peer: entry}), entry, notes


async def _wait(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return bool(pred())


def _auth_candidates(entry: Entry, bind: tuple[str, int], got_authreq: bool) -> str:
    user = entry.username or "(none sent)"
    lines = [
        f"username we send = {user}: the remote must have a section named [{user}]",
        f"secret: must equal that section's secret (ours: {len(entry.secrets)} configured)",
        "auth: the remote's auth= must offer md5 or plaintext (iaxgw does not do rsa)",
        f"permit/deny of the remote's [{user}] must allow our address {bind[0]}",
    ]
    if entry.peercontext:
        lines.append(f"peercontext = {entry.peercontext} must be one of the remote [{user}]'s "
                     "context= lines")
    if got_authreq:
        lines.insert(0, "an AUTHREQ came first: an unknown user or an ACL miss gets a decoy "
                        "AUTHREQ too, so all of these are candidates")
    else:
        lines.insert(0, "rejected with no AUTHREQ: the remote found no user for us")
    return "\n".join(lines)


async def probe(host: str, port: int, peer: str, *, config_dir: str | None = None,
                bind: tuple[str, int] | None = None, exten: str | None = None,
                username: str | None = None, secret: str | None = None,
                poke_wait: float = POKE_WAIT, call_wait: float = CALL_WAIT,
                media_seconds: float = MEDIA_SECONDS) -> ProbeReport:
    """Run the probe steps against ``host:port`` as our entry ``peer``."""
    rep = ProbeReport(format_addr((host, port)), peer)
    try:
        cfg, entry, notes = _entry_for(peer, host, port, config_dir, username, secret)
    except (ConfigError, OSError) as exc:
        rep.steps.append(Step("config", "fail", str(exc), "fix the config or pass --peer"))
        return rep
    for n in notes:
        rep.steps.append(Step("config", "info", n))
    if bind is None:
        g = cfg.general
        bind = (g.bindaddr if g.bindaddr not in ("", "::") else "0.0.0.0",
                g.bindport if config_dir is not None else 0)
    wire = _Wire((host, port))
    events: list[Event] = []
    try:
        server = await open_endpoint(cfg, bind, role_name="iaxgw-probe",
                                     on_event=events.append, on_datagram=wire.hook)
    except OSError as exc:
        rep.steps.append(Step("bind", "fail", f"cannot bind {format_addr(bind)}: {exc}",
                              "another process holds that port (iaxgw serve, Asterisk); pass "
                              "--bind ADDR:PORT"))
        return rep
    ep = server.endpoint
    loop = asyncio.get_running_loop()

    def now() -> float:
        return loop.time()

    try:
        # 1. POKE / PONG
        t0 = now()
        ep.poke(peer, t0)
        server.flush()
        got = await _wait(lambda: wire.seen(IAXSubclass.PONG), poke_wait)
        if not got:
            rep.steps.append(Step(
                "poke", "fail", f"no answer in {poke_wait:.0f} s to POKE",
                f"UDP {port} blocked, wrong host/port ({host}:{port}), or the remote is not "
                "running (check: iax2 show peers / ss -ulnp on the remote)"))
            return rep
        rtt = int((wire.seen(IAXSubclass.PONG)[0][0] - t0) * 1000)
        rep.steps.append(Step("poke", "ok", f"PONG in {rtt} ms"))

        # 2-4. test call to a non-existent extension: token, auth
        async def test_call(number: str, context: str | None = None
                            ) -> tuple[int, CallEnded | None, CallProgress | None]:
            events.clear()
            callno = ep.call(peer, number, now(), context=context)
            server.flush()

            def done() -> bool:
                return any(isinstance(e, (CallEnded,)) and e.callno == callno for e in events) \
                    or any(isinstance(e, CallProgress) and e.callno == callno
                           and e.kind == "accepted" for e in events)
            await _wait(done, call_wait)
            ended = next((e for e in events if isinstance(e, CallEnded) and e.callno == callno),
                         None)
            acc = next((e for e in events if isinstance(e, CallProgress) and e.callno == callno
                        and e.kind == "accepted"), None)
            return callno, ended, acc

        callno, ended, acc = await test_call(exten or PROBE_EXTEN)
        token = wire.seen(IAXSubclass.CALLTOKEN, callno)
        authreq = wire.seen(IAXSubclass.AUTHREQ, callno)
        rejects = wire.seen(IAXSubclass.REJECT, callno)
        answered = [
            f for f in wire.frames if f[2] == callno and f[3] not in (IAXSubclass.CALLTOKEN,)
        ]
        if token:
            after = [f for f in answered if f[0] >= token[0][0]]
            if not after:
                rep.steps.append(Step(
                    "calltoken", "fail", "CALLTOKEN received, but no answer to the NEW that "
                    "carried it",
                    "the remote drops our NEW after the token: its permit/deny (ACL) shuts "
                    f"out {bind[0]}, or its maxcallnumbers limit for our address is reached"))
                return rep
            if (
                after[0][3] == IAXSubclass.REJECT
                and after[0][4] is not None
                and len(after[0][4]) == 0
            ):
                rep.steps.append(Step(
                    "calltoken", "fail", "our NEW with the token was answered by a bare REJECT",
                    "the token was invalid or expired (sent from another address/port, or "
                    "more than 10 s late)"))
                return rep
            rep.steps.append(Step("calltoken", "ok", "CALLTOKEN handshake done"))
        elif rejects and rejects[0][4] is not None and len(rejects[0][4]) == 0:
            rep.steps.append(Step(
                "calltoken", "fail", "REJECT with no IEs right after NEW",
                "call token required or invalid: the remote sent no CALLTOKEN although we "
                "offered an empty one; check requirecalltoken / calltokenoptional"))
            return rep
        elif not answered:
            rep.steps.append(Step(
                "calltoken", "fail", f"no answer to NEW in {call_wait:.0f} s (PONG came back)",
                "the remote answers POKE but ignores NEW: an ACL or firewall rule for calls, "
                "or the remote is overloaded"))
            return rep
        else:
            rep.steps.append(Step("calltoken", "info",
                                  "no CALLTOKEN asked (requirecalltoken=no or not Asterisk)"))

        methods = ""
        if authreq:
            ies = authreq[0][4]
            m = ies.get(IE.AUTHMETHODS) if ies is not None else None
            if isinstance(m, int):
                methods = ",".join(n for b, n in ((1, "plaintext"), (2, "md5"), (4, "rsa"))
                                   if m & b)
        cause = ended.cause if ended is not None else None
        text = ended.cause_text if ended is not None else ""
        if ended is not None and ended.reason == "local" and cause == 50:
            rep.steps.append(Step(
                "auth", "fail", f"AUTHREQ offers {methods or 'nothing'}: nothing we can answer",
                "set auth = md5 (or plaintext) on the remote's entry for us; iaxgw has no rsa"))
            return rep
        if cause == 50 or (ended is not None and ended.reason == "reject" and cause == 21):
            hint = _auth_candidates(entry, bind, bool(authreq))
            if entry.peercontext:
                _c2, e2, a2 = await test_call(PROBE_EXTEN, context="")
                if a2 is not None or (e2 is not None and e2.cause == 3):
                    hint = (f"the same call without CALLED_CONTEXT passes: peercontext = "
                            f"{entry.peercontext} is not one of the context= lines of the "
                            f"remote's entry for us (or that context is missing there)\n" + hint)
                    rep.steps.append(Step("auth", "fail", f"REJECT cause {cause} \"{text}\"",
                                          hint))
                    return rep
            if authreq and entry.username:
                # Tell ACL from secret: a NEW without USERNAME is matched by address alone; a
                # real AUTHREQ means some entry admits our address, an immediate REJECT 50
                # means none does.
                saved = entry.username
                entry.username = None
                try:
                    callno3, ended3, acc3 = await test_call(PROBE_EXTEN, context="")
                finally:
                    entry.username = saved
                if wire.seen(IAXSubclass.AUTHREQ, callno3) or acc3 is not None or (
                        ended3 is not None and ended3.cause == 3):
                    hint = ("a NEW without USERNAME is let in by address: permit/deny is not "
                            "the cause\nmost likely: the secret differs, or username "
                            f"{saved} names no section at the remote\n" + hint)
                elif ended3 is not None and ended3.cause == 50:
                    hint = ("a NEW without USERNAME is rejected at once: no entry at the "
                            f"remote admits our address {bind[0]}\nmost likely: the remote's "
                            "permit/deny (ACL) shuts us out\n" + hint)
                if ep.call_info(callno3) is not None:
                    ep.hangup(callno3, now())
                    server.flush()
            rep.steps.append(Step(
                "auth", "fail", f"REJECT cause {cause} \"{text}\""
                + (f" after AUTHREQ ({methods})" if authreq else ""), hint))
            return rep
        if acc is not None:
            rep.steps.append(Step("auth", "ok", "ACCEPT" + (
                f" after AUTHREQ ({methods})" if authreq else " (no authentication asked)")))
        elif cause == 3 or (cause is not None and cause not in (58, 27, 34)
                            and ended is not None and ended.reason == "reject"):
            rep.steps.append(Step(
                "auth", "ok", f"REJECT cause {cause} \"{text}\" for {exten or PROBE_EXTEN}"
                + (f" after AUTHREQ ({methods})" if authreq else " (no authentication asked)")
                + ": authentication passed"))
            if exten is not None:
                rep.steps.append(Step(
                    "exten", "fail", f"{exten} does not exist in the context our calls land in",
                    "check the remote's context= for our user (or our peercontext) and its "
                    "extensions"))
                return rep
        elif cause == 58:
            rep.steps.append(Step("auth", "ok" if authreq else "info",
                                  "passed" if authreq else "no authentication asked"))
        elif ended is None:
            rep.steps.append(Step(
                "auth", "fail", f"no final answer in {call_wait:.0f} s",
                "the remote answered the NEW but neither accepted nor rejected it"))
            ep.hangup(callno, now())
            server.flush()
            return rep
        else:
            rep.steps.append(Step("auth", "fail", f"call ended: cause {cause} \"{text}\" "
                                  f"({ended.reason})", ""))
            return rep

        # 4. codecs
        ours = ",".join(entry.codecs)
        if exten is None and cause != 58:
            callno2, ended2, acc2 = await test_call("TBD")
            if acc2 is not None:
                rep.steps.append(Step("codec", "ok", f"ACCEPT with {_codec_names(acc2.codec)} "
                                      f"(we offer {ours})"))
                ep.hangup(callno2, now())
                server.flush()
                await asyncio.sleep(0.05)
            elif ended2 is not None and ended2.cause == 58:
                cause, text = 58, ended2.cause_text
            else:
                rep.steps.append(Step(
                    "codec", "skip", "could not test without an extension: "
                    + (f"cause {ended2.cause} \"{ended2.cause_text}\"" if ended2 else "no answer"),
                    "pass --exten of an echo extension"))
        if cause == 58:
            rep.steps.append(Step(
                "codec", "fail", f"REJECT cause 58 \"{text}\"",
                f"no common codec: we offer {ours}; allow one of them in the remote's [general] "
                "or its entry for us"))
            return rep
        if exten is not None and acc is not None:
            rep.steps.append(Step("codec", "ok", f"ACCEPT with {_codec_names(acc.codec)} "
                                  f"(we offer {ours})"))
            await _wait(lambda: any(isinstance(e, IncomingCall) for e in events), 1.0)
            back = [e for e in events if isinstance(e, IncomingCall)]
            if back:
                rep.steps.append(Step(
                    "loop", "fail", f"the peer called us back with {back[0].exten} while our "
                    f"call to {exten} was up: a routing loop",
                    f"the remote routes {exten} from us back over the trunk (a Dial(IAX2/...) "
                    "in the context our calls land in); run iaxgw check --remote"))
                return rep
            await _media(rep, server, callno, acc, entry, wire, events, media_seconds,
                         cfg.general.trunktimestamps)

        # 6. NAT / apparent address
        if cfg.general.registers:
            await _wait(lambda: any(isinstance(e, RegistrationChanged) for e in events), 3.0)
            regs = ep.registrations()
            addr = regs[0][2] if regs else None
            if addr is not None:
                mine = bind
                note = "matches our bind address" if addr == mine else \
                    f"differs from our bind {format_addr(mine)}: NAT rewrites our address"
                rep.steps.append(Step("nat", "ok" if addr == mine else "warn",
                                      f"the peer sees us as {format_addr(addr)} ({note})"))
            else:
                rep.steps.append(Step("nat", "info", "registration did not complete: apparent "
                                      f"address unknown ({regs[0][1] if regs else 'no reg'})"))
        else:
            rep.steps.append(Step(
                "nat", "info", "our apparent address is unknown: no register => line to this "
                "host (only a REGACK's APPARENT_ADDR shows it)"))
        return rep
    finally:
        for c in ep.channels():
            ep.hangup(c.local_callno, now())
        server.flush()
        await asyncio.sleep(0.05)
        server.close()


async def _media(rep: ProbeReport, server: Any, callno: int, acc: CallProgress, entry: Entry,
                 wire: _Wire, events: list[Event], seconds: float, our_ts: bool) -> None:
    ep = server.endpoint
    loop = asyncio.get_running_loop()
    await _wait(lambda: any(isinstance(e, CallProgress) and e.callno == callno
                            and e.kind == "answered" for e in events), 2.0)
    before = dict(wire.kinds)
    payload = bytes([0xFF if i % 16 < 8 else 0x7F for i in range(160)])  # audible, not silent
    n = max(1, int(seconds / 0.02))
    start = loop.time()
    for i in range(n):
        if ep.call_info(callno) is None:
            break
        ep.send_voice(callno, payload, loop.time())
        server.flush()
        delay = start + (i + 1) * 0.02 - loop.time()
        await asyncio.sleep(max(delay, 0))
    await asyncio.sleep(0.1)
    got = {k: wire.kinds[k] - before.get(k, 0) for k in wire.kinds}
    sent = dict(wire.out_kinds)
    if ep.call_info(callno) is None or any(isinstance(e, CallEnded) and e.callno == callno
                                           for e in events):
        ended = next((e for e in events if isinstance(e, CallEnded) and e.callno == callno), None)
        rep.steps.append(Step("media", "fail", "the call ended during the media test"
                              + (f": cause {ended.cause} \"{ended.cause_text}\"" if ended else ""),
                              ""))
        return
    detail = (f"received {got['meta']} trunk datagrams, {got['mini']} mini frames, "
              f"{got['full_voice']} full voice frames; sent {sent['meta']} trunk datagrams, "
              f"{sent['mini']} mini frames")
    if got["meta"] == 0 and got["mini"] == 0 and got["full_voice"] == 0:
        rep.steps.append(Step("media", "fail", detail,
                              "no audio back: the extension does not echo, or media is "
                              "blocked; try an Echo() extension"))
    elif entry.trunk and got["meta"] == 0:
        rep.steps.append(Step(
            "media", "warn", detail + ": the peer does not trunk toward us",
            "trunk on one side only: set trunk = yes in the remote's entry for us (and its "
            "host/port must equal our source address)"))
    elif not entry.trunk and got["meta"] > 0:
        rep.steps.append(Step(
            "media", "warn", detail + ": the peer trunks, we do not",
            "trunk on one side only: set trunk = yes in our entry too"))
    elif got["meta"] and wire.meta_ts[not our_ts] > wire.meta_ts[our_ts]:
        rep.steps.append(Step(
            "media", "warn",
            detail + f": the peer's trunk datagrams {'lack' if our_ts else 'carry'} per-call "
            "timestamps, ours " + ("carry them" if our_ts else "do not"),
            "trunktimestamps differs between the sites: set the same value (yes) in both "
            "[general] sections"))
    else:
        rep.steps.append(Step("media", "ok", detail))


def run_probe(target: Addr, peer: str, *, config_dir: str | None = None,
              bind: Addr | None = None, exten: str | None = None, username: str | None = None,
              secret: str | None = None) -> ProbeReport:
    """Synchronous wrapper for the CLI."""
    return asyncio.run(probe(target[0], target[1], peer, config_dir=config_dir, bind=bind,
                             exten=exten, username=username, secret=secret))

