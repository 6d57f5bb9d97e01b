"""Audio signatures: G.711 tables, the plan, detection after transcoding, crossed / one-way /
silent audio, Milliwatt, and echo round-trip measurement."""

from __future__ import annotations

import hashlib
import math
import random
import warnings

import numpy as np
import pytest

from iaxgw.sim.load import signature as sig
from iaxgw.sim.load.metrics import CallStats

PLAN = sig.default_plan()
DET = sig.Detector(PLAN)


def _audioop():  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:
            return None
    return audioop


def test_g711_tables_bit_exact() -> None:
    ao = _audioop()
    if ao is None:
        pytest.skip("audioop not available (Python >= 3.13)")
    lin = np.arange(-32768, 32768, dtype=np.int16)
    assert sig.encode(lin, "ulaw") == ao.lin2ulaw(lin.tobytes(), 2)
    assert sig.encode(lin, "alaw") == ao.lin2alaw(lin.tobytes(), 2)
    codes = bytes(range(256))
    assert sig.decode(codes, "ulaw").tobytes() == ao.ulaw2lin(codes, 2)
    assert sig.decode(codes, "alaw").tobytes() == ao.alaw2lin(codes, 2)


def test_g711_is_the_segment_rule_for_every_input() -> None:
    """signature's G.711 is ``_core.g711``: for every sample and every code it gives what the
    G.711 segment rules give one value at a time (without audioop, gone in Python 3.13)."""
    from iaxgw._core import _g711_py as rule

    lin = np.arange(-32768, 32768, dtype=np.int16)
    assert sig.encode(lin, "ulaw") == bytes(rule.ulaw_encode_sample(int(x)) for x in lin)
    assert sig.encode(lin, "alaw") == bytes(rule.alaw_encode_sample(int(x)) for x in lin)
    codes = bytes(range(256))
    for codec, one in (("ulaw", rule.ulaw_decode_sample), ("alaw", rule.alaw_decode_sample)):
        pcm = sig.decode(codes, codec)
        assert pcm.dtype == np.int16 and pcm.flags.writeable
        assert pcm.tolist() == [one(c) for c in codes]
    assert sig.transcode(codes, "ulaw", "alaw") == sig.encode(sig.decode(codes, "ulaw"), "alaw")
    assert sig.transcode(codes, "alaw", "ulaw") == sig.encode(sig.decode(codes, "alaw"), "ulaw")


def test_payload_cycles_are_the_bytes_always_sent() -> None:
    """The cycles of every seventh signature and the silence frame, in both codecs, hash to what
    signature.py's own G.711 tables produced before it used ``_core.g711``."""
    digest = hashlib.sha256()
    for codec in ("ulaw", "alaw"):
        for index in range(0, PLAN.capacity, 7):
            digest.update(b"".join(PLAN.payloads(index, codec)))
        digest.update(PLAN.silence(codec))
    assert digest.hexdigest() == (
        "049e2966559f3d5e0b584a147152ac06ed2d812c22101348a20c3699385ee463")


def test_plan_capacity_and_grid() -> None:
    assert PLAN.capacity >= 2000
    assert len(set(PLAN.pairs)) == PLAN.capacity
    for f in PLAN.grid:
        assert all(abs(f - h) >= 75 for h in (1004, 2008, 3012))
        assert f % 25 == 0
    assert all(b - a >= 100 for a, b in PLAN.pairs)
    s = PLAN.signature(PLAN.capacity + 5)
    assert s == PLAN.signature(5)
    # neighbouring call indices get unrelated pairs
    assert PLAN.signature(1) != PLAN.signature(2)


def test_payload_cycle_shape() -> None:
    p = PLAN.payloads(42, "alaw")
    assert len(p) == sig.CYCLE_FRAMES
    assert all(isinstance(x, bytes) and len(x) == sig.FRAME_SAMPLES for x in p)
    assert PLAN.payloads(42, "alaw") == p
    assert PLAN.payloads(43, "alaw") != p


def _received(index: int, src: sig.Codec, dst: sig.Codec) -> np.ndarray:
    data = b"".join(PLAN.payloads(index, src))
    if src != dst:
        data = sig.transcode(data, src, dst)
    return sig.decode(data, dst).astype(np.float64)


@pytest.mark.parametrize(("src", "dst"), [("ulaw", "ulaw"), ("alaw", "alaw"),
                                          ("ulaw", "alaw"), ("alaw", "ulaw")])
def test_random_signatures_survive_g711(src: sig.Codec, dst: sig.Codec) -> None:
    rng = random.Random(7)
    for index in rng.sample(range(100_000), 60):
        pcm = np.roll(_received(index, src, dst), rng.randrange(8000))   # any alignment
        own = PLAN.signature(index).sid
        res = DET.tones(pcm, own)
        assert res.windows == 25
        assert res.own >= 20, (index, res)           # all but the marker windows
        assert res.crossed == 0, (index, res)
        # and blind: the only signature seen is this call's
        blind = DET.tones(pcm, None)
        assert set(blind.others) == {own}


def test_silence_detection() -> None:
    silent = np.zeros(1600)
    assert DET.frame_silence(silent) == 10
    assert DET.tones(silent, 3).windows == 0
    noise = np.random.default_rng(1).normal(0, 2000, 1600)
    assert DET.frame_silence(noise) == 0


def test_milliwatt_detected() -> None:
    t = np.arange(8000) / 8000.0
    mw = np.round(22000 * np.sin(2 * math.pi * 1004 * t)).astype(np.int16)
    pcm = sig.decode(sig.encode(mw, "ulaw"), "ulaw").astype(np.float64)
    res = DET.tones(pcm, None)
    assert res.milliwatt == res.windows == 25
    assert res.crossed == 0
    assert DET.tones(_received(9, "ulaw", "ulaw"), None).milliwatt == 0


# -- whole calls ------------------------------------------------------------------------------


def _echo_call(index: int = 3, *, seconds: int = 8, delay: float = 0.150, noise: float = 0.005,
               loss: float = 0.02, back: sig.Codec = "ulaw", feed: int | None = None,
               silence_from: float | None = None, mode: str = "echo",
               payload_of: object = None) -> CallStats:
    """One call through a simulated far end that echoes after ``delay`` (+ U(0, noise)).

    ``feed`` makes the far end return another call's audio instead; ``silence_from`` (0..1)
    returns digital silence from that share of the call on; ``payload_of(k)`` overrides."""
    rng = random.Random(index)
    c = CallStats(index, mode=mode, rx_codec=back)  # type: ignore[arg-type]
    c.on_setup_event("NEW", 0.0)
    c.on_setup_event("ANSWER", 0.2)
    other = PLAN.payloads(feed) if feed is not None else None
    silence = PLAN.silence("ulaw")
    arrivals = []
    n = seconds * 50
    for k in range(n):
        t = 1.0 + 0.02 * k
        p = c.on_tx(k * 20, t)
        if other is not None:
            p = other[k % 50]
        if silence_from is not None and k >= silence_from * n:
            p = silence
        if callable(payload_of):
            p = payload_of(k)
        if rng.random() < loss:
            continue
        if back != "ulaw":
            p = sig.transcode(p, "ulaw", back)
        # the far end stamps its own media clock (starts at 7,777 ms)
        arrivals.append((t + delay + rng.uniform(0.0, noise), 7777 + 20 * k, p))
    arrivals.sort()
    next_tick = 2.0
    for at, ts, p in arrivals:
        c.on_rx(ts, at, p)
        if at >= next_tick:
            c.analyze()
            next_tick += 1.0
    c.finish(arrivals[-1][0] + 0.05 if arrivals else 1.0 + 0.02 * n)
    return c


@pytest.mark.parametrize("back", ["ulaw", "alaw"])
@pytest.mark.parametrize("delay", [0.040, 0.150, 0.600])
def test_echo_verified_and_rtt(delay: float, back: sig.Codec) -> None:
    c = _echo_call(17, delay=delay, back=back)
    rec = c.record()
    assert rec.audio == "verified"
    assert rec.rtt_samples >= 5
    # the far end adds U(0, 5 ms); the estimate is the median
    assert rec.rtt_ms == pytest.approx(delay * 1000 + 2.5, abs=20.0)
    assert rec.rtt_max_ms is not None and rec.rtt_max_ms < delay * 1000 + 20.0


def test_crossed_audio() -> None:
    c = _echo_call(3, feed=7)
    rec = c.record()
    assert rec.audio_crossed and rec.audio == "crossed"
    assert rec.crossed_from == PLAN.signature(7).sid
    assert rec.own_windows == 0
    assert not rec.audio_verified
    assert rec.rtt_ms is None            # markers of another call are not our round trip


def test_one_way_no_media() -> None:
    c = CallStats(5, mode="echo")
    c.on_setup_event("NEW", 0.0)
    c.on_setup_event("ANSWER", 0.1)
    for k in range(200):
        c.on_tx(k * 20, 0.2 + 0.02 * k)
    rec = c.finish(4.5)
    assert rec.audio_one_way and rec.audio == "one_way"
    assert rec.rx_frames == 0 and rec.loss_pct is None and rec.mos is None


def test_one_way_only_silence() -> None:
    rec = _echo_call(5, silence_from=0.0).record()
    assert rec.audio_one_way and rec.audio == "one_way"
    assert rec.silent_frames == rec.rx_frames


def test_silence_mid_call() -> None:
    rec = _echo_call(6, silence_from=0.6, loss=0.0).record()
    assert rec.audio_silent and not rec.audio_one_way
    assert rec.audio == "silent"
    assert rec.silent_frames == pytest.approx(0.4 * rec.rx_frames, abs=2)


def test_clean_call_has_no_flags() -> None:
    rec = _echo_call(8, loss=0.0).record()
    assert rec.audio_verified
    assert not (rec.audio_crossed or rec.audio_one_way or rec.audio_silent)
    assert rec.silent_frames == 0


def test_tone_mode_milliwatt() -> None:
    t = np.arange(8000) / 8000.0
    mw = sig.encode(np.round(20000 * np.sin(2 * math.pi * 1004 * t)).astype(np.int16), "ulaw")
    frames = [mw[i:i + 160] for i in range(0, 8000, 160)]
    rec = _echo_call(9, mode="tone", payload_of=lambda k: frames[k % 50]).record()
    assert rec.audio == "verified" and rec.milliwatt_windows > 0
    # an echo is not the Milliwatt tone
    rec = _echo_call(9, mode="tone").record()
    assert rec.audio == "unverified" and rec.milliwatt_windows == 0


def test_marker_search_any_length_few_cached_spectra() -> None:
    """Markers are found the same in audio of any length (longer than the largest FFT size:
    correlated in blocks), and the detector keeps only the marker spectra of its fixed FFT
    sizes, however many batch lengths it saw (one per length grew a long run's memory)."""
    det = sig.Detector(PLAN)
    rng = np.random.default_rng(5)
    m = PLAN.marker
    for n in [len(m), 3000, 8001, 9600, 16384, 16385, 20000, 33000]:
        pcm = rng.normal(0.0, 200.0, n)
        at = [n // 7, n - len(m) - n // 9] if n > 4 * len(m) else [0]
        for a in at:
            pcm[a:a + len(m)] += m
        ref = np.correlate(pcm, m, mode="valid")
        corr = det._correlate(pcm, n - len(m) + 1)
        assert np.allclose(corr, ref, rtol=0, atol=1e-6 * np.abs(ref).max())
        found = det.markers(pcm)
        assert all(any(abs(f - a) <= 1 for f in found) for a in at), (n, at, found)
    for n in range(len(m), 33000, 97):
        det.markers(rng.normal(0.0, 200.0, n), max_markers=1)
    assert set(det._marker_spec) <= set(sig.MARKER_FFT_SIZES)


def test_pending_audio_is_bounded_without_analyze() -> None:
    c = CallStats(1, mode="echo")
    p = PLAN.payloads(1)
    for k in range(1000):
        c.on_rx(k * 20, k * 0.02, p[k % 50])
    assert len(c._pending) < 250
    assert c.audio.frames >= 800


def test_pending_audio_dropped_not_analysed_when_inline_off() -> None:
    c = CallStats(1, mode="echo", inline_analysis=False)
    p = PLAN.payloads(1)
    for k in range(1000):
        c.on_rx(k * 20, k * 0.02, p[k % 50])
    assert c.audio.frames == 0                       # on_rx never did batch work
    assert len(c._pending) < 300                     # the pending limit (6 s)
    assert c.audio_dropped + len(c._pending) == 1000
    c.analyze()
    assert c.audio.frames > 0


# -- crossed audio: only confident pairs of calls in the run ------------------------------------


def _spliced_loss_call(index: int, loss: float, *, seed: int = 0,
                       detector: sig.Detector | None = None) -> CallStats:
    """Our own echo with frames lost and the gaps closed up, as the load tester sees a trunk
    without timestamps (each entry numbered previous + 20 ms): the audio has splices."""
    rng = random.Random(seed * 1000 + index)
    c = CallStats(index, mode="echo", detector=detector)
    c.on_setup_event("NEW", 0.0)
    c.on_setup_event("ANSWER", 0.1)
    ts = -20
    for k in range(500):
        t = 1.0 + 0.02 * k
        p = c.on_tx(k * 20, t)
        if rng.random() < loss:
            continue
        ts += 20
        c.on_rx(ts, t + 0.05, p)
        if k % 50 == 49:
            c.analyze()
    c.finish(11.1)
    return c


@pytest.mark.parametrize(("index", "loss"), [(1, 0.02), (5, 0.02), (11, 0.02), (9, 0.05),
                                             (23, 0.10)])
def test_spliced_loss_is_not_crossed(index: int, loss: float) -> None:
    """Splices of our own audio used to look like pairs of calls that were not even in the run
    (call 1 at 2 % loss reported "crossed" windows of signature 1654)."""
    rec = _spliced_loss_call(index, loss).record()
    assert rec.crossed_windows == 0 and rec.crossed_from is None
    assert not rec.audio_crossed
    assert rec.audio == "verified"


def test_spliced_loss_many_calls_no_foreign_ids() -> None:
    det = sig.Detector(PLAN)
    for i in range(40):
        det.mark_in_run(i)
    for i in range(40):
        rec = _spliced_loss_call(i, 0.05, seed=3, detector=det).record()
        assert rec.crossed_windows == 0, (i, rec.crossed_from)
        assert rec.audio == "verified"


def test_crossed_only_from_calls_in_the_run() -> None:
    from iaxgw.sim.report.report import LoadStats

    stats = LoadStats(mode="echo")
    calls = [stats.new_call(0.0, i) for i in range(5)]
    in_run, foreign = PLAN.payloads(4), PLAN.payloads(4000)
    for ci, src in ((0, in_run), (1, foreign)):
        c = calls[ci]
        c.on_setup_event("ANSWER", 0.1)
        for k in range(200):
            c.on_tx(k * 20, 1 + 0.02 * k)
            c.on_rx(k * 20, 1.05 + 0.02 * k, src[k % 50])
    rec0 = stats.end_call(calls[0], 6.0)
    rec1 = stats.end_call(calls[1], 6.0)
    assert rec0.audio == "crossed" and rec0.crossed_from == PLAN.signature(4).sid
    # call 4000 is not in this run: its pair is not "crossed" (and not ours either)
    assert not rec1.audio_crossed and rec1.crossed_from is None
    assert rec1.audio == "unverified"


def test_bit_exact_echo_skips_the_spectral_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    """An echo that comes back bit for bit (same codec, no transcoding) is verified from the
    payloads alone, its RTT from the cycle's first frame; the FFT detector never runs."""
    calls: list[str] = []

    def spy(name: str, real: object) -> object:
        def wrapped(*a: object, **kw: object) -> object:
            calls.append(name)
            return real(*a, **kw)  # type: ignore[operator]
        return wrapped

    monkeypatch.setattr(sig.Detector, "tones", spy("tones", sig.Detector.tones))
    monkeypatch.setattr(sig.Detector, "markers", spy("markers", sig.Detector.markers))
    c = _echo_call(21, delay=0.150, back="ulaw", loss=0.02)
    rec = c.record()
    assert calls == []
    assert rec.audio == "verified" and rec.own_windows > 100
    assert rec.rtt_samples >= 5
    assert rec.rtt_ms == pytest.approx(152.5, abs=5.0)
    # transcoded on the way back: the same call goes through the spectral detector
    c = _echo_call(21, delay=0.150, back="alaw", loss=0.02)
    assert "tones" in calls and "markers" in calls
    assert c.record().audio == "verified"


def test_a_few_foreign_frames_send_the_batch_to_the_spectral_detector() -> None:
    """Our echo with another call's audio spliced in (8 % of frames in runs of 4): the exact
    check gives way and the spectral detector counts it as crossed."""
    other = PLAN.payloads(11)

    def payload_of(k: int) -> bytes:
        own = PLAN.payloads(4)[k % 50]
        return other[k % 50] if k % 50 in (10, 11, 12, 13) else own

    c = _echo_call(4, loss=0.0, payload_of=payload_of)
    rec = c.record()
    assert rec.audio_crossed and rec.crossed_from == PLAN.signature(11).sid


@pytest.mark.parametrize("splice", [False, True], ids=["clean", "foreign"])
def test_probe_tracked_exact_check_equals_the_batch_walk(monkeypatch: pytest.MonkeyPatch,
                                                         splice: bool) -> None:
    """The probe finds strays and the cycle's first frames as they arrive; the result is the
    one of walking each batch (tracking off), with and without foreign frames spliced in."""
    other = PLAN.payloads(11)

    def payload_of(k: int) -> bytes:
        own = PLAN.payloads(5)[k % 50]
        return other[k % 50] if splice and k % 50 == 30 else own

    tracked = _echo_call(5, loss=0.03, payload_of=payload_of).record()
    real_init = CallStats.__init__

    def untracked_init(self: CallStats, *a: object, **kw: object) -> None:
        real_init(self, *a, **kw)  # type: ignore[arg-type]
        self.rx.own = None
        self.rx.first = None

    monkeypatch.setattr(CallStats, "__init__", untracked_init)
    walked = _echo_call(5, loss=0.03, payload_of=payload_of).record()
    assert tracked == walked
    assert tracked.audio == "verified" and tracked.rtt_samples >= 5
