"""``iaxgw serve`` restarted mid-call under a real Asterisk 22 (issue "Hardening": restart).

Asterisk office-a (127.0.0.10) originates calls to our ``iaxgw serve`` (office-b, 127.0.0.20:4569,
echo 300).  With calls up, serve is stopped -- ``kill`` (SIGKILL: no HANGUP, no state) or ``term``
(SIGTERM: HANGUP cause 16 for every call) -- and started again after ``down_s``.  What is
recorded: Asterisk's peer status over time (UNREACHABLE, then OK: short qualify frequencies),
when Asterisk's IAX2 channels of the old calls went away and with which HANGUPCAUSE (an ``h``
extension logs it), what the restarted serve did with the old calls' frames (INVALs sent), the
call numbers on both sides before and after (no collision), and whether new calls work and
every table is empty at the end.

    python bench/restart.py --mode kill --calls 3        # as root, lab provisioned
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: Qualify every 2 s while OK, every 1 s while not (ms; Asterisk peer options).
QUALIFY_LINES = ("qualifyfreqok = 2000", "qualifyfreqnotok = 1000")
#: Each call's end on office-a: the dialled IAX2 leg's cause, logged by the Local channel's ``h``.
CAUSE_TAG = "RESTART-CAUSE"
INTERNAL_DIALPLAN = ("exten => h,1,NoOp(" + CAUSE_TAG + " ${HANGUPCAUSE} ${DIALSTATUS})",)


def site_config() -> Any:
    from iaxgw.sim.lab.labconfig import seed_site

    return seed_site("office-a", extra_peer=QUALIFY_LINES,
                     extra_dialplan={"internal": INTERNAL_DIALPLAN})


def _serve(workdir: Path, tag: str) -> Any:
    from iaxgw.gateway.conf.config import default_config_dir
    from iaxgw.sim.lab.loadtest_lab import ServeProcess

    cfg = workdir / "office-b"
    if not cfg.exists():
        shutil.copytree(default_config_dir("office-b"), cfg)
    d = workdir / tag
    d.mkdir(exist_ok=True)
    return ServeProcess(cfg, d)


def _ours(serve: Any, what: str) -> Any:
    from iaxgw.gateway.serve.control import query

    return query(serve.control, what)


def _wait(pred: Any, timeout: float, step: float = 0.2) -> float | None:
    """Seconds until ``pred()`` is true, or None after ``timeout``."""
    t0 = time.monotonic()
    while True:
        if pred():
            return round(time.monotonic() - t0, 2)
        if time.monotonic() - t0 > timeout:
            return None
        time.sleep(step)


def _causes(inst: Any, since: int) -> list[str]:
    text = inst.log_path.read_text(errors="replace")[since:]
    return re.findall(CAUSE_TAG + r" (\d*) (\w*)", text)


def _log_size(inst: Any) -> int:
    try:
        return len(inst.log_path.read_text(errors="replace"))
    except OSError:
        return 0


def _up(serve: Any, n: int) -> bool:
    rows = _ours(serve, "channels")
    return len(rows) >= n and all(r["state"] == "UP" and r["frames_rx"] > 20
                                  and r["frames_tx"] > 20 for r in rows)


def run(inst: Any, workdir: Path, mode: str = "kill", calls: int = 3,
        down_s: float = 3.0) -> dict[str, Any]:
    """One restart scenario against the running office-a ``inst``; returns what was seen."""
    out: dict[str, Any] = {"mode": mode, "calls": calls, "down_s": down_s}
    serve = _serve(workdir, "run1")
    serve.start()
    restarted = None
    try:
        out["peer_ok_s"] = _wait(lambda: inst.peers()["office-b"].ok, 20)
        for _ in range(calls):
            inst.originate("Local/300@internal", "Milliwatt")
        out["calls_up_s"] = _wait(lambda: _up(serve, calls), 15)
        before = _ours(serve, "channels")
        out["our_callnos_before"] = sorted(r["callno"] for r in before)
        ast_before = inst.channels()
        out["ast_callnos_before"] = sorted(c.local_callno for c in ast_before)
        mark = _log_size(inst)
        t_stop = time.monotonic()
        assert serve.proc is not None
        serve.proc.send_signal(signal.SIGKILL if mode == "kill" else signal.SIGTERM)
        serve.proc.wait(10)
        out["serve_exit"] = serve.proc.returncode
        # Asterisk: the peer goes UNREACHABLE (qualify every 1-2 s, maxms 2000)
        out["unreachable_s"] = _wait(lambda: inst.peers()["office-b"].status == "UNREACHABLE",
                                     max(10.0, down_s + 8.0))
        out["ast_channels_at_restart"] = len(inst.channels())
        time.sleep(max(0.0, down_s - (time.monotonic() - t_stop)))
        restarted = _serve(workdir, "run2")
        restarted.start()
        t_restart = time.monotonic()
        out["restart_after_s"] = round(t_restart - t_stop, 2)
        out["peer_ok_again_s"] = _wait(lambda: inst.peers()["office-b"].ok, 15)
        out["ast_old_gone_after_restart_s"] = _wait(lambda: not inst.channels(), 40, 0.5)
        out["ast_old_gone_after_stop_s"] = round(time.monotonic() - t_stop, 2)
        out["ast_causes_old"] = _causes(inst, mark)
        st = _ours(restarted, "stats")
        out["restarted_stats"] = {k: v for k, v in (st.items() if isinstance(st, dict) else [])
                                  if "inval" in k or "unknown" in k or k == "calls_in"}
        out["restarted_channels_after_old"] = len(_ours(restarted, "channels"))
        # new calls through the restarted serve
        mark2 = _log_size(inst)
        for _ in range(calls):
            inst.originate("Local/300@internal", "Milliwatt")
        out["new_calls_up_s"] = _wait(lambda: _up(restarted, calls), 15)
        after = _ours(restarted, "channels")
        out["our_callnos_after"] = sorted(r["callno"] for r in after)
        out["ast_callnos_after"] = sorted(c.local_callno for c in inst.channels())
        out["new_frames"] = [(r["frames_rx"], r["frames_tx"]) for r in after]
        inst.hangup_all()
        out["new_ended_ast_s"] = _wait(lambda: not inst.channels(), 10)
        out["new_ended_ours_s"] = _wait(lambda: not _ours(restarted, "channels"), 10)
        out["ast_causes_new"] = _causes(inst, mark2)
        out["ast_active_calls_end"] = inst.active_calls()
        out["ast_iax2_channels_end"] = inst.cli("iax2 show channels").strip().splitlines()[-1:]
        out["our_channels_end"] = _ours(restarted, "channels")
    finally:
        for s in (serve, restarted):
            if s is not None:
                s.stop()
    out["restarted_exit"] = restarted.proc.returncode if restarted and restarted.proc else None
    return out


def main(argv: list[str] | None = None) -> int:
    from iaxgw.sim.lab.lab import Lab

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("kill", "term"), default="kill")
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--down", type=float, default=3.0, help="seconds serve stays down")
    a = ap.parse_args(argv)
    lab = Lab()
    reason = lab.unavailable_reason()
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    with lab.lock(), tempfile.TemporaryDirectory() as tmp:
        inst = lab.instance("office-a", site_config()).start()
        try:
            res = run(inst, Path(tmp), a.mode, a.calls, a.down)
        finally:
            inst.stop()
    print(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
