"""The Asterisk lab: a real Asterisk 22 from Debian sid in a chroot, instances started side by side.

``Lab(root)`` owns a cache folder (default ``/var/cache/iaxgw``, env ``IAXGW_LAB_ROOT``) holding a
Debian sid tree with ``asterisk`` installed.  ``Lab.provision()`` builds it once (debootstrap, then
apt inside the chroot) and writes a marker file when complete; a tree without the marker is a
partial provision and is built again.  ``Lab.instance(name, cfg)`` gives an ``AsteriskInstance``
with its own config folders inside the chroot (``/etc/asterisk-office-a`` ...), which can be
started, waited for, queried with ``-rx`` and stopped.  Everything here needs root.

Every instance started by this process is remembered; ``stop_all_started()`` (also run at exit)
stops any that are still running, so a failing test leaves no Asterisk behind.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from iaxgw.sim.lab import cpugroup
from iaxgw.sim.lab.labconfig import LabSiteConfig, SiteDirs, render_site, seed_site

DEFAULT_ROOT = "/var/cache/iaxgw"
ROOT_ENV = "IAXGW_LAB_ROOT"
MARKER_NAME = "provisioned.json"
CHROOT_NAME = "sid"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
APT_NO_VALID_UNTIL = ("-o", "Acquire::Check-Valid-Until=false")
HOST_PACKAGES = {"debootstrap": "debootstrap", "tshark": "tshark", "dumpcap": "tshark"}
CHROOT_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "HOME": "/root",
    "DEBIAN_FRONTEND": "noninteractive",
}


class LabError(RuntimeError):
    """The lab could not do what was asked; the message says which step and why."""


def _log_default(msg: str) -> None:
    print(msg, flush=True)


def default_root() -> Path:
    """The lab's cache folder: ``$IAXGW_LAB_ROOT`` or ``/var/cache/iaxgw``."""
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def require_root(action: str) -> None:
    """Raise ``LabError`` unless this process runs as root."""
    if os.geteuid() != 0:
        raise LabError(f"{action} needs root (debootstrap, chroot and binding 127.0.0.x:4569); "
                       "run it as root, e.g. with sudo")


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _run_step(step: str, argv: list[str], *, timeout: float, env: dict[str, str] | None = None,
              ) -> subprocess.CompletedProcess[str]:
    """Run one provisioning step; a failure raises ``LabError`` naming the step and the cause."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                              check=False)
    except FileNotFoundError as exc:
        raise LabError(f"provision step {step!r} failed: {argv[0]} not found ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"provision step {step!r} timed out after {timeout:.0f} s: "
                       f"{' '.join(argv)}") from exc
    if proc.returncode != 0:
        out = _tail(proc.stderr + "\n" + proc.stdout)
        raise LabError(f"provision step {step!r} failed (exit {proc.returncode}): "
                       f"{' '.join(argv)}\n{out}")
    return proc


def find_debian_mirror(paths: list[str] | None = None) -> str:
    """The Debian mirror this machine's apt uses (deb822 ``URIs:`` or one-line ``deb`` entries).

    Security and updates archives are skipped; ``deb.debian.org`` is the fallback.
    """
    if paths is None:
        paths = [*sorted(glob.glob("/etc/apt/sources.list.d/*")), "/etc/apt/sources.list"]
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        uris: list[str] = []
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("URIs:"):
                uris += line.split()[1:]
            elif line.startswith("deb ") and not line.startswith("deb-src"):
                parts = [w for w in line.split()[1:] if not w.startswith("[")]
                if parts:
                    uris.append(parts[0])
        for uri in uris:
            if uri.startswith(("http://", "https://")) and "security" not in uri \
                    and "debian" in uri:
                return uri.rstrip("/")
    return DEFAULT_MIRROR


@dataclass(frozen=True)
class ProvisionInfo:
    """What the marker file records about a complete provision."""

    root: str
    mirror: str
    asterisk_version: str
    seconds: float
    created: float

    @classmethod
    def load(cls, path: Path) -> ProvisionInfo:
        data = json.loads(path.read_text())
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


class Lab:
    """The provisioned chroot and the Asterisk instances run from it."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.chroot = self.root / CHROOT_NAME
        self.marker = self.root / MARKER_NAME

    def __repr__(self) -> str:
        return f"Lab(root={str(self.root)!r})"

    # --- provisioning ---------------------------------------------------------------------

    def is_provisioned(self) -> bool:
        """True when a complete provision is in place (marker present, asterisk binary there)."""
        return self.marker.is_file() and (self.chroot / "usr/sbin/asterisk").is_file()

    def info(self) -> ProvisionInfo | None:
        """The marker's record, or None when not provisioned."""
        if not self.is_provisioned():
            return None
        try:
            return ProvisionInfo.load(self.marker)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def unavailable_reason(self) -> str | None:
        """Why lab tests cannot run here (not root, not provisioned), or None when they can."""
        if os.geteuid() != 0:
            return "the Asterisk lab needs root"
        if not self.is_provisioned():
            return f"the Asterisk lab is not provisioned at {self.root} (run: iaxgw lab provision)"
        return None

    def provision(self, *, force: bool = False, mirror: str | None = None,
                  log: Callable[[str], None] = _log_default) -> ProvisionInfo:
        """Build the chroot with Asterisk 22 once; a no-op when already complete.

        Steps: host packages (debootstrap, tshark) via apt-get when missing; ``debootstrap
        --variant=minbase sid``; apt-get install asterisk inside the chroot; check ``asterisk
        -V``; write the marker.  A root left without the marker is removed and built again.
        """
        require_root("provisioning the Asterisk lab")
        if self.is_provisioned() and not force:
            info = self.info()
            if info is not None:
                return info
        start = time.monotonic()
        self.ensure_host_tools(log=log)
        mirror = mirror or find_debian_mirror()
        self.root.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.marker.unlink()
        if self.chroot.exists():
            log(f"removing partial or old lab root {self.chroot}")
            self._remove_chroot()
        log(f"debootstrap sid into {self.chroot} from {mirror} ...")
        _run_step("debootstrap", ["debootstrap", "--variant=minbase", "sid", str(self.chroot),
                                  mirror], timeout=900)
        self._prepare_chroot_apt()
        log("installing asterisk inside the chroot ...")
        _run_step("apt-get update (chroot)",
                  ["chroot", str(self.chroot), "apt-get", *APT_NO_VALID_UNTIL, "update"],
                  timeout=600, env=CHROOT_ENV)
        _run_step("apt-get install asterisk (chroot)",
                  ["chroot", str(self.chroot), "apt-get", *APT_NO_VALID_UNTIL, "install", "-y",
                   "--no-install-recommends", "asterisk", "asterisk-modules"],
                  timeout=900, env=CHROOT_ENV)
        # the downloaded .debs are not needed any more (about half the root's size)
        subprocess.run(["chroot", str(self.chroot), "apt-get", "clean"], env=CHROOT_ENV,
                       capture_output=True, timeout=120, check=False)
        proc = _run_step("asterisk -V (chroot)", ["chroot", str(self.chroot), "asterisk", "-V"],
                         timeout=60, env=CHROOT_ENV)
        version = proc.stdout.strip()
        if not re.match(r"Asterisk 2[2-9]\.", version):
            raise LabError(f"provision step 'asterisk -V' found {version!r}, expected Asterisk 22+")
        missing = [m for m in ("chan_iax2", "res_timing_timerfd", "app_milliwatt")
                   if not glob.glob(str(self.chroot / "usr/lib/*/asterisk/modules" / f"{m}.so"))]
        if missing:
            raise LabError(f"provision step 'check modules' failed: missing {missing} in chroot")
        info = ProvisionInfo(root=str(self.root), mirror=mirror, asterisk_version=version,
                             seconds=round(time.monotonic() - start, 1), created=time.time())
        tmp = self.marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(info.__dict__, indent=1) + "\n")
        tmp.replace(self.marker)
        log(f"lab provisioned: {version} in {info.seconds:.0f} s at {self.root}")
        return info

    @staticmethod
    def ensure_host_tools(*, log: Callable[[str], None] = _log_default) -> None:
        """apt-get install debootstrap and tshark on the host when missing."""
        wanted = sorted({pkg for tool, pkg in HOST_PACKAGES.items() if shutil.which(tool) is None})
        if not wanted:
            return
        require_root("installing host packages")
        log(f"installing host packages {wanted} with apt-get ...")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run_step("apt-get update (host)", ["apt-get", "update"], timeout=600, env=env)
        _run_step(f"apt-get install {' '.join(wanted)} (host)",
                  ["apt-get", "install", "-y", "--no-install-recommends", *wanted],
                  timeout=900, env=env)
        still = [t for t in HOST_PACKAGES if shutil.which(t) is None]
        if still:
            raise LabError(f"provision step 'host tools' failed: {still} still missing after "
                           "apt-get install")

    def _prepare_chroot_apt(self) -> None:
        apt_conf = self.chroot / "etc/apt/apt.conf.d/99iaxgw-lab"
        apt_conf.write_text('Acquire::Check-Valid-Until "false";\n'
                            'APT::Install-Recommends "false";\n')
        # No service may start inside the chroot while packages install.
        policy = self.chroot / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)

    def _remove_chroot(self) -> None:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(self.chroot) + "/")]
        for mnt in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", mnt], check=False, capture_output=True)
        shutil.rmtree(self.chroot)

    # --- instances ------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, wait: float = 300.0) -> Iterator[None]:
        """Hold the lab's inter-process lock (``ROOT/lab.lock``, the one the test fixtures take)
        so two users of 127.0.0.10/20:4569 never run at once; LabError after ``wait`` s."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lab.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LabError(f"another user holds the lab lock {self.root}/lab.lock "
                                       f"for over {wait:.0f} s") from None
                    time.sleep(0.5)
            yield
        finally:
            os.close(fd)

    def instance(self, name: str, config: LabSiteConfig | None = None) -> AsteriskInstance:
        """An instance named ``name`` (config folders ``/etc/asterisk-<name>`` etc.)."""
        return AsteriskInstance(self, name, config or seed_site(name))

    def running(self) -> list[AsteriskInstance]:
        """Instances whose pid file names a live Asterisk (from any process)."""
        found = []
        for pidfile in sorted(self.host_path("/run").glob("asterisk-*/asterisk.pid")):
            name = pidfile.parent.name.removeprefix("asterisk-")
            inst = AsteriskInstance(self, name, None)
            if inst.pid is not None:
                found.append(inst)
        return found

    def down(self, timeout: float = 10.0) -> list[str]:
        """Stop every running instance; returns their names."""
        names = []
        for inst in self.running():
            inst.stop(timeout=timeout)
            names.append(inst.name)
        return names

    def host_path(self, chroot_path: str) -> Path:
        """A path inside the chroot, seen from the host (symlinks resolved inside the chroot)."""
        path = self.chroot
        parts = [p for p in chroot_path.split("/") if p]
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == ".":
                continue
            if part == "..":
                if path != self.chroot:
                    path = path.parent
                continue
            nxt = path / part
            if nxt.is_symlink() and hops < 40:
                hops += 1
                target = os.readlink(nxt)
                parts = [p for p in target.split("/") if p] + parts
                if target.startswith("/"):
                    path = self.chroot
                continue
            path = nxt
        return path


# --- instances --------------------------------------------------------------------------------

_STARTED: dict[int, AsteriskInstance] = {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _is_asterisk(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"asterisk" in cmd


class AsteriskInstance:
    """One Asterisk process in the lab chroot, with its own config folders."""

    def __init__(self, lab: Lab, name: str, config: LabSiteConfig | None) -> None:
        self.lab = lab
        self.name = name
        self.config = config
        self.dirs = SiteDirs.for_site(name)
        self._pid: int | None = None

    def __repr__(self) -> str:
        return f"AsteriskInstance({self.name!r}, pid={self.pid})"

    # --- paths ---
    @property
    def log_path(self) -> Path:
        """The ``messages`` log file, as a host path."""
        return self.lab.host_path(f"{self.dirs.log}/messages")

    @property
    def etc_path(self) -> Path:
        return self.lab.host_path(self.dirs.etc)

    @property
    def pidfile(self) -> Path:
        return self.lab.host_path(self.dirs.pidfile)

    @property
    def pid(self) -> int | None:
        """The running Asterisk's pid (host pid namespace), or None when not running."""
        candidates = []
        if self._pid is not None:
            candidates.append(self._pid)
        with contextlib.suppress(OSError, ValueError):
            candidates.append(int(self.pidfile.read_text().strip()))
        for pid in candidates:
            if _pid_alive(pid) and _is_asterisk(pid):
                return pid
        return None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def _base_argv(self) -> list[str]:
        return ["chroot", str(self.lab.chroot), "asterisk", "-C", self.dirs.asterisk_conf]

    # --- lifecycle ---
    def write_config(self) -> None:
        """Render the config into the instance's folder and create its other folders."""
        if self.config is None:
            raise LabError(f"instance {self.name}: no config to write")
        for d in self.dirs.all:
            self.lab.host_path(d).mkdir(parents=True, exist_ok=True)
        for fname, text in render_site(self.config, self.dirs).items():
            (self.etc_path / fname).write_text(text)

    def start(self, timeout: float = 30.0) -> AsteriskInstance:
        """Write the config, start Asterisk (stopping a stale one of this name) and wait for it."""
        require_root(f"starting Asterisk {self.name}")
        if not self.lab.is_provisioned():
            raise LabError(f"the lab at {self.lab.root} is not provisioned "
                           "(run: iaxgw lab provision)")
        if self.pid is not None:
            self.stop()
        self.write_config()
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.log_path.unlink()
        argv = [*self._base_argv(), "-U", "root", "-G", "root", "-F"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env=CHROOT_ENV, check=False)
        if proc.returncode != 0:
            raise LabError(f"Asterisk {self.name} did not start (exit {proc.returncode}): "
                           f"{_tail(proc.stderr + proc.stdout)}")
        self.wait_ready(timeout)
        if self._pid is not None:
            cpugroup.join(self._pid, self.name)     # a machine of its own, as far as the CPU goes
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until ``core waitfullybooted`` answers and the pid file names a live process."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            pid = self._pid_from_file()
            if pid is not None:
                self._pid = pid
                _STARTED[pid] = self
            try:
                proc = subprocess.run([*self._base_argv(), "-rx", "core waitfullybooted"],
                                      capture_output=True, text=True, env=CHROOT_ENV,
                                      timeout=max(1.0, deadline - time.monotonic()), check=False)
                last = (proc.stdout + proc.stderr).strip()
                if proc.returncode == 0 and "Unable to connect" not in last \
                        and self._pid is not None:
                    return
            except subprocess.TimeoutExpired:
                last = "core waitfullybooted timed out"
            time.sleep(0.1)
        raise LabError(f"Asterisk {self.name} not fully booted after {timeout:.0f} s: {last}; "
                       f"see {self.log_path}\n{self.log_tail()}")

    def _pid_from_file(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def stop(self, timeout: float = 10.0) -> None:
        """``core stop now``; then SIGTERM and SIGKILL by pid if it is still there."""
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run([*self._base_argv(), "-rx", "core stop now"], capture_output=True,
                           env=CHROOT_ENV, timeout=timeout, check=False)
        if not _wait_gone(pid, timeout):
            for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                if _wait_gone(pid, wait):
                    break
        _STARTED.pop(pid, None)
        self._pid = None

    # --- queries ---
    def cli(self, command: str, timeout: float = 15.0, *, cpu_group: str | None = None) -> str:
        """Run one CLI command (``asterisk -rx``) and return its output.  ``cpu_group``: the
        CLI client (not the daemon it talks to) runs in that CPU group (:mod:`cpugroup`)."""
        argv = [*self._base_argv(), "-rx", command]
        if cpu_group is not None:
            argv = cpugroup.wrap(argv, cpu_group)
        try:
            proc = subprocess.run(argv, capture_output=True,
                                  text=True, env=CHROOT_ENV, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"{self.name}: CLI {command!r} timed out after {timeout} s") from exc
        out = proc.stdout
        if proc.returncode != 0 or out.startswith("Unable to connect"):
            raise LabError(f"{self.name}: CLI {command!r} failed (exit {proc.returncode}): "
                           f"{_tail(proc.stderr + out)}")
        return out

    def peers(self) -> dict[str, IaxPeer]:
        return parse_iax2_peers(self.cli("iax2 show peers"))

    def channels(self) -> list[IaxChannel]:
        return parse_iax2_channels(self.cli("iax2 show channels"))

    def active_calls(self) -> int:
        """Active calls as ``core show channels count`` reports them."""
        out = self.cli("core show channels count")
        m = re.search(r"(\d+) active calls?", out)
        return int(m.group(1)) if m else 0

    def wait_peer_ok(self, peer: str | None = None, timeout: float = 30.0) -> IaxPeer:
        """Poll ``iax2 show peers`` until ``peer`` (default: the remote site) shows OK."""
        if peer is None:
            if self.config is None:
                raise LabError("wait_peer_ok needs a peer name")
            peer = self.config.remote_name
        deadline = time.monotonic() + timeout
        seen: IaxPeer | None = None
        while time.monotonic() < deadline:
            seen = self.peers().get(peer)
            if seen is not None and seen.ok:
                return seen
            time.sleep(0.25)
        raise LabError(f"{self.name}: peer {peer} not OK after {timeout:.0f} s (last: {seen})")

    def originate(self, dest: str, app: str = "Milliwatt", data: str = "", *,
                  cpu_group: str | None = None) -> str:
        """``channel originate <dest> application <app> [data]`` (dest e.g. Local/300@internal);
        ``cpu_group`` as for :meth:`cli`."""
        cmd = f"channel originate {dest} application {app}"
        if data:
            cmd += f" {data}"
        return self.cli(cmd, cpu_group=cpu_group)

    def hangup_all(self) -> None:
        self.cli("channel request hangup all")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return _tail(self.log_path.read_text(errors="replace"), lines)
        except OSError:
            return "(no log)"


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return not _pid_alive(pid)


def started_pids() -> list[int]:
    """Pids of instances this process started and has not stopped."""
    return [pid for pid in _STARTED if _pid_alive(pid)]


def stop_all_started(timeout: float = 10.0) -> list[str]:
    """Stop every instance this process started (used at exit and by the test session)."""
    names = []
    for pid, inst in list(_STARTED.items()):
        if _pid_alive(pid) and _is_asterisk(pid):
            inst.stop(timeout=timeout)
            names.append(inst.name)
        _STARTED.pop(pid, None)
    return names


atexit.register(stop_all_started)


@contextlib.contextmanager
def running_pair(lab: Lab, a: LabSiteConfig | None = None, b: LabSiteConfig | None = None,
                 timeout: float = 30.0) -> Iterator[tuple[AsteriskInstance, AsteriskInstance]]:
    """office-a and office-b started for the block and stopped after it."""
    ia = lab.instance("office-a", a or seed_site("office-a"))
    ib = lab.instance("office-b", b or seed_site("office-b"))
    try:
        ia.start(timeout)
        ib.start(timeout)
        yield ia, ib
    finally:
        ib.stop()
        ia.stop()


# --- CLI output parsers -----------------------------------------------------------------------

@dataclass(frozen=True)
class IaxPeer:
    """One row of ``iax2 show peers``."""

    name: str
    username: str | None
    host: str
    port: int
    trunk: bool
    status: str                 # "OK", "UNREACHABLE", "LAGGED", "UNKNOWN", "Unmonitored"
    latency_ms: int | None

    @property
    def ok(self) -> bool:
        return self.status == "OK"


_PEER_STATUS = re.compile(r"(OK|LAGGED|UNREACHABLE|UNKNOWN|Unmonitored)(?:\s+\((\d+) ms\))?")


def parse_iax2_peers(text: str) -> dict[str, IaxPeer]:
    """``iax2 show peers`` rows keyed by peer name."""
    peers: dict[str, IaxPeer] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("Name/Username") or "iax2 peers" in line:
            continue
        parts = line.split()
        if len(parts) < 4:
            continue
        name, _, username = parts[0].partition("/")
        status_m = _PEER_STATUS.search(line)
        port_m = re.search(r"\s(\d+)\s+(\(T\))?\s", line + " ")
        peers[name] = IaxPeer(
            name=name,
            username=username or None,
            host=parts[1],
            port=int(port_m.group(1)) if port_m else 0,
            trunk=bool(port_m and port_m.group(2)),
            status=status_m.group(1) if status_m else "?",
            latency_ms=int(status_m.group(2)) if status_m and status_m.group(2) else None,
        )
    return peers


@dataclass(frozen=True)
class IaxChannel:
    """One row of ``iax2 show channels``."""

    channel: str
    peer: str
    username: str
    local_callno: int
    remote_callno: int
    tx_seq: int
    rx_seq: int
    format: str
    first_msg: str
    last_msg: str


_CHAN_ROW = re.compile(
    r"^(?P<chan>\S+)\s+(?P<peer>\S+)\s+(?P<user>\S+)\s+(?P<lo>\d+)/(?P<rem>\d+)\s+"
    r"(?P<tx>\d+)/(?P<rx>\d+)\s+\S+\s+\S+\s+\S+\s+(?P<fmt>\S+)\s+(?P<first>\S+)\s+(?P<last>\S+)")


def parse_iax2_channels(text: str) -> list[IaxChannel]:
    """``iax2 show channels`` rows."""
    rows = []
    for line in text.splitlines():
        m = _CHAN_ROW.match(line)
        if not m:
            continue
        rows.append(IaxChannel(
            channel=m["chan"], peer=m["peer"], username=m["user"],
            local_callno=int(m["lo"]), remote_callno=int(m["rem"]),
            tx_seq=int(m["tx"]), rx_seq=int(m["rx"]), format=m["fmt"],
            first_msg=m["first"], last_msg=m["last"]))
    return rows
