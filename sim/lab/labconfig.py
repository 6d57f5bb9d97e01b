"""Config builder for the Asterisk lab: renders one site's Asterisk configuration from parameters.

Every parameter's default reproduces the two-site guide our users follow (the "seed": office-a and
office-b as ``type = friend`` trunked peers with md5 auth and ``qualify = yes``), mapped onto
loopback: office-a on 127.0.0.10:4569, office-b on 127.0.0.20:4569.  Tests vary options by passing
parameters (``seed_site("office-a", trunk=False)``), never by keeping copies of files.

Dialplan plan (shown for office-a, whose own extensions are 2xx; office-b mirrors it with 3xx):

===========  ================================================================================
[from-iax]   calls arriving over the trunk
200          Answer, Echo                      (voice comes back: two-way audio)
201          Answer, Milliwatt                 (a steady 1004 Hz tone towards the caller)
202          Busy
203          Congestion
204          Answer, Record 3 s, Playback it, Echo (needs app_record; loaded by default)
_29X         hairpin: Dial(IAX2/office-b/30N) -- back over the trunk to the far 30N test
_2XX         the seed's Dial(PJSIP/...) lines (chan_pjsip is not loaded; exact matches win)
[internal]   local callers (``channel originate Local/300@internal ...``)
_3XX         the seed's Dial(IAX2/office-b/${EXTEN}): over the trunk to the far site
===========  ================================================================================

Exact extensions (200..204) sort before the seed's ``_2XX`` pattern in Asterisk, so the test
extensions never reach the PJSIP lines.  ``_29X`` is more specific than ``_2XX`` and wins too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from typing import Literal

SEED_SECRET = "a-strong-shared-secret"
SITE_ADDRESSES: dict[str, tuple[str, str]] = {
    # name: (loopback address, own extension prefix)
    "office-a": ("127.0.0.10", "2"),
    "office-b": ("127.0.0.20", "3"),
}
IAX_PORT = 4569

#: Modules loaded with ``autoload = no``: what a trunk test needs and nothing else.
BASE_MODULES: tuple[str, ...] = (
    "res_timing_timerfd",      # trunking needs a timing source
    "res_crypto",
    "chan_iax2",
    "pbx_config",
    "codec_ulaw",
    "codec_alaw",
    "codec_a_mu",
    "app_dial",
    "app_echo",
    "app_milliwatt",
    "app_playback",
    "app_record",
    "format_wav",
    "format_pcm",
    "func_channel",
    "res_clioriginate",        # channel originate
    "bridge_simple",           # calls hang up at once without a bridge module
    "bridge_holding",
    "bridge_builtin_features",
)

QualifyValue = bool | int | Literal["yes", "no"]

#: characters no rendered config value may hold (tab is whitespace to Asterisk and allowed)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _strings(value: object) -> Iterator[str]:
    """The strings in an option value (a string, or tuples and dicts of them)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)


@dataclass(frozen=True)
class LabSiteConfig:
    """One Asterisk site of the lab: its own address and its friend entry for the remote site.

    ``secret`` is this side's copy of the shared secret (set the two sides differently to test a
    mismatch; ``"a;b"`` lists several).  ``permit``/``deny`` of ``None`` mean the seed's ACL:
    deny everything, permit the remote host only.  ``None`` in the optional trunk options leaves
    the line out, so Asterisk's own default applies.
    """

    name: str = "office-a"
    ip: str = "127.0.0.10"
    port: int = IAX_PORT
    bindaddr: str | None = None             # None: ``ip``
    prefix: str = "2"                       # our extensions: 2xx
    remote_name: str = "office-b"
    remote_host: str = "127.0.0.20"
    remote_port: int = IAX_PORT
    remote_prefix: str = "3"
    username: str | None = None             # None: our own name (as the seed)
    secret: str = SEED_SECRET
    auth: str = "md5"
    codecs: tuple[str, ...] = ("ulaw", "alaw")
    trunk: bool = True
    qualify: QualifyValue = "yes"
    trunkfreq: int | None = None
    trunktimestamps: bool | None = None
    trunkmtu: int | None = None
    requirecalltoken: Literal["yes", "no", "auto"] | None = None
    encryption: bool | None = None
    permit: tuple[str, ...] | None = None
    deny: tuple[str, ...] | None = None
    context: str = "from-iax"
    peercontext: str | None = "from-iax"
    extra_general: tuple[str, ...] = ()     # raw lines appended to iax.conf [general]
    extra_peer: tuple[str, ...] = ()        # raw lines appended to the remote's entry
    extra_sections: tuple[str, ...] = ()    # raw lines of entries after the remote's
    extra_modules: tuple[str, ...] = ()
    verbose: int = 3
    maxcalls: int | None = None             # asterisk.conf [options] maxcalls (None: no limit)
    debug_log: bool = False                 # also keep a ``debug`` log file
    extra_dialplan: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # every value is written into one line of Asterisk's config: a newline (or another
        # control character) in any of them would add lines of the caller's choosing
        for f in fields(self):
            for value in _strings(getattr(self, f.name)):
                if _CONTROL.search(value):
                    raise ValueError(f"lab site option {f.name}: {value!r} is not one line "
                                     "without control characters")

    def with_(self, **changes: object) -> LabSiteConfig:
        """A copy with some parameters changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


def seed_site(name: str, **overrides: object) -> LabSiteConfig:
    """The seed's config for ``office-a`` or ``office-b`` on loopback, plus ``overrides``."""
    if name not in SITE_ADDRESSES:
        raise ValueError(f"unknown lab site {name!r}; expected one of {sorted(SITE_ADDRESSES)}")
    (remote,) = (n for n in SITE_ADDRESSES if n != name)
    ip, prefix = SITE_ADDRESSES[name]
    rip, rprefix = SITE_ADDRESSES[remote]
    base = LabSiteConfig(name=name, ip=ip, prefix=prefix, remote_name=remote, remote_host=rip,
                         remote_prefix=rprefix)
    return replace(base, **overrides)  # type: ignore[arg-type]


def seed_pair(**overrides: object) -> tuple[LabSiteConfig, LabSiteConfig]:
    """office-a and office-b with the same ``overrides`` on both sides."""
    return seed_site("office-a", **overrides), seed_site("office-b", **overrides)


# --- directories ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SiteDirs:
    """An instance's folders, as paths inside the chroot."""

    etc: str
    run: str
    log: str
    varlib: str
    spool: str

    @classmethod
    def for_site(cls, name: str) -> SiteDirs:
        return cls(etc=f"/etc/asterisk-{name}", run=f"/run/asterisk-{name}",
                   log=f"/var/log/asterisk-{name}", varlib=f"/var/lib/asterisk-{name}",
                   spool=f"/var/spool/asterisk-{name}")

    @property
    def all(self) -> tuple[str, ...]:
        return (self.etc, self.run, self.log, self.varlib, self.spool)

    @property
    def asterisk_conf(self) -> str:
        return f"{self.etc}/asterisk.conf"

    @property
    def pidfile(self) -> str:
        return f"{self.run}/asterisk.pid"


# --- rendering --------------------------------------------------------------------------------

def _yesno(value: bool) -> str:
    return "yes" if value else "no"


def render_iax_conf(cfg: LabSiteConfig) -> str:
    """iax.conf: the seed's [general] and friend entry, on loopback."""
    lines = [
        f"; iax.conf for lab site {cfg.name} (rendered by iaxgw.sim.lab.labconfig)",
        "[general]",
        f"bindport = {cfg.port}",
        f"bindaddr = {cfg.bindaddr or cfg.ip}",
        "disallow = all",
        *(f"allow = {codec}" for codec in cfg.codecs),
    ]
    if cfg.trunkfreq is not None:
        lines.append(f"trunkfreq = {cfg.trunkfreq}")
    if cfg.trunktimestamps is not None:
        lines.append(f"trunktimestamps = {_yesno(cfg.trunktimestamps)}")
    if cfg.trunkmtu is not None:
        lines.append(f"trunkmtu = {cfg.trunkmtu}")
    if cfg.encryption is not None:
        lines.append(f"encryption = {_yesno(cfg.encryption)}")
    lines += list(cfg.extra_general)

    deny = ("0.0.0.0/0.0.0.0",) if cfg.deny is None else cfg.deny
    permit = (f"{cfg.remote_host}/255.255.255.255",) if cfg.permit is None else cfg.permit
    if isinstance(cfg.qualify, bool):
        qualify = _yesno(cfg.qualify)
    else:
        qualify = str(cfg.qualify)
    lines += [
        "",
        f"[{cfg.remote_name}]",
        "type = friend",
        f"username = {cfg.username or cfg.name}",
        f"secret = {cfg.secret}",
        f"auth = {cfg.auth}",
        f"host = {cfg.remote_host}",
    ]
    if cfg.remote_port != IAX_PORT:
        lines.append(f"port = {cfg.remote_port}")
    lines += [f"deny = {d}" for d in deny]
    lines += [f"permit = {p}" for p in permit]
    lines.append(f"context = {cfg.context}")
    if cfg.peercontext:
        lines.append(f"peercontext = {cfg.peercontext}")
    lines += [f"qualify = {qualify}", f"trunk = {_yesno(cfg.trunk)}"]
    if cfg.requirecalltoken is not None:
        lines.append(f"requirecalltoken = {cfg.requirecalltoken}")
    lines += list(cfg.extra_peer)
    lines += list(cfg.extra_sections)
    return "\n".join(lines) + "\n"


def render_extensions_conf(cfg: LabSiteConfig, dirs: SiteDirs | None = None) -> str:
    """extensions.conf: the test extensions first, then the seed's lines unchanged."""
    dirs = dirs or SiteDirs.for_site(cfg.name)
    p, rp, remote = cfg.prefix, cfg.remote_prefix, cfg.remote_name
    rec = f"{dirs.spool}/rec-${{UNIQUEID}}"
    lines = [
        f"; extensions.conf for lab site {cfg.name} (rendered by iaxgw.sim.lab.labconfig)",
        "[general]",
        "static = yes",
        "writeprotect = yes",
        "",
        "; Incoming from the trunk: lab test extensions (exact matches win over the seed's _"
        f"{p}XX)",
        "[from-iax]",
        f"exten => {p}00,1,Answer()",
        " same => n,Echo()",
        " same => n,Hangup()",
        f"exten => {p}01,1,Answer()",
        " same => n,Milliwatt()",
        " same => n,Hangup()",
        f"exten => {p}02,1,Busy(10)",
        " same => n,Hangup()",
        f"exten => {p}03,1,Congestion(10)",
        " same => n,Hangup()",
        f"exten => {p}04,1,Answer()",
        f" same => n,Record({rec}.wav,0,3,qx)",
        f" same => n,Playback({rec})",
        " same => n,Echo()",
        " same => n,Hangup()",
        f"; hairpin: {p}9N goes back over the trunk to {remote}'s {rp}0N",
        f"exten => _{p}9X,1,Dial(IAX2/{remote}/{rp}0${{EXTEN:2}})",
        " same => n,Hangup()",
        "; the seed's lines",
        f"exten => _{p}XX,1,Dial(PJSIP/${{EXTEN}},30)",
        " same => n,Voicemail(${EXTEN}@default,u)",
        " same => n,Hangup()",
        "",
        f"; Outbound to {remote}",
        "[internal]",
        f"exten => _{rp}XX,1,Dial(IAX2/{remote}/${{EXTEN}})",
        " same => n,Hangup()",
    ]
    for context, body in cfg.extra_dialplan.items():
        lines += ["", f"[{context}]", *body]
    return "\n".join(lines) + "\n"


def render_modules_conf(cfg: LabSiteConfig) -> str:
    """modules.conf: ``autoload = no`` and an explicit list."""
    mods = list(BASE_MODULES) + [m for m in cfg.extra_modules if m not in BASE_MODULES]
    lines = ["[modules]", "autoload = no", *(f"load => {m}.so" for m in mods)]
    return "\n".join(lines) + "\n"


def render_asterisk_conf(cfg: LabSiteConfig, dirs: SiteDirs | None = None) -> str:
    """asterisk.conf: the instance's own folders, so several run side by side in one chroot."""
    dirs = dirs or SiteDirs.for_site(cfg.name)
    lines = [
        "[directories]",
        f"astetcdir => {dirs.etc}",
        f"astrundir => {dirs.run}",
        f"astlogdir => {dirs.log}",
        f"astvarlibdir => {dirs.varlib}",
        f"astdbdir => {dirs.varlib}",
        f"astkeydir => {dirs.varlib}",
        f"astspooldir => {dirs.spool}",
        "",
        "[options]",
        f"verbose = {cfg.verbose}",
        f"systemname = {cfg.name}",
        "documentation_language = en_US",
    ]
    if cfg.maxcalls is not None:
        lines.append(f"maxcalls = {int(cfg.maxcalls)}")
    return "\n".join(lines) + "\n"


def render_logger_conf(cfg: LabSiteConfig) -> str:
    """logger.conf: a readable ``messages`` file (and ``debug`` when asked)."""
    lines = [
        "[general]",
        "dateformat = %F %T.%3q",
        "",
        "[logfiles]",
        "messages => notice,warning,error,verbose",
    ]
    if cfg.debug_log:
        lines.append("debug => debug")
    return "\n".join(lines) + "\n"


def render_site(cfg: LabSiteConfig, dirs: SiteDirs | None = None) -> dict[str, str]:
    """Every file of the site's config folder: ``{file name: text}``."""
    dirs = dirs or SiteDirs.for_site(cfg.name)
    return {
        "asterisk.conf": render_asterisk_conf(cfg, dirs),
        "modules.conf": render_modules_conf(cfg),
        "logger.conf": render_logger_conf(cfg),
        "iax.conf": render_iax_conf(cfg),
        "extensions.conf": render_extensions_conf(cfg, dirs),
    }
