"""Fuzz targets for the iaxgw wire core and the sans-IO Endpoint (README's Fuzzing).

Each target is ``fn(data: bytes) -> None``: it returns normally when the input was handled as
documented and raises :class:`Finding` (or any other exception) when it was not.  The contract:

* parsers (``frames``, ``ies``, ``trunk``, ``g711``) end in success or ``FrameError``; the compiled
  module and its pure-Python twin give the same result, or both raise ``FrameError`` with the same
  message; round trips hold where the input is canonical (``build_ies(parse_ies(x)) == x``,
  ``parse_full(x).to_bytes() == x``, ``pack_trunk(parse_trunk(x).entries) == [x]``);
* ``Endpoint.receive_datagram`` / ``handle_timer`` / ``datagrams_to_send`` never raise at all.

The same functions drive atheris (``fuzz/fuzz_one.py``) and the plain replay in
``tests/test_fuzz_smoke.py``.  Buffers are handed to the compiled parsers also as
``array('B')`` copies, whose storage is exactly ``len(data)`` bytes, so that with
``PYTHONMALLOC=malloc`` under AddressSanitizer a read even one byte past the end is caught.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import importlib
import os
import random
from collections.abc import Callable
from typing import Any

from iaxgw._core._select import flavours
from iaxgw._core.errors import FrameError

__all__ = ["TARGETS", "Finding", "compiled_available"]


class Finding(AssertionError):
    """A broken contract (mismatch between twins, failed round trip, unexpected exception)."""


def _mods(name: str) -> list[Any]:
    """[compiled, twin] when the compiled module imports, else [twin]."""
    out = []
    with contextlib.suppress(ImportError):
        out.append(importlib.import_module(f"iaxgw._core._{name}_c"))
    out.append(importlib.import_module(f"iaxgw._core._{name}_py"))
    return out


def compiled_available() -> bool:
    return len(_mods("frames")) == 2


def _outcome(fn: Callable[..., Any], *args: Any, **kw: Any) -> tuple[str, Any]:
    """('ok', normalized result) or ('err', message); anything else propagates."""
    try:
        return "ok", fn(*args, **kw)
    except FrameError as exc:
        return "err", str(exc)


def _same(what: str, outs: list[tuple[str, Any]], norm: Callable[[Any], Any] = lambda x: x) -> None:
    if len(outs) < 2:
        return
    (ka, va), (kb, vb) = outs[0], outs[1]
    if ka != kb:
        raise Finding(f"{what}: compiled -> {ka} {va!r}, twin -> {kb} {vb!r}")
    if ka == "err":
        if va != vb:
            raise Finding(f"{what}: error messages differ: {va!r} vs {vb!r}")
        return
    na, nb = norm(va), norm(vb)
    if na != nb:
        raise Finding(f"{what}: results differ: {na!r} vs {nb!r}")


def _buffers(data: bytes) -> list[Any]:
    """The input as bytes and as an exactly-sized array (for ASan)."""
    return [data, array.array("B", data)]


# ------------------------------------------------------------------ frames

FRAMES = _mods("frames")


def _full_fields(f: Any) -> tuple[Any, ...]:
    return (f.scallno, f.dcallno, bool(f.retransmit), f.ts, f.oseqno, f.iseqno, f.frametype,
            f.csub, bytes(f.payload))


def _mv(t: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(bytes(x) if isinstance(x, memoryview) else x for x in t)


def target_frames(data: bytes) -> None:
    for buf in _buffers(data):
        kinds = {m.classify(buf) for m in FRAMES}
        if len(kinds) != 1:
            raise Finding(f"classify differs: {kinds}")
        fulls = [_outcome(m.parse_full, buf) for m in FRAMES]
        _same("parse_full", fulls, _full_fields)
        _same("parse_mini", [_outcome(m.parse_mini, buf) for m in FRAMES], _mv)
        _same("parse_video_mini", [_outcome(m.parse_video_mini, buf) for m in FRAMES], _mv)
        for m, (k, f) in zip(FRAMES, fulls):
            if k != "ok":
                continue
            if f.to_bytes() != data:
                raise Finding(f"{m.__name__}: parse_full(x).to_bytes() != x")
            try:
                sub = m.uncompress_subclass(f.csub)
                csub = m.compress_subclass(sub)
            except FrameError:
                continue
            if csub == f.csub:
                again = m.build_full(f.scallno, f.dcallno, f.ts, f.oseqno, f.iseqno, f.frametype,
                                     sub, f.payload, f.retransmit)
                if again != data:
                    raise Finding(f"{m.__name__}: build_full(fields of parse_full(x)) != x")
            _ = f.subclass, f.video_marker, repr(f)


# ------------------------------------------------------------------ IEs

IES = _mods("ies")


def target_ies(data: bytes) -> None:
    for buf in _buffers(data):
        outs = [_outcome(m.parse_ies, buf) for m in IES]
        _same("parse_ies", outs)
        for m, (k, items) in zip(IES, outs):
            if k != "ok":
                continue
            back = m.build_ies(items)
            if back != data:
                raise Finding(f"{m.__name__}: build_ies(parse_ies(x)) != x: {items!r}")
        # cross-encode: the compiled parser's values through the twin's builder and back
        if outs[0][0] == "ok" and len(IES) == 2 and (
                IES[1].build_ies(outs[0][1]) != data or IES[0].build_ies(outs[-1][1]) != data):
            raise Finding("build_ies of the other implementation's values != x")


# ------------------------------------------------------------------ trunk

TRUNK = _mods("trunk")
#: the media half with the codec and probes under it, per implementation (compiled first)
MEDIA = flavours("trunk", "probe", "media")


def _trunk_norm(tf: Any) -> tuple[Any, ...]:
    return (tf.trunk_ts, tf.timestamps, tf.truncated,
            [(c, t, bytes(p)) for c, t, p in tf.entries])


def _raw_callnos_clean(data: bytes, timestamps: bool) -> bool:
    """True when no entry's call number on the wire has its top bit set (masked by parsing)."""
    pos, n = 8, len(data)
    step = 6 if timestamps else 4
    while pos + step <= n:
        if timestamps:
            length, callno = int.from_bytes(data[pos:pos + 2]), data[pos + 2]
        else:
            callno, length = data[pos], int.from_bytes(data[pos + 2:pos + 4])
        if callno & 0x80:
            return False
        pos += step + length
    return True


def target_trunk(data: bytes) -> None:
    for buf in _buffers(data):
        outs = [_outcome(m.parse_trunk, buf) for m in TRUNK]
        _same("parse_trunk", outs, _trunk_norm)
        demux_outs = []
        for m in TRUNK:
            d = m.TrunkDemux()
            o = _outcome(d.feed, buf)
            demux_outs.append(o)
            ok = o[0] == "ok"
            expect = (1 if ok else 0, len(o[1].entries) if ok else 0,
                      1 if ok and o[1].truncated else 0, 0 if ok else 1)
            if (d.datagrams, d.entries, d.truncated, d.errors) != expect:
                got = (d.datagrams, d.entries, d.truncated, d.errors)
                raise Finding(f"{m.__name__}: TrunkDemux counters {got} != {expect}")
        _same("TrunkDemux.feed", demux_outs, _trunk_norm)
        for m, (k, tf) in zip(TRUNK, outs):
            if k != "ok" or tf.truncated or not tf.entries:
                continue
            if any(c == 0 for c, _, _ in tf.entries) or not _raw_callnos_clean(data, tf.timestamps):
                continue
            entries = [(c, t if t is not None else 0, p) for c, t, p in tf.entries]
            packed = m.pack_trunk(entries, tf.trunk_ts, tf.timestamps, 0)
            if packed != [data]:
                raise Finding(f"{m.__name__}: pack_trunk(parse_trunk(x).entries) != [x]")


def _media_calls(m: Any, seed: int) -> dict[int, Any]:
    """A few call records whose shape depends on ``seed``: known call numbers 1..8 (as raw
    trunk entries use), some echoing, some inactive or not yet past their first voice frame."""
    calls = {}
    for cn in range(1, 9):
        c = m.CallMedia()
        bits = (seed >> cn) & 7
        c.callno = cn
        c.state = (3, 4, 4, 5)[(seed >> (cn + 8)) & 3]
        c.start = (seed & 0xFF) / 100.0
        c.codec = 4
        c.format_rx = 0 if bits == 7 else 4
        c.trunk = bool(bits & 1)
        c.echo = bool(bits & 2)
        c.svoiceformat = 4 if bits & 4 else 0
        c.last_voice_ts = 40 if bits & 4 else -1
        c.nextpred = 60 if bits & 4 else 0
        c.addr = ("127.0.0.1", 4569)
        if (seed >> (cn + 16)) & 1:
            c.probe = m.RxProbe(20, True, 5)    # a load tester's call: entries to the probe
            if cn & 1:                          # with the exact-echo bookkeeping
                c.probe.own = frozenset((b"", b"\x00" * 160, b"\xff" * 4))
                c.probe.first = b"\x00" * 160
        calls[cn] = c
    return calls


def _media_state(calls: dict[int, Any]) -> list[Any]:
    fields = ("rx_last", "last_voice_ts", "nextpred", "lastsent", "tx_frames")
    probe = ("frames", "bytes", "duplicates", "out_of_order", "max_ts", "min_ts", "last",
             "dropped", "jitter", "jitter_max", "jitter_sum", "transit", "mask", "pending")
    return [(tuple(getattr(c, f) for f in fields),
             tuple(getattr(c.rx, f) for f in c.rx.FIELDS),
             tuple(getattr(c.probe, f) for f in probe) if c.probe is not None else None)
            for c in calls.values()]


def _probed(calls: dict[int, Any]) -> int:
    return sum(c.probe.frames for c in calls.values() if c.probe is not None)


def target_trunk_media(data: bytes) -> None:
    """receive_trunk (echoing calls, calls with a load tester's RxProbe), receive_mini (the
    datagram as a mini frame), send_trunk_voice with its mini branch, trunk_entry_stats and
    datagram_census (the compiled media paths): compiled and twin agree on results, call and
    probe state, delivered payloads, trunk output and mini frames for any datagram."""
    if len(data) < 6:
        return
    seed = int.from_bytes(data[:4], "big")
    now = data[4] * 0.37 + data[5] / 1000.0
    body = data[6:]
    runs = []
    for m in MEDIA:
        calls = _media_calls(m, seed)
        mux = m.TrunkMux(1240 if seed & 1 else 0, bool(seed & 2))
        sunk: list[Any] = []
        put = sunk.append
        o = _outcome(m.receive_trunk, body, calls, 0.25, now,
                     lambda c, ts, p, t, put=put: put((c, ts, bytes(p), t)), mux)
        if o[0] == "ok":
            n, unknown, inactive, echoed, truncated, vnak = o[1]
            o = ("ok", (n, unknown, inactive, echoed, truncated, [v.callno for v in vnak]))
            if unknown + inactive + echoed + len(sunk) + _probed(calls) != n:
                raise Finding(f"{m.__name__}: receive_trunk entries do not add up: {o[1]}")
        # the body as a mini frame of one of the calls (echoed back as a mini frame or not)
        minis: list[Any] = []
        mo = _outcome(m.receive_mini, calls[1 + (body[1] & 7) if len(body) > 1 else 1], body,
                      now + 0.01, lambda c, ts, p, t, put=put: put((c, ts, bytes(p), t)), minis)
        items = [(1 + (b & 7), body[i:i + (b % 200)]) for i, b in enumerate(body[:16])]
        rest, streams = m.send_trunk_voice(calls, items, now + 0.02,
                                           {("127.0.0.1", 4569): _Stream(mux)}, minis)
        runs.append((o, sunk, _media_state(calls), rest, len(streams), mux.flush(7),
                     _outcome(m.trunk_entry_stats, body), mo, minis,
                     m.datagram_census([(body, None), (body[:9], None), (body[:3], None)]),
                     [c.probe.take_exact() for c in calls.values() if c.probe is not None]))
    if len(runs) == 2 and runs[0] != runs[1]:
        raise Finding(f"receive_trunk/send_trunk_voice: compiled {runs[0]!r:.300} != twin "
                      f"{runs[1]!r:.300}")


class _Stream:
    def __init__(self, mux: Any) -> None:
        self.mux = mux


# ------------------------------------------------------------------ G.711

G711 = _mods("g711")
_G711_FUNCS = ("ulaw_encode", "alaw_encode", "ulaw_decode", "alaw_decode", "ulaw_to_alaw",
               "alaw_to_ulaw")


def target_g711(data: bytes) -> None:
    if not data:
        return
    sel = data[0]
    body = data[1:]
    for name in _G711_FUNCS:
        for buf in _buffers(body):
            outs = [_outcome(getattr(m, name), buf) for m in G711]
            _same(f"{name}", outs)
            k, res = outs[0]
            if k == "ok" and len(res) != (len(body) // 2 if "encode" in name else
                                          2 * len(body) if "decode" in name else len(body)):
                raise Finding(f"{name}: wrong output length {len(res)} for {len(body)} bytes")
        # out= of a size chosen by the input: exactly-sized arrays, too small -> FrameError
        need = len(body) // 2 if "encode" in name else 2 * len(body) if "decode" in name \
            else len(body)
        size = max(need - (sel & 3), 0) if sel & 4 else need + (sel & 3)
        outs = []
        bufs = []
        for m in G711:
            out = array.array("B", bytes(size))
            bufs.append(out)
            outs.append(_outcome(getattr(m, name), array.array("B", body), out=out))
        _same(f"{name}(out=)", outs)
        if outs[0][0] == "ok" and len(bufs) == 2 and bufs[0] != bufs[1]:
            raise Finding(f"{name}(out=): written buffers differ")
    # in-place transcoding (out is data) is documented as allowed
    for name in ("ulaw_to_alaw", "alaw_to_ulaw"):
        results = []
        for m in G711:
            b = bytearray(body)
            _outcome(getattr(m, name), b, out=b)
            results.append(bytes(b))
        if len(set(results)) != 1:
            raise Finding(f"{name} in place: results differ")


# ------------------------------------------------------------------ Endpoint

PEER: tuple[str, int] = ("127.0.0.10", 4569)      # office-a, the configured trunk peer
SOURCES: list[tuple[str, int]] = [PEER, ("127.0.0.10", 40000), ("127.0.0.66", 4569)]
LOCAL: tuple[str, int] = ("127.0.0.20", 4569)
SECRET = "a-strong-shared-secret"
_EP_STATE: dict[str, Any] = {"ep": None, "left": 0, "now": 1000.0}
EP_RESET_EVERY = int(os.environ.get("IAXGW_FUZZ_EP_RESET", "8"))
_CONFIG: Any = None


def _config() -> Any:
    global _CONFIG
    if _CONFIG is None:
        from iaxgw.gateway.conf.config import default_config_dir, load_iax_conf

        _CONFIG = load_iax_conf(default_config_dir("office-b") / "iax.conf")
    return _CONFIG


def _endpoint() -> Any:
    import logging

    from iaxgw.gateway.iax2.protocol import Endpoint

    logging.getLogger("iaxgw").setLevel(logging.CRITICAL)
    st = _EP_STATE
    if st["ep"] is None or st["left"] <= 0:
        st["ep"] = Endpoint(_config(), local_addr=LOCAL, rng=random.Random(7),
                            role_name="fuzz", wall_offset=1.7e9)
        st["left"] = EP_RESET_EVERY
        st["now"] = 1000.0
    st["left"] -= 1
    return st["ep"]


class _Peer:
    """The far end's view of one call: our scallno, the endpoint's callno, seqnos."""

    def __init__(self, scallno: int) -> None:
        self.scallno = scallno
        self.dcallno = 0
        self.oseqno = 0
        self.iseqno = 0


def _pump(ep: Any, now: float) -> list[tuple[bytes, Any]]:
    out = ep.datagrams_to_send(now)
    while ep.next_event() is not None:
        pass
    return out


def _replies(ep: Any, now: float, to: Any) -> list[Any]:
    from iaxgw._core.frames import parse_full

    return [parse_full(d) for d, a in _pump(ep, now) if a == to and d and d[0] & 0x80]


def _send_full(ep: Any, peer: _Peer, addr: Any, now: float, ftype: int, sub: int,
               payload: bytes = b"", ts: int = 0) -> None:
    from iaxgw._core.frames import build_full

    ep.receive_datagram(build_full(peer.scallno, peer.dcallno, ts, peer.oseqno, peer.iseqno,
                                   ftype, sub, payload), addr, now)
    if not (ftype == 6 and sub in (4, 10, 11, 18, 19)):      # ACK, INVAL, VNAK, TXCNT, TXACC
        peer.oseqno = (peer.oseqno + 1) & 0xFF


def _new_with_token(ep: Any, peer: _Peer, addr: Any, now: float,
                    extra: list[tuple[int, object]]) -> list[Any]:
    """office-a's NEW for 300 (with ``extra`` IEs), the CALLTOKEN it gets, the NEW again with
    the token; the endpoint's replies to that (the AUTHREQ)."""
    from iaxgw._core.constants import IE
    from iaxgw._core.ies import IEs, build_ies

    new: list[tuple[int, object]] = [
        (IE.VERSION, 2), (IE.CALLED_NUMBER, "300"), (IE.USERNAME, "office-a"),
        (IE.FORMAT, 4), (IE.CAPABILITY, 12), *extra]
    _send_full(ep, peer, addr, now, 6, 1, build_ies([*new, (IE.CALLTOKEN, b"")]), ts=3)
    for f in _replies(ep, now, addr):
        if f.frametype == 6 and f.csub == 40:           # CALLTOKEN
            try:
                tok = IEs.parse(f.payload).get(IE.CALLTOKEN)
            except FrameError:      # an encrypted reply whose header reads as a CALLTOKEN
                continue
            peer.oseqno = peer.iseqno = 0
            _send_full(ep, peer, addr, now, 6, 1, build_ies([*new, (IE.CALLTOKEN, tok)]), ts=5)
    return _replies(ep, now, addr)


def _setup_call(ep: Any, peer: _Peer, addr: Any, now: float, answer: bool) -> None:
    """A real incoming call from office-a: NEW, CALLTOKEN, NEW+token, AUTHREQ, AUTHREP, ACCEPT."""
    from iaxgw._core.constants import IE
    from iaxgw._core.ies import IEs, build_ies

    for f in _new_with_token(ep, peer, addr, now, []):
        if f.frametype == 6 and f.csub == 8:            # AUTHREQ
            peer.dcallno = f.scallno
            peer.iseqno = (f.oseqno + 1) & 0xFF
            chal = IEs.parse(f.payload).get(IE.CHALLENGE)
            md5 = hashlib.md5(f"{chal}{SECRET}".encode()).hexdigest()
            _send_full(ep, peer, addr, now, 6, 9, build_ies([(IE.MD5_RESULT, md5)]), ts=10)
    for f in _replies(ep, now, addr):
        if f.frametype == 6 and f.csub == 7:            # ACCEPT
            peer.iseqno = (f.oseqno + 1) & 0xFF
            _send_full(ep, peer, addr, now, 6, 4, b"", ts=f.ts)
            _send_full(ep, peer, addr, now, 2, 4, bytes(160), ts=20)   # first full voice
            if answer:
                _send_full(ep, peer, addr, now, 4, 4, b"", ts=25)
    _pump(ep, now)


class _Provider:
    """A few typed reads over the input: atheris' FuzzedDataProvider when installed, else a
    plain cursor (used by the smoke replay where atheris is absent)."""

    def __init__(self, data: bytes) -> None:
        try:
            import atheris
        except ImportError:
            self._fdp: Any = None
            self._data = data
            self._pos = 0
        else:
            self._fdp = atheris.FuzzedDataProvider(data)

    def remaining(self) -> int:
        if self._fdp is not None:
            return int(self._fdp.remaining_bytes())
        return len(self._data) - self._pos

    def bytes(self, n: int) -> bytes:
        if self._fdp is not None:
            return bytes(self._fdp.ConsumeBytes(n))
        out = self._data[self._pos:self._pos + n]
        self._pos += len(out)
        return out

    def _uint(self, nbytes: int) -> int:
        if self._fdp is not None:
            return int(self._fdp.ConsumeInt(nbytes)) & ((1 << (8 * nbytes)) - 1)
        return int.from_bytes(self.bytes(nbytes).ljust(nbytes, b"\0"), "big")

    def u8(self) -> int:
        return self._uint(1)

    def u16(self) -> int:
        return self._uint(2)

    def u32(self) -> int:
        return self._uint(4)

    def pick(self, values: list[int]) -> int:
        return values[self.u8() % len(values)]


def target_endpoint(data: bytes) -> None:
    _drive_endpoint(_Provider(data), _EP_STATE, None)


def _drive_endpoint(fdp: _Provider, st: dict[str, Any], cipher_of: Any) -> None:
    """The endpoint target's body; with ``cipher_of`` (the encrypted target) the call is set
    up encrypted and ``cipher_of(peer)`` gives the far end's cipher for that call, with which
    some frames are encrypted before they are delivered (valid ciphertext of fuzzed frames)."""
    ep = st["ep"] if cipher_of is not None else _endpoint()
    now = st["now"]
    peers: list[_Peer] = []
    mode = fdp.u8()
    if mode & 1:
        p = _Peer(0x100 + (mode >> 1))
        if cipher_of is None:
            _setup_call(ep, p, PEER, now, answer=bool(mode & 2))
        else:
            _setup_encrypted_call(ep, p, PEER, now, bool(mode & 2),
                                  0x8001 if mode & 32 else 0x0001, st)
        peers.append(p)
    if mode & 4:
        with contextlib.suppress(RuntimeError, ValueError):
            ep.call("office-a", "200", now)
    callnos = [c.local_callno for c in ep.channels()] or [2]
    if mode & 8:                      # the compiled echo path: trunk entries go straight back
        for cn in callnos:
            ep.set_echo(cn, True)
    from iaxgw._core.frames import build_full, build_mini
    from iaxgw._core.trunk import pack_trunk

    batched = bool(mode & 16)         # the batched driver's path: Endpoint.receive_batch
    batch: list[tuple[bytes, Any, float]] = []

    def deliver() -> None:
        if batch:
            ep.receive_batch(list(batch), now, now - 1.0)
            batch.clear()

    for _ in range(fdp.u8() % 24 + 1):
        if fdp.remaining() == 0:
            break
        op = fdp.u8() % 8
        addr = SOURCES[fdp.u8() % len(SOURCES)]
        if op == 0 or op == 7:                               # raw datagram
            dg = fdp.bytes(fdp.u16() % 1500)
        elif op in (1, 2, 3):                                # coherent-ish full frame
            p = peers[0] if peers and op != 3 else _Peer(fdp.u16() & 0x7FFF)
            dcall = p.dcallno if op == 1 else (callnos[fdp.u8() % len(callnos)]
                                                if fdp.u8() & 1 else fdp.u16() & 0x7FFF)
            oseq = p.oseqno if fdp.u8() & 1 else fdp.u8()
            ftype = fdp.pick([6, 6, 6, 2, 4, 1, 12, 7, 3, 8, fdp.u8()])
            sub = fdp.u8() if fdp.u8() & 1 else fdp.pick([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
                                                          11, 14, 30, 40, 0xFF])
            payload = fdp.bytes(fdp.u8())
            dg = build_full(p.scallno, dcall, fdp.u32(), oseq, p.iseqno, ftype, 0, payload,
                            bool(fdp.u8() & 1))
            dg = dg[:11] + bytes([sub]) + dg[12:]
            if op == 1:
                p.oseqno = (p.oseqno + 1) & 0xFF
        elif op == 4:                                        # mini frame
            c = peers[0].scallno if peers and fdp.u8() & 1 else fdp.u16() & 0x7FFF
            dg = build_mini(max(c, 1), fdp.u16(), fdp.bytes(fdp.u8()))
        elif op == 5:                                        # trunk frame
            ents = []
            for _ in range(fdp.u8() % 4):
                c = peers[0].scallno if peers and fdp.u8() & 1 else (fdp.u16() & 0x7FFF) or 1
                ents.append((c, fdp.u16(), fdp.bytes(fdp.u8())))
            dgs = pack_trunk(ents, fdp.u32(), bool(fdp.u8() & 1), 0) if ents else []
            dg = dgs[0] if dgs else fdp.bytes(12)
            if fdp.u8() & 1 and len(dg) > 8:
                dg = dg[:len(dg) - 1 - fdp.u8() % (len(dg) - 8)]
        else:                                                # time passes, timers fire
            deliver()
            now += fdp.u16() / 100.0
            ep.handle_timer(now)
            _pump(ep, now)
            continue
        if cipher_of is not None and peers and op in (1, 2, 4) and fdp.u8() & 3:
            dg = _encrypt_for(cipher_of(peers[0]), dg, fdp)
        if batched:
            batch.append((dg, addr, fdp.u8() / 1000.0))
            continue
        ep.receive_datagram(dg, addr, now)
        if fdp.u8() & 3 == 0:
            _pump(ep, now)
    deliver()
    now += 0.5
    ep.handle_timer(now)
    _pump(ep, now)
    ep.stats()
    ep.channels()
    ep.netstats()
    ep.get_timer()
    st["now"] = now


# ------------------------------------------------------------------ Endpoint, encrypted

_ENC_STATE: dict[str, Any] = {"ep": None, "left": 0, "now": 1000.0, "ciphers": {}}


def _encrypted_endpoint() -> dict[str, Any]:
    """An endpoint whose office-a entry requires AES-128 (``encryption = aes128`` with
    ``forceencryption = yes``), remade every ``EP_RESET_EVERY`` inputs like the plain one."""
    import dataclasses
    import logging

    from iaxgw.gateway.iax2.protocol import Endpoint

    logging.getLogger("iaxgw").setLevel(logging.CRITICAL)
    st = _ENC_STATE
    if st["ep"] is None or st["left"] <= 0:
        cfg = dataclasses.replace(_config())
        cfg.entries = dict(cfg.entries)
        cfg.entries["office-a"] = dataclasses.replace(cfg.entries["office-a"],
                                                      encryption=0x8001, forceencryption=True)
        st["ep"] = Endpoint(cfg, local_addr=LOCAL, rng=random.Random(11),
                            role_name="fuzz-enc", wall_offset=1.7e9)
        st["left"] = EP_RESET_EVERY
        st["now"] = 1000.0
        st["ciphers"] = {}
    st["left"] -= 1
    return st


def _setup_encrypted_call(ep: Any, peer: _Peer, addr: Any, now: float, answer: bool,
                          offer: int, st: dict[str, Any]) -> None:
    """An incoming call from office-a offering encryption ``offer``: NEW, CALLTOKEN, NEW+token,
    AUTHREQ (in the clear, with ENCRYPTION), then the AUTHREP and everything after it
    encrypted with MD5(challenge, secret), as Asterisk sends them."""
    from iaxgw._core.constants import IE
    from iaxgw._core.frames import build_full, parse_full
    from iaxgw._core.ies import IEs, build_ies
    from iaxgw.gateway.iax2.crypto import FrameCipher, derive_key

    cipher = None
    for f in _new_with_token(ep, peer, addr, now, [(IE.ENCRYPTION, offer)]):
        if f.frametype == 6 and f.csub == 8:            # AUTHREQ
            peer.dcallno = f.scallno
            peer.iseqno = (f.oseqno + 1) & 0xFF
            try:
                chal = str(IEs.parse(f.payload).get(IE.CHALLENGE))
            except FrameError:      # an encrypted reply whose header reads as an AUTHREQ
                continue
            cipher = FrameCipher(derive_key(chal, SECRET))
    if cipher is None:
        return
    st["ciphers"][peer.scallno] = cipher

    def send(ftype: int, sub: int, payload: bytes, ts: int) -> None:
        dg = build_full(peer.scallno, peer.dcallno, ts, peer.oseqno, peer.iseqno, ftype, sub,
                        payload)
        ep.receive_datagram(cipher.encrypt(dg, 4), addr, now)
        if not (ftype == 6 and sub == 4):
            peer.oseqno = (peer.oseqno + 1) & 0xFF

    md5 = hashlib.md5(f"{chal}{SECRET}".encode()).hexdigest()
    send(6, 9, build_ies([(IE.MD5_RESULT, md5)]), 10)
    for d, a in _pump(ep, now):
        plain = cipher.decrypt_full(d) if a == addr and d[:1] and d[0] & 0x80 else None
        if plain is None:
            continue
        f = parse_full(plain)
        if f.frametype == 6 and f.csub == 7:            # ACCEPT
            peer.iseqno = (f.oseqno + 1) & 0xFF
            send(6, 4, b"", f.ts)
            send(2, 4, bytes(160), 20)                  # first full voice
            if answer:
                send(4, 4, b"", 25)
    _pump(ep, now)


def _encrypt_for(cipher: Any, dg: bytes, fdp: _Provider) -> bytes:
    """``dg`` encrypted as the far end would (full: 4 clear bytes, mini: 2), sometimes cut
    or with a flipped ciphertext byte (a call whose setup failed has no cipher: as it is)."""
    if cipher is None or len(dg) < 4:
        return dg
    out = cipher.encrypt(dg, 4 if dg[0] & 0x80 else 2)
    how = fdp.u8()
    if how & 0x30 == 0x10 and len(out) > 5:
        out = out[:len(out) - 1 - how % 16]               # not a whole number of blocks
    elif how & 0x30 == 0x20:
        i = 4 + fdp.u16() % (len(out) - 4)
        out = out[:i] + bytes([out[i] ^ (1 + how % 255)]) + out[i + 1:]
    return out


def target_endpoint_encrypted(data: bytes) -> None:
    """The endpoint with an encrypted call (AES-128, key rotation sometimes): fuzzed frames
    in the clear, encrypted with the call's key, cut, or with flipped bytes; the endpoint
    never raises (README's Fuzzing)."""
    st = _encrypted_endpoint()
    ciphers = st["ciphers"]
    _drive_endpoint(_Provider(data), st, lambda p: ciphers.get(p.scallno))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "frames": target_frames,
    "ies": target_ies,
    "trunk": target_trunk,
    "trunk_media": target_trunk_media,
    "g711": target_g711,
    "endpoint": target_endpoint,
    "endpoint_encrypted": target_endpoint_encrypted,
}
