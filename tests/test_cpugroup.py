"""The lab's CPU groups: a program started through :func:`cpugroup.wrap` or moved by
:func:`cpugroup.join` is in its site's group (as the kernel reports it in /proc/PID/cgroup)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from iaxgw.sim.lab import cpugroup

SITE = "test-cpugroup"


def _group_or_skip() -> None:
    if cpugroup.group_dir(SITE) is None:
        pytest.skip("no cgroup cpu controller we may use here (not root?)")


def test_wrap_starts_the_program_inside_the_group() -> None:
    _group_or_skip()
    argv = cpugroup.wrap([sys.executable, "-c", "print(open('/proc/self/cgroup').read())"], SITE)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    assert f"/{cpugroup.GROUP}/{SITE}" in out


def test_join_moves_a_running_process_and_members_lists_it() -> None:
    _group_or_skip()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(20)"])
    try:
        assert proc.pid not in cpugroup.members(SITE)
        assert cpugroup.join(proc.pid, SITE)
        assert proc.pid in cpugroup.members(SITE)
        with open(f"/proc/{proc.pid}/cgroup") as fh:
            assert f"/{cpugroup.GROUP}/{SITE}" in fh.read()
    finally:
        proc.kill()
        proc.wait(10)


def test_site_names_that_are_not_one_folder_are_refused() -> None:
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(ValueError):
            cpugroup.group_dir(bad)
