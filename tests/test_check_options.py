"""``iaxgw check`` on crafted configs: unknown option names (with a did-you-mean), yes/no values
read as Asterisk's ast_true() reads them, Dial(IAX2/...) to no entry, a file path for a folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from iaxgw.gateway.cli import main
from iaxgw.gateway.doctor.check import check_dirs

SEED = Path(__file__).parent / "data" / "seed"


def _site(tmp_path: Path, name: str, fname: str, old: str, new: str) -> Path:
    d = tmp_path / name
    shutil.copytree(SEED / name, d)
    p = d / fname
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new, 1))
    return d


def _by_code(findings: list, code: str) -> list:
    return [f for f in findings if f.code == code]


def test_unknown_option_warns_with_did_you_mean(tmp_path: Path) -> None:
    d = _site(tmp_path, "office-a", "iax.conf", "secret = ", "secert = ")
    found = _by_code(check_dirs(d), "unknown-option")
    assert len(found) == 1
    f = found[0]
    assert f.severity == "warning" and "'secert'" in f.message
    assert "did you mean 'secret'?" in f.message
    assert f.where.endswith("iax.conf:" + str(_line(d / "iax.conf", "secert")))
    # a name like nothing known: no guess
    d2 = _site(tmp_path / "2", "office-a", "iax.conf", "secret = ", "zzqqxx = 1\nsecret = ")
    (f2,) = _by_code(check_dirs(d2), "unknown-option")
    assert "did you mean" not in f2.message


def _line(path: Path, needle: str) -> int:
    return next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if needle in ln)


def test_yes_no_typo_reads_as_no(tmp_path: Path) -> None:
    d = _site(tmp_path, "office-a", "iax.conf", "trunk = yes", "trunk = yse")
    findings = check_dirs(d)
    (f,) = _by_code(findings, "yes-no-typo")
    assert "'yse'" in f.message and "reads it as 'no'" in f.message
    assert "iaxgw serve refuses the file" in f.message
    # every spelling ast_true() takes for yes or no is fine, in any case
    for word in ("Yes", "TRUE", "y", "t", "1", "on", "No", "false", "n", "f", "0", "OFF"):
        d = _site(tmp_path / word, "office-a", "iax.conf", "trunk = yes", f"trunk = {word}")
        assert not _by_code(check_dirs(d), "yes-no-typo"), word


def test_dial_to_an_unknown_peer_is_an_error(tmp_path: Path) -> None:
    d = _site(tmp_path, "office-a", "extensions.conf", "Dial(IAX2/office-b/",
              "Dial(IAX2/ofice-b/")
    (f,) = _by_code(check_dirs(d), "dial-unknown-peer")
    assert f.severity == "error" and "IAX2/ofice-b/" in f.message
    assert "did you mean 'office-b'?" in f.message
    assert f.where.endswith(f"extensions.conf:{_line(d / 'extensions.conf', 'ofice-b')}")
    # an address is not a peer name
    d2 = _site(tmp_path / "ip", "office-a", "extensions.conf", "Dial(IAX2/office-b/",
               "Dial(IAX2/127.0.0.20/")
    assert not _by_code(check_dirs(d2), "dial-unknown-peer")


def test_check_takes_a_file_as_its_folder(tmp_path: Path) -> None:
    d = _site(tmp_path, "office-a", "iax.conf", "secret = ", "secert = ")
    r = CliRunner().invoke(main, ["check", str(d / "iax.conf"), "--json"])
    codes = {f["code"] for f in json.loads(r.output)["findings"]}
    assert "unknown-option" in codes and "missing-file" not in codes
    r = CliRunner().invoke(main, ["check", str(SEED / "office-a" / "extensions.conf"),
                                  "--remote", str(SEED / "office-b" / "iax.conf")])
    assert r.exit_code == 0 and "no problems found" in r.output, r.output
