"""``auth = rsa`` (``inkeys``, ``outkey``) between two endpoints, with keys made by openssl as
``astgenkey -n`` makes them (``openssl genrsa 1024`` then ``openssl rsa -pubout``).

Known truths: the RSA_RESULT verifies with ``openssl dgst -sha1 -verify`` (an independent
implementation) and is 128 bytes; calls complete both ways; a signature by a key the callee
does not list is refused with REJECT 50 and its own reason; RSA with encryption keys the call
from the secret.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers_pair import Pair, full_frames, iax, seed_configs
from test_crypto import refusal_reasons
from test_protocol import setup_call

from iaxgw._core.constants import IE, IAXSubclass
from iaxgw._core.ies import IEs
from iaxgw.gateway.conf.model import IaxConfig
from iaxgw.gateway.iax2.events import AuthFailed, CallEnded, CallProgress
from iaxgw.gateway.iax2.rsakeys import (
    KeyProblem,
    KeyStore,
    key_problems,
    sign_challenge,
    verify_challenge,
)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not found")


def make_key(folder: Path, name: str, bits: int = 1024) -> None:
    """``name.key`` and ``name.pub`` as astgenkey -n writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "genrsa", "-out", str(folder / f"{name}.key"), str(bits)],
                   check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "rsa", "-in", str(folder / f"{name}.key"), "-pubout", "-out",
                    str(folder / f"{name}.pub")], check=True, capture_output=True, timeout=60)


def make_keys(folder: Path) -> Path:
    """office-a, office-b and stranger key pairs in ``folder``."""
    for name in ("office-a", "office-b", "stranger"):
        make_key(folder, name)
    return folder


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_keys(tmp_path_factory.mktemp("keys"))


def test_signature_is_what_openssl_verifies(keys: Path, tmp_path: Path) -> None:
    store = KeyStore(keys)
    sig = sign_challenge(store.private("office-a"), "1234567")
    raw = base64.b64decode(sig)
    assert len(raw) == 128
    (tmp_path / "sig").write_bytes(raw)
    (tmp_path / "msg").write_bytes(b"1234567")
    out = subprocess.run(["openssl", "dgst", "-sha1", "-verify", str(keys / "office-a.pub"),
                          "-signature", str(tmp_path / "sig"), str(tmp_path / "msg")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "Verified OK" in out.stdout
    assert verify_challenge(store.public("office-a"), "1234567", sig)
    assert not verify_challenge(store.public("office-a"), "1234568", sig)
    assert not verify_challenge(store.public("stranger"), "1234567", sig)
    assert not verify_challenge(store.public("office-a"), "1234567", "not base64 !!")


def test_key_problems_name_missing_unreadable_and_protected(keys: Path, tmp_path: Path) -> None:
    d = tmp_path / "k"
    shutil.copytree(keys, d)
    (d / "junk.pub").write_text("not a key\n")
    subprocess.run(["openssl", "genrsa", "-aes128", "-passout", "pass:x", "-out",
                    str(d / "locked.key"), "1024"], check=True, capture_output=True, timeout=60)
    make_key(d, "big", 2048)
    store = KeyStore(d)
    with pytest.raises(KeyProblem, match="no such key file"):
        store.public("nobody")
    with pytest.raises(KeyProblem, match="not a PEM public key"):
        store.public("junk")
    with pytest.raises(KeyProblem, match="passphrase"):
        store.private("locked")
    with pytest.raises(KeyProblem, match="not a file name"):
        store.public("../etc/passwd")
    ca, _ = seed_configs()
    e = ca.entries["office-b"]
    e.inkeys, e.outkey = ["office-b", "nobody"], "big"
    cfg = IaxConfig(general=ca.general, entries=ca.entries, keys_dir=d)
    problems = key_problems(cfg)
    assert len(problems) == 2, problems
    assert "inkeys nobody" in problems[0] and "2048-bit" in problems[1]


def _rsa_pair(keys: Path, a_outkey: str = "office-a", b_inkeys: tuple[str, ...] = ("office-a",),
              secret: bool = False, enc: int = 0) -> Pair:
    ca, cb = seed_configs(qualify=None, trunk=False)
    ea, eb = ca.entries["office-b"], cb.entries["office-a"]
    ea.outkey, ea.auth = a_outkey, frozenset({"rsa"})
    eb.inkeys, eb.auth = list(b_inkeys), frozenset({"rsa"})
    if not secret:
        ea.secrets, eb.secrets = [], []
    ea.encryption = eb.encryption = enc
    ca.keys_dir = cb.keys_dir = keys
    return Pair(ca, cb)


def test_rsa_call_completes(keys: Path) -> None:
    p = _rsa_pair(keys)
    setup_call(p)
    authreq = iax(full_frames(p.wire, "b>a"), IAXSubclass.AUTHREQ)[0]
    ies = IEs.parse(authreq.payload)
    assert ies.get(IE.AUTHMETHODS) == 4 and ies.get(IE.CHALLENGE)
    authrep = iax(full_frames(p.wire, "a>b"), IAXSubclass.AUTHREP)[0]
    sig = IEs.parse(authrep.payload).get(IE.RSA_RESULT)
    assert isinstance(sig, str) and len(base64.b64decode(sig)) == 128
    assert verify_challenge(KeyStore(keys).public("office-a"), str(ies.get(IE.CHALLENGE)), sig)
    assert p.ev(p.a, CallProgress) and not p.ev(p.b, AuthFailed)


def test_rsa_wrong_key_is_refused_with_its_reason(keys: Path) -> None:
    p = _rsa_pair(keys, a_outkey="stranger")
    assert refusal_reasons(p) == [
        "RSA signature does not verify with any of the inkeys of [office-a] (office-a)"]


def test_rsa_only_target_without_outkey_ends_the_call(keys: Path) -> None:
    p = _rsa_pair(keys, a_outkey="")
    p.a.config.entries["office-b"].outkey = None
    p.run(0.5)
    p.a.call("office-b", "300", p.now)
    assert p.run_until(lambda: p.ev(p.a, CallEnded), 10)
    assert p.ev(p.a, CallEnded)[0].cause_text == \
        "target takes only RSA authentication and we have no outkey"


def test_rsa_with_encryption_keys_from_the_secret(keys: Path) -> None:
    p = _rsa_pair(keys, secret=True, enc=0x8001)
    cn, bcn = setup_call(p)
    assert p.a.call_encrypted(cn) and p.b.call_encrypted(bcn)
    assert not p.ev(p.b, AuthFailed)
