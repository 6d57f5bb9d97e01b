"""One address syntax for every option: ``HOST``, ``HOST:PORT``, ``[V6]``, ``[V6]:PORT``."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from iaxgw.gateway.cli import main
from iaxgw.gateway.iax2.address import AddressError, format_addr, parse_hostport, split_hostport
from iaxgw.sim.load.loadtest_plan import parse_bind_list


@pytest.mark.parametrize(("text", "default", "want"), [
    ("127.0.0.10", 4569, ("127.0.0.10", 4569)),
    (" 127.0.0.10:4570 ", 4569, ("127.0.0.10", 4570)),
    ("[::1]", 4569, ("::1", 4569)),
    ("[::1]:5000", 4569, ("::1", 5000)),
    ("my-host:65535", 4569, ("my-host", 65535)),
    ("0.0.0.0", 0, ("0.0.0.0", 0)),          # a default of 0 (any port) for a bind address
])
def test_split_keeps_the_host_as_written(text: str, default: int,
                                         want: tuple[str, int]) -> None:
    assert split_hostport(text, default) == want


@pytest.mark.parametrize(("text", "why"), [
    ("", "empty address"),
    ("   ", "empty address"),
    ("[::1", "missing ']'"),
    ("[::1]5000", "expected ':PORT' after ']'"),
    ("::1", "IPv6 address goes in brackets"),
    ("fe80::1:4569", "IPv6 address goes in brackets"),
    ("[127.0.0.1]:4569", "only an IPv6 address goes in brackets"),
    ("[]:4569", "empty host"),
    (":4569", "empty host"),
    ("127.0.0.1:", "port must be 1..65535"),
    ("127.0.0.1:0", "port must be 1..65535"),
    ("127.0.0.1:65536", "port must be 1..65535"),
    ("127.0.0.1:http", "port must be 1..65535"),
    ("127.0.0.1:-1", "port must be 1..65535"),
    ("[::1]:", "port must be 1..65535"),
])
def test_split_refuses_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(AddressError, match=re.escape(why)) as info:
        split_hostport(text)
    assert isinstance(info.value, ValueError)
    if text.strip():
        assert repr(text.strip()) in str(info.value)      # the message names the text


def test_parse_gives_a_numeric_address() -> None:
    assert parse_hostport("[0:0::1]:4570") == ("::1", 4570)
    assert parse_hostport("127.0.0.10") == ("127.0.0.10", 4569)
    assert parse_hostport("localhost:4571") == ("127.0.0.1", 4571)
    with pytest.raises(AddressError, match=re.escape("cannot resolve host 'no-such-host.invalid'")):
        parse_hostport("no-such-host.invalid:4569")
    with pytest.raises(AddressError, match="is not an IPv6 address"):
        parse_hostport("[zz::1]")


@pytest.mark.parametrize(("addr", "text"), [
    (("127.0.0.10", 4569), "127.0.0.10:4569"),
    (("::1", 4570), "[::1]:4570"),
    (("fe80::1", 1), "[fe80::1]:1"),
])
def test_format_is_what_split_reads_back(addr: tuple[str, int], text: str) -> None:
    assert format_addr(addr) == text
    assert split_hostport(text) == addr


def test_loadtest_bind_keeps_names_and_refuses_a_bare_ipv6() -> None:
    assert parse_bind_list("my-host:4570,[::1]:4571") == [("my-host", 4570), ("::1", 4571)]
    with pytest.raises(AddressError, match="in brackets"):
        parse_bind_list("::1")


def test_loadtest_address_options_are_usage_errors() -> None:
    for option, text in (("--peer-host", "::1"), ("--bind", "127.0.0.1:99999")):
        r = CliRunner().invoke(main, ["loadtest", "--site", "office-b", option, text])
        assert r.exit_code == 2, r.output
        assert repr(text) in r.output and "Invalid value" in r.output


def test_probe_target_and_bind_are_parsed_before_the_probe(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import iaxgw.gateway.doctor.probe as probe_mod

    seen: dict[str, object] = {}

    def fake_run_probe(target: tuple[str, int], peer: str, **kw: object) -> probe_mod.ProbeReport:
        seen.update(target=target, peer=peer, bind=kw["bind"])
        return probe_mod.ProbeReport(target="x", peer=peer)

    monkeypatch.setattr(probe_mod, "run_probe", fake_run_probe)
    r = CliRunner().invoke(main, ["probe", "localhost:4570", "--peer", "office-a",
                                  "--bind", "127.0.0.2", "--json"])
    assert seen == {"target": ("127.0.0.1", 4570), "peer": "office-a",
                    "bind": ("127.0.0.2", 0)}, r.output
    r = CliRunner().invoke(main, ["probe", "127.0.0.1:http", "--peer", "office-a"])
    assert r.exit_code == 2 and "port must be 1..65535" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
