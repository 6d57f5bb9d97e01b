"""iax.conf / phones.conf loading, the generic .conf reader and the ACL helper."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from iaxgw.gateway.conf.asterisk_conf import read_conf, strip_comment
from iaxgw.gateway.conf.config import (
    ConfigError,
    PhoneBehaviour,
    acl_allows,
    calltoken_optional,
    default_config_dir,
    load_iax_conf,
    load_phones_conf,
    parse_callerid,
)
from iaxgw.gateway.conf.model import AclRule, IaxConfig

SEED = Path(__file__).parent / "data" / "seed"
net = ipaddress.ip_network


def write(tmp_path: Path, text: str, name: str = "iax.conf") -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def iax(tmp_path: Path, text: str) -> IaxConfig:
    return load_iax_conf(write(tmp_path, text))


# --- the seed -------------------------------------------------------------------------------

def test_seed_office_b_loads_unchanged() -> None:
    cfg = load_iax_conf(SEED / "office-b" / "iax.conf")
    assert cfg.warnings == []
    g = cfg.general
    assert (g.bindaddr, g.bindport, g.codecs) == ("0.0.0.0", 4569, ["ulaw", "alaw"])
    assert list(cfg.entries) == ["office-a"]
    e = cfg.entries["office-a"]
    assert e.type == "friend" and e.is_peer and e.is_user
    assert e.username == "office-b"
    assert e.secrets == ["a-strong-shared-secret"]
    assert e.auth == frozenset({"md5"})
    assert (e.host, e.dynamic, e.port) == ("10.1.1.10", False, 4569)
    assert e.acl == [AclRule(False, net("0.0.0.0/0")), AclRule(True, net("10.1.1.10/32"))]
    assert (e.context, e.peercontext, e.contexts) == ("from-iax", "from-iax", ["from-iax"])
    assert e.qualify == 2000
    assert e.trunk is True
    assert e.requirecalltoken is None
    assert e.codecs == ["ulaw", "alaw"]
    assert e.source is not None and e.source.line == 8
    assert cfg.peer("office-a") is e and cfg.user("office-a") is e


def test_seed_office_a_loads_unchanged() -> None:
    cfg = load_iax_conf(SEED / "office-a" / "iax.conf")
    assert cfg.warnings == []
    e = cfg.entries["office-b"]
    assert (e.username, e.host) == ("office-a", "10.2.2.20")
    assert acl_allows(e.acl, "10.2.2.20") and not acl_allows(e.acl, "10.2.2.21")


@pytest.mark.parametrize(("site", "entry", "host", "user", "bind"), [
    ("office-b", "office-a", "127.0.0.10", "office-b", "127.0.0.20"),
    ("office-a", "office-b", "127.0.0.20", "office-a", "127.0.0.10"),
])
def test_embedded_defaults(site: str, entry: str, host: str, user: str, bind: str) -> None:
    d = default_config_dir(site)
    cfg = load_iax_conf(d / "iax.conf")
    assert cfg.warnings == []
    assert cfg.general.bindaddr == bind
    e = cfg.entries[entry]
    assert (e.host, e.username, e.secrets) == (host, user, ["a-strong-shared-secret"])
    assert e.acl[-1] == AclRule(True, net(f"{host}/32"))
    assert e.trunk and e.qualify == 2000 and e.context == "from-iax"
    assert (d / "extensions.conf").is_file() and (d / "phones.conf").is_file()
    with pytest.raises(ValueError, match="unknown site"):
        default_config_dir("office-c")


# --- [general] -------------------------------------------------------------------------------

def test_general_options(tmp_path: Path) -> None:
    cfg = iax(tmp_path, """
[general]
bindaddr = 192.0.2.1:4570
bindport = 4999
disallow = all
allow = alaw,ulaw:20
allow = gsm
trunkfreq = 5
trunktimestamps = yes
trunkmtu = 0
calltokenoptional = 10.0.0.0/255.0.0.0
calltokenoptional = 192.168.1.7
calltokenexpiration = 20
maxcallnumbers = 100
maxcallnumbers_nonvalidated = 200
maxauthreq = 5
delayreject = yes
autokill = yes
minregexpire = 30
maxregexpire = 120
register => office-b:pw@192.0.2.9:4570/500
register => user@host.example
language = en
""")
    g = cfg.general
    assert (g.bindaddr, g.bindport) == ("192.0.2.1", 4570)     # the port in bindaddr wins
    assert g.codecs == ["alaw", "ulaw"]
    assert g.trunkfreq == 10 and g.trunktimestamps and g.trunkmtu == 0
    assert [r.network for r in g.calltokenoptional] == [net("10.0.0.0/8"), net("192.168.1.7/32")]
    assert calltoken_optional(g, "10.9.9.9") and not calltoken_optional(g, "11.0.0.1")
    assert (g.calltokenexpiration, g.maxcallnumbers, g.maxcallnumbers_nonvalidated) == (20, 100,
                                                                                        200)
    assert (g.maxauthreq, g.delayreject, g.autokill) == (5, True, 2000)
    assert (g.minregexpire, g.maxregexpire) == (30, 120)
    r0, r1 = g.registers
    assert (r0.username, r0.secret, r0.host, r0.port, r0.contact) == ("office-b", "pw",
                                                                       "192.0.2.9", 4570, "500")
    assert (r1.username, r1.secret, r1.host, r1.port, r1.contact) == ("user", "", "host.example",
                                                                       4569, None)
    assert r0.source is not None and r0.source.line == 21
    assert len(cfg.warnings) == 2
    assert "gsm" in cfg.warnings[0] and "iax.conf:7:" in cfg.warnings[0]
    assert "trunkfreq 5 out of range" in cfg.warnings[1] and ":8:" in cfg.warnings[1]


@pytest.mark.parametrize(("value", "expected"), [("no", None), ("1500", 1500), ("0", None)])
def test_autokill(tmp_path: Path, value: str, expected: int | None) -> None:
    assert iax(tmp_path, f"[general]\nautokill = {value}\n").general.autokill == expected


def test_trunkfreq_clamped_high(tmp_path: Path) -> None:
    cfg = iax(tmp_path, "[general]\ntrunkfreq = 5000\n")
    assert cfg.general.trunkfreq == 1000 and "5000" in cfg.warnings[0]


def test_requirecalltoken_in_general_warns(tmp_path: Path) -> None:
    cfg = iax(tmp_path, "[general]\nrequirecalltoken = no\n")
    assert len(cfg.warnings) == 1
    assert cfg.warnings[0].startswith(f"{tmp_path / 'iax.conf'}:2: requirecalltoken")


def test_unknown_options_warn_with_location(tmp_path: Path) -> None:
    cfg = iax(tmp_path, "[general]\nfrobnicate = 1\n[p]\ntype = peer\nhost = 1.2.3.4\n"
                        "wibble = 2\n")
    path = tmp_path / "iax.conf"
    assert cfg.warnings == [f"{path}:2: unknown option 'frobnicate' in [general]",
                            f"{path}:6: unknown option 'wibble' in [p]"]


# --- entries ---------------------------------------------------------------------------------

def test_entry_options(tmp_path: Path) -> None:
    cfg = iax(tmp_path, r"""
[general]
disallow = all
allow = ulaw

[dyn]
type = user
secret = one\;two
secret = three
auth = md5, plaintext,rsa
host = dynamic
context = a
context = b
qualify = 500
requirecalltoken = auto
allow = alaw
disallow = ulaw
callerid = "Office A" <200>

[named]
type = peer
host = pbx.example.com
port = 4570
permit = 192.168.0.0/16
deny = 192.168.5.0/255.255.255.0
qualify = no
requirecalltoken = no
trunk = no
""")
    d = cfg.entries["dyn"]
    assert d.type == "user" and d.is_user and not d.is_peer
    assert d.secrets == ["one", "two", "three"]
    assert d.auth == frozenset({"md5", "plaintext", "rsa"})
    assert d.dynamic and d.host is None
    assert (d.context, d.contexts) == ("a", ["a", "b"])
    assert d.qualify == 500 and d.requirecalltoken == "auto"
    assert d.codecs == ["alaw"]
    assert d.callerid == '"Office A" <200>'
    assert parse_callerid(d.callerid) == ("Office A", "200")
    n = cfg.entries["named"]
    assert (n.host, n.port, n.qualify, n.requirecalltoken, n.trunk) == ("pbx.example.com", 4570,
                                                                        None, "no", False)
    assert n.codecs == ["ulaw"]                       # inherited from [general]
    assert acl_allows(n.acl, "192.168.1.1") and not acl_allows(n.acl, "192.168.5.1")
    assert acl_allows(n.acl, "10.0.0.1")              # no rule matches: allowed
    assert cfg.warnings == []


def test_templates_and_inheritance(tmp_path: Path) -> None:
    cfg = iax(tmp_path, """
[trunk-base](!)
type = friend
auth = md5
trunk = yes
qualify = yes
deny = 0.0.0.0/0
context = from-iax

[secret-base](!)
secret = s3cret

[site-x](trunk-base,secret-base)
host = 192.0.2.10
permit = 192.0.2.10
qualify = 1000
""")
    assert list(cfg.entries) == ["site-x"]             # templates are not entries
    e = cfg.entries["site-x"]
    assert (e.type, e.trunk, e.qualify, e.secrets, e.context) == ("friend", True, 1000,
                                                                  ["s3cret"], "from-iax")
    assert e.acl == [AclRule(False, net("0.0.0.0/0")), AclRule(True, net("192.0.2.10/32"))]


def test_section_without_type_warns(tmp_path: Path) -> None:
    cfg = iax(tmp_path, "[lonely]\nhost = 1.2.3.4\n")
    assert cfg.entries == {} and "has no type" in cfg.warnings[0]


def test_acl_last_match_wins() -> None:
    rules = [AclRule(False, net("0.0.0.0/0")), AclRule(True, net("10.0.0.0/8")),
             AclRule(False, net("10.1.0.0/16"))]
    assert acl_allows([], "1.2.3.4")                   # no rules: allowed
    assert not acl_allows(rules, "1.2.3.4")
    assert acl_allows(rules, "10.2.0.1")
    assert not acl_allows(rules, "10.1.0.1")
    assert acl_allows(rules, "::ffff:10.2.0.1")        # IPv4-mapped compared as IPv4
    assert acl_allows(rules, "2001:db8::1")            # no IPv6 rule matches


# --- reader features -------------------------------------------------------------------------

def test_comments_and_escapes() -> None:
    assert strip_comment(r"secret = a\;b ; comment") == ("secret = a;b ", 0)
    assert strip_comment("a ;-- block") == ("a ", 1)
    assert strip_comment("still --; b = 1", 1) == (" b = 1", 0)


def test_block_comment_and_arrow(tmp_path: Path) -> None:
    conf = read_conf(write(tmp_path, "[s]\n;-- hidden = 1\nalso hidden --;\na => 1\nb = 2\n"
                                     "b=3\n", "x.conf"))
    items = conf.sections[0].items
    assert [(i.key, i.value, i.arrow, i.source.line) for i in items] == [
        ("a", "1", True, 4), ("b", "2", False, 5), ("b", "3", False, 6)]


def test_includes(tmp_path: Path) -> None:
    write(tmp_path, "[general]\nbindport = 4570\n#include \"peers/a.conf\"\n", "iax.conf")
    write(tmp_path, "[a]\ntype = peer\nhost = 192.0.2.1\n#include more.conf\n", "peers/a.conf")
    write(tmp_path, "[b]\ntype = peer\nhost = 192.0.2.2\n", "peers/more.conf")
    cfg = load_iax_conf(tmp_path / "iax.conf")
    assert cfg.general.bindport == 4570
    assert list(cfg.entries) == ["a", "b"]
    b = cfg.entries["b"]
    assert b.source is not None
    assert b.source.file.endswith("peers/more.conf") and b.source.line == 1


def test_tryinclude_missing_is_fine(tmp_path: Path) -> None:
    cfg = iax(tmp_path, "[general]\n#tryinclude nothere.conf\nbindport = 4570\n")
    assert cfg.general.bindport == 4570


# --- errors ----------------------------------------------------------------------------------

BAD = [
    ("[general]\nbindport = 70000\n", 2, "invalid port"),
    ("[general]\nbindaddr = nope\n", 2, "not an IP address"),
    ("[p]\ntype = peer\nport = x\n", 3, "invalid port"),
    ("[p]\ntype = peer\npermit = 10.0.0.0/255.0.255.0\n", 3, "non-contiguous mask"),
    ("[p]\ntype = peer\npermit = 10.0.0.0/33\n", 3, "invalid prefix"),
    ("[p]\ntype = peer\ndeny = 300.0.0.1\n", 3, "invalid address"),
    ("[p]\ntype = peer\ntrunk = maybe\n", 3, "expected yes or no"),
    ("[p]\ntype = phone\n", 2, "expected friend, peer or user"),
    ("[p]\ntype = peer\nqualify = often\n", 3, "qualify"),
    ("[p]\ntype = peer\nauth = md4\n", 3, "auth"),
    ("[p]\ntype = peer\nhost = bad_host!\n", 3, "not an IP address, hostname"),
    ("[p]\ntype = peer\nrequirecalltoken = sometimes\n", 3, "yes, no or auto"),
    ("[general]\ntrunkmtu = 100\n", 2, "trunkmtu"),
    ("[general]\ndelayreject = perhaps\n", 2, "expected yes or no"),
    ("[general]\nmaxcallnumbers = lots\n", 2, "whole number"),
    ("[general]\nregister => nohost\n", 2, "user[:secret]@host"),
    ("[general]\nregister => u@h:99999\n", 2, "invalid port"),
    ("bindport = 1\n", 1, "outside any [section]"),
    ("[general\n", 1, "missing ']'"),
    ("[general]\njust a line\n", 2, "expected 'name = value'"),
    ("[p](tmpl)\ntype = peer\n", 1, "not defined above"),
    ("[general]\n#exec /bin/true\n", 2, "#exec is not supported"),
    ("[general]\n#include missing.conf\n", 2, "no such file"),
    ("[general]\n#frob x\n", 2, "unknown directive"),
    ("[p]\ntype = peer\n[p]\ntype = peer\n", 3, "duplicate section"),
]


@pytest.mark.parametrize(("text", "line", "reason"), BAD)
def test_errors_have_file_and_line(tmp_path: Path, text: str, line: int, reason: str) -> None:
    with pytest.raises(ConfigError) as ei:
        iax(tmp_path, text)
    msg = str(ei.value)
    assert msg.startswith(f"{tmp_path / 'iax.conf'}:{line}: "), msg
    assert reason in msg
    assert isinstance(ei.value, ValueError)


def test_include_cycle(tmp_path: Path) -> None:
    write(tmp_path, "[general]\n#include b.conf\n", "a.conf")
    write(tmp_path, "#include a.conf\n", "b.conf")
    with pytest.raises(ConfigError, match=r"b\.conf:1: #include cycle: a\.conf -> b\.conf -> "
                                          r"a\.conf"):
        load_iax_conf(tmp_path / "a.conf")


def test_missing_top_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_iax_conf(tmp_path / "none.conf")


# --- phones.conf -----------------------------------------------------------------------------

def test_phones_conf(tmp_path: Path) -> None:
    p = write(tmp_path, """
[default]
answer_after = 2
media = silence

[300]
media = playback:hello

[301]
mode = noanswer

[302]
mode = busy
ring = no
hangup_after = 5
""", "phones.conf")
    cfg = load_phones_conf(p)
    assert cfg.default == PhoneBehaviour(answer_after=2.0, media="silence")
    assert cfg.get("300") == PhoneBehaviour(answer_after=2.0, media="playback:hello")
    assert cfg.get("301").mode == "noanswer"
    assert cfg.get("302") == PhoneBehaviour(mode="busy", answer_after=2.0, media="silence",
                                            ring=False, hangup_after=5.0)
    assert cfg.get("399") is cfg.default


@pytest.mark.parametrize(("text", "line", "reason"), [
    ("[300]\nmode = sleepy\n", 2, "mode"),
    ("[300]\nanswer_after = soon\n", 2, "seconds"),
    ("[300]\nmedia = music\n", 2, "media"),
    ("[300]\nmedia = playback:\n", 2, "media"),
    ("[300]\ncolour = red\n", 2, "unknown option 'colour' in [300]"),
    ("[300]\n[300]\n", 2, "duplicate phone"),
])
def test_phones_conf_errors(tmp_path: Path, text: str, line: int, reason: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_phones_conf(write(tmp_path, text, "phones.conf"))
    assert str(ei.value).startswith(f"{tmp_path / 'phones.conf'}:{line}: ")
    assert reason in str(ei.value)


def test_unterminated_block_comment_is_an_error(tmp_path: Path) -> None:
    """An open ';--' would silently drop the rest of the file, the ACL with it."""
    p = write(tmp_path, "[general]\nbindport = 4569\n;-- old notes\n[office-a]\ntype = friend\n"
                        "deny = 0.0.0.0/0\npermit = 127.0.0.10/32\n")
    with pytest.raises(ConfigError) as ei:
        read_conf(p)
    assert str(ei.value).startswith(f"{p}:3: ") and "never closed" in str(ei.value)
    ok = write(tmp_path, "[general]\n;-- a\n;-- nested --;\nstill --;\nbindport = 4569\n")
    assert [it.key for it in read_conf(ok).sections[0].items] == ["bindport"]


@pytest.mark.parametrize("target", ["/dev/zero", "big", "dir"])
def test_include_only_small_regular_files(tmp_path: Path, target: str) -> None:
    from iaxgw.gateway.conf.asterisk_conf import MAX_FILE_BYTES

    if target == "big":
        with open(tmp_path / "big", "wb") as fh:
            fh.truncate(MAX_FILE_BYTES + 1)
    elif target == "dir":
        (tmp_path / "dir").mkdir()
    p = write(tmp_path, f"[general]\n#include \"{target}\"\n")
    with pytest.raises(ConfigError) as ei:
        read_conf(p)
    assert str(ei.value).startswith(f"{p}:2: ")
    want = {"/dev/zero": "not a regular file", "big": "larger than 4 MiB",
            "dir": "directory"}[target]
    assert want in str(ei.value)


def test_non_utf8_secret_keeps_its_bytes(tmp_path: Path) -> None:
    """Asterisk hashes the secret's bytes as they are in the file."""
    import hashlib

    from iaxgw.gateway.iax2.calltoken import md5_result

    (tmp_path / "iax.conf").write_bytes(b"[office-a]\ntype = friend\nsecret = caf\xe9\xff\n"
                                        b"host = 127.0.0.10\n")
    cfg = load_iax_conf(tmp_path / "iax.conf")
    (secret,) = cfg.entries["office-a"].secrets
    assert secret.encode("utf-8", "surrogateescape") == b"caf\xe9\xff"
    assert md5_result("1234", secret) == hashlib.md5(b"1234caf\xe9\xff").hexdigest()


def test_errors_do_not_echo_secrets_or_included_lines(tmp_path: Path) -> None:
    (tmp_path / "shadow").write_text("root:$6$saltsalt$hashhashhash:19000:0:99999:7:::\n")
    p = write(tmp_path, "[general]\n#include \"shadow\"\n")
    with pytest.raises(ConfigError) as ei:
        read_conf(p)
    assert "hashhash" not in str(ei.value) and str(ei.value).startswith(f"{tmp_path}/shadow:1:")
    for value in ("office-b:topsecret", "office-b:topsecret@", "office-b:topsecret@[::1"):
        p = write(tmp_path, f"[general]\nregister => {value}\n")
        with pytest.raises(ConfigError) as ei:
            load_iax_conf(p)
        assert "topsecret" not in str(ei.value) and "office-b:***" in str(ei.value)
