"""What ``iaxgw check`` reports: one :class:`Finding` per problem."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

__all__ = ["Finding", "Severity"]

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: where, how bad, what the wire will show, how to fix it."""

    code: str
    severity: Severity
    where: str            # "file:line"
    message: str
    wire: str
    fix: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)
