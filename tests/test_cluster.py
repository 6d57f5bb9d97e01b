"""The cluster run (Locust's distributed runner, ``iaxgw[cluster]``): a master and two workers as
separate processes on loopback against a real ``iaxgw serve``, the merged report against what
each worker's shard reported, a worker killed with SIGKILL mid-run, the JSON a worker sends
(never unpickled), and a plain ``iaxgw loadtest`` that never imports Locust."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_shards import serve  # noqa: F401  (the module's serve fixture)

# never imported here: Locust patches the standard library for gevent when imported
pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(importlib.util.find_spec("locust") is None,
                                 reason="Locust not installed: pip install 'iaxgw[cluster]'")]

CLI = [sys.executable, "-m", "iaxgw.gateway.cli"]


def _port() -> int:
    return random.Random(os.getpid() + time.time_ns()).randrange(20000, 40000)


class Cluster:
    """A master and its workers, each a process of its own; all killed at the end."""

    def __init__(self, s: dict[str, Any], report: Path, workers: list[str], *extra: str) -> None:
        self.port = _port()
        self.master_addr = f"{s['net']}.1:{self.port}"
        self.master = subprocess.Popen(
            [*CLI, "loadtest", "--master", "--expect-workers", str(len(workers)),
             "--master-bind", self.master_addr, "--config", str(s["a"]),
             "--peer", s.get("peer", "office-b"),
             "--quiet", "--report", str(report), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(0.5)
        self.workers = [subprocess.Popen([*CLI, "worker", "--master", self.master_addr,
                                          "--bind", w], stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT) for w in workers]

    def wait(self, timeout: float = 120) -> str:
        out = self.master.communicate(timeout=timeout)[0].decode()
        for w in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.wait(timeout=15)
        return out

    def kill_all(self) -> None:
        for p in (self.master, *self.workers):
            if p.poll() is None:
                p.kill()
                p.wait(10)


@pytest.fixture
def cluster_factory() -> Iterator[Any]:
    made: list[Cluster] = []

    def make(*a: Any) -> Cluster:
        made.append(Cluster(*a))
        return made[-1]
    yield make
    for c in made:
        c.kill_all()


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def _with_included_secret(site: Path, into: Path) -> Path:
    """A copy of a site's config whose secrets sit in an ``#include``d file of a subdirectory:
    a worker sent only iax.conf could not authenticate."""
    import shutil

    shutil.copytree(site, into)
    conf = into / "iax.conf"
    lines = conf.read_text().splitlines()
    secrets = [ln for ln in lines if ln.strip().startswith("secret")]
    assert secrets, "the site's iax.conf has no secret"
    (into / "secrets").mkdir()
    (into / "secrets" / "trunk.conf").write_text(secrets[0] + "\n")
    conf.write_text("\n".join('#include "secrets/trunk.conf"' if ln.strip().startswith("secret")
                              else ln for ln in lines) + "\n")
    return into


def test_master_and_two_workers_merge(serve: dict[str, Any], tmp_path: Path,  # noqa: F811
                                      cluster_factory: Any) -> None:
    """... with the master's secret in an included file: the workers get iax.conf's includes."""
    net = serve["net"]
    report = tmp_path / "rep"
    site = _with_included_secret(serve["a"], tmp_path / "office-a")
    c = cluster_factory({**serve, "a": site}, report, [f"{net}.30", f"{net}.31"],
                        "-l", "6", "-r", "10", "-d", "4", "--exten", "300")
    out = c.wait()
    assert c.master.returncode == 0, out
    s = json.loads((report / "summary.json").read_text())
    assert sorted(sh["local"] for sh in s["shards"]) == [f"{net}.30:4569", f"{net}.31:4569"]
    assert [sh["calls"] for sh in s["shards"]] == [3, 3]
    assert s["answered"] == 6 == sum(sh["answered"] for sh in s["shards"])
    assert s["audio"]["verified"] == 6
    rows = _csv(report / "calls.csv")
    assert len(rows) == 6
    assert sorted(r["local"] for r in rows) == [f"{net}.30:4569"] * 3 + [f"{net}.31:4569"] * 3
    ts = _csv(report / "timeseries.csv")
    assert sum(int(r["attempts_interval"]) for r in ts) == 6
    assert s["loadtest"]["cluster"]["workers"] == 2 and not s["loadtest"]["degraded"]
    assert all(w.returncode == 0 for w in c.workers)


def test_a_worker_killed_is_the_generators_loss(serve: dict[str, Any],  # noqa: F811
                                                tmp_path: Path, cluster_factory: Any) -> None:
    net = serve["net"]
    report = tmp_path / "rep"
    c = cluster_factory(serve, report, [f"{net}.32", f"{net}.33"], "-l", "4", "-r", "10",
                        "-d", "10", "--exten", "300")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (report / "timeseries.csv").exists():
        time.sleep(0.2)
    time.sleep(2.0)
    c.workers[1].send_signal(signal.SIGKILL)
    out = c.wait()
    assert c.master.returncode == 1, out
    s = json.loads((report / "summary.json").read_text())
    lt = s["loadtest"]
    assert lt["degraded"] is True
    lost = [sh for sh in s["shards"] if sh.get("lost")]
    assert [sh["local"] for sh in lost] == [f"{net}.33:4569"], s["shards"]
    assert "heartbeats" in lost[0]["lost"]
    assert any("generator's loss" in r for r in lt["fail_reasons"])
    # the survivor's calls: all answered, none counted as the target's failures
    assert s["answered"] == 2 and s["failed"] == 0


def test_capacity_search_steers_the_workers(serve: dict[str, Any],  # noqa: F811
                                            tmp_path: Path, cluster_factory: Any) -> None:
    net = serve["net"]
    report = tmp_path / "rep"
    c = cluster_factory(serve, report, [f"{net}.35", f"{net}.36"], "--exten", "300",
                        "--step", "2", "--step-time", "3", "--max-calls", "10",
                        "--stop-when", "calls_up >= 6")
    out = c.wait()
    assert c.master.returncode == 0, out
    cap = json.loads((report / "summary.json").read_text())["capacity"]
    assert (cap["calls"], cap["failed_at"]) == (4, 6), cap
    assert [st["calls_up"] for st in cap["steps"]] == [2, 4, 6]


def test_worker_result_json_refuses_foreign_fields() -> None:
    from iaxgw.sim.scale.shard_merge import result_from_json

    with pytest.raises(ValueError, match="other fields"):
        result_from_json({"records": [{"index": 0, "__reduce__": "x"}]})


def test_plain_loadtest_never_imports_locust(serve: dict[str, Any]) -> None:  # noqa: F811
    code = ("import sys\nfrom iaxgw.gateway.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
            "print('RC', rc, 'locust' in sys.modules, 'gevent' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code, "loadtest", "--config", str(serve["a"]),
                          "--peer", "office-b", "-l", "1", "-d", "1", "-q",
                          "--bind", f"{serve['net']}.34"], capture_output=True, text=True,
                         timeout=60, check=False).stdout
    assert "RC 0 False False" in out, out


def test_config_bundle_carries_includes_and_refuses_what_escapes(tmp_path: Path) -> None:
    """The master sends iax.conf and every file it includes, by relative path; a worker writes
    them in a fresh private directory and refuses paths that leave it, oversize bundles and
    bad encodings; an include outside --config is a usage error naming the file."""
    import base64

    from iaxgw.gateway.conf.config import load_iax_conf
    from iaxgw.sim.load.loadtest_plan import PlanError
    from iaxgw.sim.scale.config_bundle import BUNDLE_MAX_FILES, config_bundle, unpack_config_bundle

    # importing it in-process must not bring in gevent (its patches break every later
    # asyncio test of the session)
    assert "gevent" not in sys.modules and "locust" not in sys.modules

    site = tmp_path / "office-a"
    (site / "peers").mkdir(parents=True)
    (site / "iax.conf").write_text('[general]\nbindport = 4569\n#include "peers/*.conf"\n')
    (site / "peers" / "b.conf").write_text(
        "[office-b]\ntype = friend\nhost = 127.0.0.20\nsecret = s3cret\n")
    bundle = config_bundle(site)
    assert bundle is not None and sorted(bundle) == ["iax.conf", "peers/b.conf"]
    assert config_bundle(None) is None
    got = unpack_config_bundle(bundle, tmp_path / "w" / "office-a")
    assert got.name == "office-a" and (got.stat().st_mode & 0o777) == 0o700
    assert load_iax_conf(got / "iax.conf").entries["office-b"].host == "127.0.0.20"
    assert ((got / "peers" / "b.conf").stat().st_mode & 0o777) == 0o600
    # an include outside the directory: the master refuses to start, naming it
    (tmp_path / "outside.conf").write_text("[x]\ntype = user\n")
    (site / "iax.conf").write_text('[general]\n#include "../outside.conf"\n')
    with pytest.raises(PlanError, match=r"outside\.conf.*outside the directory"):
        config_bundle(site)
    # what a hostile master could send: refused before anything is written
    enc = base64.b64encode(b"[general]\n").decode()
    for bad in ({"iax.conf": enc, "../x.conf": enc}, {"iax.conf": enc, "/etc/x": enc},
                {"iax.conf": enc, "": enc}, {"peers/b.conf": enc}, {"iax.conf": "%%"},
                {"iax.conf": enc, **{f"f{i}": enc for i in range(BUNDLE_MAX_FILES)}}, ["iax.conf"]):
        dest = tmp_path / "bad" / str(len(list((tmp_path).glob("bad/*"))))
        with pytest.raises(ValueError):
            unpack_config_bundle(bad, dest)
        assert not dest.exists()
