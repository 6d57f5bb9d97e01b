"""G.711 speed: compiled core vs numpy LUT and vs CPython audioop (pytest-benchmark).

Run all benchmarks with ``python3 bench/ratios.py``; the figure is the ratio between ``[c]`` and
each baseline (``[numpy]`` = ``lut[x]`` with 65,536/256-entry tables, ``[audioop]``) in one group.
Per-frame groups cycle through 1,000 distinct random 160-sample frames (a repeated frame
lets the branch predictor learn it).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from iaxgw._core import _g711_py
from iaxgw._core._select import both

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # Python >= 3.13
        audioop = None

COMPILED = [m for m in both("g711") if m.__name__.endswith("_c")]
if not COMPILED:
    pytest.skip("compiled _g711_c not built", allow_module_level=True)
G = COMPILED[0]

RNG = np.random.default_rng(711)
BULK_N = 1_000_000
# speech-like PCM (mostly small amplitudes) and random codes
PCM_1M = np.clip(RNG.normal(0, 3000, BULK_N), -32768, 32767).astype(np.int16).tobytes()
CODES_1M = RNG.integers(0, 256, BULK_N, dtype=np.uint8).tobytes()
FRAMES_PCM = [
    np.clip(RNG.normal(0, 3000, 160), -32768, 32767).astype(np.int16).tobytes()
    for _ in range(1000)
]
FRAMES_CODES = [RNG.integers(0, 256, 160, dtype=np.uint8).tobytes() for _ in range(1000)]

ENC_U = _g711_py.ULAW_ENCODE
DEC_U = _g711_py.ULAW_DECODE
U2A = _g711_py.ULAW_TO_ALAW


def _numpy_encode(b: bytes) -> bytes:
    return ENC_U[np.frombuffer(b, np.uint16)].tobytes()


def _numpy_decode(b: bytes) -> bytes:
    return DEC_U[np.frombuffer(b, np.uint8)].tobytes()


def _numpy_u2a(b: bytes) -> bytes:
    return U2A[np.frombuffer(b, np.uint8)].tobytes()


def _audioop(op: str) -> Callable[[bytes], bytes]:
    a = audioop
    assert a is not None
    return {
        "encode": lambda b: a.lin2ulaw(b, 2),
        "decode": lambda b: a.ulaw2lin(b, 2),
        "u2a": lambda b: a.lin2alaw(a.ulaw2lin(b, 2), 2),
    }[op]


def _fn(op: str, impl: str) -> Callable[[bytes], bytes]:
    if impl == "c":
        return {"encode": G.ulaw_encode, "decode": G.ulaw_decode, "u2a": G.ulaw_to_alaw}[op]
    if impl == "numpy":
        return {"encode": _numpy_encode, "decode": _numpy_decode, "u2a": _numpy_u2a}[op]
    if audioop is None:
        pytest.skip("audioop not available (Python >= 3.13)")
    return _audioop(op)


OPS = {"encode": "ulaw encode", "decode": "ulaw decode", "u2a": "ulaw->alaw transcode"}


@pytest.mark.parametrize("impl", ["c", "numpy", "audioop"])
@pytest.mark.parametrize("op", list(OPS))
def test_bulk(benchmark: Any, op: str, impl: str) -> None:
    benchmark.group = f"g711 {OPS[op]} 1M samples"
    data = PCM_1M if op == "encode" else CODES_1M
    fn = _fn(op, impl)
    out = benchmark(fn, data)
    assert out == _fn(op, "numpy")(data)


@pytest.mark.parametrize("impl", ["c", "audioop"])
@pytest.mark.parametrize("op", ["encode", "decode"])
def test_frame(benchmark: Any, op: str, impl: str) -> None:
    benchmark.group = f"g711 {OPS[op]} 160-sample frame (x1000 distinct)"
    frames = FRAMES_PCM if op == "encode" else FRAMES_CODES
    fn = _fn(op, impl)

    def run() -> int:
        total = 0
        for f in frames:
            total += len(fn(f))
        return total

    assert benchmark(run) == (160 if op == "encode" else 320) * 1000
