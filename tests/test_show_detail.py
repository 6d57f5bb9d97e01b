"""``show registry|users|peer``, FirstMsg/LastMsg and Username of ``show channels``, and
``show stats`` naming each figure once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers_pair import Pair, answered_call, seed_configs

from iaxgw.gateway.iax2.calls import MSG_TX, msg_text
from iaxgw.gateway.serve.show import format_peer, format_registry, format_users
from iaxgw.gateway.serve.showrows import callerid_text, peer_detail, user_rows


def test_msg_text_uses_asterisks_names() -> None:
    assert msg_text(1 | MSG_TX) == "Tx:NEW    "
    assert msg_text(4) == "Rx:ACK    "
    assert msg_text(40) == "Rx:CTOKEN "
    assert msg_text(33 | MSG_TX) == "Tx:UNSPRTD"
    assert msg_text(29) == "Rx:UNQUELCH"
    assert msg_text(0) == "Rx:Unknown"


def test_first_and_last_message_and_username_of_a_call() -> None:
    p = Pair()
    p.run(0.5)
    cn, bcn = answered_call(p, p.a, p.b, "office-b", "300")
    p.run(0.2)
    (a_row,) = [c for c in p.a.channels() if c.local_callno == cn]
    (b_row,) = [c for c in p.b.channels() if c.local_callno == bcn]
    # caller: its NEW first; callee: the NEW it received (the token-less one got a stateless
    # CALLTOKEN and left no call), last the ACK of the ANSWER on either side
    assert a_row.first_msg == "Tx:NEW    " and b_row.first_msg == "Rx:NEW    "
    assert a_row.last_msg == "Tx:ACK    " and b_row.last_msg == "Rx:ACK    "
    # the USERNAME of the NEW: sent by the caller, received by the callee
    assert a_row.username == "office-a" and b_row.username == "office-a"
    nets = {n.local_callno: n for n in p.a.netstats()}
    assert nets[cn].first_msg == "Tx:NEW    "


def test_users_and_peer_rows_from_the_seed() -> None:
    cfg_a, _cfg_b = seed_configs()
    users = user_rows(cfg_a)
    assert [u["username"] for u in users] == ["office-b"]
    text = format_users(users)
    header, row = text.splitlines()
    assert header == ("Username         Secret                Authen           Def.Context      "
                      "A/C    Codec Pref")
    # the secret cut at 20 characters, the auth methods as Asterisk's %-15.15d (md5 = 2)
    assert row.startswith("office-b         ") and "  000000000000002  " in row
    assert row.endswith("Host ")
    peer = peer_detail(cfg_a.entries["office-b"], {"status": "OK (3 ms)"})
    lines = format_peer(peer).split("\n")
    assert lines[:3] == ["", "", "  * Name       : office-b"]
    assert "  Status       : OK (3 ms)" in lines and lines[-2:] == ["", ""]
    assert format_peer(None, "nosuch") == "Peer nosuch not found.\n\n"


def test_callerid_merge() -> None:
    assert callerid_text(None) == '"" <>'
    assert callerid_text('"Office B" <300>') == '"Office B" <300>'
    assert callerid_text("300") == '"" <300>'
    assert callerid_text("Office") == '"Office" <>'


def test_registry_rows_states() -> None:
    assert format_registry([]).endswith("\n0 IAX2 registrations.\n")
    row = {"host": "[::1]:4569", "dnsmgr": False, "username": "office-a",
           "perceived": "127.0.0.10:4569", "refresh": 60, "state": "Registered"}
    lines = format_registry([row]).splitlines()
    assert lines[1].startswith("[::1]:4569" + " " * 35 + "  N       office-a    127.0.0.10:4569")
    assert lines[1].endswith("      60  Registered") and lines[2] == "1 IAX2 registrations."


def test_registry_states_through_a_registration() -> None:
    """Request Sent, then Registered with the perceived address and the granted refresh; a
    registrar that goes silent: Timeout, no perceived address, refresh back to 60."""
    from helpers_pair import reg_configs

    from iaxgw.gateway.serve.showrows import registry_rows

    ca, cb = reg_configs()
    ca.general.maxregexpire = ca.general.minregexpire = 90      # office-a grants 90 s
    p = Pair(ca, cb)
    assert p.run_until(lambda: p.b.registry()[0].status != "Unregistered", 5)
    (row,) = registry_rows(p.b.registry())
    assert (row["state"], row["perceived"], row["refresh"]) == ("Request Sent", None, 60)
    p.run(2)
    (row,) = registry_rows(p.b.registry())
    assert row == {"host": "127.0.0.10:4569", "dnsmgr": False, "username": "office-b",
                   "perceived": "127.0.0.20:4569", "refresh": 90, "state": "Registered"}
    p.links[id(p.b)].drop = 1.0                 # nothing of ours reaches the registrar
    # the refresh at 5/6 of 90 s goes unanswered; its retransmissions give up (then a new
    # attempt 10 s later is "Request Sent" again, as Asterisk's)
    assert p.run_until(lambda: p.b.registry()[0].status == "Timeout", 150)
    (row,) = registry_rows(p.b.registry())
    assert (row["state"], row["perceived"], row["refresh"]) == ("Timeout", None, 60)


def test_stats_name_each_figure_once(tmp_path: Path) -> None:
    """``show stats``: no figure under two names (the endpoint's calls_active and trunk datagram
    counts live in their groups only); the outstanding frames are the unacknowledged ones: the
    POKE to a peer that does not answer."""
    import asyncio

    from test_serve_e2e import _free_udp_port

    from iaxgw.gateway.serve.app import GatewayApp, ServeOptions
    from iaxgw.gateway.serve.show import format_show

    port = _free_udp_port("127.0.0.20")

    async def run() -> dict[str, Any]:
        app = GatewayApp.from_options(ServeOptions(
            peer="office-a", bind=("127.0.0.20", port), peer_host=("127.0.0.10", 9),
            spool=tmp_path / "spool"))
        await app.start()
        try:
            await asyncio.sleep(0.2)
            return dict(app.introspect("stats"))
        finally:
            await app.stop()

    stats = asyncio.run(run())
    assert "calls_active" not in stats and "trunk_datagrams_out" not in stats
    assert stats["calls"]["active"] == 0 and stats["trunk"]["datagrams_out"] == 0
    assert stats["outstanding"] == {"total": 1, "ingress": 0, "egress": 1}
    assert stats["transmit_queue"] == {"dead": 0, "final": 0, "total": 1}
    text = format_show("stats", stats)
    assert "Outstanding frames: 1 (0 ingress, 1 egress)" in text
    names = [line.split()[0] for line in text.splitlines()[6:] if line.strip()]
    assert len(names) == len(set(names)) and "pokes_sent" in names
