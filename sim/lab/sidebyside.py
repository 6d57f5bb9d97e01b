"""One scenario, two office-bs: the lab's Asterisk 22 and ``iaxgw serve``, compared.

The lab's real Asterisk is office-a (127.0.0.10:4569) in both runs.  office-b (127.0.0.20:4569)
is first the lab's Asterisk 22, then ``iaxgw serve`` reading the very iax.conf and
extensions.conf the lab renders for that Asterisk (:mod:`iaxgw.sim.lab.labconfig`).  office-a
originates the scenario's calls (``channel originate``, ``burst`` of them in parallel at a time)
and everything that crosses office-b's address is captured (``dumpcap``) and decoded here, so
both runs are judged by the same independent observer (serve runs without UDP GSO here:
on loopback the capture sees a GSO buffer as one packet; the datagrams are the same):

* per call (keyed by office-a's call number): answered, or office-b's REJECT / HANGUP with its
  cause code and text;
* setup time (office-a's first NEW to office-b's ANSWER), median per run;
* audio: voice frames each way over a hold window, and how many of those office-b sent back are
  payloads office-a had sent on that call (Echo);
* office-a's own view: IAX2 channels Up (``core show channels concise``) and its
  ``iax2 show peers`` row for office-b (qualify status and latency), optionally through a stop and
  restart of office-b.

:func:`run_side_by_side` runs both and returns a :class:`Comparison` (``same``, ``diffs`` and a
readable ``text()``).  The caller holds the lab lock (the test fixture ``lab`` does; bench scripts
use ``with lab.lock(): ...``).
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from iaxgw._core.constants import (
    FRAME_CONTROL,
    FRAME_IAX,
    FRAME_VOICE,
    IE,
    ControlSubclass,
    IAXSubclass,
)
from iaxgw.sim.lab import cpugroup
from iaxgw.sim.lab.capture import Capture
from iaxgw.sim.lab.lab import AsteriskInstance, IaxPeer, Lab, LabError
from iaxgw.sim.lab.labconfig import (
    LabSiteConfig,
    render_extensions_conf,
    render_iax_conf,
    seed_site,
)

__all__ = ["CallOutcome", "Comparison", "Scenario", "SideOutcome", "compare", "run_side",
           "run_side_by_side"]

FarEnd = Literal["asterisk", "iaxgw"]
A_ADDR = ("127.0.0.10", 4569)
B_ADDR = ("127.0.0.20", 4569)
FRAMES_PER_S = 50
#: ``maxauthreq``: Asterisk 22's default, which neither office-b's config changes
MAXAUTHREQ = 3
_REPLIES_TO_NEW = frozenset({IAXSubclass.CALLTOKEN, IAXSubclass.AUTHREQ, IAXSubclass.ACCEPT,
                             IAXSubclass.REJECT})


@dataclass(frozen=True)
class Scenario:
    """What office-a does, and how each office-b is configured (``b``: overrides of the lab's
    office-b config, applied to the Asterisk office-b and to serve's config alike)."""

    name: str
    calls: int = 1
    burst: int = 1                  # originates issued in parallel at a time
    burst_gap_s: float = 0.5        # pause after each burst's commands returned
    dest: str = "Local/300@internal"
    app: str = "Milliwatt"
    hold_s: float = 2.0             # audio window once the calls stopped coming up
    settle_s: float = 3.0           # calls up: no change for this long ends the wait
    a: dict[str, Any] = field(default_factory=dict)
    b: dict[str, Any] = field(default_factory=dict)
    #: office-a's qualify latency: the median of this many ``iax2 show peers`` reads, this far
    #: apart (several pokes with a short ``qualifyfreqok``; the first poke meets a serve that
    #: has only just started)
    qualify_samples: int = 1
    qualify_every_s: float = 2.0
    down_cycle: bool = False        # stop office-b, watch office-a's qualify, restart it
    down_timeout_s: float = 30.0

    def a_config(self) -> LabSiteConfig:
        return seed_site("office-a", **self.a)

    def b_config(self) -> LabSiteConfig:
        return seed_site("office-b", **self.b)


@dataclass
class CallOutcome:
    """One call as seen on the wire at office-b's address."""

    a_callno: int
    new_at: float
    b_callno: int = 0
    result: str = "no answer"       # answered | REJECT | HANGUP | accepted | no answer
    cause: int | None = None
    cause_text: str | None = None
    answered_at: float | None = None
    authreqs: int = 0
    voice_to_b: int = 0             # in the hold window
    voice_from_b: int = 0
    echoed: int = 0                 # of voice_from_b: a payload office-a sent on this call
    reply_s: list[float] = field(default_factory=list)    # each NEW -> office-b's reply
    #: when its latest NEW arrived: other calls whose NEW arrived earlier and was answered with
    #: an AUTHREQ that office-a's AUTHREP had not answered yet on the wire -- what an office-b
    #: that handles each datagram in arrival order counts against ``maxauthreq``
    pending_at_new: int = 0
    last_new_at: float = 0.0
    authreq_new_at: float | None = field(default=None, repr=False)   # NEW its AUTHREQ answered
    authrep_at: float | None = field(default=None, repr=False)
    ended_at: float | None = field(default=None, repr=False)
    sent_payloads: set[bytes] = field(default_factory=set, repr=False)
    new_pending: float | None = field(default=None, repr=False)

    @property
    def final(self) -> bool:
        return self.result in ("REJECT", "HANGUP")

    @property
    def label(self) -> str:
        if self.result in ("REJECT", "HANGUP"):
            return f"{self.result} {self.cause} {self.cause_text or ''}".rstrip()
        return self.result


@dataclass
class SideOutcome:
    """One run of the scenario with one kind of office-b."""

    far_end: FarEnd
    originated: int = 0
    a_up: int = 0                       # office-a's IAX2 channels Up
    b_up: int | None = None             # office-b's own count
    calls: list[CallOutcome] = field(default_factory=list)
    hold_s: float = 0.0
    peer_status: str | None = None      # office-a's iax2 show peers row for office-b
    peer_latency_ms: int | None = None
    down_detected_s: float | None = None    # office-b stopped -> office-a shows it not OK
    down_status: str | None = None
    back_ok_s: float | None = None          # office-b restarted -> office-a shows it OK
    a_rx_drops: int | None = None           # datagrams the kernel dropped at office-a's socket
    notes: list[str] = field(default_factory=list)

    @property
    def causes(self) -> Counter[str]:
        return Counter(c.label for c in self.calls)

    def over_limit_news(self, maxauthreq: int = MAXAUTHREQ) -> int:
        """Calls whose latest NEW arrived while ``maxauthreq`` or more AUTHREQs to other calls
        were unanswered on the wire: how hard office-a's burst pressed on office-b's limit (a
        slow office-a, or one whose calls bunched up, presses harder)."""
        return sum(1 for c in self.calls if c.pending_at_new >= maxauthreq)

    def unfounded_limit_rejects(self, maxauthreq: int = MAXAUTHREQ) -> list[CallOutcome]:
        """Calls office-b refused with cause 21 ("Unauthenticated call limit reached") although,
        on the wire, fewer than ``maxauthreq`` of its AUTHREQs were unanswered when their NEW
        arrived: a refusal the limit does not explain (a reply that left late, an AUTHREP read
        late)."""
        return [c for c in self.calls if c.result == "REJECT" and c.cause == 21
                and c.pending_at_new < maxauthreq]

    @property
    def answered(self) -> int:
        return sum(1 for c in self.calls if c.result == "answered")

    @property
    def setup_ms(self) -> float | None:
        """Median NEW -> ANSWER of the answered calls (None: none answered)."""
        times = [1000.0 * (c.answered_at - c.new_at) for c in self.calls
                 if c.answered_at is not None]
        return round(statistics.median(times), 1) if times else None

    def reply_ms(self, q: float = 0.5) -> float | None:
        """Quantile ``q`` of office-b's reply time to a NEW (CALLTOKEN, AUTHREQ, ACCEPT or
        REJECT), over every NEW of every call (None: no reply seen)."""
        times = sorted(1000.0 * x for c in self.calls for x in c.reply_s)
        if not times:
            return None
        return round(times[min(len(times) - 1, int(q * len(times)))], 2)

    def audio_ok(self, fraction: float = 0.9) -> int | None:
        """Answered calls whose voice went both ways at >= ``fraction`` of 50 frames/s over the
        hold window, and came back as office-a's own payloads (None: no window)."""
        if self.hold_s < 0.2 or not self.answered:
            return None
        want = fraction * FRAMES_PER_S * self.hold_s
        return sum(1 for c in self.calls if c.result == "answered" and c.voice_to_b >= want
                   and c.voice_from_b >= want and c.echoed >= fraction * c.voice_from_b)

    def as_dict(self) -> dict[str, Any]:
        return {"far_end": self.far_end, "originated": self.originated,
                "attempted": len(self.calls), "a_up": self.a_up,
                "b_up": self.b_up, "answered": self.answered, "causes": dict(self.causes),
                "setup_ms": self.setup_ms, "reply_p50_ms": self.reply_ms(0.5),
                "reply_p90_ms": self.reply_ms(0.9), "over_limit_news": self.over_limit_news(),
                "unfounded_limit_rejects": len(self.unfounded_limit_rejects()),
                "audio_ok": self.audio_ok(),
                "hold_s": round(self.hold_s, 2), "peer_status": self.peer_status,
                "peer_latency_ms": self.peer_latency_ms,
                "down_detected_s": self.down_detected_s, "down_status": self.down_status,
                "back_ok_s": self.back_ok_s, "a_rx_drops": self.a_rx_drops,
                "notes": list(self.notes)}


@dataclass
class Comparison:
    scenario: Scenario
    asterisk: SideOutcome
    iaxgw: SideOutcome
    diffs: list[str]

    @property
    def same(self) -> bool:
        return not self.diffs

    def text(self) -> str:
        a, i = self.asterisk.as_dict(), self.iaxgw.as_dict()
        rows = [f"side by side: {self.scenario.name}", f"  {'':18} {'Asterisk':>24} "
                f"{'iaxgw serve':>24}"]
        for key in a:
            if key in ("far_end", "notes"):
                continue
            rows.append(f"  {key:18} {a[key]!s:>24} {i[key]!s:>24}")
        for side in (self.asterisk, self.iaxgw):
            rows += [f"  note ({side.far_end}): {n}" for n in side.notes]
        rows.append("  SAME" if self.same else "  DIFFERENT: " + "; ".join(self.diffs))
        return "\n".join(rows)


# --- the wire ---------------------------------------------------------------------------------

def _ies(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = 12
    while pos + 2 <= len(data):
        ie, n = data[pos], data[pos + 1]
        out.setdefault(ie, data[pos + 2:pos + 2 + n])
        pos += 2 + n
    return out


def _trunk_entries(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(sender's call number, payload) of each entry of a trunk datagram."""
    with_ts = bool(data[3] & 1)
    pos = 8
    while True:
        head = 6 if with_ts else 4
        if pos + head > len(data):
            return
        if with_ts:
            n = int.from_bytes(data[pos:pos + 2], "big")
            callno = int.from_bytes(data[pos + 2:pos + 4], "big") & 0x7FFF
        else:
            callno = int.from_bytes(data[pos:pos + 2], "big") & 0x7FFF
            n = int.from_bytes(data[pos + 2:pos + 4], "big")
        if pos + head + n > len(data):
            return
        yield callno, data[pos + head:pos + head + n]
        pos += head + n


def analyse_wire(records: Any, window: tuple[float, float]) -> list[CallOutcome]:
    """Calls between office-a and office-b from captured datagrams (``PcapRecord``-like:
    ``time``, ``src``, ``dst``, ``payload``), voice counted within ``window`` (wall clock)."""
    calls: dict[int, CallOutcome] = {}          # by office-a's call number (latest call)
    done: list[CallOutcome] = []
    by_b: dict[int, CallOutcome] = {}           # by office-b's call number
    t0, t1 = window

    def voice(call: CallOutcome | None, payload: bytes, to_b: bool, t: float) -> None:
        if call is None or not t0 <= t < t1:
            return
        if to_b:
            call.voice_to_b += 1
            call.sent_payloads.add(bytes(payload))
        else:
            call.voice_from_b += 1
            call.echoed += bytes(payload) in call.sent_payloads

    for r in records:
        d, t = r.payload, r.time
        to_b = r.dst == B_ADDR and r.src == A_ADDR
        if not to_b and not (r.src == B_ADDR and r.dst == A_ADDR):
            continue
        if len(d) >= 4 and d[:3] == b"\0\0\x01":          # trunk
            for callno, payload in _trunk_entries(d):
                voice(calls.get(callno) if to_b else by_b.get(callno), payload, to_b, t)
            continue
        if len(d) < 4:
            continue
        src_no = ((d[0] & 0x7F) << 8) | d[1]
        if not d[0] & 0x80:                                  # mini voice
            voice(calls.get(src_no) if to_b else by_b.get(src_no), d[4:], to_b, t)
            continue
        if len(d) < 12:
            continue
        dst_no = ((d[2] & 0x7F) << 8) | d[3]
        ft, sub = d[10], d[11]
        if to_b:
            if ft == FRAME_IAX and sub == IAXSubclass.NEW:
                old = calls.get(src_no)
                if old is None or old.final:
                    calls[src_no] = CallOutcome(src_no, t)
                    if old is not None:
                        done.append(old)
                new = calls[src_no]
                new.new_pending = new.last_new_at = t
            elif ft == FRAME_IAX and sub == IAXSubclass.AUTHREP and src_no in calls:
                rep = calls[src_no]
                if rep.authrep_at is None:
                    rep.authrep_at = t
            elif ft == FRAME_VOICE:
                voice(calls.get(src_no), d[12:], True, t)
            continue
        call = calls.get(dst_no) if dst_no else by_b.get(src_no)
        if call is None:
            continue
        if call.new_pending is not None and ft == FRAME_IAX and sub in _REPLIES_TO_NEW:
            call.reply_s.append(t - call.new_pending)
            call.new_pending = None
        if ft == FRAME_VOICE:
            voice(call, d[12:], False, t)
        elif ft == FRAME_IAX and sub == IAXSubclass.ACCEPT:
            call.b_callno = src_no
            by_b[src_no] = call
            if call.result == "no answer":
                call.result = "accepted"
        elif ft == FRAME_IAX and sub == IAXSubclass.AUTHREQ:
            call.authreqs += 1
            if call.authreq_new_at is None:
                call.authreq_new_at = call.last_new_at
        elif ft == FRAME_CONTROL and sub == ControlSubclass.ANSWER and not call.final:
            call.result = "answered"
            call.answered_at = t
        elif (ft == FRAME_IAX and sub in (IAXSubclass.REJECT, IAXSubclass.HANGUP)
              and not call.final and call.result != "answered"):
            ies = _ies(d)
            call.ended_at = t
            call.result = "REJECT" if sub == IAXSubclass.REJECT else "HANGUP"
            code = ies.get(IE.CAUSECODE)
            call.cause = code[0] if code else None
            text = ies.get(IE.CAUSE)
            call.cause_text = text.decode(errors="replace") if text is not None else None
    out = sorted(done + list(calls.values()), key=lambda c: c.new_at)
    _count_unanswered_authreqs(out)
    return out


def _count_unanswered_authreqs(calls: list[CallOutcome]) -> None:
    """Each call's ``pending_at_new``: in arrival order, the calls asked for authentication
    (their NEW arrived earlier and got an AUTHREQ) whose AUTHREP had not arrived, and which had
    not ended, when this call's latest NEW arrived."""
    asked = sorted((c for c in calls if c.authreq_new_at is not None),
                   key=lambda c: c.authreq_new_at or 0.0)
    for call in calls:
        t = call.last_new_at
        n = 0
        for other in asked:
            if (other.authreq_new_at or 0.0) >= t:
                break
            if other is not call and (other.authrep_at is None or other.authrep_at > t) \
                    and (other.ended_at is None or other.ended_at > t):
                n += 1
        call.pending_at_new = n


# --- one run ----------------------------------------------------------------------------------

def a_channels_up(a: AsteriskInstance, remote: str = "office-b") -> int:
    """office-a's IAX2 channels to ``remote`` in state Up."""
    n = 0
    for line in a.cli("core show channels concise").splitlines():
        parts = line.split("!")
        if len(parts) > 4 and parts[0].startswith(f"IAX2/{remote}") and parts[4] == "Up":
            n += 1
    return n


def udp_drops(addr: tuple[str, int]) -> int | None:
    """The kernel's drop count of the UDP socket bound to ``addr`` (Linux /proc/net/udp)."""
    import ipaddress

    want = f"{int(ipaddress.IPv4Address(addr[0])).to_bytes(4, 'big')[::-1].hex().upper()}:" \
           f"{addr[1]:04X}"
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) > 12 and parts[1] == want:
            return int(parts[-1])
    return None


def _wait(pred: Callable[[], bool], timeout: float, poll: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(poll)
    return pred()


#: the ``asterisk -rx`` clients that issue a burst's originates run in a CPU group of their own
#: (:mod:`iaxgw.sim.lab.cpugroup`), as each site does: with two sites on two machines they would not
#: run beside office-b.  Where the scheduler does not group processes by session (autogroup off,
#: or all processes in one cgroup), 50 of them at once and office-a's thread per channel took the
#: CPU from a single-threaded office-b: serve brought up 84 of 200 calls against the Asterisk
#: office-b's 195 (reply to a NEW: median 12 ms, Asterisk's 3 ms).  Both runs get the same.
CLI_GROUP = "office-a-cli"


def _originate_bursts(a: AsteriskInstance, sc: Scenario) -> int:
    ok = 0

    def one(_: int) -> bool:
        try:
            a.originate(sc.dest, sc.app, cpu_group=CLI_GROUP)
        except LabError:
            return False
        return True

    left = sc.calls
    with ThreadPoolExecutor(max_workers=max(1, sc.burst)) as pool:
        while left > 0:
            n = min(sc.burst, left)
            ok += sum(pool.map(one, range(n)))
            left -= n
            if left:
                time.sleep(sc.burst_gap_s)
    return ok


class _OfficeB:
    """office-b of one run: the lab's Asterisk or ``iaxgw serve`` with the same config."""

    def __init__(self, lab: Lab, far_end: FarEnd, cfg: LabSiteConfig, work: Path) -> None:
        self.far_end = far_end
        self.inst: AsteriskInstance | None = None
        self.serve: Any = None
        if far_end == "asterisk":
            self.inst = lab.instance("office-b", cfg)
        else:
            from iaxgw.sim.lab.loadtest_lab import ServeProcess

            conf = work / "office-b"
            conf.mkdir(parents=True, exist_ok=True)
            (conf / "iax.conf").write_text(render_iax_conf(cfg))
            (conf / "extensions.conf").write_text(render_extensions_conf(cfg))
            # a session of its own, as the daemonized Asterisk; no UDP GSO: on loopback the
            # capture would see a GSO buffer as one packet and could not cut it into datagrams
            self.serve = ServeProcess(conf, work, own_session=True, env={"IAXGW_NO_GSO": "1"})

    def start(self) -> None:
        if self.inst is not None:
            self.inst.start()
        else:
            self.serve.start()
            cpugroup.join(self.serve.pid, "office-b")   # where the Asterisk office-b would be

    def stop(self) -> None:
        if self.inst is not None:
            self.inst.stop()
        elif self.serve is not None:
            self.serve.stop()

    def calls_up(self) -> int | None:
        if self.inst is not None:
            return self.inst.active_calls()
        from iaxgw.gateway.serve.control import ControlError, query

        try:
            rows = query(self.serve.control, "channels")
        except (ControlError, OSError):
            return None
        return sum(1 for r in rows if r.get("state") == "UP")

    def log_lines(self, needle: str) -> list[str]:
        path = self.inst.log_path if self.inst is not None else self.serve.log_path
        try:
            text = Path(path).read_text(errors="replace")
        except OSError:
            return []
        return [ln for ln in text.splitlines() if needle in ln]


def _peer_row(a: AsteriskInstance) -> IaxPeer | None:
    try:
        return a.peers().get("office-b")
    except LabError:
        return None


def run_side(lab: Lab, far_end: FarEnd, sc: Scenario,
             work: Path | None = None) -> SideOutcome:
    """Run ``sc`` once with ``far_end`` as office-b; the caller holds the lab lock."""
    from iaxgw.gateway.driver.pcap import read_pcap

    out = SideOutcome(far_end)
    with contextlib.ExitStack() as stack:
        if work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="iaxgw-sbs-")))
        work.mkdir(parents=True, exist_ok=True)
        pcap = work / f"{far_end}.pcap"
        b = _OfficeB(lab, far_end, sc.b_config(), work)
        a = lab.instance("office-a", sc.a_config())
        cap = Capture(pcap, "udp port 4569 and host 127.0.0.20", classic_pcap=True,
                      buffer_mib=256)
        hold = (0.0, 0.0)
        try:
            cap.start()
            if cap.pid is not None:        # the observer: a machine of its own, as the sites
                cpugroup.join(cap.pid, "observer")
            b.start()                      # first: office-a's first POKE finds it bound
            a.start()
            _wait(lambda: bool((p := _peer_row(a)) and p.ok), 30)
            rows = []
            for i in range(max(1, sc.qualify_samples)):
                if i:
                    time.sleep(sc.qualify_every_s)
                rows.append(_peer_row(a))
            row = rows[-1]
            if row is not None:
                out.peer_status = row.status
                lat = sorted(r.latency_ms for r in rows if r is not None
                             and r.latency_ms is not None)
                out.peer_latency_ms = lat[len(lat) // 2] if lat else None
            if sc.calls:
                out.originated = _originate_bursts(a, sc)
                best, best_at = -1, time.monotonic()
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:      # up to all, or no change for settle_s
                    n = a_channels_up(a)
                    if n != best:
                        best, best_at = n, time.monotonic()
                    if n >= out.originated or time.monotonic() - best_at > sc.settle_s:
                        break
                    time.sleep(0.5)
                t0 = time.time()
                time.sleep(sc.hold_s)
                hold = (t0, time.time())
                out.hold_s = hold[1] - hold[0]
                out.a_up = a_channels_up(a)
                out.b_up = b.calls_up()
                a.hangup_all()
                _wait(lambda: a.active_calls() == 0, 15)
            if sc.down_cycle:
                _down_cycle(a, b, sc, out)
            out.a_rx_drops = udp_drops(A_ADDR)
            if far_end == "iaxgw":
                out.notes += [ln.split(" ", 2)[-1][:160] for ln in
                              b.log_lines("AuthFailed")[:5]]
        finally:
            with contextlib.suppress(LabError):
                a.stop()
            b.stop()
            cap.stop()
        out.calls = analyse_wire(read_pcap(pcap), hold) if pcap.exists() else []
    return out


def _down_cycle(a: AsteriskInstance, b: _OfficeB, sc: Scenario, out: SideOutcome) -> None:
    b.stop()
    t0 = time.monotonic()
    if _wait(lambda: bool((p := _peer_row(a)) and not p.ok), sc.down_timeout_s, 0.2):
        out.down_detected_s = round(time.monotonic() - t0, 1)
    row = _peer_row(a)
    out.down_status = row.status if row is not None else None
    b.start()
    t1 = time.monotonic()
    if _wait(lambda: bool((p := _peer_row(a)) and p.ok), sc.down_timeout_s, 0.2):
        out.back_ok_s = round(time.monotonic() - t1, 1)


# --- comparing --------------------------------------------------------------------------------

def compare(sc: Scenario, ast: SideOutcome, gw: SideOutcome, *, setup_tol_ms: float = 100.0,
            latency_tol_ms: int = 10, qualify_tol_s: float = 5.0) -> Comparison:
    """The differences between the two runs that matter (empty: the same outcome)."""
    diffs: list[str] = []
    if len(ast.calls) != len(gw.calls):
        diffs.append(f"calls office-a attempted {len(ast.calls)} vs {len(gw.calls)}")
    if ast.a_up != gw.a_up:
        diffs.append(f"office-a calls up {ast.a_up} vs {gw.a_up}")
    if ast.causes != gw.causes:
        diffs.append(f"causes {dict(ast.causes)} vs {dict(gw.causes)}")
    sa, sg = ast.setup_ms, gw.setup_ms
    if (sa is None) != (sg is None) or (sa is not None and sg is not None
                                        and abs(sa - sg) > max(setup_tol_ms, sa)):
        diffs.append(f"setup median {sa} ms vs {sg} ms")
    if ast.audio_ok() != gw.audio_ok():
        diffs.append(f"calls with echoed audio {ast.audio_ok()} vs {gw.audio_ok()}")
    if ast.peer_status != gw.peer_status:
        diffs.append(f"office-a's qualify of office-b {ast.peer_status} vs {gw.peer_status}")
    la, lg = ast.peer_latency_ms, gw.peer_latency_ms
    if la is not None and lg is not None and abs(la - lg) > latency_tol_ms:
        diffs.append(f"qualify latency {la} ms vs {lg} ms")
    if sc.down_cycle:
        if ast.down_status != gw.down_status:
            diffs.append(f"office-b down: office-a shows {ast.down_status} vs {gw.down_status}")
        for what, x, y in (("down detected", ast.down_detected_s, gw.down_detected_s),
                           ("back OK", ast.back_ok_s, gw.back_ok_s)):
            if (x is None) != (y is None) or (x is not None and y is not None
                                              and abs(x - y) > qualify_tol_s):
                diffs.append(f"{what} after {x} s vs {y} s")
    return Comparison(sc, ast, gw, diffs)


def run_side_by_side(lab: Lab, sc: Scenario, work: Path | None = None,
                     **tolerances: Any) -> Comparison:
    """Run ``sc`` with the Asterisk office-b, then with ``iaxgw serve``; compare."""
    ast = run_side(lab, "asterisk", sc, work / "asterisk" if work else None)
    gw = run_side(lab, "iaxgw", sc, work / "iaxgw" if work else None)
    return compare(sc, ast, gw, **tolerances)
