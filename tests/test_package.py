"""The package installs under one ``iaxgw`` namespace and exposes its console script."""

from __future__ import annotations

import os
import subprocess
import sys

from click.testing import CliRunner

from iaxgw.gateway.cli import main


def test_cli_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert "iaxgw" in result.output


def test_no_generic_top_level_names() -> None:
    import importlib.util

    for name in ("gateway", "_core", "sim"):
        spec = importlib.util.find_spec(name)
        assert spec is None or "iaxgw" not in (spec.origin or ""), name


def test_no_extensions_env_selects_twins() -> None:
    code = "import iaxgw._core as c; print(c.USING_EXTENSIONS)"
    env = dict(os.environ, IAXGW_NO_EXTENSIONS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
