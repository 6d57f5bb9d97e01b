"""One fuzz target under atheris: ``python3 fuzz/fuzz_one.py TARGET [libFuzzer args]``.

Normally started by ``fuzz/run.py``.  The iaxgw Python modules (the pure-Python twins and the
gateway) are instrumented for coverage; the compiled modules are exercised on every input and
cross-checked against the twins, and under ``fuzz/run.sh`` they are the AddressSanitizer build.
"""

from __future__ import annotations

import importlib
import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

#: Imported inside the instrumentation block so that their bytecode reports coverage.
INSTRUMENTED = [
    "iaxgw._core._frames_py", "iaxgw._core._ies_py", "iaxgw._core._trunk_py",
    "iaxgw._core._probe_py", "iaxgw._core._media_py", "iaxgw._core._g711_py",
    "iaxgw.gateway.iax2.calls", "iaxgw.gateway.iax2.calltoken",
    "iaxgw.gateway.conf.config", "iaxgw.gateway.iax2.admission", "iaxgw.gateway.iax2.calltable",
    "iaxgw.gateway.iax2.reliability", "iaxgw.gateway.iax2.trunks",
    "iaxgw.gateway.iax2.protocol",
]
with atheris.instrument_imports(include=["iaxgw", "targets"]):
    for _mod in INSTRUMENTED:
        importlib.import_module(_mod)
    import targets


def main() -> None:
    name = sys.argv[1]
    fn = targets.TARGETS[name]
    if os.environ.get("IAXGW_FUZZ_EXPECT_ASAN"):
        import iaxgw._core._frames_c as fc

        where = os.environ["IAXGW_FUZZ_EXPECT_ASAN"]
        if not fc.__file__ or not fc.__file__.startswith(where):
            sys.exit(f"expected the ASan build under {where}, got {fc.__file__}")
    elif not targets.compiled_available():
        print("warning: compiled core not importable, fuzzing the twins only", file=sys.stderr)
    atheris.Setup([sys.argv[0], *sys.argv[2:]], fn)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
