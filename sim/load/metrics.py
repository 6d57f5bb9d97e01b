"""Per-call measurement for ``iaxgw loadtest``: setup times, media loss/jitter, echo RTT, E-model.

The runner drives one :class:`CallStats` per call with one method call per frame::

    call = CallStats(index, mode="echo")
    call.on_setup_event("NEW", now)          # ... "ACCEPT", "ANSWER", "REJECT", "BUSY", ...
    payload = call.on_tx(ts_ms, now)         # per sent 20 ms frame: counts it, returns the bytes
    call.on_rx(ts_ms, now, payload)          # per received voice frame: O(1)
    call.analyze()                           # about once a second (the collector does this)
    record = call.finish(now)                # -> CallRecord, every figure of the call

``on_rx`` does a few float operations and one list append; the audio it keeps is analysed in batch
(:mod:`iaxgw.sim.load.signature`) by :meth:`CallStats.analyze`.

Conventions
-----------
* Timestamps given to ``on_rx`` are already unwrapped milliseconds: IAX2 mini frames carry only the
  low 16 bits, and the receive path (``_core.media``) unwraps them.
* Loss (``loss_method``):

  - ``"stamp"`` (echo mode, the echo came back bit for bit): every frame we send carries its
    16-bit frame counter in the low bits of 16 of its bytes (``_core.probe.stamp_payload``); a
    received frame counts when its counter decodes and the rest of it is our cycle's frame for
    that counter.  ``expected`` spans the lowest to the highest counter received (frames sent
    before the far end's echo ran, and those still in flight at the end, are not loss),
    ``lost = expected - unique counters``: the round-trip loss, whatever the far end does to
    timestamps (Asterisk re-times what it echoes, and a trunk without per-entry timestamps
    carries none).  Duplicates and reordering are counted by counter too.
  - ``"timestamps"`` (tone / silence / file media, with timestamps of the far end's own: mini
    frames, full frames, trunk entries with timestamps): one frame per ``frame_ms``, so
    ``expected = (max_ts - min_ts) / frame_ms + 1`` and ``lost = expected - (received -
    duplicates)``, duplicates and late frames told apart with a 64-frame bitmap.
  - None: not measurable -- an echo that did not come back bit for bit (transcoded), or frames
    without timestamps of their own (a trunk without per-entry timestamps) in the other modes.
    ``loss_pct``, R and MOS are then None, never computed from an assumed 0 % loss.
* Jitter: RFC 3550 section 6.4.1 / A.8 interarrival jitter in ms, ``J += (|D| - J) / 16`` with
  ``D`` the change in transit time (arrival - media timestamp) between consecutive arrivals.
  With the ``"stamp"`` loss method the transit is arrival - frame counter x ``frame_ms``: the
  jitter of the round trip, which a lost frame does not disturb.
* E-model: ITU-T G.107 simplified for G.711 (see :func:`r_factor`).
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import asdict, dataclass, fields
from operator import itemgetter
from typing import Any, Final, Literal

import numpy as np

from iaxgw._core.probe import RxProbe, TxProbe, unstamp
from iaxgw.sim.load import signature as sig

Mode = Literal["echo", "tone", "none"]

# ---------------------------------------------------------------------------------------------
# E-model (ITU-T G.107, simplified for G.711)
# ---------------------------------------------------------------------------------------------

R0: Final = 93.2          #: default basic signal-to-noise ratio, Is = 0, A = 0
BPL_PLC: Final = 25.1     #: G.711 packet-loss robustness with packet-loss concealment (G.113)
BPL_NO_PLC: Final = 4.3   #: G.711 without PLC
IE_G711: Final = 0.0      #: equipment impairment of G.711
JB_FACTOR: Final = 2.0    #: jitter-buffer allowance in the one-way delay: JB_FACTOR x jitter
#: a far end's receive report counts for forward loss only over at least this many frames
RR_MIN_FRAMES: Final = 50


def delay_impairment(one_way_ms: float) -> float:
    """G.107 Id, simplified: ``0.024 d + 0.11 (d - 177.3) H(d - 177.3)``."""
    d = max(0.0, one_way_ms)
    return 0.024 * d + (0.11 * (d - 177.3) if d > 177.3 else 0.0)


def r_factor(loss_pct: float, one_way_ms: float | None = None, *, ie: float = IE_G711,
             bpl: float = BPL_PLC) -> float:
    """``R = 93.2 - Id - Ie,eff`` with ``Ie,eff = Ie + (95 - Ie) Ppl / (Ppl + Bpl)``.

    ``one_way_ms`` None means the delay is unknown and contributes nothing (Id = 0).  Clamped to
    [0, 100]."""
    ppl = max(0.0, loss_pct)
    ie_eff = ie + (95.0 - ie) * ppl / (ppl + bpl)
    idd = delay_impairment(one_way_ms) if one_way_ms is not None else 0.0
    return min(100.0, max(0.0, R0 - idd - ie_eff))


def return_loss_pct(round_trip_pct: float, forward_pct: float | None) -> float | None:
    """The return leg's loss (%) of an echo round trip whose forward leg lost ``forward_pct``:
    ``1 - (1 - round trip) / (1 - forward)``; None when the forward loss is unknown."""
    if forward_pct is None or forward_pct >= 100.0:
        return None
    return max(0.0, 100.0 * (1.0 - (1.0 - round_trip_pct / 100.0) / (1.0 - forward_pct / 100.0)))


def mos_from_r(r: float) -> float:
    """G.107 Annex B: ``MOS = 1 + 0.035 R + 7e-6 R (R - 60)(100 - R)``, clamped to [1, 4.5]."""
    if r <= 0.0:
        return 1.0
    r = min(r, 100.0)
    mos = 1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)
    return min(4.5, max(1.0, mos))


def one_way_delay_ms(rtt_ms: float | None, jitter_ms: float | None,
                     jb_factor: float = JB_FACTOR) -> float | None:
    """Estimated mouth-to-ear delay: ``RTT / 2 + jb_factor x jitter``; None when RTT is unknown."""
    if rtt_ms is None:
        return None
    return rtt_ms / 2.0 + jb_factor * (jitter_ms or 0.0)


# ---------------------------------------------------------------------------------------------
# Setup outcome
# ---------------------------------------------------------------------------------------------

OUTCOMES: Final = ("ANSWERED", "BUSY", "CONGESTION", "REJECT", "HANGUP", "TIMEOUT",
                   "NO_ANSWER", "ERROR", "IN_PROGRESS")
_FAIL_EVENTS: Final = frozenset(OUTCOMES) - {"ANSWERED", "IN_PROGRESS"}


def cause_key(outcome: str, cause: str | None) -> str:
    """How a failure is counted in ``causes``: ``"BUSY"``, ``"REJECT (No authority found)"``."""
    return f"{outcome} ({cause})" if cause else outcome


# ---------------------------------------------------------------------------------------------
# The per-call record (immutable, one CSV row)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallRecord:
    """Every figure of one finished call.  ``None`` means not measured, never zero by default."""

    index: int
    mode: str
    signature: int | None
    f1_hz: int | None
    f2_hz: int | None
    outcome: str
    cause: str | None
    cause_code: int | None
    start_s: float | None          #: NEW sent (runner clock)
    accept_ms: float | None        #: NEW -> ACCEPT
    ringing_ms: float | None       #: NEW -> RINGING
    answer_ms: float | None        #: NEW -> ANSWER
    duration_s: float | None       #: ANSWER -> end
    tx_frames: int
    tx_bytes: int
    rx_frames: int
    rx_bytes: int
    expected: int | None
    lost: int | None
    loss_pct: float | None
    loss_method: str | None        #: "stamp" (echo round trip), "timestamps", None: not measurable
    loss_forward_pct: float | None  #: what the far end lost from us (its receive report)
    loss_return_pct: float | None   #: what we lost from the far end
    rr_frames: int | None          #: our frames the far end's latest report covers
    early_frames: int              #: arrived before the first full voice frame: discarded
    duplicates: int
    out_of_order: int
    jitter_ms: float | None        #: RFC 3550 estimate at the end of the call
    jitter_mean_ms: float | None
    jitter_max_ms: float | None
    rtt_ms: float | None           #: median echo round trip (echo mode)
    rtt_max_ms: float | None
    rtt_samples: int
    ping_rtt_ms: float | None      #: median IAX2 PING/LAGRQ round trip, if the runner fed any
    delay_ms: float | None         #: one-way delay used by the E-model
    r_factor: float | None
    mos: float | None
    audio: str                     #: verified|crossed|one_way|silent|unverified|n/a
    audio_verified: bool
    audio_crossed: bool
    audio_one_way: bool
    audio_silent: bool
    audio_windows: int
    own_windows: int
    crossed_windows: int
    crossed_from: int | None       #: signature id seen most often among foreign windows
    milliwatt_windows: int
    silent_frames: int
    audio_unanalysed: int          #: received frames dropped unanalysed (analysis fell behind)
    tx_pps: float | None
    rx_pps: float | None
    tx_bytes_per_s: float | None
    rx_bytes_per_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


# ---------------------------------------------------------------------------------------------
# The live per-call accumulator
# ---------------------------------------------------------------------------------------------

_MASK64: Final = (1 << 64) - 1
_CARRY_FRAMES: Final = 5          # > marker length: a marker cut by a batch edge is seen next time
# analyse when at least 2 s of audio is pending: a batch costs a fixed ~0.2 ms of numpy calls
# besides its FFTs, so 2 s batches cost a quarter of 0.5 s ones (200 calls: ~100 batches a second)
_ANALYZE_MIN_FRAMES: Final = 100
_PENDING_LIMIT: Final = 300       # 6 s: analyse inline, or drop the oldest half (see __init__)


class CallStats:
    """Live statistics of one call.  Not thread-safe; one event loop drives it."""

    __slots__ = (
        "_ana_windows", "_batches", "_carry", "_dropped_seen", "_inline", "_own_set",
        "answer_counted", "audio", "bpl", "cause", "cause_code", "codec", "detector",
        "early_frames", "frame_ms",
        "index", "jb_factor", "mode", "outcome", "payloads", "ping_rtts", "remote_rr",
        "remote_rr_sent", "rtt_every", "rtts", "rx", "rx_codec", "signature", "snap_expected",
        "snap_lost",
        "t_accept", "t_answer", "t_end", "t_new", "t_ringing", "tx", "tx_marks",
    )

    #: a call is "silent" when at least this share of its received frames (and >= 5) were silence
    SILENT_SHARE = 0.05
    #: foreign-signature windows needed to call a call "crossed" (count and share of windows)
    CROSSED_MIN = 2
    CROSSED_SHARE = 0.05
    #: share of examined windows that must carry our signature (echo) or 1004 Hz (tone)
    VERIFY_SHARE = 0.5

    def __init__(self, index: int, *, mode: Mode = "echo", codec: sig.Codec = "ulaw",
                 rx_codec: sig.Codec | None = None, frame_ms: int = sig.FRAME_MS,
                 plan: sig.SignaturePlan | None = None, detector: sig.Detector | None = None,
                 bpl: float = BPL_PLC, jb_factor: float = JB_FACTOR,
                 analysis_windows: int | None = None, inline_analysis: bool = True,
                 rtt_every: int = 1) -> None:
        self.index = index
        self.mode: Mode = mode
        self.codec: sig.Codec = codec
        self.rx_codec: sig.Codec = rx_codec or codec
        self.frame_ms = frame_ms
        self.bpl = bpl
        self.jb_factor = jb_factor
        if mode == "none":
            self.signature: sig.Signature | None = None
            self.payloads: list[bytes] = []
            self.detector: sig.Detector | None = None
        else:
            plan = plan or (detector.plan if detector else sig.default_plan())
            self.detector = detector or sig.Detector(plan)
            self.signature = plan.signature(index)
            self.payloads = plan.payloads(index, codec)
        self._ana_windows = analysis_windows
        #: the distinct payloads of our own cycle (exact-echo check), made when first needed
        self._own_set: frozenset[bytes] | None = None
        #: echo RTT (marker search, an FFT over the whole batch) on the first 3 batches, then on
        #: every ``rtt_every``-th: a load test needs a few RTT samples per call, not all of them
        self.rtt_every = max(1, rtt_every)
        self._batches = 0
        # When 4 s of audio is pending (nobody called analyze()): analyse it inside on_rx, or,
        # with inline_analysis=False, drop the oldest half so on_rx never does batch work.
        self._inline = inline_analysis
        # setup
        self.t_new: float | None = None
        self.t_accept: float | None = None
        self.t_ringing: float | None = None
        self.t_answer: float | None = None
        self.t_end: float | None = None
        self.outcome: str | None = None
        self.cause: str | None = None
        self.cause_code: int | None = None
        self.answer_counted = False     #: its setup time is in the collector's statistics
        # tx
        # tx: counted by a compiled probe too (the load tester builds a whole media tick from
        # the calls' probes at once, ``_core.media.tx_tick_send``)
        self.tx_marks: deque[float] = deque(maxlen=8)
        self.tx = TxProbe(list(self.payloads), frame_ms, self.tx_marks)
        # rx: the figures per received frame, counted by a compiled probe (which a trunked load
        # test hands to the endpoint: its entries are counted without a Python call)
        self.rx = RxProbe(frame_ms, self.detector is not None, _PENDING_LIMIT)
        if mode == "echo" and self.payloads and self.rx_codec == self.codec:
            # every frame sent carries its counter; the probe checks what comes back against
            # our cycle (the exact-echo check's per-frame part) and counts it by counter
            self.tx.stamp = True
            self.rx.stamp_cycle = list(self.payloads)
            self.rx.stamp_offset = self.tx.offset
            self._own_set = frozenset(unstamp(p) for p in self.payloads)
        self._dropped_seen = 0
        self.snap_expected = 0
        self.snap_lost = 0
        # audio
        self._carry: list[tuple[int, float, bytes]] = []
        self.audio = sig.Analysis()
        self.rtts: list[float] = []
        self.ping_rtts: list[float] = []
        #: the far end's latest receive report (RR IEs of a PONG), as ``Call.remote_rr``
        self.remote_rr: dict[str, int] | None = None
        #: our voice frames sent when we PINGed for that report (None: not known): what it
        #: covers
        self.remote_rr_sent: int | None = None
        #: voice frames that reached the endpoint before the call's first full voice frame and
        #: were discarded, as Asterisk discards them (``CallMedia.rx_early``, set at the end)
        self.early_frames = 0

    # -- setup ------------------------------------------------------------------------------

    def on_setup_event(self, event: str, t_s: float, cause: str | None = None,
                       cause_code: int | None = None) -> None:
        """Record a signalling event: NEW, ACCEPT, RINGING, ANSWER, or a failure
        (REJECT, BUSY, CONGESTION, HANGUP, TIMEOUT, NO_ANSWER, ERROR) with its cause."""
        ev = event.upper()
        if ev == "NEW":
            self.t_new = t_s
        elif ev == "ACCEPT":
            self.t_accept = self.t_accept if self.t_accept is not None else t_s
        elif ev in ("RINGING", "RING"):
            self.t_ringing = self.t_ringing if self.t_ringing is not None else t_s
        elif ev in ("ANSWER", "ANSWERED"):
            if self.t_answer is None and self.outcome is None:
                self.t_answer = t_s
                self.outcome = "ANSWERED"
        elif ev in _FAIL_EVENTS:
            if self.outcome is None:
                self.outcome = ev
                self.cause, self.cause_code = cause, cause_code
            elif self.outcome == "ANSWERED" and self.cause is None:
                self.cause, self.cause_code = cause, cause_code   # how the answered call ended
        elif ev == "IN_PROGRESS":
            # a setup the run stopped (iaxgw ctl stop, q): neither answered nor failed
            if self.outcome is None:
                self.cause, self.cause_code = cause, cause_code
        else:
            raise ValueError(f"unknown setup event {event!r}")

    # -- media: the per-frame paths -----------------------------------------------------------

    def on_tx(self, ts_ms: int, now_s: float) -> bytes:
        """Count one sent voice frame and return its payload (the signature cycle position for
        media timestamp ``ts_ms``)."""
        return self.tx.take(ts_ms, now_s)

    # the send figures (see TxProbe)
    @property
    def tx_frames(self) -> int:
        return self.tx.frames

    @property
    def tx_bytes(self) -> int:
        return self.tx.bytes

    @property
    def t_first_tx(self) -> float | None:
        return self.tx.t_first if self.tx.sent else None

    @property
    def t_last_tx(self) -> float:
        return self.tx.t_last

    def on_rx(self, ts_ms: int, arrival_s: float, payload: bytes) -> None:
        """One received voice frame: unwrapped media timestamp (ms), local arrival time (s)."""
        rx = self.rx
        rx.on_rx(ts_ms, arrival_s, payload)
        if self._inline and rx.pending_count >= _PENDING_LIMIT - 1:
            self.analyze()      # 6 s pending and nobody called analyze(): do it here

    # the receive figures (see RxProbe)
    @property
    def rx_frames(self) -> int:
        return self.rx.frames

    @property
    def rx_bytes(self) -> int:
        return self.rx.bytes

    @property
    def t_first_rx(self) -> float | None:
        return self.rx.t_first if self.rx.frames else None

    @property
    def t_last_rx(self) -> float:
        return self.rx.t_last

    @property
    def loss_method(self) -> str | None:
        """How loss is measured for this call (module doc); None: it cannot be."""
        rx = self.rx
        if not rx.frames:
            return None
        if rx.stamp_cycle is not None:
            # most frames must be ours: an echo that transcodes brings back no stamp
            return "stamp" if rx.s_frames and 2 * rx.s_frames >= rx.frames else None
        if self.mode == "echo" or rx.seq_frames:
            return None
        return "timestamps"

    @property
    def _stamped(self) -> bool:
        return self.loss_method == "stamp"

    @property
    def duplicates(self) -> int:
        return self.rx.s_dup if self._stamped else self.rx.duplicates

    @property
    def out_of_order(self) -> int:
        return self.rx.s_ooo if self._stamped else self.rx.out_of_order

    @property
    def jitter(self) -> float:
        return self.rx.s_jitter if self._stamped else self.rx.jitter

    @property
    def jitter_max(self) -> float:
        return self.rx.s_jitter_max if self._stamped else self.rx.jitter_max

    @property
    def audio_dropped(self) -> int:
        """Received frames never analysed (the analysis fell 6 s behind)."""
        return self.rx.dropped

    @property
    def _pending(self) -> list[tuple[int, float, bytes]]:
        pend = self.rx.pending
        return pend if pend is not None else []

    def on_rtt(self, rtt_ms: float) -> None:
        """An IAX2 PING/PONG or LAGRQ/LAGRP round trip (ms); used when there is no echo."""
        self.ping_rtts.append(rtt_ms)

    # -- derived figures --------------------------------------------------------------------

    @property
    def expected(self) -> int | None:
        """Frames that should have arrived (module doc); None when loss is not measurable."""
        method = self.loss_method
        rx = self.rx
        if method == "stamp":
            return rx.s_hi - rx.s_lo + 1
        if method is None:
            return None
        fm = self.frame_ms
        return (rx.max_ts - rx.min_ts + (fm >> 1)) // fm + 1

    @property
    def lost(self) -> int | None:
        exp = self.expected
        if exp is None:
            return None
        rx = self.rx
        if self._stamped:
            return max(0, exp - (rx.s_frames - rx.s_dup))
        return max(0, exp - (rx.frames - rx.duplicates))

    @property
    def loss_pct(self) -> float | None:
        exp, lost = self.expected, self.lost
        return 100.0 * lost / exp if exp and lost is not None else None

    @property
    def loss_forward_pct(self) -> float | None:
        """The far end's loss of what we sent, from its receive report.  With the count of
        our frames sent when we PINGed for it (``remote_rr_sent``): ``1 - frames / sent``,
        what it received of what we sent (a frame still on its way at the PING counts as lost:
        1 in some hundreds).  Without it: ``lost / (frames + lost)``, where the far end's
        lost count is its jitter buffer's, which also counts play-out slots no frame was sent
        for (Asterisk: about 5 a call, 1 pp over a 10 s call).  Its own loss percentage is a
        moving average, not the call's figure.  None without a meaningful report: Asterisk
        counts only with ``jitterbuffer = yes`` and otherwise reports 1 frame, 0 lost."""
        rr = self.remote_rr
        if not rr:
            return None
        frames, lost = rr.get("frames", 0), rr.get("lost", 0)
        if frames < RR_MIN_FRAMES:
            return None
        sent = self.remote_rr_sent
        if sent is not None and sent >= RR_MIN_FRAMES:
            return max(0.0, 100.0 * (1.0 - frames / sent))
        return 100.0 * lost / (frames + lost)

    @property
    def rr_frames(self) -> int | None:
        """Our frames the far end's latest report covers: those sent when we PINGed for it,
        else its received + lost count; None without a report."""
        rr = self.remote_rr
        if not rr:
            return None
        sent = self.remote_rr_sent
        if sent is not None and sent >= RR_MIN_FRAMES:
            return sent
        return rr.get("frames", 0) + rr.get("lost", 0)

    @property
    def loss_return_pct(self) -> float | None:
        """What we lost from the far end: the timestamp loss itself (one way), or the round
        trip without the forward loss, ``1 - (1 - round trip) / (1 - forward)``."""
        method = self.loss_method
        loss = self.loss_pct
        if loss is None:
            return None
        if method == "timestamps":
            return loss
        return return_loss_pct(loss, self.loss_forward_pct)

    @property
    def jitter_mean(self) -> float | None:
        rx = self.rx
        if self._stamped:
            return rx.s_jitter_sum / (rx.s_frames - 1) if rx.s_frames > 1 else None
        return rx.jitter_sum / (rx.frames - 1) if rx.frames > 1 else None

    def rtt_estimate(self) -> float | None:
        """Median echo RTT (ms), else median PING RTT, else None."""
        if self.rtts:
            return statistics.median(self.rtts)
        if self.ping_rtts:
            return statistics.median(self.ping_rtts)
        return None

    def quality(self) -> tuple[float | None, float | None, float | None]:
        """(one-way delay ms, R, MOS) from what is known now; all None without received media."""
        loss = self.loss_pct
        if loss is None:
            return None, None, None
        delay = one_way_delay_ms(self.rtt_estimate(), self.jitter_mean, self.jb_factor)
        r = r_factor(loss, delay, bpl=self.bpl)
        return delay, r, mos_from_r(r)

    # -- batch audio analysis --------------------------------------------------------------

    def analyze(self, final: bool = False) -> bool:
        """Analyse the audio received since the last call (cheap no-op when little is pending).
        True when there was audio to analyse."""
        det = self.detector
        rx = self.rx
        count = rx.pending_count
        if det is None or not count or (count < _ANALYZE_MIN_FRAMES and not final):
            return False
        tracked = rx.take_exact() if rx.own is not None or rx.stamp_cycle is not None else None
        # the probe's per-frame check (``tracked``) spares the exact-echo check the frames
        # themselves: they are built (``pending``) only when the batch needs them
        pend = None if tracked is not None and not tracked[2] else self._pending
        if rx.dropped != self._dropped_seen:     # frames were dropped since the carry
            self._dropped_seen = rx.dropped
            self._carry = []
        if self.mode == "echo" and self._exact_echo(pend, count, tracked):
            rx.pending = []
            self._carry = []
            return True
        if pend is None:
            pend = self._pending
        rx.pending = []
        carry = self._carry
        ncarry = len(carry)
        batch = carry + pend
        n = len(batch)
        size = len(batch[0][2])
        if size == 0 or any(len(b[2]) != size for b in batch):
            batch = [b for b in batch if len(b[2]) == size] if size else []
            n = len(batch)
            ncarry = min(ncarry, n)
            if not n or not size:
                return True
        raw = sig.decode(b"".join(map(itemgetter(2), batch)), self.rx_codec)
        pcm_frames = raw.astype(np.float64).reshape(n, size)
        fresh = pcm_frames[ncarry:]
        res = sig.Analysis(frames=len(fresh))
        res.silent_frames = det.frame_silence(fresh.reshape(-1))
        # place the frames by timestamp (lost frames stay zero)
        ts = np.fromiter(map(itemgetter(0), batch), dtype=np.int64, count=n)
        order = np.argsort(ts, kind="stable")
        ts = ts[order]
        spms = sig.RATE // 1000
        offsets = (ts - ts[0]) * spms
        limit = 4 * sig.RATE
        keep = offsets + size <= limit
        offsets, order = offsets[keep], order[keep]
        total = int(offsets[-1]) + size
        if total == len(order) * size and np.array_equal(offsets, np.arange(len(order)) * size):
            pcm = pcm_frames[order].reshape(-1)
        else:
            pcm = np.zeros(total, dtype=np.float64)
            idx = (offsets[:, None] + np.arange(size)).reshape(-1)
            pcm[idx] = pcm_frames[order].reshape(-1)
        carry_end = 0
        if ncarry:
            carry_end = min(total, int((carry[-1][0] - int(ts[0])) * spms) + size)
        own = self.signature.sid if self.signature else None
        tone = det.tones(pcm[carry_end:], own, self._ana_windows)
        res.windows, res.own, res.crossed = tone.windows, tone.own, tone.crossed
        res.milliwatt, res.others, res.ignored = tone.milliwatt, tone.others, tone.ignored
        self.audio.add(res)
        self._batches += 1
        b = self._batches
        if self.mode == "echo" and tone.own > tone.crossed and self.tx_marks and \
                (b <= 3 or b % self.rtt_every == 0):
            self._echo_rtts(det.markers(pcm), carry_end, batch, int(ts[0]))
        # keep the newest frames for the next batch (timestamp order)
        last = sorted(batch[-_CARRY_FRAMES:] if n > _CARRY_FRAMES else batch, key=itemgetter(0))
        self._carry = [] if final else last
        return True

    #: unmatched loud frames a batch may hold and still count as an exact echo
    EXACT_STRAY = 1

    def _exact_echo(self, pend: list[tuple[int, float, bytes]] | None, n: int,
                    tracked: tuple[list[bytes], list[float], bool] | None = None) -> bool:
        """The cheap check of an echo that came back bit for bit (same codec both ways, no
        transcoding: Echo() and native bridges pass payloads through unchanged): every frame is
        one of our own cycle's payloads, or silence.  Counts the batch (a matched frame pair is
        one window carrying our signature) and takes the echo RTT from the cycle's first frame,
        which is unique (it starts the marker chirp): RTT = its arrival - when we last sent it.

        False (nothing counted) when more than ``EXACT_STRAY`` loud frames are not ours: the
        batch then goes through the spectral detector, which tells crossed audio, Milliwatt,
        transcoded or damaged audio apart.

        ``tracked``: the probe's ``take_exact()`` for exactly these frames (its strays and the
        arrival times of the cycle's first frame, found as they arrived); unless frames were
        dropped meanwhile, the batch is not walked again.  ``n``: how many frames the batch
        has; ``pend``: the frames (None: only when ``tracked`` says all that is needed)."""
        payloads = self.payloads
        if not payloads or self.rx_codec != self.codec or not self.tx_marks:
            return False
        own = self._own_set
        if own is None:
            own = self._own_set = frozenset(payloads)
        first = payloads[0]
        if tracked is not None and not tracked[2]:
            stray, first_at = tracked[0], tracked[1]
        elif pend is None:
            return False
        elif self.tx.stamp:
            # stamped frames: compared without their stamp bits (own holds them so too)
            first = unstamp(first)
            keys = [unstamp(p) for _, _, p in pend]
            stray = [p for (_, _, p), u in zip(pend, keys, strict=True) if u not in own]
            first_at = [at for (_, at, _), u in zip(pend, keys, strict=True) if u == first]
        else:
            stray = [p for _, _, p in pend if p not in own]
            first_at = [at for _, at, p in pend if p == first]
        silent = 0
        if stray:
            if len(stray) > 4 * self.EXACT_STRAY + n // 20:
                return False
            det = self.detector
            assert det is not None
            if any(len(p) != sig.FRAME_SAMPLES for p in stray):
                return False
            silent = det.frame_silence(
                sig.decode(b"".join(stray), self.rx_codec).astype(np.float64))
            if len(stray) - silent > self.EXACT_STRAY:
                return False
        matched = n - len(stray)
        res = sig.Analysis(frames=n, silent_frames=silent)
        res.windows = res.own = matched // 2
        self.audio.add(res)
        self._batches += 1
        marks = self.tx_marks
        for at in first_at:
            sent = [m for m in marks if m <= at]
            if sent:
                self.rtts.append((at - sent[-1]) * 1000.0)
        return True

    def _echo_rtts(self, onsets: list[int], carry_end: int,
                   batch: list[tuple[int, float, bytes]], ts0: int) -> None:
        if not onsets:
            return
        mlen = sig.MARKER_SAMPLES
        # local clock = media time + median transit of this batch (robust to jitter)
        offset = statistics.median(at - t / 1000.0 for t, at, _ in batch)
        marks = self.tx_marks
        for j in onsets:
            if j + mlen <= carry_end:
                continue            # seen in the previous batch
            local = (ts0 + j / (sig.RATE / 1000)) / 1000.0 + offset
            sent = [m for m in marks if m <= local + 0.010]
            if sent:
                self.rtts.append(max(0.0, (local - sent[-1]) * 1000.0))

    # -- end -------------------------------------------------------------------------------

    def audio_flags(self) -> dict[str, bool]:
        """verified / crossed / one_way / silent, from what was analysed so far."""
        a = self.audio
        expect = self.mode != "none" and self.outcome == "ANSWERED" and self.tx_frames > 0
        one_way = expect and (self.rx_frames == 0 or (a.frames > 0 and a.silent_frames == a.frames))
        crossed = (a.crossed >= self.CROSSED_MIN and a.windows > 0
                   and a.crossed >= self.CROSSED_SHARE * a.windows)
        silent = (expect and not one_way and a.silent_frames >= 5
                  and a.silent_frames >= self.SILENT_SHARE * a.frames)
        hits = a.own if self.mode == "echo" else a.milliwatt
        verified = (expect and not one_way and not crossed and hits > 0
                    and hits >= self.VERIFY_SHARE * a.windows)
        return {"verified": verified, "crossed": crossed, "one_way": one_way, "silent": silent}

    def finish(self, t_s: float, outcome: str | None = None, cause: str | None = None,
               cause_code: int | None = None) -> CallRecord:
        """End the call (analysing what audio is left) and return its record.

        Without an explicit outcome an unanswered call is NO_ANSWER if it was accepted and
        TIMEOUT if nothing came back."""
        self.t_end = t_s
        if outcome is not None:
            self.on_setup_event(outcome, t_s, cause, cause_code)
        if self.outcome is None and (outcome or "").upper() != "IN_PROGRESS":
            self.outcome = "NO_ANSWER" if self.t_accept is not None else "TIMEOUT"
        self.analyze(final=True)
        return self.record()

    def record(self, now_s: float | None = None) -> CallRecord:
        """The call's figures now (``finish`` calls this at the end)."""
        end = self.t_end if self.t_end is not None else now_s

        def since_new(t: float | None) -> float | None:
            if t is None or self.t_new is None:
                return None
            return (t - self.t_new) * 1000.0

        delay, r, mos = self.quality()
        jitter_mean = self.jitter_mean
        flags = self.audio_flags()
        a = self.audio
        if self.mode == "none" or self.outcome != "ANSWERED":
            verdict = "n/a"
        else:
            verdict = next((k for k in ("one_way", "crossed", "silent", "verified") if flags[k]),
                           "unverified")
        crossed_from = max(a.others, key=a.others.__getitem__) if a.others else None
        rtts = self.rtts
        tx_span = (self.t_last_tx - self.t_first_tx) if self.t_first_tx is not None else 0.0
        rx_span = (self.t_last_rx - self.t_first_rx) if self.t_first_rx is not None else 0.0
        # frames are sent at the start of their 20 ms: n frames cover n x 20 ms
        tx_dur = tx_span + self.frame_ms / 1000.0 if self.tx_frames else 0.0
        rx_dur = rx_span + self.frame_ms / 1000.0 if self.rx_frames else 0.0
        ping = statistics.median(self.ping_rtts) if self.ping_rtts else None
        return CallRecord(
            index=self.index, mode=self.mode,
            signature=self.signature.sid if self.signature else None,
            f1_hz=self.signature.f1 if self.signature else None,
            f2_hz=self.signature.f2 if self.signature else None,
            outcome=self.outcome or "IN_PROGRESS", cause=self.cause, cause_code=self.cause_code,
            start_s=self.t_new,
            accept_ms=since_new(self.t_accept), ringing_ms=since_new(self.t_ringing),
            answer_ms=since_new(self.t_answer),
            duration_s=(end - self.t_answer) if self.t_answer is not None and end else None,
            tx_frames=self.tx_frames, tx_bytes=self.tx_bytes,
            rx_frames=self.rx_frames, rx_bytes=self.rx_bytes,
            expected=self.expected, lost=self.lost, loss_pct=self.loss_pct,
            loss_method=self.loss_method, loss_forward_pct=self.loss_forward_pct,
            loss_return_pct=self.loss_return_pct,
            rr_frames=self.rr_frames, early_frames=self.early_frames,
            duplicates=self.duplicates, out_of_order=self.out_of_order,
            jitter_ms=self.jitter if jitter_mean is not None else None,
            jitter_mean_ms=jitter_mean,
            jitter_max_ms=self.jitter_max if jitter_mean is not None else None,
            rtt_ms=statistics.median(rtts) if rtts else None,
            rtt_max_ms=max(rtts) if rtts else None, rtt_samples=len(rtts),
            ping_rtt_ms=ping, delay_ms=delay, r_factor=r, mos=mos,
            audio=verdict, audio_verified=flags["verified"], audio_crossed=flags["crossed"],
            audio_one_way=flags["one_way"], audio_silent=flags["silent"],
            audio_windows=a.windows, own_windows=a.own, crossed_windows=a.crossed,
            crossed_from=crossed_from, milliwatt_windows=a.milliwatt,
            silent_frames=a.silent_frames, audio_unanalysed=self.audio_dropped,
            tx_pps=self.tx_frames / tx_dur if tx_dur > 0 else None,
            rx_pps=self.rx_frames / rx_dur if rx_dur > 0 else None,
            tx_bytes_per_s=self.tx_bytes / tx_dur if tx_dur > 0 else None,
            rx_bytes_per_s=self.rx_bytes / rx_dur if rx_dur > 0 else None,
        )


# ---------------------------------------------------------------------------------------------
# Trunk / datagram counters (fed by the runner's socket layer)
# ---------------------------------------------------------------------------------------------

MINI_HEADER: Final = 4
IPV4_UDP_OVERHEAD: Final = 28


class TrunkCounters:
    """Datagrams and bytes each way, split into full, mini and trunk (meta) datagrams.

    ``saving()`` compares with what the same voice frames would have cost as one mini frame per
    datagram: packets and wire bytes (UDP payload + IPv4/UDP headers)."""

    __slots__ = ("bytes", "datagrams", "kinds", "subframes", "trunk_bytes", "voice_bytes")

    def __init__(self) -> None:
        self.datagrams = {"tx": 0, "rx": 0}
        self.bytes = {"tx": 0, "rx": 0}
        #: (direction, kind) -> datagrams; kind is "full", "mini" or "trunk"
        self.kinds: dict[tuple[str, str], int] = {}
        #: trunk datagrams only: their bytes, voice sub-frames and the sub-frames' payload bytes
        self.trunk_bytes = {"tx": 0, "rx": 0}
        self.subframes = {"tx": 0, "rx": 0}
        self.voice_bytes = {"tx": 0, "rx": 0}

    def add(self, direction: Literal["tx", "rx"], nbytes: int, kind: str = "mini",
            subframes: int = 0, voice_bytes: int = 0) -> None:
        """One datagram of ``nbytes`` UDP payload; for a trunk datagram also how many voice
        sub-frames it carried and their total payload bytes (without sub-frame headers)."""
        self.datagrams[direction] += 1
        self.bytes[direction] += nbytes
        key = (direction, kind)
        self.kinds[key] = self.kinds.get(key, 0) + 1
        if kind == "trunk":
            self.trunk_bytes[direction] += nbytes
            self.subframes[direction] += subframes
            self.voice_bytes[direction] += voice_bytes

    def add_census(self, direction: Literal["tx", "rx"],
                   census: tuple[int, int, int, int, int, int, int, int, int]) -> None:
        """Many datagrams at once: ``_core.probe.datagram_census`` of them (the same counts as
        ``add`` on each)."""
        full, full_b, mini, mini_b, trunk, trunk_b, entries, entry_b, _no_ts = census
        total = full + mini + trunk
        if not total:
            return
        self.datagrams[direction] += total
        self.bytes[direction] += full_b + mini_b + trunk_b
        kinds = self.kinds
        for kind, count in (("full", full), ("mini", mini), ("trunk", trunk)):
            if count:
                key = (direction, kind)
                kinds[key] = kinds.get(key, 0) + count
        if trunk:
            self.trunk_bytes[direction] += trunk_b
            self.subframes[direction] += entries
            self.voice_bytes[direction] += entry_b

    def copy(self) -> TrunkCounters:
        c = TrunkCounters()
        c.datagrams, c.bytes, c.kinds = dict(self.datagrams), dict(self.bytes), dict(self.kinds)
        c.trunk_bytes, c.subframes = dict(self.trunk_bytes), dict(self.subframes)
        c.voice_bytes = dict(self.voice_bytes)
        return c

    def saving(self, direction: Literal["tx", "rx"] = "tx",
               ip_overhead: int = IPV4_UDP_OVERHEAD) -> dict[str, float | None]:
        """Datagram and wire-byte saving (%) of trunking versus one mini frame per voice frame;
        None when no trunk datagram went that way."""
        trunk = self.kinds.get((direction, "trunk"), 0)
        if not trunk:
            return {"datagrams_pct": None, "bytes_pct": None}
        sub = self.subframes[direction]
        actual_dg = self.datagrams[direction]
        actual_b = self.bytes[direction] + ip_overhead * actual_dg
        mini_dg = actual_dg - trunk + sub
        mini_b = (self.bytes[direction] - self.trunk_bytes[direction] + self.voice_bytes[direction]
                  + MINI_HEADER * sub + ip_overhead * mini_dg)
        return {
            "datagrams_pct": 100.0 * (1.0 - actual_dg / mini_dg) if mini_dg else None,
            "bytes_pct": 100.0 * (1.0 - actual_b / mini_b) if mini_b else None,
        }
