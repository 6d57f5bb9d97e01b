#!/usr/bin/env bash
# Build the compiled core with AddressSanitizer + UBSan (setup.py IAXGW_SANITIZE=1) into
# fuzz/asan-build/, a self-contained iaxgw tree (the Python sources copied beside the .so files)
# that fuzz/run.sh puts first on PYTHONPATH.  Built from a temporary copy of the sources so the
# in-tree build (build/, _core/*.so, _core/*.c) is left alone.  Then proves ASan is live: a tiny
# extension with a deliberate heap overflow must be reported by ASan under the same environment.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/fuzz/asan-build
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

cp setup.py pyproject.toml README.md "$TMP"/
for d in _core gateway sim; do
    mkdir -p "$TMP/$d"
    # sources only: not the in-tree .so/.c of the normal build
    (cd "$d" && find . -type f ! -name '*.so' ! -name '*.c' ! -path '*__pycache__*' \
        -exec cp --parents {} "$TMP/$d/" \;)
done
rm -rf "$OUT"
mkdir -p "$OUT/iaxgw"
(cd "$TMP" && IAXGW_SANITIZE=1 python3 setup.py -q build_ext --build-lib "$OUT" \
    --build-temp "$TMP/temp" >"$TMP/build.log" 2>&1) || { cat "$TMP/build.log"; exit 1; }
cp -r "$TMP/_core/." "$OUT/iaxgw/_core/"
cp -r "$TMP/gateway" "$OUT/iaxgw/gateway"
cp -r "$TMP/sim" "$OUT/iaxgw/sim"

# the canary: a 1-byte heap read past the end, built the same way
mkdir -p "$OUT/canary"
cat >"$TMP/asan_canary.c" <<'C'
#include <Python.h>
#include <stdlib.h>
static PyObject *overflow(PyObject *self, PyObject *args) {
    volatile char *p = malloc(8);
    char c = p[8];                       /* deliberate heap-buffer-overflow */
    free((void *)p);
    return PyLong_FromLong(c);
}
static PyMethodDef m[] = {{"overflow", overflow, METH_NOARGS, ""}, {0}};
static struct PyModuleDef d = {PyModuleDef_HEAD_INIT, "asan_canary", 0, -1, m};
PyMODINIT_FUNC PyInit_asan_canary(void) { return PyModule_Create(&d); }
C
gcc -shared -fPIC -fsanitize=address,undefined -fno-omit-frame-pointer -g \
    $(python3-config --includes) "$TMP/asan_canary.c" \
    -o "$OUT/canary/asan_canary$(python3-config --extension-suffix)"

echo "ASan build in $OUT:"
for so in "$OUT"/iaxgw/_core/*.so; do
    printf '  %s  %s\n' "$(basename "$so")" \
        "$(ldd "$so" | grep -oE 'lib(asan|ubsan)\.so[^ ]*' | sort -u | tr '\n' ' ')"
done
