"""Files serve writes on its own behalf (spool, recordings, pcaps, the control socket's
directory): private directories that must be ours, files created without following links.

A spool in a shared place (``/tmp``) could be prepared by another local user: a planted
symbolic or hard link would have a root ``serve`` overwrite any file.  So a directory we write
into must be a real directory owned by us (or root) that nobody else can write to, and every
file is created afresh (``O_EXCL | O_NOFOLLOW``, mode 0600) and renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

__all__ = [
    "UnsafePathError",
    "create_private_file",
    "default_spool_dir",
    "private_dir",
    "private_subdir",
    "write_file_atomic",
    "write_private_file",
]


class UnsafePathError(OSError):
    """A path we were to write to is not safe (not ours, shared, a link)."""


def default_spool_dir() -> Path:
    """``/var/spool/iaxgw`` for root, else the user's XDG state directory's ``iaxgw/spool``."""
    if os.geteuid() == 0:
        return Path("/var/spool/iaxgw")
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if state and os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "iaxgw" / "spool"


def _check_dir(path: Path, st: os.stat_result) -> None:
    uid = os.geteuid()
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(f"{path}: not a directory (a link or a file)")
    if st.st_uid not in (uid, 0):
        raise UnsafePathError(f"{path}: owned by uid {st.st_uid}, not by us (uid {uid})")
    if st.st_mode & 0o022:
        raise UnsafePathError(f"{path}: writable by group or others "
                              f"(mode {stat.S_IMODE(st.st_mode):04o})")


def private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700, parents as needed) or check the existing one: a directory,
    not a link, owned by us or root, not writable by group or others."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.mkdir(path, 0o700)
    _check_dir(path, os.lstat(path))
    return path


def private_subdir(base: Path, *parts: str) -> Path:
    """``base/parts...``, each component made (0700) or checked like :func:`private_dir`;
    ``base`` itself is checked first."""
    path = private_dir(base)
    for part in parts:
        if not part or part in (".", "..") or "/" in part:
            raise UnsafePathError(f"{path}: bad path component {part!r}")
        path = path / part
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        _check_dir(path, os.lstat(path))
    return path


def create_private_file(path: Path) -> int:
    """A new file at ``path`` for writing (mode 0600), never through a link: an existing
    regular file of ours with one link is replaced; anything else there is refused."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o600)
    except FileExistsError:
        st = os.lstat(path)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid()
                or st.st_nlink != 1):
            raise UnsafePathError(f"{path}: exists and is not a plain file of ours "
                                  "(a link, or another user's); not overwritten") from None
        os.unlink(path)
        return os.open(path, flags, 0o600)


def write_private_file(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to a fresh temporary file (0600) beside ``path`` and rename it into
    place (a link planted at ``path`` is replaced, never followed).  ``exclusive``: fail with
    FileExistsError when ``path`` exists instead of replacing it."""
    _write_replacing(path, data, None, exclusive, sync=False)


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def write_file_atomic(path: Path, data: bytes, mode: int = 0o666) -> None:
    """Replace ``path`` with ``data`` all at once: written to a temporary file beside it,
    flushed to disk and renamed over it, so a reader (or an interrupted writer) sees the old
    file or the whole new one, never a part.  ``mode`` is masked by the umask, as for an
    ordinary open."""
    _write_replacing(path, data, mode & ~_umask() & 0o777, False, sync=True)


def _write_replacing(path: Path, data: bytes, mode: int | None, exclusive: bool, *,
                     sync: bool) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            fh.write(data)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
