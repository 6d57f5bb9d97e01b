"""iax.conf (and phones.conf) loading into the :mod:`iaxgw.gateway.conf.model` dataclasses.

Semantics follow Asterisk 22's ``chan_iax2`` (see docs/protocol.md §9 and §10):

* Unknown options give a warning ``"file:line: unknown option 'x' in [section]"`` (collected in
  ``IaxConfig.warnings`` and logged); options Asterisk knows but iaxgw ignores are accepted quietly.
* Invalid values (bad port, mask, yes/no, type, ...) raise :class:`ConfigError` with ``file:line``.
* ``secret`` may be given on several lines and/or ``;``-separated (write ``\\;`` in the file,
  since a bare ``;`` starts a comment); every piece is an accepted secret.
* An entry starts from ``[general]``'s codec list; its own allow/disallow lines edit that copy.
* ``context`` may be repeated: the first is where calls land, all are accepted as a requested
  context (``Entry.contexts``).
"""

from __future__ import annotations

import importlib.resources
import ipaddress
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from iaxgw.gateway.conf.asterisk_conf import ConfigError, Item, Section, read_conf
from iaxgw.gateway.conf.model import AclRule, Entry, General, IaxConfig, Network, Register

__all__ = [
    "ConfigError",
    "PhoneBehaviour",
    "PhonesConfig",
    "acl_allows",
    "calltoken_optional",
    "default_config_dir",
    "load_iax_conf",
    "load_phones_conf",
    "parse_acl",
    "parse_callerid",
]

log = logging.getLogger("iaxgw.config")

SUPPORTED_CODECS = ("ulaw", "alaw")
# Formats Asterisk knows; they parse but iaxgw carries only G.711.
KNOWN_CODECS = frozenset({
    "ulaw", "alaw", "gsm", "g723", "g726", "g726aal2", "adpcm", "slin", "slin12", "slin16",
    "slin24", "slin32", "slin44", "slin48", "slin96", "slin192", "lpc10", "g729", "speex",
    "speex16", "speex32", "ilbc", "g722", "siren7", "siren14", "testlaw", "g719", "opus",
    "silk", "silk8", "silk12", "silk16", "silk24", "codec2", "h261", "h263", "h263p", "h264",
    "h265", "mpeg4", "vp8", "vp9", "jpeg", "png", "t140", "t140red",
})
DEFAULT_MAXMS = 2000

_TRUE = frozenset({"yes", "true", "y", "t", "1", "on"})
_FALSE = frozenset({"no", "false", "n", "f", "0", "off"})

#: Of those without effect in iaxgw (below), the ones ``iaxgw show users|peer`` prints as
#: Asterisk does: kept as written (``Entry.shown``, ``General.shown``).
SHOWN_OPTIONS = frozenset({"description", "mailbox", "maxcallnumbers", "codecpriority"})

# Options Asterisk accepts that have no effect in iaxgw: no warning.
_IGNORED_GENERAL = frozenset({
    "language", "bandwidth", "tos", "cos", "jitterbuffer", "forcejitterbuffer", "maxjitterbuffer",
    "resyncthreshold", "maxjitterinterps", "jittertargetextra", "iaxcompat", "nochecksums",
    "authdebug", "amaflags", "accountcode", "mohinterpret", "mohsuggest", "codecpriority",
    "srvlookup", "iaxthreadcount", "iaxmaxthreadcount", "regcontext", "rtcachefriends",
    "rtupdate", "rtignoreregexpire", "rtautoclear", "adsi", "dbsecret", "mailboxdetail",
    "transfer", "mediaaddress", "sourceaddress", "parkinglot",
    "allowfwdownload", "tftpserver", "trunkmaxsize", "shrinkcallerid",
    "callerid", "trunkfreq_ms", "cos_iax2", "keyrotate",
})
_IGNORED_ENTRY = frozenset({
    "dbsecret", "transfer", "jitterbuffer", "forcejitterbuffer", "language",
    "accountcode", "amaflags", "mohinterpret", "mohsuggest", "mailbox", "regexten", "cid_number",
    "fullname", "setvar", "sendani", "immediate", "timezone", "adsi", "connectedline",
    "parkinglot", "codecpriority", "qualifysmoothing", "qualifyfreqok", "qualifyfreqnotok",
    "keyrotate", "sourceaddress", "defaultip", "mask",
    "maxcallnumbers", "trunktimestamps", "hidecallerid", "description", "calltokenoptional",
    "defaultcontext", "callgroup", "pickupgroup", "permitcall", "bandwidth",
})


# --- small value parsers -------------------------------------------------------------------

def parse_bool(item: Item) -> bool:
    v = item.value.lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"{item.key} = {item.value!r}: expected yes or no", item.source)


def parse_int(item: Item, lo: int | None = None, hi: int | None = None) -> int:
    try:
        n = int(item.value, 10)
    except ValueError:
        raise ConfigError(f"{item.key} = {item.value!r}: expected a whole number",
                          item.source) from None
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        rng = f"{lo if lo is not None else ''}..{hi if hi is not None else ''}"
        raise ConfigError(f"{item.key} = {n}: out of range {rng}", item.source)
    return n


def parse_port(item: Item, text: str | None = None) -> int:
    t = item.value if text is None else text
    if not t.isdigit() or not 1 <= int(t) <= 65535:
        raise ConfigError(f"{item.key}: invalid port {t!r} (1..65535)", item.source)
    return int(t)


def encrypt_methods(value: str) -> int:
    """ENCRYPTION bits of an ``encryption``/``forceencryption`` value: ``aes128`` or a true
    value offer AES-128 with key rotation, anything else nothing (Asterisk's
    get_encrypt_methods)."""
    v = value.strip().lower()
    return 0x8001 if v == "aes128" or v in _TRUE else 0


def apply_encryption(name: str, value: str, methods: int, force: bool) -> tuple[int, bool]:
    """One ``encryption`` or ``forceencryption`` line over the methods and force flag so far,
    as Asterisk 22 reads them: methods only ever add up (``encryption = no`` after a yes keeps
    them), ``encryption`` leaves force on only while some method is on, ``forceencryption =
    yes`` (or aes128) turns encryption on too."""
    if name == "encryption":
        methods |= encrypt_methods(value)
        return methods, force and bool(methods)
    if value.strip().lower() in _FALSE:
        return methods, False
    methods |= encrypt_methods(value)
    return methods, force or bool(methods)


def _parse_network(text: str, item: Item) -> Network:
    addr, slash, mask = text.strip().partition("/")
    addr, mask = addr.strip(), mask.strip()
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise ConfigError(f"{item.key} = {item.value!r}: invalid address {addr!r}",
                          item.source) from None
    if not slash:
        prefix: int = ip.max_prefixlen
    elif mask.isdigit():
        prefix = int(mask)
        if prefix > ip.max_prefixlen:
            raise ConfigError(f"{item.key} = {item.value!r}: invalid prefix length /{mask}",
                              item.source)
    else:
        try:
            m = ipaddress.ip_address(mask)
        except ValueError:
            raise ConfigError(f"{item.key} = {item.value!r}: invalid mask {mask!r}",
                              item.source) from None
        if m.version != ip.version:
            raise ConfigError(f"{item.key} = {item.value!r}: mask family differs from address",
                              item.source)
        bits = int(m)
        inv = (~bits) & ((1 << ip.max_prefixlen) - 1)
        if inv & (inv + 1):
            raise ConfigError(f"{item.key} = {item.value!r}: non-contiguous mask {mask!r}",
                              item.source)
        prefix = ip.max_prefixlen - inv.bit_length()
    return ipaddress.ip_network(f"{ip}/{prefix}", strict=False)


def parse_acl(item: Item, permit: bool) -> list[AclRule]:
    """``permit``/``deny`` value: ``ip[/mask]`` with a dotted or prefix mask; commas allowed."""
    rules = []
    for part in item.value.split(","):
        part = part.strip()
        if not part:
            raise ConfigError(f"{item.key}: empty address", item.source)
        sense = permit
        if part.startswith("!"):
            sense, part = not permit, part[1:]
        rules.append(AclRule(permit=sense, network=_parse_network(part, item)))
    return rules


def acl_allows(rules: Iterable[AclRule], ip: str | ipaddress.IPv4Address
               | ipaddress.IPv6Address) -> bool:
    """Asterisk's ``ast_apply_ha``: allowed when no rule matches; otherwise the LAST match wins.

    An IPv4-mapped IPv6 address is compared as IPv4.
    """
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    allowed = True
    for rule in rules:
        if rule.network.version == addr.version and addr in rule.network:
            allowed = rule.permit
    return allowed


def calltoken_optional(general: General, ip: str) -> bool:
    """True if ``ip`` is listed in ``calltokenoptional`` (exempt from the call-token check)."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(r.network.version == addr.version and addr in r.network
               for r in general.calltokenoptional)


def parse_callerid(text: str) -> tuple[str, str]:
    """``"Name" <num>`` / ``Name <num>`` / ``num`` -> (name, num), as Asterisk splits callerid."""
    text = text.strip()
    m = re.fullmatch(r'\s*(?:"([^"]*)"|([^<]*?))\s*<([^>]*)>\s*', text)
    if m:
        return (m.group(1) if m.group(1) is not None else (m.group(2) or "")).strip(), \
            m.group(3).strip()
    if re.fullmatch(r"[0-9*#+]+", text):
        return "", text
    return text.strip('"'), ""


_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*"
                      r"[A-Za-z0-9])?)*\.?$")


def _parse_host(item: Item) -> str:
    v = item.value.strip()
    try:
        return str(ipaddress.ip_address(v.strip("[]")))
    except ValueError:
        pass
    if not _HOST_RE.match(v) or len(v) > 253:
        raise ConfigError(f"host = {v!r}: not an IP address, hostname or 'dynamic'", item.source)
    return v


def _apply_codecs(codecs: list[str], item: Item, allow: bool, warn: list[str],
                  where: str) -> list[str]:
    out = list(codecs)
    for raw in item.value.split(","):
        name = raw.strip().lower().split(":", 1)[0]   # "ulaw:20" framing suffix
        if not name:
            continue
        if name == "all":
            out = list(SUPPORTED_CODECS) if allow else []
            continue
        if name not in KNOWN_CODECS:
            warn.append(f"{item.source}: unknown codec '{name}' in [{where}]")
            continue
        if name not in SUPPORTED_CODECS:
            if allow:
                warn.append(f"{item.source}: codec '{name}' is not supported by iaxgw "
                            f"(only ulaw, alaw); ignored in [{where}]")
            continue
        if allow:
            if name not in out:
                out.append(name)
        elif name in out:
            out.remove(name)
    return out


def _redacted_register(v: str) -> str:
    """A ``register =>`` value fit for an error message: the secret replaced by ``***``."""
    userpart, at, hostpart = v.rpartition("@")
    if not at:
        userpart, hostpart = v, ""
    user, colon, _ = userpart.partition(":")
    return user + (":***" if colon else "") + at + hostpart


def _parse_register(item: Item) -> Register:
    v = item.value.strip()
    shown = _redacted_register(v)
    fmt = "expected user[:secret]@host[:port][/contact]"
    userpart, at, hostpart = v.rpartition("@")
    if not at or not userpart or not hostpart:
        raise ConfigError(f"register => {shown!r}: {fmt}", item.source)
    username, _, secret = userpart.partition(":")
    if not username:
        raise ConfigError(f"register => {shown!r}: missing user name", item.source)
    hostpart, slash, contact = hostpart.partition("/")
    port = 4569
    if hostpart.startswith("["):
        end = hostpart.find("]")
        if end < 0:
            raise ConfigError(f"register => {shown!r}: missing ']'", item.source)
        host, rest = hostpart[1:end], hostpart[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(f"register => {shown!r}: {fmt}", item.source)
            port = parse_port(item, rest[1:])
    else:
        host, colon, p = hostpart.partition(":")
        if colon:
            port = parse_port(item, p)
    if not host:
        raise ConfigError(f"register => {shown!r}: missing host", item.source)
    return Register(username=username, secret=secret, host=host, port=port,
                    contact=(contact or None) if slash else None, source=item.source)


# --- iax.conf -------------------------------------------------------------------------------

def _load_general(sec: Section, cfg: IaxConfig) -> None:
    g = cfg.general
    warn = cfg.warnings
    bindaddr_port: int | None = None
    for it in sec.all_items():
        n = it.name
        if n == "bindport":
            g.bindport = parse_port(it)
        elif n == "bindaddr":
            v = it.value.strip()
            host, port_text = v, None
            if v.startswith("["):
                end = v.find("]")
                host, rest = v[1:end] if end > 0 else v, v[end + 1:] if end > 0 else ""
                port_text = rest[1:] if rest.startswith(":") else None
            elif v.count(":") == 1:
                host, port_text = v.split(":")
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ConfigError(f"bindaddr = {v!r}: not an IP address", it.source) from None
            g.bindaddr = host
            if port_text is not None:
                bindaddr_port = parse_port(it, port_text)
        elif n in ("allow", "disallow"):
            g.codecs = _apply_codecs(g.codecs, it, n == "allow", warn, sec.name)
        elif n == "trunkfreq":
            f = parse_int(it)
            if not 10 <= f <= 1000:
                c = min(max(f, 10), 1000)
                warn.append(f"{it.source}: trunkfreq {f} out of range 10..1000; using {c}")
                f = c
            g.trunkfreq = f
        elif n == "trunktimestamps":
            g.trunktimestamps = parse_bool(it)
        elif n == "trunkmtu":
            m = parse_int(it)
            if m != 0 and not 172 <= m <= 3999:
                raise ConfigError(f"trunkmtu = {m}: must be 0 or 172..3999", it.source)
            g.trunkmtu = m
        elif n == "requirecalltoken":
            warn.append(f"{it.source}: requirecalltoken is not a [general] option in Asterisk "
                        "(set it per user/peer); ignored")
        elif n == "calltokenoptional":
            g.calltokenoptional.extend(replace(r, permit=True) for r in parse_acl(it, True))
        elif n == "calltokenexpiration":
            g.calltokenexpiration = parse_int(it, 1)
        elif n == "maxcallnumbers":
            g.maxcallnumbers = parse_int(it, 1, 32767)
        elif n == "maxcallnumbers_nonvalidated":
            g.maxcallnumbers_nonvalidated = parse_int(it, 1, 32767)
        elif n == "maxauthreq":
            g.maxauthreq = max(parse_int(it), 0)
        elif n == "delayreject":
            g.delayreject = parse_bool(it)
        elif n == "authfaillimit":
            g.authfaillimit = parse_int(it, 0)
        elif n == "authfailwindow":
            g.authfailwindow = parse_int(it, 0)
        elif n == "autokill":
            v = it.value.lower()
            if v == "yes":
                g.autokill = DEFAULT_MAXMS
            elif v == "no":
                g.autokill = None
            else:
                ms = parse_int(it, 0)
                g.autokill = ms or None
        elif n == "minregexpire":
            g.minregexpire = parse_int(it, 1)
        elif n == "maxregexpire":
            g.maxregexpire = parse_int(it, 1)
        elif n == "register":
            g.registers.append(_parse_register(it))
        elif n in ("encryption", "forceencryption"):
            g.encryption, g.forceencryption = apply_encryption(
                n, it.value, g.encryption, g.forceencryption)
        elif n in _IGNORED_GENERAL:
            if n in SHOWN_OPTIONS:
                g.shown[n] = it.value
        else:
            warn.append(f"{it.source}: unknown option '{it.key}' in [{sec.name}]")
    if bindaddr_port is not None:
        g.bindport = bindaddr_port
    if g.minregexpire > g.maxregexpire:
        raise ConfigError(f"minregexpire {g.minregexpire} > maxregexpire {g.maxregexpire}",
                          sec.source)


_ENTRY_TYPES: dict[str, Literal["friend", "peer", "user"]] = {
    "friend": "friend", "peer": "peer", "user": "user"}


def _load_entry(sec: Section, cfg: IaxConfig) -> Entry | None:
    warn = cfg.warnings
    items = sec.all_items()
    type_item = None
    for it in items:
        if it.name == "type":
            type_item = it
    if type_item is None:
        warn.append(f"{sec.source}: section [{sec.name}] has no type=; ignored")
        return None
    etype = _ENTRY_TYPES.get(type_item.value.strip().lower())
    if etype is None:
        raise ConfigError(f"type = {type_item.value!r}: expected friend, peer or user",
                          type_item.source)
    g = cfg.general
    e = Entry(name=sec.name, type=etype, source=sec.source, codecs=list(g.codecs),
              encryption=g.encryption, forceencryption=g.forceencryption)
    contexts: list[str] = []
    for it in items:
        n = it.name
        if n == "type":
            continue
        if n == "username":
            e.username = it.value or None
        elif n == "secret":
            e.secrets.extend(s.strip() for s in it.value.split(";") if s.strip())
        elif n == "auth":
            methods = {m.strip().lower() for m in it.value.split(",") if m.strip()}
            bad = methods - {"md5", "plaintext", "rsa"}
            if bad or not methods:
                raise ConfigError(f"auth = {it.value!r}: expected md5, plaintext and/or rsa",
                                  it.source)
            e.auth = frozenset(methods)
        elif n == "host":
            if it.value.strip().lower() == "dynamic":
                e.dynamic, e.host = True, None
            else:
                e.dynamic, e.host = False, _parse_host(it)
        elif n == "port":
            e.port = parse_port(it)
        elif n in ("permit", "deny"):
            e.acl.extend(parse_acl(it, n == "permit"))
        elif n == "context":
            if it.value:
                contexts.append(it.value)
        elif n == "peercontext":
            e.peercontext = it.value or None
        elif n == "qualify":
            v = it.value.lower()
            if v in _TRUE:
                e.qualify = DEFAULT_MAXMS
            elif v in _FALSE:
                e.qualify = None
            else:
                try:
                    ms = int(v)
                except ValueError:
                    raise ConfigError(f"qualify = {it.value!r}: expected yes, no or "
                                      "milliseconds", it.source) from None
                if ms < 0:
                    raise ConfigError(f"qualify = {ms}: must not be negative", it.source)
                e.qualify = ms or None
        elif n == "trunk":
            e.trunk = parse_bool(it)
        elif n == "requirecalltoken":
            v = it.value.lower()
            if v == "auto":
                e.requirecalltoken = "auto"
            elif v in _TRUE:
                e.requirecalltoken = "yes"
            elif v in _FALSE:
                e.requirecalltoken = "no"
            else:
                raise ConfigError(f"requirecalltoken = {it.value!r}: expected yes, no or auto",
                                  it.source)
        elif n in ("allow", "disallow"):
            e.codecs = _apply_codecs(e.codecs, it, n == "allow", warn, sec.name)
        elif n == "callerid":
            e.callerid = it.value or None
        elif n in ("encryption", "forceencryption"):
            e.encryption, e.forceencryption = apply_encryption(
                n, it.value, e.encryption, e.forceencryption)
        elif n == "inkeys":
            e.inkeys = [k.strip() for k in it.value.split(":") if k.strip()]
        elif n == "outkey":
            e.outkey = it.value.strip() or None
        elif n in _IGNORED_ENTRY:
            if n in SHOWN_OPTIONS:
                e.shown[n] = it.value
        else:
            warn.append(f"{it.source}: unknown option '{it.key}' in [{sec.name}]")
    if contexts:
        e.context = contexts[0]
        e.contexts = contexts
    if not e.codecs:
        warn.append(f"{sec.source}: [{sec.name}] allows no supported codec (ulaw, alaw)")
    if e.is_peer and not e.dynamic and e.host is None:
        warn.append(f"{sec.source}: [{sec.name}] is a {e.type} without host=; it cannot be "
                    "called")
    return e


def load_iax_conf(path: str | os.PathLike[str]) -> IaxConfig:
    """Parse an iax.conf (with includes) into an :class:`IaxConfig`.

    Raises :class:`ConfigError` ("file:line: reason") for invalid input; soft problems end up in
    ``IaxConfig.warnings`` and are logged.
    """
    conf = read_conf(path)
    cfg = IaxConfig()
    general = [s for s in conf.sections if s.name.lower() == "general"]
    for sec in general:
        _load_general(sec, cfg)
    if not cfg.general.codecs:
        cfg.warnings.append(f"{path}: [general] allows no supported codec (ulaw, alaw)")
    for sec in conf.concrete():
        if sec.name.lower() == "general":
            continue
        if sec.name in cfg.entries:
            raise ConfigError(f"duplicate section [{sec.name}] (first at "
                              f"{cfg.entries[sec.name].source})", sec.source)
        entry = _load_entry(sec, cfg)
        if entry is not None:
            cfg.entries[sec.name] = entry
    cfg.keys_dir = Path(path).parent / "keys"
    for w in cfg.warnings:
        log.warning("%s", w)
    return cfg


# --- phones.conf ----------------------------------------------------------------------------

PhoneMode = Literal["answer", "busy", "noanswer", "congestion", "unavailable"]
_PHONE_MODES: dict[str, PhoneMode] = {m: m for m in ("answer", "busy", "noanswer", "congestion",
                                                      "unavailable")}


@dataclass(frozen=True, slots=True)
class PhoneBehaviour:
    """How an emulated PJSIP phone reacts to ``Dial(PJSIP/<exten>)``.

    ``mode``: answer (after ``answer_after`` s of ringing), busy, congestion, unavailable
    (CHANUNAVAIL) or noanswer (rings until Dial's timeout).  Once answered, ``media`` is played
    to the caller: ``echo`` (caller's audio back), ``tone`` (1004 Hz), ``silence`` or
    ``playback:<file>`` (a WAV from the sounds folder, then silence).  ``hangup_after`` (s)
    makes the phone hang up by itself; None = it waits for the caller.
    """

    mode: PhoneMode = "answer"
    answer_after: float = 1.0
    media: str = "echo"
    hangup_after: float | None = None
    ring: bool = True


@dataclass(slots=True)
class PhonesConfig:
    """Emulated phones by extension, plus the behaviour of any other extension."""

    phones: dict[str, PhoneBehaviour] = field(default_factory=dict)
    default: PhoneBehaviour = field(default_factory=PhoneBehaviour)

    def get(self, exten: str) -> PhoneBehaviour:
        return self.phones.get(exten, self.default)

    @classmethod
    def from_mapping(cls, m: Mapping[str, PhoneBehaviour]) -> PhonesConfig:
        d = dict(m)
        default = d.pop("default", PhoneBehaviour())
        return cls(phones=d, default=default)


def _phone(sec: Section, base: PhoneBehaviour) -> PhoneBehaviour:
    b = base
    for it in sec.all_items():
        n = it.name
        if n == "mode":
            mode = _PHONE_MODES.get(it.value.lower())
            if mode is None:
                raise ConfigError(f"mode = {it.value!r}: expected one of {', '.join(_PHONE_MODES)}",
                                  it.source)
            b = replace(b, mode=mode)
        elif n in ("answer_after", "hangup_after"):
            try:
                secs = float(it.value)
            except ValueError:
                secs = -1.0
            if not 0 <= secs < 86400:
                raise ConfigError(f"{it.key} = {it.value!r}: expected seconds >= 0", it.source)
            b = replace(b, answer_after=secs) if n == "answer_after" else \
                replace(b, hangup_after=secs)
        elif n == "media":
            v = it.value.strip()
            kind, _, arg = v.partition(":")
            if kind.lower() not in ("echo", "tone", "silence", "playback") or \
                    (kind.lower() == "playback") != bool(arg):
                raise ConfigError(f"media = {v!r}: expected echo, tone, silence or "
                                  "playback:<file>", it.source)
            b = replace(b, media=f"{kind.lower()}:{arg}" if arg else kind.lower())
        elif n == "ring":
            b = replace(b, ring=parse_bool(it))
        else:
            raise ConfigError(f"unknown option '{it.key}' in [{sec.name}]", it.source)
    return b


def load_phones_conf(path: str | os.PathLike[str]) -> PhonesConfig:
    """``phones.conf``: ``[default]`` and one ``[exten]`` section per emulated phone.

    Options: ``mode``, ``answer_after``, ``media``, ``hangup_after``, ``ring``
    (see :class:`PhoneBehaviour`).  A phone section starts from ``[default]``.
    """
    conf = read_conf(path)
    cfg = PhonesConfig()
    dsec = conf.section("default")
    if dsec is not None:
        cfg.default = _phone(dsec, PhoneBehaviour())
    for sec in conf.concrete():
        if sec.name == "default":
            continue
        if sec.name in cfg.phones:
            raise ConfigError(f"duplicate phone [{sec.name}]", sec.source)
        cfg.phones[sec.name] = _phone(sec, cfg.default)
    return cfg


# --- embedded defaults ------------------------------------------------------------------------

SITES = ("office-a", "office-b")


def default_config_dir(site: str = "office-b") -> Path:
    """The folder holding the embedded iax.conf, extensions.conf and phones.conf for ``site``.

    Both mirror the seed's two-site trunk on loopback: office-a is 127.0.0.10, office-b
    127.0.0.20 (port 4569).  ``office-b`` is the gateway's side, ``office-a`` the load tester's.
    """
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}; expected one of {', '.join(SITES)}")
    base = importlib.resources.files("iaxgw.gateway") / "defaults"
    if site == "office-a":
        base = base / "office-a"
    return Path(str(base))
