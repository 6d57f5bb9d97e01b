"""Per-call audio signatures: what each load-test call sends, and batch detection of what came back.

Every call sends a one-second cycle of 50 G.711 frames (20 ms, 160 samples each):

* a **tone pair** (f1, f2) taken from a grid of 25 Hz DFT bins between 400 and 3300 Hz.  The grid
  leaves out everything within 75 Hz of the Milliwatt tone (1004 Hz) and its harmonics (2008 and
  3012 Hz), and the two tones of a pair are at least 100 Hz apart.  That gives a few thousand
  distinct pairs (:attr:`SignaturePlan.capacity`), assigned to call indices in a fixed shuffled
  order so that neighbouring calls get unrelated pairs;
* a **timing marker**: the first 80 ms of every cycle are a linear chirp (300 -> 3300 Hz) instead
  of the pair.  The chirp has a sharp autocorrelation, so in echo mode its arrival time gives the
  echo round trip (unambiguous up to the cycle length, 1 s).

Every tone has an integer frequency, so the cycle is phase-continuous when it repeats, and every
grid tone has a whole number of periods in a 320-sample analysis window: on a clean window the DFT
puts all of a tone's energy in its own bin.  Both survive G.711 µ-law, A-law and µ-law <-> A-law
transcoding (the quantisation noise is ~35 dB below the tones).

The payload cycle is encoded once per call (:meth:`SignaturePlan.payloads`); sending is a list
index.  Detection (:class:`Detector`) runs in batch with numpy on about one second of received
audio at a time, never per packet.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from iaxgw._core import g711

Codec = Literal["ulaw", "alaw"]
Int16Array = npt.NDArray[np.int16]
FloatArray = npt.NDArray[np.float64]

RATE = 8000                   #: samples per second (G.711)
FRAME_SAMPLES = 160           #: samples per 20 ms frame
FRAME_MS = 20
CYCLE_FRAMES = 50             #: frames per signature cycle (1 s)
CYCLE_SAMPLES = CYCLE_FRAMES * FRAME_SAMPLES
WINDOW = 320                  #: analysis window (40 ms): 25 Hz bins
MARKER_SAMPLES = 640          #: chirp length (80 ms)
MILLIWATT_HZ = 1004.0
TONE_AMPLITUDE = 7000.0       #: per tone; the pair peaks at 14,000 (-7 dBFS)
MARKER_AMPLITUDE = 12000.0
SILENCE_RMS = 80.0            #: below this (int16 RMS, about -52 dBFS) a frame counts as silent


# ---------------------------------------------------------------------------------------------
# G.711: ``iaxgw._core.g711`` on whole windows, named by codec
# ---------------------------------------------------------------------------------------------

_ENCODE = {"ulaw": g711.ulaw_encode, "alaw": g711.alaw_encode}
_DECODE = {"ulaw": g711.ulaw_decode, "alaw": g711.alaw_decode}
_TRANSCODE = {("ulaw", "alaw"): g711.ulaw_to_alaw, ("alaw", "ulaw"): g711.alaw_to_ulaw}


def decode(data: bytes, codec: Codec) -> Int16Array:
    """Decode G.711 bytes to int16 samples (call it on whole windows, not per frame)."""
    out: Int16Array = np.empty(len(data), dtype=np.int16)
    _DECODE[codec](data, out)
    return out


def encode(pcm: Int16Array, codec: Codec) -> bytes:
    """Encode int16 samples to G.711 bytes."""
    return _ENCODE[codec](np.ascontiguousarray(pcm, dtype=np.int16))


def transcode(data: bytes, src: Codec, dst: Codec) -> bytes:
    """What a PBX bridging a µ-law leg to an A-law leg does to the audio (via linear)."""
    if src == dst:
        return encode(decode(data, src), dst)
    return _TRANSCODE[src, dst](data)


# ---------------------------------------------------------------------------------------------
# The plan: call index -> signature -> payload cycle
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signature:
    """The tone pair of one call.  ``sid`` is the call index modulo the plan's capacity."""

    sid: int
    f1: int
    f2: int


def _marker() -> FloatArray:
    n = np.arange(MARKER_SAMPLES, dtype=np.float64)
    f0, f1 = 300.0, 3300.0
    dur = MARKER_SAMPLES / RATE
    phase = 2 * math.pi * (f0 * n / RATE + (f1 - f0) / (2 * dur) * (n / RATE) ** 2)
    ramp = np.minimum(1.0, np.minimum(n, MARKER_SAMPLES - 1 - n) / 40.0)   # 5 ms fades
    out: FloatArray = MARKER_AMPLITUDE * ramp * np.sin(phase)
    return out


class SignaturePlan:
    """Maps call indices to tone pairs and builds each call's encoded payload cycle."""

    def __init__(self, *, min_hz: int = 400, max_hz: int = 3300, guard_hz: int = 75,
                 min_separation_hz: int = 100, seed: int = 0x1A2) -> None:
        step = RATE // WINDOW   # 25 Hz: one DFT bin of the analysis window
        avoid = (MILLIWATT_HZ, 2 * MILLIWATT_HZ, 3 * MILLIWATT_HZ)
        grid = [f for f in range(min_hz, max_hz + 1, step)
                if all(abs(f - h) >= guard_hz for h in avoid)]
        pairs = [(a, b) for i, a in enumerate(grid) for b in grid[i + 1:]
                 if b - a >= min_separation_hz]
        order = np.random.default_rng(seed).permutation(len(pairs))
        self.grid: tuple[int, ...] = tuple(grid)
        self.pairs: tuple[tuple[int, int], ...] = tuple(pairs[i] for i in order)
        self.capacity = len(self.pairs)
        #: DFT bin (of a WINDOW-sample window) of each grid frequency
        self.grid_bins: npt.NDArray[np.intp] = np.array([f // step for f in grid], dtype=np.intp)
        g = len(grid)
        pos = {f: i for i, f in enumerate(grid)}
        #: (grid index a * G + grid index b), a < b  ->  signature id, or -1
        self.pair_lookup: npt.NDArray[np.int32] = np.full(g * g, -1, dtype=np.int32)
        for sid, (a, b) in enumerate(self.pairs):
            self.pair_lookup[pos[a] * g + pos[b]] = sid
        self.marker: FloatArray = _marker()

    def signature(self, call_index: int) -> Signature:
        sid = call_index % self.capacity
        f1, f2 = self.pairs[sid]
        return Signature(sid, f1, f2)

    def pcm_cycle(self, call_index: int) -> Int16Array:
        """The 1 s linear cycle of a call: marker chirp, then the tone pair."""
        sig = self.signature(call_index)
        t = np.arange(CYCLE_SAMPLES, dtype=np.float64) / RATE
        pcm = TONE_AMPLITUDE * (np.sin(2 * math.pi * sig.f1 * t)
                                + np.sin(2 * math.pi * sig.f2 * t))
        pcm[:MARKER_SAMPLES] = self.marker
        out: Int16Array = np.round(pcm).astype(np.int16)
        return out

    def payloads(self, call_index: int, codec: Codec = "ulaw") -> list[bytes]:
        """The call's 50 encoded 20 ms payloads; frame with media timestamp ``ts`` sends
        ``payloads[(ts // 20) % 50]``."""
        data = encode(self.pcm_cycle(call_index), codec)
        return [bytes(data[i:i + FRAME_SAMPLES]) for i in range(0, len(data), FRAME_SAMPLES)]

    def silence(self, codec: Codec = "ulaw") -> bytes:
        """One 20 ms frame of digital silence."""
        return encode(np.zeros(FRAME_SAMPLES, dtype=np.int16), codec)


@functools.cache
def default_plan() -> SignaturePlan:
    """The plan every load test uses unless told otherwise (build cost ~50 ms, then cached)."""
    return SignaturePlan()


# ---------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Analysis:
    """What one batch of received audio contained (40 ms windows unless stated)."""

    frames: int = 0                 #: received frames analysed
    silent_frames: int = 0          #: of those, frames below :data:`SILENCE_RMS`
    windows: int = 0                #: non-silent windows examined
    own: int = 0                    #: windows carrying our own tone pair
    crossed: int = 0                #: windows carrying another call's tone pair (of this run)
    ignored: int = 0                #: pair-like windows that are neither ours nor a confident
                                    #: pair of a call in the run (splices, loss; not "crossed")
    milliwatt: int = 0              #: windows dominated by 1004 Hz
    others: dict[int, int] = field(default_factory=dict)   #: foreign signature id -> windows
    markers: list[int] = field(default_factory=list)       #: marker onsets (sample offsets)

    def add(self, other: Analysis) -> None:
        self.frames += other.frames
        self.silent_frames += other.silent_frames
        self.windows += other.windows
        self.own += other.own
        self.crossed += other.crossed
        self.ignored += other.ignored
        self.milliwatt += other.milliwatt
        for k, v in other.others.items():
            self.others[k] = self.others.get(k, 0) + v


#: FFT sizes of the marker correlation (2^k and 3 x 2^k: pocketfft's fastest).  Audio is
#: correlated in one FFT or in blocks of one size (overlap-save), whichever costs least, so the
#: detector keeps at most this many marker spectra (<= 420 KiB) whatever batch lengths a run
#: produces.  (Sized to every batch length instead, the cache gained a spectrum of up to 260 KiB
#: for each new length and grew a long run's memory for many minutes.)
MARKER_FFT_SIZES = (2048, 3072, 4096, 6144, 8192, 12288, 16384)
#: cost model of one block: n log2 n plus the fixed cost of the numpy calls (measured)
_BLOCK_COST = tuple((n, n * math.log2(n) + 20000.0) for n in MARKER_FFT_SIZES)


class Detector:
    """Batch detector for one plan: tone pairs, the Milliwatt tone, silence and timing markers."""

    #: a window carries a tone pair when its two strongest grid bins each hold at least
    #: ``PAIR_EACH`` and together ``PAIR_SUM`` of the window's energy
    PAIR_EACH = 0.2
    PAIR_SUM = 0.7
    #: a window counts as *another* call's pair only with more confidence: a clean pair puts
    #: ~0.5 of the energy in each bin (sum > 0.99 after G.711); windows spanning a splice of our
    #: own audio (lost frames closed up when a trunk carries no timestamps) reach ~0.21 / 0.72
    FOREIGN_EACH = 0.35
    FOREIGN_SUM = 0.9
    MILLIWATT_MIN = 0.7
    MARKER_NCC = 0.5

    def __init__(self, plan: SignaturePlan | None = None) -> None:
        self.plan = plan or default_plan()
        #: signature ids of the calls in the run (:meth:`mark_in_run`); None: any id counts
        self.in_run: npt.NDArray[np.bool_] | None = None
        n = np.arange(WINDOW, dtype=np.float64)
        # cos/sin rows of the 1004 Hz probe: a real einsum, never a BLAS call (a complex
        # matrix-vector product over 25+ windows went to multi-threaded OpenBLAS: ~0.3-0.5 ms
        # per batch plus spinning threads, the biggest single cost of a 200-call load test)
        self._mw = np.stack([np.cos(2 * math.pi * MILLIWATT_HZ * n / RATE),
                             np.sin(2 * math.pi * MILLIWATT_HZ * n / RATE)])
        m = self.plan.marker
        self._marker_norm = float(np.sqrt(np.dot(m, m)))
        #: conj(rfft(marker, n)) for n in MARKER_FFT_SIZES, made when first needed
        self._marker_spec: dict[int, npt.NDArray[np.complex128]] = {}

    def mark_in_run(self, call_index: int) -> None:
        """Call ``call_index`` is part of the run: its signature may show up as crossed audio.
        Once any call is marked, foreign ids of calls not marked are ignored."""
        if self.in_run is None:
            self.in_run = np.zeros(self.plan.capacity, dtype=np.bool_)
        self.in_run[call_index % self.plan.capacity] = True

    def frame_silence(self, pcm: FloatArray) -> int:
        """Number of whole 160-sample frames in ``pcm`` whose RMS is below SILENCE_RMS."""
        nfr = len(pcm) // FRAME_SAMPLES
        if not nfr:
            return 0
        fr = pcm[: nfr * FRAME_SAMPLES].reshape(nfr, FRAME_SAMPLES)
        ms = np.einsum("ij,ij->i", fr, fr) / FRAME_SAMPLES
        return int(np.count_nonzero(ms < SILENCE_RMS * SILENCE_RMS))

    def tones(self, pcm: FloatArray, own_sid: int | None,
              max_windows: int | None = None) -> Analysis:
        """Classify the non-silent 320-sample windows of ``pcm`` (contiguous audio).

        ``max_windows`` examines only that many windows, spread evenly (to bound the cost)."""
        res = Analysis()
        nwin = len(pcm) // WINDOW
        if not nwin:
            return res
        win = pcm[: nwin * WINDOW].reshape(nwin, WINDOW)
        if max_windows is not None and nwin > max_windows:
            win = win[np.linspace(0, nwin - 1, max_windows).astype(np.intp)]
        energy = np.einsum("ij,ij->i", win, win)
        loud = energy >= WINDOW * SILENCE_RMS * SILENCE_RMS
        if not loud.any():
            return res
        win, energy = win[loud], energy[loud]
        res.windows = len(win)
        # fraction of each window's energy in one DFT bin: 2|X_k|^2 / N / sum(x^2)
        spec = np.fft.rfft(win, axis=1)
        scale = 2.0 / (WINDOW * energy)
        grid = spec[:, self.plan.grid_bins]
        frac = (grid.real ** 2 + grid.imag ** 2) * scale[:, None]
        top = np.argpartition(frac, -2, axis=1)[:, -2:]
        rows = np.arange(len(win))
        p_a, p_b = frac[rows, top[:, 0]], frac[rows, top[:, 1]]
        is_pair = (p_a >= self.PAIR_EACH) & (p_b >= self.PAIR_EACH) & (p_a + p_b >= self.PAIR_SUM)
        lo, hi = np.minimum(top[:, 0], top[:, 1]), np.maximum(top[:, 0], top[:, 1])
        sids = np.where(is_pair, self.plan.pair_lookup[lo * len(self.plan.grid) + hi], -1)
        mw = np.einsum("ij,kj->ik", win, self._mw)
        mw_frac = (mw[:, 0] ** 2 + mw[:, 1] ** 2) * scale
        res.milliwatt = int(np.count_nonzero(mw_frac >= self.MILLIWATT_MIN))
        if own_sid is not None:
            mine = sids == own_sid
            res.own = int(np.count_nonzero(mine))
            sids = np.where(mine, -1, sids)
        pairs = sids >= 0
        # another call's pair: confident, and the id of a call in the run
        sure = pairs & (p_a >= self.FOREIGN_EACH) & (p_b >= self.FOREIGN_EACH) \
            & (p_a + p_b >= self.FOREIGN_SUM)
        if self.in_run is not None:
            sure &= self.in_run[np.maximum(sids, 0)]
        found = sids[sure]
        res.crossed = len(found)
        res.ignored = int(np.count_nonzero(pairs)) - res.crossed
        if len(found):
            ids, counts = np.unique(found, return_counts=True)
            res.others = {int(i): int(c) for i, c in zip(ids, counts)}
        return res

    def markers(self, pcm: FloatArray, max_markers: int = 3) -> list[int]:
        """Sample offsets in ``pcm`` where a timing marker starts (normalised cross-correlation
        with the chirp >= MARKER_NCC), earliest first."""
        m = self.plan.marker
        mlen = len(m)
        if len(pcm) < mlen:
            return []
        nvalid = len(pcm) - mlen + 1
        corr = self._correlate(pcm, nvalid)
        csum = np.concatenate(([0.0], np.cumsum(pcm * pcm)))
        local = np.sqrt(np.maximum(csum[mlen:mlen + nvalid] - csum[:nvalid], 1e-9))
        ncc = corr / (local * self._marker_norm)
        out: list[int] = []
        for _ in range(max_markers):
            j = int(np.argmax(ncc))
            if ncc[j] < self.MARKER_NCC:
                break
            out.append(j)
            ncc[max(0, j - mlen): j + mlen] = 0.0
        return sorted(out)

    def _correlate(self, pcm: FloatArray, nvalid: int) -> FloatArray:
        """``corr[j] = sum_i pcm[j + i] * marker[i]`` for the ``nvalid`` offsets where the whole
        marker fits.  A circular correlation of size ``n >= len(block)`` is exact at those
        offsets (the marker never wraps), so a block of ``n`` samples gives ``n - mlen + 1``."""
        mlen = len(self.plan.marker)
        _cost, n = min((-(-nvalid // (s - mlen + 1)) * c, s) for s, c in _BLOCK_COST if s > mlen)
        mspec = self._marker_spec.get(n)
        if mspec is None:
            mspec = self._marker_spec[n] = np.conj(np.fft.rfft(self.plan.marker, n))
        if len(pcm) <= n:
            out: FloatArray = np.fft.irfft(np.fft.rfft(pcm, n) * mspec, n)[:nvalid]
            return out
        step = n - mlen + 1
        corr = np.empty(nvalid, dtype=np.float64)
        for s in range(0, nvalid, step):
            k = min(step, nvalid - s)
            corr[s:s + k] = np.fft.irfft(np.fft.rfft(pcm[s:s + n], n) * mspec, n)[:k]
        return corr
