"""IAX2 call encryption as Asterisk 22 does it (``encryption = aes128``; chan_iax2.c
``encrypt_frame``, ``decode_frame``, ``build_encryption_keys``, ``iax2_key_rotate``).

* Key: the 16 raw bytes of MD5(challenge ‖ secret), the digest whose hex is the MD5_RESULT;
  the same key both ways.  A key rotation (RTKEY, CHALLENGE = 16 raw bytes) changes the
  sender's key from the frame after the RTKEY on; the receiver decrypts with it from then on.
* Cipher: AES-128 in CBC mode with an all-zero IV, restarted for every frame.
* What is encrypted: everything after the first 4 bytes of a full frame (source and
  destination call numbers stay clear: timestamp, sequence numbers, type, subclass and payload
  are encrypted) and after the first 2 bytes of a mini frame (the call number; its timestamp
  and payload are encrypted).  Trunk (meta) datagrams are not encrypted.
* Padding: 16 to 31 bytes in front of the plaintext so that its length is a multiple of 16;
  the low 4 bits of the 16th byte are the padding length minus 16.  Asterisk fills the rest
  with earlier plaintext; we use random bytes.

The cipher itself is the ``cryptography`` package's AES (OpenSSL); nothing here is a cipher.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "AES128",
    "KEYROTATE",
    "KEY_ROTATE_MIN_S",
    "KEY_ROTATE_SPREAD_S",
    "CallCrypto",
    "FrameCipher",
    "decrypt_datagram",
    "derive_key",
    "encrypt_datagrams",
    "merge_encryption",
    "rotation_key",
    "rtkey_challenge",
]

AES128 = 0x0001
KEYROTATE = 0x8000
KEY_ROTATE_MIN_S = 120.0        # a key lasts 120 to 300 s (Asterisk: 120000 + random % 180001 ms)
KEY_ROTATE_SPREAD_S = 180.0
_ZERO_IV = bytes(16)
FULL_CLEAR = 4              # source and destination call numbers
MINI_CLEAR = 2              # call number
#: frame types a decrypted full frame may carry (DTMF .. DTMF begin); anything else means the
#: key is wrong
_FRAME_TYPES = range(1, 13)


def derive_key(challenge: str, secret: str) -> bytes:
    """The AES key of a call: raw MD5 over the challenge then the secret (the bytes whose
    lowercase hex is the MD5_RESULT)."""
    return hashlib.md5((challenge + secret).encode("utf-8", "surrogateescape")).digest()


def rotation_key(rng: random.Random) -> bytes:
    """A new 16-byte key for RTKEY: 128 random bits (the endpoint's ``SystemRandom`` unless a
    test seeds it).  Asterisk's iax2_key_rotate hashes 31 random bits, a key space a capture
    can search; the receiver uses the CHALLENGE's bytes as they are, so any 16 bytes do."""
    return rng.getrandbits(128).to_bytes(16, "big")


def merge_encryption(ours: int, theirs: int) -> tuple[int, bool]:
    """Asterisk's merge_encryption: the methods both sides offer reduced to AES-128 alone (the
    value a callee returns in its AUTHREQ: 0x0001, never with the rotation bit), or 0; and
    whether this side rotates its key (both offered key rotation).  So a caller that gets an
    AUTHREQ from Asterisk never rotates, and the callee rotates when the NEW offered 0x8001."""
    common = ours & theirs
    if not common & AES128:
        return 0, False
    return AES128, bool(common & KEYROTATE)


class FrameCipher:
    """AES-128-CBC (zero IV) over IAX2 frames with one key.

    Each frame restarts CBC at a zero IV.  Rather than a new OpenSSL context per frame (most
    of the cost of a 160-byte frame), one CBC context per direction runs on: its chaining
    value after a frame is that frame's last ciphertext block, so the next frame's first
    plaintext block is XORed with that block before encryption (the context XORs it again: the
    block is encrypted as if the IV were zero), and the first block that comes out of the
    decryption is XORed with the previous input's last block.  The output is byte for byte
    CBC with a zero IV per frame (``tests/iax2/test_crypto.py`` holds it to a block-by-block
    reference)."""

    __slots__ = ("_dec", "_dec_last", "_enc", "_enc_last", "key")

    def __init__(self, key: bytes) -> None:
        if len(key) != 16:
            raise ValueError(f"an AES-128 key is 16 bytes, not {len(key)}")
        self.key = key
        cipher = Cipher(algorithms.AES(key), modes.CBC(_ZERO_IV))
        self._enc = cipher.encryptor()
        self._dec = cipher.decryptor()
        self._enc_last = 0          # encryption's chaining value (its last block), as an int
        self._dec_last = 0          # the last byte of decryption's chaining value

    def encrypt(self, data: bytes, clear: int) -> bytes:
        """``data`` with everything after its first ``clear`` bytes padded and encrypted."""
        body = data[clear:]
        padding = 16 + ((16 - len(body) % 16) & 0xF)
        pad = int.from_bytes(os.urandom(padding), "big")
        # byte 15 of the pad: low nibble = padding - 16
        shift = 8 * (padding - 16)
        pad = (pad & ~(0xF << shift)) | ((padding & 0xF) << shift)
        # undo the context's chaining on the first block
        pad ^= self._enc_last << (8 * (padding - 16))
        out = self._enc.update(pad.to_bytes(padding, "big") + body)
        self._enc_last = int.from_bytes(out[-16:], "big")
        return data[:clear] + out

    def decrypt(self, data: bytes, clear: int) -> bytes | None:
        """The plaintext frame, or None when ``data`` cannot be an encrypted frame."""
        n = len(data) - clear
        if n < 32 or n % 16:
            return None
        enc = data[clear:]
        ws = self._dec.update(enc)
        # the first block is all padding: only its byte 15 (the padding length) is needed,
        # and of the chaining value only the byte XORed into it, the last one
        nibble = (ws[15] ^ self._dec_last) & 0xF
        self._dec_last = enc[-1]
        return data[:clear] + ws[16 + nibble:]

    def decrypt_full(self, data: bytes) -> bytes | None:
        """A decrypted full frame whose type is a frame type, or None."""
        plain = self.decrypt(data, FULL_CLEAR)
        if plain is None or len(plain) < 12 or plain[10] not in _FRAME_TYPES:
            return None
        return plain


@dataclass(slots=True)
class CallCrypto:
    """The encryption state of one call.

    ``tx`` encrypts what we send and ``rx`` decrypts what we receive (None while not known: a
    callee learns the key from the first frame after its AUTHREQ, trying each of the user's
    secrets, ``candidates``).  After a rotation of ours, the datagrams queued before the RTKEY
    (index below ``mark_index`` in the flush ``mark_gen``) still use ``prev_tx``; after one of
    the peer's, ``prev_rx`` still decrypts its retransmissions made with the old key."""

    methods: int
    tx: FrameCipher | None = None
    rx: FrameCipher | None = None
    prev_tx: FrameCipher | None = None
    prev_rx: FrameCipher | None = None
    mark_gen: int = -1
    mark_index: int = 0
    challenge: str = ""
    candidates: list[str] = field(default_factory=list)
    rotate: bool = False            # send RTKEYs (both sides offered key rotation)
    rotated: bool = False           # our first RTKEY went (at the first voice frame)
    frames_out: int = 0
    frames_in: int = 0

    def set_key(self, key: bytes) -> None:
        """The call's key (from the challenge and the secret), both ways."""
        self.tx = self.rx = FrameCipher(key)
        self.candidates = []

    def tx_cipher(self, gen: int, index: int) -> FrameCipher | None:
        """The cipher for the datagram at ``index`` of the flush ``gen``."""
        if gen == self.mark_gen and index < self.mark_index:
            return self.prev_tx
        return self.tx

    def rotate_tx(self, key: bytes, gen: int, index: int) -> None:
        """Our RTKEY was queued at ``index - 1``: from ``index`` on, the new key."""
        self.prev_tx = self.tx
        self.tx = FrameCipher(key)
        self.mark_gen, self.mark_index = gen, index

    def rotate_rx(self, key: bytes) -> None:
        """The peer's RTKEY: its frames after it come with ``key``."""
        if self.rx is not None and self.rx.key == key:
            return                      # a retransmitted RTKEY
        self.prev_rx = self.rx
        self.rx = FrameCipher(key)

    def decrypt_full(self, data: bytes) -> bytes | None:
        """Decrypt a full frame of the call: with the key, the one before the peer's last
        rotation, or (a callee's first encrypted frame) each secret's key until one gives a
        frame; None when nothing does."""
        if self.rx is not None:
            plain = self.rx.decrypt_full(data)
            if plain is None and self.prev_rx is not None:
                plain = self.prev_rx.decrypt_full(data)
            return plain
        for secret in self.candidates:
            key = derive_key(self.challenge, secret)
            plain = FrameCipher(key).decrypt_full(data)
            if plain is not None:
                self.set_key(key)
                return plain
        return None

    def decrypt_mini(self, data: bytes) -> bytes | None:
        if self.rx is None:
            return None
        plain = self.rx.decrypt(data, MINI_CLEAR)
        if plain is None or len(plain) < 4:
            return None
        return plain


def rtkey_challenge(payload: bytes) -> bytes | None:
    """The 16-byte CHALLENGE IE of an RTKEY's IE block, or None."""
    i, n = 0, len(payload)
    while i + 2 <= n:
        ie, ln = payload[i], payload[i + 1]
        value = payload[i + 2:i + 2 + ln]
        if len(value) < ln:
            return None
        if ie == 15 and ln == 16:
            return value
        i += 2 + ln
    return None


def encrypt_datagrams(out: list[tuple[bytes, Any]], crypt: dict[int, CallCrypto],
                      gen: int) -> None:
    """Encrypt in place the full and mini frames of encrypted calls among the datagrams of
    flush ``gen`` (trunk datagrams and frames of other calls stay as they are)."""
    for i, (data, addr) in enumerate(out):
        b0 = data[0]
        if b0 & 0x80:
            clear = FULL_CLEAR
            callno = ((b0 & 0x7F) << 8) | data[1]
        elif b0 or data[1]:
            clear = MINI_CLEAR
            callno = (b0 << 8) | data[1]
        else:
            continue                    # trunk (meta) datagram: never encrypted
        cc = crypt.get(callno)
        if cc is None:
            continue
        cipher = cc.tx_cipher(gen, i)
        if clear == FULL_CLEAR and data[10] == 6 and data[11] == 39 and cc.prev_tx is not None:
            cipher = cc.prev_tx         # an RTKEY (and its resends) goes with the key before
        if cipher is not None:
            out[i] = (cipher.encrypt(data, clear), addr)
            cc.frames_out += 1


def decrypt_datagram(data: bytes, addr: Any, crypt: dict[int, CallCrypto],
                     calls: dict[int, Any], by_remote: dict[Any, Any]) -> bytes | None:
    """``data`` decrypted if it is a frame of an encrypted call from its peer's address, as
    it is if not; None if it should have been encrypted but does not decrypt.  A decrypted
    RTKEY switches the call's receive key at once (the datagrams after it in a batch use the
    new key)."""
    b0 = data[0]
    if b0 & 0x80:
        if len(data) < 12:
            return data if not crypt.get(((data[2] & 0x7F) << 8) | data[3]) else None
        callno = ((data[2] & 0x7F) << 8) | data[3]
        cc = crypt.get(callno)
        if cc is None:
            return data
        call = calls.get(callno)
        if call is None or call.addr != addr:
            return data
        plain = cc.decrypt_full(data)
        if plain is not None:
            cc.frames_in += 1
            if plain[10] == 6 and plain[11] == 39:          # IAX RTKEY
                key = rtkey_challenge(plain[12:])
                if key is not None:
                    cc.rotate_rx(key)
        return plain
    if not (b0 or data[1]):
        return data                     # trunk (meta) datagram
    call = by_remote.get((addr, (b0 << 8) | data[1]))
    if call is None:
        return data
    cc = crypt.get(call.callno)
    if cc is None:
        return data
    plain = cc.decrypt_mini(data)
    if plain is not None:
        cc.frames_in += 1
    return plain
