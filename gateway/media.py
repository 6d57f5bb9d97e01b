"""Voice media of the endpoint: send (full / mini / trunk), trunk streams, trunk and full-voice
receive (docs/protocol.md §2, §3 and §8).

The mini-frame receive path is inlined in ``Endpoint.receive_datagram`` (the hot path of
un-trunked calls); trunk datagrams arrive here through ``_receive_meta``.
"""

from __future__ import annotations

import struct
from typing import Any

from iaxgw._core.constants import FRAME_IAX, FRAME_VOICE, IE, IAXSubclass
from iaxgw._core.errors import FrameError
from iaxgw._core.frames import uncompress_subclass
from iaxgw._core.ies import build_ies
from iaxgw._core.trunk import (
    RxProbe,
    TrunkMux,
    TrunkRunTotals,
    TxProbe,
    receive_media_run,
    receive_trunk,
    send_trunk_voice,
    trunk_epoch,
    tx_tick_send,
)
from iaxgw.gateway.address import Addr
from iaxgw.gateway.calls import Call, CallState
from iaxgw.gateway.crypto import KEY_ROTATE_MIN_S, KEY_ROTATE_SPREAD_S, rotation_key
from iaxgw.gateway.events import VoiceReceived
from iaxgw.gateway.reliability import (
    TS_SKEW_MS,
    EndpointCore,
)
from iaxgw.gateway.timers import Timer

__all__ = ["MediaMixin", "TrunkStream"]

_MINI = struct.Struct(">HH")
_ACCEPTED = int(CallState.ACCEPTED)
_UP = int(CallState.UP)

_NO_CALLS: dict[int, Call] = {}

#: Voice formats are single bits of a signed 64-bit mask; a subclass that decodes to 0, -1
#: (0xFF) or bit 63 names no audio format.
_FORMAT_LIMIT = 1 << 63

#: At most one VNAK per call this often for media that arrives before its first full voice frame.
NO_VOICE_VNAK_S = 0.1

#: Bytes per millisecond of the codecs we can pace (for predicted voice timestamps).
_BYTES_PER_MS = {4: 8, 8: 8, 0x40: 16, 0x8000: 32, 0x1000: 8}


#: How long a trunk stream's flush timer keeps its 20 ms grid after the last datagram (s).
TRUNK_GRID_KEEP = 0.2
#: A trunk stream's first flush comes this share of ``trunkfreq`` after the voice that started
#: it, and its grid keeps that phase.  Voice on a 20 ms grid of its own (our media ticker, or a
#: peer's trunk that we echo) then meets flushes half a period away from it: each frame waits
#: the same ~10 ms every time.  A whole period would put both grids on the same instant, where
#: scheduling noise sends a frame out in this flush or the next (20 ms of jitter).
TRUNK_START_PHASE = 0.5


class TrunkStream:
    """One outgoing trunk stream ("tpeer") per destination IP:port (docs/protocol.md §3.2)."""

    __slots__ = ("addr", "epoch", "last_send", "last_ts", "mux", "next_at", "timer")

    def __init__(self, addr: Addr, mux: TrunkMux) -> None:
        self.addr = addr
        self.mux = mux
        self.epoch = -1.0
        self.last_ts = -1
        self.last_send = -1e18
        self.next_at = 0.0
        self.timer: Timer | None = None


class MediaMixin(EndpointCore):
    """Voice send and trunk / full-voice receive."""

    # ------------------------------------------------------------------ media: send

    def send_voice(self, callno: int, payload: bytes, now: float, ts: int | None = None) -> bool:
        """Send one voice payload: full frame first (and on codec change), then mini or trunk."""
        call = self._calls.get(callno)
        if call is None or not _ACCEPTED <= call.state <= _UP:
            self._stats["drop_voice_no_call"] += 1
            return False
        if ts is None:
            ms = int((now - call.start) * 1000.0)
            pred = call.nextpred
            if call.last_voice_ts < 0 or not -TS_SKEW_MS <= ms - pred <= TS_SKEW_MS:
                ts = ms - ms % 20
                if ts <= call.last_voice_ts:
                    ts = call.last_voice_ts + 20
            else:
                ts = pred
        fmt = call.codec
        call.nextpred = ts + len(payload) // _BYTES_PER_MS.get(fmt, 8)
        prev = call.last_voice_ts
        call.last_voice_ts = ts
        call.tx_frames += 1
        if call.svoiceformat != fmt or (not call.trunk and (ts >> 16) - (prev >> 16) >= 2):
            if self._crypt:
                self._rotate_at_first_voice(call, now)
            call.svoiceformat = fmt
            call.last_full_voice_ts = ts
            call.lastsent = ts
            self._send(call, FRAME_VOICE, fmt, payload, now, ts=ts)
            return True
        call.lastsent = ts
        if call.trunk:
            st = self._trunks.get(call.addr)
            if st is None:
                st = self._trunk_stream(call.addr)
            st.mux.add(callno, ts, payload)
            if st.timer is None:
                st.next_at = now + self._trunkfreq * TRUNK_START_PHASE
                st.timer = self._schedule(st.next_at, self._trunk_flush, st)
        else:
            self._n_mini_out += 1
            self._out.append((_MINI.pack(callno, ts & 0xFFFF) + payload, call.addr))
        return True

    def _rotate_at_first_voice(self, call: Call, now: float) -> None:
        """An encrypted call with key rotation sends its first RTKEY just before its first
        voice frame (as Asterisk's iax2_send), then one every 120-300 s."""
        cc = self._crypt.get(call.callno)
        if cc is not None and cc.rotate and not cc.rotated and cc.tx is not None:
            cc.rotated = True
            self._rotate_key(now, call)

    def _rotate_key(self, now: float, call: Call) -> None:
        """RTKEY (CHALLENGE = the new 16-byte key), sent with the old key; our frames after it
        use the new one (``CallCrypto.rotate_tx``)."""
        cc = self._crypt.get(call.callno)
        if cc is None or self._calls.get(call.callno) is not call or call.state > CallState.UP:
            return
        key = rotation_key(self._rng)
        self._send(call, FRAME_IAX, IAXSubclass.RTKEY, build_ies([(IE.CHALLENGE, key)]), now)
        cc.rotate_tx(key, self._flush_gen, len(self._out))
        self._stats["key_rotations"] += 1
        when = now + KEY_ROTATE_MIN_S + self._rng.random() * KEY_ROTATE_SPREAD_S
        call.timers.append(self._schedule(when, self._rotate_key, call))

    def send_voice_many(self, items: list[tuple[int, bytes]], now: float
                        ) -> list[tuple[int, Exception]]:
        """``send_voice(callno, payload, now)`` for each item, the trunked ones and the mini
        frames in one compiled pass (``_core.trunk.send_trunk_voice``: same timestamps, same
        trunk entries and mini frames; full voice frames are left to ``send_voice``).  Returns
        the calls whose send raised, with the exception (the others were sent or dropped as
        ``send_voice`` would)."""
        out = self._out
        before = len(out)
        rest, streams = send_trunk_voice(self._calls, items, now, self._trunks, out)
        return self._batch_sent(rest, streams, len(out) - before, now)

    def send_probes(self, probes: list[TxProbe], probe_now: float, now: float
                    ) -> list[tuple[int, Exception]]:
        """``send_voice_many(tx_tick(probes, probe_now), now)`` in one compiled pass
        (``_core.trunk.tx_tick_send``): each load-test probe's next frame is counted and written
        straight into its trunk entry or mini frame.  Returns the calls whose send raised."""
        out = self._out
        before = len(out)
        rest, streams = tx_tick_send(probes, probe_now, self._calls, now, self._trunks, out)
        return self._batch_sent(rest, streams, len(out) - before, now)

    def _batch_sent(self, rest: list[tuple[int, bytes]], streams: list[Any], minis: int,
                    now: float) -> list[tuple[int, Exception]]:
        """After a batched send: count its mini frames, start the flush timer of each stream
        that got entries, and send the items it left one by one (``send_voice``)."""
        self._n_mini_out += minis
        for st in streams:
            if st.timer is None:
                st.next_at = now + self._trunkfreq * TRUNK_START_PHASE
                st.timer = self._schedule(st.next_at, self._trunk_flush, st)
        failed: list[tuple[int, Exception]] = []
        for callno, payload in rest:
            try:
                self.send_voice(callno, payload, now)
            except Exception as exc:       # reported to the caller, per call
                failed.append((callno, exc))
        return failed

    def flush_trunks(self, now: float) -> int:
        """Flush now every outgoing trunk stream that has entries waiting, instead of at its
        timer; returns how many trunk datagrams that queued.

        For a driver that sends a whole period's voice of all its calls at one instant (the
        load tester's media tick): the frames leave with the tick instead of half a period
        later, and the flush's work (building and sending every datagram) runs next to the
        tick's, not in the middle of the period where it met the peer's traffic being read.
        The stream's timer stays as a safety net for voice sent outside such ticks: it moves
        to half a period after this flush (where it finds nothing and only keeps the grid)."""
        out = self._out
        before = len(out)
        half = self._trunkfreq * TRUNK_START_PHASE
        for st in self._trunks.values():
            if not st.mux.pending:
                continue
            self._cancel(st.timer)
            self._trunk_flush(now, st)
            self._cancel(st.timer)
            st.next_at = now + half
            st.timer = self._schedule(st.next_at, self._trunk_flush, st)
        return len(out) - before

    # ------------------------------------------------------------------ media: receive

    def _vnak_no_voice(self, call: Call, now: float) -> None:
        """Mini/trunk media of an accepted call before its first full voice frame: that frame
        was lost (or is late), so VNAK at once as Asterisk does (docs/protocol.md §3.3, P4) -- the
        sender resends it now instead of after its 2 s / 10 s retransmission timer, which left
        a call without audio for 2-12 s (a whole short call when lost twice).  Rate-limited."""
        if not _ACCEPTED <= call.state <= _UP or now - call.vnak_at < NO_VOICE_VNAK_S:
            return
        call.vnak_at = now
        self._stats["vnak_no_full_voice"] += 1
        self._send_unreliable(call, IAXSubclass.VNAK, call.lastsent, call.iseqno)

    def _on_full_voice(self, call: Call, f: Any, now: float) -> None:
        if not CallState.ACCEPTED <= call.state <= CallState.UP:
            self._stats["drop_voice_before_accept"] += 1
            return
        try:
            fmt = uncompress_subclass(f.csub)
        except FrameError:
            return
        if not 0 < fmt < _FORMAT_LIMIT:
            # 0xFF (-1) or the C bit with shift 63: no audio format.  Dropped and counted,
            # the call goes on (a hostile or broken peer must not end it).
            self._warn("drop_voice_bad_format", f"call {call.callno}: voice frame with "
                       f"subclass byte {f.csub:#x} names no audio format, dropped", now, call.addr)
            return
        call.format_rx = fmt
        call.rx_full_frames += 1
        payload = f.payload
        if fmt in (4, 8) and payload:
            call.rx.ptime = max(len(payload) >> 3, 1)
        call.rx.update(f.ts, len(payload), now)
        sink = self._sink
        if sink is not None:
            sink(call.callno, f.ts, payload, now)
        else:
            self._events.append(VoiceReceived(call.callno, f.ts, payload, fmt))


    # ------------------------------------------------------------------ media: trunk

    def _trunk_stream(self, addr: Addr) -> TrunkStream:
        g = self.config.general
        st = TrunkStream(addr, TrunkMux(g.trunkmtu, g.trunktimestamps))
        self._trunks[addr] = st
        return st

    def _trunk_flush(self, now: float, st: TrunkStream) -> None:
        """docs/protocol.md §3.2: trunk ts = ms since the stream epoch, snapped to last +
        trunkfreq within 160 ms, never repeated, 0 only when the stream (re)starts after > 5 s
        idle."""
        st.timer = None
        mux = st.mux
        if not mux.pending:
            if now - st.last_send < TRUNK_GRID_KEEP:
                # nothing this tick, but the stream is live: keep its grid, so entries that
                # come just after a flush wait for the next tick of the same grid (a restart
                # would move the grid to their arrival and every echo would wait longer)
                st.next_at += self._trunkfreq
                if st.next_at <= now:
                    st.next_at = now + self._trunkfreq
                st.timer = self._schedule(st.next_at, self._trunk_flush, st)
            return
        freq_ms = int(self._trunkfreq * 1000)
        if st.epoch < 0 or now - st.last_send > 5.0:
            st.epoch = now
            st.last_ts = -1
        ms = int((now - st.epoch) * 1000.0)
        last = st.last_ts
        if last >= 0:
            pred = last + freq_ms
            if -TS_SKEW_MS < ms - pred < TS_SKEW_MS:
                ms = pred
            if ms <= last:
                ms = last + 1
        st.last_ts = ms
        st.last_send = now
        addr = st.addr
        sent = mux.flush(ms & 0xFFFFFFFF)
        self._out += [(dg, addr) for dg in sent]
        self._count_trunk_sends(sent)
        st.next_at += self._trunkfreq
        if st.next_at <= now:
            st.next_at = now + self._trunkfreq
        st.timer = self._schedule(st.next_at, self._trunk_flush, st)

    def _count_trunk_sends(self, sent: list[bytes]) -> None:
        """One flush of a trunk stream: ``iax2 show stats``'s transmits (Asterisk counts one
        timed transmit per trunk peer and timer tick, empty ones too, and an untimed one each
        time the MTU filled before the tick; ours counts the flushes that sent, and the
        datagrams past the first of a flush the MTU split) and the largest trunk datagram sent
        (bytes)."""
        stats = self._stats
        n = len(sent)
        stats["trunk_datagrams_out"] += n
        stats["trunk_timed"] += 1
        if n > 1:
            stats["trunk_untimed"] += n - 1
        biggest = max(map(len, sent), default=0)
        if biggest > stats["trunk_max_datagram_bytes"]:
            stats["trunk_max_datagram_bytes"] = biggest

    def _receive_meta(self, data: bytes, addr: Addr, now: float) -> None:
        """A trunk datagram: per entry, the call by (source, call number), its ts, the receive
        stats and the payload to the sink, or back into the trunk for an echoing call.  The
        per-entry loop is ``_core.trunk.receive_trunk`` (compiled): it runs ~10,000 times a
        second at 200 trunked calls."""
        calls = self._by_addr.get(addr)
        trunk_ts = int.from_bytes(data[4:8], "big") if len(data) >= 8 else -1
        epoch = trunk_epoch(self._trunk_rx_epoch, self._by_addr, addr, now, trunk_ts == 0)
        st = self._trunks.get(addr) if self._echo_used else None
        if st is None and self._echo_used and calls:
            st = self._trunk_stream(addr)
        try:
            result = receive_trunk(
                data, calls if calls is not None else _NO_CALLS, epoch, now,
                self._sink or self._voice_event, st.mux if st is not None else None)
        except FrameError as exc:
            self._warn("drop_malformed_meta", f"bad meta frame from {addr}: {exc}", now, addr)
            return
        self._trunk_received(result, st, now)

    def _trunk_received(self, result: tuple[int, int, int, int, bool, list[Call]],
                        st: TrunkStream | None, now: float) -> None:
        """The bookkeeping after ``receive_trunk`` took one datagram."""
        n, unknown, inactive, echoed, truncated, vnak = result
        self._n_trunk_datagrams_in += 1
        self._n_trunk_entries_in += n
        if truncated:
            self._stats["trunk_truncated"] += 1
        if unknown:
            self._stats["drop_trunk_unknown_call"] += unknown
        if inactive:
            self._stats["drop_trunk_call_not_active"] += inactive
        self._trunk_attention(vnak, echoed, st, now)

    def _trunk_attention(self, vnak: list[Call], echoed: int, st: TrunkStream | None,
                         now: float) -> None:
        """After a trunk datagram: VNAK the calls that had media before their first full voice
        frame; echoed entries on a stream without a flush timer start its grid."""
        for call in vnak:
            self._vnak_no_voice(call, now)
        if echoed and st is not None and st.timer is None:
            st.next_at = now + self._trunkfreq * TRUNK_START_PHASE
            st.timer = self._schedule(st.next_at, self._trunk_flush, st)

    def _receive_media_run(self, batch: list[tuple[bytes, Addr, float]], start: int,
                           loop_now: float, floor: float, max_datagram: int
                           ) -> tuple[int, float]:
        """``_receive_meta`` and ``receive_datagram``'s mini-frame branch for the consecutive
        media datagrams of a received batch from ``start`` (trunk datagrams, mini frames of
        active calls), in one compiled pass (``_core.trunk.receive_media_run``: the arrival
        times, epochs, echo streams and echoed mini frames as here, the counts summed in
        ``TrunkRunTotals``).  Returns the index of the first datagram not taken (the caller
        hands it to ``receive_datagram``) and the last arrival time."""
        acc: list[tuple[Addr, float, list[Call], int]] = []
        trunks = self._trunks
        tot = TrunkRunTotals(start, floor)
        try:
            receive_media_run(batch, loop_now, self._by_addr, self._trunk_rx_epoch,
                              self._sink or self._voice_event, trunks, self._echo_used,
                              max_datagram, tot, acc, self._out)
        except Exception as exc:    # not expected (headers are checked first): skip that one
            tot.index += 1
            self._warn("drop_malformed_meta", f"media datagram dropped: {exc!r}", tot.floor)
        self._n_mini_in += tot.mini
        self._n_mini_out += tot.mini_out
        if tot.datagrams:
            self._n_trunk_datagrams_in += tot.datagrams
            self._n_trunk_entries_in += tot.entries
            if tot.truncated:
                self._stats["trunk_truncated"] += tot.truncated
            if tot.unknown:
                self._stats["drop_trunk_unknown_call"] += tot.unknown
            if tot.inactive:
                self._stats["drop_trunk_call_not_active"] += tot.inactive
            echo = self._echo_used
            for addr, now, vnak, echoed in acc:
                self._trunk_attention(vnak, echoed, trunks.get(addr) if echo else None, now)
        return tot.index, tot.floor

    def _voice_event(self, callno: int, ts: int, payload: bytes, now: float) -> None:
        """Without a media sink: voice as ``VoiceReceived`` events."""
        call = self._calls.get(callno)
        self._events.append(VoiceReceived(callno, ts, payload, call.format_rx if call else 0))

    def set_rx_probe(self, callno: int, probe: RxProbe | None) -> bool:
        """Count the trunk entries of ``callno`` in ``probe`` (a load tester's ``RxProbe``:
        jitter, loss window, payloads kept for analysis) instead of handing them to the media
        sink: one compiled pass per datagram, no Python call per entry.  The probe gets each
        entry's arrival time (``now``), so it should be set only when that is the exact arrival
        time.  Other voice frames still reach the sink.  False if there is no such call."""
        call = self._calls.get(callno)
        if call is None:
            return False
        call.probe = probe
        return True

    def set_echo(self, callno: int, on: bool = True) -> bool:
        """Echo the voice of ``callno`` back as it arrives (Echo()), inside the endpoint: its
        trunk entries are put straight back into the trunk towards the peer (no media sink
        call); other voice frames still reach the sink.  False if there is no such call."""
        call = self._calls.get(callno)
        if call is None:
            return False
        call.echo = bool(on)
        if on:
            self._echo_used = True
        return True
