"""Text for ``iaxgw show peers|channels|netstats|stats|registry|users|peer NAME``, laid out
like Asterisk's ``iax2 show``.

Pure functions from the introspection data a running server returns over the control socket
(lists of JSON objects, see :mod:`iaxgw.gateway.serve.control`) to text.  Column widths and header
lines follow Asterisk 22's ``chan_iax2`` CLI output so that people (and scripts) used to
``iax2 show peers`` can read ours the same way.

Keys read (missing keys fall back to Asterisk's placeholders):

* peer: ``name``, ``username``, ``host``, ``port``, ``mask``, ``dynamic``, ``trunk``,
  ``encryption``, ``maxms`` (qualify limit, None = not monitored), ``lastms`` (last RTT in ms,
  -1 = unreachable, 0 = not yet known) or a ready ``status`` string, ``description``.
* channel: ``channel`` (name), ``peer`` / ``addr`` (host), ``username``, ``callno``,
  ``peercallno``, ``oseqno``, ``iseqno``, ``lag``, ``jitter``, ``jitbuf``, ``format``,
  ``first_msg``, ``last_msg`` (e.g. ``"Rx:NEW"``), and for netstats ``rtt``,
  ``local``/``remote`` dicts with ``jitter``, ``delay``, ``lost``, ``losspct`` (or
  ``loss_pct``), ``dropped``, ``ooo``, ``packets`` (or ``frames``).
* stats: a flat or nested mapping of counters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Row = Mapping[str, Any]

# Asterisk: PEERS_FORMAT2 / PEERS_FORMAT in chan_iax2.c (header, row).
_PEERS_HDR = "%-15.15s  %-40.40s %s   %-40.40s  %-9s %s  %-11s %-32.32s"
_PEERS_ROW = "%-15.15s  %-40.40s %s  %-40.40s  %-6s%s %s  %-11s %-32.32s"
# Asterisk: handle_cli_iax2_show_channels FORMAT2 / FORMAT.
_CHAN_HDR = "%-20.20s  %-40.40s  %-10.10s  %-11.11s  %-11.11s  %-7.7s  %-6.6s  %-6.6s  %s  %s  %9s"
_CHAN_ROW = ("%-20.20s  %-40.40s  %-10.10s  %5.5d/%5.5d  %5.5d/%5.5d  "
             "%-5.5dms  %-4.4dms  %-4.4dms  %-6.6s  %s%s  %3s%s")
# Asterisk: handle_cli_iax2_show_netstats header lines and ACN_FORMAT1.
_NET_HDR1 = ("                                -------- LOCAL ---------------------  "
             "-------- REMOTE --------------------")
_NET_HDR2 = ("Channel                    RTT  Jit  Del  Lost   %  Drop  OOO  Kpkts  "
             "Jit  Del  Lost   %  Drop  OOO  Kpkts FirstMsg    LastMsg")
_NET_ROW = ("%-24.25s %4u %4d %4d %5d %3d %5d %4d %6d %4d %4d %5d %3d %5d %4d %6d %s%s %4s%s")


def _int(row: Row, key: str, default: int = 0) -> int:
    value = row.get(key, default)
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _str(row: Row, key: str, default: str = "") -> str:
    value = row.get(key)
    if value is None or value == "":
        return default
    return str(value)


def peer_status(maxms: int | None, lastms: int | None) -> tuple[str, int]:
    """Asterisk's peer status text and class: 1 online, 0 offline, -1 unmonitored."""
    if not maxms:
        return "Unmonitored", -1
    if lastms is None or lastms == 0:
        return "UNKNOWN", 0
    if lastms < 0:
        return "UNREACHABLE", 0
    if lastms > maxms:
        return f"LAGGED ({lastms} ms)", 1
    return f"OK ({lastms} ms)", 1


def _status_of(peer: Row) -> tuple[str, int]:
    status = peer.get("status")
    if isinstance(status, str) and status:
        lastms = peer.get("lastms", peer.get("rtt_ms"))
        if status.upper() in ("OK", "LAGGED") and isinstance(lastms, int) and lastms >= 0:
            status = f"{status} ({lastms} ms)"
        upper = status.upper()
        if upper.startswith(("OK", "LAGGED")):
            return status, 1
        if upper.startswith("UNMONITORED"):
            return status, -1
        return status, 0
    maxms = peer.get("maxms", peer.get("qualify"))
    lastms = peer.get("lastms", peer.get("rtt_ms"))
    return peer_status(None if maxms is None else int(maxms),
                       None if lastms is None else int(lastms))


def format_peers(peers: Iterable[Row]) -> str:
    """``iax2 show peers``."""
    lines = [_PEERS_HDR % ("Name/Username", "Host", "   ", "Mask", "Port", "   ", "Status",
                           "Description")]
    total = online = offline = unmonitored = 0
    for peer in peers:
        name = _str(peer, "name", "(None)")
        username = _str(peer, "username")
        if username:
            name = f"{name}/{username}"
        status, klass = _status_of(peer)
        total += 1
        if klass > 0:
            online += 1
        elif klass == 0:
            offline += 1
        else:
            unmonitored += 1
        host = _str(peer, "host", "(null)")
        port = _int(peer, "port", 0) if peer.get("host") else 0
        lines.append(_PEERS_ROW % (
            name,
            host,
            "(D)" if peer.get("dynamic") else "(S)",
            _str(peer, "mask", "255.255.255.255"),
            str(port),
            "(T)" if peer.get("trunk") else "   ",
            "(E)" if peer.get("encryption") else "   ",
            status,
            _str(peer, "description"),
        ))      # padded as Asterisk's, trailing spaces included
    lines.append(f"{total} iax2 peers [{online} online, {offline} offline, "
                 f"{unmonitored} unmonitored]")
    return "\n".join(lines) + "\n"


def _msg(value: Any) -> tuple[str, str]:
    """Split ``"Rx:NEW"`` into (``"Rx:"``, ``"NEW"``); anything else is an unknown message."""
    text = "" if value is None else str(value)
    if text[:3] in ("Rx:", "Tx:"):
        return text[:3], text[3:]
    return "Rx:", text or "(none)"


def _channel_count(n: int) -> str:
    return f"{n} active IAX channel{'' if n == 1 else 's'}"


def format_channels(channels: Iterable[Row]) -> str:
    """``iax2 show channels``."""
    lines = [(_CHAN_HDR % ("Channel", "Peer", "Username", "ID (Lo/Rem)", "Seq (Tx/Rx)", "Lag",
                           "Jitter", "JitBuf", "Format", "FirstMsg", "LastMsg")).rstrip()]
    n = 0
    for ch in channels:
        first_dir, first = _msg(ch.get("first_msg"))
        last_dir, last = _msg(ch.get("last_msg"))
        lines.append(_CHAN_ROW % (
            _str(ch, "channel", "(None)"),
            _str(ch, "peer", _str(ch, "addr", "(None)")),
            _str(ch, "username", "(None)"),
            _int(ch, "callno"), _int(ch, "peercallno"),
            _int(ch, "oseqno"), _int(ch, "iseqno"),
            _int(ch, "lag"), _int(ch, "jitter", -1), _int(ch, "jitbuf"),
            _str(ch, "format", "unknow"),
            first_dir, first, last_dir, last,
        ))       # trailing spaces kept: Asterisk pads LastMsg to 7
        n += 1
    lines.append(_channel_count(n))
    return "\n".join(lines) + "\n"


#: what Asterisk shows as a call's RTT before its first PONG: the ping time a new call starts with
#: (chan_iax2.c new_iax: DEFAULT_RETRY_TIME)
UNMEASURED_RTT_SHOWN = 1000


def _rtt_shown(rtt_ms: int) -> int:
    """netstats' RTT column: the measured round trip, or Asterisk's 1000 while none was (the
    JSON keeps -1: not measured)."""
    return rtt_ms if rtt_ms >= 0 else UNMEASURED_RTT_SHOWN


def format_netstats(channels: Iterable[Row]) -> str:
    """``iax2 show netstats`` (LOCAL = what we measured, REMOTE = the peer's RR report)."""
    lines = [_NET_HDR1, _NET_HDR2]
    n = 0
    for ch in channels:
        loc: Row = ch.get("local") or {}
        rem: Row = ch.get("remote") or {}
        first_dir, first = _msg(ch.get("first_msg"))
        last_dir, last = _msg(ch.get("last_msg"))
        lines.append(_NET_ROW % (
            _str(ch, "channel", "(None)"),
            _rtt_shown(_int(ch, "rtt", -1)),
            _int(loc, "jitter", -1), _int(loc, "delay"), _int(loc, "lost", -1),
            _int(loc, "losspct", _int(loc, "loss_pct", -1)), _int(loc, "dropped"),
            _int(loc, "ooo", -1), _int(loc, "packets", _int(loc, "frames")) // 1000,
            _int(rem, "jitter"), _int(rem, "delay"), _int(rem, "lost"),
            _int(rem, "losspct", _int(rem, "loss_pct")), _int(rem, "dropped"), _int(rem, "ooo"),
            _int(rem, "packets", _int(rem, "frames")) // 1000,
            first_dir, first, last_dir, last,
        ))
        n += 1
    lines.append(_channel_count(n))
    return "\n".join(lines) + "\n"


def _flatten(prefix: str, value: Any, out: list[tuple[str, Any]]) -> None:
    if isinstance(value, Mapping):
        for key in sorted(value):
            _flatten(f"{prefix}.{key}" if prefix else str(key), value[key], out)
    else:
        out.append((prefix, value))


def format_stats(stats: Row) -> str:
    """``iax2 show stats``: Asterisk's three summary lines, then every counter we keep."""
    outstanding = stats.get("outstanding") or {}
    trunk = stats.get("trunk") or {}
    queue = stats.get("transmit_queue") or {}
    lines = [
        "    IAX Statistics",
        "---------------------",
        f"Outstanding frames: {_int(outstanding, 'total')} "
        f"({_int(outstanding, 'ingress')} ingress, {_int(outstanding, 'egress')} egress)",
        f"{_int(trunk, 'timed')} timed and {_int(trunk, 'untimed')} untimed transmits; "
        f"MTU {_int(trunk, 'maxmtu')}/{_int(trunk, 'nmaxmtu')}/{_int(trunk, 'mtu')}",
        f"Packets in transmit queue: {_int(queue, 'dead')} dead, {_int(queue, 'final')} final, "
        f"{_int(queue, 'total')} total",
        "",
    ]
    flat: list[tuple[str, Any]] = []
    _flatten("", {k: v for k, v in stats.items()
                  if k not in ("outstanding", "transmit_queue")}, flat)
    if flat:
        width = max(len(k) for k, _v in flat)
        lines += [f"{key:<{width}}  {value}" for key, value in flat]
    return "\n".join(lines) + "\n"


# Asterisk: handle_cli_iax2_show_registry FORMAT2 / FORMAT.
_REG_HDR = "%-45.45s  %-6.6s  %-10.10s  %-45.45s %8.8s  %s\n"
_REG_ROW = "%-45.45s  %-6.6s  %-10.10s  %-45.45s %8d  %s\n"
# Asterisk: handle_cli_iax2_show_users FORMAT / FORMAT2.
_USERS_HDR = "%-15.15s  %-20.20s  %-15.15s  %-15.15s  %-5.5s  %-5.10s\n"
_USERS_ROW = "%-15.15s  %-20.20s  %-15.15d  %-15.15s  %-5.5s  %-5.10s\n"


def format_registry(regs: Iterable[Row]) -> str:
    """``iax2 show registry``, byte for byte (trailing spaces included)."""
    out = [_REG_HDR % ("Host", "dnsmgr", "Username", "Perceived", "Refresh", "State")]
    n = 0
    for reg in regs:
        out.append(_REG_ROW % (_str(reg, "host"), "Y" if reg.get("dnsmgr") else "N",
                               _str(reg, "username"), _str(reg, "perceived", "<Unregistered>"),
                               _int(reg, "refresh"), _str(reg, "state", "Unknown")))
        n += 1
    out.append(f"{n} IAX2 registrations.\n")
    return "".join(out)


def format_users(users: Iterable[Row]) -> str:
    """``iax2 show users``, byte for byte (the secret shown as Asterisk shows it)."""
    out = [_USERS_HDR % ("Username", "Secret", "Authen", "Def.Context", "A/C", "Codec Pref")]
    for user in users:
        out.append(_USERS_ROW % (_str(user, "username"), _str(user, "secret", "-no secret-"),
                                 _int(user, "authmethods"), _str(user, "context", "default"),
                                 "Yes" if user.get("acl") else "No",
                                 _str(user, "codec_pref", "Host")))
    return "".join(out)


def _yes(value: Any) -> str:
    return "Yes" if value else "No"


def format_peer(peer: Row | None, name: str = "") -> str:
    """``iax2 show peer NAME``, byte for byte; ``None``: "Peer NAME not found."."""
    if not peer:
        return f"Peer {name} not found.\n\n"
    lines = [
        "", "",
        f"  * Name       : {_str(peer, 'name')}",
        f"  Description  : {_str(peer, 'description')}",
        f"  Secret       : {'<Set>' if peer.get('secret_set') else '<Not set>'}",
        f"  Context      : {_str(peer, 'context')}",
        f"  Parking lot  : {_str(peer, 'parkinglot')}",
        f"  Mailbox      : {_str(peer, 'mailbox')}",
        f"  Dynamic      : {_yes(peer.get('dynamic'))}",
        f"  Callnum limit: {_int(peer, 'callnum_limit')}",
        f"  Calltoken req: {_str(peer, 'calltoken', 'No')}",
        f"  Trunk        : {_yes(peer.get('trunk'))}",
        f"  Encryption   : {_str(peer, 'encryption', 'No')}",
        f"  Callerid     : {_str(peer, 'callerid', '<unspecified>')}",
        f"  Expire       : {_int(peer, 'expire', -1)}",
        f"  ACL          : {_yes(peer.get('acl'))}",
        f"  Addr->IP     : {_str(peer, 'addr', '(null)')} Port {_str(peer, 'port', '(null)')}",
        f"  Defaddr->IP  : {_str(peer, 'defaddr', '(null)')} Port "
        f"{_str(peer, 'defport', '(null)')}",
        f"  Username     : {_str(peer, 'username')}",
        f"  Codecs       : {_str(peer, 'codecs', '(nothing)')}",
        f"  Codec Order  : {_str(peer, 'codec_order', '(nothing)')}",
        f"  Status       : {_str(peer, 'status', 'UNKNOWN')}",
        f"  Qualify      : every {_int(peer, 'freq_ok_ms', 60000)}ms when OK, every "
        f"{_int(peer, 'freq_notok_ms', 10000)}ms when UNREACHABLE (sample smoothing "
        f"{'On' if peer.get('smoothing') else 'Off'})",
        "", "",
    ]
    return "\n".join(lines)


FORMATTERS = {
    "peers": format_peers,
    "channels": format_channels,
    "netstats": format_netstats,
    "registry": format_registry,
    "users": format_users,
}


def format_show(what: str, data: Any, name: str = "") -> str:
    """Dispatch on the ``show`` sub-command name (``peer`` takes the ``name`` asked for)."""
    if what == "peer":
        return format_peer(data if isinstance(data, Mapping) else None, name)
    if what == "stats":
        return format_stats(data if isinstance(data, Mapping) else {})
    return FORMATTERS[what](data if isinstance(data, list) else [])
