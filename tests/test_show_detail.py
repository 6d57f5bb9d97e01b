"""``show registry|users|peer``, FirstMsg/LastMsg and Username of ``show channels``, and
``show stats`` naming each figure once."""

from __future__ import annotations

from helpers_pair import Pair, answered_call, seed_configs

from iaxgw.gateway.calls import MSG_TX, msg_text
from iaxgw.gateway.show import format_peer, format_registry, format_users
from iaxgw.gateway.showrows import callerid_text, peer_detail, user_rows


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
