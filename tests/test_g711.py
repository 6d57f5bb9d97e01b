"""G.711: exhaustive agreement with CPython audioop, input types, out=, errors, cross-checks."""

from __future__ import annotations

import array
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iaxgw._core import _g711_py
from iaxgw._core._select import both
from iaxgw._core.errors import FrameError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # Python >= 3.13
        audioop = None

needs_audioop = pytest.mark.skipif(audioop is None, reason="audioop removed in Python >= 3.13")

IMPLS = both("g711")
IDS = [m.__name__.rsplit(".", 1)[-1] for m in IMPLS]
impl = pytest.mark.parametrize("m", IMPLS, ids=IDS)

ALL_PCM = np.arange(-32768, 32768, dtype=np.int16).tobytes()
ALL_CODES = bytes(range(256))
ENCODERS = ["ulaw_encode", "alaw_encode"]
CODE_FUNCS = ["ulaw_decode", "alaw_decode", "ulaw_to_alaw", "alaw_to_ulaw"]
ALL_FUNCS = ENCODERS + CODE_FUNCS


def _ref() -> dict[str, Callable[[bytes], bytes]]:
    assert audioop is not None
    a = audioop
    return {
        "ulaw_encode": lambda b: a.lin2ulaw(b, 2),
        "alaw_encode": lambda b: a.lin2alaw(b, 2),
        "ulaw_decode": lambda b: a.ulaw2lin(b, 2),
        "alaw_decode": lambda b: a.alaw2lin(b, 2),
        "ulaw_to_alaw": lambda b: a.lin2alaw(a.ulaw2lin(b, 2), 2),
        "alaw_to_ulaw": lambda b: a.lin2ulaw(a.alaw2lin(b, 2), 2),
    }


@needs_audioop
@impl
@pytest.mark.parametrize("name", ALL_FUNCS)
def test_exhaustive_against_audioop(m: ModuleType, name: str) -> None:
    data = ALL_PCM if name in ENCODERS else ALL_CODES
    assert getattr(m, name)(data) == _ref()[name](data)


@needs_audioop
def test_scalar_segment_functions_against_audioop() -> None:
    # the per-sample algorithms the tables are built from, checked on their own
    samples = range(-32768, 32768, 7)
    pcm = array.array("h", samples).tobytes()
    assert bytes(_g711_py.ulaw_encode_sample(s) for s in samples) == _ref()["ulaw_encode"](pcm)
    assert bytes(_g711_py.alaw_encode_sample(s) for s in samples) == _ref()["alaw_encode"](pcm)
    dec_u = array.array("h", [_g711_py.ulaw_decode_sample(c) for c in range(256)]).tobytes()
    dec_a = array.array("h", [_g711_py.alaw_decode_sample(c) for c in range(256)]).tobytes()
    assert dec_u == _ref()["ulaw_decode"](ALL_CODES)
    assert dec_a == _ref()["alaw_decode"](ALL_CODES)


@needs_audioop
@impl
@pytest.mark.parametrize("name", ALL_FUNCS)
def test_bulk_over_nogil_threshold(m: ModuleType, name: str) -> None:
    rng = np.random.default_rng(5)
    data = rng.integers(0, 256, 300_001 if name in CODE_FUNCS else 300_002, dtype=np.uint8)
    raw = data.tobytes()
    assert getattr(m, name)(raw) == _ref()[name](raw)


@impl
@pytest.mark.parametrize("name", ["ulaw_decode", "alaw_decode"])
@pytest.mark.parametrize("n", [524_288, 524_288 + 7, 1_000_003])
def test_bulk_decode_streamed(m: ModuleType, name: str, n: int) -> None:
    """Decodes of >= 512 Ki samples into a new result take the non-temporal store path of the
    compiled core (8 samples a store, then a tail); inputs at any offset, and into ``out``."""
    rng = np.random.default_rng(n)
    raw = rng.integers(0, 256, n + 3, dtype=np.uint8).tobytes()
    table = np.frombuffer(getattr(m, name)(ALL_CODES), np.int16)
    for off in range(4):
        src = memoryview(raw)[off : off + n]
        want = table[np.frombuffer(src, np.uint8)].tobytes()
        assert getattr(m, name)(src) == want
        out = bytearray(2 * n + 1)
        assert getattr(m, name)(src, memoryview(out)[1:]) == 2 * n
        assert out[1:] == want


@impl
def test_known_codes(m: ModuleType) -> None:
    # silence, full scale and the classic reference points of the two laws
    pcm = array.array("h", [0, -1, 32767, -32768, 1000, -1000]).tobytes()
    assert m.ulaw_encode(pcm) == bytes([0xFF, 0x7E, 0x80, 0x00, 0xCE, 0x4E])
    assert m.alaw_encode(pcm) == bytes([0xD5, 0x55, 0xAA, 0x2A, 0xFA, 0x7A])
    assert array.array("h", m.ulaw_decode(b"\xff\x7f\x00\x80")).tolist() == [0, 0, -32124, 32124]
    assert array.array("h", m.alaw_decode(b"\xd5\x55\x2a\xaa")).tolist() == [8, -8, -32256, 32256]


@impl
def test_decode_encode_round_trip(m: ModuleType) -> None:
    # every A-law code survives decode+encode; µ-law only loses its negative zero (0x7F -> 0xFF)
    assert m.alaw_encode(m.alaw_decode(ALL_CODES)) == ALL_CODES
    expect = bytearray(ALL_CODES)
    expect[0x7F] = 0xFF
    assert m.ulaw_encode(m.ulaw_decode(ALL_CODES)) == bytes(expect)
    assert m.ulaw_to_alaw(m.alaw_to_ulaw(ALL_CODES)) != ALL_CODES  # lossy, not an identity
    assert m.alaw_to_ulaw(ALL_CODES) == m.ulaw_encode(m.alaw_decode(ALL_CODES))


@impl
@pytest.mark.parametrize("name", ALL_FUNCS)
def test_empty_input(m: ModuleType, name: str) -> None:
    assert getattr(m, name)(b"") == b""


@impl
def test_input_types(m: ModuleType) -> None:
    samples = np.array([0, 5, -5, 1234, -32768, 32767, 77, -3], dtype=np.int16)
    raw = samples.tobytes()
    want = m.ulaw_encode(raw)
    assert len(want) == 8
    for obj in (
        bytearray(raw),
        memoryview(raw),
        memoryview(b"zz" + raw)[2:],
        memoryview(b"z" + raw)[1:],  # unaligned start
        samples,
        np.frombuffer(raw, np.uint8),
        array.array("h", samples.tolist()),
        memoryview(raw).cast("h"),
    ):
        assert m.ulaw_encode(obj) == want
    codes = m.alaw_encode(raw)
    pcm = m.alaw_decode(codes)
    for obj in (bytearray(codes), memoryview(codes), np.frombuffer(codes, np.uint8),
                np.frombuffer(codes, np.int8), array.array("B", codes)):
        assert m.alaw_decode(obj) == pcm
        assert m.alaw_to_ulaw(obj) == m.alaw_to_ulaw(codes)


@impl
@pytest.mark.parametrize("name", ENCODERS)
def test_odd_pcm_length(m: ModuleType, name: str) -> None:
    with pytest.raises(FrameError, match="odd length of 3 bytes"):
        getattr(m, name)(b"abc")
    with pytest.raises(FrameError, match="odd"):
        getattr(m, name)(bytearray(161))


@impl
@pytest.mark.parametrize("name", ALL_FUNCS)
@pytest.mark.parametrize(
    "bad",
    ["text", 123, None, [1, 2], np.zeros(4, np.float32), np.zeros(4, np.int32),
     np.zeros(4, ">i2" if np.little_endian else "<i2")],
    ids=["str", "int", "None", "list", "float32", "int32", "swapped-int16"],
)
def test_wrong_types(m: ModuleType, name: str, bad: Any) -> None:
    with pytest.raises(TypeError):
        getattr(m, name)(bad)


@impl
@pytest.mark.parametrize("name", CODE_FUNCS)
def test_code_functions_reject_int16(m: ModuleType, name: str) -> None:
    with pytest.raises(TypeError, match="8-bit"):
        getattr(m, name)(np.zeros(4, np.int16))


@impl
@pytest.mark.parametrize("name", ALL_FUNCS)
def test_non_contiguous(m: ModuleType, name: str) -> None:
    arr = np.zeros(16, np.int16 if name in ENCODERS else np.uint8)[::2]
    with pytest.raises(FrameError, match="contiguous"):
        getattr(m, name)(arr)


@impl
@pytest.mark.parametrize("name", ALL_FUNCS)
def test_out_argument(m: ModuleType, name: str) -> None:
    data = ALL_PCM[:400] if name in ENCODERS else ALL_CODES
    fn = getattr(m, name)
    want = fn(data)
    out = bytearray(len(want) + 3)
    out[-3:] = b"\xee\xee\xee"
    assert fn(data, out=out) == len(want)
    assert bytes(out[: len(want)]) == want and out[-3:] == b"\xee\xee\xee"
    mv_out = memoryview(bytearray(len(want)))
    assert fn(data, mv_out) == len(want) and mv_out.tobytes() == want
    if name.endswith("decode"):
        arr = np.zeros(len(want) // 2, np.int16)
        assert fn(data, out=arr) == len(want) and arr.tobytes() == want
    with pytest.raises(FrameError, match="needed"):
        fn(data, out=bytearray(len(want) - 1))
    with pytest.raises(TypeError):
        fn(data, out=bytes(len(want)))
    with pytest.raises(TypeError):
        fn(data, out="x" * len(want))
    with pytest.raises(FrameError, match="contiguous"):
        fn(data, out=memoryview(bytearray(2 * len(want)))[::2])


@impl
def test_transcode_in_place(m: ModuleType) -> None:
    buf = bytearray(ALL_CODES)
    assert m.ulaw_to_alaw(buf, out=buf) == 256
    assert bytes(buf) == m.ulaw_to_alaw(ALL_CODES)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=700))
def test_cross_implementation_random(data: bytes) -> None:
    pcm = data[: len(data) & ~1]
    for name in ALL_FUNCS:
        arg = pcm if name in ENCODERS else data
        results = {getattr(m, name)(arg) for m in IMPLS}
        assert len(results) == 1
    for name in ENCODERS:
        if len(data) & 1:
            errors = set()
            for m in IMPLS:
                with pytest.raises(FrameError) as info:
                    getattr(m, name)(data)
                errors.add(info.value.reason)
            assert len(errors) == 1


def test_twin_tables_read_only() -> None:
    with pytest.raises(ValueError):
        _g711_py.ULAW_ENCODE[0] = 1
