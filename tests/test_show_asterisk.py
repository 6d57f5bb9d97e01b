"""``iaxgw show registry|users|peer NAME`` against the lab's Asterisk 22 ``iax2 show ...`` for the
same iax.conf: office-a with a ``register =>`` line to office-b, office-b not running, both
looked at 1 s after start (registration "Request Sent", office-b's qualify still UNKNOWN)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from iaxgw.sim.lab.labconfig import SEED_SECRET, render_extensions_conf, render_iax_conf, seed_site

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(180)]

COMMANDS = [("registry",), ("users",), ("peer", "office-b"), ("peer", "nosuch"), ("peers",)]
LOOK_AFTER_S = 1.0


#: options iaxgw gives no effect but shows as Asterisk does
SHOWN_ONLY = ("description = Office B, Lyon", "mailbox = 1234@default", "parkinglot = lot2",
              "maxcallnumbers = 100", "encryption = yes", "codecpriority = caller",
              'callerid = "Office B" <300>')


def _config(extra_peer: tuple[str, ...] = ()) -> Any:
    return seed_site("office-a", extra_general=(
        f"register => office-a:{SEED_SECRET}@127.0.0.20",), extra_peer=extra_peer)


def _asterisk_outputs(lab: Any, cfg: Any) -> dict[tuple[str, ...], str]:
    inst = lab.instance("office-a", cfg).start()
    try:
        started = time.monotonic()
        time.sleep(max(0.0, LOOK_AFTER_S - (time.monotonic() - started)))
        return {cmd: inst.cli("iax2 show " + " ".join(cmd)) for cmd in COMMANDS}
    finally:
        inst.stop()


def _iaxgw_outputs(tmp_path: Path, cfg: Any) -> dict[tuple[str, ...], str]:
    conf = tmp_path / "office-a"
    conf.mkdir()
    (conf / "iax.conf").write_text(render_iax_conf(cfg))
    (conf / "extensions.conf").write_text(render_extensions_conf(cfg))
    sock = str(tmp_path / "serve.sock")
    proc = subprocess.Popen([sys.executable, "-m", "iaxgw.gateway.cli", "serve", "--config",
                             str(conf), "--peer", "office-b", "--control", sock, "--spool",
                             str(tmp_path / "spool")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not Path(sock).exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.02)
        time.sleep(LOOK_AFTER_S)
        out = {}
        for cmd in COMMANDS:
            res = subprocess.run([sys.executable, "-m", "iaxgw.gateway.cli", "show", *cmd,
                                  "--control", sock], capture_output=True, text=True,
                                 timeout=30)
            assert res.returncode == 0, res.stderr
            out[cmd] = res.stdout
        return out
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


@pytest.mark.parametrize("extra_peer", [(), SHOWN_ONLY], ids=["seed", "shown-only-options"])
def test_show_registry_users_peer_byte_for_byte(lab: Any, tmp_path: Path,
                                                extra_peer: tuple[str, ...]) -> None:
    theirs = _asterisk_outputs(lab, _config(extra_peer))
    ours = _iaxgw_outputs(tmp_path, _config(extra_peer))
    for cmd in COMMANDS:
        print(f"--- iax2 show {' '.join(cmd)} (Asterisk 22)\n{theirs[cmd]!r}")
        print(f"--- iaxgw show {' '.join(cmd)}\n{ours[cmd]!r}")
    assert "Request Sent" in theirs[("registry",)]
    assert "Status       : UNKNOWN" in theirs[("peer", "office-b")]
    for cmd in COMMANDS:
        assert ours[cmd] == theirs[cmd], cmd


def _row_of(text: str, peer_ip: str) -> str:
    """The ``iax2 show channels`` row of the one call to/from ``peer_ip``."""
    rows = [line for line in text.splitlines()
            if f"  {peer_ip}  " in line and not line.startswith("(None)")]
    assert len(rows) == 1, text
    return rows[0]


def _net_row(text: str, prefix: str) -> str:
    rows = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(rows) == 1, text
    return rows[0]


def test_channels_first_last_message_and_username_mirror_asterisk(lab: Any,
                                                                  tmp_path: Path) -> None:
    """office-a (the lab's Asterisk) calls iaxgw's echo: Asterisk's row says Tx:NEW first and
    the USERNAME it sent; ours says Rx:NEW and the same name, in the same columns."""
    from test_serve_interop_matrix import Gw

    inst = lab.instance("office-a", seed_site("office-a")).start()
    try:
        with Gw(tmp_path) as gw:
            inst.wait_peer_ok("office-b", timeout=30)
            inst.originate("Local/300@internal", "Milliwatt")
            gw.wait(lambda: bool(gw.incoming()), 10, "office-a's call")
            time.sleep(1.0)
            theirs = _row_of(inst.cli("iax2 show channels"), "127.0.0.20")
            ours = _row_of(gw.show("channels"), "127.0.0.10")
            t_net = _net_row(inst.cli("iax2 show netstats"), "IAX2/office-b")
            o_net = _net_row(gw.show("netstats"), "IAX2/office-a")
            print(f"office-a: {theirs!r}\niaxgw:    {ours!r}")
            print(f"office-a: {t_net!r}\niaxgw:    {o_net!r}")
            inst.hangup_all()
    finally:
        inst.stop()
    t_cols, o_cols = theirs.split(), ours.split()
    assert t_cols[2] == o_cols[2] == "office-a"                  # Username
    assert t_cols[-2] == "Tx:NEW" and o_cols[-2] == "Rx:NEW"     # FirstMsg
    for last in (t_cols[-1], o_cols[-1]):                        # LastMsg: a real subclass
        assert last[:3] in ("Tx:", "Rx:") and last[3:] in (
            "ACK", "PING", "PONG", "LAGRQ", "LAGRP", "ANSWER", "ACCEPT", "NEW", "AUTHREP")
    # the same layout: FirstMsg and LastMsg start in the same column, both padded to 7
    assert theirs.index(t_cols[-2]) == ours.index(o_cols[-2])
    assert len(theirs) == len(ours)
    # netstats: the same FirstMsg, mirrored, in the same column
    t_first, o_first = t_net.split()[-2], o_net.split()[-2]
    assert (t_first, o_first) == ("Tx:NEW", "Rx:NEW")
    assert t_net.index(t_first) == o_net.index(o_first)
    # call numbers mirrored; Lag (the peer's report delay), Jitter and JitBuf (no jitter
    # buffer on either side) and Format the same
    assert o_cols[3] == "/".join(reversed(t_cols[3].split("/")))
    assert o_cols[5:9] == t_cols[5:9] == ["00000ms", "-0001ms", "0000ms", "ulaw"]
