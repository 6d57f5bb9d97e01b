"""IAX2 information elements (compiled or pure-Python twin) and the ``IEs`` convenience wrapper.

See ``_ies_c.pyi`` for ``parse_ies``/``build_ies``.  ``IAXGW_NO_EXTENSIONS=1`` selects the twin.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, overload

from iaxgw._core._select import load
from iaxgw._core.constants import IE

__all__ = [
    "IEs",
    "build_ies",
    "capability_from",
    "decode_datetime",
    "encode_datetime",
    "format_from",
    "parse_ies",
]

if TYPE_CHECKING:
    from iaxgw._core._ies_c import build_ies, decode_datetime, encode_datetime, parse_ies
else:
    _impl = load("ies")
    build_ies = _impl.build_ies
    decode_datetime = _impl.decode_datetime
    encode_datetime = _impl.encode_datetime
    parse_ies = _impl.parse_ies

_T = TypeVar("_T")


class IEs:
    """A parsed IE list: wire order kept, repeated IEs kept, lookups by id."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[int, object]] = ()) -> None:
        self._items: list[tuple[int, object]] = list(items)

    @classmethod
    def parse(cls, payload: bytes | bytearray | memoryview) -> IEs:
        """Parse an IAX frame payload (raises FrameError on malformed input)."""
        return cls(parse_ies(payload))

    @overload
    def get(self, ie: int) -> object | None: ...

    @overload
    def get(self, ie: int, default: _T) -> object | _T: ...

    def get(self, ie: int, default: object = None) -> object:
        """The value of the first occurrence of ``ie``, else ``default``."""
        for k, v in self._items:
            if k == ie:
                return v
        return default

    def get_str(self, ie: int) -> str | None:
        """The string value of the first ``ie`` (None: absent or not a string)."""
        v = self.get(ie)
        return v if isinstance(v, str) else None

    def get_int(self, ie: int) -> int | None:
        """The integer value of the first ``ie`` (None: absent, a flag or not a number)."""
        v = self.get(ie)
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    def get_all(self, ie: int) -> list[object]:
        """Values of every occurrence of ``ie`` in wire order."""
        return [v for k, v in self._items if k == ie]

    def __contains__(self, ie: object) -> bool:
        return any(k == ie for k, _ in self._items)

    def __iter__(self) -> Iterator[tuple[int, object]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IEs):
            return self._items == other._items
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    @property
    def items(self) -> list[tuple[int, object]]:
        """The underlying ``(id, value)`` list (mutable)."""
        return self._items

    def to_bytes(self) -> bytes:
        """Encode back to wire form."""
        return build_ies(self._items)

    def __repr__(self) -> str:
        parts = []
        for k, v in self._items:
            try:
                name = IE(k).name
            except ValueError:
                name = str(k)
            parts.append(f"{name}={v!r}")
        return f"IEs({', '.join(parts)})"


def _pick(ies: IEs | Iterable[tuple[int, Any]], wide: int, narrow: int) -> int | None:
    seq = ies.items if isinstance(ies, IEs) else list(ies)
    for k, v in seq:
        if k == wide and isinstance(v, int):
            return v
    for k, v in seq:
        if k == narrow and isinstance(v, int):
            return v
    return None


def format_from(ies: IEs | Iterable[tuple[int, Any]]) -> int | None:
    """The call format: FORMAT2 (version 0) if present, else FORMAT, else None."""
    return _pick(ies, IE.FORMAT2, IE.FORMAT)


def capability_from(ies: IEs | Iterable[tuple[int, Any]]) -> int | None:
    """The capability mask: CAPABILITY2 (version 0) if present, else CAPABILITY, else None."""
    return _pick(ies, IE.CAPABILITY2, IE.CAPABILITY)
