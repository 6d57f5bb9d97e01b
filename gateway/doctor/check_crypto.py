"""``iaxgw check``'s encryption and RSA findings: one site's settings (``forceencryption``
without a secret, encryption without md5, values Asterisk does not take, ``keyrotate``, RSA keys
missing or unreadable, ``auth = rsa`` without inkeys) and a pair's (encryption on one side only;
trunked voice travels in the clear; an outkey that is none of the other side's inkeys).

Asterisk 22 reads ``encryption`` and ``forceencryption`` as chan_iax2.c does (see
:func:`iaxgw.gateway.conf.config.apply_encryption`); ``keyrotate`` is documented in its sample
iax.conf but not read by chan_iax2.c.
"""

from __future__ import annotations

from typing import Protocol

from iaxgw.gateway.conf.asterisk_conf import ConfFile
from iaxgw.gateway.conf.config import _FALSE, _TRUE
from iaxgw.gateway.conf.model import Entry, IaxConfig
from iaxgw.gateway.doctor.findings import Finding
from iaxgw.gateway.iax2.rsakeys import KeyStore, entry_key_problems, outkey_matches

_VALUES = _TRUE | _FALSE | {"aes128"}


class SiteLike(Protocol):
    """What these checks read of ``check.Site``."""

    iax: IaxConfig | None
    iax_conf: ConfFile | None

    @property
    def label(self) -> str: ...

    def src(self, entry: Entry, key: str | None = None) -> str: ...

    def general_src(self, key: str) -> str: ...

    def has_option(self, entry: Entry, key: str) -> bool: ...


def _where(site: SiteLike, e: Entry, key: str) -> str:
    """``file:line`` of ``key`` for ``e``: its own line, else [general]'s."""
    return site.src(e, key) if site.has_option(e, key) else site.general_src(key)


def check_site_encryption(site: SiteLike) -> list[Finding]:
    """One site's encryption settings."""
    out: list[Finding] = []
    if site.iax is None or site.iax_conf is None:
        return out
    for sec in site.iax_conf.sections:
        for it in sec.items:
            if it.name in ("encryption", "forceencryption") and \
                    it.value.strip().lower() not in _VALUES:
                out.append(Finding(
                    "encryption-value", "warning", str(it.source),
                    f"[{sec.name}]: {it.key} = {it.value!r} is not aes128, yes or no: "
                    "Asterisk reads it as no encryption",
                    f"{it.key} adds nothing at this site, whatever was meant",
                    f"write '{it.key} = aes128' (or yes, or no)"))
            elif it.name == "keyrotate":
                out.append(Finding(
                    "keyrotate-ignored", "info", str(it.source),
                    f"[{sec.name}]: keyrotate = {it.value}: Asterisk 22 does not read this "
                    "option (its sample iax.conf still describes it), nor does iaxgw",
                    "key rotation follows the ENCRYPTION IEs: the callee sends RTKEY (a new key) "
                    "at the first voice frame and every 120-300 s when the NEW offered it; "
                    "the caller never does, as the AUTHREQ answers AES-128 alone",
                    "remove the line"))
    for e in site.iax.entries.values():
        out += _entry_encryption(site, e)
    return out


def _entry_rsa(site: SiteLike, e: Entry) -> list[Finding]:
    """auth = rsa: keys that are missing or unreadable, rsa without inkeys."""
    out: list[Finding] = []
    keys_dir = site.iax.keys_dir if site.iax is not None else None
    for problem in entry_key_problems(KeyStore(keys_dir), e):
        key = "outkey" if problem.startswith("outkey") else "inkeys"
        out.append(Finding(
            "rsa-key", "error", _where(site, e, key), f"[{e.name}] {problem}",
            "calls that need this key fail: an inkey that cannot be read verifies nothing "
            "(REJECT 50 \"No authority found\"); an outkey that cannot be read signs nothing "
            "(md5 is used if there is a secret, else the call ends)",
            f"put NAME.pub / NAME.key (PEM, 1024-bit, no passphrase: astgenkey -n) in "
            f"{keys_dir}"))
    if "rsa" in e.auth and e.is_user and not e.inkeys and not e.secrets:
        out.append(Finding(
            "rsa-no-inkeys", "error", _where(site, e, "auth"),
            f"[{e.name}]: auth = rsa without inkeys (and no secret)",
            "no caller can authenticate: REJECT 50 \"No authority found\"",
            f"add 'inkeys = NAME' to [{e.name}] (NAME.pub in the keys folder)"))
    return out


def _entry_encryption(site: SiteLike, e: Entry) -> list[Finding]:
    out: list[Finding] = _entry_rsa(site, e)
    if e.forceencryption and not e.secrets:
        out.append(Finding(
            "forceencryption-no-secret", "error", _where(site, e, "forceencryption"),
            f"[{e.name}]: forceencryption is on but there is no secret: the AES key is made "
            "from the secret",
            "calls from it: REJECT 50 \"No authority found\" (Asterisk logs \"No secret "
            "present while force encrypt enabled\"); calls to it are not placed (\"Encryption "
            "forced but no secret provided\")",
            f"give [{e.name}] a secret (the same on both sides)"))
    elif e.encryption and e.secrets and "md5" not in e.auth:
        out.append(Finding(
            "encryption-needs-md5", "warning", site.src(e, "auth"),
            f"[{e.name}]: encryption is on but auth = {','.join(sorted(e.auth))}: only md5 "
            "(and rsa) calls are encrypted",
            "the AUTHREQ asks for no encryption: calls go in the clear"
            + (" and forceencryption refuses them" if e.forceencryption else ""),
            f"set 'auth = md5' in [{e.name}]"))
    return out


def check_pair_rsa(local: SiteLike, le: Entry, remote: SiteLike, re_: Entry) -> list[Finding]:
    """Each side's outkey against the other side's inkeys."""
    out: list[Finding] = []
    for a, ae, b, be in ((local, le, remote, re_), (remote, re_, local, le)):
        if not ae.outkey or "rsa" not in be.auth or not be.inkeys or a.iax is None \
                or b.iax is None:
            continue
        match = outkey_matches(KeyStore(a.iax.keys_dir), ae.outkey, KeyStore(b.iax.keys_dir),
                               be.inkeys)
        if match is False:
            out.append(Finding(
                "rsa-key-mismatch", "error", _where(a, ae, "outkey"),
                f"[{ae.name}] outkey {ae.outkey} is not the private half of any inkeys of "
                f"{b.label} [{be.name}] ({':'.join(be.inkeys)})",
                f"calls from {a.label}: the RSA signature does not verify: REJECT 50 \"No "
                "authority found\"",
                f"copy {ae.outkey}.pub to {b.label}'s keys folder and list it in inkeys"))
    return out


def check_pair_encryption(local: SiteLike, le: Entry, remote: SiteLike,
                          re_: Entry) -> list[Finding]:
    """Encryption on one side only, and what a trunk leaves in the clear; RSA keys."""
    out: list[Finding] = check_pair_rsa(local, le, remote, re_)
    if bool(le.encryption) != bool(re_.encryption):
        on_s, on_e = (local, le) if le.encryption else (remote, re_)
        off_s, off_e = (remote, re_) if le.encryption else (local, le)
        forced = on_e.forceencryption
        out.append(Finding(
            "encryption-one-side", "error" if forced else "warning",
            _where(on_s, on_e, "forceencryption" if forced else "encryption"),
            f"encryption is on at {on_s.label} [{on_e.name}]"
            + (" and forced" if forced else "") + f", off at {off_s.label} [{off_e.name}]",
            ("calls from the unencrypted side: REJECT 50 \"No authority found\" after the "
             "AUTHREP (Asterisk logs \"incoming call is unencrypted while force encrypt is "
             "enabled\"); calls from the forcing side end after the AUTHREQ, which asks for no "
             "encryption" if forced else
             "the callee's AUTHREQ asks for no encryption: every call goes in the clear, "
             "though one side asked for encryption"),
            f"set 'encryption = aes128' in [{off_e.name}] at {off_s.label} too "
            "(or remove it on both sides)"))
    elif le.encryption and (le.trunk or re_.trunk):
        out.append(Finding(
            "trunk-media-clear", "info", local.src(le, "trunk"),
            f"encryption with trunk = yes ([{le.name}]): full and mini frames are encrypted, "
            "trunk datagrams are not (Asterisk 22 sends them in the clear, and so does iaxgw)",
            "signalling, the first voice frame of each call and DTMF are encrypted; the voice "
            "in trunk datagrams can be listened to on the path",
            "set 'trunk = no' on both sides if the voice must be protected too"))
    return out
