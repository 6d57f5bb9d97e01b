"""Writes the ``hand_*.bin`` vectors: datagrams typed by hand from docs/protocol.md, byte by byte.

Deliberately independent of the iaxgw codecs (no builder is used).  Run from the repo root:
``python3 tests/vectors/hand_vectors.py``.  Field values are asserted in tests/test_frames.py and
tests/test_ies.py.
"""

from __future__ import annotations

import pathlib

HERE = pathlib.Path(__file__).parent


def h(text: str) -> bytes:
    """Hex with whitespace and ``#`` comments allowed."""
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    return bytes.fromhex("".join(lines))


def s(text: str) -> str:
    return text.encode().hex()


# NEW as Asterisk's iax2_call sends it (docs/protocol.md §5.4 order), empty CALLTOKEN last.
# scallno 16385 (trunk range) with F bit, dcallno 0, ts 3, oseq 0, iseq 0, type IAX(6), NEW(1).
NEW = h(f"""
c001 0000 00000003 00 00 06 01
0b 02 0002                      # VERSION 2
01 03 {s("100")}                # CALLED_NUMBER "100"
2d 02 {s("DE")}                 # CODEC_PREFS ulaw, alaw
02 07 {s("5551000")}            # CALLING_NUMBER
26 01 00                        # CALLINGPRES allowed
27 01 00                        # CALLINGTON
28 02 0000                      # CALLINGTNS
39 04 00000000                  # CALLINGANI2
04 06 {s("Site A")}             # CALLING_NAME
0a 02 {s("en")}                 # LANGUAGE
0d 03 {s("100")}                # DNID
05 0a {s("from-trunk")}         # CALLED_CONTEXT
06 05 {s("siteb")}              # USERNAME
09 04 00000004                  # FORMAT ulaw
38 09 00 0000000000000004       # FORMAT2 v0 ulaw
08 04 0000000e                  # CAPABILITY gsm|ulaw|alaw
37 09 00 000000040000000e       # CAPABILITY2 v0 opus|gsm|ulaw|alaw
0c 02 0002                      # ADSICPE
1f 04 30a63905                  # DATETIME 2024-05-06 07:08:10
34 08 {s("X-Site=A")}           # VARIABLE
36 00                           # CALLTOKEN (empty, last)
""")

# ACCEPT from Asterisk (callee callno 4660) to our 16385: FORMAT + FORMAT2 only.
ACCEPT = h("""
9234 4001 0000000a 00 01 06 07
09 04 00000004
38 09 00 0000000000000004
""")

# HANGUP: CAUSECODE 16 (normal clearing) only.
HANGUP = h("""
9234 4001 00001388 03 02 06 05
2a 01 10
""")

# REJECT: CAUSE + CAUSECODE 50.
REJECT = h(f"""
9234 4001 00000014 01 01 06 06
16 12 {s("No authority found")}
2a 01 32
""")

# CALLTOKEN reply: source call 1, dcall = our 16385, ts echoed (3), oseq 0, iseq 1, subclass 40.
TOKEN = "1718000000?" + "3f2a9c0d5e7b8a1f6c4d2e0b9a8f7e6d5c4b3a29"
CALLTOKEN = h(f"""
8001 4001 00000003 00 01 06 28
36 33 {s(TOKEN)}
""")

# AUTHREQ: AUTHMETHODS md5, CHALLENGE (decimal, 9 chars), USERNAME.
AUTHREQ = h(f"""
9234 4001 0000000a 00 01 06 08
0e 02 0002
0f 09 {s("214748364")}
06 05 {s("siteb")}
""")

# PONG with RR IEs as Asterisk sends them; R bit set (a retransmission), ts echoed 21000.
PONG = h("""
9234 c001 00005208 05 04 06 03
2e 04 00000014                  # RR_JITTER 20
2f 04 01000005                  # RR_LOSS 1 % / 5 lost
30 04 000003e8                  # RR_PKTS 1000
31 02 0028                      # RR_DELAY 40
32 04 00000002                  # RR_DROPPED 2
33 04 00000001                  # RR_OOO 1
""")

# REGACK with APPARENT_ADDR (sockaddr_in, family 02 00 host order), MSGCOUNT, DATETIME.
REGACK = h(f"""
9234 4001 00000064 01 02 06 0f
06 05 {s("siteb")}
1f 04 30a63905
13 02 003c                      # REFRESH 60
12 10 0200 11d9 c0a8010a 0000000000000000   # 192.168.1.10:4569
18 02 0102                      # MSGCOUNT old 1 new 2
""")

# Full voice frames: ulaw as Asterisk sends it (0x04) and the log form (0x82); 4 bytes audio.
VOICE_FULL = h("c001 1234 000000a0 02 01 02 04 ffffffff")
VOICE_FULL_LOG = h("c001 1234 000000a0 02 01 02 82 ffffffff")

# Video full frame: H.264 (bit 21) compressed 0x95, end-of-frame marker 0x40 -> csub 0xd5.
VIDEO_FULL = h("c001 1234 00000100 03 01 03 d5 00000001 67")

# Voice mini: callno 16385, ts16 0x1234, 160 bytes of ulaw silence.
MINI = h("4001 1234") + b"\xff" * 160

# Video mini: 0x0000, 1|callno 16385, M=1 | ts15 100, 8 bytes payload.
VIDEO_MINI = h("0000 c001 8064 0000000165888000")

VECTORS = {
    "hand_new": NEW,
    "hand_accept": ACCEPT,
    "hand_hangup": HANGUP,
    "hand_reject": REJECT,
    "hand_calltoken": CALLTOKEN,
    "hand_authreq": AUTHREQ,
    "hand_pong": PONG,
    "hand_regack": REGACK,
    "hand_voice_full": VOICE_FULL,
    "hand_voice_full_log": VOICE_FULL_LOG,
    "hand_video_full": VIDEO_FULL,
    "hand_mini": MINI,
    "hand_video_mini": VIDEO_MINI,
}

if __name__ == "__main__":
    for name, data in VECTORS.items():
        (HERE / f"{name}.bin").write_bytes(data)
        print(f"{name}.bin {len(data)} bytes")
