"""RSA keys for ``auth = rsa`` (``inkeys``, ``outkey``), read and used as Asterisk 22's
res_crypto does.

* Keys live in one folder: ``NAME.pub`` a PEM public key, ``NAME.key`` a PEM private key (the
  files ``astgenkey -n`` writes: ``openssl genrsa`` then ``openssl rsa -pubout``).  A private
  key protected by a passphrase is refused here (Asterisk asks for the passphrase at its CLI).
* RSA_RESULT: the base64 of a PKCS#1 v1.5 signature with SHA-1 over the challenge text.
  Asterisk checks only signatures of exactly 128 bytes: 1024-bit keys (larger ones do not fit
  its buffers nor the 255-byte IE).
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

if TYPE_CHECKING:
    from iaxgw.gateway.conf.model import Entry, IaxConfig

__all__ = ["SIGNATURE_BYTES", "KeyProblem", "KeyStore", "entry_key_problems", "key_problems",
           "outkey_matches", "sign_challenge", "verify_challenge"]

log = logging.getLogger("iaxgw.rsakeys")

SIGNATURE_BYTES = 128               # 1024-bit RSA, the only size Asterisk verifies
MAX_KEY_FILE = 64 * 1024


class KeyProblem(Exception):
    """A key that is missing, unreadable or not an RSA key of the right kind."""


def _read(path: Path) -> bytes:
    try:
        if not path.is_file():
            raise KeyProblem(f"{path}: no such key file")
        data = path.read_bytes()
    except OSError as exc:
        raise KeyProblem(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE:
        raise KeyProblem(f"{path}: over {MAX_KEY_FILE} bytes, not a key")
    return data


def load_public(path: Path) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(_read(path))
    except ValueError as exc:
        raise KeyProblem(f"{path}: not a PEM public key ({exc})") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyProblem(f"{path}: not an RSA key")
    return key


def load_private(path: Path) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(path), password=None)
    except TypeError:
        raise KeyProblem(f"{path}: the private key is protected by a passphrase; write it "
                        "without one (astgenkey -n, or openssl rsa -in it -out it)") from None
    except ValueError as exc:
        raise KeyProblem(f"{path}: not a PEM private key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyProblem(f"{path}: not an RSA key")
    return key


def sign_challenge(key: rsa.RSAPrivateKey, challenge: str) -> str:
    """RSA_RESULT for ``challenge``: base64 of its SHA-1 PKCS#1 v1.5 signature."""
    sig = key.sign(challenge.encode("utf-8", "surrogateescape"), padding.PKCS1v15(),
                   hashes.SHA1())
    return base64.b64encode(sig).decode("ascii")


def verify_challenge(key: rsa.RSAPublicKey, challenge: str, result: str) -> bool:
    """Whether ``result`` (base64) is a signature of ``challenge`` by ``key``'s private key,
    128 bytes long as Asterisk requires."""
    try:
        sig = base64.b64decode(result.strip(), validate=False)
    except (binascii.Error, ValueError):
        return False
    if len(sig) != SIGNATURE_BYTES:
        return False
    try:
        key.verify(sig, challenge.encode("utf-8", "surrogateescape"), padding.PKCS1v15(),
                   hashes.SHA1())
    except InvalidSignature:
        return False
    return True


@dataclass
class KeyStore:
    """The keys of a folder, each read once when first needed (``None``: no folder)."""

    folder: Path | None
    _public: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)
    _private: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)

    def _path(self, name: str, ext: str) -> Path:
        if self.folder is None:
            raise KeyProblem(f"no keys folder for key {name!r} (a keys/ folder beside iax.conf, "
                            "or --keys DIR)")
        if not name or "/" in name or name.startswith("."):
            raise KeyProblem(f"key name {name!r} is not a file name")
        return self.folder / f"{name}{ext}"

    def public(self, name: str) -> rsa.RSAPublicKey:
        key = self._public.get(name)
        if key is None:
            key = self._public[name] = load_public(self._path(name, ".pub"))
        return key

    def private(self, name: str) -> rsa.RSAPrivateKey:
        key = self._private.get(name)
        if key is None:
            key = self._private[name] = load_private(self._path(name, ".key"))
        return key


def key_problems(config: IaxConfig) -> list[str]:
    """Every inkey and outkey of the config that cannot be used, with why (read now)."""
    store = KeyStore(config.keys_dir)
    return [f"[{e.name}] {p}" for e in config.entries.values()
            for p in entry_key_problems(store, e)]


def entry_key_problems(store: KeyStore, e: Entry) -> list[str]:
    """The entry's inkeys and outkey that cannot be used, with why."""
    out: list[str] = []
    for name in e.inkeys:
        try:
            store.public(name)
        except KeyProblem as exc:
            out.append(f"inkeys {name}: {exc}")
    if e.outkey:
        try:
            key = store.private(e.outkey)
        except KeyProblem as exc:
            out.append(f"outkey {e.outkey}: {exc}")
            return out
        if key.key_size != 8 * SIGNATURE_BYTES:
            out.append(f"outkey {e.outkey}: a {key.key_size}-bit key; Asterisk checks only "
                       f"{8 * SIGNATURE_BYTES}-bit signatures")
    return out


def outkey_matches(ours: KeyStore, outkey: str, theirs: KeyStore, inkeys: list[str]) -> bool | None:
    """Whether the public half of our ``outkey`` is one of their ``inkeys`` (None: a key
    cannot be read, so it cannot be told)."""
    try:
        mine = ours.private(outkey).public_key().public_numbers()
        listed = [theirs.public(n).public_numbers() for n in inkeys]
    except KeyProblem:
        return None
    return mine in listed
