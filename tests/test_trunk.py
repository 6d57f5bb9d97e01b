"""Trunk meta frames (docs/protocol.md §3): both implementations, vectors, MTU rule, fuzzing."""

from __future__ import annotations

import struct
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iaxgw._core._select import both
from iaxgw._core.errors import FrameError

IMPLS = both("trunk")
IDS = [m.__name__.rsplit(".", 1)[-1] for m in IMPLS]
VECTORS = Path(__file__).parent / "vectors"
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

impl = pytest.mark.parametrize("m", IMPLS, ids=IDS)

entry_st = st.tuples(
    st.integers(1, 0x7FFF), st.integers(0, 0xFFFFFFFF), st.binary(max_size=300)
)


def plain(frame: Any) -> tuple[Any, ...]:
    """Comparable form of a TrunkFrame from either implementation."""
    return (
        frame.trunk_ts,
        frame.timestamps,
        frame.truncated,
        [(c, t, bytes(p)) for c, t, p in frame.entries],
    )


def outcome(m: ModuleType, data: bytes) -> tuple[Any, ...]:
    try:
        ts, stamps, truncated, entries = plain(m.parse_trunk(data))
    except FrameError as exc:
        return ("error", exc.offset, exc.reason)
    return ("ok", ts, stamps, truncated, tuple(entries))


# ---- hand-built vectors ----


@impl
def test_vector_without_timestamps(m: ModuleType) -> None:
    frame = m.parse_trunk((VECTORS / "hand_trunk_nots_2calls.bin").read_bytes())
    assert plain(frame) == (1000, False, False, [(0x4001, None, b"abc"), (2, None, b"")])
    assert all(isinstance(p, (memoryview, getattr(m, "PayloadView", memoryview)))
               for _, _, p in frame.entries)


@impl
def test_vector_with_timestamps(m: ModuleType) -> None:
    frame = m.parse_trunk((VECTORS / "hand_trunk_ts_2calls.bin").read_bytes())
    assert plain(frame) == (0x10000, True, False, [(0x7FFF, 0xFFFE, b"hi"), (5, 0x14, b"Z")])


@impl
def test_vector_truncated_keeps_earlier_entries(m: ModuleType) -> None:
    frame = m.parse_trunk((VECTORS / "hand_trunk_truncated.bin").read_bytes())
    # top bit of the call number is masked as Asterisk does (callno & ~IAX_FLAG_FULL)
    assert plain(frame) == (0xFFFFFFFF, False, True, [(0x0123, None, b"\x01\x02")])


@impl
def test_vectors_rebuild_byte_exact(m: ModuleType) -> None:
    for name, ts in (("hand_trunk_nots_2calls.bin", False), ("hand_trunk_ts_2calls.bin", True)):
        raw = (VECTORS / name).read_bytes()
        frame = m.parse_trunk(raw)
        entries = [(c, t or 0, p) for c, t, p in frame.entries]
        assert m.pack_trunk(entries, frame.trunk_ts, timestamps=ts) == [raw]


@impl
def test_payloads_are_views_without_copy(m: ModuleType) -> None:
    buf = bytearray((VECTORS / "hand_trunk_nots_2calls.bin").read_bytes())
    frame = m.parse_trunk(buf)
    view = frame.entries[0][2]
    del frame
    buf_view_release_blocked = False
    try:
        buf.extend(b"x")  # a live export must block resizing
    except BufferError:
        buf_view_release_blocked = True
    assert buf_view_release_blocked
    assert bytes(view) == b"abc"
    view.release()


@impl
def test_payload_behaves_like_a_memoryview(m: ModuleType) -> None:
    from iaxgw._core import _g711_py

    raw = m.pack_trunk([(1, 0, b"\x00\x01\xff"), (2, 0, b"")], 0)[0]
    for data in (raw, bytearray(raw), memoryview(raw)):
        p, empty = (e[2] for e in m.parse_trunk(data).entries)
        assert (len(p), bytes(p), p.tobytes(), p.hex(), p[0], p[-1]) == (
            3, b"\x00\x01\xff", b"\x00\x01\xff", "0001ff", 0, 255)
        assert p == b"\x00\x01\xff" and b"\x00\x01\xff" == p and p != b"\x00\x01"  # noqa: SIM300 (reflected ==)
        assert p == memoryview(b"\x00\x01\xff") and memoryview(b"\x00\x01\xff") == p
        assert p == bytearray(b"\x00\x01\xff") and p != "text" and empty == b""
        assert bytes(p[1:]) == b"\x01\xff" and list(p) == [0, 1, 255]
        mv = memoryview(p)
        assert (mv.format, mv.nbytes, mv.tobytes()) == ("B", 3, bytes(p))
        assert np.frombuffer(p, np.uint8).tolist() == [0, 1, 255]
        assert _g711_py.ulaw_decode(p) == _g711_py.ulaw_decode(b"\x00\x01\xff")
        if isinstance(data, bytes):
            assert hash(p) == hash(b"\x00\x01\xff")
        with pytest.raises(IndexError):
            p[3]
        mv.release()
        p.release()
        with pytest.raises(ValueError):
            len(p)
        with pytest.raises(ValueError):
            bytes(p)


def test_compiled_payload_view_is_safe() -> None:
    import pickle

    compiled = [m for m in IMPLS if hasattr(m, "PayloadView")]
    if not compiled:
        pytest.skip("compiled core not built")
    m = compiled[0]
    raw = m.pack_trunk([(1, 0, b"abc")], 0)[0]
    p = m.parse_trunk(raw).entries[0][2]
    del raw
    assert bytes(p) == b"abc"  # keeps the datagram alive
    with pytest.raises(TypeError):
        pickle.dumps(p)
    with pytest.raises(TypeError):
        m.PayloadView()
    blank = m.PayloadView.__new__(m.PayloadView)
    with pytest.raises(ValueError):
        memoryview(blank)
    with pytest.raises(ValueError, match="read-only"):
        np.frombuffer(p, np.uint8)[0] = 1  # read-only export
    mv = memoryview(p)
    with pytest.raises(BufferError):
        p.release()  # a live export blocks release
    mv.release()
    p.release()


# ---- header errors ----


@impl
@pytest.mark.parametrize(
    ("data", "offset", "word"),
    [
        (b"", 0, "too short"),
        (b"\x00\x00\x01\x00\x00\x00\x00", 7, "too short"),
        (b"\x00\x01\x01\x00\x00\x00\x00\x00", 0, "not a meta frame"),
        (b"\x80\x00\x01\x00\x00\x00\x00\x00", 0, "not a meta frame"),
        (b"\x00\x00\x81\x00\x00\x00\x00\x00", 2, "V bit"),
        (b"\x00\x00\x02\x00\x00\x00\x00\x00", 2, "not TRUNK"),
        (b"\x00\x00\x00\x00\x00\x00\x00\x00", 2, "not TRUNK"),
        (b"\x00\x00\x01\x02\x00\x00\x00\x00", 3, "cmddata"),
        (b"\x00\x00\x01\x81\x00\x00\x00\x00", 3, "cmddata"),
    ],
)
def test_not_a_trunk_frame(m: ModuleType, data: bytes, offset: int, word: str) -> None:
    with pytest.raises(FrameError, match=word) as info:
        m.parse_trunk(data)
    assert info.value.offset == offset


@impl
def test_header_only_is_empty_frame(m: ModuleType) -> None:
    frame = m.parse_trunk(b"\x00\x00\x01\x01\x12\x34\x56\x78")
    assert plain(frame) == (0x12345678, True, False, [])


@impl
@pytest.mark.parametrize("bad", ["text", 12, None, [0, 0, 1]])
def test_parse_wrong_type(m: ModuleType, bad: object) -> None:
    with pytest.raises(TypeError):
        m.parse_trunk(bad)


@impl
def test_parse_accepts_buffer_types(m: ModuleType) -> None:
    raw = (VECTORS / "hand_trunk_ts_2calls.bin").read_bytes()
    want = plain(m.parse_trunk(raw))
    for obj in (bytearray(raw), memoryview(raw), np.frombuffer(raw, dtype=np.uint8)):
        assert plain(m.parse_trunk(obj)) == want
    # a sliced view starting mid-buffer
    assert plain(m.parse_trunk(memoryview(b"xx" + raw)[2:])) == want


# ---- round trips, MTU rule ----


@impl
@FAST
@given(
    entries=st.lists(entry_st, max_size=30),
    ts=st.booleans(),
    trunk_ts=st.integers(0, 2**32 - 1),
)
def test_round_trip(
    m: ModuleType, entries: list[tuple[int, int, bytes]], ts: bool, trunk_ts: int
) -> None:
    datagrams = m.pack_trunk(entries, trunk_ts, timestamps=ts, mtu=1240)
    got = []
    for d in datagrams:
        assert len(d) <= 1240
        frame = m.parse_trunk(d)
        assert frame.trunk_ts == trunk_ts and frame.timestamps is ts and not frame.truncated
        assert frame.entries  # no empty datagram
        got += [(c, t, bytes(p)) for c, t, p in frame.entries]
    assert got == [(c, (t & 0xFFFF) if ts else None, p) for c, t, p in entries]


@impl
@pytest.mark.parametrize(("ts", "entry"), [(False, 4 + 160), (True, 6 + 160)])
def test_asterisk_split_at_1240(m: ModuleType, ts: bool, entry: int) -> None:
    entries = [(i + 1, 20 * i, bytes([i]) * 160) for i in range(20)]
    datagrams = m.pack_trunk(entries, 7, timestamps=ts)
    assert [len(d) for d in datagrams] == [8 + 7 * entry, 8 + 7 * entry, 8 + 6 * entry]
    assert [len(m.parse_trunk(d).entries) for d in datagrams] == [7, 7, 6]


@impl
def test_split_rule_reaching_mtu_starts_new_datagram(m: ModuleType) -> None:
    # 8 + 2 × (4 + 10) = 36: the second entry would make the datagram reach mtu 36 -> split;
    # at mtu 37 both fit.
    entries = [(1, 0, bytes(10)), (2, 0, bytes(10))]
    assert [len(d) for d in m.pack_trunk(entries, 0, mtu=36)] == [22, 22]
    assert [len(d) for d in m.pack_trunk(entries, 0, mtu=37)] == [36]
    # a single entry may fill the mtu exactly
    assert [len(d) for d in m.pack_trunk([(1, 0, bytes(24))], 0, mtu=36)] == [36]


@impl
@FAST
@given(
    sizes=st.lists(st.integers(0, 400), min_size=1, max_size=40),
    mtu=st.integers(420, 1500),
    ts=st.booleans(),
)
def test_mtu_greedy_split(m: ModuleType, sizes: list[int], mtu: int, ts: bool) -> None:
    hdr = 6 if ts else 4
    entries = [(i + 1, i, bytes([i & 0xFF]) * n) for i, n in enumerate(sizes)]
    datagrams = m.pack_trunk(entries, 1, timestamps=ts, mtu=mtu)
    # the model: greedy, a new datagram when current + next entry >= mtu
    expect: list[int] = []
    for n in sizes:
        if (expect and expect[-1] + hdr + n >= mtu) or not expect:
            expect.append(8)
        expect[-1] += hdr + n
    assert [len(d) for d in datagrams] == expect
    assert all(len(d) <= mtu for d in datagrams)


@impl
def test_no_mtu_means_one_datagram(m: ModuleType) -> None:
    entries = [(i + 1, 0, bytes(160)) for i in range(50)]
    (d,) = m.pack_trunk(entries, 0, mtu=0)
    assert len(d) == 8 + 50 * 164


# ---- TrunkMux / TrunkDemux ----


@impl
def test_mux_pending_and_flush(m: ModuleType) -> None:
    mux = m.TrunkMux(mtu=1240, timestamps=True)
    assert (mux.pending, mux.pending_bytes, mux.flush(0)) == (0, 0, [])
    for i in range(8):
        mux.add(100 + i, 0x12345 + i, bytes(160))
    assert mux.pending == 8
    assert mux.pending_bytes == 2 * 8 + 8 * 166
    out = mux.flush(99)
    assert [len(d) for d in out] == [8 + 7 * 166, 8 + 166]
    assert out[0][:8] == b"\x00\x00\x01\x01\x00\x00\x00\x63"
    assert m.parse_trunk(out[0]).entries[0][:2] == (100, 0x2345)
    assert (mux.pending, mux.pending_bytes, mux.flush(100)) == (0, 0, [])
    mux.add(5, 1, b"\x01")  # reusable after flush
    assert mux.flush(1) == [b"\x00\x00\x01\x01\x00\x00\x00\x01\x00\x01\x00\x05\x00\x01\x01"]


@impl
@pytest.mark.parametrize(
    ("args", "exc"),
    [
        ((0, 0, b"x"), FrameError),
        ((0x8000, 0, b"x"), FrameError),
        ((-1, 0, b"x"), FrameError),
        ((1, -1, b"x"), FrameError),
        ((1, 2**32, b"x"), FrameError),
        ((1, 2**70, b"x"), FrameError),
        ((1, 0, bytes(1229)), FrameError),  # 8 + 4 + 1229 > 1240
        ((1, 0, "text"), TypeError),
        ((1.0, 0, b"x"), TypeError),
        ((1, "0", b"x"), TypeError),
        ((1, 0, np.zeros(8, np.uint8)[::2]), FrameError),
    ],
)
def test_mux_add_errors(m: ModuleType, args: tuple[Any, ...], exc: type[Exception]) -> None:
    mux = m.TrunkMux()
    mux.add(7, 0, b"ok")
    with pytest.raises(exc):
        mux.add(*args)
    assert mux.pending == 1  # nothing buffered by the failed add
    (d,) = mux.flush(0)
    assert plain(m.parse_trunk(d))[3] == [(7, None, b"ok")]


@impl
def test_mux_limits(m: ModuleType) -> None:
    mux = m.TrunkMux(mtu=0)
    mux.add(1, 0, bytes(0xFFFF))
    with pytest.raises(FrameError, match="65535"):
        mux.add(1, 0, bytes(0x10000))
    for bad in (-1, 1, 15, 0x10000):
        with pytest.raises(FrameError):
            m.TrunkMux(mtu=bad)
    with pytest.raises(TypeError):
        m.TrunkMux(mtu="1240")
    with pytest.raises(FrameError):
        mux.flush(-1)
    with pytest.raises(FrameError):
        m.pack_trunk([], 2**32)
    assert mux.pending == 1


@impl
def test_mux_accepts_buffer_types(m: ModuleType) -> None:
    mux = m.TrunkMux()
    payload = bytes(range(10))
    for obj in (payload, bytearray(payload), memoryview(payload), np.frombuffer(payload, np.uint8)):
        mux.add(3, 0, obj)
    mux.add(3, 0, np.frombuffer(payload, np.int16))  # raw bytes of a 16-bit array
    (d,) = mux.flush(0)
    assert [bytes(p) for _, _, p in m.parse_trunk(d).entries] == [payload] * 5


@impl
def test_demux_counters(m: ModuleType) -> None:
    demux = m.TrunkDemux()
    good = m.pack_trunk([(1, 0, b"a"), (2, 0, b"bc")], 5)[0]
    assert plain(demux.feed(good))[3] == [(1, None, b"a"), (2, None, b"bc")]
    demux.feed(good[:-1])
    with pytest.raises(FrameError):
        demux.feed(b"\x80\x01\x00\x00")
    assert (demux.datagrams, demux.entries, demux.truncated, demux.errors) == (2, 3, 1, 1)


# ---- truncation and fuzzing ----


@impl
@pytest.mark.parametrize("ts", [False, True])
def test_every_prefix(m: ModuleType, ts: bool) -> None:
    entries = [(i + 1, i * 20, bytes([i]) * (5 + i)) for i in range(4)]
    (full,) = m.pack_trunk(entries, 1234, timestamps=ts)
    hdr = 6 if ts else 4
    ends = []
    pos = 8
    for _, _, p in entries:
        pos += hdr + len(p)
        ends.append(pos)
    for cut in range(len(full) + 1):
        if cut < 8:
            with pytest.raises(FrameError, match="too short"):
                m.parse_trunk(full[:cut])
            continue
        frame = m.parse_trunk(full[:cut])
        complete = sum(1 for e in ends if e <= cut)
        assert len(frame.entries) == complete
        assert frame.truncated is (cut not in (8, *ends))
        assert [bytes(p) for _, _, p in frame.entries] == [p for _, _, p in entries[:complete]]


@impl
@FAST
@given(data=st.binary(max_size=200))
def test_random_bytes_only_frame_error(m: ModuleType, data: bytes) -> None:
    for raw in (data, b"\x00\x00\x01" + data[:1] + data[1:]):
        try:
            frame = m.parse_trunk(raw)
        except FrameError as exc:
            assert 0 <= exc.offset <= len(raw)
            continue
        pos = 8 + sum((6 if frame.timestamps else 4) + len(p) for _, _, p in frame.entries)
        assert pos <= len(raw)
        assert frame.truncated is (pos != len(raw))


@FAST
@given(
    entries=st.lists(entry_st, min_size=1, max_size=12),
    ts=st.booleans(),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=4),
)
def test_corruption_same_outcome_in_both(
    entries: list[tuple[int, int, bytes]], ts: bool, flips: list[tuple[int, int]]
) -> None:
    (raw,) = IMPLS[-1].pack_trunk(entries, 77, timestamps=ts, mtu=0)
    buf = bytearray(raw)
    for pos, xor in flips:
        buf[pos % len(buf)] ^= xor
    results = {outcome(m, bytes(buf)) for m in IMPLS}
    assert len(results) == 1


@FAST
@given(
    entries=st.lists(entry_st, max_size=20),
    ts=st.booleans(),
    mtu=st.sampled_from([0, 400, 1240]),
)
def test_cross_implementation(entries: list[tuple[int, int, bytes]], ts: bool, mtu: int) -> None:
    packed = [m.pack_trunk(entries, 9, timestamps=ts, mtu=mtu) for m in IMPLS]
    assert all(p == packed[0] for p in packed)
    for d in packed[0]:
        assert len({outcome(m, d) for m in IMPLS}) == 1


@FAST
@given(data=st.binary(min_size=0, max_size=120))
def test_cross_random_bytes(data: bytes) -> None:
    for raw in (data, b"\x00\x00\x01\x00" + data, b"\x00\x00\x01\x01" + data):
        assert len({outcome(m, raw) for m in IMPLS}) == 1


def test_both_implementations_present() -> None:
    names = [m.__name__ for m in IMPLS]
    assert "iaxgw._core._trunk_py" in names
    assert struct.calcsize(">HBBI") == 8
