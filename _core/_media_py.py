"""Pure-Python twin of the media half of the endpoint; see ``_media_c.pyi`` for the API.

The receive paths (trunk datagrams and voice mini frames, with RFC 3550 statistics), the send
paths (many calls' voice into their peers' trunk multiplexers or mini frames at once), and the
voice-timestamp rule they share with ``gateway.iax2.protocol.Endpoint.send_voice``.
"""

from __future__ import annotations

import struct
from typing import Any

from iaxgw._core._probe_py import RxProbe, TxProbe, jitter_next, tx_tick
from iaxgw._core._trunk_py import (
    ENTRY_LEN,
    ENTRY_TS_LEN,
    HEADER_LEN,
    Buffer,
    TrunkMux,
    parse_trunk,
)
from iaxgw._core.constants import TS_SKEW_MS, UNWRAP_MS, CallState
from iaxgw._core.errors import FrameError

_MINI_HDR = struct.Struct(">HH")


# ---------------------------------------------------------------------------------------------
# The trunk receive hot path of the protocol core (twin of the compiled section of the same
# name): per entry, find the call, unwrap its timestamp, account it and hand the payload to the
# media sink, or, for a call that echoes, straight back into the trunk multiplexer of its peer.

_TS_SKEW_MS = TS_SKEW_MS
_UNWRAP_MS = UNWRAP_MS
_ST_ACCEPTED = int(CallState.ACCEPTED)
_ST_UP = int(CallState.UP)
_BPMS = {0x40: 16, 0x8000: 32}


class RxStats:
    """Receive statistics of one call's voice stream (RFC 3550 jitter, loss from ts gaps)."""

    __slots__ = ("bytes", "dropped", "dup", "frames", "jitter", "jitter_max", "lost", "max_ts",
                 "ooo", "prev_transit", "ptime")
    FIELDS = __slots__

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0
        self.max_ts = -1
        self.jitter = 0.0
        self.jitter_max = 0.0
        self.prev_transit = 0.0
        self.lost = 0
        self.ooo = 0
        self.dup = 0
        self.dropped = 0
        self.ptime = 20

    def update(self, ts: int, nbytes: int, now: float) -> None:
        """Account one received voice frame with (unwrapped) ``ts`` arriving at ``now``."""
        self.frames += 1
        self.bytes += nbytes
        transit = now * 1000.0 - ts
        if self.frames > 1:
            j = jitter_next(self.jitter, transit, self.prev_transit)
            self.jitter = j
            if j > self.jitter_max:
                self.jitter_max = j
        self.prev_transit = transit
        top = self.max_ts
        if ts > top:
            if top >= 0:
                ptime = self.ptime
                if ptime > 0:
                    gap = ts - top - ptime
                    if gap >= ptime:
                        self.lost += gap // ptime
            self.max_ts = ts
        elif ts == top:
            self.dup += 1
        else:
            self.ooo += 1
            if self.lost:
                self.lost -= 1

    @property
    def loss_pct(self) -> int:
        total = self.frames + self.lost
        return (self.lost * 100) // total if total else 0





class CallMedia:
    """The media fields of a call record (base class of ``gateway.iax2.calls.Call``)."""

    __slots__ = ("addr", "callno", "codec", "echo", "format_rx", "last_full_voice_ts",
                 "last_voice_ts", "lastsent", "nextpred", "probe", "rx", "rx_early", "rx_last",
                 "start", "state", "svoiceformat", "trunk", "tx_frames")

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.callno = 0
        self.state: object = 0
        self.addr: object = None
        self.start = 0.0
        self.codec = 0
        self.format_rx = 0
        self.svoiceformat = 0
        self.rx_last = 0
        self.last_voice_ts = -1
        self.last_full_voice_ts = 0
        self.nextpred = 0
        self.lastsent = 0
        self.tx_frames = 0
        self.rx_early = 0
        self.trunk = False
        self.echo = False
        self.rx = RxStats()
        self.probe: RxProbe | None = None


def next_voice_ts(call: CallMedia, now: float) -> int:
    """The timestamp of ``call``'s next voice payload sent at ``now``: the predicted one while
    within the skew, else now snapped down to 20 ms (never repeating the last)."""
    ms = int((now - call.start) * 1000.0)
    pred = call.nextpred
    if call.last_voice_ts < 0 or not -_TS_SKEW_MS <= ms - pred <= _TS_SKEW_MS:
        ts = ms - ms % 20
        return call.last_voice_ts + 20 if ts <= call.last_voice_ts else ts
    return pred


def voice_sent(call: CallMedia, ts: int, length: int) -> None:
    """Account one voice payload of ``length`` bytes sent with ``ts``."""
    call.nextpred = ts + length // _BPMS.get(call.codec, 8)
    call.last_voice_ts = ts
    call.tx_frames += 1
    call.lastsent = ts


def receive_trunk(data: Buffer, calls: dict[int, CallMedia], epoch: float, now: float,
                  sink: object, echo_mux: TrunkMux | None = None
                  ) -> tuple[int, int, int, int, bool, list[CallMedia]]:
    """Account and deliver the entries of one trunk datagram (see ``_media_c.receive_trunk``)."""
    frame = parse_trunk(bytes(data))
    trunk_ts = frame.trunk_ts
    unknown = inactive = echoed = 0
    vnak: list[CallMedia] = []
    deliver = sink
    for callno, ts16, view in frame.entries:
        call = calls.get(callno)
        if not isinstance(call, CallMedia):
            unknown += 1
            continue
        st = call.state
        if not call.format_rx or st > _ST_UP:  # type: ignore[operator]
            inactive += 1
            if not call.format_rx:
                call.rx_early += 1
                vnak.append(call)
            continue
        last = call.rx_last
        if ts16 is not None:
            ts = (last & 0xFFFF0000) | ts16
            if ts < last - _UNWRAP_MS:
                ts += 0x10000
            elif ts > last + _UNWRAP_MS and ts >= 0x10000:
                ts -= 0x10000
        else:
            ts = trunk_ts + int((epoch - call.start) * 1000.0)
            if ts < 0:
                ts = 0
        if ts > last:
            call.rx_last = ts
        length = len(view)
        if call.rx is not None:
            call.rx.update(ts, length, now)
        mux = echo_mux
        if (mux is not None and call.echo and call.trunk and call.svoiceformat == call.codec
                and _ST_ACCEPTED <= st <= _ST_UP  # type: ignore[operator]
                and (mux.mtu == 0 or HEADER_LEN + (ENTRY_TS_LEN if mux.timestamps
                                                   else ENTRY_LEN) + length <= mux.mtu)):
            # gateway.iax2.protocol.Endpoint.send_voice (its trunk branch), for the echoed payload
            out_ts = next_voice_ts(call, now)
            if 0 <= out_ts <= 0xFFFFFFFF:
                voice_sent(call, out_ts, length)
                mux.add(call.callno, out_ts, view)
                echoed += 1
                continue
        if call.probe is not None:
            call.probe.on_rx(ts, now, view.tobytes(), ts16 is None)
            continue
        deliver(call.callno, ts, view.tobytes(), now)  # type: ignore[operator]
    return len(frame.entries), unknown, inactive, echoed, frame.truncated, vnak


def _mini_frame(callno: int, ts: int, payload: bytes) -> bytes:
    return _MINI_HDR.pack(callno & 0x7FFF, ts & 0xFFFF) + payload


def _mini_ok(call: CallMedia, ts: int) -> bool:
    return (call.svoiceformat == call.codec and call.last_voice_ts >= 0
            and (ts >> 16) - (call.last_voice_ts >> 16) < 2)


def _receive_mini(call: CallMedia, data: bytes, now: float, sink: Any,
                  out: list[Any] | None) -> bool:
    """The mini-frame branch of ``receive_datagram`` (see ``_media_c._receive_mini``)."""
    last = call.rx_last
    ts = (last & 0xFFFF0000) | (data[2] << 8) | data[3]
    if ts < last - _UNWRAP_MS:
        ts += 0x10000
    elif ts > last + _UNWRAP_MS and ts >= 0x10000:
        ts -= 0x10000
    if ts > last:
        call.rx_last = ts
    payload = data[4:]
    length = len(payload)
    if call.rx is not None:
        call.rx.update(ts, length, now)
    if call.echo and not call.trunk and out is not None \
            and _ST_ACCEPTED <= call.state <= _ST_UP:  # type: ignore[operator]
        ets = next_voice_ts(call, now)
        if 0 <= ets <= 0xFFFFFFFF and _mini_ok(call, ets):
            voice_sent(call, ets, length)
            out.append((_mini_frame(call.callno, ets, payload), call.addr))
            return True
    if call.probe is not None:
        call.probe.on_rx(ts, now, payload, False)
        return False
    sink(call.callno, ts, payload, now)
    return False


def receive_mini(call: CallMedia, data: bytes, now: float, sink: Any,
                 out: list[Any] | None = None) -> bool:
    """``receive_datagram``'s mini-frame branch for an active call (see ``_media_c``)."""
    data = bytes(data)
    if len(data) < 4:
        raise FrameError("mini frame shorter than 4 bytes")
    return _receive_mini(call, data, now, sink, out)


class TrunkRunTotals:
    """What ``receive_media_run`` took (see ``_media_c.TrunkRunTotals``)."""

    __slots__ = ("datagrams", "entries", "floor", "inactive", "index", "mini", "mini_out",
                 "truncated", "unknown")

    def __init__(self, index: int = 0, floor: float = 0.0) -> None:
        self.index = index
        self.floor = floor
        self.datagrams = 0
        self.entries = 0
        self.unknown = 0
        self.inactive = 0
        self.truncated = 0
        self.mini = 0
        self.mini_out = 0


def arrival_time(loop_now: float, age: float, floor: float) -> float:
    """When a datagram of a receive batch arrived (see ``_media_c.arrival_time``)."""
    now = loop_now - age
    return floor if now < floor else now


#: Receive epochs kept for trunk sources without calls, at most (see ``trunk_epoch``).
TRUNK_EPOCHS_MAX = 4096


def trunk_epoch(epochs: dict[Any, float], by_addr: dict[Any, Any], addr: Any, now: float,
                reset: bool) -> float:
    """The receive epoch of ``addr``'s trunk stream (see ``_media_c.trunk_epoch``)."""
    ep = epochs.get(addr)
    if ep is not None and not reset:
        return ep
    if ep is None and len(epochs) >= TRUNK_EPOCHS_MAX:
        if not by_addr.get(addr):
            return now
        for a in [a for a in epochs if not by_addr.get(a)]:
            del epochs[a]
    epochs[addr] = now
    return now


def receive_media_run(batch: list[tuple[bytes, Any, float]], loop_now: float,
                      by_addr: dict[Any, Any], epochs: dict[Any, float], sink: object,
                      trunks: dict[Any, Any], echo_used: bool, max_datagram: int,
                      totals: TrunkRunTotals, acc: list[Any], out: list[Any] | None) -> None:
    """The server's batch from ``totals.index``: trunk datagrams and mini frames of active
    calls (see ``_media_c.receive_media_run``)."""
    i, n = totals.index, len(batch)
    floor = totals.floor
    while i < n:
        data, addr, age = batch[i]
        if type(data) is not bytes:
            break
        size = len(data)
        if size < 4 or size > max_datagram:
            break
        if data[0] < 0x80 and (data[0] or data[1]):
            calls = by_addr.get(addr)
            if calls is None:
                break
            call = calls.get((data[0] << 8) | data[1])
            if not isinstance(call, CallMedia) or not call.format_rx \
                    or call.state > _ST_UP:  # type: ignore[operator]
                break
            now = arrival_time(loop_now, age, floor)
            floor = now
            totals.floor = now
            echoed = _receive_mini(call, data, now, sink, out)
            i += 1
            totals.index = i
            totals.mini += 1
            if echoed:
                totals.mini_out += 1
            continue
        if size < HEADER_LEN or data[0] != 0 or data[1] != 0 or data[2] != 1 or data[3] > 1:
            break
        calls = by_addr.get(addr)
        st = None
        if echo_used:
            st = trunks.get(addr)
            if st is None and calls:
                break
        now = arrival_time(loop_now, age, floor)
        floor = now
        totals.floor = now
        ep = trunk_epoch(epochs, by_addr, addr, now, int.from_bytes(data[4:8], "big") == 0)
        mux = st.mux if st is not None else None
        entries, unknown, inactive, echoed_n, truncated, vnak = receive_trunk(
            data, calls if calls is not None else {}, ep, now, sink, mux)
        i += 1
        totals.index = i
        totals.datagrams += 1
        totals.entries += entries
        totals.unknown += unknown
        totals.inactive += inactive
        if truncated:
            totals.truncated += 1
        if vnak or (echoed_n and st is not None and st.timer is None):
            acc.append((addr, now, vnak, echoed_n))


def send_trunk_voice(calls: dict[int, CallMedia], items: list[tuple[int, bytes]], now: float,
                     trunks: dict[object, object], out: list[Any] | None = None
                     ) -> tuple[list[tuple[int, bytes]], list[object]]:
    """The trunk (and with ``out``, the mini) branch of ``send_voice`` for many calls (see
    ``_media_c.send_trunk_voice``)."""
    rest: list[tuple[int, bytes]] = []
    streams: list[object] = []
    seen: set[int] = set()
    for item in items:
        callno, payload = item
        call = calls.get(callno)
        if not isinstance(call, CallMedia) or type(payload) is not bytes:
            rest.append(item)
            continue
        st = call.state
        if not call.trunk and out is not None \
                and _ST_ACCEPTED <= st <= _ST_UP:  # type: ignore[operator]
            ts = next_voice_ts(call, now)
            if 0 <= ts <= 0xFFFFFFFF and _mini_ok(call, ts):
                voice_sent(call, ts, len(payload))
                out.append((_mini_frame(call.callno, ts, payload), call.addr))
            else:
                rest.append(item)
            continue
        if not (call.trunk and _ST_ACCEPTED <= st <= _ST_UP  # type: ignore[operator]
                and call.svoiceformat == call.codec and call.last_voice_ts >= 0):
            rest.append(item)
            continue
        stream = trunks.get(call.addr)
        mux = getattr(stream, "mux", None)
        if not isinstance(mux, TrunkMux):
            rest.append(item)
            continue
        n = len(payload)
        if mux.mtu and HEADER_LEN + (ENTRY_TS_LEN if mux.timestamps else ENTRY_LEN) + n > mux.mtu:
            rest.append(item)
            continue
        ts = next_voice_ts(call, now)
        if not 0 <= ts <= 0xFFFFFFFF:
            rest.append(item)
            continue
        mux.add(call.callno, ts, payload)
        voice_sent(call, ts, n)
        if id(stream) not in seen:
            seen.add(id(stream))
            streams.append(stream)
    return rest, streams


def tx_tick_send(probes: list[TxProbe], probe_now: float, calls: dict[int, CallMedia],
                 now: float, trunks: dict[object, object], out: list[Any] | None = None
                 ) -> tuple[list[tuple[int, bytes]], list[object]]:
    """One media tick sent (see ``_media_c.tx_tick_send``): what ``tx_tick`` then
    ``send_trunk_voice`` do."""
    return send_trunk_voice(calls, tx_tick(probes, probe_now), now, trunks, out)
