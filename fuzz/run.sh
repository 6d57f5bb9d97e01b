#!/usr/bin/env bash
# Fuzz the core: builds fuzz/asan-build (ASan/UBSan) when missing (or with --rebuild), checks
# that ASan is live, then runs fuzz/run.py: per target a coverage-guided stage, then an
# ASan/UBSan stage over the corpus (see fuzz/run.py).  Arguments go to run.py:
#   bash fuzz/run.sh --seconds 60 --all        # CI: 60 s per target
#   bash fuzz/run.sh --seconds 3600            # long campaign, corpus kept in fuzz/corpus/
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import atheris' 2>/dev/null || python3 -m pip install -q -r fuzz/requirements.txt
if [ "${1:-}" = "--rebuild" ] || [ ! -d fuzz/asan-build/iaxgw/_core ]; then
    [ "${1:-}" = "--rebuild" ] && shift
    bash fuzz/build_asan.sh
fi
ASAN_BUILD=$PWD/fuzz/asan-build
LIBASAN=$(gcc -print-file-name=libasan.so)
# Evidence that ASan is live in exactly this environment: the canary's overflow must be caught.
if LD_PRELOAD=$LIBASAN ASAN_OPTIONS=detect_leaks=0 PYTHONPATH=$ASAN_BUILD/canary \
        python3 -c 'import asan_canary; asan_canary.overflow()' 2>/dev/null; then
    echo "fuzz/run.sh: ASan is NOT active (canary overflow went unnoticed)" >&2
    exit 2
fi
echo "ASan active: canary heap-buffer-overflow detected; libasan $LIBASAN"
exec python3 fuzz/run.py --asan "$ASAN_BUILD" "$@"
