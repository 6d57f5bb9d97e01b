"""``iaxgw show`` formatting: Asterisk ``iax2 show`` layouts from introspection data."""

from __future__ import annotations

from iaxgw.gateway.serve.show import (
    format_channels,
    format_netstats,
    format_peers,
    format_show,
    format_stats,
    peer_status,
)


def test_peer_status_like_asterisk() -> None:
    assert peer_status(None, 5) == ("Unmonitored", -1)
    assert peer_status(2000, 0) == ("UNKNOWN", 0)
    assert peer_status(2000, -1) == ("UNREACHABLE", 0)
    assert peer_status(2000, 3) == ("OK (3 ms)", 1)
    assert peer_status(2000, 2500) == ("LAGGED (2500 ms)", 1)


def test_format_peers_columns() -> None:
    text = format_peers([
        {"name": "office-a", "username": "office-b", "host": "127.0.0.10", "port": 4569,
         "mask": "255.255.255.255", "trunk": True, "maxms": 2000, "lastms": 4},
        {"name": "phone", "dynamic": True, "host": None, "maxms": None},
        {"name": "far", "host": "127.0.0.30", "port": 4570, "status": "UNREACHABLE"},
    ])
    lines = text.splitlines()
    assert lines[0].startswith("Name/Username    Host")
    # Asterisk's header is one column right of its rows (PEERS_FORMAT2 has an extra space)
    assert lines[0].index("Mask") == 64 and lines[0].index("Port") == 106
    row = lines[1]
    assert row.startswith("office-a/office  ")  # name truncated to 15 like Asterisk
    assert row[17:27] == "127.0.0.10"
    assert row[58:61] == "(S)"
    assert row[63:78] == "255.255.255.255"
    assert row[105:109] == "4569"
    assert "(T)" in row and row.rstrip().endswith("OK (4 ms)")
    assert "(D)" in lines[2] and "Unmonitored" in lines[2] and "(null)" in lines[2]
    assert "UNREACHABLE" in lines[3] and "4570" in lines[3]
    assert lines[-1] == "3 iax2 peers [1 online, 1 offline, 1 unmonitored]"


def test_format_channels_columns() -> None:
    text = format_channels([
        {"channel": "IAX2/office-a-1234", "peer": "127.0.0.10", "username": "office-a",
         "callno": 16390, "peercallno": 2, "oseqno": 4, "iseqno": 3, "lag": 0, "jitter": -1,
         "jitbuf": 0, "format": "ulaw", "first_msg": "Rx:NEW", "last_msg": "Tx:ACK"},
    ])
    header, row, footer = text.splitlines()
    assert header.split() == ["Channel", "Peer", "Username", "ID", "(Lo/Rem)", "Seq", "(Tx/Rx)",
                              "Lag", "Jitter", "JitBuf", "Format", "FirstMsg", "LastMsg"]
    assert "16390/00002" in row and "00004/00003" in row
    assert "00000ms" in row and "-0001ms" in row and "0000ms" in row
    assert row.index("16390/00002") == header.index("ID (Lo/Rem)")
    assert row.rstrip().endswith("ulaw    Rx:NEW  Tx:ACK")
    assert footer == "1 active IAX channel"
    assert format_channels([]).splitlines()[-1] == "0 active IAX channels"


def test_format_netstats_columns() -> None:
    text = format_netstats([
        {"channel": "IAX2/office-a-1234", "rtt": 16,
         "local": {"jitter": -1, "delay": 0, "lost": -1, "losspct": -1, "dropped": 0,
                   "ooo": -1, "packets": 1500},
         "remote": {"jitter": 60, "delay": 110, "lost": 3, "losspct": 0, "dropped": 0,
                    "ooo": 0, "packets": 999},
         "first_msg": "Tx:NEW", "last_msg": "Rx:PONG"},
    ])
    lines = text.splitlines()
    assert "-------- LOCAL ---" in lines[0] and "-------- REMOTE ---" in lines[0]
    assert lines[1].startswith("Channel                    RTT  Jit  Del  Lost   %  Drop  OOO")
    fields = lines[2].split()
    assert fields == ["IAX2/office-a-1234", "16", "-1", "0", "-1", "-1", "0", "-1", "1",
                      "60", "110", "3", "0", "0", "0", "0", "Tx:NEW", "Rx:PONG"]
    # Asterisk's ACN_FORMAT1: 24-wide channel, space, 4-wide RTT
    assert lines[2][24:29] == "   16"
    assert lines[-1] == "1 active IAX channel"


def test_netstats_rtt_before_the_first_pong_is_asterisks_1000_not_0() -> None:
    """A call whose PING has not come back has no measured round trip (-1 in the JSON): the
    table shows Asterisk's starting ping time, never a 0 that reads as a perfect link."""
    row = {"channel": "IAX2/office-a-1", "rtt": -1, "local": {}, "remote": {},
           "first_msg": "Rx:NEW", "last_msg": "Tx:ACCEPT"}
    assert format_netstats([row]).splitlines()[2].split()[1] == "1000"
    assert format_netstats([{**row, "rtt": 0}]).splitlines()[2].split()[1] == "0"


def test_format_stats() -> None:
    text = format_stats({"frames": {"in": {"full": 3, "mini": 10}, "out": {"full": 2}},
                         "retransmissions": 1, "trunk": {"timed": 5, "untimed": 1, "mtu": 1240}})
    lines = text.splitlines()
    assert lines[0].strip() == "IAX Statistics"
    assert "5 timed and 1 untimed transmits; MTU 0/0/1240" in lines
    assert any(line.split() == ["frames.in.mini", "10"] for line in lines)
    assert any(line.split() == ["retransmissions", "1"] for line in lines)


def test_format_show_dispatch() -> None:
    assert format_show("peers", []).endswith("0 iax2 peers [0 online, 0 offline, 0 unmonitored]\n")
    assert "IAX Statistics" in format_show("stats", {})
