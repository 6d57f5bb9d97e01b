"""iaxgw check and probe against the real Asterisk 22 lab: one office-a per configuration.

Our side (office-b, 127.0.0.20:4569) is iaxgw's own config written to a tmp dir; office-a is the
lab's rendered seed with one LabSiteConfig change per case.  ``check`` reads our dir plus the
lab's rendered office-a dir; ``probe`` talks to office-a on 127.0.0.10:4569.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from iaxgw.gateway.cli import main
from iaxgw.gateway.doctor.check import check_dirs, has_errors
from iaxgw.gateway.doctor.probe import ProbeReport, probe
from iaxgw.sim.lab.labconfig import SEED_SECRET, seed_site

pytestmark = pytest.mark.asterisk

SEED_B = Path(__file__).parent / "data" / "seed" / "office-b"
OURS = f"""[general]
bindport = 4569
bindaddr = 127.0.0.20
disallow = all
allow = ulaw
allow = alaw

[office-a]
type = friend
username = office-b
secret = {SEED_SECRET}
auth = md5
host = 127.0.0.10
deny = 0.0.0.0/0.0.0.0
permit = 127.0.0.10/255.255.255.255
context = from-iax
peercontext = from-iax
qualify = yes
trunk = yes
"""

# id, office-a overrides, probe --exten, check code expected (None: no errors),
# (probe step that must fail or warn, text in its detail/hint) (None: probe passes clean)
CASES: list[tuple[str, dict[str, Any], str | None, str | None, tuple[str, str] | None]] = [
    ("healthy", {}, "200", None, None),
    ("wrong-secret", {"secret": "not-the-secret"}, None, "secret-mismatch",
     ("auth", "the secret differs")),
    ("username-vs-section", {"remote_name": "office-c"}, None, "username-mismatch",
     ("auth", "username office-b names no section")),
    ("permit-excludes-us", {"permit": ("127.0.0.99/255.255.255.255",)}, None,
     "acl-blocks-host", ("auth", "permit/deny (ACL) shuts us out")),
    ("hosts-not-crossed", {"remote_host": "127.0.0.30"}, None, "host-mismatch",
     ("auth", "ACL")),
    ("auth-rsa-only", {"auth": "rsa"}, None, "auth-no-overlap", ("auth", "offers rsa")),
    ("codec-mismatch", {"codecs": ("gsm",)}, None, "codec-no-overlap", ("codec", "cause 58")),
    ("context-missing", {"context": "nonexistent"}, None, "context-missing",
     ("auth", "without CALLED_CONTEXT passes")),
    ("routes-4xx", {"remote_prefix": "4"}, None, "no-route-at-remote", None),
    ("loop", {"extra_dialplan": {"from-iax": ("exten => _25X,1,Dial(IAX2/office-b/${EXTEN})",)}},
     "250", "routing-loop", ("loop", "called us back")),
    ("trunk-one-side", {"trunk": False}, "200", "trunk-one-side", ("media", "does not trunk")),
    ("trunktimestamps", {"trunktimestamps": True}, "200", "trunktimestamps-differ",
     ("media", "timestamps")),
    ("remote-dials-other-port", {"remote_port": 4570}, "200", "port-mismatch",
     ("media", "does not trunk")),
]


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("iaxgw-office-b")
    (d / "iax.conf").write_text(OURS)
    (d / "extensions.conf").write_text((SEED_B / "extensions.conf").read_text())
    return d


def _probe(ours: Path, exten: str | None) -> ProbeReport:
    rep = asyncio.run(probe("127.0.0.10", 4569, "office-a", config_dir=str(ours), exten=exten,
                            media_seconds=1.0))
    if rep.stopped_at == "bind":
        pytest.skip(f"127.0.0.20:4569 is busy: {rep.steps[-1].detail}")
    return rep


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_check_and_probe(lab: Any, ours: Path, case: tuple) -> None:
    _name, overrides, exten, code, wire = case
    inst = lab.instance("office-a", seed_site("office-a", **overrides))
    inst.start()
    try:
        findings = check_dirs(ours, inst.etc_path)
        bad = [f for f in findings if f.severity in ("error", "warning")]
        if code is None:
            assert not bad, findings
        else:
            assert code in {f.code for f in bad}, findings
        rep = _probe(ours, exten)
        text = rep.format()
        if wire is None:
            assert rep.ok and not any(s.status == "warn" for s in rep.steps), text
        else:
            step = rep.step(wire[0])
            assert step is not None and step.status in ("fail", "warn"), text
            assert wire[1] in step.detail + step.hint, text
    finally:
        inst.stop()
    if code is None:
        assert not has_errors(findings)


def test_office_a_down_no_pong(lab: Any, ours: Path) -> None:
    rep = _probe(ours, None)
    assert rep.stopped_at == "poke", rep.format()
    assert "no answer in 2 s" in rep.steps[-1].detail
    assert "blocked" in rep.steps[-1].hint


def test_probe_command_line_reads_its_target(lab: Any, ours: Path) -> None:
    """``iaxgw probe HOST:PORT`` parses the target and reaches the real office-a with it."""
    inst = lab.instance("office-a", seed_site("office-a"))
    inst.start()
    try:
        r = CliRunner().invoke(main, ["probe", "127.0.0.10:4569", "--peer", "office-a",
                                      "--config", str(ours), "--bind", "127.0.0.20:4569",
                                      "--json"])
    finally:
        inst.stop()
    rep = json.loads(r.output)
    if rep.get("stopped_at") == "bind":
        pytest.skip("127.0.0.20:4569 is busy")
    assert r.exit_code == 0, r.output
    assert rep["target"] == "127.0.0.10:4569" and rep["ok"], r.output
    assert rep["steps"] and not any(s["status"] in ("fail", "warn") for s in rep["steps"]), r.output
