"""One-line descriptions of IAX2 datagrams, for ``iaxgw serve --debug-frames``.

``describe("rx", data, addr)`` ->
``rx 127.0.0.10:4569 FULL IAX/NEW scall=2 dcall=0 R=0 ts=3 oseq=0 iseq=0 IEs=[VERSION, ...]``.
Never raises: a datagram that does not parse is described as such.
"""

from __future__ import annotations

from iaxgw._core.constants import IE, ControlSubclass, FrameType, IAXSubclass
from iaxgw._core.errors import FrameError
from iaxgw._core.frames import DatagramKind, classify, parse_full, parse_mini, parse_video_mini
from iaxgw._core.ies import parse_ies
from iaxgw._core.trunk import parse_trunk
from iaxgw.gateway.iax2.address import Addr, format_addr


def _name(enum: type[IAXSubclass] | type[ControlSubclass] | type[FrameType], value: int) -> str:
    try:
        return enum(value).name
    except ValueError:
        return str(value)


def _subclass_name(frametype: int, subclass: int) -> str:
    if frametype == FrameType.IAX:
        return _name(IAXSubclass, subclass)
    if frametype == FrameType.CONTROL:
        return _name(ControlSubclass, subclass)
    if frametype in (FrameType.DTMF, FrameType.DTMF_BEGIN) and 32 <= subclass < 127:
        return repr(chr(subclass))
    return str(subclass)


def _ie_names(payload: bytes) -> str:
    try:
        items = parse_ies(payload)
    except FrameError as exc:
        return f"<bad IEs: {exc}>"
    names = []
    for ie, _value in items:
        try:
            names.append(IE(ie).name)
        except ValueError:
            names.append(f"IE{ie}")
    return "[" + ", ".join(names) + "]"


def describe(direction: str, data: bytes, addr: Addr) -> str:
    """A one-line description of one datagram."""
    head = f"{direction} {format_addr(addr)}"
    try:
        kind = classify(data)
        if kind == DatagramKind.FULL:
            f = parse_full(data)
            ftype = _name(FrameType, f.frametype)
            sub = _subclass_name(f.frametype, f.subclass)
            line = (f"{head} FULL {ftype}/{sub} scall={f.scallno} dcall={f.dcallno} "
                    f"R={int(f.retransmit)} ts={f.ts} oseq={f.oseqno} iseq={f.iseqno}")
            if f.frametype == FrameType.IAX:
                line += f" IEs={_ie_names(f.payload)}"
            elif f.payload:
                line += f" len={len(f.payload)}"
            return line
        if kind == DatagramKind.MINI:
            callno, ts16, payload = parse_mini(data)
            return f"{head} MINI scall={callno} ts={ts16} len={len(payload)}"
        if kind == DatagramKind.VIDEO_MINI:
            callno, ts15, marker, payload = parse_video_mini(data)
            return f"{head} VIDEO scall={callno} ts={ts15} M={int(marker)} len={len(payload)}"
        if kind == DatagramKind.META:
            tf = parse_trunk(data)
            calls = ",".join(str(e[0]) for e in tf.entries)
            return (f"{head} TRUNK ts={tf.trunk_ts} timestamps={int(tf.timestamps)} "
                    f"entries={len(tf.entries)} calls=[{calls}]"
                    + (" TRUNCATED" if tf.truncated else ""))
        return f"{head} RUNT len={len(data)}"
    except (FrameError, ValueError) as exc:
        return f"{head} UNPARSABLE len={len(data)}: {exc}"
