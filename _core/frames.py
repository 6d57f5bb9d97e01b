"""IAX2 frame codec: full, mini and video mini frames (compiled or pure-Python twin).

See ``_frames_c.pyi`` for the API.  ``IAXGW_NO_EXTENSIONS=1`` selects the pure-Python twin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from iaxgw._core._select import load
from iaxgw._core.constants import DatagramKind

__all__ = [
    "DatagramKind",
    "FullFrame",
    "build_full",
    "build_mini",
    "build_video_mini",
    "classify",
    "compress_subclass",
    "parse_full",
    "parse_mini",
    "parse_video_mini",
    "uncompress_subclass",
]

if TYPE_CHECKING:
    from iaxgw._core._frames_c import (
        FullFrame,
        build_full,
        build_mini,
        build_video_mini,
        classify,
        compress_subclass,
        parse_full,
        parse_mini,
        parse_video_mini,
        uncompress_subclass,
    )
else:
    _impl = load("frames")
    FullFrame = _impl.FullFrame
    build_full = _impl.build_full
    build_mini = _impl.build_mini
    build_video_mini = _impl.build_video_mini
    classify = _impl.classify
    compress_subclass = _impl.compress_subclass
    parse_full = _impl.parse_full
    parse_mini = _impl.parse_mini
    parse_video_mini = _impl.parse_video_mini
    uncompress_subclass = _impl.uncompress_subclass
