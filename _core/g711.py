"""G.711 µ-law / A-law encode, decode and transcode (bit-exact with CPython ``audioop``).

Dispatches to the compiled ``_g711_c`` or the numpy twin ``_g711_py`` (``IAXGW_NO_EXTENSIONS``).
See ``_g711_c.pyi`` for input types, the ``out=`` argument and errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from iaxgw._core._select import load

_impl = load("g711")

if TYPE_CHECKING:
    from iaxgw._core._g711_c import (
        alaw_decode,
        alaw_encode,
        alaw_to_ulaw,
        ulaw_decode,
        ulaw_encode,
        ulaw_to_alaw,
    )
else:
    ulaw_encode = _impl.ulaw_encode
    alaw_encode = _impl.alaw_encode
    ulaw_decode = _impl.ulaw_decode
    alaw_decode = _impl.alaw_decode
    ulaw_to_alaw = _impl.ulaw_to_alaw
    alaw_to_ulaw = _impl.alaw_to_ulaw

__all__ = [
    "alaw_decode",
    "alaw_encode",
    "alaw_to_ulaw",
    "ulaw_decode",
    "ulaw_encode",
    "ulaw_to_alaw",
]
