"""The one exception type every ``_core`` parser and builder raises on bad input."""

from __future__ import annotations


class FrameError(ValueError):
    """A datagram, frame, IE or audio buffer is malformed.

    ``offset`` is the byte offset in the input where the problem was found (-1 when the
    problem is not tied to a position, e.g. an out-of-range value given to a builder).
    The message names what is wrong and the offset.
    """

    def __init__(self, message: str, offset: int = -1) -> None:
        self.offset = offset
        self.reason = message
        super().__init__(f"{message} (at offset {offset})" if offset >= 0 else message)
