"""``iaxgw check``: read one site's (and optionally the other site's) config and explain what is
wrong with the trunk between them, before a single packet is sent.

Every problem is a :class:`Finding` with ``file:line``, a severity (``error``/``warning``/``info``),
what will happen on the wire and the fix.  Config files that do not parse are findings too
(``config-error``), never tracebacks.

Which remote entry belongs to which local entry (``--remote``), first rule that gives a unique
answer wins:

1. names cross over: the remote section is called what we send as ``username`` **and** the remote
   sends our section's name as its ``username`` (the seed's setup);
2. one of the two name rules holds (remote ``[section]`` == our ``username``, or remote
   ``username`` == our ``[section]``);
3. addresses: our ``host`` is the remote's ``bindaddr``, or the remote's ``host`` is ours;
4. each side has exactly one entry with a ``host`` (or ``dynamic``) -- they are the trunk.

A local entry with no partner is reported (``unpaired``); the name checks then say why.

Wire behaviour follows Asterisk 22's chan_iax2 (docs/protocol.md §9 to §12): the callee
matches the caller's USERNAME against its section names, then its ``permit``/``deny`` and the
CALLED_CONTEXT (our ``peercontext``) against the section's ``context`` lines; a miss is REJECT
cause 50 "No authority found" (after a decoy AUTHREQ when a username was sent).
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from iaxgw.gateway.conf.asterisk_conf import ConfFile, ConfigError, Section, read_conf
from iaxgw.gateway.conf.config import (
    _FALSE,
    _IGNORED_ENTRY,
    _IGNORED_GENERAL,
    _TRUE,
    KNOWN_CODECS,
    acl_allows,
    load_iax_conf,
)
from iaxgw.gateway.conf.model import Entry, IaxConfig, Source
from iaxgw.gateway.doctor.check_crypto import check_pair_encryption, check_site_encryption
from iaxgw.gateway.doctor.findings import Finding
from iaxgw.gateway.pbx.dialplan import (
    Dialplan,
    load_extensions_conf,
    pattern_samples,
    split_args,
    substitute,
)
from iaxgw.gateway.pbx.dialplan_apps import APPLICATIONS

__all__ = [
    "Finding",
    "Site",
    "check_dirs",
    "check_sites",
    "findings_json",
    "format_findings",
    "load_site",
    "pair_entries",
]

_RANK = {"error": 0, "warning": 1, "info": 2}
_WILDCARD = {"0.0.0.0", "::", ""}


@dataclass(slots=True)
class Site:
    """One site's config folder, parsed as far as it parses."""

    dir: Path
    iax: IaxConfig | None = None
    iax_conf: ConfFile | None = None
    plan: Dialplan | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def label(self) -> str:
        return str(self.dir)

    def section(self, name: str) -> Section | None:
        if self.iax_conf is None:
            return None
        for s in self.iax_conf.concrete():
            if s.name == name:
                return s
        return None

    def src(self, entry: Entry, key: str | None = None) -> str:
        """``file:line`` of option ``key`` of ``entry`` (the section header when absent)."""
        sec = self.section(entry.name)
        if sec is not None and key is not None:
            it = sec.get(key)
            if it is not None:
                return str(it.source)
        if entry.source is not None:
            return str(entry.source)
        return f"{self.dir / 'iax.conf'}"

    def general_src(self, key: str) -> str:
        if self.iax_conf is not None:
            for s in self.iax_conf.sections:
                if s.name.lower() == "general":
                    it = s.get(key)
                    if it is not None:
                        return str(it.source)
        return str(self.dir / "iax.conf")

    def address(self) -> str | None:
        """The address the site listens on, when bindaddr names one."""
        if self.iax is None:
            return None
        a = self.iax.general.bindaddr
        return None if a in _WILDCARD else a

    def raw_codecs(self, entry: Entry) -> list[str]:
        """Codecs as Asterisk sees them (all known formats, not only iaxgw's G.711)."""
        out: list[str] = ["ulaw", "alaw"]   # iaxgw's and our model's starting point
        secs: list[Section] = []
        if self.iax_conf is not None:
            secs = [s for s in self.iax_conf.sections if s.name.lower() == "general"]
            sec = self.section(entry.name)
            if sec is not None:
                secs.append(sec)
        for s in secs:
            for it in s.all_items():
                if it.name not in ("allow", "disallow"):
                    continue
                for raw in it.value.split(","):
                    name = raw.strip().lower().split(":", 1)[0]
                    if name == "all":
                        out = ["ulaw", "alaw"] if it.name == "allow" else []
                    elif name in KNOWN_CODECS:
                        if it.name == "allow" and name not in out:
                            out.append(name)
                        elif it.name == "disallow" and name in out:
                            out.remove(name)
        return out

    def has_option(self, entry: Entry, key: str) -> bool:
        sec = self.section(entry.name)
        return sec is not None and sec.get(key) is not None


def _config_error(exc: ConfigError, default: Path) -> Finding:
    where = str(exc.source) if exc.source is not None else str(default)
    return Finding("config-error", "error", where, f"config error: {exc.reason}",
                   "the file does not load: Asterisk skips the bad line or refuses the module, "
                   "iaxgw refuses to start", "correct the line named")


def load_site(directory: str | Path) -> Site:
    """Parse ``iax.conf`` and ``extensions.conf`` in ``directory`` (or in the folder of the file
    named: ``iaxgw check /etc/asterisk/iax.conf``); problems become findings."""
    d = Path(directory)
    if d.is_file():
        d = d.parent
    site = Site(dir=d)
    quiet = [logging.getLogger(n) for n in ("iaxgw.config", "iaxgw.dialplan")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:      # their warnings are about iaxgw's own support, not the trunk
        lg.setLevel(logging.ERROR)
    try:
        _load_into(site, d)
    finally:
        for lg, lv in zip(quiet, levels):
            lg.setLevel(lv)
    return site


def _load_into(site: Site, d: Path) -> None:
    iax_path = d / "iax.conf"
    if not iax_path.is_file():
        site.findings.append(Finding("missing-file", "error", str(iax_path), "iax.conf not found",
                                     "no IAX2 trunk is configured at this site",
                                     "point check at the folder holding iax.conf"))
    else:
        try:
            site.iax_conf = read_conf(iax_path)
            site.iax = load_iax_conf(iax_path)
        except ConfigError as exc:
            site.findings.append(_config_error(exc, iax_path))
        except OSError as exc:
            site.findings.append(Finding("config-error", "error", str(iax_path), str(exc),
                                         "the file cannot be read", "check the path and rights"))
    ext_path = d / "extensions.conf"
    if not ext_path.is_file():
        site.findings.append(Finding("missing-file", "warning", str(ext_path),
                                     "extensions.conf not found",
                                     "contexts and routes cannot be checked",
                                     "put extensions.conf beside iax.conf"))
    else:
        try:
            site.plan = load_extensions_conf(ext_path, APPLICATIONS)
        except ConfigError as exc:
            site.findings.append(_config_error(exc, ext_path))
        except OSError as exc:
            site.findings.append(Finding("config-error", "error", str(ext_path), str(exc),
                                         "the file cannot be read", "check the path and rights"))


# --- dialplan helpers -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class IaxDial:
    """One ``IAX2/...`` target in a ``Dial()``: the peer name, the number and context sent."""

    peer: str
    number: str          # as written (may hold ${EXTEN...})
    context: str | None
    source: Source
    exten: str           # the extension/pattern holding the Dial
    from_context: str


_DIAL_APPS = {"dial"}


def iax_dials(plan: Dialplan) -> Iterator[IaxDial]:
    """Every ``Dial(IAX2/peer/number[@context])`` in the dialplan."""
    for ctx in plan.contexts.values():
        for ext in ctx.extensions.values():
            for st in ext.steps.values():
                if st.app.lower() not in _DIAL_APPS:
                    continue
                args = split_args(st.data)
                if not args:
                    continue
                for tech in args[0].split("&"):
                    tech = tech.strip()
                    if not tech.upper().startswith("IAX2/"):
                        continue
                    rest = tech[5:]
                    peerpart, slash, numpart = rest.partition("/")
                    if "@" in peerpart:             # user[:secret]@peer
                        peerpart = peerpart.rpartition("@")[2]
                    peer = peerpart.split(":", 1)[0]
                    num = numpart.split("/", 1)[0] if slash else "s"
                    number, _at, context = num.partition("@")
                    yield IaxDial(peer, number or "s", context or None, st.source, ext.name,
                                  ctx.name)


def expand_number(number: str, exten: str) -> str:
    """The number a Dial sends for ``exten`` (``${EXTEN}``, ``${EXTEN:2}``, literals)."""
    return substitute(number, lambda v: exten if v == "EXTEN" else None)


def _context_exists(plan: Dialplan, name: str) -> bool:
    return name in plan.contexts


# --- pairing ----------------------------------------------------------------------------------

def _trunk_entries(iax: IaxConfig) -> list[Entry]:
    return [e for e in iax.entries.values() if e.host is not None or e.dynamic]


def pair_entries(local: Site, remote: Site) -> list[tuple[Entry, Entry | None]]:
    """Pair every local trunk entry with the remote entry it talks to (module doc rules)."""
    if local.iax is None or remote.iax is None:
        return []
    lent = list(local.iax.entries.values())
    rent = list(remote.iax.entries.values())
    lsite, rsite = local.address(), remote.address()
    out: list[tuple[Entry, Entry | None]] = []
    for le in lent:
        rules = [
            [r for r in rent if r.name == le.username and r.username == le.name],
            [r for r in rent if r.name == le.username or r.username == le.name],
            [r for r in rent if (le.host is not None and le.host == rsite)
             or (r.host is not None and r.host == lsite)],
        ]
        match: Entry | None = None
        for cands in rules:
            if len(cands) == 1:
                match = cands[0]
                break
        if match is None:
            lt, rt = _trunk_entries(local.iax), _trunk_entries(remote.iax)
            if len(lt) == 1 and len(rt) == 1 and lt[0] is le:
                match = rt[0]
        if match is not None or le.host is not None or le.dynamic:
            out.append((le, match))
    return out


# --- checks -----------------------------------------------------------------------------------

def _is_ip(text: str | None) -> bool:
    if text is None:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_site(site: Site) -> list[Finding]:
    """Checks that need only one site: ACL vs host, contexts, same-number loops."""
    out: list[Finding] = []
    if site.iax is None:
        return out
    g = site.iax.general
    if g.authfaillimit > 0 and g.authfailwindow > 0:
        out.append(Finding(
            "authfaillimit-on", "warning", site.general_src("authfaillimit"),
            f"authfaillimit = {g.authfaillimit} (authfailwindow = {g.authfailwindow} s): after "
            f"{g.authfaillimit} failed authentications from one address within "
            f"{g.authfailwindow} s, iaxgw serve refuses that address's calls for the rest of "
            "the window, even with the right secret -- Asterisk 22 has no such lockout",
            "NEWs from a throttled address get no AUTHREQ but a REJECT 50 \"No authority "
            "found: throttled after repeated failed authentications\" one second later",
            "remove authfaillimit (or set it to 0) to behave as Asterisk does"))
    for e in site.iax.entries.values():
        if e.host is not None and _is_ip(e.host) and not acl_allows(e.acl, e.host):
            out.append(Finding(
                "acl-blocks-host", "error", site.src(e, "permit") if e.acl else site.src(e),
                f"[{e.name}]: permit/deny shut out its own host {e.host}",
                f"calls and qualify replies from {e.host} fail the ACL: NEWs are answered with "
                "REJECT 50 \"No authority found\" (after a decoy AUTHREQ)",
                f"add 'permit = {e.host}/255.255.255.255' after the deny lines of [{e.name}]"))
        if site.plan is not None and e.is_user and e.context is not None \
                and not _context_exists(site.plan, e.context):
            out.append(Finding(
                "context-missing", "error", site.src(e, "context"),
                f"[{e.name}]: context = {e.context} does not exist in extensions.conf",
                "every call from this peer is answered with REJECT 3 \"No such "
                "context/extension\" after authentication",
                f"create [{e.context}] in extensions.conf or name an existing context"))
        if e.is_peer and not e.codecs and not site.raw_codecs(e):
            out.append(Finding(
                "no-codecs", "error", site.src(e, "allow"),
                f"[{e.name}] allows no codec", "every call ends with REJECT 58 \"Unable to "
                "negotiate codec\"", "add 'allow = ulaw' (and alaw)"))
    if site.plan is not None:
        for e in site.iax.entries.values():
            if not e.is_user:
                continue
            for d in _dials_from(site, e.contexts or ([e.context] if e.context else [])):
                if d.peer != e.name:
                    continue
                for sample in pattern_samples(d.exten):
                    if expand_number(d.number, sample) == sample:
                        out.append(Finding(
                            "routing-loop", "error", str(d.source),
                            f"[{d.from_context}] {d.exten} sends calls from {e.name} back over "
                            f"the same trunk (Dial(IAX2/{d.peer}/{d.number})) with the same "
                            "number",
                            "each call bounces between the sites, one new IAX2 call per hop, "
                            "until call numbers or channels run out (or the far side rejects it)",
                            f"route {d.exten} to a local device in [{d.from_context}], or "
                            "remove the line"))
                        break
    return out


def _dials_from(site: Site, contexts: list[str]) -> Iterator[IaxDial]:
    """IAX2 dials reachable from ``contexts`` (own lines and includes)."""
    if site.plan is None:
        return
    seen: set[str] = set()
    todo = list(contexts)
    names: set[str] = set()
    while todo and len(seen) < 256:
        c = todo.pop(0)
        if c in seen or c not in site.plan.contexts:
            continue
        seen.add(c)
        names.add(c)
        todo.extend(site.plan.contexts[c].includes)
    for d in iax_dials(site.plan):
        if d.from_context in names:
            yield d


def _landing(caller: Entry, callee: Entry) -> tuple[str | None, bool]:
    """(context a call from ``caller`` lands in at the callee, CALLED_CONTEXT accepted?)."""
    if caller.peercontext:
        return caller.peercontext, caller.peercontext in callee.contexts
    return callee.context or "default", True


def _route(site: Site, context: str, number: str) -> str | None:
    """What handles ``number`` in ``context``: an extension name, or None."""
    if site.plan is None:
        return None
    ext = site.plan.find(context, number, 1)
    return ext.name if ext is not None else None


def check_direction(a: Site, ae: Entry, b: Site, be: Entry) -> list[Finding]:
    """Calls from site ``a`` (entry ``ae``) to site ``b`` (entry ``be``)."""
    out: list[Finding] = []
    # username vs section name
    if ae.username is None:
        out.append(Finding(
            "username-missing", "warning", a.src(ae),
            f"[{ae.name}] has no username=; calls to {b.label} carry no USERNAME",
            "the far side picks any user whose permit matches (or 'guest'); with several "
            "entries it may pick the wrong one and answer REJECT 50 \"No authority found\"",
            f"add 'username = {be.name}' to [{ae.name}]"))
    elif ae.username != be.name:
        out.append(Finding(
            "username-mismatch", "error", a.src(ae, "username"),
            f"[{ae.name}] username = {ae.username}, but the far side's section is "
            f"[{be.name}] ({b.src(be)})",
            f"{b.label} has no [{ae.username}]: it sends a decoy AUTHREQ, then REJECT cause 50 "
            "\"No authority found\" for every call from here",
            f"set 'username = {be.name}' in [{ae.name}] or rename the far side's section to "
            f"[{ae.username}]"))
    # secret
    if (be.secrets or "rsa" in be.auth) and not ae.secrets and not a.has_option(ae, "outkey"):
        out.append(Finding(
            "secret-missing", "error", a.src(ae),
            f"[{ae.name}] has no secret, but {b.label} [{be.name}] asks for one",
            "the far side's AUTHREQ cannot be answered: REJECT 50 \"No authority found\"",
            f"add the shared secret to [{ae.name}]"))
    # auth methods: what the callee offers vs what the caller can answer
    offered = set(be.auth) if (be.secrets or "rsa" in be.auth) else set()
    if offered:
        can = set()
        if ae.secrets:
            can |= {"md5", "plaintext"}
        if a.has_option(ae, "outkey"):
            can.add("rsa")
        if be.secrets == [] and "rsa" in be.auth and not b.has_option(be, "inkeys"):
            out.append(Finding(
                "auth-rsa-without-keys", "error", b.src(be, "auth"),
                f"[{be.name}] auth = rsa but no inkeys=", "RSA answers cannot be verified: "
                "REJECT 50", "set inkeys= or use auth = md5"))
        if not offered & can:
            out.append(Finding(
                "auth-no-overlap", "error", b.src(be, "auth"),
                f"{b.label} [{be.name}] auth = {','.join(sorted(offered))}; {a.label} "
                f"[{ae.name}] can answer only {','.join(sorted(can)) or 'nothing'}",
                "AUTHREQ offers a method the caller cannot use: the caller hangs up "
                "(cause 50) or the callee answers REJECT 50 \"No authority found\"",
                f"use auth = md5 on [{be.name}] (and a shared secret)"))
        elif not offered & set(ae.auth):
            out.append(Finding(
                "auth-differs", "info", a.src(ae, "auth"),
                f"auth methods differ: [{ae.name}] {','.join(sorted(ae.auth))} vs "
                f"[{be.name}] {','.join(sorted(be.auth))}",
                "calls from here still authenticate with what the far side offers "
                f"({','.join(sorted(offered & can))})",
                "use the same auth= on both sides"))
    # context / peercontext on the callee
    if b.plan is not None and be.is_user:
        ctx, accepted = _landing(ae, be)
        if not accepted:
            out.append(Finding(
                "peercontext-not-allowed", "error", a.src(ae, "peercontext"),
                f"[{ae.name}] peercontext = {ae.peercontext} is not a context of {b.label} "
                f"[{be.name}] (context = {', '.join(be.contexts) or 'none'})",
                "the far side finds no user allowed into that CALLED_CONTEXT: REJECT 50 \"No "
                "authority found\"",
                f"set 'peercontext = {be.context or ''}' or add 'context = {ae.peercontext}' "
                f"to [{be.name}]"))
        elif ctx is not None and not _context_exists(b.plan, ctx):
            if be.context != ctx:   # check_site reports a missing own context
                out.append(Finding(
                    "peercontext-missing", "error", a.src(ae, "peercontext"),
                    f"calls from [{ae.name}] land in [{ctx}] at {b.label}, which does not exist",
                    "REJECT 3 \"No such context/extension\" after authentication",
                    f"create [{ctx}] at {b.label} or fix peercontext"))
        elif ctx is not None and a.plan is not None:
            for d in iax_dials(a.plan):
                if d.peer != ae.name:
                    continue
                dctx = d.context or ctx
                for sample in pattern_samples(d.exten):
                    num = expand_number(d.number, sample)
                    if _route(b, dctx, num) is None:
                        out.append(Finding(
                            "no-route-at-remote", "error", str(d.source),
                            f"[{d.from_context}] {d.exten} dials {num} over [{ae.name}], but "
                            f"{b.label} [{dctx}] has no extension matching {num}",
                            "after authentication the far side answers REJECT 3 \"No such "
                            "context/extension\"",
                            f"add a pattern for {num} to [{dctx}] at {b.label}, or fix the "
                            "dialled pattern/number here"))
                        break
        # hairpins: calls that arrive from a go back to a over the same trunk
        if ctx is not None and accepted and a.plan is not None:
            for d in _dials_from(b, [ctx]):
                if d.peer != be.name:
                    continue
                for sample in pattern_samples(d.exten):
                    num = expand_number(d.number, sample)
                    if num == sample:
                        break            # check_site reports same-number loops
                    back_ctx, _ok = _landing(be, ae)
                    nxt = None
                    for d2 in _dials_from(a, [back_ctx or ""]):
                        if d2.peer == ae.name and _route(a, back_ctx or "", num) == d2.exten:
                            nxt = d2
                    if nxt is not None:
                        out.append(Finding(
                            "routing-loop", "error", str(d.source),
                            f"{b.label} [{d.from_context}] {d.exten} sends {sample} back as "
                            f"{num}, and {a.label} sends {num} back again ({nxt.source})",
                            "the call ping-pongs over the trunk until call numbers run out",
                            "route one of the two to a local device"))
                    else:
                        out.append(Finding(
                            "hairpin", "info", str(d.source),
                            f"{b.label} [{d.from_context}] {d.exten} sends calls from "
                            f"{a.label} back over the trunk as {num}",
                            f"{num} is handled by {a.label} "
                            f"({_route(a, back_ctx or '', num) or 'nothing: REJECT 3'})",
                            "none needed if intended"))
                    break
    # host and port: does a dial b where b listens?
    baddr = b.address()
    if ae.host is not None and baddr is not None and _is_ip(ae.host) and ae.host != baddr:
        out.append(Finding(
            "host-mismatch", "error", a.src(ae, "host"),
            f"[{ae.name}] host = {ae.host}, but {b.label} listens on {baddr} "
            f"({b.general_src('bindaddr')})",
            "POKEs and NEWs go to the wrong address: peer UNREACHABLE, calls fail with "
            "congestion (no answer to NEW)",
            f"set 'host = {baddr}' in [{ae.name}]"))
    if ae.host is not None and b.iax is not None and ae.port != b.iax.general.bindport:
        out.append(Finding(
            "port-mismatch", "error", a.src(ae, "port"),
            f"[{ae.name}] dials port {ae.port}, but {b.label} listens on port "
            f"{b.iax.general.bindport} ({b.general_src('bindport')})",
            "POKEs and NEWs get no answer (or an ICMP port unreachable): peer UNREACHABLE",
            f"set 'port = {b.iax.general.bindport}' in [{ae.name}] (or bindport at "
            f"{b.label})"))
    if be.dynamic and a.iax is not None and not any(
            r.username == be.name or r.host in (baddr, ae.host) for r in a.iax.general.registers):
        out.append(Finding(
            "dynamic-without-register", "error", b.src(be, "host"),
            f"{b.label} [{be.name}] is host=dynamic but {a.label} has no register => line",
            "the far side never learns our address: it cannot call or qualify us",
            f"add 'register => {be.name}:<secret>@{baddr or ae.host or '<host>'}' to "
            f"{a.label}'s [general]"))
    return out


def check_pair(local: Site, le: Entry, remote: Site, re_: Entry) -> list[Finding]:
    out = check_direction(local, le, remote, re_)
    out += check_direction(remote, re_, local, le)
    # secrets: the caller sends its first secret, the callee accepts any of its own
    for a, ae, b, be in ((local, le, remote, re_), (remote, re_, local, le)):
        if ae.secrets and be.secrets and ae.secrets[0] not in be.secrets:
            out.append(Finding(
                "secret-mismatch", "error", a.src(ae, "secret"),
                f"[{ae.name}] secret differs from {b.label} [{be.name}] secret "
                f"({b.src(be, 'secret')})",
                f"calls from {a.label}: AUTHREQ -> AUTHREP with an MD5 the far side does not "
                "accept -> REJECT 50 \"No authority found\"",
                "use the same secret on both sides"))
            break
    # codecs
    ac, bc = local.raw_codecs(le), remote.raw_codecs(re_)
    if ac and bc and not set(ac) & set(bc):
        out.append(Finding(
            "codec-no-overlap", "error", local.src(le, "allow") if local.has_option(
                le, "allow") else local.general_src("allow"),
            f"no common codec: {local.label} [{le.name}] allows {','.join(ac)} (here), "
            f"{remote.label} [{re_.name}] allows {','.join(bc)}",
            "NEW is answered with REJECT 58 \"Unable to negotiate codec\" in both directions",
            "allow a shared codec (ulaw) on both sides"))
    # both ends point at the same host (wildcard binds, so check_direction could not tell)
    if le.host is not None and le.host == re_.host and local.address() is None \
            and remote.address() is None:
        out.append(Finding(
            "hosts-not-crossed", "error", local.src(le, "host"),
            f"both sites use host = {le.host}: they do not point at each other",
            "one side sends its POKEs and NEWs to itself or a third box",
            "each side's host= must be the other site's address"))
    # ACL of each side vs the other side's address
    for s, e, other in ((local, le, remote), (remote, re_, local)):
        oaddr = other.address()
        if oaddr is not None and e.acl and not acl_allows(e.acl, oaddr) \
                and not (e.host is not None and e.host == oaddr):
            out.append(Finding(
                "acl-blocks-remote", "error", s.src(e, "permit"),
                f"[{e.name}] permit/deny shut out the other site's address {oaddr}",
                "NEWs from the other site fail the ACL: REJECT 50 \"No authority found\"",
                f"permit {oaddr}/255.255.255.255 in [{e.name}]"))
    # trunk on one side only
    if le.trunk != re_.trunk:
        on_s, on_e = (local, le) if le.trunk else (remote, re_)
        off_s, off_e = (remote, re_) if le.trunk else (local, le)
        out.append(Finding(
            "trunk-one-side", "warning", off_s.src(off_e, "trunk"),
            f"trunk = yes only at {on_s.label} [{on_e.name}], not at {off_s.label} "
            f"[{off_e.name}]",
            f"{on_s.label} sends trunk (meta) datagrams, {off_s.label} sends one mini frame "
            "per call and voice packet: asymmetric media, no bandwidth saving one way, and "
            "one-way audio with peers that cannot match the trunk's host/port",
            f"set 'trunk = yes' in [{off_e.name}] too (or 'no' on both)"))
    elif le.trunk and local.iax is not None and remote.iax is not None \
            and local.iax.general.trunktimestamps != remote.iax.general.trunktimestamps:
        lts = local.iax.general.trunktimestamps
        out.append(Finding(
            "trunktimestamps-differ", "warning", local.general_src("trunktimestamps"),
            f"trunktimestamps = {'yes' if lts else 'no'} here, "
            f"{'no' if lts else 'yes'} at {remote.label} "
            f"({remote.general_src('trunktimestamps')})",
            "the two directions carry different trunk formats: one with per-call timestamps, "
            "one without; a jitterbuffer on the side receiving no timestamps gets confused "
            "(choppy audio)",
            "set the same trunktimestamps (yes) in [general] on both sides"))
    return out


# iax.conf options iaxgw reads (besides the ones it accepts and ignores, config._IGNORED_*)
_READ_GENERAL = frozenset({
    "bindport", "bindaddr", "allow", "disallow", "trunkfreq", "trunktimestamps", "trunkmtu",
    "requirecalltoken", "calltokenoptional", "calltokenexpiration", "maxcallnumbers",
    "maxcallnumbers_nonvalidated", "maxauthreq", "delayreject", "authfaillimit",
    "authfailwindow", "autokill", "minregexpire", "maxregexpire", "register", "encryption",
    "forceencryption",
})
_READ_ENTRY = frozenset({
    "type", "username", "secret", "auth", "host", "port", "permit", "deny", "context",
    "peercontext", "qualify", "trunk", "requirecalltoken", "allow", "disallow", "callerid",
    "encryption", "forceencryption", "inkeys", "outkey",
})
KNOWN_GENERAL = _READ_GENERAL | _IGNORED_GENERAL
KNOWN_ENTRY = _READ_ENTRY | _IGNORED_ENTRY
#: Options Asterisk reads with ast_true(): yes, true, y, t, 1 and on are yes, anything else no
_YES_NO = frozenset({
    "trunk", "trunktimestamps", "delayreject", "jitterbuffer", "forcejitterbuffer",
    "nochecksums", "authdebug", "srvlookup", "rtcachefriends", "rtupdate", "rtignoreregexpire",
    "shrinkcallerid", "allowfwdownload", "iaxcompat", "sendani", "immediate",
    "qualifysmoothing",
})


def _did_you_mean(word: str, known: frozenset[str]) -> str:
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.75)
    return f"; did you mean '{close[0]}'?" if close else ""


def check_options(site: Site) -> list[Finding]:
    """Option names Asterisk does not know, and yes/no options whose value is neither."""
    out: list[Finding] = []
    if site.iax_conf is None:
        return out
    for sec in site.iax_conf.sections:
        general = sec.name.lower() == "general"
        known = KNOWN_GENERAL if general else KNOWN_ENTRY
        for it in sec.items:
            name = it.name
            if name not in known:
                out.append(Finding(
                    "unknown-option", "warning", str(it.source),
                    f"[{sec.name}]: unknown option '{it.key}'{_did_you_mean(name, known)}",
                    "Asterisk logs a warning and ignores the line; so does iaxgw serve",
                    "correct the option name, or remove the line"))
            elif name in _YES_NO and it.value.strip().lower() not in _TRUE | _FALSE:
                out.append(Finding(
                    "yes-no-typo", "warning", str(it.source),
                    f"[{sec.name}]: {it.key} = {it.value!r} is neither yes nor no: Asterisk "
                    "reads it as 'no' (only yes, true, y, t, 1 and on are yes)"
                    + ("; iaxgw serve refuses the file" if name in ("trunk", "trunktimestamps",
                                                                  "delayreject") else ""),
                    f"{it.key} is off at this site, whatever was meant",
                    f"write '{it.key} = yes' or '{it.key} = no'"))
    return out


def check_dial_peers(site: Site) -> list[Finding]:
    """``Dial(IAX2/name/...)`` where ``name`` is no entry of iax.conf."""
    out: list[Finding] = []
    if site.plan is None or site.iax is None:
        return out
    names = frozenset(site.iax.entries)
    for d in iax_dials(site.plan):
        if d.peer in names or _is_ip(d.peer) or "$" in d.peer:
            continue
        out.append(Finding(
            "dial-unknown-peer", "error", str(d.source),
            f"[{d.from_context}] {d.exten}: Dial(IAX2/{d.peer}/...) names no entry of "
            f"iax.conf{_did_you_mean(d.peer, names)}",
            f"Asterisk takes '{d.peer}' for a host name: without a DNS answer the Dial fails "
            "at once (CHANUNAVAIL), with one the call goes out without this trunk's username, "
            "secret or trunking",
            "name the [section] of the peer in the Dial, or add that section to iax.conf"))
    return out


def check_sites(local: Site, remote: Site | None = None) -> list[Finding]:
    """All findings for ``local`` (and ``remote``), most severe first."""
    out = list(local.findings)
    out += check_site(local) + check_options(local) + check_dial_peers(local)
    out += check_site_encryption(local)
    if remote is not None:
        out += remote.findings
        out += check_site(remote) + check_options(remote) + check_dial_peers(remote)
        out += check_site_encryption(remote)
        for le, re_ in pair_entries(local, remote):
            if re_ is None:
                out.append(Finding(
                    "unpaired", "error", local.src(le),
                    f"[{le.name}] has no partner entry at {remote.label} (no section named "
                    f"{le.username or le.name}, no username {le.name}, no host match)",
                    "the far side knows no such user: REJECT 50 \"No authority found\"",
                    f"add [{le.username or le.name}] at {remote.label}, or set username= here "
                    "to the far side's section name"))
                continue
            out += check_pair(local, le, remote, re_)
            out += check_pair_encryption(local, le, remote, re_)
    # de-duplicate (a site's own checks run once per site)
    seen: set[tuple[str, str, str]] = set()
    uniq = []
    for f in out:
        key = (f.code, f.where, f.message)
        if key not in seen:
            seen.add(key)
            uniq.append(f)
    uniq.sort(key=lambda f: _RANK[f.severity])
    return uniq


def check_dirs(local: str | Path, remote: str | Path | None = None) -> list[Finding]:
    return check_sites(load_site(local), load_site(remote) if remote is not None else None)


def has_errors(findings: list[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)


def format_findings(findings: list[Finding]) -> str:
    if not findings:
        return "no problems found"
    lines = []
    for f in findings:
        lines.append(f"{f.where}: {f.severity}: {f.message} [{f.code}]")
        lines.append(f"    on the wire: {f.wire}")
        lines.append(f"    fix: {f.fix}")
    n = {s: sum(1 for f in findings if f.severity == s) for s in _RANK}
    lines.append(f"{n['error']} error(s), {n['warning']} warning(s), {n['info']} info")
    return "\n".join(lines)


def findings_json(findings: list[Finding]) -> str:
    return json.dumps({"findings": [f.to_dict() for f in findings],
                       "errors": sum(1 for f in findings if f.severity == "error")}, indent=2)

