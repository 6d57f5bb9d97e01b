"""Hypothesis cross-checks: the compiled core and the pure-Python twin agree byte for byte."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iaxgw._core._select import both
from iaxgw._core.constants import IE_KINDS, IEKind
from iaxgw._core.errors import FrameError

FRAMES = both("frames")
IES = both("ies")
pytestmark = pytest.mark.skipif(len(FRAMES) < 2 or len(IES) < 2, reason="compiled core not built")
FC, FP = (FRAMES + FRAMES)[:2]
IC, IP = (IES + IES)[:2]
SETTINGS = settings(max_examples=300, deadline=None)


def outcome(func: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """("ok", normalized result) or ("error", (message, offset)); other exceptions propagate."""
    try:
        result = func(*args)
    except FrameError as exc:
        return "error", (str(exc), exc.offset)
    if isinstance(result, tuple):
        result = tuple(bytes(x) if isinstance(x, memoryview) else x for x in result)
    elif hasattr(result, "to_bytes") and not isinstance(result, int):
        result = (repr(result), result.to_bytes())
    return "ok", result


def corrupt(data: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    buf = bytearray(data)
    for pos, val in edits:
        if buf:
            buf[pos % len(buf)] = val
    return bytes(buf[: cut % (len(buf) + 1)]) if buf else b""


u8 = st.integers(0, 0xFF)
callno = st.integers(0, 0x7FFF)
payload = st.binary(max_size=64)


@SETTINGS
@given(st.binary(max_size=40))
def test_frame_parsers_agree_on_random_bytes(data: bytes) -> None:
    for name in ("classify", "parse_full", "parse_mini", "parse_video_mini"):
        assert outcome(getattr(FC, name), data) == outcome(getattr(FP, name), data), name


@SETTINGS
@given(callno, callno, st.integers(0, 0xFFFFFFFF), u8, u8, u8,
       st.one_of(st.integers(-1, 0x7F), st.integers(7, 63).map(lambda s: 1 << s)),
       payload, st.booleans())
def test_build_full_cross(s: int, d: int, ts: int, o: int, i: int, ft: int, sub: int,
                          body: bytes, rt: bool) -> None:
    for build, parse in ((FC, FP), (FP, FC)):
        data = build.build_full(s, d, ts, o, i, ft, sub, body, rt)
        f = parse.parse_full(data)
        assert (f.scallno, f.dcallno, f.ts, f.oseqno, f.iseqno) == (s, d, ts, o, i)
        assert (f.frametype, f.payload, f.retransmit) == (ft, body, rt)
        if ft != 3:
            assert f.subclass == sub
        assert f.to_bytes() == data
        assert build.parse_full(data).to_bytes() == data


@SETTINGS
@given(st.integers(1, 0x7FFF), st.integers(0, 0xFFFF), payload, st.booleans())
def test_build_mini_cross(c: int, ts: int, body: bytes, marker: bool) -> None:
    for build, parse in ((FC, FP), (FP, FC)):
        cn, t, view = parse.parse_mini(build.build_mini(c, ts, body))
        assert (cn, t, bytes(view)) == (c, ts, body)
        cn, t, mk, view = parse.parse_video_mini(build.build_video_mini(c, ts & 0x7FFF, body,
                                                                        marker))
        assert (cn, t, mk, bytes(view)) == (c, ts & 0x7FFF, marker, bytes(body))


@SETTINGS
@given(st.integers(-3, 1 << 66))
def test_subclass_coding_agrees(value: int) -> None:
    assert outcome(FC.compress_subclass, value) == outcome(FP.compress_subclass, value)
    b = value & 0xFF
    assert FC.uncompress_subclass(b) == FP.uncompress_subclass(b)


def ie_value(ie: int) -> st.SearchStrategy[object]:
    kind = IE_KINDS[ie]
    text = st.text(max_size=40)
    return {
        IEKind.STRING: text,
        IEKind.U8: st.integers(0, 0xFF),
        IEKind.U16: st.integers(0, 0xFFFF),
        IEKind.U32: st.integers(0, 0xFFFFFFFF),
        IEKind.EMPTY: st.none(),
        IEKind.OPT_STRING: st.one_of(st.none(), text.filter(bool)),
        IEKind.VERSIONED_U64: st.integers(0, (1 << 64) - 1),
        IEKind.SOCKADDR: st.tuples(
            st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str),
            st.integers(0, 0xFFFF)),
        IEKind.DATETIME: st.datetimes(datetime.datetime(2000, 1, 1),
                                      datetime.datetime(2127, 12, 31)).map(
            lambda t: t.replace(second=t.second & ~1, microsecond=0)),
        IEKind.RAW: st.binary(max_size=40),
    }[kind]


ie_items = st.lists(
    st.integers(0, 255).flatmap(lambda ie: st.tuples(st.just(ie), ie_value(ie))), max_size=12
)


@SETTINGS
@given(ie_items)
def test_build_ies_cross(items: list[tuple[int, object]]) -> None:
    data = IC.build_ies(items)
    assert IP.build_ies(items) == data
    for parse in (IC, IP):
        got = parse.parse_ies(data)
        assert [k for k, _ in got] == [k for k, _ in items]
        for (_, a), (_, b) in zip(got, items):
            if isinstance(b, tuple):  # addresses come back in canonical text form
                import ipaddress
                assert ipaddress.ip_address(a[0]) == ipaddress.ip_address(b[0])  # type: ignore[index]
                assert a[1] == b[1]  # type: ignore[index]
            else:
                assert a == b
        assert IC.build_ies(got) == data == IP.build_ies(got)


@SETTINGS
@given(st.binary(max_size=80))
def test_ie_parsers_agree_on_random_bytes(data: bytes) -> None:
    c = outcome(IC.parse_ies, data)
    assert c == outcome(IP.parse_ies, data)
    if c[0] == "ok":
        assert IC.build_ies(c[1]) == data == IP.build_ies(c[1])


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=20)), max_size=8),
       st.lists(st.tuples(st.integers(0, 400), u8), max_size=4), st.integers(0, 500))
def test_ie_parsers_agree_on_corrupted_ies(raw: list[tuple[int, bytes]],
                                           edits: list[tuple[int, int]], cut: int) -> None:
    data = corrupt(b"".join(bytes([ie, len(v)]) + v for ie, v in raw), edits, cut)
    c = outcome(IC.parse_ies, data)
    assert c == outcome(IP.parse_ies, data)
    if c[0] == "ok":
        assert IC.build_ies(c[1]) == data


@SETTINGS
@given(st.sampled_from(["hand_new", "hand_regack", "hand_pong", "hand_mini",
                        "hand_video_mini", "hand_video_full"]),
       st.lists(st.tuples(st.integers(0, 400), u8), min_size=1, max_size=6),
       st.integers(0, 500))
def test_corrupted_vectors_parse_or_raise(name: str, edits: list[tuple[int, int]],
                                          cut: int) -> None:
    from _vectors import load

    data = corrupt(load(name), edits, cut)
    for fn in ("classify", "parse_full", "parse_mini", "parse_video_mini"):
        assert outcome(getattr(FC, fn), data) == outcome(getattr(FP, fn), data)
    body = data[12:]
    assert outcome(IC.parse_ies, body) == outcome(IP.parse_ies, body)


good_ie = st.one_of(
    st.tuples(st.sampled_from([1, 2, 6, 54, 200]), st.binary(max_size=12)),
    st.tuples(st.just(9), st.binary(min_size=4, max_size=4)),
    st.tuples(st.just(11), st.binary(min_size=2, max_size=2)),
)


@SETTINGS
@given(st.lists(good_ie, min_size=40, max_size=70), st.integers(0, 70),
       st.sampled_from([b"", b"\x0b\x01\x00", b"\x1f\x04\xff\xff\xff\xff"]),
       st.sampled_from([b"", b"\x01", b"\x06\x09"]))
def test_ie_parsers_agree_around_the_one_pass_limit(raw: list[tuple[int, bytes]], at: int,
                                                    bad: bytes, tail: bytes) -> None:
    """Payloads of 40..70 IEs (the compiled parser does up to 48 in one pass, else it redoes the
    payload checking its structure first), optionally with a bad value at IE ``at`` and/or a
    broken tail: the same pairs or the same first error as the twin."""
    ies = [bytes([ie, len(v)]) + v for ie, v in raw]
    data = b"".join(ies[:at]) + bad + b"".join(ies[at:]) + tail
    assert outcome(IC.parse_ies, data) == outcome(IP.parse_ies, data)


def test_ie_cache_admission_keeps_results_equal() -> None:
    """Parsing NEWs whose per-call IEs change between repeated ones (the compiled parser caches an
    IE once it is seen twice, evicting pairs that are not hit): every result equals the twin's,
    also after the cache is emptied, and repeated IEs come back as the same objects."""
    from _vectors import load

    base = IP.parse_ies(load("hand_new")[12:])
    clear = getattr(IC, "_clear_cache", lambda: None)
    for k in range(3000):
        if k == 1500:
            clear()
        per_call = {1: f"{k % 7}", 2: f"555{k:05d}", 4: f"Site {k % 300}", 13: f"{k}",
                    31: 0x30A60000 | (k // 30 % 60) << 5 | k % 30}
        items = [(i, per_call.get(i, v)) for i, v in base]
        data = IP.build_ies(items)
        got = IC.parse_ies(data)
        assert got == IP.parse_ies(data)
    again = IC.parse_ies(data)
    if IC is not IP:
        assert sum(a is b for a, b in zip(got, again)) >= 14  # the IEs every NEW repeats
