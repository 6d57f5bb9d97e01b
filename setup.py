"""Build script: maps the top-level folders onto the ``iaxgw`` namespace and compiles ``_core``.

``IAXGW_NO_EXTENSIONS=1`` at build time skips the Cython extensions (the pure-Python twins are then
used at import).  ``IAXGW_DEBUG_BUILD=1`` builds with line tracing and without optimisation.
``IAXGW_SANITIZE=1`` adds AddressSanitizer/UBSan flags (for the fuzz harness).
"""

from __future__ import annotations

import os

from setuptools import setup
from setuptools.extension import Extension

PACKAGES = {
    "iaxgw.gateway": "gateway",
    "iaxgw._core": "_core",
    "iaxgw.sim": "sim",
}
#: The layers inside the top-level folders (each a folder with an ``__init__.py``).
SUBPACKAGES = [
    f"{name}.{sub}" for name, folder in PACKAGES.items() if os.path.isdir(folder)
    for sub in sorted(os.listdir(folder))
    if os.path.isfile(os.path.join(folder, sub, "__init__.py"))
]
CORE_MODULES = ["_frames_c", "_ies_c", "_trunk_c", "_g711_c", "_udp_c"]


def _extensions() -> list[Extension]:
    if os.environ.get("IAXGW_NO_EXTENSIONS"):
        return []
    from Cython.Build import cythonize

    debug = bool(os.environ.get("IAXGW_DEBUG_BUILD"))
    sanitize = bool(os.environ.get("IAXGW_SANITIZE"))
    cflags = ["-O0", "-g"] if debug else ["-O3"]
    ldflags: list[str] = []
    macros: list[tuple[str, str | None]] = []
    if sanitize:
        cflags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]
        ldflags += ["-fsanitize=address,undefined"]
    if debug:
        macros.append(("CYTHON_TRACE_NOGIL", "1"))
    exts = [
        Extension(
            f"iaxgw._core.{name}",
            [f"_core/{name}.pyx"],
            extra_compile_args=cflags,
            extra_link_args=ldflags,
            define_macros=macros,
        )
        for name in CORE_MODULES
        if os.path.exists(f"_core/{name}.pyx")
    ]
    directives = {
        "language_level": "3",
        "embedsignature": True,
        "freethreading_compatible": True,
    }
    if debug:
        directives["linetrace"] = True
    return cythonize(exts, compiler_directives=directives, annotate=False)


setup(
    packages=[*PACKAGES, *SUBPACKAGES],
    package_dir=PACKAGES,
    package_data={
        "iaxgw._core": ["*.pyi", "py.typed", "*.pxd", "*.pxi"],
        "iaxgw.gateway": ["py.typed", "defaults/*", "defaults/office-a/*"],
        "iaxgw.sim": ["py.typed", "data/*", "schema/*.json"],
    },
    ext_modules=_extensions(),
    zip_safe=False,
)
