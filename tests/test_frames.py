"""Frame codec (both implementations): hand vectors, round-trips, subclass coding, bad input."""

from __future__ import annotations

from types import ModuleType

import pytest
from _vectors import all_vectors, load

from iaxgw._core import frames
from iaxgw._core._select import USING_EXTENSIONS, both
from iaxgw._core.constants import DatagramKind, FrameType, IAXSubclass
from iaxgw._core.errors import FrameError

IMPLS = both("frames")


@pytest.fixture(params=IMPLS, ids=[m.__name__.rsplit("_", 1)[-1] for m in IMPLS])
def m(request: pytest.FixtureRequest) -> ModuleType:
    return request.param  # type: ignore[no-any-return]


FULL_VECTORS = {
    # name: (scallno, dcallno, retransmit, ts, oseqno, iseqno, frametype, csub, subclass)
    "hand_new": (16385, 0, False, 3, 0, 0, FrameType.IAX, 0x01, IAXSubclass.NEW),
    "hand_accept": (4660, 16385, False, 10, 0, 1, FrameType.IAX, 0x07, IAXSubclass.ACCEPT),
    "hand_hangup": (4660, 16385, False, 5000, 3, 2, FrameType.IAX, 0x05, IAXSubclass.HANGUP),
    "hand_reject": (4660, 16385, False, 20, 1, 1, FrameType.IAX, 0x06, IAXSubclass.REJECT),
    "hand_calltoken": (1, 16385, False, 3, 0, 1, FrameType.IAX, 0x28, IAXSubclass.CALLTOKEN),
    "hand_authreq": (4660, 16385, False, 10, 0, 1, FrameType.IAX, 0x08, IAXSubclass.AUTHREQ),
    "hand_pong": (4660, 16385, True, 21000, 5, 4, FrameType.IAX, 0x03, IAXSubclass.PONG),
    "hand_regack": (4660, 16385, False, 100, 1, 2, FrameType.IAX, 0x0F, IAXSubclass.REGACK),
    "hand_voice_full": (16385, 4660, False, 160, 2, 1, FrameType.VOICE, 0x04, 4),
    "hand_voice_full_log": (16385, 4660, False, 160, 2, 1, FrameType.VOICE, 0x82, 4),
    "hand_video_full": (16385, 4660, False, 256, 3, 1, FrameType.VIDEO, 0xD5, 1 << 21),
}


@pytest.mark.parametrize("name", sorted(FULL_VECTORS))
def test_full_vectors(m: ModuleType, name: str) -> None:
    data = load(name)
    assert m.classify(data) == DatagramKind.FULL
    f = m.parse_full(data)
    scall, dcall, rt, ts, oseq, iseq, ftype, csub, sub = FULL_VECTORS[name]
    assert (f.scallno, f.dcallno, f.retransmit, f.ts) == (scall, dcall, rt, ts)
    assert (f.oseqno, f.iseqno, f.frametype, f.csub, f.subclass) == (oseq, iseq, ftype, csub, sub)
    assert f.payload == data[12:]
    assert type(f.payload) is bytes
    assert f.to_bytes() == data
    # every input type gives the same frame
    assert m.parse_full(bytearray(data)) == f
    assert m.parse_full(memoryview(data)) == f
    assert m.parse_full(memoryview(b"xx" + data)[2:]) == f


def test_video_full_marker(m: ModuleType) -> None:
    f = m.parse_full(load("hand_video_full"))
    assert f.video_marker is True
    assert f.subclass == 1 << 21
    f.csub = 0x95
    assert f.video_marker is False and f.subclass == 1 << 21
    # 0x40 is an ordinary value bit on non-video frames
    v = m.FullFrame(2, 3, 0, 0, 0, FrameType.VOICE, 0x40)
    assert v.subclass == 0x40 and v.video_marker is False


def test_build_full_matches_vectors(m: ModuleType) -> None:
    assert m.build_full(16385, 4660, 160, 2, 1, 2, 4, b"\xff" * 4) == load("hand_voice_full")
    accept = load("hand_accept")
    assert m.build_full(4660, 16385, 10, 0, 1, 6, 7, accept[12:]) == accept
    pong = load("hand_pong")
    assert m.build_full(4660, 16385, 21000, 5, 4, 6, 3, pong[12:], retransmit=True) == pong
    assert m.build_full(1, 2, 0, 0, 0, 6, 4, bytearray(b"ab"))[12:] == b"ab"


def test_mini_vector(m: ModuleType) -> None:
    data = load("hand_mini")
    assert m.classify(data) == DatagramKind.MINI
    callno, ts16, payload = m.parse_mini(data)
    assert (callno, ts16) == (16385, 0x1234)
    assert isinstance(payload, memoryview)
    assert payload.tobytes() == b"\xff" * 160
    assert m.build_mini(callno, ts16, payload) == data
    buf = bytearray(data)
    _, _, view = m.parse_mini(buf)
    buf[4] = 0x7F
    assert view[0] == 0x7F  # a view, not a copy


def test_video_mini_vector(m: ModuleType) -> None:
    data = load("hand_video_mini")
    assert m.classify(data) == DatagramKind.VIDEO_MINI
    callno, ts15, marker, payload = m.parse_video_mini(data)
    assert (callno, ts15, marker) == (16385, 100, True)
    assert bytes(payload) == bytes.fromhex("0000000165888000")
    assert m.build_video_mini(callno, ts15, payload, marker=True) == data
    assert m.build_video_mini(callno, ts15, payload)[4] == 0x00


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", DatagramKind.TOO_SHORT),
        (b"\x80\x01\x00", DatagramKind.TOO_SHORT),
        (b"\x00\x00\x80\x01", DatagramKind.VIDEO_MINI),
        (b"\x00\x00\x01\x00\x00\x00\x00\x00", DatagramKind.META),
        (b"\x00\x00\x00\x00", DatagramKind.META),
        (b"\x80\x01\x00\x00", DatagramKind.FULL),  # short FULL is still FULL
        (b"\x00\x01\x00\x00", DatagramKind.MINI),
        (b"\x01\x00\x80\x00", DatagramKind.MINI),
    ],
)
def test_classify(m: ModuleType, data: bytes, kind: int) -> None:
    assert m.classify(data) == kind
    assert m.classify(bytearray(data)) == kind


@pytest.mark.parametrize(
    ("value", "byte"),
    [
        (0, 0x00), (1, 0x01), (4, 0x04), (0x7F, 0x7F), (0x80, 0x87), (0x100, 0x88),
        (0x1000, 0x8C), (1 << 34, 0xA2), (1 << 63, 0xBF), (-1, 0xFF),
    ],
)
def test_compress_subclass(m: ModuleType, value: int, byte: int) -> None:
    assert m.compress_subclass(value) == byte
    assert m.uncompress_subclass(byte) == value


def test_uncompress_forms(m: ModuleType) -> None:
    assert m.uncompress_subclass(0x04) == 4
    assert m.uncompress_subclass(0x82) == 4
    assert m.uncompress_subclass(0xFF) == -1
    assert m.uncompress_subclass(0xC2) == 4  # Asterisk masks the shift with 0x3F
    assert m.compress_subclass(0x100) == 0x88  # g729


@pytest.mark.parametrize("value", [-2, 0x81, 0x300, 1 << 64, (1 << 70) + 1, "4", 4.0])
def test_compress_subclass_errors(m: ModuleType, value: object) -> None:
    with pytest.raises(FrameError, match="subclass"):
        m.compress_subclass(value)


@pytest.mark.parametrize("byte", [-1, 256, None])
def test_uncompress_subclass_errors(m: ModuleType, byte: object) -> None:
    with pytest.raises(FrameError, match="csub"):
        m.uncompress_subclass(byte)


@pytest.mark.parametrize(
    ("args", "what"),
    [
        ((0x8000, 0, 0, 0, 0, 6, 1), "scallno"),
        ((1, -1, 0, 0, 0, 6, 1), "dcallno"),
        ((1, 0, 1 << 32, 0, 0, 6, 1), "ts"),
        ((1, 0, 0, 256, 0, 6, 1), "oseqno"),
        ((1, 0, 0, 0, -1, 6, 1), "iseqno"),
        ((1, 0, 0, 0, 0, 256, 1), "frametype"),
        ((1, 0, 0, 0, 0, 6, 0x81), "subclass"),
        ((1.0, 0, 0, 0, 0, 6, 1), "scallno must be an int"),
    ],
)
def test_build_full_errors(m: ModuleType, args: tuple[object, ...], what: str) -> None:
    with pytest.raises(FrameError, match=what):
        m.build_full(*args)


def test_build_payload_type_error(m: ModuleType) -> None:
    with pytest.raises(FrameError, match="payload must be bytes-like"):
        m.build_full(1, 0, 0, 0, 0, 6, 1, "text")
    with pytest.raises(FrameError, match="payload"):
        m.build_mini(1, 0, None)


def test_fullframe_object(m: ModuleType) -> None:
    f = m.FullFrame(2, 3, 4, 5, 6, FrameType.CONTROL, 0xFF, b"x", retransmit=True)
    assert f.subclass == -1
    g = m.parse_full(f.to_bytes())
    assert g == f
    assert (g != f) is False
    assert repr(g) == repr(f)
    assert repr(f).startswith("FullFrame(scallno=2, dcallno=3, ts=4")
    g.iseqno = 7
    assert g != f
    assert f != "frame"
    with pytest.raises(TypeError):
        hash(f)
    f.retransmit = False
    assert f.to_bytes()[2] & 0x80 == 0
    f.ts = 1 << 32
    with pytest.raises(FrameError, match="ts"):
        f.to_bytes()
    with pytest.raises(FrameError, match="csub"):
        m.FullFrame(2, 3, 4, 5, 6, 4, 256)


@pytest.mark.parametrize(
    ("func", "data", "offset", "what"),
    [
        ("parse_full", b"\x80\x01" + bytes(9), 0, "12-byte header"),
        ("parse_full", b"\x00\x01" + bytes(10), 0, "F bit clear"),
        ("parse_mini", b"\x00\x01\x00", 0, "4-byte header"),
        ("parse_mini", b"\x80\x01\x00\x00", 0, "F bit set"),
        ("parse_mini", b"\x00\x00\x00\x00", 0, "call number 0"),
        ("parse_video_mini", b"\x00\x00\x80\x01\x00", 0, "6-byte header"),
        ("parse_video_mini", b"\x00\x01\x80\x01\x00\x00", 0, "start with 0x0000"),
        ("parse_video_mini", b"\x00\x00\x00\x01\x00\x00", 2, "meta frame"),
        ("parse_video_mini", b"\x00\x00\x80\x00\x00\x00", 2, "call number 0"),
    ],
)
def test_parse_errors(m: ModuleType, func: str, data: bytes, offset: int, what: str) -> None:
    with pytest.raises(FrameError, match=what) as info:
        getattr(m, func)(data)
    assert info.value.offset == offset


def test_mini_builder_ranges(m: ModuleType) -> None:
    with pytest.raises(FrameError, match="callno"):
        m.build_mini(0, 0, b"")
    with pytest.raises(FrameError, match="ts16"):
        m.build_mini(1, 0x10000, b"")
    with pytest.raises(FrameError, match="ts15"):
        m.build_video_mini(1, 0x8000, b"")


@pytest.mark.parametrize("name", sorted(all_vectors("hand_")))
def test_every_prefix_parses_or_raises(m: ModuleType, name: str) -> None:
    data = load(name)
    for cut in range(len(data) + 1):
        prefix = data[:cut]
        kind = m.classify(prefix)
        parser = {
            DatagramKind.FULL: m.parse_full,
            DatagramKind.MINI: m.parse_mini,
            DatagramKind.VIDEO_MINI: m.parse_video_mini,
        }.get(kind)
        for func in (m.parse_full, m.parse_mini, m.parse_video_mini):
            try:
                func(prefix)
            except FrameError as exc:
                assert exc.offset >= 0
                assert func is not parser or cut < 12 or kind != DatagramKind.FULL


def test_dispatcher_exposes_api() -> None:
    for name in ("FullFrame", "parse_full", "build_full", "parse_mini", "build_mini",
                 "parse_video_mini", "build_video_mini", "classify", "compress_subclass",
                 "uncompress_subclass"):
        assert getattr(frames, name) is getattr(IMPLS[0 if USING_EXTENSIONS else -1], name)


def test_same_public_names() -> None:
    if len(IMPLS) < 2:
        pytest.skip("compiled core not built")
    c, py = IMPLS
    assert sorted(c.__all__) == sorted(py.__all__)
    for name in c.__all__:
        assert hasattr(c, name) and hasattr(py, name)
    public = {n for n in dir(py.FullFrame) if not n.startswith("_")}
    assert public == {n for n in dir(c.FullFrame) if not n.startswith("_")}
