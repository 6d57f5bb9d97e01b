"""Loader for the binary test vectors in ``tests/vectors/*.bin``."""

from __future__ import annotations

import pathlib

VECTOR_DIR = pathlib.Path(__file__).parent / "vectors"


def load(name: str) -> bytes:
    """The bytes of ``tests/vectors/<name>.bin``."""
    return (VECTOR_DIR / f"{name}.bin").read_bytes()


def names(prefix: str = "") -> list[str]:
    """Sorted vector names (without ``.bin``) starting with ``prefix``."""
    return sorted(p.stem for p in VECTOR_DIR.glob(f"{prefix}*.bin"))


def all_vectors(prefix: str = "") -> dict[str, bytes]:
    return {n: load(n) for n in names(prefix)}
