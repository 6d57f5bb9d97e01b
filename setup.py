"""Build script: maps the top-level folders onto the ``iaxgw`` namespace and compiles ``_core``.

``IAXGW_NO_EXTENSIONS=1`` at build time skips the Cython extensions (the pure-Python twins are then
used at import).  ``IAXGW_DEBUG_BUILD=1`` builds with line tracing and without optimisation.
``IAXGW_SANITIZE=1`` adds AddressSanitizer/UBSan flags (for the fuzz harness).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

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
CORE_MODULES = ["_frames_c", "_ies_c", "_trunk_c", "_probe_c", "_media_c", "_g711_c", "_udp_c"]


def _cimport_path() -> str:
    """A directory where ``iaxgw/_core/*.pxd`` can be found, for the compiled modules that
    ``cimport`` each other by their package name (the source folder is ``_core``, not
    ``iaxgw/_core``)."""
    root = tempfile.mkdtemp(prefix="iaxgw-pxd-")
    atexit.register(shutil.rmtree, root, True)
    target = os.path.join(root, "iaxgw", "_core")
    os.makedirs(target)
    for name in os.listdir("_core"):
        if name.endswith((".pxd", ".pxi")):
            shutil.copyfile(os.path.join("_core", name), os.path.join(target, name))
    with open(os.path.join(target, "__init__.py"), "w", encoding="ascii"):
        pass
    return root


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
    return cythonize(exts, compiler_directives=directives, annotate=False,
                     include_path=[_cimport_path()])


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
