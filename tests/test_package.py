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


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (``TYPE_CHECKING`` imports included), read
    from the installed package's sources."""
    import ast

    import iaxgw.gateway

    root = Path(str(iaxgw.gateway.__file__)).parent.parent      # iaxgw is a namespace package
    mods: dict[str, Path] = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(("iaxgw", *parts))
        mods[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for n in names:
                if n in mods and n != mod and n != "iaxgw":
                    graph[mod].add(n)
    return graph


def test_import_graph_has_no_cycles() -> None:
    """The package's modules import each other as a tree: no cycle, not even through
    ``TYPE_CHECKING`` imports (a part never imports the endpoint that composes it)."""
    graph = _import_graph()
    assert "iaxgw.gateway.iax2.protocol" in graph["iaxgw.gateway.driver.server"]     # it was read
    state: dict[str, int] = {}          # 1: on the current path, 2: done

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for dep in sorted(graph[mod]):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(
                    [*path[path.index(dep):], mod, dep] if dep in path else [mod, dep]))
            if dep not in state:
                visit(dep, [*path, mod])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [])


def test_endpoint_parts_do_not_import_the_endpoint() -> None:
    graph = _import_graph()
    for part in ("admission", "calltable", "reliability", "timers", "trunks", "calls", "peers"):
        assert "iaxgw.gateway.iax2.protocol" not in graph[f"iaxgw.gateway.iax2.{part}"], part


def test_core_layers() -> None:
    """In ``_core``, the trunk codec knows nothing of the load-tester probes or the media half,
    and the probes nothing of the media half: in the twins' imports and in the compiled
    modules' ``cimport``s alike."""
    import re

    graph = _import_graph()
    core = "iaxgw._core."
    above_codec = {f"{core}{m}" for m in ("_probe_py", "_media_py", "probe", "media")}
    assert not above_codec & graph[f"{core}_trunk_py"]
    assert f"{core}_trunk_py" in graph[f"{core}_probe_py"]                  # it was read
    assert not {f"{core}_media_py", f"{core}media"} & graph[f"{core}_probe_py"]
    assert {f"{core}_trunk_py", f"{core}_probe_py"} <= graph[f"{core}_media_py"]
    src = Path(__file__).resolve().parent.parent / "_core"
    cimports = {p.stem: set(re.findall(r"^from iaxgw\._core\.(\w+) cimport", p.read_text(),
                                       re.M))
                for p in src.glob("*.pyx")}
    assert cimports["_trunk_c"] == set()
    assert cimports["_probe_c"] == {"_trunk_c"}
    assert cimports["_media_c"] == {"_trunk_c", "_probe_c"}
