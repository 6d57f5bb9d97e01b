"""Frame/IE codec speed: compiled core vs pure-Python twin (pytest-benchmark).

Run: ``python3 -m pytest bench/bench_frames.py --benchmark-only -p no:randomly``.
The figure that matters is the ratio between ``[c]`` and ``[py]`` within one group
(target: parse NEW >= 20x).
"""

from __future__ import annotations

import pathlib
from types import ModuleType
from typing import Any

import pytest

from iaxgw._core._select import both

FRAMES = {m.__name__.rsplit("_", 1)[-1]: m for m in both("frames")}
IES = {m.__name__.rsplit("_", 1)[-1]: m for m in both("ies")}
IMPL_IDS = sorted(FRAMES)
VECTORS = pathlib.Path(__file__).resolve().parent.parent / "tests" / "vectors"
NEW = (VECTORS / "hand_new.bin").read_bytes()
MINI = (VECTORS / "hand_mini.bin").read_bytes()


def _impls(impl: str) -> tuple[ModuleType, ModuleType]:
    return FRAMES[impl], IES[impl]


def _distinct_news(count: int) -> list[bytes]:
    """``count`` NEWs like ``NEW`` whose per-call IEs differ (as between two sites: the called and
    calling numbers, caller name, DNID and DATETIME change per call; VERSION, formats, context,
    username, ... repeat).  Parsing one frame over and over would only measure the compiled
    parser's IE cache."""
    fr, ie = FRAMES["py"], IES["py"]
    base = ie.parse_ies(NEW[12:])
    out = []
    for k in range(count):
        per_call = {
            1: f"{100 + k % 400}",  # CALLING_NUMBER
            2: f"555{k:04d}",  # CALLED_NUMBER
            4: f"Site A {k % 400}",  # CALLING_NAME
            13: f"{100 + k % 400}",  # DNID
            31: 0x30A60000 | (k // 1800 % 24) << 11 | (k // 30 % 60) << 5 | k % 30,  # DATETIME
        }
        items = [(i, per_call.get(i, v)) for i, v in base]
        out.append(fr.build_full(16385 + k % 1000, 0, 3, 0, 0, 6, 1, ie.build_ies(items)))
    return out


NEWS = _distinct_news(1000)


@pytest.mark.parametrize("impl", IMPL_IDS)
def test_parse_new(benchmark: Any, impl: str) -> None:
    """parse_full + parse_ies of a NEW with 21 IEs, as Asterisk sends it, cycling through 1,000
    calls whose per-call IEs differ."""
    benchmark.group = "parse NEW (full frame + 21 IEs, x1000 distinct calls)"
    fr, ie = _impls(impl)
    parse_full, parse_ies = fr.parse_full, ie.parse_ies

    def run() -> int:
        total = 0
        for frame in NEWS:
            total += len(parse_ies(parse_full(frame).payload))
        return total

    assert benchmark(run) == 21 * len(NEWS)


@pytest.mark.parametrize("impl", IMPL_IDS)
def test_build_new(benchmark: Any, impl: str) -> None:
    """build_ies + build_full of the same NEW."""
    benchmark.group = "build NEW (21 IEs + full frame)"
    fr, ie = _impls(impl)
    items = ie.parse_ies(NEW[12:])

    def run() -> bytes:
        return fr.build_full(16385, 0, 3, 0, 0, 6, 1, ie.build_ies(items))  # type: ignore[no-any-return]

    assert benchmark(run) == NEW


@pytest.mark.parametrize("impl", IMPL_IDS)
def test_parse_mini(benchmark: Any, impl: str) -> None:
    """classify + parse_mini of a 160-byte voice mini frame."""
    benchmark.group = "classify + parse mini"
    fr, _ = _impls(impl)

    def run() -> int:
        fr.classify(MINI)
        return fr.parse_mini(MINI)[0]  # type: ignore[no-any-return]

    assert benchmark(run) == 16385


@pytest.mark.parametrize("impl", IMPL_IDS)
def test_build_ack(benchmark: Any, impl: str) -> None:
    """build_full of an ACK (no payload)."""
    benchmark.group = "build ACK"
    fr, _ = _impls(impl)
    assert len(benchmark(fr.build_full, 2, 16385, 1234, 1, 2, 6, 4)) == 12
