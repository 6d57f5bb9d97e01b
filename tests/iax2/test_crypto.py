"""AES-128 call encryption (``encryption = aes128``, ``forceencryption``) between two endpoints.

Known truths: the frame layout is checked against an independent AES-CBC built here from the
``cryptography`` package's single-block ECB (a different code path than the one under test),
the key against ``hashlib.md5``; the negotiation against what chan_iax2.c does (merge of the
ENCRYPTION IEs, forceencryption on the callee, an AUTHREQ without ENCRYPTION and our
forceencryption on the caller).
"""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from helpers_pair import Pair, full_frames, iax, seed_configs
from test_protocol import setup_call

from iaxgw._core.constants import IE, IAXSubclass
from iaxgw._core.frames import parse_full
from iaxgw._core.ies import IEs
from iaxgw.gateway.conf.config import apply_encryption
from iaxgw.gateway.iax2.crypto import (
    CallCrypto,
    FrameCipher,
    derive_key,
    merge_encryption,
    rtkey_challenge,
)
from iaxgw.gateway.iax2.events import AuthFailed, CallEnded, CallProgress, VoiceReceived

TONE = bytes(range(160))


def _cbc_reference(key: bytes, plain: bytes) -> bytes:
    """AES-CBC with a zero IV, block by block through single-block ECB."""
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    prev, out = bytes(16), b""
    for i in range(0, len(plain), 16):
        block = bytes(a ^ b for a, b in zip(plain[i:i + 16], prev, strict=True))
        prev = ecb.update(block)
        out += prev
    return out


def _cbc_reference_decrypt(key: bytes, enc: bytes) -> bytes:
    ecb = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    prev, out = bytes(16), b""
    for i in range(0, len(enc), 16):
        block = enc[i:i + 16]
        out += bytes(a ^ b for a, b in zip(ecb.update(block), prev, strict=True))
        prev = block
    return out


def test_key_is_raw_md5_of_challenge_and_secret() -> None:
    assert derive_key("123456", "s3cret") == hashlib.md5(b"123456s3cret").digest()
    assert derive_key("123456", "s3cret").hex() == hashlib.md5(b"123456s3cret").hexdigest()


@pytest.mark.parametrize("body_len", [2, 8, 15, 16, 17, 31, 32, 162, 172])
@pytest.mark.parametrize("clear", [4, 2])
def test_frame_layout_matches_reference_cbc(body_len: int, clear: int) -> None:
    key = os.urandom(16)
    data = os.urandom(clear) + os.urandom(body_len)
    enc = FrameCipher(key).encrypt(data, clear)
    assert enc[:clear] == data[:clear]                 # call numbers in the clear
    padding = 16 + ((16 - body_len % 16) & 0xF)
    assert len(enc) - clear == body_len + padding and (len(enc) - clear) % 16 == 0
    assert 16 <= padding <= 31
    ws = _cbc_reference_decrypt(key, enc[clear:])
    assert ws[15] & 0xF == padding - 16                 # the padding length in byte 15
    assert ws[padding:] == data[clear:]
    # and our decryption of a reference encryption gives the frame back
    pad = bytearray(os.urandom(padding))
    pad[15] = (pad[15] & 0xF0) | (padding & 0xF)
    ref = data[:clear] + _cbc_reference(key, bytes(pad) + data[clear:])
    assert FrameCipher(key).decrypt(ref, clear) == data


def test_a_cipher_used_for_many_frames_restarts_cbc_at_each() -> None:
    """The contexts run on from frame to frame; each frame must still be CBC with a zero IV:
    encrypted frames decrypt by the reference, reference frames decrypt by ours, in any
    interleaving and after a frame that did not decrypt."""
    key = os.urandom(16)
    ours, theirs = FrameCipher(key), FrameCipher(key)
    for n in (162, 8, 0, 31, 176, 2, 162, 162):
        data = os.urandom(2) + os.urandom(n)
        enc = ours.encrypt(data, 2)
        ws = _cbc_reference_decrypt(key, enc[2:])
        assert ws[16 + (ws[15] & 0xF):] == data[2:]
        if len(enc) - 2 >= 32:
            assert theirs.decrypt(enc, 2) == data
        assert ours.decrypt(b"\x00\x01" + os.urandom(48), 2) is not None   # garbage in
        pad = 16 + ((16 - n % 16) & 0xF)
        block = bytearray(os.urandom(pad))
        block[15] = (block[15] & 0xF0) | (pad & 0xF)
        ref = data[:2] + _cbc_reference(key, bytes(block) + data[2:])
        if len(ref) - 2 >= 32:
            assert ours.decrypt(ref, 2) == data


def test_decrypt_refuses_what_cannot_be_a_frame() -> None:
    c = FrameCipher(bytes(16))
    assert c.decrypt(b"\x80\x01\x00\x02" + bytes(16), 4) is None       # < 32 bytes encrypted
    assert c.decrypt(b"\x80\x01\x00\x02" + bytes(33), 4) is None       # not whole blocks
    other = FrameCipher(b"k" * 16).encrypt(b"\x80\x01\x00\x02" + bytes(8) + b"\x06\x01", 4)
    assert c.decrypt_full(other) is None or c.decrypt_full(other) != other


def test_merge_encryption_as_asterisk() -> None:
    # the AUTHREQ value is AES-128 alone; the side that merged rotates if both had the bit
    assert merge_encryption(0x8001, 0x8001) == (0x0001, True)
    assert merge_encryption(0x8001, 0x0001) == (0x0001, False)
    assert merge_encryption(0x8001, 0) == (0, False)
    assert merge_encryption(0, 0x8001) == (0, False)
    assert merge_encryption(0x8001, 0x8000) == (0, False)        # rotation alone is nothing


def test_config_semantics_of_asterisk_22() -> None:
    m, f = apply_encryption("encryption", "aes128", 0, False)
    assert (m, f) == (0x8001, False)
    assert apply_encryption("encryption", "yes", 0, False) == (0x8001, False)
    assert apply_encryption("encryption", "no", 0x8001, False) == (0x8001, False)   # adds only
    assert apply_encryption("forceencryption", "yes", 0, False) == (0x8001, True)
    assert apply_encryption("forceencryption", "no", 0x8001, True) == (0x8001, False)
    assert apply_encryption("encryption", "no", 0, True) == (0, False)


def test_rtkey_challenge_reads_the_raw_key() -> None:
    key = bytes(range(16))
    assert rtkey_challenge(b"\x0f\x10" + key) == key
    assert rtkey_challenge(b"\x0f\x05abcde") is None
    assert rtkey_challenge(b"\x0f\x20" + key) is None               # truncated


def _enc_pair(a_enc: int = 0x8001, b_enc: int = 0x8001, a_force: bool = False,
              b_force: bool = False, trunk: bool = False) -> Pair:
    ca, cb = seed_configs(qualify=None, trunk=trunk)
    ea, eb = ca.entries["office-b"], cb.entries["office-a"]
    ea.encryption, ea.forceencryption = a_enc, a_force
    eb.encryption, eb.forceencryption = b_enc, b_force
    return Pair(ca, cb)


def _plain_types(p: Pair, direction: str) -> list[int]:
    return [parse_full(d).frametype for _, dr, d, _ in p.wire if dr == direction
            and d[0] & 0x80]


@pytest.mark.parametrize("trunk", [False, True])
def test_encrypted_call_carries_audio_both_ways(trunk: bool) -> None:
    p = _enc_pair(trunk=trunk)
    cn, bcn = setup_call(p)
    assert p.a.call_encrypted(cn) and p.b.call_encrypted(bcn)
    p.b.answer(bcn, p.now)
    p.run(0.1)
    mark = len(p.wire)
    for _ in range(20):
        assert p.a.send_voice(cn, TONE, p.now)
        assert p.b.send_voice(bcn, TONE[::-1], p.now)
        p.run(0.02)
    got_b = [v.payload for v in p.ev(p.b, VoiceReceived)]
    got_a = [v.payload for v in p.ev(p.a, VoiceReceived)]
    assert got_b == [TONE] * 20 and got_a == [TONE[::-1]] * 20
    # NEW and CALLTOKEN in the clear; from the caller's AUTHREP on, no full frame of the call
    # parses as what it is: the voice frame's payload is nowhere in the clear
    news = iax(full_frames(p.wire, "a>b"), IAXSubclass.NEW)
    assert news and IEs.parse(news[-1].payload).get(IE.ENCRYPTION) == 0x8001
    authreq = iax(full_frames(p.wire, "b>a"), IAXSubclass.AUTHREQ)
    assert IEs.parse(authreq[0].payload).get(IE.ENCRYPTION) == 0x0001     # as Asterisk
    after = [d for _, dr, d, _ in p.wire[mark:] if dr == "a>b"]
    assert after and not any(TONE[:32] in d for d in after if d[:2] != b"\x00\x00")
    minis = [d for d in after if not d[0] & 0x80 and d[:2] != b"\x00\x00"]
    trunks = [d for d in after if d[:2] == b"\x00\x00"]
    if trunk:
        # trunked media is not encrypted (as Asterisk): the entries carry the audio clear
        assert trunks and all(TONE in d for d in trunks) and not minis
    else:
        # 2 clear + (2 ts + 160 voice + 30 padding) encrypted
        assert minis and all(len(d) == 2 + 192 for d in minis)
    # key rotation at the first voice frame by the callee only: the AUTHREQ's 0x0001 turns
    # the caller's off (as between two Asterisks)
    sa, sb = p.a.stats(), p.b.stats()
    assert sa.get("key_rotations", 0) == 0 and sb.get("key_rotations", 0) == 1
    assert sa.get("key_rotations_received", 0) == 1
    assert sa.get("drop_decrypt_failed", 0) == 0 == sb.get("drop_decrypt_failed", 0)


def test_key_rotation_every_two_to_five_minutes_keeps_audio() -> None:
    p = _enc_pair()
    cn, bcn = setup_call(p)
    p.b.answer(bcn, p.now)
    p.run(0.1)
    for _ in range(700):            # 700 s with a voice frame each way every second
        p.a.send_voice(cn, TONE, p.now)
        p.b.send_voice(bcn, TONE, p.now)
        p.run(1.0)
    rot = p.b.stats().get("key_rotations", 0)
    assert 3 <= rot <= 6, rot       # the first at voice, then every 120-300 s
    assert len(p.ev(p.b, VoiceReceived)) == 700 == len(p.ev(p.a, VoiceReceived))
    assert p.a.stats().get("drop_decrypt_failed", 0) == 0
    assert not p.ev(p.a, CallEnded) and not p.ev(p.b, CallEnded)


def test_no_rotation_when_the_caller_lacks_the_bit() -> None:
    p = _enc_pair(a_enc=0x0001)
    cn, bcn = setup_call(p)
    p.b.answer(bcn, p.now)
    p.run(0.1)
    p.a.send_voice(cn, TONE, p.now)
    p.b.send_voice(bcn, TONE, p.now)
    p.run(0.5)
    assert p.a.call_encrypted(cn)
    assert p.a.stats().get("key_rotations", 0) == 0 == p.b.stats().get("key_rotations", 0)
    assert len(p.ev(p.b, VoiceReceived)) == 1 and len(p.ev(p.a, VoiceReceived)) == 1


def test_encryption_on_caller_only_stays_clear() -> None:
    p = _enc_pair(b_enc=0)
    cn, bcn = setup_call(p)
    assert not p.a.call_encrypted(cn) and not p.b.call_encrypted(bcn)
    assert 6 in _plain_types(p, "b>a")         # ACCEPT readable


def refusal_reasons(p: Pair) -> list[str]:
    """a calls b, which refuses with REJECT 50 "No authority found" (as Asterisk); b's
    reasons (AuthFailed) for it."""
    p.run(0.5)
    cn = p.a.call("office-b", "300", p.now)
    assert p.run_until(lambda: p.ev(p.a, CallEnded), 10)
    end = p.ev(p.a, CallEnded)[0]
    assert (end.callno, end.cause) == (cn, 50)
    rej = iax(full_frames(p.wire, "b>a"), IAXSubclass.REJECT)
    assert IEs.parse(rej[0].payload).get(IE.CAUSE) == "No authority found"
    return [e.reason for e in p.ev(p.b, AuthFailed)]


def test_callee_forceencryption_refuses_a_clear_call() -> None:
    p = _enc_pair(a_enc=0, b_force=True)
    assert refusal_reasons(p) == ["incoming call is unencrypted while forceencryption = yes "
                                  "(the NEW offered no encryption)"]


def test_caller_forceencryption_ends_a_call_the_target_will_not_encrypt() -> None:
    p = _enc_pair(a_force=True, b_enc=0)
    p.run(0.5)
    cn = p.a.call("office-b", "300", p.now)
    assert p.run_until(lambda: p.ev(p.a, CallEnded), 10)
    end = p.ev(p.a, CallEnded)[0]
    assert (end.callno, end.cause) == (cn, 50)
    assert end.cause_text == ("target does not encrypt (its AUTHREQ asks for no encryption) "
                              "while forceencryption = yes")
    assert not p.ev(p.a, CallProgress)


def test_wrong_secret_on_an_encrypted_call_is_never_accepted() -> None:
    ca, cb = seed_configs(qualify=None, trunk=False)
    ca.entries["office-b"].encryption = 0x8001
    ca.entries["office-b"].secrets = ["not-the-secret"]
    cb.entries["office-a"].encryption = 0x8001
    p = Pair(ca, cb)
    p.run(0.5)
    p.a.call("office-b", "300", p.now)
    p.run(5)
    assert not p.ev(p.a, CallProgress)
    assert p.b.stats().get("drop_decrypt_failed", 0) >= 1


def test_call_crypto_candidates_pick_the_secret_that_decrypts() -> None:
    key = derive_key("42", "second")
    frame = FrameCipher(key).encrypt(b"\x80\x05\x00\x07" + bytes(6) + b"\x06\x09", 4)
    cc = CallCrypto(methods=1, challenge="42", candidates=["first", "second"])
    plain = cc.decrypt_full(frame)
    assert plain is not None and plain[10:12] == b"\x06\x09"
    assert cc.rx is not None and cc.rx.key == key and cc.tx is cc.rx


def test_the_ack_of_a_hangup_still_goes_encrypted() -> None:
    p = _enc_pair()
    _, bcn = setup_call(p)
    p.b.answer(bcn, p.now)
    p.run(0.1)
    mark = len(p.wire)
    p.b.hangup(bcn, p.now)
    assert p.run_until(lambda: p.ev(p.a, CallEnded), 5)
    p.run(0.5)
    tail = [d for _, _, d, _ in p.wire[mark:] if d[0] & 0x80]
    assert len(tail) >= 2                      # HANGUP and its ACK
    assert all(not 1 <= parse_full(d).frametype <= 12 or len(d) % 16 == 4 for d in tail)
    assert p.b.stats().get("drop_decrypt_failed", 0) == 0
    assert p.a.stats().get("drop_decrypt_failed", 0) == 0
    assert not p.a._crypt and not p.b._crypt          # forgotten after the last flush


def test_garbage_for_an_encrypted_call_is_dropped_and_the_call_goes_on() -> None:
    """Datagrams that claim an encrypted call's numbers from its peer's address but do not
    decrypt (random bodies, clear frames, short ones) are dropped and counted; the call keeps
    its audio."""
    import random as _random

    from iaxgw._core.frames import build_full

    p = _enc_pair(trunk=False)
    cn, bcn = setup_call(p)
    p.b.answer(bcn, p.now)
    p.run(0.1)
    rng = _random.Random(5)
    junk = [build_full(cn, bcn, 5, 0, 0, 6, 1),                          # a clear frame
            bytes([0x80 | (cn >> 8), cn & 0xFF, bcn >> 8, bcn & 0xFF]) + rng.randbytes(4),
            bytes([cn >> 8, cn & 0xFF]) + rng.randbytes(33)]                # mini, not blocks
    junk += [bytes([0x80 | (cn >> 8), cn & 0xFF, bcn >> 8, bcn & 0xFF]) + rng.randbytes(32 * k)
             for k in (1, 2, 5)]
    before = p.b.stats().get("drop_decrypt_failed", 0)
    for d in junk:
        p.b.receive_datagram(d, p.addr[id(p.a)], p.now)
    assert p.b.stats().get("drop_decrypt_failed", 0) - before >= 3
    for _ in range(10):
        p.a.send_voice(cn, TONE, p.now)
        p.run(0.02)
    assert len(p.ev(p.b, VoiceReceived)) == 10
    assert not p.ev(p.b, CallEnded)


def test_show_peers_marks_encrypted_entries() -> None:
    from iaxgw.gateway.conf.model import Entry
    from iaxgw.gateway.serve.app import _peer_row

    assert _peer_row("b", Entry(name="b", encryption=0x8001), {})["encryption"] is True
    assert _peer_row("b", Entry(name="b"), {})["encryption"] is False


def test_rotation_keys_are_128_random_bits() -> None:
    import random

    from iaxgw.gateway.iax2.crypto import rotation_key

    keys = {rotation_key(random.SystemRandom()) for _ in range(64)}
    assert len(keys) == 64 and all(len(k) == 16 for k in keys)
    # not an MD5 of a 31-bit number: every bit position takes both values over the keys
    ones = [sum((int.from_bytes(k, "big") >> b) & 1 for k in keys) for b in range(128)]
    assert all(0 < n < 64 for n in ones)
