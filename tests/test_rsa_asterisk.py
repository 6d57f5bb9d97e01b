"""``auth = rsa`` against the lab's real Asterisk 22 (office-a at 127.0.0.10:4569), keys made
by openssl as ``astgenkey -n`` makes them, 1024 bits:

* the load tester (office-b, ``outkey = office-b``) calls office-a (``auth = rsa``,
  ``inkeys = office-b``): answered, audio verified; signed with a key office-a does not list:
  refused (REJECT 50), Asterisk's log names no matching key;
* office-a (``outkey = office-a``) calls ``iaxgw serve`` (``inkeys = office-a``): audio both
  ways; with a key serve does not list: refused, serve's reason names the inkeys.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from test_crypto_asterisk import _run, _serve
from test_rsakeys import make_keys
from test_serve_asterisk import _show, wait_channel_up

from iaxgw.sim.lab.labconfig import SiteDirs
from iaxgw.sim.lab.loadtest_lab import write_site
from iaxgw.sim.load.loadtest_plan import LoadtestOptions

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_keys(tmp_path_factory.mktemp("rsakeys"))


def _asterisk_keys(lab: Any, keys: Path, files: tuple[str, ...]) -> None:
    """Put ``files`` (e.g. ``office-b.pub``) in office-a's key folder, before it starts.  One
    file each time: the lab's Asterisk 22 loaded only the first file of a keys folder holding
    several ("Unable to open key directory" after it), so each test gives it the one key its
    side of the call needs."""
    kdir = lab.host_path(f"{SiteDirs.for_site('office-a').varlib}/keys")
    if kdir.exists():
        shutil.rmtree(kdir)
    kdir.mkdir(parents=True)
    for f in files:
        shutil.copy(keys / f, kdir / f)
        (kdir / f).chmod(0o600)


def _our_site(tmp: Path, keys: Path, outkey: str, inkeys: str = "office-a") -> Path:
    d = write_site(tmp / "office-b", "office-b", LoadtestOptions(trunk=False))
    conf = d / "iax.conf"
    conf.write_text(conf.read_text().replace(
        "auth = md5", f"auth = rsa\ninkeys = {inkeys}\noutkey = {outkey}", 1))
    shutil.copytree(keys, d / "keys")
    return d


@pytest.mark.parametrize(("outkey", "answered"), [("office-b", 2), ("stranger", 0)])
def test_loadtest_rsa_to_office_a(lab: Any, asterisk_factory: Any, keys: Path, tmp_path: Path,
                                  outkey: str, answered: int) -> None:
    _asterisk_keys(lab, keys, ("office-b.pub",))
    inst = asterisk_factory("office-a", trunk=False, auth="rsa",
                            extra_peer=("inkeys = office-b",))
    print(inst.cli("keys show"))
    site = _our_site(tmp_path, keys, outkey)
    res = _run(calls=2, rate=10.0, duration=(2.0, 2.0), trunk=False, config_dir=site,
               peer_host=None, bind=None)
    s = res.summary
    print(s["causes"], s["loadtest"]["notes"])
    assert s["answered"] == answered, s["causes"]
    if answered:
        assert s["audio"]["verified"] == answered and res.exit_code == 0
    else:
        assert s["causes"] == {"REJECT (50 No authority found)": 2}, s["causes"]
        notes = " ".join(s["loadtest"]["notes"])
        assert "RSA signature (outkey stranger)" in notes, notes


@pytest.mark.parametrize(("a_outkey", "ok"), [("office-a", True), ("stranger", False)])
def test_office_a_calls_serve_with_rsa(lab: Any, asterisk_factory: Any, keys: Path,
                                       tmp_path: Path, a_outkey: str, ok: bool) -> None:
    _asterisk_keys(lab, keys, (f"{a_outkey}.key",))
    office_a = asterisk_factory("office-a", trunk=False, auth="rsa",
                                extra_peer=(f"outkey = {a_outkey}",))
    site = _our_site(tmp_path, keys, "office-b")
    proc, ctl, _pcap = _serve(site, tmp_path)
    try:
        office_a.wait_peer_ok("office-b", timeout=90)
        office_a.originate("Local/300@internal", "Milliwatt")
        if ok:
            chans = wait_channel_up(ctl, 100)
            print("serve channels:", chans)
            assert chans and chans[0]["frames_rx"] > 100 and chans[0]["frames_tx"] > 100
        else:
            time.sleep(3.0)
            assert not _show(ctl, "channels")
        office_a.hangup_all()
        time.sleep(0.3)
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=15)
    if not ok:
        assert "RSA signature does not verify with any of the inkeys of [office-a]" in err, \
            err[-2000:]
