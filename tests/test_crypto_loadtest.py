"""The load tester encrypted against an iaxgw echo peer (no Asterisk): ``--encryption`` with
the peer forcing it (trunked and not), without it, and against a peer that does not encrypt;
the summary's ``encryption`` and the causes and notes."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from test_loadtest import EchoPeer, _opts, _run, _site_dir

from iaxgw.sim.load.loadtest import encryption_line
from iaxgw.sim.report.report import summary_schema

pytestmark = pytest.mark.timeout(120)

_NETS = itertools.count(31)


def _sites(tmp: Path, peer_general: str) -> dict[str, Any]:
    n = next(_NETS)
    a_ip, b_ip = f"127.1.{n}.10", f"127.1.{n}.20"
    a = _site_dir(tmp / "a", "office-a", a_ip, b_ip)
    b = _site_dir(tmp / "b", "office-b", a_ip, b_ip)
    conf = b / "iax.conf"
    conf.write_text(conf.read_text().replace("[general]\n", "[general]\n" + peer_general, 1))
    return {"a": a, "b": b, "b_ip": b_ip, "tmp": tmp}


@pytest.mark.parametrize("trunk", [True, False], ids=["trunk", "no-trunk"])
def test_encrypted_calls_verified_and_counted(tmp_path: Path, trunk: bool) -> None:
    s = _sites(tmp_path, "encryption = aes128\nforceencryption = yes\n")
    with EchoPeer(s["b"], (s["b_ip"], 4569)) as peer:
        res = _run(_opts(s, calls=6, rate=20, duration=(2.0, 2.0), trunk=trunk,
                         encryption=True))
        peer_stats = peer.ep.stats()
    summ = res.summary
    assert res.exit_code == 0, summ["loadtest"]
    assert summ["answered"] == 6 and summ["audio"]["verified"] == 6
    assert summ["encryption"] == {"offered": True, "forced": True, "key_rotation": True,
                                  "answered": 6, "encrypted": 6, "trunk": trunk}
    jsonschema.validate(summ, summary_schema())
    assert peer_stats.get("key_rotations") == 6          # the callee's, at its first voice
    assert summ["endpoint"].get("key_rotations_received") == 6
    line = encryption_line(summ["encryption"])
    assert line.startswith("encryption: aes128, forced; 6 of 6 answered calls encrypted")
    assert ("trunked voice travels in the clear" in line) == trunk


def test_clear_calls_to_a_forcing_peer_are_refused(tmp_path: Path) -> None:
    s = _sites(tmp_path, "encryption = aes128\nforceencryption = yes\n")
    with EchoPeer(s["b"], (s["b_ip"], 4569)) as peer:
        res = _run(_opts(s, calls=2, rate=20, duration=(1.0, 1.0), encryption=False))
        refused = peer.ep.stats().get("reject_unencrypted")
    summ = res.summary
    assert summ["answered"] == 0 and res.exit_code == 1
    assert summ["causes"] == {"REJECT (50 No authority found)": 2}, summ["causes"]
    assert refused == 2
    assert summ["encryption"]["encrypted"] == 0 and not summ["encryption"]["offered"]
    assert any("--encryption" in n for n in summ["loadtest"]["notes"])


def test_encryption_required_by_us_and_refused_by_the_peer(tmp_path: Path) -> None:
    s = _sites(tmp_path, "")
    with EchoPeer(s["b"], (s["b_ip"], 4569)):
        res = _run(_opts(s, calls=2, rate=20, duration=(1.0, 1.0), encryption=True))
    summ = res.summary
    assert summ["answered"] == 0 and res.exit_code == 1
    text = ("REJECT (50 target does not encrypt (its AUTHREQ asks for no encryption) while "
            "forceencryption = yes)")
    assert summ["causes"] == {text: 2}, summ["causes"]
    assert any("does not agree to encrypt" in n for n in summ["loadtest"]["notes"])


def test_lab_sites_written_encrypted_serve_and_loadtest(tmp_path: Path) -> None:
    """``iaxgw lab --encryption``'s two sites (write_site): serve as a process, the load tester
    calling it with mini frames; every call encrypted, audio verified."""
    from iaxgw.sim.lab.loadtest_lab import ServeProcess, write_site
    from iaxgw.sim.load.loadtest_plan import LoadtestOptions

    n = next(_NETS)
    a_ip, b_ip = f"127.1.{n}.10", f"127.1.{n}.20"
    opts = LoadtestOptions(calls=4, rate=20, duration=(2.0, 2.0), quiet=True, live=False,
                           extens=["300"], peer="office-b", peer_host=(b_ip, 4569),
                           bind=(a_ip, 4569), trunk=False, encryption=True)
    a_dir = write_site(tmp_path / "office-a", "office-a", opts, a_ip, b_ip)
    b_dir = write_site(tmp_path / "office-b", "office-b", opts, a_ip, b_ip)
    assert "forceencryption = yes" in (b_dir / "iax.conf").read_text()
    opts.config_dir = a_dir
    opts.check()
    serve = ServeProcess(b_dir, tmp_path)
    serve.start()
    try:
        res = _run(opts)
    finally:
        serve.stop()
    s = res.summary
    assert s["answered"] == 4 and s["audio"]["verified"] == 4, s["causes"]
    assert s["encryption"]["encrypted"] == 4
