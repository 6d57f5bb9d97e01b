"""What a load test will do: its options, the call plan and the call-number budget.

Pure functions and data only (no I/O, no clock), so the CLI and the tests can check a plan
before any datagram is sent.  The engine that runs a plan is :mod:`iaxgw.sim.load.loadtest`.
"""

from __future__ import annotations

import ipaddress
import math
import os
import random
from collections import deque
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from iaxgw.gateway.iax2.address import split_hostport
from iaxgw.sim.scale.capacity import DEFAULT_STOP_WHEN, RuleError, StopRule

Mode = Literal["direct", "hairpin"]

#: Asterisk holds at most this many call numbers per source IP (``maxcallnumbers``), each until
#: 60 s after its call ended (docs/protocol.md P16).
ASTERISK_MAXAUTHREQ = 3        # unanswered AUTHREQs per user before REJECT 21
ASTERISK_MAXCALLNUMBERS = 2048
CALLNO_HOLD_S = 60.0

#: The echo extension of each embedded site (the lab's and serve's numbering: 2xx = office-a,
#: 3xx = office-b; x00 echo, x01 milliwatt, x02 busy, x03 congestion).
ECHO_EXTEN = {"office-a": "200", "office-b": "300"}
#: Hairpin extensions on office-a: ``_29X`` dials back over the trunk to office-b's ``30X``.
HAIRPIN_PREFIX = "29"


#: A lossy link (``--impair loss=...``): timeouts of our own that cover the retransmission
#: schedule (sends at 0, 2, 12, 22 s; give-up at 32 s), see :func:`lossy_caller_settings`.
LOSSY_SETUP_TIMEOUT = 40.0
LOSSY_MEDIA_TIMEOUT = 15.0
LOSSY_HANGUP_LINGER = 35.0


class PlanError(ValueError):
    """An option value that cannot make a plan; the CLI turns it into a usage error (exit 2)."""


def parse_extens(text: str) -> list[str]:
    """``"200"``, ``"200-299"`` or ``"200,202,210-215"`` -> the extensions, in order.

    Ranges keep the width of their first bound (``"0200-0203"`` -> ``"0200".."0203"``).
    """
    out: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise PlanError(f"empty extension in {text!r}")
        lo, sep, hi = part.partition("-")
        if not sep:
            if not part.replace("*", "").replace("#", "").isalnum():
                raise PlanError(f"bad extension {part!r}")
            out.append(part)
            continue
        if not (lo.isdigit() and hi.isdigit()):
            raise PlanError(f"bad extension range {part!r}: expected digits like 200-299")
        a, b = int(lo), int(hi)
        if b < a:
            raise PlanError(f"bad extension range {part!r}: end before start")
        if b - a >= 100_000:
            raise PlanError(f"extension range {part!r} is too large")
        out.extend(str(n).zfill(len(lo)) for n in range(a, b + 1))
    return out


def parse_duration(text: str) -> tuple[float, float]:
    """``"20"`` -> (20, 20); ``"10-30"`` -> (10, 30): each call holds a uniform time in range."""
    lo, sep, hi = text.strip().partition("-")
    try:
        a = float(lo)
        b = float(hi) if sep else a
    except ValueError:
        raise PlanError(f"bad duration {text!r}: expected SECONDS or MIN-MAX") from None
    if a <= 0 or b < a or b > 86_400:
        raise PlanError(f"bad duration {text!r}: need 0 < MIN <= MAX <= 86400")
    return a, b


#: The most source addresses (shards) one ``--bind`` may name.
MAX_BIND_ADDRESSES = 256


def parse_bind_list(text: str, default_port: int = 4569) -> list[tuple[str, int]]:
    """``--bind``: ``HOST[:PORT]``, a list ``A,B,C`` (each with an optional ``:PORT``) or an
    IPv4 range ``127.0.0.20-127.0.0.23[:PORT]`` (the end may be the last octet: ``-23``)."""
    out: list[tuple[str, int]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise PlanError(f"empty address in --bind {text!r}")
        if _is_ipv4(part.partition("-")[0]) and "-" in part:
            out.extend(_bind_range(part, default_port))
        else:
            out.append(split_hostport(part, default_port))
        if len(out) > MAX_BIND_ADDRESSES:
            raise PlanError(f"--bind {text!r}: more than {MAX_BIND_ADDRESSES} addresses")
    if len(set(out)) != len(out):
        raise PlanError(f"--bind {text!r} names an address twice")
    return out


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text.strip())
    except ValueError:
        return False
    return True


def _bind_range(part: str, default_port: int) -> list[tuple[str, int]]:
    lo_text, _, hi_text = part.partition("-")
    hi_host, port = split_hostport(hi_text, default_port)
    try:
        lo = ipaddress.IPv4Address(lo_text.strip())
        if hi_host.isdigit():
            hi_host = ".".join([*str(lo).split(".")[:3], hi_host])
        hi = ipaddress.IPv4Address(hi_host)
    except ValueError:
        raise PlanError(f"bad --bind range {part!r}: expected IPv4 A-B, e.g. "
                        "127.0.0.20-127.0.0.23") from None
    if hi < lo:
        raise PlanError(f"bad --bind range {part!r}: end before start")
    if int(hi) - int(lo) >= MAX_BIND_ADDRESSES:
        raise PlanError(f"--bind range {part!r}: more than {MAX_BIND_ADDRESSES} addresses")
    return [(str(ipaddress.IPv4Address(n)), port) for n in range(int(lo), int(hi) + 1)]


@dataclass(slots=True)
class LoadtestOptions:
    """Everything ``iaxgw loadtest`` takes (see the CLI for the user-facing text)."""

    calls: int = 10                       # concurrency to reach and hold
    rate: float | None = None             # call attempts per second; None: calls / 5, >= 10
    total: int | None = None              # attempts; None: one round (= calls)
    duration: tuple[float, float] = (20.0, 20.0)
    codec: str = "ulaw"
    media: str = "tone"                   # tone | silence | path to a .wav
    trunk: bool | None = None             # None: as the peer entry says
    trunktimestamps: bool | None = None   # None: as [general] says
    encryption: bool | None = None        # True: offer and require aes128; None: as the peer
    mode: Mode = "direct"
    extens: list[str] | None = None       # None: the peer's echo extension
    peer: str = "office-a"
    peer_host: tuple[str, int] | None = None
    config_dir: Path | None = None        # None: the embedded seed config
    keys_dir: Path | None = None          # None: keys/ beside iax.conf
    site: str | None = None               # embedded config of this site; None: office-b
    bind: tuple[str, int] | None = None   # None: the config's bindaddr/bindport
    binds: list[tuple[str, int]] | None = None   # --bind list/range: one shard per address
    shards: int | None = None             # None: see shard_count()
    tick_phase: float | None = None       # media grid at this offset (s) in 20 ms (shards)
    step: int | None = None               # capacity search: calls added each step
    step_time: float = 10.0               # ... every this many seconds
    max_calls: int | None = None          # ... up to this many
    stop_when: str | None = None          # ... until this rule trips (sim/scale/capacity.py)
    report_dir: Path | None = None
    max_failed: int = 0
    setup_timeout: float = 10.0           # NEW -> ANSWER, else the call ends as TIMEOUT
    # auth slots at the target at once (AuthWindow): Asterisk answers a user's 4th unanswered
    # AUTHREQ with REJECT 21 (maxauthreq, default 3), so a faster ramp must not exceed it
    max_pending: int = ASTERISK_MAXAUTHREQ
    allow_underrun: bool = False          # a rate/concurrency target not reached still passes
    no_autokill: bool = False             # our calls never autokill a NEW (a lossy link)
    hangup_timeout: float = 5.0           # our HANGUP -> call gone, else counted as stuck
    media_timeout: float = 3.0            # echo: an answered call receiving nothing this long ends
    callno_budget: int = ASTERISK_MAXCALLNUMBERS
    seed: int = 1
    quiet: bool = False
    json_out: bool = False
    live: bool = True                     # rich live screen (off with quiet/json or no tty)
    control: str | None = None            # control socket path (iaxgw show / iaxgw ctl)
    hot_keys: bool = False                # hot keys on the terminal (stdin a TTY)
    metrics_addr: tuple[str, int] | None = None   # --metrics-addr/--metrics-port; port 0 = any
    pcap: Path | None = None              # --pcap: every datagram sent and received
    realtime: bool | None = None          # media loop under SCHED_RR; None: off (lab: on)
    warnings: list[str] = field(default_factory=list)

    @property
    def attempts(self) -> int:
        return self.total if self.total is not None else self.calls

    @property
    def cps(self) -> float:
        if self.rate is not None:
            return self.rate
        return max(10.0, self.calls / 5.0)

    def check(self) -> None:
        """Raise :class:`PlanError` on values that make no plan; collect warnings."""
        if self.site is not None:
            if self.site not in ECHO_EXTEN:
                raise PlanError(f"--site must be office-a or office-b, not {self.site!r}")
            if self.config_dir is not None:
                raise PlanError("--site picks an embedded configuration; with --config the "
                                "folder is ours: leave out one of them")
            if self.peer == self.site:
                # the default peer is the other site: a site never calls itself
                self.peer = next(s for s in ECHO_EXTEN if s != self.site)
        if self.calls < 1:
            raise PlanError("--calls must be at least 1")
        if self.calls > 30_000:
            raise PlanError("--calls above 30000 cannot fit the 15-bit call-number space")
        if self.rate is not None and not 0 < self.rate <= 10_000:
            raise PlanError("--rate must be in (0, 10000] calls per second")
        if self.total is not None and self.total < 1:
            raise PlanError("--total must be at least 1")
        if self.max_pending < 1:
            raise PlanError("--max-pending must be at least 1")
        if self.max_failed < 0:
            raise PlanError("--max-failed must be >= 0")
        if self.codec not in ("ulaw", "alaw"):
            raise PlanError(f"--codec must be ulaw or alaw, not {self.codec!r}")
        if self.media not in ("tone", "silence"):
            p = Path(self.media)
            if p.suffix.lower() != ".wav":
                raise PlanError(f"--media must be tone, silence or a FILE.wav, not {self.media!r}")
            if not p.is_file():
                raise PlanError(f"--media file {self.media!r} does not exist")
        if self.setup_timeout <= 0:
            raise PlanError("setup timeout must be > 0")
        ramp = min(self.calls, self.attempts) / self.cps
        if min(self.calls, self.attempts) > 1 and self.duration[0] < ramp:
            self.warnings.append(
                f"--duration {self.duration[0]:g} s is shorter than the ramp to --calls "
                f"{self.calls} at {self.cps:g} calls/s ({ramp:.1f} s): the first calls end before "
                "the last start, so the concurrency target cannot be reached")
        self._plan_capacity()
        self._check_shards()
        held = callnos_needed_within(self.attempts, self.cps, self.duration[0], self.calls)
        if held > self.callno_budget:
            self.warnings.append(
                f"--total {self.attempts} at {self.cps:g} calls/s would hold about {held} call "
                f"numbers within {CALLNO_HOLD_S:.0f} s; Asterisk allows {self.callno_budget} per "
                f"source IP (maxcallnumbers), so new calls will wait for numbers to free up")

    def shard_count(self) -> int:
        """How many load-test processes: ``--shards``, else one per ``--bind`` address, else
        one when the calls fit one source address's call numbers (Asterisk's maxcallnumbers),
        else one per core and enough that each address's calls fit."""
        if self.shards is not None:
            return self.shards
        if self.binds:
            return len(self.binds)
        if self.peak_calls <= self.callno_budget:
            return 1
        return max(os.cpu_count() or 1, -(-self.peak_calls // self.callno_budget))

    @property
    def peak_calls(self) -> int:
        """The most calls at once the run may ask for (a capacity search's --max-calls)."""
        return self.max_calls if self.step is not None and self.max_calls else self.calls

    def _plan_capacity(self) -> None:
        """``--step``: the first step's calls, calls that stay up until the search ends, enough
        attempts for every step and its refused calls, and no verdict on failed calls (the
        search is there to find them)."""
        if self.step is None:
            if self.max_calls is not None or self.stop_when is not None:
                raise PlanError("--max-calls and --stop-when belong to a capacity search: "
                                "give --step too")
            return
        if self.step < 1 or self.step_time < 2.0:
            raise PlanError("--step must be at least 1 and --step-time at least 2 s")
        if self.max_calls is None:
            raise PlanError("--step needs --max-calls (where the search stops if nothing trips)")
        if self.max_calls < self.step:
            raise PlanError("--max-calls must be at least --step")
        try:
            StopRule(self.stop_when or DEFAULT_STOP_WHEN)
        except RuleError as exc:
            raise PlanError(str(exc)) from None
        steps = -(-self.max_calls // self.step)
        horizon = steps * self.step_time
        self.calls = self.step
        if self.rate is None:
            self.rate = max(10.0, 2.0 * self.step / self.step_time)
        self.duration = (horizon + 30.0, horizon + 30.0)
        self.total = self.max_calls + math.ceil(self.cps * horizon)
        self.allow_underrun = True

    def _check_shards(self) -> None:
        n = self.shard_count()
        if n < 1:
            raise PlanError("--shards must be at least 1")
        if n > 1 and self.mode == "hairpin":
            raise PlanError("--mode hairpin with several shards: the target dials back one "
                            "address only; use one shard (--shards 1)")
        if n > 1 and self.binds and n != len(self.binds):
            raise PlanError(f"--shards {n} with {len(self.binds)} --bind addresses: give one "
                            "address per shard (a list or a range), or leave out --shards")
        per_shard = -(-self.peak_calls // n)
        if per_shard > self.callno_budget:
            raise PlanError(
                f"--calls {self.peak_calls} over {n} shard(s) is {per_shard} calls per source "
                f"address; the target gives each address {self.callno_budget} call numbers "
                "(Asterisk maxcallnumbers): add addresses (--bind A-B) or shards (--shards)")

    def exten_list(self) -> list[str]:
        if self.extens:
            return self.extens
        if self.mode == "hairpin":
            return [f"{HAIRPIN_PREFIX}{d}" for d in range(10)]
        return [ECHO_EXTEN.get(self.peer, "200")]


def callnos_needed_within(total: int, cps: float, min_duration: float, calls: int) -> int:
    """Peak call numbers the target holds for us: live calls plus those ended < 60 s ago.

    With attempts at ``cps`` and at most ``calls`` live, a 60 s + hold window sees at most
    ``cps * (hold + 60)`` attempts (and never more than ``total``).
    """
    per_call = max(min_duration, calls / cps)
    return int(min(total, calls + cps * CALLNO_HOLD_S, cps * (per_call + CALLNO_HOLD_S)))


class CallnoBudget:
    """Call numbers the target holds for us: live calls and calls ended less than 60 s ago."""

    def __init__(self, limit: int, hold: float = CALLNO_HOLD_S) -> None:
        self.limit = limit
        self.hold = hold
        self.live = 0
        self._released: deque[float] = deque()
        self.waits = 0        # times a new call had to wait for the budget

    def held(self, now: float) -> int:
        rel = self._released
        while rel and rel[0] <= now - self.hold:
            rel.popleft()
        return self.live + len(rel)

    def available(self, now: float) -> bool:
        return self.held(now) < self.limit

    def take(self) -> None:
        self.live += 1

    def release(self, now: float) -> None:
        self.live -= 1
        self._released.append(now)

    def next_free(self, now: float) -> float:
        """When the oldest released number is returned (``now`` if one is free already)."""
        if self.available(now):
            return now
        return self._released[0] + self.hold if self._released else now + 1.0


#: Margin of the auth-slot model (:class:`AuthWindow`) for delay variation: a slot is taken
#: this share of a round trip (plus ``SLOT_GUARD_S``) early and released as much late.
SLOT_GUARD_RTT = 0.25
SLOT_GUARD_S = 0.005


class AuthWindow:
    """Paces call setups by what the target holds against its ``maxauthreq``: AUTHREQs it sent
    whose AUTHREP has not arrived yet.

    A call of ours holds such a slot at the target from the arrival of its tokened NEW (the
    target answers it with AUTHREQ) until our AUTHREP arrives, one round trip when nothing is
    lost.  With a call token that slot starts about 1.5 round trips after the call's first NEW
    (NEW -> CALLTOKEN -> tokened NEW arrives) and ends a one-way delay after our AUTHREP left.
    The round trip is measured on each CALLTOKEN exchange (a NEW sent once).

    Each call in setup has a slot end: a one-way delay after its (last) AUTHREP left; before
    that, the predicted end (start + lead + one round trip); and once the prediction passed
    without an AUTHREP (an AUTHREQ lost, say), open until the AUTHREP leaves or the call
    leaves setup.  A new call may start when fewer than ``limit`` slots end after the moment
    its own slot would begin.  Pure bookkeeping on the times given (no clock)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.rtt: float | None = None         # smoothed NEW -> CALLTOKEN round trip (s)
        self.tokens = False                    # the target answered a NEW with CALLTOKEN
        self._start: dict[int, float] = {}    # call -> when its first NEW left
        self._end: dict[int, float] = {}      # call -> slot end once its AUTHREP left
        self.samples = 0
        self.peak = 0

    def _guard(self) -> float:
        return SLOT_GUARD_RTT * (self.rtt or 0.0) + SLOT_GUARD_S

    def lead(self) -> float:
        """From a call's first NEW to the start of its slot at the target, made early."""
        r = self.rtt or 0.0
        return max(0.0, (1.5 if self.tokens else 0.5) * r - self._guard())

    def slot_end(self, key: int, now: float) -> float:
        """When ``key``'s slot at the target ends (``inf``: open)."""
        end = self._end.get(key)
        if end is not None:
            return end
        if self.rtt is None:
            return math.inf
        predicted = (self._start[key] + (1.5 if self.tokens else 0.5) * self.rtt + self.rtt
                     + self._guard())
        return predicted if now < predicted else math.inf

    def holding(self, now: float) -> int:
        """Calls whose slot has not ended by ``now + lead()``: the slot a call started now
        would take overlaps theirs."""
        at = now + self.lead()
        return sum(1 for k in self._start if self.slot_end(k, now) > at)

    def admit(self, now: float) -> bool:
        return self.holding(now) < self.limit

    def next_change(self, now: float) -> float | None:
        """The earliest moment ``admit`` may turn true without an event (a slot end or
        prediction passing), or None when only an event can change it."""
        at = now + self.lead()
        ends = [e for k in self._start if (e := self.slot_end(k, now)) > at and e < math.inf]
        return min(ends) - self.lead() if ends else None

    def start(self, key: int, now: float) -> None:
        self._start[key] = now
        self.peak = max(self.peak, self.holding(now))

    def calltoken(self, key: int, now: float, rtt_s: float | None) -> None:
        """The CALLTOKEN of ``key`` arrived; ``rtt_s`` when its NEW was sent once."""
        self.tokens = True
        if rtt_s is not None and rtt_s >= 0:
            self.samples += 1
            self.rtt = rtt_s if self.rtt is None else 0.875 * self.rtt + 0.125 * rtt_s

    def authrep(self, key: int, now: float) -> None:
        """Our AUTHREP of ``key`` left (again): the slot ends when it arrives."""
        if key in self._start:
            self._end[key] = now + 0.5 * (self.rtt or 0.0) + self._guard()

    def done(self, key: int) -> None:
        """``key`` left setup at the target's side (ACCEPT, REJECT, ended)."""
        self._start.pop(key, None)
        self._end.pop(key, None)

    @property
    def in_setup(self) -> int:
        return len(self._start)


@dataclass(slots=True)
class PlannedCall:
    index: int
    exten: str
    hold: float          # seconds to stay up after answer


def plan_calls(opts: LoadtestOptions) -> list[PlannedCall]:
    """The attempts in order: extensions round-robin, hold times drawn with ``opts.seed``."""
    rng = random.Random(opts.seed)
    extens = opts.exten_list()
    lo, hi = opts.duration
    return [PlannedCall(i, extens[i % len(extens)], lo if hi == lo else rng.uniform(lo, hi))
            for i in range(opts.attempts)]


def lossy_caller_settings(opts: LoadtestOptions) -> list[str]:
    """Our side's settings for a lossy link, without which calls that the target carries would
    fail here *by our own timers*: a frame lost twice is resent 12 s after its first send, so

    * no autokill of NEW (qualify's 2 x maxms = 4 s would end a call whose CALLTOKEN or
      AUTHREQ was lost twice); the NEW is retried at 2, 12, 22 s as without qualify;
    * the setup timeout covers the whole schedule (40 s), the media timeout a first full voice
      frame lost twice (15 s), and we wait for HANGUP ACKs until their give-up (35 s).

    Changes ``opts`` in place; returns notes for the summary (nothing already set is noted)."""
    notes = []
    if not opts.no_autokill:
        opts.no_autokill = True
        notes.append("impaired link: no autokill of NEW (NEW retried at 2, 12, 22 s)")
    if opts.media_timeout < LOSSY_MEDIA_TIMEOUT:
        opts.media_timeout = LOSSY_MEDIA_TIMEOUT
        notes.append(f"impaired link: media timeout {LOSSY_MEDIA_TIMEOUT:g} s")
    if opts.setup_timeout < LOSSY_SETUP_TIMEOUT:
        opts.setup_timeout = LOSSY_SETUP_TIMEOUT
        notes.append(f"impaired link: setup timeout {LOSSY_SETUP_TIMEOUT:g} s")
    if opts.hangup_timeout < LOSSY_HANGUP_LINGER:
        opts.hangup_timeout = LOSSY_HANGUP_LINGER
        notes.append(f"impaired link: wait up to {LOSSY_HANGUP_LINGER:g} s for HANGUP ACKs")
    return notes


def options_to_json(opts: LoadtestOptions) -> dict[str, Any]:
    """The options as plain JSON-able data (a cluster's master sends them to its workers)."""
    out: dict[str, Any] = {}
    for f in fields(opts):
        v = getattr(opts, f.name)
        if isinstance(v, Path):
            v = str(v)
        elif isinstance(v, tuple):
            v = list(v)
        elif isinstance(v, list):
            v = [list(x) if isinstance(x, tuple) else x for x in v]
        out[f.name] = v
    return out


_TUPLES = ("duration", "peer_host", "bind")
_PATHS = ("config_dir", "report_dir")


def options_from_json(d: dict[str, Any]) -> LoadtestOptions:
    """:func:`options_to_json` back; unknown names are refused (PlanError)."""
    known = {f.name for f in fields(LoadtestOptions)}
    unknown = set(d) - known
    if unknown:
        raise PlanError(f"unknown load test options {sorted(unknown)}")
    kw = dict(d)
    for name in _TUPLES:
        if kw.get(name) is not None:
            kw[name] = tuple(kw[name])
    for name in _PATHS:
        if kw.get(name) is not None:
            kw[name] = Path(kw[name])
    if kw.get("binds") is not None:
        kw["binds"] = [tuple(b) for b in kw["binds"]]
    return LoadtestOptions(**kw)
