"""``iaxgw serve`` command line: help, bad arguments (exit 2), broken configs (exit 1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from iaxgw.gateway.cli import main
from iaxgw.gateway.iax2.address import parse_hostport

IAX_OK = """\
[general]
bindaddr = 127.0.0.20
bindport = 4569
disallow = all
allow = ulaw

[office-a]
type = friend
username = office-b
secret = s3cret
host = 127.0.0.10
qualify = yes
trunk = yes
context = from-iax

[phone-user]
type = user
context = from-iax
"""
EXT_OK = """\
[from-iax]
exten => 300,1,Answer()
 same => n,Echo()
"""


def _conf(tmp_path: Path, iax: str = IAX_OK, ext: str = EXT_OK) -> Path:
    d = tmp_path / "conf"
    d.mkdir(exist_ok=True)
    (d / "iax.conf").write_text(iax)
    (d / "extensions.conf").write_text(ext)
    return d


def _serve(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["serve", *args])
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.output


def test_help_lists_options() -> None:
    code, out = _serve("--help")
    assert code == 0
    for opt in ("--peer", "--config", "--bind", "--peer-host", "--pcap", "--metrics-port",
                "--debug-frames", "--control", "--phones", "--spool"):
        assert opt in out
    res = CliRunner().invoke(main, ["show", "--help"])
    assert res.exit_code == 0 and "peers" in res.output and "--json" in res.output


def test_peer_is_required() -> None:
    code, out = _serve()
    assert code == 2 and "--peer" in out


def test_unknown_peer_lists_entries(tmp_path: Path) -> None:
    code, out = _serve("--peer", "office-z", "--config", str(_conf(tmp_path)))
    assert code == 2
    assert "'office-z' is not in" in out and "peer/friend entries: office-a" in out


def test_user_only_entry_is_not_a_peer(tmp_path: Path) -> None:
    code, out = _serve("--peer", "phone-user", "--config", str(_conf(tmp_path)))
    assert code == 2 and "user-only" in out


@pytest.mark.parametrize("opt,value,msg", [
    ("--bind", "127.0.0.20:0", "port must be 1..65535"),
    ("--bind", "127.0.0.20:http", "port must be 1..65535"),
    ("--peer-host", "[::1", "missing ']'"),
    ("--peer-host", "no-such-host.invalid", "cannot resolve"),
    ("--metrics-port", "70000", "70000"),
    ("--metrics-addr", "127.0.0.1", "give HOST:PORT"),
    ("--metrics-addr", "::1:9100", "give HOST:PORT"),
    ("--metrics-addr", "127.0.0.1:99999", "give HOST:PORT"),
    ("--metrics-addr", "[::1:9100", "missing ']'"),
])
def test_bad_option_values(tmp_path: Path, opt: str, value: str, msg: str) -> None:
    code, out = _serve("--peer", "office-a", "--config", str(_conf(tmp_path)), opt, value)
    assert code == 2
    assert msg in out


def test_show_peer_needs_a_name_and_only_it() -> None:
    r = CliRunner().invoke(main, ["show", "peer", "--control", "/nonexistent/x.sock"])
    assert r.exit_code == 2 and "NAME" in r.output
    r = CliRunner().invoke(main, ["show", "users", "office-a", "--control", "/nonexistent/x"])
    assert r.exit_code == 2 and "NAME" in r.output


def test_metrics_port_and_addr_together_is_usage_error(tmp_path: Path) -> None:
    code, out = _serve("--peer", "office-a", "--config", str(_conf(tmp_path)),
                       "--metrics-port", "0", "--metrics-addr", "127.0.0.1:0")
    assert code == 2 and "not both" in out


def test_metrics_addr_parsed() -> None:
    from iaxgw.gateway.serve.serve_cli import metrics_addr_cb, pick_metrics_addr

    assert metrics_addr_cb(None, None, "127.0.0.1:0") == ("127.0.0.1", 0)
    assert metrics_addr_cb(None, None, "[::1]:9100") == ("::1", 9100)
    assert pick_metrics_addr(9100, None) == ("127.0.0.1", 9100)
    assert pick_metrics_addr(None, None) is None


def test_missing_config_dir_and_files(tmp_path: Path) -> None:
    code, out = _serve("--peer", "office-a", "--config", str(tmp_path / "nope"))
    assert code == 1 and "no such directory" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out = _serve("--peer", "office-a", "--config", str(empty))
    assert code == 1 and "iax.conf: no such file" in out


def test_bad_iax_conf_value_reports_file_line(tmp_path: Path) -> None:
    d = _conf(tmp_path, IAX_OK.replace("qualify = yes", "qualify = maybe"))
    code, out = _serve("--peer", "office-a", "--config", str(d))
    assert code == 1
    line = IAX_OK.splitlines().index("qualify = yes") + 1
    assert f"{d / 'iax.conf'}:{line}:" in out and "qualify" in out


def test_bad_extensions_conf_reports_file(tmp_path: Path) -> None:
    d = _conf(tmp_path, ext="[from-iax]\nexten => 300,1,Answer(\n")
    code, out = _serve("--peer", "office-a", "--config", str(d))
    assert code == 1
    assert f"{d / 'extensions.conf'}:" in out


def test_missing_phones_file(tmp_path: Path) -> None:
    code, out = _serve("--peer", "office-a", "--config", str(_conf(tmp_path)),
                       "--phones", str(tmp_path / "phones.conf"))
    assert code == 1 and "phones.conf: no such file" in out


def test_unknown_option_warns_but_loads(tmp_path: Path) -> None:
    """Unknown iax.conf options only warn: the run gets as far as binding the socket."""
    d = _conf(tmp_path, IAX_OK.replace("trunk = yes", "trunk = yes\nfrobnicate = 1"))
    # bind to an address we cannot have, so the server stops right after loading the config
    proc = subprocess.run(
        [sys.executable, "-m", "iaxgw.gateway.cli", "serve", "--peer", "office-a", "--config",
         str(d), "--bind", "192.0.2.1:4569", "--control", str(tmp_path / "c.sock")],
        capture_output=True, text=True, timeout=30)
    assert "unknown option 'frobnicate'" in proc.stderr
    assert proc.returncode == 1, proc.stderr
    assert "cannot bind 192.0.2.1:4569" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_address_in_use_says_what_to_do(tmp_path: Path) -> None:
    """serve on a taken address names the likely holder and the ways out (exit 1)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "iaxgw.gateway.cli", "serve", "--peer", "office-a",
             "--config", str(_conf(tmp_path)), "--bind", f"127.0.0.1:{port}",
             "--control", str(tmp_path / "c.sock")],
            capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert f"cannot bind 127.0.0.1:{port}" in proc.stderr and "in use" in proc.stderr
    assert "--bind ADDR[:PORT]" in proc.stderr
    assert "iaxgw loadtest --site office-a" in proc.stderr


def test_parse_hostport() -> None:
    assert parse_hostport("127.0.0.10") == ("127.0.0.10", 4569)
    assert parse_hostport("127.0.0.10:4570") == ("127.0.0.10", 4570)
    assert parse_hostport("[::1]:5000") == ("::1", 5000)
    assert parse_hostport("localhost:1")[1] == 1
    with pytest.raises(ValueError):
        parse_hostport("")
