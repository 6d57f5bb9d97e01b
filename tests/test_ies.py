"""IE codec (both implementations): hand vectors, typed values, round-trips, bad input, IEs."""

from __future__ import annotations

import datetime
from types import ModuleType

import pytest
from _vectors import all_vectors, load

from iaxgw._core import ies as ies_mod
from iaxgw._core._select import USING_EXTENSIONS, both
from iaxgw._core.constants import IE, IE_KINDS, IEKind
from iaxgw._core.errors import FrameError
from iaxgw._core.ies import IEs, capability_from, format_from

IMPLS = both("ies")
DT = datetime.datetime(2024, 5, 6, 7, 8, 10)
TOKEN = "1718000000?3f2a9c0d5e7b8a1f6c4d2e0b9a8f7e6d5c4b3a29"


@pytest.fixture(params=IMPLS, ids=[m.__name__.rsplit("_", 1)[-1] for m in IMPLS])
def m(request: pytest.FixtureRequest) -> ModuleType:
    return request.param  # type: ignore[no-any-return]


EXPECTED = {
    "hand_new": [
        (IE.VERSION, 2), (IE.CALLED_NUMBER, "100"), (IE.CODEC_PREFS, "DE"),
        (IE.CALLING_NUMBER, "5551000"), (IE.CALLINGPRES, 0), (IE.CALLINGTON, 0),
        (IE.CALLINGTNS, 0), (IE.CALLINGANI2, 0), (IE.CALLING_NAME, "Site A"),
        (IE.LANGUAGE, "en"), (IE.DNID, "100"), (IE.CALLED_CONTEXT, "from-trunk"),
        (IE.USERNAME, "siteb"), (IE.FORMAT, 4), (IE.FORMAT2, 4), (IE.CAPABILITY, 0x0E),
        (IE.CAPABILITY2, (1 << 34) | 0x0E), (IE.ADSICPE, 2), (IE.DATETIME, DT),
        (IE.VARIABLE, "X-Site=A"), (IE.CALLTOKEN, b""),
    ],
    "hand_accept": [(IE.FORMAT, 4), (IE.FORMAT2, 4)],
    "hand_hangup": [(IE.CAUSECODE, 16)],
    "hand_reject": [(IE.CAUSE, "No authority found"), (IE.CAUSECODE, 50)],
    "hand_calltoken": [(IE.CALLTOKEN, TOKEN.encode())],
    "hand_authreq": [(IE.AUTHMETHODS, 2), (IE.CHALLENGE, "214748364"), (IE.USERNAME, "siteb")],
    "hand_pong": [
        (IE.RR_JITTER, 20), (IE.RR_LOSS, 0x01000005), (IE.RR_PKTS, 1000), (IE.RR_DELAY, 40),
        (IE.RR_DROPPED, 2), (IE.RR_OOO, 1),
    ],
    "hand_regack": [
        (IE.USERNAME, "siteb"), (IE.DATETIME, DT), (IE.REFRESH, 60),
        (IE.APPARENT_ADDR, ("192.168.1.10", 4569)), (IE.MSGCOUNT, 0x0102),
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hand_vectors(m: ModuleType, name: str) -> None:
    payload = load(name)[12:]
    got = m.parse_ies(payload)
    assert got == EXPECTED[name]
    for (_, a), (_, b) in zip(got, EXPECTED[name]):
        assert type(a) is type(b)
    assert m.build_ies(got) == payload
    assert m.build_ies(EXPECTED[name]) == payload
    assert m.parse_ies(bytearray(payload)) == got
    assert m.parse_ies(memoryview(payload)) == got


def test_new_as_asterisk_sends_it(m: ModuleType) -> None:
    got = m.parse_ies(load("hand_new")[12:])
    assert len(got) == 21
    assert got[0] == (IE.VERSION, 2)
    assert got[-1] == (IE.CALLTOKEN, b"")


def test_repeated_ies_kept_in_order(m: ModuleType) -> None:
    items = [(IE.VARIABLE, "a=1"), (IE.FORMAT, 4), (IE.VARIABLE, "b=2"), (IE.VARIABLE, "a=3")]
    assert m.parse_ies(m.build_ies(items)) == items


@pytest.mark.parametrize(
    ("item", "wire"),
    [
        ((IE.AUTOANSWER, None), "1900"),
        ((IE.MUSICONHOLD, None), "1a00"),
        ((IE.MUSICONHOLD, "default"), "1a07" + b"default".hex()),
        ((IE.CALLINGPRES, 0x43), "2601 43"),
        ((IE.CAUSECODE, 255), "2a01 ff"),
        ((IE.ENCRYPTION, 0x8001), "2b02 8001"),
        ((IE.TRANSFERID, 0xFFFFFFFF), "1b04 ffffffff"),
        ((IE.FORMAT2, (1 << 64) - 1), "3809 00 ffffffffffffffff"),
        ((IE.FORMAT2, b"\x01abc"), "3804 01616263"),  # unknown version kept raw
        ((IE.CAPABILITY2, b""), "3700"),
        ((IE.APPARENT_ADDR, ("2001:db8::1", 4569)),
         "121c 0a00 11d9 00000000 20010db8000000000000000000000001 00000000"),
        ((IE.APPARENT_ADDR, b"\x00\x02" + bytes(14)), "1210 0002" + "00" * 14),  # raw
        ((IE.APPARENT_ADDR, b"\x02\x00\x11\xd9\x01\x02\x03\x04" + b"\x01" + bytes(7)),
         "1210 020011d901020304 0100000000000000"),  # non-zero padding: raw
        ((IE.USERNAME, "caf\u00e9"), "0605 636166c3a9"),
        ((IE.USERNAME, "\udcff\udcfe"), "0602 fffe"),  # invalid UTF-8 round-trips
        ((IE.OSPTOKEN, b"\x00tok"), "3504 00746f6b"),
        ((200, b"\x01\x02"), "c802 0102"),  # unknown id
        ((0, b""), "0000"),
        ((IE.DATETIME, datetime.datetime(2127, 12, 31, 23, 59, 58)), "1f04 ff9fbf7d"),
    ],
)
def test_typed_values(m: ModuleType, item: tuple[int, object], wire: str) -> None:
    data = bytes.fromhex(wire.replace(" ", ""))
    assert m.build_ies([item]) == data
    assert m.parse_ies(data) == [item]


def test_int_and_bytes_accepted_for_typed_ids(m: ModuleType) -> None:
    assert m.build_ies([(IE.DATETIME, 0x30A63905)]) == bytes.fromhex("1f0430a63905")
    assert m.build_ies([(IE.FORMAT, b"\x00\x00\x00\x04")]) == bytes.fromhex("090400000004")
    assert m.build_ies([(IE.USERNAME, bytearray(b"ab"))]) == b"\x06\x02ab"
    assert m.build_ies([(IE.CALLTOKEN, memoryview(b"t"))]) == b"\x36\x01t"
    assert m.build_ies([]) == b""
    assert m.parse_ies(b"") == []


def test_datetime_helpers(m: ModuleType) -> None:
    assert m.decode_datetime(0x30A63905) == DT
    assert m.encode_datetime(DT) == 0x30A63905
    assert m.encode_datetime(datetime.datetime(2024, 5, 6, 7, 8, 11, 999)) == 0x30A63905
    with pytest.raises(FrameError, match="DATETIME"):
        m.decode_datetime(0)  # month 0
    with pytest.raises(FrameError, match="year"):
        m.encode_datetime(datetime.datetime(1999, 1, 1))


@pytest.mark.parametrize(
    ("wire", "offset", "what"),
    [
        ("0b", 0, "truncated IE header"),
        ("0b020002 01", 4, "truncated IE header"),
        ("0b03 0002", 0, r"VERSION\(11\) length 3 overruns"),
        ("0b020002 0105 6162", 4, r"CALLED_NUMBER\(1\) length 5 overruns"),
        ("0b01 02", 0, r"VERSION\(11\) must be 2 bytes, got 1"),
        ("0903 000004", 0, r"FORMAT\(9\) must be 4 bytes"),
        ("2a02 0010", 0, r"CAUSECODE\(42\) must be 1 bytes"),
        ("1901 00", 0, r"AUTOANSWER\(25\) must be empty"),
        ("3808 00 00000000000004", 0, r"FORMAT2\(56\) version 0 must be 9 bytes"),
        ("1f04 00000000", 0, "invalid DATETIME"),
        ("0b020002 1f04 3fa63905", 4, "invalid DATETIME"),  # seconds field 31 -> 62 s
        ("c805 0102", 0, "IE 200 length 5 overruns"),
    ],
)
def test_parse_errors(m: ModuleType, wire: str, offset: int, what: str) -> None:
    with pytest.raises(FrameError, match=what) as info:
        m.parse_ies(bytes.fromhex(wire.replace(" ", "")))
    assert info.value.offset == offset


@pytest.mark.parametrize(
    ("items", "what"),
    [
        ([(IE.USERNAME, "x" * 256)], "256 bytes, more than 255"),
        ([(IE.CALLTOKEN, b"x" * 300)], "more than 255"),
        ([(IE.VERSION, 0x10000)], r"VERSION\(11\) value 65536 does not fit in 16 bits"),
        ([(IE.CAUSECODE, -1)], "does not fit in 8 bits"),
        ([(IE.FORMAT2, 1 << 64)], "does not fit in 64 bits"),
        ([(IE.FORMAT, "4")], "needs an int or bytes"),
        ([(IE.USERNAME, 5)], "needs a str or bytes"),
        ([(IE.AUTOANSWER, "yes")], "needs None or bytes"),
        ([(IE.CALLTOKEN, "token")], "needs bytes"),
        ([(IE.APPARENT_ADDR, ("nohost", 1))], "not an IPv4 or IPv6 address"),
        ([(IE.APPARENT_ADDR, ("1.2.3.4", 70000))], "port 70000"),
        ([(IE.APPARENT_ADDR, "1.2.3.4")], "needs a .host, port. tuple"),
        ([(256, b"")], "IE id 256"),
        ([("x", b"")], "IE id 'x'"),
        ([(1, "a", 2)], "pair"),
        ([5], "pair"),
    ],
)
def test_build_errors(m: ModuleType, items: list[object], what: str) -> None:
    with pytest.raises(FrameError, match=what):
        m.build_ies(items)


@pytest.mark.parametrize("name", sorted(all_vectors("hand_")))
def test_every_prefix_parses_or_raises(m: ModuleType, name: str) -> None:
    data = load(name)
    payload = data[12:] if data[0] & 0x80 else data
    for cut in range(len(payload) + 1):
        try:
            items = m.parse_ies(payload[:cut])
        except FrameError as exc:
            assert 0 <= exc.offset < cut
        else:
            assert m.build_ies(items) == payload[:cut]


def test_ie_kinds_cover_every_known_id() -> None:
    assert len(IE_KINDS) == 256
    assert IE_KINDS[IE.CODEC_PREFS] is IEKind.STRING
    assert IE_KINDS[IE.CALLTOKEN] is IEKind.RAW
    assert IE_KINDS[IE.CALLINGANI2] is IEKind.U32
    assert IE_KINDS[250] is IEKind.RAW
    assert [i.value for i in IE] == list(range(1, 58))


def test_ies_wrapper() -> None:
    ies = IEs.parse(load("hand_new")[12:])
    assert len(ies) == 21
    assert IE.CALLTOKEN in ies and IE.PASSWORD not in ies
    assert ies.get(IE.USERNAME) == "siteb"
    assert ies.get(IE.PASSWORD) is None and ies.get(IE.PASSWORD, "") == ""
    assert ies.get_all(IE.VARIABLE) == ["X-Site=A"]
    assert next(iter(ies)) == (IE.VERSION, 2)
    assert ies.items[-1] == (IE.CALLTOKEN, b"")
    assert ies.to_bytes() == load("hand_new")[12:]
    assert IEs(ies.items) == ies
    assert "USERNAME='siteb'" in repr(ies)
    assert format_from(ies) == 4
    assert capability_from(ies) == (1 << 34) | 0x0E
    with pytest.raises(FrameError):
        IEs.parse(b"\x01")


def test_format_helpers_prefer_wide_ies() -> None:
    # FORMAT2 wins whatever the order; an unknown-version FORMAT2 is ignored
    assert format_from([(IE.FORMAT2, 1 << 34), (IE.FORMAT, 4)]) == 1 << 34
    assert format_from([(IE.FORMAT, 4), (IE.FORMAT2, 8)]) == 8
    assert format_from([(IE.FORMAT, 4), (IE.FORMAT2, b"\x01x")]) == 4
    assert format_from([(IE.CAPABILITY, 4)]) is None
    assert capability_from(IEs([(IE.CAPABILITY, 6)])) == 6
    assert capability_from([]) is None


def test_dispatcher_exposes_api() -> None:
    for name in ("parse_ies", "build_ies", "decode_datetime", "encode_datetime"):
        assert getattr(ies_mod, name) is getattr(IMPLS[0 if USING_EXTENSIONS else -1], name)


def test_same_public_names() -> None:
    if len(IMPLS) < 2:
        pytest.skip("compiled core not built")
    c, py = IMPLS
    assert sorted(c.__all__) == sorted(py.__all__)
    for name in c.__all__:
        assert callable(getattr(c, name)) and callable(getattr(py, name))
