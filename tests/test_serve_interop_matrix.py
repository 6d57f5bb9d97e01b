"""``iaxgw serve`` (GatewayApp in-process as office-b, 127.0.0.20:4569) against a real Asterisk 22
office-a: the interop matrix of the "serve" issue.

1. peers OK both ways (Asterisk's RTT fresh: office-a is (re)started after we are bound);
2. office-a calls our 300 (echo) and 301 (milliwatt): the 1004 Hz tone checked on our side
   (decoded G.711 + FFT) and in a WAV office-a recorded; voice trunked both ways;
3. we call office-a's 200 (echo, audio correlated byte-exact), hang up from either side,
   202 (busy) and 203 (congestion);
4. wrong secret either way, ACL (both sides), requirecalltoken yes/no, trunktimestamps no/yes
   (cmddata byte on the wire both ways), ulaw and alaw;
5. 100 calls each way at once.

Each office-a config variant restarts office-a (about a second); our side starts first so that
office-a's first POKE is answered at once.  Every number the tests see is printed (``-s``).
"""

from __future__ import annotations

import asyncio
import re
import struct
import subprocess
import sys
import threading
import time
import wave
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import uvloop

from iaxgw._core import g711
from iaxgw.gateway.conf.model import AclRule
from iaxgw.gateway.iax2 import events as ev
from iaxgw.gateway.serve.app import GatewayApp, ServeOptions, load_site

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(240)]

_T = TypeVar("_T")
A_ADDR = ("127.0.0.10", 4569)
FT_IAX, FT_CONTROL = 6, 4
IAX_NAMES = {5: "HANGUP", 6: "REJECT", 1: "NEW", 2: "PING", 8: "AUTHREQ", 9: "AUTHREP",
             7: "ACCEPT", 0x28: "CALLTOKEN"}
CONTROL_NAMES = {1: "HANGUP", 3: "RINGING", 4: "ANSWER", 5: "BUSY", 8: "CONGESTION"}

# office-a: the seed plus an ``h`` extension in [from-iax] that logs the hangup cause of calls
# arriving from us (a second [from-iax] section: pbx_config merges it into the first).
A_BASE: dict[str, Any] = {
    "extra_modules": ("app_verbose",),
    "extra_dialplan": {"from-iax": (
        "exten => h,1,Log(NOTICE,iaxgw-matrix ${CHANNEL} ${EXTEN} "
        "HANGUPCAUSE=${HANGUPCAUSE})",)},
}


# --- signal analysis ---------------------------------------------------------------------------

def tone_of(pcm: np.ndarray, rate: int = 8000) -> tuple[float, float]:
    """(peak frequency in Hz, share of the energy within +-4 Hz of it) of ``pcm``."""
    x = pcm.astype(np.float64)
    x -= x.mean()
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    k = int(spec.argmax())
    hz_per_bin = rate / len(x)
    w = max(1, round(4 / hz_per_bin))
    total = float(spec.sum()) or 1.0
    return k * hz_per_bin, float(spec[max(0, k - w):k + w + 1].sum()) / total


def decode(payloads: list[bytes], codec: int) -> np.ndarray:
    raw = b"".join(payloads)
    pcm = g711.alaw_decode(raw) if codec == 8 else g711.ulaw_decode(raw)
    return np.frombuffer(pcm, dtype=np.int16)


def ies_of(frame: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    i = 12
    while i + 2 <= len(frame):
        ie, n = frame[i], frame[i + 1]
        out[ie] = frame[i + 2:i + 2 + n]
        i += 2 + n
    return out


# --- our side: GatewayApp on its own loop thread, with taps ------------------------------------

@dataclass
class Wire:
    kinds: Counter[tuple[str, str]] = field(default_factory=Counter)
    cmddata: Counter[tuple[str, int]] = field(default_factory=Counter)
    trunk_entries: Counter[str] = field(default_factory=Counter)
    signals: list[tuple[str, str, int | None, str | None]] = field(default_factory=list)


class Gw:
    """``GatewayApp`` (the object behind ``iaxgw serve``) with the embedded office-b config."""

    def __init__(self, tmp: Path, tweak: Callable[[Any], None] | None = None) -> None:
        site = load_site(ServeOptions(peer="office-a"))
        if tweak is not None:
            tweak(site.config)
        self.ctl = str(tmp / "gw.sock")
        self.app = GatewayApp(site, peer="office-a", control=self.ctl, spool=tmp / "spool")
        self.wire = Wire()
        self.events: list[ev.Event] = []
        self.rx: dict[int, list[bytes]] = {}
        self.n_rx: Counter[int] = Counter()
        # voice as it arrived on the wire, by the sender's call number: an echoing call's
        # trunk entries go straight back inside the endpoint and never reach the media sink
        self.rx_wire: dict[int, list[bytes]] = {}
        # taps: instance attributes shadow the methods start() hands to the endpoint/server
        orig_media, orig_event = self.app._on_media, self.app._on_event

        def on_dgram(direction: str, data: bytes, addr: tuple[str, int], now: float) -> None:
            d = "out" if direction in ("tx", "out", "send", "sent") else "in"
            if data[0] & 0x80:
                kind = "full"
                ft, sub = data[10], data[11]
                if ft in (FT_IAX, FT_CONTROL):
                    name = (IAX_NAMES if ft == FT_IAX else CONTROL_NAMES).get(sub)
                    if name is not None:
                        ies = ies_of(data) if ft == FT_IAX else {}
                        cause = ies.get(42)
                        text = ies.get(22)
                        self.wire.signals.append((
                            d, ("" if ft == FT_IAX else "CONTROL ") + name,
                            cause[0] if cause else None,
                            text.decode(errors="replace") if text is not None else None))
            elif data[:3] == b"\0\0\x01":
                kind = "trunk"
                if d == "in":
                    for remote, payload in _trunk_payloads(data):
                        self._wire_voice(remote, payload)
                self.wire.cmddata[(d, data[3])] += 1
                self.wire.trunk_entries[d] += _trunk_entry_count(data)
            else:
                kind = "mini"
                if d == "in":
                    self._wire_voice(((data[0] << 8) | data[1]) & 0x7FFF, data[4:])
            if kind == "full" and d == "in" and data[10] == 2:        # full voice frame
                self._wire_voice(((data[0] << 8) | data[1]) & 0x7FFF, data[12:])
            self.wire.kinds[(d, kind)] += 1

        def on_media(callno: int, ts: int, payload: bytes, now: float) -> None:
            self.n_rx[callno] += 1
            lst = self.rx.setdefault(callno, [])
            if len(lst) < 300:
                lst.append(bytes(payload))
            orig_media(callno, ts, payload, now)

        def on_event(event: ev.Event) -> None:
            self.events.append(event)
            orig_event(event)

        self.app.datagram_observer = on_dgram
        self.app._on_media = on_media  # type: ignore[method-assign]
        self.app._on_event = on_event  # type: ignore[method-assign]
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="gw-loop",
                                        daemon=True)

    def _wire_voice(self, remote: int, payload: bytes) -> None:
        lst = self.rx_wire.setdefault(remote, [])
        if len(lst) < 300:
            lst.append(bytes(payload))

    def rx_of(self, callno: int) -> list[bytes]:
        """The voice our call ``callno`` received, in arrival order: as the media sink got it,
        or (an echoing call, whose trunk entries never reach the sink) as it came off the
        wire for that call's remote call number."""
        sunk = self.rx.get(callno, [])
        call = self.app.endpoint.call_info(callno)
        wire = self.rx_wire.get(call.peer_callno, []) if call is not None else []
        return wire if len(wire) > len(sunk) else sunk

    def __enter__(self) -> Gw:
        self._thread.start()
        self.run(self.app.start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.app.stop(), timeout=15)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float = 30) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], _T]) -> _T:
        async def wrap() -> _T:
            return fn()
        return self.run(wrap())

    def channels(self) -> list[Any]:
        return self.call(lambda: list(self.app.endpoint.channels()))

    def peer_status(self) -> str:
        rows = self.call(self.app.peer_rows)
        return str(rows[0].get("status", ""))

    def incoming(self) -> list[ev.IncomingCall]:
        return [e for e in list(self.events) if isinstance(e, ev.IncomingCall)]

    def ended(self) -> dict[int, ev.CallEnded]:
        return {e.callno: e for e in list(self.events) if isinstance(e, ev.CallEnded)}

    def show(self, what: str) -> str:
        out = subprocess.run([sys.executable, "-m", "iaxgw.gateway.cli", "show", what,
                              "--control", self.ctl], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def wait(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline, f"timed out ({timeout} s) waiting for {what}"
            time.sleep(0.05)


def _trunk_payloads(data: bytes) -> list[tuple[int, bytes]]:
    """(sender's call number, payload) of each entry of a trunk datagram."""
    from iaxgw._core.trunk import parse_trunk

    try:
        tf = parse_trunk(data)
    except ValueError:
        return []
    return [(callno, bytes(p)) for callno, _ts, p in tf.entries]


def _trunk_entry_count(data: bytes) -> int:
    ts = data[3] & 1
    i, n = 8, 0
    for _ in range(64):
        if i + 4 > len(data):
            break
        if ts:
            ln = (data[i + 2] << 8) | data[i + 3]
            i += 6 + ln
        else:
            ln = (data[i] << 8) | data[i + 1]
            i += 4 + ln
        n += 1
    return n


class Prober:
    """Media handler of an outgoing call: sends numbered payloads, collects what comes back."""

    def __init__(self, tag: int) -> None:
        self.tag = tag
        self.sent = 0
        self.back: list[tuple[int, int]] = []   # (index, frames sent when it came back)
        self.foreign = 0

    def next_payload(self) -> bytes:
        p = struct.pack(">HHI", 0xA55A, self.tag, self.sent) * 20
        self.sent += 1
        return p

    def on_voice(self, payload: bytes, ts: int) -> None:
        if len(payload) == 160 and payload[:8] * 20 == payload and payload[:2] == b"\xa5\x5a":
            tag, idx = struct.unpack(">HI", payload[2:8])
            if tag == self.tag:
                self.back.append((idx, self.sent))
                return
        self.foreign += 1

    def delay_ms(self) -> float:
        return 20.0 * float(np.median([s - i for i, s in self.back])) if self.back else -1


async def dial(gw: Gw, exten: str, tag: int = 1, timeout: float = 10) -> tuple[Any, Prober, str]:
    leg = gw.app.place_call("office-a", exten, None)
    prober = Prober(tag)
    leg.set_media(prober)
    status = await asyncio.wait_for(leg.wait_answer(), timeout)
    return leg, prober, status


# --- office-a ----------------------------------------------------------------------------------

class OfficeA:
    """office-a, restarted only when a test asks for a different config."""

    def __init__(self, factory: Callable[..., Any]) -> None:
        self._factory = factory
        self._key: str | None = None
        self.inst: Any = None

    def get(self, fresh: bool = False, **overrides: Any) -> Any:
        over = {**A_BASE, **overrides}
        if "extra_dialplan" in overrides:
            over["extra_dialplan"] = {**A_BASE["extra_dialplan"], **overrides["extra_dialplan"]}
        key = repr(sorted(over.items()))
        if fresh or key != self._key or self.inst is None or not self.inst.running:
            self.inst = self._factory("office-a", **over)
            self._key = key
        return self.inst


@pytest.fixture(scope="module")
def office(asterisk_factory: Callable[..., Any]) -> OfficeA:
    return OfficeA(asterisk_factory)


def a_hangup_log(a: Any) -> list[str]:
    try:
        text = a.log_path.read_text(errors="replace")
    except OSError:
        return []
    return [line.split("iaxgw-matrix", 1)[1].strip() for line in text.splitlines()
            if "iaxgw-matrix" in line and "Executing" not in line]


def wait_tables_empty(gw: Gw, a: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ours, theirs = gw.channels(), a.channels()
        if not ours and not theirs and a.active_calls() == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"call tables not empty after {timeout} s: ours {len(ours)}, "
                                 f"office-a iax2 {len(theirs)}, active {a.active_calls()}:\n"
                                 + a.cli("iax2 show channels") + a.cli("core show channels"))
        time.sleep(0.2)


def assert_no_call(gw: Gw, a: Any) -> None:
    """After a refused call: nothing on our side, no call on office-a.  office-a keeps the
    refused call's ownerless pvt in ``iax2 show channels`` ("(None)", Tx:NEW/Tx:ACK) for about
    10 s -- it does exactly the same when the far end is another Asterisk 22 (measured)."""
    gw.wait(lambda: not gw.channels(), 5, "our channels empty")
    rows = a.channels()
    print("office-a after the refusal:", a.active_calls(), "active calls; iax2 channels",
          [(r.channel, r.first_msg, r.last_msg, r.format) for r in rows])
    assert a.active_calls() == 0 and all(r.channel == "(None)" for r in rows)


def ready(gw: Gw, a: Any, timeout: float = 30) -> Any:
    """Both sides see each other OK; returns office-a's peer row."""
    peer = a.wait_peer_ok("office-b", timeout=timeout)
    gw.wait(lambda: gw.peer_status().startswith("OK"), timeout, "our peer office-a OK")
    return peer


# --- two-way audio checks (used by the variants) -----------------------------------------------

def check_a_calls_our_echo(gw: Gw, a: Any, seconds: float = 2.0) -> dict[str, Any]:
    """office-a's Milliwatt -> our 300 (Echo): the tone we received and what we echoed."""
    n_in = len(gw.incoming())
    a.originate("Local/300@internal", "Milliwatt")
    gw.wait(lambda: len(gw.incoming()) > n_in, 10, "IncomingCall for 300")
    inc = gw.incoming()[n_in]
    assert (inc.peer, inc.exten, inc.context, inc.trunk) == ("office-a", "300", "from-iax", True)
    time.sleep(seconds)
    chan = next(c for c in gw.channels() if c.local_callno == inc.callno)
    freq, purity = tone_of(decode(gw.rx_of(inc.callno)[25:75], inc.codec))   # 1 s of the tone
    a_chans = a.channels()
    a.hangup_all()
    gw.wait(lambda: inc.callno in gw.ended(), 10, "CallEnded after office-a's hangup")
    res = {"codec": inc.codec, "rx": chan.frames_rx, "tx": chan.frames_tx,
           "freq": round(freq, 1), "purity": round(purity, 3),
           "a_format": [c.format for c in a_chans], "cause": gw.ended()[inc.callno].cause}
    print("office-a -> our echo 300:", res)
    expected = seconds * 50
    assert chan.frames_rx >= 0.9 * expected and chan.frames_tx >= 0.9 * expected
    assert abs(freq - 1004) <= 3 and purity > 0.9
    return res


def check_we_call_a_echo(gw: Gw, a: Any, seconds: float = 2.0) -> dict[str, Any]:
    """Our call to office-a's 200 (Echo): numbered payloads come back byte-exact."""
    leg, prober, status = gw.run(dial(gw, "200", tag=7))
    assert status == "answered"
    time.sleep(seconds)
    a_chans = a.channels()
    gw.run(leg.hangup(16))
    res = {"sent": prober.sent, "back": len(prober.back), "foreign": prober.foreign,
           "distinct_back": len({i for i, _ in prober.back}),
           "echo_delay_ms": prober.delay_ms(), "a_format": [c.format for c in a_chans]}
    print("our call -> office-a echo 200:", res)
    assert prober.back and len(prober.back) >= 0.85 * prober.sent
    assert len({i for i, _ in prober.back}) >= 0.85 * prober.sent and prober.foreign <= 5
    assert all(s > i for i, s in prober.back)
    return res


# === 1. peers ==================================================================================

def test_1_peers_ok_both_ways(office: OfficeA, tmp_path: Path) -> None:
    with Gw(tmp_path) as gw:
        a = office.get(fresh=True)       # started after we are bound: its first POKE is answered
        t0 = time.monotonic()
        peer = a.wait_peer_ok("office-b", timeout=30)
        gw.wait(lambda: gw.peer_status().startswith("OK"), 30, "our peer office-a OK")
        took = time.monotonic() - t0
        first = gw.show("peers")
        # Our first POKE went out before office-a was bound; it answered a retransmission, and
        # the RTT counts from the first send (as Asterisk's own does): poke once more, fresh.
        gw.call(lambda: gw.app.command(lambda now: gw.app.endpoint.poke("office-a", now)))
        gw.wait(lambda: re.search(r"OK \((\d\d?) ms\)", gw.peer_status()) is not None, 10,
                "a fresh RTT on our side")
        ours = gw.show("peers")
        print("iaxgw show peers, first qualify:\n" + first)
        print(f"office-a iax2 show peers (after {took:.1f} s):\n" + a.cli("iax2 show peers"))
        print("iaxgw show peers:\n" + ours)
        assert peer.ok and peer.trunk and peer.host == "127.0.0.20"
        assert peer.latency_ms is not None and peer.latency_ms < 100, peer
        line = next(ln for ln in ours.splitlines() if ln.startswith("office-a"))
        m = re.search(r"OK \((\d+) ms\)", line)
        assert m and int(m.group(1)) < 100, line
        assert "127.0.0.10" in line and "(T)" in line


# === 2. office-a calls our 3xx ==================================================================

def test_2_a_calls_our_echo_and_milliwatt(office: OfficeA, tmp_path: Path) -> None:
    with Gw(tmp_path) as gw:
        a = office.get()
        ready(gw, a)
        res = check_a_calls_our_echo(gw, a)
        assert res["codec"] == 4 and res["a_format"] == ["ulaw"] and res["cause"] == 16

        # our 301 (Milliwatt) recorded by office-a: Record() writes inside the chroot
        rec = "/tmp/iaxgw-matrix-301.wav"
        host = a.lab.host_path(rec)
        host.unlink(missing_ok=True)
        n_in = len(gw.incoming())
        a.originate("Local/301@internal", "Record", f"{rec},0,3,q")
        gw.wait(lambda: len(gw.incoming()) > n_in, 10, "IncomingCall for 301")
        inc = gw.incoming()[n_in]
        gw.wait(lambda: inc.callno in gw.ended(), 15, "Record to finish and hang up")
        wait_tables_empty(gw, a)
        with wave.open(str(host), "rb") as w:
            params = w.getparams()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        freq, purity = tone_of(pcm[4000:12000])
        rms = float(np.sqrt(np.mean(pcm[4000:12000].astype(float) ** 2)))
        print(f"office-a recorded our 301: {params.nframes / params.framerate:.2f} s "
              f"@{params.framerate} Hz, peak {freq:.1f} Hz, purity {purity:.3f}, rms {rms:.0f}; "
              f"our CallEnded cause {gw.ended()[inc.callno].cause}")
        assert params.framerate == 8000 and params.nframes >= 2 * 8000
        assert abs(freq - 1004) <= 3 and purity > 0.9 and rms > 1000

        k = gw.wire.kinds
        print("our datagrams:", dict(k), "trunk cmddata:", dict(gw.wire.cmddata),
              "trunk entries:", dict(gw.wire.trunk_entries))
        # Asterisk's voice reaches us in trunk datagrams (the 2 s echo call: Record sends no
        # voice), ours leaves in trunk datagrams: the frames we echoed plus at least 1.8 s of
        # milliwatt, all as trunk entries (no mini frame either way, below)
        assert k[("in", "trunk")] >= 90 and k[("out", "trunk")] >= 150
        assert gw.wire.trunk_entries["out"] >= res["tx"] + 90
        assert k[("in", "mini")] == 0 and k[("out", "mini")] == 0
        # trunktimestamps unset on both sides (Asterisk's default: no)
        assert set(gw.wire.cmddata) == {("in", 0), ("out", 0)}


# === 3. we call office-a's 2xx ==================================================================

def test_3_we_call_a(office: OfficeA, tmp_path: Path) -> None:
    with Gw(tmp_path) as gw:
        a = office.get()
        ready(gw, a)
        res = check_we_call_a_echo(gw, a)
        assert res["a_format"] == ["ulaw"]
        wait_tables_empty(gw, a)
        seen_by_a = a_hangup_log(a)
        print("office-a h extension after our hangup:", seen_by_a[-1:])
        assert seen_by_a and seen_by_a[-1].endswith("HANGUPCAUSE=16")

        # hangup from Asterisk's side
        leg, prober, status = gw.run(dial(gw, "200", tag=8))
        assert status == "answered"
        time.sleep(0.5)
        name = a.channels()[0].channel
        a.cli(f"channel request hangup {name}")
        gw.wait(lambda: leg.callno in gw.ended(), 10, "CallEnded after Asterisk's hangup")
        end = gw.ended()[leg.callno]
        print(f"Asterisk hung up {name}: our CallEnded cause {end.cause} ({end.cause_text!r}, "
              f"{end.reason}); echoed {len(prober.back)}/{prober.sent}")
        assert end.reason == "hangup" and end.cause == 16
        wait_tables_empty(gw, a)

        # busy and congestion
        for exten, want in (("202", "busy"), ("203", "congestion")):
            n_sig = len(gw.wire.signals)
            leg, _prober, status = gw.run(dial(gw, exten, tag=9))
            cause = 17 if status == "busy" else 34
            gw.run(leg.hangup(cause))
            wait_tables_empty(gw, a)
            sigs = [s for s in gw.wire.signals[n_sig:]
                    if s[1] not in ("NEW", "CALLTOKEN", "AUTHREQ", "AUTHREP", "PING")]
            print(f"{exten}: status {status}, we hung up with {cause}; signalling {sigs}; "
                  f"office-a h: {a_hangup_log(a)[-1:]}")
            assert status == want
            assert ("in", f"CONTROL {want.upper()}", None, None) in sigs
            assert ("out", "HANGUP", cause, None) in sigs


# === 4. auth, ACL, calltoken, trunk variants, codecs =============================================

def test_4a_wrong_secret_either_way(office: OfficeA, tmp_path: Path) -> None:
    with Gw(tmp_path) as gw:
        a = office.get(secret="not-the-shared-secret")
        ready(gw, a)
        # we call them: Asterisk rejects our AUTHREP
        leg, _p, status = gw.run(dial(gw, "200"))
        end = gw.ended()[leg.callno]
        print(f"our call with their wrong secret: {status}, CallEnded {end}")
        assert (end.cause, end.cause_text, end.reason) == (50, "No authority found", "reject")
        # they call us: we reject their AUTHREP
        n_sig = len(gw.wire.signals)
        out = a.originate("Local/300@internal", "Milliwatt")
        gw.wait(lambda: any(s[:2] == ("out", "REJECT") for s in gw.wire.signals[n_sig:]), 10,
                "our REJECT")
        time.sleep(0.5)
        rej = [s for s in gw.wire.signals[n_sig:] if s[1] == "REJECT"]
        print(f"office-a's call with the wrong secret: {out.strip()!r}; REJECTs {rej}; "
              f"incoming calls {len(gw.incoming())}")
        assert rej == [("out", "REJECT", 50, "No authority found")]
        assert not gw.incoming()
        assert_no_call(gw, a)


def test_4b_acl_either_way(office: OfficeA, tmp_path: Path) -> None:
    def our_permit_elsewhere(cfg: Any) -> None:
        import ipaddress
        cfg.entries["office-a"].acl = [
            AclRule(False, ipaddress.ip_network("0.0.0.0/0")),
            AclRule(True, ipaddress.ip_network("127.0.0.99/32"))]

    with Gw(tmp_path) as gw:
        a = office.get(permit=("127.0.0.99/255.255.255.255",))
        ready(gw, a)
        leg, _p, status = gw.run(dial(gw, "200"))
        end = gw.ended()[leg.callno]
        print(f"our call from outside office-a's permit: {status}, CallEnded {end}")
        assert end.reason == "reject"
        assert_no_call(gw, a)
    with Gw(tmp_path, our_permit_elsewhere) as gw:
        a = office.get()
        ready(gw, a)
        n_sig = len(gw.wire.signals)
        a.originate("Local/300@internal", "Milliwatt")
        gw.wait(lambda: any(s[:2] == ("out", "REJECT") for s in gw.wire.signals[n_sig:]), 10,
                "our REJECT")
        time.sleep(0.5)
        rej = [s for s in gw.wire.signals[n_sig:] if s[1] == "REJECT"]
        print(f"office-a's call from outside our permit: REJECTs {rej}")
        assert rej and rej[0][:2] == ("out", "REJECT")
        assert not gw.incoming()
        assert_no_call(gw, a)


@pytest.mark.parametrize("token", ["yes", "no"])
def test_4c_requirecalltoken(office: OfficeA, tmp_path: Path, token: str) -> None:
    def ours(cfg: Any) -> None:
        cfg.entries["office-a"].requirecalltoken = token

    with Gw(tmp_path, ours) as gw:
        a = office.get(requirecalltoken=token)
        ready(gw, a)
        check_a_calls_our_echo(gw, a, seconds=1.0)
        check_we_call_a_echo(gw, a, seconds=1.0)
        wait_tables_empty(gw, a)
        tokens = [s for s in gw.wire.signals if s[1] == "CALLTOKEN"]
        print(f"requirecalltoken={token}: CALLTOKEN frames {Counter(s[0] for s in tokens)}")
        # Both sides put an empty CALLTOKEN IE in their NEWs, and an empty IE is answered with
        # a CALLTOKEN whatever requirecalltoken says (Asterisk does it; so do we): "no" only
        # lets a NEW *without* the IE through.  One exchange per call each way in both variants.
        assert Counter(s[0] for s in tokens) == {"in": 1, "out": 1}


@pytest.mark.parametrize(("a_stamps", "our_stamps"), [(False, False), (True, True),
                                                      (True, False)])
def test_4d_trunktimestamps(office: OfficeA, tmp_path: Path, a_stamps: bool,
                            our_stamps: bool) -> None:
    """Each side's cmddata bit follows the *sender's* [general] trunktimestamps."""
    def ours(cfg: Any) -> None:
        cfg.general.trunktimestamps = our_stamps

    with Gw(tmp_path, ours) as gw:
        a = office.get(trunktimestamps=a_stamps)
        ready(gw, a)
        check_a_calls_our_echo(gw, a, seconds=1.0)
        check_we_call_a_echo(gw, a, seconds=1.0)
        wait_tables_empty(gw, a)
        print(f"trunktimestamps office-a={a_stamps} ours={our_stamps}: "
              f"cmddata {dict(gw.wire.cmddata)}, datagrams "
              f"{dict(gw.wire.kinds)}, entries {dict(gw.wire.trunk_entries)}")
        assert set(gw.wire.cmddata) == {("in", int(a_stamps)), ("out", int(our_stamps))}
        assert gw.wire.kinds[("in", "mini")] == 0 and gw.wire.kinds[("out", "mini")] == 0


def test_4e_alaw(office: OfficeA, tmp_path: Path) -> None:
    def ours(cfg: Any) -> None:
        cfg.general.codecs = ["alaw"]
        cfg.entries["office-a"].codecs = ["alaw"]

    with Gw(tmp_path, ours) as gw:
        a = office.get(codecs=("alaw",))
        ready(gw, a)
        res = check_a_calls_our_echo(gw, a, seconds=1.0)
        assert res["codec"] == 8 and res["a_format"] == ["alaw"]
        res = check_we_call_a_echo(gw, a, seconds=1.0)
        assert res["a_format"] == ["alaw"]
        wait_tables_empty(gw, a)


# === 5. 100 calls each way at once ==============================================================

N_LOAD = 100
RATE = 20.0        # call setups per second, each way (respects maxauthreq 3 / call tokens)


def test_5_hundred_calls_each_way(office: OfficeA, tmp_path: Path) -> None:
    with Gw(tmp_path) as gw:
        a = office.get()
        ready(gw, a)
        legs: list[tuple[Any, Prober]] = []

        async def place_all() -> None:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            waits = []
            for i in range(N_LOAD):
                await asyncio.sleep(max(0.0, t0 + i / RATE - loop.time()))
                leg = gw.app.place_call("office-a", "200", None)
                prober = Prober(100 + i)
                leg.set_media(prober)
                legs.append((leg, prober))
                waits.append(leg.wait_answer())
            statuses = await asyncio.wait_for(asyncio.gather(*waits), 30)
            assert Counter(statuses) == {"answered": N_LOAD}, Counter(statuses)

        t0 = time.monotonic()
        ours = asyncio.run_coroutine_threadsafe(place_all(), gw.loop)
        failed = 0
        for i in range(N_LOAD):                       # office-a -> our echo, same rate
            time.sleep(max(0.0, t0 + i / RATE - time.monotonic()))
            try:
                a.originate("Local/300@internal", "Milliwatt")
            except Exception:
                failed += 1
        ours.result(40)
        gw.wait(lambda: len(gw.incoming()) >= N_LOAD, 30, f"{N_LOAD} incoming calls")
        setup_s = time.monotonic() - t0
        a_iax = len(a.channels())
        ch0 = {c.local_callno: (c.frames_rx, c.frames_tx) for c in gw.channels()}
        sent0 = {leg.callno: (p.sent, len(p.back)) for leg, p in legs}
        window = 3.0
        time.sleep(window)
        ch1 = {c.local_callno: (c.frames_rx, c.frames_tx) for c in gw.channels()}
        inc = [e.callno for e in gw.incoming()]
        exp = window * 50
        rx_in = [ch1[c][0] - ch0[c][0] for c in inc]
        tx_in = [ch1[c][1] - ch0[c][1] for c in inc]
        back_out = [len(p.back) - sent0[leg.callno][1] for leg, p in legs]
        sent_out = [p.sent - sent0[leg.callno][0] for leg, p in legs]
        k = gw.wire.kinds
        print(f"setup of {N_LOAD}+{N_LOAD} calls took {setup_s:.1f} s (originate failures "
              f"{failed}); office-a iax2 channels {a_iax}, ours {len(ch1)}")
        print(f"incoming (our echo) over {window} s: rx min {min(rx_in)} / median "
              f"{int(np.median(rx_in))}, tx min {min(tx_in)} (expected {exp:.0f})")
        print(f"outgoing (their echo): sent min {min(sent_out)}, back min {min(back_out)} / "
              f"median {int(np.median(back_out))}; foreign {sum(p.foreign for _, p in legs)}")
        print("datagrams:", dict(k), "late ticks:", gw.app.late_ticks)
        assert failed == 0 and a_iax == 2 * N_LOAD and len(ch1) == 2 * N_LOAD
        assert min(rx_in) >= 0.9 * exp and min(tx_in) >= 0.9 * exp
        assert min(sent_out) >= 0.9 * exp and min(back_out) >= 0.9 * exp

        t1 = time.monotonic()
        async def hangup_ours() -> None:
            for leg, _ in legs:
                await leg.hangup(16)

        gw.run(hangup_ours())
        a.hangup_all()
        wait_tables_empty(gw, a, timeout=20)
        ends = gw.ended()
        print(f"all {2 * N_LOAD} calls gone from both tables in {time.monotonic() - t1:.1f} s; "
              f"causes {Counter(e.cause for e in ends.values())}")
        assert len(ends) == 2 * N_LOAD


@pytest.fixture(autouse=True)
def _no_leftovers(office: OfficeA) -> Iterator[None]:
    yield
    a = office.inst
    if a is not None and a.running:
        a.hangup_all()
