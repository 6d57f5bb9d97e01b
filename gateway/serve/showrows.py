"""The rows of ``iaxgw show registry|users|peer NAME`` from the configuration and the live
endpoint, holding what Asterisk 22's ``iax2 show registry|users|peer`` print (chan_iax2.c);
``gateway.serve.show`` lays them out.  Options without effect in iaxgw that these commands print
(description, mailbox, per-peer maxcallnumbers, encryption, codecpriority) are
kept as written (``Entry.shown``) and shown as Asterisk shows them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from iaxgw._core.constants import Encryption
from iaxgw.gateway.conf.model import Entry, IaxConfig
from iaxgw.gateway.iax2.address import format_addr
from iaxgw.gateway.iax2.peers import QUALIFY_FREQ_NOTOK, QUALIFY_FREQ_OK
from iaxgw.gateway.serve.control import to_jsonable

#: Asterisk's authmethods bits (IAX_AUTH_PLAINTEXT, _MD5, _RSA)
_AUTH_BITS = {"plaintext": 1, "md5": 2, "rsa": 4}
#: a user's context when it names none (Asterisk: DEFAULT_CONTEXT)
DEFAULT_CONTEXT = "default"


def user_rows(config: IaxConfig) -> list[dict[str, Any]]:
    """``iax2 show users``: every user/friend entry, in the file's order."""
    rows = []
    for entry in config.entries.values():
        if not entry.is_user:
            continue
        rows.append({
            "username": entry.name,
            "secret": ";".join(entry.secrets) if entry.secrets else None,
            "authmethods": sum(_AUTH_BITS.get(a, 0) for a in entry.auth),
            "context": entry.contexts[0] if entry.contexts else (entry.context
                                                                  or DEFAULT_CONTEXT),
            "acl": bool(entry.acl),
            "codec_pref": _codec_pref(entry.shown.get("codecpriority",
                                                      config.general.shown.get("codecpriority"))),
        })
    return rows


def _codec_pref(value: str | None) -> str:
    """Asterisk's "Codec Pref" of ``codecpriority`` (host unless caller, disabled, reqonly)."""
    return {"caller": "Caller", "disabled": "Disabled", "reqonly": "REQ Only"}.get(
        (value or "").strip().lower(), "Host")


def encryption_text(methods: int) -> str:
    """Asterisk's encmethods_to_str of an entry's ENCRYPTION methods: ``(aes128,keyrotate)``
    for ``encryption = aes128`` or yes (both bits), ``No`` for none."""
    names = [n for bit, n in ((int(Encryption.AES128), "aes128"),
                              (int(Encryption.KEYROTATE), "keyrotate")) if methods & bit]
    return f"({','.join(names)})" if names else "No"


def _leading_int(value: str | None) -> int:
    """``sscanf("%hu")`` of ``maxcallnumbers``: its leading digits, 0 when none."""
    digits = ""
    for ch in (value or "").strip():
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) & 0xFFFF if digits else 0


def callerid_text(callerid: str | None) -> str:
    """Asterisk's ``ast_callerid_merge`` of the entry's callerid (name and number both empty
    strings when unset: ``"" <>``)."""
    name, num = "", ""
    text = (callerid or "").strip()
    if "<" in text and text.endswith(">"):
        name, num = text[:text.index("<")].strip().strip('"'), text[text.index("<") + 1:-1]
    elif text and all(c in "0123456789*#+-() " for c in text):
        num = text
    else:
        name = text.strip('"')
    return f'"{name}" <{num}>'


def peer_detail(entry: Entry, live: Mapping[str, Any],
                general_shown: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``iax2 show peer NAME``: the entry and what the endpoint knows of it (``live``: its row
    of ``Endpoint.peers()``: addr, status, rtt_ms; ``general_shown``: [general]'s defaults)."""
    shown = entry.shown
    addr = live.get("addr")
    if isinstance(addr, list | tuple) and len(addr) == 2:
        host, port = str(addr[0]), str(addr[1])
    elif entry.host and not entry.dynamic:
        host, port = entry.host, str(entry.port)
    else:
        host, port = "(null)", "(null)"
    codecs = "(" + "|".join(entry.codecs) + ")" if entry.codecs else "(nothing)"
    tokens = {"yes": "Yes", "auto": "Auto"}.get(str(entry.requirecalltoken or ""), "No")
    return {
        "name": entry.name,
        "description": shown.get("description", ""),
        "parkinglot": "",            # Asterisk 22 never sets a peer's (only a user's)
        "mailbox": shown.get("mailbox", ""),
        "secret_set": bool(entry.secrets),
        "context": entry.context or "",
        "dynamic": entry.dynamic,
        "callnum_limit": _leading_int(shown.get("maxcallnumbers")),
        "calltoken": tokens,
        "trunk": entry.trunk,
        "encryption": encryption_text(entry.encryption),
        "callerid": callerid_text(entry.callerid),
        "expire": -1,
        "acl": bool(entry.acl),
        "addr": host,
        "port": port,
        "username": entry.username or "",
        "codecs": codecs,
        "codec_order": codecs,
        "status": _status(entry, live),
        "freq_ok_ms": int(QUALIFY_FREQ_OK * 1000),
        "freq_notok_ms": int(QUALIFY_FREQ_NOTOK * 1000),
    }


def _status(entry: Entry, live: Mapping[str, Any]) -> str:
    if entry.qualify is None:
        return "Unmonitored"
    status = live.get("status")
    return str(status) if isinstance(status, str) and status else "UNKNOWN"


def registry_rows(regs: Iterable[Any]) -> list[dict[str, Any]]:
    """``iax2 show registry``: our ``register =>`` lines (``Endpoint.registry()`` states)."""
    rows = []
    for rs in regs:
        perceived = rs.apparent_addr
        rows.append({
            "host": format_addr(rs.addr),
            "dnsmgr": False,
            "username": rs.reg.username,
            "perceived": format_addr(perceived) if perceived else None,
            "refresh": int(rs.refresh),
            "state": rs.status,
        })
    return rows


def endpoint_stat_groups(endpoint: Any, trunkmtu: int) -> dict[str, Any]:
    """``iax2 show stats`` of an endpoint (serve's or the load tester's): its counters, each
    under one name, with the figures of Asterisk's three lines in their groups: outstanding
    frames (the full frames not yet acknowledged), trunk transmits and MTU, the transmit
    queue."""
    stats = to_jsonable(endpoint.stats())
    if not isinstance(stats, dict):
        stats = {"endpoint": stats}
    trunk = {key: stats.pop(f"trunk_{key}", 0) for key in (
        "timed", "untimed", "max_datagram_bytes", "datagrams_in", "datagrams_out")}
    stats.pop("calls_active", None)          # the caller's own call count says it
    total, final = endpoint.outstanding()
    stats["outstanding"] = {"total": total, "ingress": 0, "egress": total}
    stats["transmit_queue"] = {"dead": 0, "final": final, "total": total}
    # Asterisk's MTU line: largest sent / largest at the last show / trunkmtu; ours does not
    # reset at a show (README "Where iaxgw differs"), so the first two are the same
    stats["trunk"] = {"mtu": trunkmtu, "maxmtu": trunk["max_datagram_bytes"],
                      "nmaxmtu": trunk["max_datagram_bytes"], "timed": trunk["timed"],
                      "untimed": trunk["untimed"], "datagrams_in": trunk["datagrams_in"],
                      "datagrams_out": trunk["datagrams_out"]}
    return stats
