"""The control socket: request/response over a Unix socket, and ``iaxgw show`` against it."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from iaxgw.gateway.cli import main
from iaxgw.gateway.serve.control import (
    ControlError,
    ControlServer,
    default_control_path,
    peer_uid,
    query,
)

PEERS = [{"name": "office-a", "username": "office-b", "host": "127.0.0.10", "port": 4569,
          "trunk": True, "maxms": 2000, "lastms": 3}]


def _handler(cmd: str, request: Mapping[str, Any]) -> Any:
    if cmd == "peers":
        return PEERS
    if cmd == "stats":
        return {"retransmissions": 0}
    if cmd == "boom":
        raise RuntimeError("kaput")
    raise KeyError(cmd)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A ControlServer on its own loop in a thread (the CLI side is blocking)."""
    path = str(tmp_path / "ctl.sock")
    loop = asyncio.new_event_loop()
    srv = ControlServer(path, _handler)
    loop.run_until_complete(srv.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        asyncio.run_coroutine_threadsafe(srv.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    assert not os.path.exists(path)


def test_query_roundtrip(server: str) -> None:
    assert query(server, "ping") == "pong"
    assert query(server, "peers") == PEERS
    with pytest.raises(ControlError, match="unknown command 'nope'"):
        query(server, "nope")
    with pytest.raises(ControlError, match="RuntimeError: kaput"):
        query(server, "boom")


def test_bad_request_lines(server: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(server)
        s.sendall(b"not json\n[1]\n" + json.dumps({"cmd": "ping"}).encode() + b"\n")
        buf = b""
        while buf.count(b"\n") < 3:
            chunk = s.recv(4096)
            assert chunk
            buf += chunk
    replies = [json.loads(line) for line in buf.splitlines()]
    assert replies[0] == {"ok": False, "error": "request is not JSON"}
    assert replies[1]["ok"] is False
    assert replies[2] == {"ok": True, "data": "pong"}


def test_second_server_refused_and_stale_socket_replaced(server: str, tmp_path: Path) -> None:
    async def second() -> None:
        with pytest.raises(ControlError, match="already listening"):
            await ControlServer(server, _handler).start()
    asyncio.run(second())
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()  # socket file left behind, nobody listening

    async def replace() -> None:
        srv = ControlServer(str(stale), _handler)
        await srv.start()
        await srv.close()
    asyncio.run(replace())


def test_show_cli_against_server(server: str) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["show", "peers", "--control", server])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0].startswith("Name/Username")
    assert "OK (3 ms)" in res.output
    res = runner.invoke(main, ["show", "peers", "--json", "--control", server])
    assert res.exit_code == 0
    assert json.loads(res.output) == PEERS


def test_show_without_server(tmp_path: Path) -> None:
    path = str(tmp_path / "none.sock")
    res = CliRunner().invoke(main, ["show", "channels", "--control", path])
    assert res.exit_code == 1
    assert f"no iaxgw serve at {path}" in res.output
    assert "Traceback" not in res.output


def test_show_bad_what() -> None:
    res = CliRunner().invoke(main, ["show", "bogus"])
    assert res.exit_code == 2


def test_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Always in a directory of our own, never in /tmp."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_control_path() == "/run/iaxgw/iaxgw.sock"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_control_path() == str(tmp_path / "iaxgw" / "iaxgw.sock")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_control_path() == str(tmp_path / "state" / "iaxgw" / "iaxgw.sock")


def test_server_makes_a_private_directory_and_refuses_a_shared_one(tmp_path: Path) -> None:
    async def start(path: Path) -> None:
        srv = ControlServer(str(path), _handler)
        await srv.start()
        try:
            assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
            assert stat.S_IMODE(os.lstat(path).st_mode) & 0o077 == 0
        finally:
            await srv.close()

    asyncio.run(start(tmp_path / "run" / "iaxgw" / "iaxgw.sock"))
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)              # like /tmp
    with pytest.raises(ControlError, match="writable by group or others"):
        asyncio.run(start(shared / "iaxgw.sock"))
    assert not (shared / "iaxgw.sock").exists()


def test_peer_uid_is_the_servers() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert peer_uid(a) == os.geteuid()


@pytest.mark.skipif(os.geteuid() != 0, reason="a server of another uid needs root")
def test_client_refuses_a_server_of_another_user(tmp_path: Path) -> None:
    """A socket another local user listens on (a squatted path) is not trusted: no forged
    rows reach ``show``."""
    path = tmp_path / "squat.sock"
    code = (
        "import os, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        f"s.bind({str(path)!r}); os.chmod({str(path)!r}, 0o777)\n"
        "os.setgid(12345); os.setuid(12345); s.listen(1)\n"
        "print('ready', flush=True)\n"
        "c, _ = s.accept(); c.recv(1000)\n"
        "c.sendall(b'{\"ok\": true, \"data\": [{\"name\": \"forged\"}]}\\n')\n")
    os.chmod(tmp_path, 0o755)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        with pytest.raises(ControlError, match="uid 12345"):
            query(str(path), "peers", timeout=2.0)
        res = CliRunner().invoke(main, ["show", "peers", "--control", str(path)])
        assert res.exit_code != 0 and "forged" not in res.output
    finally:
        proc.kill()
        proc.wait(5)
