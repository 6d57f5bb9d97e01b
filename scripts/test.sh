#!/usr/bin/env bash
# The whole test suite from a fresh clone: install, provision the Asterisk lab (as root), lint, type-check, test.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
python3 -m pip install -q '.[test,plots,cluster]'
if [ "$(id -u)" = 0 ]; then
    iaxgw lab provision
    export IAXGW_REQUIRE_ASTERISK=1
else
    echo "not root: tests marked 'asterisk' will be skipped" >&2
fi
ruff check .
mypy
cython-lint --max-line-length 100 _core
python3 -m pytest -q -p no:randomly --timeout 600 tests
IAXGW_NO_EXTENSIONS=1 python3 -m pytest -q --timeout 600 -m "not asterisk" tests
# bounded fuzz pass (~7 min: ASan build, then 7 targets x 50 s, 1/3 of each under ASan); crash = fail
bash fuzz/run.sh --seconds 50 --all
