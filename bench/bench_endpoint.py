"""Per-packet path of the sans-IO Endpoint under trunked load (pytest-benchmark).

The figure that matters is **µs per trunk entry** (one call's 20 ms of voice), compiled core:

- ``receive``: ``receive_datagram`` of full trunk datagrams (7 × 160-byte µ-law entries, no
  per-call timestamps: Asterisk's default) into a media sink, as ``iaxgw serve`` receives them;
  includes the call lookup, the RFC 3550 receive stats and the payload handed to the sink.
- ``send``: ``send_voice`` of 7 calls into their trunk plus the 20 ms trunk flush, datagrams
  collected; ``send_voice_many``: the same in one compiled pass (the load tester's tick).
- ``echo``: ``receive_datagram`` into calls set to echo (``set_echo``, iaxgw serve's Echo()):
  each entry goes straight back into the trunk, flushed every 20 ms (the echo path of
  ``iaxgw serve``).

Each round handles ``BATCH`` datagrams (``BATCH`` × 7 entries); divide the round time by
``BATCH * 7`` (``extra_info["entries_per_round"]``) for the per-entry figure::

    python3 -m pytest bench/bench_endpoint.py --benchmark-only --benchmark-columns=median,ops
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers_pair import ADDR_A, Pair, seed_configs, transfer

from iaxgw._core.trunk import pack_trunk
from iaxgw.gateway.iax2.events import IncomingCall

CALLS = 7
BATCH = 100
ENTRIES = CALLS * BATCH
TONE = bytes(range(160))


def _trunk_pair() -> tuple[Pair, list[int], list[int]]:
    """Seed sites a and b, trunked, with ``CALLS`` answered calls a -> b and voice flowing."""
    ca, cb = seed_configs(qualify=None, trunk=True)
    p = Pair(ca, cb)
    p.run(0.5)
    a_calls = []
    for i in range(CALLS):
        a_calls.append(p.a.call("office-b", f"30{i}", p.now))
        assert p.run_until(lambda: len(p.ev(p.b, IncomingCall)) == len(a_calls), 10)
    b_calls = [e.callno for e in p.ev(p.b, IncomingCall)]
    for bcn in b_calls:
        p.b.answer(bcn, p.now)
    p.run(0.1)
    for cn in a_calls + b_calls:     # first voice frame of each call goes as a full frame
        ep = p.a if cn in a_calls else p.b
        assert ep.send_voice(cn, TONE, p.now)
    p.run(0.1)
    return p, a_calls, b_calls


def test_receive_trunk_entry(benchmark: Any) -> None:
    """b receives a's trunk datagrams (7 entries each) into a media sink."""
    benchmark.group = f"endpoint: receive trunk datagram 7x160 into a sink, x{BATCH}"
    benchmark.extra_info["entries_per_round"] = ENTRIES
    p, a_calls, _b_calls = _trunk_pair()
    ep = p.b
    got = [0]

    def sink(callno: int, ts: int, payload: bytes, now: float) -> None:
        got[0] += 1

    ep.set_media_sink(sink)
    clock = {"trunk_ts": 1000, "now": p.now}

    def setup() -> tuple[tuple[list[bytes], float], dict[str, Any]]:
        dgs = []
        for _ in range(BATCH):
            clock["trunk_ts"] += 20
            entries = [(cn, 0, TONE) for cn in a_calls]
            dgs += pack_trunk(entries, clock["trunk_ts"])
        now = clock["now"]
        clock["now"] += 0.02 * BATCH
        ep.datagrams_to_send(now)
        return (dgs, now), {}

    def run(dgs: list[bytes], now: float) -> None:
        receive = ep.receive_datagram
        for dg in dgs:
            receive(dg, ADDR_A, now)
            now += 0.02

    got[0] = 0
    benchmark.pedantic(run, setup=setup, rounds=200, warmup_rounds=5)
    assert got[0] == ENTRIES * 205
    st = ep.stats()
    assert "drop_trunk_unknown_call" not in st and "drop_trunk_call_not_active" not in st


def test_send_voice_trunk_entry(benchmark: Any) -> None:
    """a sends one payload per call per 20 ms into its trunk, then the trunk flush fires."""
    benchmark.group = f"endpoint: send_voice x7 into a trunk + 20 ms flush, x{BATCH}"
    benchmark.extra_info["entries_per_round"] = ENTRIES
    p, a_calls, _b_calls = _trunk_pair()
    ep = p.a
    clock = {"now": p.now}
    sent = [0]

    def setup() -> tuple[tuple[float], dict[str, Any]]:
        now = clock["now"]
        p.b.handle_timer(now)            # untimed: keep the calls alive (PING / ACKs)
        transfer(p.a, p.b, now)
        clock["now"] += 0.02 * BATCH
        return (now,), {}

    def run(now: float) -> None:
        send = ep.send_voice
        for _ in range(BATCH):
            for cn in a_calls:
                send(cn, TONE, now)
            now += 0.02
            ep.handle_timer(now)
            sent[0] += len(ep.datagrams_to_send(now))

    benchmark.pedantic(run, setup=setup, rounds=200, warmup_rounds=5)
    assert sent[0] >= 205 * BATCH * 0.9
    assert all(c.state.name == "UP" for c in map(ep.call_info, a_calls) if c is not None)


def test_echo_trunk_entry(benchmark: Any) -> None:
    """b echoes a's trunk entries (``set_echo``: iaxgw serve's Echo() on a trunked call): the
    compiled receive path puts each entry straight back into b's trunk, flushed every 20 ms."""
    benchmark.group = f"endpoint: echo trunk datagram 7x160 back into the trunk + flush, x{BATCH}"
    benchmark.extra_info["entries_per_round"] = ENTRIES
    p, a_calls, b_calls = _trunk_pair()
    ep = p.b
    for cn in b_calls:
        assert ep.set_echo(cn, True)
    sunk = [0]

    def sink(callno: int, ts: int, payload: bytes, now: float) -> None:
        sunk[0] += 1

    ep.set_media_sink(sink)
    clock = {"trunk_ts": 1000, "now": p.now}
    out = [0]
    signalling: list[bytes] = []

    def setup() -> tuple[tuple[list[bytes], float], dict[str, Any]]:
        now = clock["now"]
        # untimed: b's PINGs / LAGRQs of the last round reach a, a answers (calls stay up)
        for data in signalling:
            p.a.receive_datagram(data, p.b.local_addr, now)
        signalling.clear()
        p.a.handle_timer(now)
        transfer(p.a, p.b, now)
        dgs = []
        for _ in range(BATCH):
            clock["trunk_ts"] += 20
            dgs += pack_trunk([(cn, 0, TONE) for cn in a_calls], clock["trunk_ts"])
        clock["now"] += 0.02 * BATCH
        return (dgs, now), {}

    def run(dgs: list[bytes], now: float) -> None:
        receive = ep.receive_datagram
        for dg in dgs:
            receive(dg, ADDR_A, now)
            now += 0.02
            ep.handle_timer(now)
            for data, _to in ep.datagrams_to_send(now):
                if data[0] == 0 and data[1] == 0:
                    out[0] += 1
                else:
                    signalling.append(data)

    benchmark.pedantic(run, setup=setup, rounds=200, warmup_rounds=5)
    assert sunk[0] == 0                       # every entry was echoed inside the endpoint
    assert out[0] >= 205 * BATCH * 0.9        # one trunk datagram (7 entries) per 20 ms


def test_send_voice_many_trunk_entry(benchmark: Any) -> None:
    """As ``test_send_voice_trunk_entry`` through ``send_voice_many`` (the load tester's tick):
    the trunk branch of every call in one compiled pass."""
    benchmark.group = f"endpoint: send_voice_many x7 into a trunk + 20 ms flush, x{BATCH}"
    benchmark.extra_info["entries_per_round"] = ENTRIES
    p, a_calls, _b_calls = _trunk_pair()
    ep = p.a
    clock = {"now": p.now}
    sent = [0]
    items = [(cn, TONE) for cn in a_calls]

    def setup() -> tuple[tuple[float], dict[str, Any]]:
        now = clock["now"]
        p.b.handle_timer(now)            # untimed: keep the calls alive (PING / ACKs)
        transfer(p.a, p.b, now)
        clock["now"] += 0.02 * BATCH
        return (now,), {}

    def run(now: float) -> None:
        send = ep.send_voice_many
        for _ in range(BATCH):
            assert not send(items, now)
            now += 0.02
            ep.handle_timer(now)
            sent[0] += len(ep.datagrams_to_send(now))

    benchmark.pedantic(run, setup=setup, rounds=200, warmup_rounds=5)
    assert sent[0] >= 205 * BATCH * 0.9
