"""The control socket of a running ``iaxgw serve``: JSON lines over a Unix stream socket.

Request: one line ``{"cmd": "peers"}`` (``peers``, ``channels``, ``netstats``, ``stats``,
``ping``; and what ``iaxgw ctl`` sends: ``rate`` with ``"rate": N``, ``pause``, ``resume``,
``stop``, ``originate``).  Response: one line ``{"ok": true, "data": ...}`` or
``{"ok": false, "error": "..."}``.  A connection may carry any number of requests; the server
answers them in order.  ``iaxgw serve`` and ``iaxgw loadtest --control PATH`` both listen; each
refuses the commands that do not apply to it (:class:`CommandRefused`) with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from iaxgw.gateway.safefs import default_spool_dir, private_dir

log = logging.getLogger("iaxgw.control")

Handler = Callable[[str, Mapping[str, Any]], Any | Awaitable[Any]]
MAX_LINE = 64 * 1024


class ControlError(Exception):
    """The control socket could not be reached or returned an error."""


class CommandRefused(Exception):
    """A handler's answer to a command that does not apply to it, or bad arguments: the
    message goes back to the client as the error (no traceback in the log)."""


def default_control_path() -> str:
    """``/run/iaxgw/iaxgw.sock`` for root, else ``$XDG_RUNTIME_DIR/iaxgw/iaxgw.sock``, else
    the XDG state directory's ``iaxgw/iaxgw.sock``: always in a directory of our own (made
    0700), never in a shared one such as ``/tmp`` where another user could take the name."""
    if os.geteuid() == 0:
        return "/run/iaxgw/iaxgw.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        return os.path.join(runtime, "iaxgw", "iaxgw.sock")
    return str(default_spool_dir().parent / "iaxgw.sock")


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, enums, tuples, sets and bytes to plain JSON values (recursively)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.name if not isinstance(obj, int) else int(obj)
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).hex()
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    return str(obj)


def _socket_in_use(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(path)
        except OSError:
            return False
    return True


class ControlServer:
    """Serve ``handler(cmd, request)`` on a Unix socket until :meth:`close`."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        p = Path(self.path)
        if p.exists() or p.is_symlink():
            if not stat.S_ISSOCK(p.lstat().st_mode):
                raise ControlError(f"{self.path} exists and is not a socket")
            if _socket_in_use(self.path):
                raise ControlError(f"another iaxgw serve (or loadtest --control) is already "
                                   f"listening at {self.path}")
            p.unlink()  # stale socket from a server that died
        try:
            private_dir(p.parent)
        except OSError as exc:
            raise ControlError(f"control socket directory {exc.strerror or exc}") from None
        old_umask = os.umask(0o077)       # the socket is made 0600 from the start
        try:
            self._server = await asyncio.start_unix_server(self._client, path=self.path,
                                                           limit=MAX_LINE)
        except OSError as exc:
            raise ControlError(f"cannot listen at {self.path}: {exc.strerror or exc}") from exc
        finally:
            os.umask(old_umask)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(b'{"ok": false, "error": "request line too long"}\n')
                    break
                if not line:
                    break
                reply = await self._answer(line)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass        # close() ends the connection: not an error of the client's
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "request is not JSON"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": 'request must be an object with a "cmd" string'}
        cmd = request["cmd"]
        if cmd == "ping":
            return {"ok": True, "data": "pong"}
        try:
            result = self._handler(cmd, request)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
        except KeyError:
            return {"ok": False, "error": f"unknown command {cmd!r}"}
        except CommandRefused as exc:
            log.info("control command %r refused: %s", cmd, exc)
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bad request must never take the server down
            log.exception("control command %r failed", cmd)
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return {"ok": True, "data": to_jsonable(result)}


def query(path: str, cmd: str, timeout: float = 5.0, **args: Any) -> Any:
    """Send one request to the server at ``path`` and return its ``data`` (blocking)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            raise ControlError(f"no iaxgw serve at {path} (nor a load test started with "
                               "--control there)") from None
        except OSError as exc:
            raise ControlError(f"no iaxgw serve at {path} ({exc.strerror or exc})") from None
        uid = peer_uid(s)
        if uid not in (os.geteuid(), 0):
            raise ControlError(f"the server at {path} runs as uid {uid}, not as us or root: "
                               "not trusted (another user's socket?)")
        try:
            s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            buf = bytearray()
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except TimeoutError:
            raise ControlError(f"iaxgw serve at {path} did not answer within {timeout:g} s") \
                from None
        except OSError as exc:
            raise ControlError(f"lost the connection to {path}: {exc}") from None
    try:
        reply = json.loads(buf)
    except ValueError:
        raise ControlError(f"iaxgw serve at {path} sent a bad reply") from None
    if not isinstance(reply, dict):
        raise ControlError(f"iaxgw serve at {path} sent a bad reply")
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "request failed")))
    return reply.get("data")
