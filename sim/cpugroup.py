"""Each lab site in a CPU group of its own, as if it ran on a machine of its own.

The lab puts two sites on one machine.  The kernel shares the CPU between runnable threads (or,
with autogroup scheduling, between sessions), so a multi-threaded Asterisk office-a with a thread
per channel, or a burst of ``asterisk -rx`` clients, can take the CPU from a single-threaded
office-b in a way two machines never would.  Where the kernel lets us (root, a cgroup ``cpu``
controller), each site's processes go into ``iaxgw-lab/<site>``, groups of equal weight, so each
site gets its fair half whatever the thread counts and whatever the scheduler's grouping.
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


def _v2_enable_cpu(parent: Path) -> None:
    control = parent / "cgroup.subtree_control"
    if "cpu" not in control.read_text().split():
        control.write_text("+cpu")


def group_dir(site: str) -> Path | None:
    """The folder of ``site``'s CPU group, made if need be; None where there is none to make."""
    if not site or "/" in site or site.startswith("."):
        raise ValueError(f"bad site name for a CPU group: {site!r}")
    try:
        if (V1_CPU / "cgroup.procs").exists() and (V1_CPU / "cpu.shares").exists():
            d = V1_CPU / GROUP / site
            d.mkdir(parents=True, exist_ok=True)
            return d
        controllers = V2_ROOT / "cgroup.controllers"
        if controllers.exists() and "cpu" in controllers.read_text().split():
            top = V2_ROOT / GROUP
            top.mkdir(exist_ok=True)
            _v2_enable_cpu(V2_ROOT)
            _v2_enable_cpu(top)
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


def members(site: str) -> list[int]:
    """The processes in ``site``'s CPU group (empty when there is none)."""
    for base in (V1_CPU / GROUP / site, V2_ROOT / GROUP / site):
        try:
            text = (base / "cgroup.procs").read_text()
        except OSError:
            continue
        return [int(x) for x in text.split()]
    return []

