"""Each lab site in a CPU group of its own, as if it ran on a machine of its own.

The lab puts two sites on one machine.  The kernel shares the CPU between runnable threads (or,
with autogroup scheduling, between sessions), so a multi-threaded Asterisk office-a with a thread
per channel, or a burst of ``asterisk -rx`` clients, can take the CPU from a single-threaded
office-b in a way two machines never would.  Where the kernel lets us (root, a cgroup ``cpu``
controller), each site's processes go into ``iaxgw-lab/<site>``, groups of equal weight, so each
site gets its fair half whatever the thread counts and whatever the scheduler's grouping,
and the lab as a whole weighs as much as eight busy processes on the machine.
Without that the sites run as they are, and :func:`join` says so.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("iaxgw.lab")

#: cgroup v1 ``cpu`` hierarchy, or the v2 unified one (where ``cpu`` is in its controllers)
V1_CPU = Path("/sys/fs/cgroup/cpu")
V2_ROOT = Path("/sys/fs/cgroup")
GROUP = "iaxgw-lab"
#: the lab's weight against everything else runnable on the machine (each other process, or
#: each other group, weighs 1,024 in v1 and 100 in v2): eight processes' worth, so that other
#: work on the machine does not become the sites' figures (weighing two, serve's NEW-to-reply
#: 90th percentile went from 1 to 8 ms in a burst beside four busy builds and test runs);
#: within the lab each group weighs the same.  The load tester, outside the lab, uses a
#: fraction of a core: the lab's weight matters only when the machine is saturated.
LAB_WEIGHT_V1 = 8192
LAB_WEIGHT_V2 = 800


def _v2_enable_cpu(parent: Path) -> None:
    control = parent / "cgroup.subtree_control"
    if "cpu" not in control.read_text().split():
        control.write_text("+cpu")


def _set_weight(path: Path, weight: int) -> None:
    if path.read_text().strip() != str(weight):
        path.write_text(str(weight))


def group_dir(site: str) -> Path | None:
    """The folder of ``site``'s CPU group, made if need be; None where there is none to make."""
    if not site or "/" in site or site.startswith("."):
        raise ValueError(f"bad site name for a CPU group: {site!r}")
    try:
        if (V1_CPU / "cgroup.procs").exists() and (V1_CPU / "cpu.shares").exists():
            top = V1_CPU / GROUP
            top.mkdir(exist_ok=True)
            _set_weight(top / "cpu.shares", LAB_WEIGHT_V1)
            d = top / site
            d.mkdir(exist_ok=True)
            return d
        controllers = V2_ROOT / "cgroup.controllers"
        if controllers.exists() and "cpu" in controllers.read_text().split():
            top = V2_ROOT / GROUP
            top.mkdir(exist_ok=True)
            _v2_enable_cpu(V2_ROOT)
            _v2_enable_cpu(top)
            _set_weight(top / "cpu.weight", LAB_WEIGHT_V2)
            d = top / site
            d.mkdir(exist_ok=True)
            return d
    except OSError as exc:
        log.debug("no CPU group for %s: %s", site, exc)
    return None


def join(pid: int, site: str) -> bool:
    """Move process ``pid`` (all its threads; threads it starts later follow) into ``site``'s
    CPU group.  False, logged, when the kernel does not let us."""
    d = group_dir(site)
    if d is None:
        log.info("lab: %s (pid %d) shares the CPU ungrouped (no cgroup cpu controller we may "
                 "use)", site, pid)
        return False
    try:
        (d / "cgroup.procs").write_text(str(pid))
    except OSError as exc:
        log.info("lab: %s (pid %d) not moved into CPU group %s: %s", site, pid, d, exc)
        return False
    return True


def wrap(argv: list[str], site: str) -> list[str]:
    """``argv`` to start in ``site``'s CPU group: a shell puts itself in the group, then execs
    ``argv`` (no window in which the program runs outside it).  ``argv`` unchanged where there
    is no group."""
    d = group_dir(site)
    if d is None:
        return argv
    procs = str(d / "cgroup.procs")
    return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *argv]


def members(site: str) -> list[int]:
    """The processes in ``site``'s CPU group (empty when there is none)."""
    for base in (V1_CPU / GROUP / site, V2_ROOT / GROUP / site):
        try:
            text = (base / "cgroup.procs").read_text()
        except OSError:
            continue
        return [int(x) for x in text.split()]
    return []

