"""iaxgw check: findings from config files alone (no network)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from iaxgw.gateway.cli import main
from iaxgw.gateway.doctor.check import check_dirs, has_errors
from iaxgw.gateway.iax2.address import parse_hostport
from iaxgw.gateway.pbx.dialplan import pattern_samples

SEED = Path(__file__).parent / "data" / "seed"


def _site(tmp_path: Path, name: str, edits: dict[str, list[tuple[str, str]]] | None = None
          ) -> Path:
    d = tmp_path / name
    shutil.copytree(SEED / name, d)
    for fname, subs in (edits or {}).items():
        p = d / fname
        text = p.read_text()
        for old, new in subs:
            assert old in text, (old, fname)
            text = text.replace(old, new)
        p.write_text(text)
    return d


def _codes(findings: list) -> set[str]:
    return {f.code for f in findings if f.severity in ("error", "warning")}


def test_seed_checks_clean() -> None:
    assert check_dirs(SEED / "office-a", SEED / "office-b") == []
    assert check_dirs(SEED / "office-b", SEED / "office-a") == []
    assert check_dirs(SEED / "office-a") == []


CASES = [
    ("username", {"iax.conf": [("username = office-a", "username = office-x")]},
     "username-mismatch", "iax.conf:10"),
    ("secret", {"iax.conf": [("secret = a-strong-shared-secret", "secret = other")]},
     "secret-mismatch", "iax.conf:11"),
    ("auth", {"iax.conf": [("auth = md5", "auth = rsa")]}, "auth-no-overlap", "iax.conf:12"),
    ("acl", {"iax.conf": [("permit = 10.2.2.20/255.255.255.255",
                           "permit = 10.9.9.9/255.255.255.255")]},
     "acl-blocks-host", "iax.conf:15"),
    ("codecs", {"iax.conf": [("allow = ulaw\nallow = alaw", "allow = gsm")]},
     "codec-no-overlap", "iax.conf:5"),
    ("trunk", {"iax.conf": [("trunk = yes", "trunk = no")]}, "trunk-one-side", "iax.conf:19"),
    ("trunktimestamps",
     {"iax.conf": [("bindport = 4569", "bindport = 4569\ntrunktimestamps = yes")]},
     "trunktimestamps-differ", ""),
    ("context", {"iax.conf": [("context = from-iax\n", "context = from-iaxx\n")]},
     "context-missing", "iax.conf:16"),
    ("peercontext", {"iax.conf": [("peercontext = from-iax", "peercontext = nowhere")]},
     "peercontext-not-allowed", "iax.conf:17"),
    ("route", {"extensions.conf": [("exten => _3XX,1,Dial(IAX2", "exten => _4XX,1,Dial(IAX2")]},
     "no-route-at-remote", "extensions.conf:9"),
    ("loop", {"extensions.conf": [("exten => _2XX,1,Dial(PJSIP/${EXTEN},30)",
                                   "exten => _2XX,1,Dial(IAX2/office-b/${EXTEN})")]},
     "routing-loop", "extensions.conf:3"),
    ("port", {"iax.conf": [("host = 10.2.2.20", "host = 10.2.2.20\nport = 4570")]},
     "port-mismatch", "iax.conf:14"),
    ("bindport", {"iax.conf": [("bindport = 4569", "bindport = 4570")]},
     "port-mismatch", "office-b/iax.conf:8"),
    ("authfaillimit", {"iax.conf": [("bindport = 4569", "bindport = 4569\nauthfaillimit = 5")]},
     "authfaillimit-on", "iax.conf"),
]


@pytest.mark.parametrize("name,edits,code,where", CASES, ids=[c[0] for c in CASES])
def test_check_names_problem(tmp_path: Path, name: str, edits: dict, code: str,
                             where: str) -> None:
    a = _site(tmp_path, "office-a", edits)
    b = _site(tmp_path, "office-b")
    findings = check_dirs(a, b)
    hits = [f for f in findings if f.code == code]
    assert hits, findings
    assert any(where in f.where or (not where) for f in hits), hits
    assert all(f.wire and f.fix for f in findings)
    # seen from the other side too
    assert code in {f.code for f in check_dirs(b, a)}


def test_hosts_not_crossed(tmp_path: Path) -> None:
    a = _site(tmp_path, "office-a", {"iax.conf": [("bindaddr = 0.0.0.0", "bindaddr = 10.1.1.10")]})
    b = _site(tmp_path, "office-b", {"iax.conf": [("host = 10.1.1.10", "host = 10.1.1.11"),
                                                  ("permit = 10.1.1.10", "permit = 10.1.1.11")]})
    codes = _codes(check_dirs(a, b))
    assert {"host-mismatch", "acl-blocks-remote"} <= codes


def test_config_error_is_a_finding(tmp_path: Path) -> None:
    a = _site(tmp_path, "office-a", {"iax.conf": [("bindport = 4569", "bindport = 99999")]})
    findings = check_dirs(a, SEED / "office-b")
    assert findings[0].code == "config-error" and findings[0].severity == "error"
    assert findings[0].where.endswith("iax.conf:2")


def test_cli_exit_codes_and_json(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["check", str(SEED / "office-a"), "--remote",
                                  str(SEED / "office-b")])
    assert r.exit_code == 0, r.output
    a = _site(tmp_path, "office-a", {"iax.conf": [("secret = a-strong", "secret = b-strong")]})
    r = CliRunner().invoke(main, ["check", str(a), "--remote", str(SEED / "office-b"),
                                  "--json"])
    assert r.exit_code == 1
    data = json.loads(r.output)
    assert data["errors"] >= 1
    assert {"code", "severity", "where", "message", "wire", "fix"} <= set(data["findings"][0])


def test_helpers() -> None:
    assert pattern_samples("_3XX") == ["300", "399"]
    assert pattern_samples("_2[05-7]Z") == ["201", "279"]
    assert pattern_samples("300") == ["300"]
    assert parse_hostport("127.0.0.10") == ("127.0.0.10", 4569)
    assert parse_hostport("127.0.0.10:4570") == ("127.0.0.10", 4570)
    assert parse_hostport("[::1]:5000") == ("::1", 5000)
    assert not has_errors([])
