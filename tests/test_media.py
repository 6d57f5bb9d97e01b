"""The media half of the endpoint (``_core.media``), compiled and twin, with the probes it feeds.

The trunk receive hot path (``receive_trunk``): the compiled core and the twin agree on every
call-record field, every statistic, every delivered or echoed payload, for random sequences of
trunk datagrams (both variants, wraps, gaps, unknown and inactive calls, echo); so do the batched
sends, the voice-timestamp rule and the receive batch's arrival times."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iaxgw._core._select import flavours
from iaxgw._core.errors import FrameError

TRUNK = flavours("trunk", "probe", "media")
pytestmark = pytest.mark.skipif(len(TRUNK) < 2, reason="compiled core not built")
TC, TP = (TRUNK + TRUNK)[:2]

FIELDS = ("callno", "state", "start", "codec", "format_rx", "svoiceformat", "rx_last",
          "last_voice_ts", "last_full_voice_ts", "nextpred", "lastsent", "tx_frames", "rx_early",
          "trunk", "echo")


PROBE_FIELDS = ("frames", "bytes", "duplicates", "out_of_order", "max_ts", "min_ts", "last",
                "frame_ms", "dropped", "jitter", "jitter_max", "jitter_sum", "transit", "t_first",
                "t_last", "mask", "pending", "limit")


def make_calls(mod: Any, specs: list[tuple[Any, ...]]) -> dict[int, Any]:
    """``(callno, state, format_rx, trunk, echo, start_ms[, probe])`` per call; ``probe``: the
    call's entries go to a load tester's RxProbe (small pending limit: drops happen)."""
    calls = {}
    for callno, state, fmt, trunk, echo, start_ms, *rest in specs:
        c = mod.CallMedia()
        c.callno = callno
        c.state = state
        c.start = start_ms / 1000.0
        c.codec = 4
        c.format_rx = fmt
        c.svoiceformat = 4 if echo else 0
        c.trunk = trunk
        c.echo = echo
        c.last_voice_ts = 40 if echo else -1
        c.nextpred = 60 if echo else 0
        if rest and rest[0]:
            c.probe = mod.RxProbe(20, True, 7)
        calls[callno] = c
    return calls


def snapshot(calls: dict[int, Any]) -> list[Any]:
    out = []
    for c in calls.values():
        out.append(tuple(getattr(c, f) for f in FIELDS))
        out.append(tuple(getattr(c.rx, f) for f in c.rx.FIELDS))
        if c.probe is not None:
            out.append(tuple(getattr(c.probe, f) for f in PROBE_FIELDS))
    return out


def run(mod: Any, specs: list[Any], datagrams: list[tuple[bytes, float]], mtu: int,
        timestamps: bool) -> tuple[Any, ...]:
    calls = make_calls(mod, specs)
    mux = mod.TrunkMux(mtu, timestamps)
    sunk: list[tuple[int, int, bytes, float]] = []
    results = []
    for data, now in datagrams:
        try:
            r = mod.receive_trunk(data, calls, 0.5, now,
                                  lambda c, ts, p, t: sunk.append((c, ts, bytes(p), t)), mux)
        except FrameError as exc:
            results.append(("error", str(exc)))
            continue
        n, unknown, inactive, echoed, truncated, vnak = r
        results.append((n, unknown, inactive, echoed, truncated, [v.callno for v in vnak]))
    return results, sunk, snapshot(calls), mux.flush(12345)


spec = st.tuples(st.integers(1, 12), st.sampled_from([1, 3, 4, 5]), st.sampled_from([0, 4]),
                 st.booleans(), st.booleans(), st.integers(0, 2000), st.booleans())
entry = st.tuples(st.integers(0, 14), st.integers(0, 0xFFFF), st.binary(max_size=200))


@settings(max_examples=250, deadline=None)
@given(st.lists(spec, max_size=6, unique_by=lambda s: s[0]),
       st.lists(st.tuples(st.lists(entry, max_size=8), st.integers(0, 0xFFFFFFFF),
                          st.floats(0.0, 5000.0), st.integers(0, 40)), max_size=8),
       st.booleans(), st.sampled_from([0, 240, 1240]))
def test_compiled_and_twin_agree(specs: list[Any], dgs: list[Any], timestamps: bool,
                                 mtu: int) -> None:
    datagrams = []
    for entries, trunk_ts, now, cut in dgs:
        body = TP.pack_trunk([(c or 1, ts, p) for c, ts, p in entries], trunk_ts, timestamps, 0)
        data = body[0] if body else bytes([0, 0, 1, int(timestamps)]) + trunk_ts.to_bytes(4, "big")
        if cut:
            data = data[: max(0, len(data) - cut)]      # truncated entries, short headers
        datagrams.append((data, now))
    assert run(TC, specs, datagrams, mtu, timestamps) == run(TP, specs, datagrams, mtu,
                                                              timestamps)


@pytest.mark.parametrize("mod", TRUNK, ids=lambda m: m.__name__.rsplit("_", 1)[-1])
def test_echo_goes_back_into_the_trunk(mod: Any) -> None:
    """An echoing trunked call's entries are re-stamped on our clock and multiplexed back; a call
    that has not sent its first full voice frame yet goes to the sink instead."""
    calls = make_calls(mod, [(7, 4, 4, True, True, 0), (9, 4, 4, True, False, 0)])
    calls[7].last_voice_ts = -1                  # nothing sent yet: the next ts snaps to 20 ms
    mux = mod.TrunkMux(1240, False)
    sunk: list[Any] = []
    data = mod.pack_trunk([(7, 0, b"\x11" * 160), (9, 0, b"\x22" * 160)], 100)[0]
    n, unknown, inactive, echoed, truncated, vnak = mod.receive_trunk(
        data, calls, 0.0, 0.105, lambda *a: sunk.append(a), mux)
    assert (n, unknown, inactive, echoed, truncated, vnak) == (2, 0, 0, 1, False, [])
    assert [(c, ts, p) for c, ts, p, _ in sunk] == [(9, 100, b"\x22" * 160)]
    assert calls[7].last_voice_ts == 100 and calls[7].nextpred == 120
    assert calls[7].tx_frames == 1 and calls[7].rx.frames == 1
    frame = mod.parse_trunk(mux.flush(5)[0])
    assert [(c, bytes(p)) for c, _, p in frame.entries] == [(7, b"\x11" * 160)]
    calls[7].svoiceformat = 0                    # codec change pending: the sink sends it full
    mod.receive_trunk(data, calls, 0.0, 0.125, lambda *a: sunk.append(a), mux)
    assert [a[0] for a in sunk[1:]] == [7, 9] and not mux.pending


@pytest.mark.parametrize("mod", TRUNK, ids=lambda m: m.__name__.rsplit("_", 1)[-1])
def test_unknown_inactive_and_vnak(mod: Any) -> None:
    calls = make_calls(mod, [(3, 4, 0, True, False, 0), (4, 5, 4, True, False, 0)])
    data = mod.pack_trunk([(3, 0, b"a"), (4, 0, b"b"), (5, 0, b"c")], 0)[0]
    n, unknown, inactive, echoed, truncated, vnak = mod.receive_trunk(
        data, calls, 0.0, 1.0, lambda *a: pytest.fail("nothing is deliverable"), None)
    assert (n, unknown, inactive, echoed, truncated) == (3, 1, 2, 0, False)
    assert [c.callno for c in vnak] == [3]
    # the entry before call 3's first full voice frame is counted on the call; call 4 has hung up
    assert (calls[3].rx_early, calls[4].rx_early) == (1, 0)
    with pytest.raises(FrameError):
        mod.receive_trunk(b"\x00\x00\x02\x00\x00\x00\x00\x00", calls, 0.0, 1.0, print, None)


class _Stream:
    def __init__(self, mux: Any) -> None:
        self.mux = mux


@settings(max_examples=200, deadline=None)
@given(st.lists(spec, max_size=6, unique_by=lambda s: s[0]),
       st.lists(st.lists(st.tuples(st.integers(0, 14), st.binary(max_size=300)), max_size=8),
                max_size=6),
       st.floats(0.0, 100.0), st.sampled_from([0, 240, 1240]), st.booleans())
def test_send_trunk_voice_compiled_and_twin_agree(specs: list[Any], ticks: list[Any],
                                                  t0: float, mtu: int, ts_on: bool) -> None:
    def run_send(mod: Any) -> tuple[Any, ...]:
        calls = make_calls(mod, specs)
        for c in calls.values():
            c.addr = ("127.0.0.1", 4569) if c.callno % 3 else ("127.0.0.2", 4569)
        mux = mod.TrunkMux(mtu, ts_on)
        trunks = {("127.0.0.1", 4569): _Stream(mux)}
        out = []
        for k, items in enumerate(ticks):
            minis: list[Any] = []           # the mini branch (calls not trunked)
            rest, streams = mod.send_trunk_voice(calls, items, t0 + 0.02 * k, trunks, minis)
            out.append((rest, len(streams), mux.flush(k), minis))
        return out, snapshot(calls)

    assert run_send(TC) == run_send(TP)


probe_spec = st.tuples(st.integers(0, 16), st.sampled_from([0, 1, 3, 50]),
                       st.sampled_from([8, 15, 16, 160]), st.booleans(), st.integers(0, 60),
                       st.sampled_from([10, 20, 30]))


def make_probes(mod: Any, specs: list[tuple[Any, ...]]) -> list[Any]:
    """``(callno, cycle length, payload size, stamp, offset, frame_ms)`` per probe; each payload
    of a cycle distinct, so a frame's cycle position shows in what is sent."""
    from collections import deque

    probes = []
    for callno, length, size, stamp, offset, frame_ms in specs:
        cycle = [bytes((callno * 31 + i * 7 + j) & 0xFF for j in range(size))
                 for i in range(length)]
        p = mod.TxProbe(cycle, frame_ms, deque(maxlen=8), offset=offset)
        p.callno = callno
        p.stamp = stamp
        probes.append(p)
    return probes


def run_tick_send(mod: Any, specs: list[Any], probe_specs: list[Any], ticks: int, t0: float,
                  mtu: int, ts_on: bool, fused: bool) -> tuple[Any, ...]:
    """``ticks`` media ticks over the probes into the calls' trunk (calls with callno % 3 == 0
    have another peer, without a stream) and mini frames: everything that was sent, left for
    send_voice or counted."""
    calls = make_calls(mod, specs)
    for c in calls.values():
        c.addr = ("127.0.0.1", 4569) if c.callno % 3 else ("127.0.0.2", 4569)
    mux = mod.TrunkMux(mtu, ts_on)
    trunks = {("127.0.0.1", 4569): _Stream(mux)}
    probes = make_probes(mod, probe_specs)
    out = []
    for k in range(ticks):
        minis: list[Any] = []
        now = t0 + 0.02 * k
        if fused:
            rest, streams = mod.tx_tick_send(probes, now + 1.0, calls, now, trunks, minis)
        else:
            rest, streams = mod.send_trunk_voice(calls, mod.tx_tick(probes, now + 1.0), now,
                                                 trunks, minis)
        out.append((rest, [s is trunks[("127.0.0.1", 4569)] for s in streams], mux.flush(k),
                    minis))
    state = [(p.k, p.frames, p.bytes, p.t_first, p.t_last, p.sent, list(p.marks))
             for p in probes]
    return out, state, snapshot(calls)


@settings(max_examples=200, deadline=None)
@given(st.lists(spec, max_size=6, unique_by=lambda s: s[0]), st.lists(probe_spec, max_size=8),
       st.integers(0, 6), st.floats(0.0, 100.0), st.sampled_from([0, 240, 1240]), st.booleans())
def test_tx_tick_send_is_tx_tick_then_send_trunk_voice(specs: list[Any], probe_specs: list[Any],
                                                       ticks: int, t0: float, mtu: int,
                                                       ts_on: bool) -> None:
    """The fused tick (compiled, writing each stamp into the trunk entry or mini frame) sends,
    leaves and counts exactly what ``tx_tick`` then ``send_trunk_voice`` do, in both
    implementations: stamped and unstamped cycles, payloads too short for a stamp, an empty
    cycle, unknown calls, calls without a stream, mini frames, full trunks."""
    runs = [run_tick_send(mod, specs, probe_specs, ticks, t0, mtu, ts_on, fused)
            for mod in (TC, TP) for fused in (True, False)]
    assert all(r == runs[0] for r in runs[1:])


@pytest.mark.parametrize("mod", TRUNK, ids=lambda m: m.__name__.rsplit("_", 1)[-1])
def test_tx_tick_send_stamps_what_it_sends(mod: Any) -> None:
    """A stamped probe's trunk entry carries its frame counter (read back with read_stamp) on its
    cycle's payload; a call left to send_voice gets the stamped payload in ``rest``."""
    calls = make_calls(mod, [(5, 4, 4, True, True, 0), (6, 4, 4, True, False, 0)])
    for c in calls.values():
        c.addr = ("127.0.0.1", 4569)
    mux = mod.TrunkMux(1240, False)
    trunks = {("127.0.0.1", 4569): _Stream(mux)}
    probes = make_probes(mod, [(5, 50, 160, True, 3, 20), (6, 50, 160, True, 0, 20)])
    for k in range(3):
        rest, streams = mod.tx_tick_send(probes, 1.0, calls, 2.0, trunks, [])
        assert len(streams) == 1 and [c for c, _ in rest] == [6]
        assert mod.read_stamp(rest[0][1]) == k
        assert mod.stamp_matches(rest[0][1], probes[1].cycle[k])
        (entry,) = mod.parse_trunk(mux.flush(k)[0]).entries
        assert entry[0] == 5 and mod.read_stamp(bytes(entry[2])) == k
        assert mod.stamp_matches(bytes(entry[2]), probes[0].cycle[k + 3])
    assert probes[0].frames == 3 and probes[0].bytes == 480


@pytest.mark.parametrize("trunk", [True, False], ids=["trunk", "mini"])
def test_send_trunk_voice_matches_send_voice(trunk: bool) -> None:
    """The endpoint's batched send puts the same trunk entries (or mini frames, after the
    first full voice frames) out as send_voice one by one."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from helpers_pair import Pair, seed_configs

    from iaxgw.gateway.iax2.events import IncomingCall

    outs = []
    for batched in (False, True):
        ca, cb = seed_configs(qualify=None, trunk=trunk)
        p = Pair(ca, cb)
        p.run(0.5)
        calls: list[int] = []
        for i in range(5):
            calls.append(p.a.call("office-b", f"30{i}", p.now))
            assert p.run_until(lambda p=p, calls=calls: len(p.ev(p.b, IncomingCall)) == len(calls),
                               10)
        for e in p.ev(p.b, IncomingCall):
            p.b.answer(e.callno, p.now)
        p.run(0.1)
        sent = []
        for k in range(6):
            items = [(cn, bytes([k, i]) * 80) for i, cn in enumerate(calls)]
            now = p.now + 0.0203 * k
            if batched:
                assert p.a.send_voice_many(items, now) == []
            else:
                for cn, payload in items:
                    assert p.a.send_voice(cn, payload, now)
            p.a.handle_timer(now + 0.021)
            sent += [d for d, _ in p.a.datagrams_to_send(now + 0.021)]
        outs.append(sent)
    assert outs[0] == outs[1] and len(outs[0]) >= 6


@pytest.mark.parametrize("mod", TRUNK, ids=lambda m: m.__name__.rsplit("_", 1)[-1])
def test_probe_counts_entries_instead_of_the_sink(mod: Any) -> None:
    """A call with a load tester's probe: its entries are counted there (jitter, the loss
    window, payloads kept), the sink never sees them; without per-entry timestamps the probe
    numbers them 20 ms apart.  The probe's own accounting matches CallStats' rules."""
    calls = make_calls(mod, [(7, 4, 4, True, False, 0, True), (8, 4, 4, True, False, 0)])
    sunk: list[int] = []
    for k in range(5):
        dg = mod.pack_trunk([(7, 0, bytes([k]) * 160), (8, 0, b"\x01" * 160)], 1000 + 20 * k)[0]
        mod.receive_trunk(dg, calls, 0.5, 10.0 + 0.02 * k + (0.003 if k == 3 else 0.0),
                          lambda c, ts, p, t: sunk.append(c), None)
    probe = calls[7].probe
    assert sunk == [8] * 5
    assert probe.frames == 5 and probe.bytes == 800 and probe.duplicates == 0
    assert probe.pending is not None
    first = probe.pending[0][0]
    assert [ts for ts, _, _ in probe.pending] == [first + 20 * k for k in range(5)]
    assert [p[0] for _, _, p in probe.pending] == [0, 1, 2, 3, 4]
    assert probe.max_ts - probe.min_ts == 80 and probe.mask == 0b11111
    # one arrival 3 ms late: transit steps up 3 then down 3 -> J = 3/16, then 15/16 * that + 3/16
    assert probe.jitter == pytest.approx((3 / 16) * (15 / 16) + 3 / 16, abs=1e-6)
    # the same frames again (duplicates) and one 100 ms back (reordered, within the window)
    assert mod.RxProbe(20, False).pending is None
    p2 = mod.RxProbe(20, True, 4)
    for ts in (0, 20, 20, 60, 40, 80):
        p2.on_rx(ts, 1.0 + ts / 1000.0, b"x")
    assert (p2.duplicates, p2.out_of_order, p2.dropped) == (1, 1, 4)
    assert len(p2.pending) == 2


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(entry, max_size=6), st.booleans(), st.integers(0, 30))
def test_trunk_entry_stats_compiled_and_twin_agree(junk: bytes, entries: list[Any],
                                                   timestamps: bool, cut: int) -> None:
    """The load tester's traffic counter: whole entries and their bytes, up to a truncation;
    never reads past the datagram (random bytes included)."""
    body = TP.pack_trunk([(c or 1, ts, p) for c, ts, p in entries], 99, timestamps, 0)
    data = body[0] if body else bytes([0, 0, 1, int(timestamps)]) + bytes(4)
    whole = TC.trunk_entry_stats(data)
    assert whole == (len(entries), sum(len(p) for _, _, p in entries))
    for d in (data[: max(0, len(data) - cut)], junk):
        assert TC.trunk_entry_stats(d) == TP.trunk_entry_stats(d)


def test_datagram_census_counts_as_the_per_datagram_counter() -> None:
    """``datagram_census`` (compiled and twin) gives TrunkCounters the same figures as the load
    tester's per-datagram hook: full, mini, trunk with and without entry timestamps, truncated
    and short trunk datagrams, runts."""
    from iaxgw.sim.load.loadtest import LoadRunner
    from iaxgw.sim.load.metrics import TrunkCounters

    datagrams = [
        bytes([0x80 | 1, 2, 0, 0]) + bytes(8),                       # full
        b"\x00\x05\x00\x14" + bytes(160),                            # mini
        *TC.pack_trunk([(1, 0, bytes(160)), (2, 0, bytes(160))], 20),
        *TC.pack_trunk([(1, 20, bytes(160))], 40, timestamps=True),
        TC.pack_trunk([(1, 0, bytes(160)), (2, 0, bytes(160))], 60)[0][:-10],   # truncated
        b"\x00\x00\x01\x01\x00",                                     # a short trunk datagram
        b"\x01\x02",                                                 # runt
    ]
    items = [(d, ("127.0.0.1", 4569), 0.0) for d in datagrams]
    per = TrunkCounters()

    class Runner:
        stats = type("S", (), {"trunk": per})()
        _rx_nots = _saw_nots = False
        _pcap = None                 # no --pcap

    for d in datagrams:
        LoadRunner._on_datagram(Runner, "in", d, ("127.0.0.1", 4569), 0.0)  # type: ignore[arg-type]
    for mod in TRUNK:
        census = mod.datagram_census(items)
        assert census[8] == 2                        # the two trunk datagrams without entry ts
        batch = TrunkCounters()
        batch.add_census("rx", census)
        assert (batch.datagrams, batch.bytes, batch.kinds, batch.trunk_bytes, batch.subframes,
                batch.voice_bytes) == (per.datagrams, per.bytes, per.kinds, per.trunk_bytes,
                                       per.subframes, per.voice_bytes), mod.__name__
    assert Runner._saw_nots


def test_tx_tick_compiled_and_twin_agree() -> None:
    """TxProbe / tx_tick: the cycle position per frame (with an offset, and an empty cycle),
    counts, first/last send times and the cycle-start marks, alike in both implementations."""
    from collections import deque

    results = []
    for mod in TRUNK:
        cycles = [[bytes([i]) * 160 for i in range(1, 6)], [b"\x07" * 80, b"\x08" * 80], []]
        probes = []
        for n, cyc in enumerate(cycles):
            p = mod.TxProbe(cyc, 20, deque(maxlen=8), offset=n)
            p.callno = 100 + n
            probes.append(p)
        ticks = [mod.tx_tick(probes, 1.0 + 0.02 * k) for k in range(12)]
        probes[0].count(33, 2.0)
        results.append((ticks, [(p.k, p.frames, p.bytes, p.t_first, p.t_last, p.sent,
                                 list(p.marks)) for p in probes]))
    assert results[0] == results[-1]
    ticks, state = results[0]
    assert [payload[0] for _, payload in (t[0] for t in ticks)][:6] == [1, 2, 3, 4, 5, 1]
    assert [t[1] for t in ticks[0]] == [b"\x01" * 160, b"\x08" * 80, b""]
    assert state[0][:3] == (12, 13, 12 * 160 + 33) and state[0][6] == [1.0, 1.1, 1.2]
    assert state[2][2] == 0 and state[2][6] == []


def test_flush_trunks_sends_the_tick_at_once_and_keeps_a_safety_timer() -> None:
    """``flush_trunks`` (the load tester's tick): the entries just sent leave now, in datagrams
    stamped on the stream's 20 ms grid; the stream's timer stays half a period later for voice
    sent outside the ticks, and finds nothing else to send."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from helpers_pair import Pair, seed_configs

    from iaxgw.gateway.iax2.events import IncomingCall

    ca, cb = seed_configs(qualify=None, trunk=True)
    p = Pair(ca, cb)
    p.run(0.5)
    calls = [p.a.call("office-b", f"30{i}", p.now) for i in range(3)]
    assert p.run_until(lambda: len(p.ev(p.b, IncomingCall)) == 3, 10)
    for e in p.ev(p.b, IncomingCall):
        p.b.answer(e.callno, p.now)
    p.run(0.1)
    a = p.a
    t0 = p.now
    for cn in calls:                        # the first frame of each call is a full frame
        assert a.send_voice(cn, b"\x00" * 160, t0)
    a.datagrams_to_send(t0)
    assert a.flush_trunks(t0) == 0          # nothing in a trunk yet
    stamps = []
    for k in range(1, 4):
        now = t0 + 0.02 * k + 0.0004 * k    # ticks a little late: the grid holds
        assert a.send_voice_many([(cn, bytes([k]) * 160) for cn in calls], now) == []
        assert a.flush_trunks(now) == 1
        out = [d for d, _ in a.datagrams_to_send(now)]
        trunks = [d for d in out if d[:3] == b"\x00\x00\x01"]
        assert len(trunks) == 1 and len(trunks[0]) == 8 + 3 * (4 + 160)
        stamps.append(int.from_bytes(trunks[0][4:8], "big"))
        assert a.get_timer() is not None and a.get_timer() <= now + 0.0101
        a.handle_timer(now + 0.0101)        # the safety timer: nothing to send
        assert not [d for d, _ in a.datagrams_to_send(now + 0.0101) if d[:3] == b"\x00\x00\x01"]
        assert a.flush_trunks(now + 0.0102) == 0
    assert stamps[1] - stamps[0] == 20 and stamps[2] - stamps[1] == 20
    # voice sent outside a tick leaves at the safety timer, on the grid it keeps (the last
    # flush + 10 ms + 20 ms)
    grid = t0 + 0.06 + 0.0012 + 0.01 + 0.02
    assert a.send_voice(calls[0], b"\x05" * 160, t0 + 0.08)
    a.handle_timer(grid - 0.001)
    assert not [d for d, _ in a.datagrams_to_send(grid - 0.001) if d[:3] == b"\x00\x00\x01"]
    when = a.get_timer()
    assert when is not None and abs(when - grid) < 1e-6
    a.handle_timer(grid)
    late = [d for d, _ in a.datagrams_to_send(grid) if d[:3] == b"\x00\x00\x01"]
    assert len(late) == 1 and len(late[0]) == 8 + 4 + 160


def test_trunk_epoch_compiled_and_twin_agree() -> None:
    """Sources with calls keep their epoch whatever strangers send; strangers fill the table
    up to TRUNK_EPOCHS_MAX and are evicted (never the whole table) for a source with calls."""
    results = []
    for mod in (TC, TP):
        epochs: dict[Any, float] = {}
        by_addr: dict[Any, Any] = {("peer", 1): {5: object()}, ("ended", 1): {}}
        out = [mod.trunk_epoch(epochs, by_addr, ("peer", 1), 1.0, False),
               mod.trunk_epoch(epochs, by_addr, ("peer", 1), 2.0, False),
               mod.trunk_epoch(epochs, by_addr, ("ended", 1), 2.5, False)]
        for i in range(mod.TRUNK_EPOCHS_MAX + 2):
            out.append(mod.trunk_epoch(epochs, by_addr, ("x", i), 3.0 + i, False))
        assert len(epochs) == mod.TRUNK_EPOCHS_MAX and epochs[("peer", 1)] == 1.0
        out.append(mod.trunk_epoch(epochs, by_addr, ("x", 1), 9e4, False))      # kept one
        out.append(mod.trunk_epoch(epochs, by_addr, ("x", 10**6), 9e4, False))  # not kept
        by_addr[("new", 1)] = {7: object()}
        out.append(mod.trunk_epoch(epochs, by_addr, ("new", 1), 9e5, False))
        assert set(epochs) == {("peer", 1), ("new", 1)}      # strangers evicted, peer kept
        out.append(mod.trunk_epoch(epochs, by_addr, ("peer", 1), 9e6, True))    # ts 0: reset
        results.append((out, sorted(epochs.items())))
    assert results[0] == results[1]
    assert results[0][0][:4] == [1.0, 1.0, 2.5, 3.0] and results[0][0][-1] == 9e6


@settings(max_examples=400, deadline=None)
@given(start_ms=st.integers(-2000, 2000), now_ms=st.integers(0, 400000),
       last=st.integers(-1, 400000), pred_off=st.integers(-400, 400),
       codec=st.sampled_from([4, 8, 0x40, 0x8000, 0x1000]), length=st.integers(0, 960))
def test_next_voice_ts_and_voice_sent_agree(start_ms: int, now_ms: int, last: int,
                                            pred_off: int, codec: int, length: int) -> None:
    """The voice-timestamp rule lives once per implementation (the endpoint's ``send_voice``
    and the compiled batch sends use it): both agree everywhere, the skew edges included."""
    calls = []
    for mod in (TC, TP):
        c = mod.CallMedia()
        c.start = start_ms / 1000.0
        c.codec = codec
        c.last_voice_ts = last
        c.nextpred = max(0, last) + pred_off
        ts = mod.next_voice_ts(c, now_ms / 1000.0)
        mod.voice_sent(c, ts, length)
        calls.append((ts, c.nextpred, c.last_voice_ts, c.lastsent, c.tx_frames))
    assert calls[0] == calls[1]
    ts = calls[0][0]
    assert ts > last or ts == max(0, last) + pred_off     # a new slot, or the prediction


def test_next_voice_ts_snaps_outside_the_skew_and_follows_the_prediction_inside() -> None:
    for mod in TRUNK:
        c = mod.CallMedia()
        c.start = 0.0
        c.codec = 4
        assert mod.next_voice_ts(c, 0.0537) == 40            # first voice: now, snapped to 20 ms
        mod.voice_sent(c, 40, 160)
        assert c.nextpred == 60 and c.last_voice_ts == 40 and c.lastsent == 40
        assert mod.next_voice_ts(c, 0.2205) == 60            # 160 ms off: the prediction
        assert mod.next_voice_ts(c, 0.2215) == 220           # 161 ms off: the clock again
