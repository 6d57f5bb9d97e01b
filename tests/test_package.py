"""The package installs under one ``iaxgw`` namespace and exposes its console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from iaxgw.gateway.cli import main


def test_cli_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert "iaxgw" in result.output


def test_no_generic_top_level_names(tmp_path: Path) -> None:
    """The install adds no top-level ``gateway``/``_core``/``sim``: looked up from a folder
    outside the source tree (the tree itself is on sys.path when tests run from it)."""
    code = ("import importlib.util, json; print(json.dumps([getattr(importlib.util.find_spec(n),"
            " 'origin', None) for n in ('gateway', '_core', 'sim')]))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, check=True)
    tree = str(Path(__file__).resolve().parent.parent)
    found = [o for o in json.loads(out.stdout) if o]
    assert not [o for o in found if "-packages" in o or o.startswith(tree)], found


def test_no_extensions_env_selects_twins() -> None:
    code = "import iaxgw._core as core; print(core.USING_EXTENSIONS)"
    env = dict(os.environ, IAXGW_NO_EXTENSIONS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
