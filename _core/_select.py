"""Pick the compiled or the pure-Python implementation of each ``_core`` module."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from types import ModuleType, SimpleNamespace

NO_EXTENSIONS = os.environ.get("IAXGW_NO_EXTENSIONS", "") not in ("", "0")
log = logging.getLogger("iaxgw.core")


def _compiled_available() -> bool:
    try:
        importlib.import_module("iaxgw._core._frames_c")
    except ImportError:
        return False
    return True


USING_EXTENSIONS = not NO_EXTENSIONS and _compiled_available()
if not NO_EXTENSIONS and not USING_EXTENSIONS:
    log.warning("iaxgw compiled core not built; using the pure-Python twins (slower)")


def load(name: str) -> ModuleType:
    """Return ``iaxgw._core._<name>_c`` or ``_<name>_py`` according to the selection."""
    suffix = "c" if USING_EXTENSIONS else "py"
    return importlib.import_module(f"iaxgw._core._{name}_{suffix}")


def both(name: str) -> list[ModuleType]:
    """Both implementations that can be imported here (for tests and benchmarks)."""
    mods = [importlib.import_module(f"iaxgw._core._{name}_py")]
    with contextlib.suppress(ImportError):
        mods.insert(0, importlib.import_module(f"iaxgw._core._{name}_c"))
    return mods


def flavours(*names: str) -> list[SimpleNamespace]:
    """For tests and benchmarks that drive several ``_core`` modules together: per
    implementation whose modules ``names`` all import here (compiled first), one namespace
    with their public names; its ``__name__`` ends in ``_c`` or ``_py``."""
    out = []
    for suffix in ("c", "py"):
        try:
            mods = [importlib.import_module(f"iaxgw._core._{name}_{suffix}") for name in names]
        except ImportError:
            continue                    # that implementation is not built here
        ns = SimpleNamespace(**{k: v for m in mods for k, v in vars(m).items()
                                if not k.startswith("_")})
        ns.__name__ = f"iaxgw._core._{'_'.join(names)}_{suffix}"
        out.append(ns)
    return out
