"""Frame stamps of the load tester's echo test and the probes' stamp accounting.

Every sent frame of an echo call carries a 16-bit counter in the low bits of 16 fixed bytes
(``stamp_payload``); the receive probe decodes it, checks the rest of the payload against our
own cycle and counts unique frames by counter.  Proven here for the compiled core and its
pure-Python twin alike, and compared frame for frame: the stamp round trip, loss, duplicates,
reordering, a late start (frames before the far end's echo ran are not loss), the 16-bit wrap,
strays (not our audio), and that the stamps leave the signature detector's verdict unchanged.
"""

from __future__ import annotations

import random
from collections import deque
from types import ModuleType
from typing import Any

import pytest

from iaxgw._core import _probe_py

try:
    from iaxgw._core import _probe_c
except ImportError:  # pragma: no cover - extensions not built
    _probe_c = None  # type: ignore[assignment]

IMPLS: list[Any] = [pytest.param(_probe_py, id="twin")]
if _probe_c is not None:
    IMPLS.append(pytest.param(_probe_c, id="compiled"))


def _cycle(n: int = 7, size: int = 160, seed: int = 3) -> list[bytes]:
    rng = random.Random(seed)
    return [bytes(rng.randrange(256) for _ in range(size)) for _ in range(n)]


@pytest.mark.parametrize("mod", IMPLS)
def test_stamp_round_trip(mod: ModuleType) -> None:
    frame = _cycle(1)[0]
    for value in (0, 1, 0x1234, 0xFFFF, 0x10005):
        st = mod.stamp_payload(frame, value)
        assert len(st) == len(frame)
        assert mod.read_stamp(st) == value & 0xFFFF
        assert mod.stamp_matches(st, frame)
        assert mod.unstamp(st) == mod.unstamp(frame)
        # only the low bits of the 16 stamp bytes differ
        diff = [i for i in range(len(frame)) if st[i] != frame[i]]
        assert all(st[i] ^ frame[i] == 1 for i in diff)
        assert set(diff) <= {(2 * j + 1) * 160 // 32 for j in range(16)}
    st = mod.stamp_payload(frame, 77)
    other = bytearray(st)
    other[0] ^= 0x80                     # a payload bit outside the stamp
    assert not mod.stamp_matches(bytes(other), frame)
    assert not mod.stamp_matches(st[:-1], frame[:-1] + b"x")
    assert mod.read_stamp(b"short") == -1
    assert mod.stamp_payload(b"short", 5) == b"short"


def test_stamp_compiled_and_twin_agree() -> None:
    if _probe_c is None:
        pytest.skip("extensions not built")
    rng = random.Random(9)
    for size in (16, 17, 80, 160, 161, 320):
        for _ in range(30):
            frame = bytes(rng.randrange(256) for _ in range(size))
            v = rng.randrange(0x20000)
            a, b = _probe_c.stamp_payload(frame, v), _probe_py.stamp_payload(frame, v)
            assert a == b
            assert _probe_c.read_stamp(a) == _probe_py.read_stamp(a) == v & 0xFFFF
            noisy = bytearray(a)
            noisy[rng.randrange(size)] ^= 1 << rng.randrange(8)
            assert _probe_c.stamp_matches(bytes(noisy), frame) == \
                _probe_py.stamp_matches(bytes(noisy), frame)


def _probe(mod: ModuleType, cycle: list[bytes], offset: int = 0) -> Any:
    p = mod.RxProbe(20, True, 10_000)
    p.stamp_cycle = cycle
    p.stamp_offset = offset
    return p


def _sent(mod: ModuleType, cycle: list[bytes], n: int, offset: int = 0) -> list[bytes]:
    tx = mod.TxProbe(list(cycle), 20, deque(maxlen=8), offset)
    tx.stamp = True
    return [tx.take(k * 20, 1.0 + 0.02 * k) for k in range(n)]


def _fields(p: Any) -> tuple[Any, ...]:
    return (p.frames, p.s_frames, p.s_dup, p.s_ooo, p.s_lo, p.s_hi, p.s_strays,
            round(p.s_jitter, 9), round(p.s_jitter_max, 9), round(p.s_jitter_sum, 6),
            len(p.strays), p.firsts, p.seq_frames)


@pytest.mark.parametrize("mod", IMPLS)
def test_probe_counts_loss_dup_reorder_exactly(mod: ModuleType) -> None:
    cycle = _cycle(7)
    sent = _sent(mod, cycle, 600, offset=2)
    rng = random.Random(5)
    # the far end's echo starts at frame 40; 5 % lost, 1 % duplicated, some pairs swapped
    delivered = [k for k in range(40, 600) if rng.random() >= 0.05]
    lost = 560 - len(delivered)
    dups = set(rng.sample(delivered, 6))
    order: list[int] = []
    for k in delivered:
        order.append(k)
        if k in dups:
            order.append(k)
    for i in range(10, len(order) - 1, 50):
        order[i], order[i + 1] = order[i + 1], order[i]
    p = _probe(mod, cycle, offset=2)
    for n, k in enumerate(order):
        p.on_rx(5000 + 20 * n, 2.0 + 0.02 * n, sent[k], True)   # a trunk without timestamps
    assert p.s_frames == len(order) and p.s_strays == 0
    assert p.s_dup == len(dups)
    assert p.s_lo == 40 and p.s_hi == max(delivered)
    expected = p.s_hi - p.s_lo + 1
    unique = p.s_frames - p.s_dup
    assert expected - unique == lost - (599 - max(delivered))
    assert p.s_ooo >= 1
    assert p.seq_frames == len(order)
    # the cycle's first frame (index 0 with offset 2: counters 5, 12, ...) is found on arrival
    assert len(p.firsts) == sum(1 for k in order if (k + 2) % 7 == 0)


@pytest.mark.parametrize("mod", IMPLS)
def test_probe_wraps_the_16_bit_counter_and_rejects_strays(mod: ModuleType) -> None:
    cycle = _cycle(5)
    p = _probe(mod, cycle)
    tx = mod.TxProbe(list(cycle), 20)
    tx.stamp = True
    base = 0xFFF0
    for k in range(base, base + 40):
        if k == base + 20:
            continue                                   # one lost right after the wrap
        p.on_rx(0, 1.0 + 0.02 * (k - base), tx.take(k * 20, 0.0))
    p.on_rx(0, 2.0, bytes(160))                        # silence: not ours
    p.on_rx(0, 2.0, mod.stamp_payload(cycle[(base + 42) % 5], base + 41))  # wrong payload
    assert p.s_lo == base and p.s_hi == base + 39
    assert p.s_frames == 39 and p.s_dup == 0
    assert p.s_strays == 2 and len(p.strays) == 2
    assert p.s_hi - p.s_lo + 1 - p.s_frames == 1


def test_probe_compiled_and_twin_agree() -> None:
    if _probe_c is None:
        pytest.skip("extensions not built")
    cycle = _cycle(11)
    rng = random.Random(21)
    sent = _sent(_probe_py, cycle, 3000)
    assert sent == _sent(_probe_c, cycle, 3000)
    probes = [_probe(m, cycle) for m in (_probe_py, _probe_c)]
    t = 1.0
    for k in range(3000):
        if rng.random() < 0.04:
            continue
        t += 0.02 + rng.uniform(-0.004, 0.004)
        frame = sent[k] if rng.random() > 0.01 else bytes(160)
        for _ in range(2 if rng.random() < 0.01 else 1):
            kk = k - 3 if rng.random() < 0.01 and k > 3 else k
            seq = rng.random() < 0.5
            for p in probes:
                p.on_rx(20 * k, t, sent[kk] if frame is sent[k] else frame, seq)
    assert _fields(probes[0]) == _fields(probes[1])
    assert probes[0].s_jitter > 0.5


@pytest.mark.parametrize("mod", IMPLS)
def test_stamp_jitter_follows_arrival_against_counter(mod: ModuleType) -> None:
    """Transit = arrival - counter x 20 ms: a constant delay gives 0 jitter, a uniform +-J
    delay about 2J/3, and a lost frame adds nothing (the timestamps of a trunk without
    per-entry timestamps would jump by 20 ms there)."""
    cycle = _cycle(3)
    sent = _sent(mod, cycle, 2000)
    flat, noisy = _probe(mod, cycle), _probe(mod, cycle)
    rng = random.Random(1)
    for k in range(2000):
        if k % 25 == 0:
            continue
        flat.on_rx(0, 5.0 + 0.02 * k + 0.03, sent[k], True)
        noisy.on_rx(0, 5.0 + 0.02 * k + 0.03 + rng.uniform(-0.006, 0.006), sent[k], True)
    assert flat.s_jitter < 1e-6 and flat.s_jitter_max < 1e-6
    assert 2.8 < noisy.s_jitter_sum / (noisy.s_frames - 1) < 5.2


def _kept_run(mod: ModuleType, seed: int, limit: int) -> list[Any]:
    """A probe fed our stamped frames, strays (silence, foreign audio, short frames), with
    ``pending`` read (and reset) now and then and its cycle replaced once: everything it kept
    and counted, in order."""
    cycle = _cycle(7)
    sent = _sent(mod, cycle, 400, offset=1)
    rng = random.Random(seed)
    p = mod.RxProbe(20, True, limit)
    p.stamp_cycle = list(cycle)
    p.stamp_offset = 1
    seen: list[Any] = []
    held = p.pending
    for n in range(400):
        r = rng.random()
        payload: Any = sent[n]
        if r < 0.05:
            payload = bytes(160)
        elif r < 0.08:
            payload = _cycle(1, seed=n)[0]
        elif r < 0.09:
            payload = b"short"
        p.on_rx(20 * n, 1.0 + 0.02 * n, payload, n % 3 == 0)
        if rng.random() < 0.03:
            got = p.pending
            assert got is held and p.pending_count == len(got)
            seen.append(list(got))
            if rng.random() < 0.5:
                p.pending = []
                held = p.pending
        if n == 250:
            p.stamp_cycle = list(cycle)        # replaced: what was kept stays as it was
        if n % 50 == 0:
            seen.append(p.take_exact())
    seen.append((p.pending, p.pending_count, p.dropped, p.exact_lost, _fields(p)))
    return seen


@pytest.mark.parametrize("limit", [7, 40, 300])
def test_kept_frames_compiled_and_twin_agree(limit: int) -> None:
    """The compiled probe keeps a stamped frame of ours as its cycle index and stamp and builds
    it only when ``pending`` is read: the frames read back (payloads bit for bit, arrival and
    media times, order), the drops of the oldest half at ``limit``, the strays and the counts
    are the twin's, which keeps every payload as it came."""
    if _probe_c is None:
        pytest.skip("extensions not built")
    for seed in range(4):
        assert _kept_run(_probe_c, seed, limit) == _kept_run(_probe_py, seed, limit)


def test_kept_frames_untracked_and_rebuilt_bit_for_bit() -> None:
    """Frames read back from the compiled probe are the payloads that came, tuples the
    collector does not track; an in-place change of the cycle under kept frames is an error,
    not a wrong payload."""
    import gc

    if _probe_c is None:
        pytest.skip("extensions not built")
    cycle = _cycle(5)
    sent = _sent(_probe_c, cycle, 12)
    p = _probe(_probe_c, cycle)
    for n, payload in enumerate(sent):
        p.on_rx(20 * n, 1.0 + 0.02 * n, payload)
    assert p.pending_count == 12 and p.s_frames == 12
    assert [t[2] for t in p.pending] == sent
    assert not any(gc.is_tracked(t) for t in p.pending)
    p.on_rx(400, 2.0, sent[0])
    p.stamp_cycle[0] = b"x" * 10
    with pytest.raises(RuntimeError, match="changed in place"):
        _ = p.pending
    with pytest.raises(TypeError):
        p.pending = ()
