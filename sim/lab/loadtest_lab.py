"""``iaxgw lab`` without a sub-command: a whole two-site load test on loopback.

* Default: ``iaxgw serve`` runs as **office-b** in a child process (127.0.0.20:4569; x00 echo) and
  this process is the load tester as **office-a** (127.0.0.10:4569) calling office-b's echo
  extension 300 over the seed's trunk.  Two processes, so each side's CPU is its own.
* ``--asterisk``: the lab's real Asterisk 22 is **office-a** (127.0.0.10:4569) and we are
  **office-b** (127.0.0.20:4569, the embedded config) calling its echo extension 200.

``--impair SPEC`` (gateway/driver/impair.py) impairs the load tester's socket only (both ways by
default), so the WAN between the two sites is impaired once; the far end runs unimpaired.  On such a
link the lab also applies :func:`lossy_link_settings` (why: see there).

Both sides use the embedded seed configuration (copied to a temporary folder, so ``--trunk`` and
``--trunktimestamps`` can be applied to both sides alike).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from iaxgw.gateway.driver.realtime import RT_PRIORITY
from iaxgw.gateway.driver.server import SOCKET_BUFFER_ENV
from iaxgw.sim.load.loadtest import (
    LoadtestError,
    LoadtestResult,
    check_report_dir,
    finish_output,
    run_loadtest_core,
    socket_buffer,
)
from iaxgw.sim.load.loadtest_plan import (
    LOSSY_HANGUP_LINGER,
    LOSSY_MEDIA_TIMEOUT,
    LOSSY_SETUP_TIMEOUT,
    LoadtestOptions,
    lossy_caller_settings,
)

__all__ = ["LAB_HOLD_S", "LAB_MAX_RATE", "LOSSY_HANGUP_LINGER", "LOSSY_MEDIA_TIMEOUT",
           "LOSSY_SETUP_TIMEOUT", "lab_ramp", "lossy_link_settings", "run_lab"]

A_IP, B_IP = "127.0.0.10", "127.0.0.20"
#: ``IAXGW_LAB_ADDRS="127.0.5.10,127.0.5.20"`` moves the serve variant off the seed's addresses
#: (when a lab Asterisk holds them); the Asterisk variant always uses the seed's.
ADDRS_ENV = "IAXGW_LAB_ADDRS"
SERVE_READY_S = 15.0


#: The SCHED_RR priority of the lab's serve when the lab runs at real-time priority
#: (``--realtime``, its default): below the load tester's (:data:`RT_PRIORITY`), so that the
#: generator's media ticks still come first, and above every ordinary process.  With serve under
#: the ordinary scheduler beside three real-time shards on two cores, ``iaxgw lab --calls 5000
#: --rate 200`` saw serve fall behind its socket by 1-2 s once ~4,000 calls were up (NEW to
#: CALLTOKEN on the wire, while the machine was 15 % idle): setups slowed to 10-20/s, and the
#: run missed its rate (6 runs of 7).  At this priority it kept 200/s to the end, setups under
#: 40 ms.  The far end of a real trunk is typically an Asterisk started with ``-p`` too.
SERVE_RT_PRIORITY = RT_PRIORITY - 5


def scheduling(pid: int | None) -> str:
    """A process's scheduling as the kernel has it: ``"SCHED_RR 5"``, ``"ordinary"``, or
    ``"unknown"`` (gone, or not a system that says)."""
    try:
        policy = os.sched_getscheduler(pid or 0) & ~getattr(os, "SCHED_RESET_ON_FORK", 0)
        prio = os.sched_getparam(pid or 0).sched_priority
    except (AttributeError, OSError):
        return "unknown"
    names = {getattr(os, n): n for n in ("SCHED_RR", "SCHED_FIFO") if hasattr(os, n)}
    return f"{names[policy]} {prio}" if policy in names else "ordinary"


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def write_site(dst: Path, site: str, opts: LoadtestOptions, a_ip: str = A_IP,
               b_ip: str = B_IP) -> Path:
    """The embedded config of ``site`` in ``dst``, with the lab's --trunk/--trunktimestamps."""
    from iaxgw.gateway.conf.config import default_config_dir

    dst.mkdir(parents=True, exist_ok=True)
    for f in Path(default_config_dir(site)).iterdir():
        if not f.is_file():
            continue
        text = f.read_text().replace("127.0.0.10", a_ip).replace("127.0.0.20", b_ip)
        if f.name == "iax.conf":
            if opts.trunk is not None:
                text = text.replace("trunk = yes", f"trunk = {'yes' if opts.trunk else 'no'}")
            if opts.trunktimestamps is not None:
                flag = "yes" if opts.trunktimestamps else "no"
                text = text.replace("[general]\n", f"[general]\ntrunktimestamps = {flag}\n", 1)
            if opts.encryption:
                text = text.replace("[general]\n", "[general]\nencryption = aes128\n"
                                    "forceencryption = yes\n", 1)
        (dst / f.name).write_text(text)
    return dst


class ServeProcess:
    """``iaxgw serve`` as office-b in a child process, ready once its control socket answers."""

    def __init__(self, config_dir: Path, workdir: Path, *, own_session: bool = False,
                 env: dict[str, str] | None = None, realtime_priority: int | None = None
                 ) -> None:
        self.control = str(workdir / "serve.sock")
        #: start serve in a session of its own (``setsid``), as a daemonized Asterisk runs: with
        #: the kernel's autogroup scheduling a process shares its CPU share with the rest of its
        #: session -- in a burst of ``asterisk -rx`` commands started from the same session,
        #: serve would wait for the CPU most of the time while the daemon Asterisk would not
        self.own_session = own_session
        self.env = {**os.environ, **env} if env else None
        self.log_path = workdir / "serve.log"
        self.argv = [sys.executable, "-m", "iaxgw.gateway.cli", "serve", "--config",
                     str(config_dir), "--peer", "office-a", "--control", self.control]
        if realtime_priority is not None:
            self.argv += ["--realtime", "--realtime-priority", str(realtime_priority)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from iaxgw.gateway.serve.control import ControlError, query

        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL,
                                         start_new_session=self.own_session, env=self.env)
        deadline = time.monotonic() + SERVE_READY_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LoadtestError(f"iaxgw serve exited with {self.proc.returncode}: "
                                    f"{self.log_tail()}")
            with contextlib.suppress(ControlError, OSError):
                query(self.control, "peers")
                return
            time.sleep(0.1)
        self.stop()
        raise LoadtestError(f"iaxgw serve did not answer `iaxgw show peers` within "
                            f"{SERVE_READY_S:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 8) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(8)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


LOSSY_MAXAUTHREQ = 1000
LOSSY_CALLEE_GENERAL = (f"maxauthreq = {LOSSY_MAXAUTHREQ}", "calltokenexpiration = 40")


def lossy_link_settings(opts: LoadtestOptions, iax_conf_caller: Path | None = None,
                        iax_conf_callee: Path | None = None) -> list[str]:
    """Settings without which a lossy WAN fails some call setups *by design* (as Asterisk does):

    * a qualified peer turns on autokill: NEW is sent at 0 and maxms (2 s) and the call is
      congested at 2 x maxms, so two lost NEW round trips (~1 % at 5 % loss each way) fail the
      call: the caller's peer entry gets ``qualify = no`` (NEW retried at 2, 12, 22 s);
    * ``maxauthreq`` (3) counts AUTHREQs whose AUTHREP has not arrived yet; at tens of setups a
      second and a lost AUTHREP held for a 2 s retransmission the callee REJECTs with cause 21:
      the callee's [general] gets ``maxauthreq = 1000``;
    * a call token is valid 10 s, but a NEW lost twice is resent at 12 s and REJECTed (cause 21,
      "CallToken rejected"): the callee's ``calltokenexpiration`` becomes 40 s;
    * a frame lost twice is resent after 12 s: the setup timeout becomes 40 s.
    Returns notes for the summary."""
    notes = []
    if iax_conf_caller is not None:
        t = iax_conf_caller.read_text()
        iax_conf_caller.write_text(t.replace("qualify = yes", "qualify = no"))
    if iax_conf_callee is not None:
        t = iax_conf_callee.read_text()
        iax_conf_callee.write_text(t.replace(
            "[general]\n", "[general]\n" + "\n".join(LOSSY_CALLEE_GENERAL) + "\n", 1))
        notes.append("impaired link: callee " + ", ".join(LOSSY_CALLEE_GENERAL))
    notes.extend(lossy_caller_settings(opts))
    if opts.max_pending < LOSSY_MAXAUTHREQ:          # the callee allows that many now; a setup
        opts.max_pending = LOSSY_MAXAUTHREQ          # held 12 s by a lost frame must not stall
        notes.append(f"impaired link: max pending setups {LOSSY_MAXAUTHREQ}")   # the ramp
    return notes


def shard_ips(opts: LoadtestOptions, first: str) -> list[str]:
    """The load tester's source addresses: ``first`` and, with several shards, the loopback
    addresses after it (the far end's ACL lets each one in)."""
    from iaxgw.sim.scale.shards import shard_addresses

    return [a for a, _ in shard_addresses(opts, (first, 4569), opts.shard_count())]


def permit_lines(conf: Path, ip: str, ips: list[str]) -> None:
    """Widen the seed's ``permit = ip/32`` of an iax.conf to every shard address."""
    text = conf.read_text()
    old = f"permit = {ip}/255.255.255.255"
    conf.write_text(text.replace(old, "\n".join(f"permit = {a}/255.255.255.255" for a in ips)))


def shard_trunk_peers(conf: Path, peer: str, ips: list[str], opts: LoadtestOptions) -> None:
    """:func:`shard_trunk_sections` added to the far end's iax.conf, when ``peer`` is
    trunked there."""
    text = conf.read_text()
    trunked = re.search(r"^trunk\s*=\s*yes\s*$", text, re.MULTILINE) is not None
    lines = shard_trunk_sections(peer, ips, opts, trunked)
    if lines:
        conf.write_text(text.rstrip("\n") + "\n" + "\n".join(lines) + "\n")


def shard_trunk_sections(peer: str, ips: list[str], opts: LoadtestOptions,
                         trunked: bool) -> tuple[str, ...]:
    """A ``trunk = yes`` peer entry for the far end (serve or Asterisk) for each shard address
    after the first (``peer``-2, -3, ...), when ``peer`` is trunked: a call is trunked back to
    its source only when a trunk peer's host is that source (docs/protocol.md P6, as
    Asterisk), so without them the far end echoes every other shard's calls as one mini frame
    per call and 20 ms -- at 5,000 calls over three shards, two thirds of the echo (3.2
    million mini frames in 20 s instead of trunk datagrams)."""
    if len(ips) < 2 or not trunked:
        return ()
    lines: list[str] = []
    for i, ip in enumerate(ips[1:], start=2):
        lines += ["", f"[{peer}-{i}]", "type = peer", f"host = {ip}", "trunk = yes"]
    opts.warnings.append(f"sharded lab: the far end has a trunk peer for each shard address "
                         f"({peer}-2 .. {peer}-{len(ips)}), so every shard's calls are trunked "
                         f"both ways")
    return tuple(lines)


#: The far end's maxauthreq in a sharded lab run: every shard is the same user, and each paces
#: its setups on its own window of --max-pending (3) as one process does.
SHARDED_MAXAUTHREQ = 100


def sharded_callee_general(opts: LoadtestOptions) -> tuple[str, ...]:
    """[general] lines for the far end of a sharded lab run (none with one shard): its
    maxauthreq raised so that each shard keeps its own --max-pending window."""
    n = opts.shard_count()
    if n == 1:
        return ()
    opts.max_pending = min(opts.max_pending * n, SHARDED_MAXAUTHREQ)
    opts.warnings.append(f"sharded lab: the far end's maxauthreq is {SHARDED_MAXAUTHREQ}, "
                         f"{opts.max_pending // n} setups in flight per shard")
    return (f"maxauthreq = {SHARDED_MAXAUTHREQ}",)


def serve_env(opts: LoadtestOptions) -> dict[str, str]:
    """The far end's environment: its socket buffers sized for the calls as the load tester's
    are (``socket_buffer``, 8 KiB a call), so that a stall of the far end under the whole
    load of the lab's calls is read late rather than dropped by the kernel."""
    return {SOCKET_BUFFER_ENV: str(socket_buffer(opts.peak_calls))}


def _run_core(opts: LoadtestOptions, impair: Any) -> LoadtestResult:
    """One process, or the shards with the merged live screen."""
    if opts.shard_count() > 1:
        from iaxgw.sim.load.loadtest import make_screen
        from iaxgw.sim.scale.shards import run_sharded

        result: LoadtestResult = run_sharded(opts, impair=impair, screen=make_screen(opts))
        return result
    return run_loadtest_core(opts, impair=impair)


def run_lab(opts: LoadtestOptions, *, asterisk: bool = False, impair: Any = None) -> int:
    """Run the lab load test, print the live screen and the summary; returns the exit code."""
    check_report_dir(opts)
    lab_defaults(opts)
    with tempfile.TemporaryDirectory(prefix="iaxgw-lab-") as tmp:
        work = Path(tmp)
        other: dict[str, Any] = {}
        if asterisk:
            result = _with_asterisk(opts, work, other, impair)
        else:
            result = _with_serve(opts, work, other, impair)
    result.summary["lab"] = other
    finish_output(opts, result)
    return result.exit_code


#: The lab's default ramp at most (call attempts/s).  A load test ramps at calls/5 per second
#: unless told (``--rate``); in the lab the far end shares the machine, and on two cores serve
#: answers some 400-600 setups/s next to thousands of calls (``iaxgw lab --calls 5000`` asked
#: 1,000/s and reached 410-660/s, so it failed on a rate nobody chose).  Faster labs: ``--rate``.
LAB_MAX_RATE = 200.0
#: How long the lab's calls stay up after the last one is placed, when its ramp was slowed
#: (``LAB_MAX_RATE``) and ``--duration`` was not given: the whole concurrency is held this long.
LAB_HOLD_S = 20.0


def lab_ramp(kw: dict[str, Any], *, duration_given: bool) -> str | None:
    """The lab's ramp for the CLI keywords ``kw`` (changed in place): at most
    :data:`LAB_MAX_RATE` setups/s when ``--rate`` (and ``--step``) were not given, and then, unless
    ``--duration`` was given, calls that last the ramp plus :data:`LAB_HOLD_S` so that every
    call is up at once.  Returns the note that says so (None: nothing changed)."""
    if kw.get("rate") is not None or kw.get("step") is not None:
        return None
    calls = int(kw.get("calls") or 0)
    usual = max(10.0, calls / 5.0)
    if usual <= LAB_MAX_RATE:
        return None
    kw["rate"] = LAB_MAX_RATE
    note = (f"lab: calls are placed at {LAB_MAX_RATE:g}/s, not calls/5 ({usual:g}/s): the far "
            "end shares this machine (--rate sets it)")
    if not duration_given:
        total = kw.get("total")
        ramp = min(calls, int(total) if total else calls) / LAB_MAX_RATE
        hold = float(math.ceil(ramp) + LAB_HOLD_S)
        kw["duration"] = (hold, hold)
        note += (f"; each call lasts {hold:g} s, the {ramp:g} s ramp + {LAB_HOLD_S:g} s "
                 "(--duration sets it)")
    return note


def lab_defaults(opts: LoadtestOptions) -> None:
    """What the lab runs differently from a plain load test unless told otherwise: the load
    tester's media loop at real-time priority (``--realtime``), and serve's one step below it
    (:data:`SERVE_RT_PRIORITY`).  The far end shares this machine, and the figures must be the
    far end's, not the scheduler's."""
    if opts.realtime is None:
        opts.realtime = True


def _cpu_pct(pid: int | None, before: float | None, wall: float) -> float | None:
    after = proc_cpu_seconds(pid) if pid is not None else None
    if before is None or after is None or wall <= 0:
        return None
    return round(100.0 * (after - before) / wall, 1)


def _lab_addrs() -> tuple[str, str]:
    env = os.environ.get(ADDRS_ENV, "").strip()
    if not env:
        return A_IP, B_IP
    parts = [p.strip() for p in env.split(",")]
    if len(parts) != 2 or not all(p.startswith("127.") for p in parts):
        raise LoadtestError(f"{ADDRS_ENV}={env!r}: expected two loopback addresses A,B")
    return parts[0], parts[1]


def _with_serve(opts: LoadtestOptions, work: Path, other: dict[str, Any],
                impair: Any = None) -> LoadtestResult:
    a_ip, b_ip = _lab_addrs()
    b_dir = write_site(work / "office-b", "office-b", opts, a_ip, b_ip)
    a_dir = write_site(work / "office-a", "office-a", opts, a_ip, b_ip)
    if impair is not None:
        opts.warnings.extend(lossy_link_settings(opts, a_dir / "iax.conf", b_dir / "iax.conf"))
    ips = shard_ips(opts, a_ip)
    permit_lines(b_dir / "iax.conf", a_ip, ips)
    shard_trunk_peers(b_dir / "iax.conf", "office-a", ips, opts)
    general = sharded_callee_general(opts)
    if general and impair is None:
        conf = b_dir / "iax.conf"
        conf.write_text(conf.read_text().replace("[general]\n",
                                                 "[general]\n" + "\n".join(general) + "\n", 1))
    serve = ServeProcess(b_dir, work, env=serve_env(opts),
                         realtime_priority=SERVE_RT_PRIORITY if opts.realtime else None)
    serve.start()
    other["far_end_realtime"] = scheduling(serve.pid)
    try:
        opts.config_dir = a_dir
        opts.peer = "office-b"
        opts.peer_host = (b_ip, 4569)
        opts.bind = (a_ip, 4569)
        if not opts.extens:
            opts.extens = ["300"]
        t0, cpu0 = time.monotonic(), proc_cpu_seconds(serve.pid or 0)
        result = _run_core(opts, impair)
        other.update({"far_end": f"iaxgw serve as office-b at {b_ip}:4569 (pid {serve.pid})",
                      "we_are": f"office-a at {', '.join(ips)} (port 4569)",
                      "far_end_cpu_pct": _cpu_pct(serve.pid, cpu0, time.monotonic() - t0)})
        return result
    finally:
        serve.stop()


def _with_asterisk(opts: LoadtestOptions, work: Path, other: dict[str, Any],
                   impair: Any = None) -> LoadtestResult:
    from iaxgw.sim.lab.lab import Lab, LabError

    lab = Lab()
    reason = lab.unavailable_reason()
    if reason:
        raise LoadtestError(f"--asterisk: {reason} (as root: iaxgw lab provision)")
    try:
        with lab.lock():     # the lock the test fixtures take: one user of 127.0.0.10/20
            return _with_asterisk_locked(lab, opts, work, other, impair)
    except LabError as exc:
        raise LoadtestError(f"--asterisk: {exc}") from None


def _with_asterisk_locked(lab: Any, opts: LoadtestOptions, work: Path, other: dict[str, Any],
                          impair: Any = None) -> LoadtestResult:
    from iaxgw.sim.lab.lab import LabError
    from iaxgw.sim.lab.labconfig import seed_site

    overrides: dict[str, Any] = {}
    if opts.trunk is not None:
        overrides["trunk"] = opts.trunk
    if opts.trunktimestamps is not None:
        overrides["trunktimestamps"] = opts.trunktimestamps
    extra: tuple[str, ...] = ()
    if impair is not None:
        extra += LOSSY_CALLEE_GENERAL
    ips = shard_ips(opts, B_IP)
    overrides["permit"] = tuple(f"{ip}/255.255.255.255" for ip in ips)
    overrides["extra_sections"] = shard_trunk_sections("office-b", ips, opts,
                                                       opts.trunk is not False)
    general = sharded_callee_general(opts)
    if general and impair is None:
        extra += general
    if opts.encryption:
        extra += ("encryption = aes128", "forceencryption = yes")
    if extra:
        overrides["extra_general"] = extra
    try:
        inst = lab.instance("office-a", seed_site("office-a", **overrides)).start()
    except LabError as exc:
        raise LoadtestError(f"--asterisk: cannot start office-a: {exc}") from None
    try:
        opts.config_dir = write_site(work / "office-b", "office-b", opts)
        if impair is not None:
            opts.warnings.extend(lossy_link_settings(opts, opts.config_dir / "iax.conf"))
        opts.peer = "office-a"
        opts.peer_host = (A_IP, 4569)
        opts.bind = (B_IP, 4569)
        if not opts.extens:
            opts.extens = ["200"]
        pid = inst.pid
        t0, cpu0 = time.monotonic(), proc_cpu_seconds(pid) if pid else None
        result = _run_core(opts, impair)
        other.update({"far_end": f"Asterisk 22 as office-a at {A_IP}:4569 (pid {pid})",
                      "we_are": f"office-b at {', '.join(ips)} (port 4569)",
                      "far_end_cpu_pct": _cpu_pct(pid, cpu0, time.monotonic() - t0)})
        return result
    finally:
        with contextlib.suppress(Exception):
            inst.stop()
