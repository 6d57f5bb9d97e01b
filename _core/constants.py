"""IAX2 wire constants shared by the compiled core and its pure-Python twin.

Values follow Asterisk 22's ``chan_iax2`` as docs/protocol.md describes it; Asterisk wins over
RFC 5456 where the two disagree.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag
from types import MappingProxyType
from typing import Final


class DatagramKind(IntEnum):
    """What a received datagram is, in Asterisk's demux order (docs/protocol.md §2)."""

    TOO_SHORT = 0
    FULL = 1
    MINI = 2
    VIDEO_MINI = 3
    META = 4


class FrameType(IntEnum):
    """Full frame types (docs/protocol.md §4; RFC 5456 section 8.2)."""

    DTMF = 1  # Asterisk: DTMF_END
    VOICE = 2
    VIDEO = 3
    CONTROL = 4
    NULL = 5
    IAX = 6
    TEXT = 7
    IMAGE = 8
    HTML = 9
    CNG = 10
    MODEM = 11
    DTMF_BEGIN = 12


DTMF_END: Final = FrameType.DTMF
#: frame types as plain ints, for the per-frame comparisons and sends of the hot paths
FRAME_VOICE: Final = int(FrameType.VOICE)
FRAME_CONTROL: Final = int(FrameType.CONTROL)
FRAME_IAX: Final = int(FrameType.IAX)


class IAXSubclass(IntEnum):
    """Subclasses of IAX (type 6) frames (docs/protocol.md §4; RFC 5456 section 8.4)."""

    NEW = 1
    PING = 2
    PONG = 3
    ACK = 4
    HANGUP = 5
    REJECT = 6
    ACCEPT = 7
    AUTHREQ = 8
    AUTHREP = 9
    INVAL = 10
    LAGRQ = 11
    LAGRP = 12
    REGREQ = 13
    REGAUTH = 14
    REGACK = 15
    REGREJ = 16
    REGREL = 17
    VNAK = 18
    DPREQ = 19
    DPREP = 20
    DIAL = 21
    TXREQ = 22
    TXCNT = 23
    TXACC = 24
    TXREADY = 25
    TXREL = 26
    TXREJ = 27
    QUELCH = 28
    UNQUELCH = 29
    POKE = 30
    PAGE = 31
    MWI = 32
    UNSUPPORT = 33
    TRANSFER = 34
    PROVISION = 35
    FWDOWNL = 36
    FWDATA = 37
    TXMEDIA = 38
    RTKEY = 39
    CALLTOKEN = 40


class ControlSubclass(IntEnum):
    """Subclasses of CONTROL (type 4) frames (docs/protocol.md §4; ``ast_control_frame_type``)."""

    STOP_SOUNDS = -1  # csub 0xFF
    HANGUP = 1
    RING = 2
    RINGING = 3
    ANSWER = 4
    BUSY = 5
    TAKEOFFHOOK = 6
    OFFHOOK = 7
    CONGESTION = 8
    FLASH = 9
    WINK = 10
    OPTION = 11
    RADIO_KEY = 12
    RADIO_UNKEY = 13
    PROGRESS = 14
    PROCEEDING = 15
    HOLD = 16
    UNHOLD = 17
    VIDUPDATE = 18
    T38 = 19
    SRCUPDATE = 20
    TRANSFER = 21
    CONNECTED_LINE = 22
    REDIRECTING = 23
    T38_PARAMETERS = 24
    CC = 25
    SRCCHANGE = 26
    READ_ACTION = 27
    AOC = 28
    END_OF_Q = 29
    INCOMPLETE = 30
    MCID = 31
    UPDATE_RTP_PEER = 32
    PVT_CAUSE_CODE = 33


#: Control subclasses Asterisk sends and accepts over IAX2 (docs/protocol.md §4).
CONTROL_ALLOWED_ON_WIRE: Final = frozenset(
    [-1, *range(1, 19), 22, 23, 24, 28, 30, 31]
)


class IE(IntEnum):
    """Information element ids (docs/protocol.md §5; Asterisk ``iax2.h``; 53-57 are Asterisk's)."""

    CALLED_NUMBER = 1
    CALLING_NUMBER = 2
    CALLING_ANI = 3
    CALLING_NAME = 4
    CALLED_CONTEXT = 5
    USERNAME = 6
    PASSWORD = 7
    CAPABILITY = 8
    FORMAT = 9
    LANGUAGE = 10
    VERSION = 11
    ADSICPE = 12
    DNID = 13
    AUTHMETHODS = 14
    CHALLENGE = 15
    MD5_RESULT = 16
    RSA_RESULT = 17
    APPARENT_ADDR = 18
    REFRESH = 19
    DPSTATUS = 20
    CALLNO = 21
    CAUSE = 22
    IAX_UNKNOWN = 23
    MSGCOUNT = 24
    AUTOANSWER = 25
    MUSICONHOLD = 26
    TRANSFERID = 27
    RDNIS = 28
    PROVISIONING = 29
    AESPROVISIONING = 30
    DATETIME = 31
    DEVICETYPE = 32
    SERVICEIDENT = 33
    FIRMWAREVER = 34
    FWBLOCKDESC = 35
    FWBLOCKDATA = 36
    PROVVER = 37
    CALLINGPRES = 38
    CALLINGTON = 39
    CALLINGTNS = 40
    SAMPLINGRATE = 41
    CAUSECODE = 42
    ENCRYPTION = 43
    ENCKEY = 44
    CODEC_PREFS = 45
    RR_JITTER = 46
    RR_LOSS = 47
    RR_PKTS = 48
    RR_DELAY = 49
    RR_DROPPED = 50
    RR_OOO = 51
    VARIABLE = 52
    OSPTOKEN = 53
    CALLTOKEN = 54
    CAPABILITY2 = 55
    FORMAT2 = 56
    CALLINGANI2 = 57


class IEKind(IntEnum):
    """How an IE's value is encoded, i.e. which Python type ``parse_ies`` returns for it."""

    RAW = 0  # bytes (also every unknown id)
    STRING = 1  # str, UTF-8 with surrogateescape
    U8 = 2  # int
    U16 = 3  # int
    U32 = 4  # int
    EMPTY = 5  # None, length must be 0
    OPT_STRING = 6  # None when empty, else str
    VERSIONED_U64 = 7  # int when version byte 0 (9 bytes), else raw bytes
    SOCKADDR = 8  # (host, port) from sockaddr_in/sockaddr_in6, else raw bytes
    DATETIME = 9  # datetime.datetime (naive)


_KINDS: dict[IEKind, tuple[IE, ...]] = {
    IEKind.STRING: (
        IE.CALLED_NUMBER, IE.CALLING_NUMBER, IE.CALLING_ANI, IE.CALLING_NAME, IE.CALLED_CONTEXT,
        IE.USERNAME, IE.PASSWORD, IE.LANGUAGE, IE.DNID, IE.CHALLENGE, IE.MD5_RESULT,
        IE.RSA_RESULT, IE.CAUSE, IE.RDNIS, IE.DEVICETYPE, IE.SERVICEIDENT, IE.CODEC_PREFS,
        IE.VARIABLE,
    ),
    IEKind.U8: (IE.IAX_UNKNOWN, IE.CALLINGPRES, IE.CALLINGTON, IE.CAUSECODE),
    IEKind.U16: (
        IE.VERSION, IE.ADSICPE, IE.AUTHMETHODS, IE.REFRESH, IE.DPSTATUS, IE.CALLNO,
        IE.MSGCOUNT, IE.FIRMWAREVER, IE.CALLINGTNS, IE.SAMPLINGRATE, IE.ENCRYPTION,
        IE.RR_DELAY,
    ),
    IEKind.U32: (
        IE.CAPABILITY, IE.FORMAT, IE.TRANSFERID, IE.FWBLOCKDESC, IE.PROVVER, IE.RR_JITTER,
        IE.RR_LOSS, IE.RR_PKTS, IE.RR_DROPPED, IE.RR_OOO, IE.CALLINGANI2,
    ),
    IEKind.EMPTY: (IE.AUTOANSWER,),
    IEKind.OPT_STRING: (IE.MUSICONHOLD,),
    IEKind.VERSIONED_U64: (IE.CAPABILITY2, IE.FORMAT2),
    IEKind.SOCKADDR: (IE.APPARENT_ADDR,),
    IEKind.DATETIME: (IE.DATETIME,),
    IEKind.RAW: (
        IE.PROVISIONING, IE.AESPROVISIONING, IE.FWBLOCKDATA, IE.ENCKEY, IE.OSPTOKEN,
        IE.CALLTOKEN,
    ),
}

#: Encoding kind of every IE id 0..255 (unknown ids are RAW).
IE_KINDS: Final[tuple[IEKind, ...]] = tuple(
    next((k for k, ids in _KINDS.items() if i in ids), IEKind.RAW) for i in range(256)
)


def ie_name(ie: int) -> str:
    """``"FORMAT(9)"`` for a known id, ``"IE 200"`` for an unknown one (used in error messages)."""
    try:
        return f"{IE(ie).name}({ie})"
    except ValueError:
        return f"IE {ie}"


class AuthMethod(IntFlag):
    """AUTHMETHODS bits (docs/protocol.md §5)."""

    PLAINTEXT = 1
    MD5 = 2
    RSA = 4


class Encryption(IntFlag):
    """ENCRYPTION IE bits (docs/protocol.md §5)."""

    AES128 = 0x0001
    KEYROTATE = 0x8000


# --- Media formats (docs/protocol.md §6) ----------------------------------------------------

FORMAT_G723: Final = 1 << 0
FORMAT_GSM: Final = 1 << 1
FORMAT_ULAW: Final = 1 << 2
FORMAT_ALAW: Final = 1 << 3
FORMAT_G726_AAL2: Final = 1 << 4
FORMAT_ADPCM: Final = 1 << 5
FORMAT_SLIN: Final = 1 << 6  # big-endian on the wire
FORMAT_LPC10: Final = 1 << 7
FORMAT_G729: Final = 1 << 8
FORMAT_SPEEX: Final = 1 << 9
FORMAT_ILBC: Final = 1 << 10
FORMAT_G726: Final = 1 << 11
FORMAT_G722: Final = 1 << 12
FORMAT_SIREN7: Final = 1 << 13
FORMAT_SIREN14: Final = 1 << 14
FORMAT_SLIN16: Final = 1 << 15
FORMAT_JPEG: Final = 1 << 16
FORMAT_PNG: Final = 1 << 17
FORMAT_H261: Final = 1 << 18
FORMAT_H263: Final = 1 << 19
FORMAT_H263P: Final = 1 << 20
FORMAT_H264: Final = 1 << 21
FORMAT_MP4: Final = 1 << 22
FORMAT_VP8: Final = 1 << 23
FORMAT_T140_RED: Final = 1 << 26
FORMAT_T140: Final = 1 << 27
FORMAT_G719: Final = 1 << 32
FORMAT_SPEEX16: Final = 1 << 33
FORMAT_OPUS: Final = 1 << 34

#: Audio formats that fit the 32-bit FORMAT/CAPABILITY IEs.
FORMAT_AUDIO_MASK: Final = 0xFFFF
FORMAT_VIDEO_MASK: Final = 0xFF0000

# (bit, Asterisk codec name, CODEC_PREFS character)
_FORMATS: tuple[tuple[int, str, str], ...] = (
    (FORMAT_G723, "g723", "B"),
    (FORMAT_GSM, "gsm", "C"),
    (FORMAT_ULAW, "ulaw", "D"),
    (FORMAT_ALAW, "alaw", "E"),
    (FORMAT_G726_AAL2, "g726aal2", "N"),
    (FORMAT_ADPCM, "adpcm", "G"),
    (FORMAT_SLIN, "slin", "H"),
    (FORMAT_LPC10, "lpc10", "I"),
    (FORMAT_G729, "g729", "J"),
    (FORMAT_SPEEX, "speex", "K"),
    (FORMAT_ILBC, "ilbc", "M"),
    (FORMAT_G726, "g726", "F"),
    (FORMAT_G722, "g722", "O"),
    (FORMAT_SIREN7, "siren7", "Z"),
    (FORMAT_SIREN14, "siren14", "["),
    (FORMAT_SLIN16, "slin16", "P"),
    (FORMAT_JPEG, "jpeg", "Q"),
    (FORMAT_PNG, "png", "R"),
    (FORMAT_H261, "h261", "S"),
    (FORMAT_H263, "h263", "T"),
    (FORMAT_H263P, "h263p", "U"),
    (FORMAT_H264, "h264", "V"),
    (FORMAT_MP4, "mpeg4", "W"),
    (FORMAT_VP8, "vp8", "g"),
    (FORMAT_T140_RED, "red", "X"),
    (FORMAT_T140, "t140", "Y"),
    (FORMAT_G719, "g719", "]"),
    (FORMAT_SPEEX16, "speex16", "L"),
    (FORMAT_OPUS, "opus", "f"),
)

FORMAT_NAMES: Final = MappingProxyType({bit: name for bit, name, _ in _FORMATS})
FORMAT_BITS: Final = MappingProxyType({name: bit for bit, name, _ in _FORMATS})
CODEC_PREF_CHARS: Final = MappingProxyType({bit: ch for bit, _, ch in _FORMATS})
CODEC_PREF_FORMATS: Final = MappingProxyType({ch: bit for bit, _, ch in _FORMATS})


def format_names(mask: int) -> list[str]:
    """Names of the known codecs set in ``mask``, lowest bit first."""
    return [name for bit, name, _ in sorted(_FORMATS) if mask & bit]


def codec_prefs_to_formats(prefs: str) -> list[int]:
    """Decode a CODEC_PREFS string into format bits, skipping characters it does not know."""
    return [CODEC_PREF_FORMATS[c] for c in prefs if c in CODEC_PREF_FORMATS]


def formats_to_codec_prefs(formats: list[int] | tuple[int, ...]) -> str:
    """Encode format bits (in preference order) as a CODEC_PREFS string."""
    try:
        return "".join(CODEC_PREF_CHARS[f] for f in formats)
    except KeyError as exc:
        raise ValueError(f"no CODEC_PREFS character for format {exc.args[0]:#x}") from None


# --- Cause codes (docs/protocol.md §11, CAUSECODE IE 42) ------------------------------------

CAUSES: Final = MappingProxyType({
    1: "Unallocated (unassigned) number",
    3: "No route to destination",
    16: "Normal clearing",
    17: "User busy",
    18: "No user responding",
    19: "User alerting, no answer",
    21: "Call rejected",
    27: "Destination out of order",
    28: "Invalid number format",
    29: "Facility rejected",
    31: "Normal, unspecified",
    34: "Circuit/channel congestion",
    38: "Network out of order",
    41: "Temporary failure",
    42: "Switching equipment congestion",
    44: "Requested channel not available",
    50: "Requested facility not subscribed",
    58: "Bearer capability not available",
    65: "Bearer capability not implemented",
    66: "Channel type not implemented",
    69: "Requested facility not implemented",
    88: "Incompatible destination",
    102: "Recovery on timer expiry",
    111: "Protocol error, unspecified",
    127: "Interworking, unspecified",
})

CAUSE_NORMAL_CLEARING: Final = 16
CAUSE_USER_BUSY: Final = 17
CAUSE_CALL_REJECTED: Final = 21
CAUSE_DESTINATION_OUT_OF_ORDER: Final = 27
CAUSE_FACILITY_REJECTED: Final = 29
CAUSE_CONGESTION: Final = 34
CAUSE_FACILITY_NOT_SUBSCRIBED: Final = 50
CAUSE_BEARERCAPABILITY_NOTAVAIL: Final = 58

# --- Wire constants ------------------------------------------------------------------------

IAX_PORT: Final = 4569
IAX_PROTO_VERSION: Final = 2
FULL_HEADER_LEN: Final = 12
MINI_HEADER_LEN: Final = 4
VIDEO_MINI_HEADER_LEN: Final = 6
MAX_CALLNO: Final = 0x7FFF
STATELESS_CALLNO: Final = 1  # source of CALLTOKEN / PONG-to-POKE / calltoken REJECT
SUBCLASS_FLAG_LOG: Final = 0x80  # C bit of csub
SUBCLASS_MAX_SHIFT: Final = 0x3F
VIDEO_MARKER: Final = 0x40  # end-of-frame bit of a video full frame's csub
META_TRUNK: Final = 1
#: A timestamp within this many ms of the predicted one snaps to it (Asterisk's
#: MAX_TIMESTAMP_SKEW): voice, control and trunk timestamps (docs/protocol.md §8.1).
TS_SKEW_MS: Final = 160
#: A 16-bit mini-frame timestamp is unwrapped against the call's last full timestamp within
#: this many ms either side (docs/protocol.md §8.2).
UNWRAP_MS: Final = 50000


class CallState(IntEnum):
    """States of one call number's transaction (the endpoint's dispatch table is keyed by
    them; the compiled media path reads ACCEPTED and UP)."""

    NEW_SENT = 1       # caller: NEW (or AUTHREP) sent, waiting ACCEPT/REJECT/AUTHREQ/CALLTOKEN
    WAIT_AUTHREP = 2   # callee: AUTHREQ sent
    ACCEPTED = 3       # ACCEPT sent or received: media flows, not answered yet
    UP = 4             # answered
    TERMINATING = 5    # our final frame (HANGUP/REJECT/REGACK/REGREJ) sent, waiting for its ACK
    POKE = 6           # our POKE, waiting for the PONG
    REG_OUT = 7        # we register to a registrar
    REG_IN = 8         # a registrant registers to us (REGAUTH sent)
