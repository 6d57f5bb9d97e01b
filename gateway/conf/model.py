"""The configuration model shared by the config parser, the protocol core and the CLI.

``gateway/conf/config.py`` fills these from Asterisk-format ``iax.conf`` files; tests and the
embedded defaults may build them directly.  Field names follow Asterisk's option names where one
exists.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
CallTokenMode = Literal["yes", "no", "auto"]


@dataclass(frozen=True, slots=True)
class Source:
    """Where a setting came from, for error messages (``file:line``)."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class AclRule:
    """One ``permit``/``deny`` line; rules apply in order and the last match wins."""

    permit: bool
    network: Network


@dataclass(slots=True)
class Register:
    """A ``register => user[:secret]@host[:port][/contact]`` line: we register to ``host``."""

    username: str
    secret: str
    host: str
    port: int = 4569
    contact: str | None = None
    source: Source | None = None


@dataclass(slots=True)
class Entry:
    """One ``[section]`` of iax.conf after template expansion: a friend, peer or user."""

    name: str
    type: Literal["friend", "peer", "user"] = "friend"
    username: str | None = None          # USERNAME we send when calling this peer
    secrets: list[str] = field(default_factory=list)
    auth: frozenset[str] = frozenset({"md5"})   # subset of {"md5", "plaintext", "rsa"}
    host: str | None = None              # IP or hostname; None with dynamic=True
    dynamic: bool = False                # host = dynamic: learns its address by registration
    port: int = 4569
    acl: list[AclRule] = field(default_factory=list)
    context: str | None = None           # where calls from this user enter our dialplan
    peercontext: str | None = None       # CALLED_CONTEXT sent in NEWs to this peer
    qualify: int | None = None           # maxms (qualify=yes -> 2000); None = no
    trunk: bool = False
    requirecalltoken: CallTokenMode | None = None   # None = global default ("yes")
    # allowed codecs, in preference order
    codecs: list[str] = field(default_factory=lambda: ["ulaw", "alaw"])
    callerid: str | None = None
    #: ENCRYPTION methods offered (0x0001 AES-128, 0x8000 key rotation); starts as [general]'s
    encryption: int = 0
    forceencryption: bool = False        # no call with this entry unless it is encrypted
    inkeys: list[str] = field(default_factory=list)   # auth = rsa: public keys accepted
    outkey: str | None = None            # auth = rsa: our private key when calling it
    source: Source | None = None
    contexts: list[str] = field(default_factory=list)   # every context= line; [0] == context
    #: options without effect in iaxgw that ``show`` prints as written (config.SHOWN_OPTIONS)
    shown: dict[str, str] = field(default_factory=dict)

    @property
    def is_user(self) -> bool:
        """Accepts calls from the remote (type user or friend)."""
        return self.type in ("user", "friend")

    @property
    def is_peer(self) -> bool:
        """Can be called / qualified (type peer or friend)."""
        return self.type in ("peer", "friend")


@dataclass(slots=True)
class General:
    """The ``[general]`` section."""

    bindaddr: str = "0.0.0.0"
    bindport: int = 4569
    codecs: list[str] = field(default_factory=lambda: ["ulaw", "alaw"])
    trunkfreq: int = 20                  # ms, clamped 10..1000
    trunktimestamps: bool = False
    trunkmtu: int = 1240                 # 0 = no limit
    calltokenoptional: list[AclRule] = field(default_factory=list)
    calltokenexpiration: int = 10        # s
    maxcallnumbers: int = 2048           # per source IP
    maxcallnumbers_nonvalidated: int = 8192
    maxauthreq: int = 3
    delayreject: bool = False
    #: iaxgw only, off by default as Asterisk 22 has no such lockout: this many failed
    #: authentications from one source IP within ``authfailwindow`` s and that IP's NEWs get a
    #: delayed REJECT 50 saying it is throttled (0 = off)
    authfaillimit: int = 0
    authfailwindow: int = 60             # s; 0 = off
    autokill: int | None = None          # ms; None = off
    registers: list[Register] = field(default_factory=list)
    minregexpire: int = 60
    maxregexpire: int = 60
    encryption: int = 0                  # ENCRYPTION methods (0x0001 AES-128 | 0x8000 rotate)
    forceencryption: bool = False
    #: as Entry.shown, for [general] (codecpriority: the entries' default)
    shown: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class IaxConfig:
    """A whole iax.conf."""

    general: General = field(default_factory=General)
    entries: dict[str, Entry] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)   # "file:line: unknown option 'x'" etc.
    #: RSA keys (NAME.pub, NAME.key): the ``keys/`` folder beside iax.conf, or ``--keys DIR``
    keys_dir: Path | None = None

    def peer(self, name: str) -> Entry | None:
        e = self.entries.get(name)
        return e if e is not None and e.is_peer else None

    def user(self, name: str) -> Entry | None:
        e = self.entries.get(name)
        return e if e is not None and e.is_user else None
