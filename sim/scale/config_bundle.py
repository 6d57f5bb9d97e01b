"""The master's ``--config`` as its cluster workers get it: iax.conf and every file it
``#include``s, by their paths inside the folder (sim/scale/cluster.py sends it with each shard's
options).  Kept apart from the cluster module so it can be used and tested without importing
Locust, which patches the standard library for gevent."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from iaxgw.sim.load.loadtest_plan import PlanError

__all__ = ["BUNDLE_MAX_BYTES", "BUNDLE_MAX_FILES", "config_bundle", "unpack_config_bundle"]

#: Most files and bytes of a config the master sends its workers (iax.conf and its #includes).
BUNDLE_MAX_FILES = 64
BUNDLE_MAX_BYTES = 4 * 1024 * 1024


def config_bundle(config_dir: Path | None) -> dict[str, str] | None:
    """``--config``'s iax.conf and every file it ``#include``s, as the workers need them:
    path relative to the directory -> the file's bytes in base64.  None without ``--config``
    (the workers use the embedded seed too).  An include outside the directory cannot be
    sent: a usage error that names it."""
    if config_dir is None:
        return None
    from iaxgw.gateway.conf.asterisk_conf import ConfigError, read_conf

    root = Path(config_dir).resolve()
    try:
        files = read_conf(root / "iax.conf").files
    except (OSError, ConfigError) as exc:
        raise PlanError(f"--config {config_dir}: {exc}") from None
    out: dict[str, str] = {}
    for name in files:
        path = Path(name).resolve()
        if not path.is_relative_to(root):
            raise PlanError(f"--config {config_dir}: {name} (an #include) is outside the "
                            "directory, so the workers cannot be sent it")
        try:
            out[path.relative_to(root).as_posix()] = base64.b64encode(
                path.read_bytes()).decode("ascii")
        except OSError as exc:
            raise PlanError(f"--config {config_dir}: {exc}") from None
    return out


def unpack_config_bundle(files: Any, into: Path) -> Path:
    """Write a :func:`config_bundle` under ``into`` (a new private directory) and return it.
    Refused (ValueError): anything but relative paths inside it, more than
    :data:`BUNDLE_MAX_FILES` files or :data:`BUNDLE_MAX_BYTES` bytes, no iax.conf."""
    from iaxgw.gateway.safefs import write_private_file

    if not isinstance(files, dict) or "iax.conf" not in files:
        raise ValueError("the config sent has no iax.conf")
    if len(files) > BUNDLE_MAX_FILES:
        raise ValueError(f"the config sent has {len(files)} files (at most {BUNDLE_MAX_FILES})")
    decoded: dict[Path, bytes] = {}
    for rel, b64 in files.items():
        parts = Path(str(rel)).parts
        if not parts or Path(str(rel)).is_absolute() or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"the config sent names a file outside it: {rel!r}")
        decoded[Path(*parts)] = base64.b64decode(str(b64), validate=True)
    if sum(len(b) for b in decoded.values()) > BUNDLE_MAX_BYTES:
        raise ValueError(f"the config sent is over {BUNDLE_MAX_BYTES} bytes")
    into.mkdir(mode=0o700, parents=True, exist_ok=False)
    for rel, data in decoded.items():
        (into / rel).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private_file(into / rel, data)
    return into
