"""``Endpoint.receive_batch`` (the batched driver's path: runs of trunk datagrams in one compiled
pass) has exactly the outcome of ``receive_datagram`` on each datagram in turn: call state,
statistics, payloads delivered, echoed output, events, warnings for malformed datagrams."""

from __future__ import annotations

from typing import Any

from helpers_pair import ADDR_A, Pair, seed_configs

from iaxgw._core.frames import build_mini
from iaxgw._core.trunk import pack_trunk
from iaxgw.gateway.iax2.events import IncomingCall

TONE = bytes(range(160))


def _pair(trunk: bool = True
          ) -> tuple[Pair, list[int], list[int], list[tuple[int, int, bytes, float]]]:
    ca, cb = seed_configs(qualify=None, trunk=trunk)
    p = Pair(ca, cb, seed=5)
    p.run(0.5)
    a_calls = []
    for i in range(4):
        a_calls.append(p.a.call("office-b", f"30{i}", p.now))
        assert p.run_until(lambda: len(p.ev(p.b, IncomingCall)) == len(a_calls), 10)
    b_calls = [e.callno for e in p.ev(p.b, IncomingCall)]
    for cn in b_calls:
        p.b.answer(cn, p.now)
    p.run(0.1)
    for cn in a_calls + b_calls:       # first voice frames go full
        (p.a if cn in a_calls else p.b).send_voice(cn, TONE, p.now)
    p.run(0.1)
    sunk: list[tuple[int, int, bytes, float]] = []
    p.b.set_media_sink(lambda c, ts, pl, t: sunk.append((c, ts, bytes(pl), t)))
    for cn in b_calls[:2]:
        assert p.b.set_echo(cn, True)
    return p, a_calls, b_calls, sunk


def _state(p: Pair, b_calls: list[int], sunk: list[Any], now: float) -> Any:
    ep = p.b
    calls = []
    for cn in b_calls:
        c = ep._calls[cn]
        calls.append((c.rx_last, c.last_voice_ts, c.nextpred, c.tx_frames,
                      tuple(getattr(c.rx, f) for f in c.rx.FIELDS)))
    ep.handle_timer(now + 0.05)           # the echo trunk flush
    out = ep.datagrams_to_send(now + 0.05)
    events = []
    while (e := ep.next_event()) is not None:
        events.append(repr(e))
    return calls, sorted(ep.stats().items()), list(sunk), out, events


def _batch_vs_one_by_one(trunk: bool, make_batch: Any) -> tuple[Any, list[int]]:
    """Two seeded pairs alike; ``make_batch(a_calls, now)``'s batch goes to one through
    ``receive_batch`` and to the other one datagram at a time (at the same arrival times): the
    outcomes must be equal.  Returns that outcome and a's call numbers."""
    p1, a_calls, b_calls, sunk1 = _pair(trunk)
    p2, a2, b2, sunk2 = _pair(trunk)
    assert (a_calls, b_calls) == (a2, b2)           # seeded: the same call numbers
    now = p1.now
    assert now == p2.now
    batch = make_batch(a_calls, now)
    floor = now - 1.0
    last = p1.b.receive_batch(batch, now, floor)
    f = floor
    for data, addr, age in batch:
        t = max(now - age, f)
        f = t
        p2.b.receive_datagram(data, addr, t)
    assert last == f
    s1, s2 = _state(p1, b_calls, sunk1, now), _state(p2, b_calls, sunk2, now)
    assert s1 == s2
    return s1, a_calls


def test_batch_equals_one_by_one() -> None:
    def make_batch(a_calls: list[int], now: float) -> list[tuple[bytes, Any, float]]:
        entries = [(cn, 0, TONE) for cn in a_calls]
        ts_entries = [(cn, 100 + 20 * k, TONE) for k, cn in enumerate(a_calls)]
        batch: list[tuple[bytes, Any, float]] = []
        for k in range(6):
            batch += [(d, ADDR_A, 0.120 - 0.02 * k) for d in pack_trunk(entries, 40_000 + 20 * k)]
        return [
            *batch,
            (pack_trunk(entries, 0)[0], ADDR_A, 0.015),                  # trunk ts 0: new epoch
            (b"\x00\x00\x01\x07" + bytes(4) + TONE, ADDR_A, 0.014),      # bad cmddata: warned
            (pack_trunk(entries, 40_200)[0], ("127.0.0.99", 4569), 0.013),   # unknown source
            (bytes([0x80 | 1, 0, 0, 0]) + bytes(8), ADDR_A, 0.012),      # a full frame between
            (pack_trunk(ts_entries, 40_220, timestamps=True)[0], ADDR_A, 0.011),
            (pack_trunk(entries, 40_240)[0][:-7], ADDR_A, 0.010),        # truncated entry
            (b"\x00\x00\x01\x00\x00", ADDR_A, 0.009),                    # too short
            (pack_trunk(entries, 40_260)[0], ADDR_A, 0.030),             # older stamp: floor
        ]

    (_calls, stats, sunk, out, _events), _a = _batch_vs_one_by_one(True, make_batch)
    st = dict(stats)
    # taken: the 6 + ts 0 + unknown source + timestamped + truncated + the last; the bad
    # cmddata and the 5-byte one are warned about and dropped
    assert st["trunk_datagrams_in"] == 11 and st["drop_malformed_meta"] == 2
    assert st["trunk_truncated"] == 1
    assert len(sunk) >= 2 * 9            # the two calls not echoing (9 whole datagrams)
    assert any(d[:3] == b"\x00\x00\x01" for d, _ in out)     # the echoed entries


def test_sink_failure_skips_that_datagram_only() -> None:
    """A media sink that raises inside the compiled pass: that datagram is counted as dropped
    (drop_malformed_meta, a warning), the batch goes on with the next one."""
    p, a_calls, _b_calls, _sunk = _pair()
    seen: list[int] = []

    def sink(callno: int, ts: int, payload: bytes, now: float) -> None:
        seen.append(callno)
        if len(seen) == 3:
            raise RuntimeError("sink failed")

    p.b.set_media_sink(sink)
    entries = [(cn, 0, TONE) for cn in a_calls]
    batch = [(d, ADDR_A, 0.05 - 0.02 * k)
             for k in range(3) for d in pack_trunk(entries, 50_000 + 20 * k)]
    before = p.b.stats()
    last = p.b.receive_batch(batch, p.now, p.now - 1.0)
    st = p.b.stats()
    assert last == p.now - 0.01
    assert st["drop_malformed_meta"] == before.get("drop_malformed_meta", 0) + 1
    # two calls per datagram reach the sink (the other two echo): the second datagram raised
    # on its first sunk entry, the first and the third were taken whole
    assert st["trunk_datagrams_in"] == before.get("trunk_datagrams_in", 0) + 2
    assert len(seen) == 5


def test_mini_frame_batch_equals_one_by_one() -> None:
    """Un-trunked calls: runs of mini frames in the compiled pass, two of the calls echoing
    (their frames go straight back as mini frames), with a mini frame for an unknown call, one
    from an unknown source, a runt and a full frame in between."""
    def make_batch(a_calls: list[int], now: float) -> list[tuple[bytes, Any, float]]:
        batch: list[tuple[bytes, Any, float]] = []
        for k in range(5):
            batch += [(build_mini(cn, (200 + 20 * k) & 0xFFFF, TONE), ADDR_A, 0.12 - 0.02 * k)
                      for cn in a_calls]
        return [
            *batch,
            (build_mini(0x7ABC, 300, TONE), ADDR_A, 0.011),            # unknown call
            (build_mini(a_calls[0], 320, TONE), ("127.0.0.99", 4569), 0.010),   # unknown source
            (b"\x01\x02\x03", ADDR_A, 0.009),                          # runt
            (bytes([0x80 | 1, 0, 0, 0]) + bytes(8), ADDR_A, 0.008),    # a full frame between
            *[(build_mini(cn, 320, TONE), ADDR_A, 0.030) for cn in a_calls],  # older: floor
        ]

    (_calls, stats, sunk, out, _events), _a = _batch_vs_one_by_one(False, make_batch)
    st = dict(stats)
    # frames_in_mini counts every mini datagram looked at, the two dropped ones too
    assert st["frames_in_mini"] == 6 * 4 + 2 and st["drop_mini_unknown_call"] == 2
    assert len(sunk) == 6 * 2                         # the two calls not echoing
    minis = [d for d, _ in out if not d[0] & 0x80]
    assert len(minis) == 6 * 2 and all(d[4:] == TONE for d in minis)     # the echoed ones
