"""``iaxgw check`` on encryption settings: one-sided encryption (forced or not), forceencryption
without a secret, encryption without md5, a value Asterisk does not take, keyrotate (which
Asterisk 22 does not read), and the note that trunked voice is not encrypted."""

from __future__ import annotations

import shutil
from pathlib import Path

from iaxgw.gateway.doctor.check import check_dirs

SEED = Path(__file__).parent / "data" / "seed"


def _pair(tmp_path: Path, a_extra: str = "", b_extra: str = "",
          a_sub: tuple[str, str] | None = None) -> tuple[Path, Path]:
    dirs = []
    for name, extra in (("office-a", a_extra), ("office-b", b_extra)):
        d = tmp_path / name
        shutil.copytree(SEED / name, d)
        p = d / "iax.conf"
        text = p.read_text()
        if extra:
            text = text.replace("[general]\n", "[general]\n" + extra, 1)
        if a_sub and name == "office-a":
            assert a_sub[0] in text
            text = text.replace(*a_sub, 1)
        p.write_text(text)
        dirs.append(d)
    return dirs[0], dirs[1]


def _codes(findings: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for f in findings:
        out.setdefault(f.code, []).append(f)
    return out


def test_forced_on_one_side_is_an_error_naming_both_refusals(tmp_path: Path) -> None:
    a, b = _pair(tmp_path, a_extra="encryption = aes128\nforceencryption = yes\n")
    found = _codes(check_dirs(a, b))["encryption-one-side"]
    assert len(found) == 1 and found[0].severity == "error"
    assert "unencrypted while force encrypt" in found[0].wire
    assert found[0].where.endswith("iax.conf:3")       # the forceencryption line of office-a


def test_offered_on_one_side_warns_that_calls_go_in_the_clear(tmp_path: Path) -> None:
    a, b = _pair(tmp_path, b_extra="encryption = yes\n")
    (f,) = _codes(check_dirs(a, b))["encryption-one-side"]
    assert f.severity == "warning" and "in the clear" in f.wire


def test_both_sides_with_a_trunk_note_the_clear_voice(tmp_path: Path) -> None:
    a, b = _pair(tmp_path, a_extra="encryption = aes128\n", b_extra="encryption = aes128\n")
    codes = _codes(check_dirs(a, b))
    assert "encryption-one-side" not in codes
    (f,) = codes["trunk-media-clear"]
    assert f.severity == "info" and "trunk datagrams are not" in f.message


def test_forceencryption_without_secret_and_bad_values(tmp_path: Path) -> None:
    a, _ = _pair(tmp_path, a_extra="forceencryption = yes\nkeyrotate = off\n"
                 "encryption = aes256\n",
                 a_sub=("secret = a-strong-shared-secret\n", ""))
    codes = _codes(check_dirs(a))
    (f,) = codes["forceencryption-no-secret"]
    assert f.severity == "error" and "[office-b]" in f.message
    (k,) = codes["keyrotate-ignored"]
    assert k.severity == "info" and "does not read" in k.message
    (v,) = codes["encryption-value"]
    assert "'aes256'" in v.message
    assert "unknown-option" not in codes and "yes-no-typo" not in codes


def test_encryption_with_plaintext_auth_warns(tmp_path: Path) -> None:
    a, _ = _pair(tmp_path, a_extra="encryption = yes\n", a_sub=("auth = md5", "auth = plaintext"))
    (f,) = _codes(check_dirs(a))["encryption-needs-md5"]
    assert f.severity == "warning" and "in the clear" in f.wire


def _rsa_sites(tmp_path: Path, a_outkey: str, b_inkeys: str, make: tuple[str, ...]) -> tuple[
        Path, Path]:
    from test_rsakeys import make_key

    a, b = _pair(tmp_path)
    for d, lines in ((a, f"outkey = {a_outkey}\n"), (b, f"auth = rsa\ninkeys = {b_inkeys}\n")):
        p = d / "iax.conf"
        p.write_text(p.read_text().replace("auth = md5\n", "auth = md5\n" + lines
                                           if d == a else lines, 1))
    for name in make:
        make_key(tmp_path / "made", name)
    for name in make:
        (a / "keys").mkdir(exist_ok=True)
        (b / "keys").mkdir(exist_ok=True)
        shutil.copy(tmp_path / "made" / f"{name}.key", a / "keys" / f"{name}.key")
        shutil.copy(tmp_path / "made" / f"{name}.pub", b / "keys" / f"{name}.pub")
    return a, b


def test_rsa_keys_that_match_give_no_finding(tmp_path: Path) -> None:
    a, b = _rsa_sites(tmp_path, "office-a", "office-a", ("office-a",))
    codes = _codes(check_dirs(a, b))
    assert not {"rsa-key", "rsa-key-mismatch", "rsa-no-inkeys", "unknown-option"} & set(codes)


def test_rsa_key_that_does_not_match_is_named(tmp_path: Path) -> None:
    a, b = _rsa_sites(tmp_path, "office-a", "other", ("office-a", "other"))
    # make office-b's "other.pub" a different key than office-a's outkey
    (f,) = _codes(check_dirs(a, b))["rsa-key-mismatch"]
    assert f.severity == "error" and "outkey office-a" in f.message
    assert "(other)" in f.message and f.where.endswith(":" + str(_line(a, "outkey")))


def test_rsa_missing_and_unreadable_keys_are_named(tmp_path: Path) -> None:
    a, b = _rsa_sites(tmp_path, "nokey", "office-a", ())
    (b / "keys").mkdir(exist_ok=True)
    (b / "keys" / "office-a.pub").write_text("garbage\n")
    found = _codes(check_dirs(a, b))["rsa-key"]
    msgs = sorted(f.message for f in found)
    assert len(msgs) == 2, msgs
    assert "inkeys office-a" in msgs[0] and "not a PEM public key" in msgs[0]
    assert "outkey nokey" in msgs[1] and "no such key file" in msgs[1]


def _line(d: Path, word: str) -> int:
    lines = (d / "iax.conf").read_text().splitlines()
    return next(i for i, ln in enumerate(lines, 1) if ln.startswith(word))
