"""The C-accelerated wire core of iaxgw: IAX2 frames, IEs, trunk frames and G.711.

Each module ``X`` is a dispatcher over a compiled ``_X_c`` (Cython) and a pure-Python ``_X_py``
twin with the same API.  ``IAXGW_NO_EXTENSIONS=1`` in the environment selects the twins at import.
"""

from iaxgw._core._select import USING_EXTENSIONS
from iaxgw._core.errors import FrameError

__all__ = ["USING_EXTENSIONS", "FrameError"]
