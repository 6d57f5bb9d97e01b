"""extensions.conf loading, Asterisk pattern matching, variables and application flows."""

from __future__ import annotations

import asyncio
import json
import sys
import wave
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from iaxgw._core import g711
from iaxgw.gateway.conf.config import ConfigError, PhoneBehaviour, PhonesConfig, default_config_dir
from iaxgw.gateway.pbx.channel import DialOutcome
from iaxgw.gateway.pbx.dialplan import (
    Dialplan,
    evaluate,
    load_extensions_conf,
    match_pattern,
    pattern_key,
    pattern_samples,
    split_args,
    substitute,
    substring,
)
from iaxgw.gateway.pbx.dialplan_apps import APPLICATIONS, Recorder, encode, frames, run, tone_pcm

sys.path.insert(0, str(Path(__file__).parent))
from fakes import FakeChannel

SEED = Path(__file__).parent / "data" / "seed"
SCALE = 0.01          # dialplan waits x0.01: Dial(...,30) times out after 0.3 s


def plan_from(tmp_path: Path, text: str, name: str = "extensions.conf") -> Dialplan:
    p = tmp_path / name
    p.write_text(text)
    return load_extensions_conf(p, APPLICATIONS)      # as serve and check load it


def arun(coro: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
    async def main() -> Any:
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(main())


def peak_hz(pcm: bytes) -> float:
    x = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * 8000 / len(x))


def rms(pcm: bytes) -> float:
    x = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(x * x))) if len(x) else 0.0


def tone_frames(freq: float, seconds: float, codec: str = "ulaw") -> list[bytes]:
    return frames(encode(tone_pcm(freq, seconds, 8000), codec), codec)


# --- loading ---------------------------------------------------------------------------------

@pytest.mark.parametrize("site", ["office-a", "office-b"])
def test_seed_dialplans_load(site: str) -> None:
    plan = load_extensions_conf(SEED / site / "extensions.conf")
    assert plan.warnings == []
    assert list(plan.contexts) == ["from-iax", "internal"]
    local, remote = ("2", "3") if site == "office-a" else ("3", "2")
    ext = plan.find("from-iax", f"{local}05")
    assert ext is not None and ext.name == f"_{local}XX"
    assert [(s.priority, s.app, s.data) for s in ext.steps.values()] == [
        (1, "Dial", "PJSIP/${EXTEN},30"), (2, "Voicemail", "${EXTEN}@default,u"),
        (3, "Hangup", "")]
    out = plan.find("internal", f"{remote}42")
    other = "office-b" if site == "office-a" else "office-a"
    assert out is not None and out.steps[1].data == f"IAX2/{other}/${{EXTEN}}"
    assert plan.find("from-iax", f"{remote}05") is None
    assert plan.find("from-iax", f"{local}0") is None


def test_embedded_dialplan_test_extensions_first() -> None:
    plan = load_extensions_conf(default_config_dir("office-b") / "extensions.conf")
    assert plan.warnings == []
    found = {x: plan.find("from-iax", x) for x in ("300", "301", "302", "303", "304")}
    assert {x: e.name if e else None for x, e in found.items()} == {
        "300": "300", "301": "301", "302": "302", "303": "303", "304": "_3XX"}


def test_priorities_labels_includes_globals(tmp_path: Path) -> None:
    plan = plan_from(tmp_path, """
[general]
static = yes

[globals]
TRUNK = office-a

[main]
include => shared
exten => 100,1,NoOp(first)
 same => n(second),NoOp(${TRUNK})
 same => n,Hangup()
exten => 100,hint,PJSIP/100
exten => s,1,Answer()

[shared]
include => main
exten => _1XX,1,NoOp(shared)
exten => 100,4,NoOp(fourth from the include)
""")
    assert plan.warnings == []
    assert plan.globals == {"TRUNK": "office-a"}
    ext = plan.contexts["main"].extensions["100"]
    assert sorted(ext.steps) == [1, 2, 3] and ext.labels == {"second": 2}
    assert ext.hint == "PJSIP/100"
    assert plan.find("main", "100", 4) is not None                 # from the include
    assert plan.find("main", "150") is not None                    # include, with a cycle back
    assert plan.find("main", "250") is None
    assert plan.find_label("main", "100", "second") == 2


BAD_DIALPLANS = [
    ("[c]\nsame => n,NoOp()\n", 2, "without a preceding 'exten"),
    ("[c]\nexten => 1,x,NoOp()\n", 2, "invalid priority"),
    ("[c]\nexten => 1,1,NoOp()\nexten => 1,1,NoOp()\n", 3, "already defined"),
    ("[c]\nexten => 1,1,NoOp(\n", 2, "missing ')'"),
    ("[c]\nexten => 1,1\n", 2, "missing application"),
    ("[c]\nexten => _1[2,1,NoOp()\n", 2, "missing ']'"),
    ("[c]\nexten => 1/200,1,NoOp()\n", 2, "caller-ID"),
    ("[c]\nexten => 1,1,Bad-App()\n", 2, "invalid application name"),
    ("[c]\nexten => noprio\n", 2, "expected 'exten => extension,priority"),
    ("exten => 1,1,NoOp()\n", 1, "outside any [section]"),
]


@pytest.mark.parametrize(("text", "line", "reason"), BAD_DIALPLANS)
def test_dialplan_errors(tmp_path: Path, text: str, line: int, reason: str) -> None:
    with pytest.raises(ConfigError) as ei:
        plan_from(tmp_path, text)
    assert str(ei.value).startswith(f"{tmp_path / 'extensions.conf'}:{line}: ")
    assert reason in str(ei.value)


def test_dialplan_warnings(tmp_path: Path) -> None:
    plan = plan_from(tmp_path, "[c]\nexten => 1,1,Frobnicate()\ninclude => nowhere\n"
                               "ignorepat => 9\n")
    assert len(plan.warnings) == 3
    assert any(":2: application 'Frobnicate'" in w for w in plan.warnings)
    assert any(":3: include => nowhere: no such context" in w for w in plan.warnings)


# --- patterns --------------------------------------------------------------------------------

@pytest.mark.parametrize(("pattern", "exten", "ok"), [
    ("_3XX", "300", True), ("_3XX", "3000", False), ("_3XX", "30", False),
    ("_3XX", "3a0", False), ("_NXX", "200", True), ("_NXX", "100", False),
    ("_ZXX", "100", True), ("_ZXX", "000", False), ("_nxx", "299", True),
    ("_[13-5]X", "41", True), ("_[13-5]X", "21", False), ("_[13-5]X", "11", True),
    ("_3.", "3", False), ("_3.", "30", True), ("_3.", "30000", True),
    ("_3!", "3", True), ("_3!", "3999", True), ("_X.", "*12", False),
    ("_1-800-XXX", "1800555", True), ("300", "300", True), ("300", "301", False),
    ("555-1212", "5551212", True),
])
def test_pattern_matching(pattern: str, exten: str, ok: bool) -> None:
    assert match_pattern(pattern, exten) is ok


@pytest.mark.parametrize(("pattern", "samples"), [
    ("300", ["300"]), ("_3XX", ["300", "399"]), ("_2[05-7]Z", ["201", "279"]),
    ("_nxx", ["200", "999"]), ("_[13-5]X", ["10", "59"]), ("_3.", ["30", "39"]),
    ("_3!", ["30", "39"]), ("_1-800-NXX", ["1800200", "1800999"]), ("_[7]1", ["71"]),
])
def test_pattern_samples_are_the_lowest_and_highest_match(pattern: str,
                                                          samples: list[str]) -> None:
    assert pattern_samples(pattern) == samples
    assert all(match_pattern(pattern, sample) for sample in samples)


def test_pattern_ordering(tmp_path: Path) -> None:
    plan = plan_from(tmp_path, """
[c]
exten => _X.,1,NoOp()
exten => _3.,1,NoOp()
exten => _3!,1,NoOp()
exten => _3XX,1,NoOp()
exten => _30X,1,NoOp()
exten => _3[0-1]X,1,NoOp()
exten => 300,1,NoOp()
""")

    def best(x: str) -> str | None:
        e = plan.find("c", x)
        return e.name if e else None

    assert best("300") == "300"            # exact beats every pattern
    assert best("301") == "_30X"           # literal 0 (1 char) beats [0-1] (2) beats X (10)
    assert best("311") == "_3[0-1]X"
    assert best("321") == "_3XX"
    assert best("3000") == "_3."           # . (one or more) before ! (zero or more)
    assert best("3") == "_3!"
    assert best("41") == "_X."
    assert sorted(["_3.", "_3XX", "_X.", "_3!", "_NXX"], key=pattern_key) == [
        "_3XX", "_3.", "_3!", "_NXX", "_X."]


# --- variables -------------------------------------------------------------------------------

VARS = {"EXTEN": "0123456789", "A": "B", "AB": "nested", "DIALSTATUS": "BUSY"}


@pytest.mark.parametrize(("text", "out"), [
    ("${EXTEN}", "0123456789"), ("${EXTEN:1}", "123456789"), ("${EXTEN:-4}", "6789"),
    ("${EXTEN:2:3}", "234"), ("${EXTEN:-4:2}", "67"), ("${EXTEN:1:-2}", "1234567"),
    ("${EXTEN:0:0}", ""), ("${EXTEN:20}", ""), ("x${NOPE}y", "xy"),
    ("${A${A}}", "nested"), ("${CALLERID(num)}-${CALLERID(name)}", "200-Alice"),
    ("${LEN(${EXTEN})}", "10"), ("$[1 + 2]", "3"), ('$["${DIALSTATUS}" = "BUSY"]', "1"),
    ("$[${A} != B]", "0"), ("$[ 7 > 10 ]", "0"), ("$[ abc < abd ]", "1"),
    ("$[(2 + 3) * 4]", "20"), ("$[1 & 0 | 5]", "5"), ("$[1 ? yes : no]", "yes"),
    ("$[!0]", "1"), ("$[7 / 2]", "3"), ("$[7 % 4]", "3"), ("no vars", "no vars"),
])
def test_substitute(text: str, out: str) -> None:
    def fn(name: str, arg: str) -> str | None:
        return {"CALLERID": {"num": "200", "name": "Alice"}.get(arg),
                "LEN": str(len(arg))}.get(name)

    assert substitute(text, VARS.get, fn) == out


def test_substring_matches_asterisk() -> None:
    assert substring("12345", -10) == "12345"
    assert substring("12345", 1, -10) == ""
    assert substring("", 0, 3) == ""


def test_bad_expression_is_empty() -> None:
    assert evaluate("1 +") == ""
    assert evaluate("(1") == ""


@pytest.mark.parametrize(("data", "args"), [
    ("PJSIP/300,30", ["PJSIP/300", "30"]), ("", [""]), ("a,,b", ["a", "", "b"]),
    ('"a,b",c', ["a,b", "c"]), ("f(x,y),z", ["f(x,y)", "z"]), (r"a\,b,c", ["a,b", "c"]),
])
def test_split_args(data: str, args: list[str]) -> None:
    assert split_args(data) == args


# --- flows -----------------------------------------------------------------------------------

async def drive(plan: Dialplan, ch: FakeChannel, context: str, exten: str, tmp_path: Path,
                **kw: Any) -> int:
    ch.start_clock()
    try:
        kw.setdefault("time_scale", SCALE)
        return await run(plan, ch, context, exten, spool_dir=tmp_path / "spool", **kw)
    finally:
        await ch.stop_clock()


def simple(tmp_path: Path, body: str) -> Dialplan:
    return plan_from(tmp_path, "[t]\n" + body)


def test_echo_echoes(tmp_path: Path) -> None:
    plan = simple(tmp_path, "exten => 300,1,Answer()\nsame => n,Echo()\n")
    feed = [bytes([i]) * 160 for i in range(40)]
    ch = FakeChannel(feed=feed, hangup_after_feed=True)
    cause = arun(drive(plan, ch, "t", "300", tmp_path))
    assert cause == 16 and ch.far_hung
    assert ch.kinds()[0] == "answer"
    assert ch.sent == feed[:-1]          # each payload back unchanged, in order


@pytest.mark.parametrize("codec", ["ulaw", "alaw"])
def test_milliwatt_is_1004_hz(tmp_path: Path, codec: str) -> None:
    plan = simple(tmp_path, "exten => 301,1,Milliwatt()\n")
    ch = FakeChannel(codec=codec)

    async def go() -> int:
        t = asyncio.ensure_future(drive(plan, ch, "t", "301", tmp_path))
        while len(ch.sent) < 60:
            await asyncio.sleep(0.01)
        ch.far_hangup()
        return await t

    assert arun(go()) == 16
    assert ("answer",) in ch.events
    pcm = (g711.ulaw_decode if codec == "ulaw" else g711.alaw_decode)(b"".join(ch.sent[:50]))
    assert all(len(p) == 160 for p in ch.sent)
    assert abs(peak_hz(pcm) - 1004) <= 2
    assert 14000 < rms(pcm) < 18000          # ~0 dBm0: peak ~22900 / sqrt(2)


@pytest.mark.parametrize(("app", "what", "cause"), [
    ("Busy()", "busy", 17), ("Congestion()", "congestion", 34), ("Busy(5)", "busy", 17)])
def test_busy_congestion(tmp_path: Path, app: str, what: str, cause: int) -> None:
    plan = simple(tmp_path, f"exten => 302,1,{app}\n")
    ch = FakeChannel(hangup_on={what: 0.05})
    assert arun(drive(plan, ch, "t", "302", tmp_path)) == cause
    assert ch.events[0] == ("indicate", what)


def test_busy_with_timeout_hangs_up_itself(tmp_path: Path) -> None:
    plan = simple(tmp_path, "exten => 302,1,Busy(5)\n")
    ch = FakeChannel()
    assert arun(drive(plan, ch, "t", "302", tmp_path)) == 17
    assert ch.hangup_cause == 17 and not ch.far_hung


def test_hangup_cause_missing_extension_and_fallthrough(tmp_path: Path) -> None:
    plan = simple(tmp_path, "exten => 1,1,Hangup(21)\nexten => 2,1,NoOp(x)\n"
                            "exten => 3,1,Set(DIALSTATUS=CONGESTION)\n")
    for exten, cause in (("1", 21), ("2", 16), ("9", 3), ("3", 34)):
        ch = FakeChannel(hangup_on={"congestion": 0.01})
        assert arun(drive(plan, ch, "t", exten, tmp_path)) == cause
        if not ch.far_hung:
            assert ch.hangup_cause == cause


def test_invalid_and_h_extensions(tmp_path: Path) -> None:
    plan = simple(tmp_path, "exten => i,1,Set(GLOBAL(BAD)=${INVALID_EXTEN})\n"
                            "same => n,Hangup()\nexten => h,1,Set(GLOBAL(H)=ran)\n")
    ch = FakeChannel()
    assert arun(drive(plan, ch, "t", "999", tmp_path)) == 16
    assert plan.globals == {"BAD": "999", "H": "ran"}


def test_set_goto_gotoif_labels(tmp_path: Path) -> None:
    plan = simple(tmp_path, """
exten => 1,1,Set(N=${EXTEN:0:1}x)
same => n,Set(CALLERID(num)=555)
same => n,GotoIf($["${N}" = "1x"]?yes:no)
same => n(no),Hangup(1)
same => n(yes),Goto(t,2,start)
exten => 2,1,NoOp(skipped)
same => n(start),Set(GLOBAL(SEEN)=${CALLERID(num)}/${CONTEXT}/${EXTEN}/${PRIORITY})
same => n,Hangup(19)
""")
    ch = FakeChannel()
    assert arun(drive(plan, ch, "t", "1", tmp_path)) == 19
    assert ch.variables["N"] == "1x" and ch.caller_num == "555"
    assert plan.globals["SEEN"] == "555/t/2/2"
    assert (ch.context, ch.exten) == ("t", "2")


def test_wait_and_hangup_during_wait(tmp_path: Path) -> None:
    plan = simple(tmp_path, "exten => 1,1,Wait(100)\nsame => n,Hangup(21)\n")
    ch = FakeChannel()

    async def go() -> int:
        t = asyncio.ensure_future(drive(plan, ch, "t", "1", tmp_path))
        await asyncio.sleep(0.1)
        ch.far_hangup()
        return await t

    assert arun(go()) == 16 and ch.far_hung and ch.hangup_cause is None


def test_playback_and_missing_file(tmp_path: Path) -> None:
    sounds = tmp_path / "sounds"
    sounds.mkdir()
    pcm = tone_pcm(700, 0.5, 8000)
    with wave.open(str(sounds / "hello.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm)
    plan = simple(tmp_path, "exten => 1,1,Playback(missing)\nsame => n,Playback(hello)\n"
                            "same => n,Hangup()\n")
    ch = FakeChannel(codec="alaw")
    assert arun(drive(plan, ch, "t", "1", tmp_path, sounds_dir=sounds)) == 16
    assert ch.variables["PLAYBACKSTATUS"] == "SUCCESS"
    out = g711.alaw_decode(b"".join(ch.sent))
    assert len(ch.sent) == 25 and abs(peak_hz(out) - 700) <= 2


def test_record(tmp_path: Path) -> None:
    plan = simple(tmp_path, "exten => 1,1,Record(calls/rec%d.wav,0,1)\nsame => n,Hangup(31)\n")
    feed = tone_frames(500, 2.0)
    ch = FakeChannel(feed=feed, feed_when=lambda h: isinstance(h, Recorder))
    assert arun(drive(plan, ch, "t", "1", tmp_path)) == 31
    path = tmp_path / "spool" / "recordings" / "calls" / "rec0.wav"
    assert ch.variables["RECORD_STATUS"] == "TIMEOUT"
    assert ch.variables["RECORDED_FILE"] == str(path.with_suffix(""))
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (8000, 1, 8000)
        assert abs(peak_hz(w.readframes(8000)) - 500) <= 2


def test_record_stops_on_silence(tmp_path: Path) -> None:
    plan = simple(tmp_path, "exten => 1,1,Record(s.wav,1,0,q)\nsame => n,Hangup()\n")
    feed = tone_frames(500, 0.4) + [b"\xff" * 160] * 100
    ch = FakeChannel(feed=feed, feed_when=lambda h: isinstance(h, Recorder))
    assert arun(drive(plan, ch, "t", "1", tmp_path)) == 16
    assert ch.variables["RECORD_STATUS"] == "SILENCE"
    with wave.open(str(tmp_path / "spool" / "recordings" / "s.wav")) as w:
        assert w.getnframes() == int(1.4 * 8000)


# --- the seed's [from-iax] flow and Dial ------------------------------------------------------

def seed_b() -> Dialplan:
    return load_extensions_conf(SEED / "office-b" / "extensions.conf")


def test_seed_noanswer_goes_to_voicemail(tmp_path: Path) -> None:
    phones = PhonesConfig.from_mapping({"310": PhoneBehaviour(mode="noanswer")})
    feed = tone_frames(440, 1.0)
    ch = FakeChannel("310", feed=feed, hangup_after_feed=True, caller_num="201",
                     caller_name="Bob", feed_when=lambda h: isinstance(h, Recorder))
    cause = arun(drive(seed_b(), ch, "from-iax", "310", tmp_path, phones=phones))
    assert cause == 16 and ch.far_hung
    assert ch.variables["DIALSTATUS"] == "NOANSWER"
    assert ch.variables["VMSTATUS"] == "SUCCESS"
    assert ch.kinds()[:2] == [("indicate", "ringing"), "answer"]
    beep = g711.ulaw_decode(b"".join(ch.sent))
    assert abs(peak_hz(beep) - 1000) <= 5
    box = tmp_path / "spool" / "voicemail" / "default" / "310"
    with wave.open(str(box / "msg0000.wav")) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (8000, 2, 1)
        pcm = w.readframes(w.getnframes())
    expect = g711.ulaw_decode(b"".join(feed))
    assert pcm == expect                               # the caller's audio, sample for sample
    assert abs(peak_hz(pcm) - 440) <= 2
    meta = json.loads((box / "msg0000.json").read_text())
    assert (meta["callerid_num"], meta["callerid_name"], meta["mailbox"]) == ("201", "Bob", "310")
    assert meta["duration"] == pytest.approx(len(expect) / 16000)
    assert "callerid=\"Bob\" <201>" in (box / "msg0000.txt").read_text()


def test_seed_second_message_numbered(tmp_path: Path) -> None:
    phones = PhonesConfig.from_mapping({"default": PhoneBehaviour(mode="noanswer")})
    for _ in range(2):
        ch = FakeChannel("399", feed=tone_frames(440, 0.2), hangup_after_feed=True,
                         feed_when=lambda h: isinstance(h, Recorder))
        arun(drive(seed_b(), ch, "from-iax", "399", tmp_path, phones=phones))
    box = tmp_path / "spool" / "voicemail" / "default" / "399"
    assert sorted(p.name for p in box.glob("*.wav")) == ["msg0000.wav", "msg0001.wav"]


def test_seed_phone_answers_and_echoes(tmp_path: Path) -> None:
    phones = PhonesConfig.from_mapping({"300": PhoneBehaviour(answer_after=5, hangup_after=20)})
    feed = [bytes([i]) * 160 for i in range(1, 30)]
    ch = FakeChannel("300", feed=feed)
    cause = arun(drive(seed_b(), ch, "from-iax", "300", tmp_path, phones=phones))
    assert cause == 16 and not ch.far_hung                 # the phone hung up
    assert ch.variables["DIALSTATUS"] == "ANSWER"
    assert ch.kinds() == [("indicate", "ringing"), "answer", ("hangup", 16)]
    assert ch.sent[:5] == feed[:5]                          # echo media
    assert not (tmp_path / "spool" / "voicemail").exists()


@pytest.mark.parametrize(("mode", "status", "cause"), [
    ("busy", "BUSY", 16), ("unavailable", "CHANUNAVAIL", 16)])
def test_seed_phone_busy_then_voicemail(tmp_path: Path, mode: str, status: str,
                                        cause: int) -> None:
    phones = PhonesConfig.from_mapping({"311": PhoneBehaviour(mode=mode)})  # type: ignore[arg-type]
    ch = FakeChannel("311", feed=tone_frames(440, 0.3), hangup_after_feed=True,
                     feed_when=lambda h: isinstance(h, Recorder))
    assert arun(drive(seed_b(), ch, "from-iax", "311", tmp_path, phones=phones)) == cause
    assert ch.variables["DIALSTATUS"] == status and ch.variables["VMSTATUS"] == "SUCCESS"
    assert ("indicate", "ringing") not in ch.events


def test_dial_busy_falls_through_to_busy(tmp_path: Path) -> None:
    plan = simple(tmp_path, "exten => 1,1,Dial(PJSIP/1,10)\n")
    phones = PhonesConfig.from_mapping({"1": PhoneBehaviour(mode="busy")})
    ch = FakeChannel(hangup_on={"busy": 0.01})
    assert arun(drive(plan, ch, "t", "1", tmp_path, phones=phones)) == 17
    assert ch.events[-1] == ("far_hangup",)


def test_dial_phone_tone_and_caller_hangup(tmp_path: Path) -> None:
    plan = simple(tmp_path, "exten => 1,1,Dial(PJSIP/1)\nsame => n,Hangup(21)\n")
    phones = PhonesConfig.from_mapping({"1": PhoneBehaviour(answer_after=0, media="tone")})
    ch = FakeChannel()

    async def go() -> int:
        t = asyncio.ensure_future(drive(plan, ch, "t", "1", tmp_path, phones=phones))
        while len(ch.sent) < 50:
            await asyncio.sleep(0.01)
        ch.far_hangup()
        return await t

    assert arun(go()) == 16
    assert abs(peak_hz(g711.ulaw_decode(b"".join(ch.sent[:50]))) - 1004) <= 2


def test_dial_caller_hangs_up_while_ringing(tmp_path: Path) -> None:
    plan = simple(tmp_path, "exten => 1,1,Dial(PJSIP/1,1000)\nsame => n,Hangup(21)\n")
    ch = FakeChannel(hangup_on={"ringing": 0.02})
    phones = PhonesConfig.from_mapping({"1": PhoneBehaviour(mode="noanswer")})
    assert arun(drive(plan, ch, "t", "1", tmp_path, phones=phones)) == 16
    assert ch.variables["DIALSTATUS"] == "CANCEL"


def test_dial_iax2_bridges_with_transcoding(tmp_path: Path) -> None:
    plan = load_extensions_conf(SEED / "office-a" / "extensions.conf")
    caller_feed = tone_frames(600, 1.0, "ulaw")
    leg_feed = tone_frames(900, 1.0, "alaw")
    leg = FakeChannel("305", codec="alaw", feed=leg_feed, hangup_after_feed=True)

    async def dial(peer: str, exten: str, timeout: float | None) -> DialOutcome:
        await asyncio.sleep(0.02)
        leg.start_clock()
        return DialOutcome("ANSWER", 16, leg)

    caller = FakeChannel("305", "internal", codec="ulaw", feed=caller_feed, dial=dial,
                         feed_when=lambda h: type(h).__name__ == "_BridgeSide")

    async def go() -> int:
        try:
            return await drive(plan, caller, "internal", "305", tmp_path)
        finally:
            await leg.stop_clock()

    assert arun(go()) == 16
    assert caller.dials == [("office-b", "305", None)]
    assert caller.variables["DIALSTATUS"] == "ANSWER"
    assert caller.hangup_cause == 16 and leg.far_hung      # leg hung up -> caller hung up
    assert ("answer",) in caller.events
    heard_by_caller = g711.ulaw_decode(b"".join(caller.sent))
    heard_by_leg = g711.alaw_decode(b"".join(leg.sent))
    assert len(caller.sent) > 20 and len(leg.sent) > 20
    assert abs(peak_hz(heard_by_caller) - 900) <= 3
    assert abs(peak_hz(heard_by_leg) - 600) <= 3
    # payloads are transcoded, not passed through: the leg got A-law of the caller's u-law
    assert leg.sent[0] == g711.ulaw_to_alaw(caller_feed[0])


@pytest.mark.parametrize(("status", "cause"), [("BUSY", 17), ("CONGESTION", 34),
                                               ("CHANUNAVAIL", 34)])
def test_dial_iax2_failure_statuses(tmp_path: Path, status: str, cause: int) -> None:
    plan = load_extensions_conf(SEED / "office-b" / "extensions.conf")
    ext = plan.contexts["internal"].extensions["_2XX"]
    del ext.steps[2]                     # let the status fall through to autofallthrough

    async def dial(peer: str, exten: str, timeout: float | None) -> DialOutcome:
        return DialOutcome(status, cause)  # type: ignore[arg-type]

    ch = FakeChannel("205", "internal", dial=dial,
                     hangup_on={"busy": 0.01, "congestion": 0.01})
    assert arun(drive(plan, ch, "internal", "205", tmp_path)) == cause
    assert ch.variables["DIALSTATUS"] == status


def test_dial_iax2_cancelled_when_caller_hangs_up(tmp_path: Path) -> None:
    plan = simple(tmp_path, "exten => 1,1,Dial(IAX2/office-a/1,30)\nsame => n,Hangup(21)\n")
    cancelled = []

    async def dial(peer: str, exten: str, timeout: float | None) -> DialOutcome:
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return DialOutcome("NOANSWER")

    ch = FakeChannel(dial=dial)

    async def go() -> int:
        t = asyncio.ensure_future(drive(plan, ch, "t", "1", tmp_path))
        await asyncio.sleep(0.05)
        ch.far_hangup()
        return await t

    assert arun(go()) == 16
    assert cancelled == [True] and ch.variables["DIALSTATUS"] == "CANCEL"
    assert ch.dials == [("office-a", "1", 30 * SCALE)]


def test_a_step_naming_an_application_iaxgw_lacks_is_a_warning(tmp_path: Path) -> None:
    """Given the interpreter's applications (as serve and check load a dialplan), a step that
    names another one is a warning with its file:line; without the list nothing is checked."""
    p = tmp_path / "extensions.conf"
    p.write_text("[from-iax]\nexten => 300,1,Answer()\n same => n,MeetMe(1234)\n"
                 " same => n,Hangup()\n")
    plan = load_extensions_conf(p, APPLICATIONS)
    assert plan.warnings == [f"{p}:3: application 'MeetMe' is not available in iaxgw"]
    assert load_extensions_conf(p).warnings == []
