"""``iaxgw ctl``: drive a running load test or serve over its control socket.

``rate N``, ``pause``, ``resume`` and ``stop`` drive ``iaxgw loadtest --control PATH`` (as its
hot keys do); a serve takes ``stop`` (hang up every call, exit 0) and ``originate`` (a call
from an emulated local phone through its dialplan, as Asterisk's ``channel originate``) and
refuses the others with the reason.  Exit codes: 0 done; 1 refused, unreachable, or an
originated call that was not answered or heard nothing but silence; 2 bad usage.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from iaxgw.gateway.serve.control import ControlError, default_control_path, query

#: seconds ``originate`` waits beyond the call's own duration for it to end
ORIGINATE_SLACK_S = 45.0


def _fail(message: str) -> None:
    click.echo(f"iaxgw ctl: error: {message}", err=True)
    sys.exit(1)


def _ask(ctx: click.Context, cmd: str, **args: Any) -> Any:
    path = ctx.obj["control"]
    try:
        return query(path, cmd, **args)
    except ControlError as exc:
        _fail(str(exc))
    return None


@click.group("ctl")
@click.option("--control", "control", type=click.Path(dir_okay=False), default=None,
              metavar="PATH",
              help="Control socket of the running `iaxgw loadtest --control PATH` or serve.  "
                   "[default: serve's, /run/iaxgw/iaxgw.sock for root, else "
                   "$XDG_RUNTIME_DIR/iaxgw/iaxgw.sock]")
@click.pass_context
def ctl(ctx: click.Context, control: str | None) -> None:
    """Drive a running load test (rate, pause, resume, stop) or serve (originate, stop)."""
    ctx.ensure_object(dict)
    ctx.obj["control"] = control or default_control_path()


def _state_line(data: Any) -> str:
    if not isinstance(data, dict):
        return str(data)
    paused = " (new calls paused)" if data.get("paused") else ""
    stopping = "; stopping" if data.get("stopping") else ""
    return f"rate {data.get('rate_cps'):g} calls/s{paused}{stopping}"


@ctl.command("rate")
@click.argument("cps", type=click.FloatRange(0, 10_000, min_open=True))
@click.pass_context
def rate(ctx: click.Context, cps: float) -> None:
    """Ask a running load test for CPS call attempts per second from now on."""
    click.echo(_state_line(_ask(ctx, "rate", rate=cps)))


@ctl.command("pause")
@click.pass_context
def pause(ctx: click.Context) -> None:
    """No new calls until resume (the calls up go on)."""
    click.echo(_state_line(_ask(ctx, "pause")))


@ctl.command("resume")
@click.pass_context
def resume(ctx: click.Context) -> None:
    """Place new calls again at the rate asked."""
    click.echo(_state_line(_ask(ctx, "resume")))


@ctl.command("stop")
@click.pass_context
def stop(ctx: click.Context) -> None:
    """Stop gracefully: no new calls, hang up the calls up; a load test writes its report and
    exits as a completed run, a serve exits 0."""
    data = _ask(ctx, "stop")
    if isinstance(data, dict) and "rate_cps" in data:
        click.echo("load test stopping: calls hung up, report written")
    else:
        click.echo(f"serve stopping: hanging up {(data or {}).get('calls', 0)} call(s)")


def originate_line(s: dict[str, Any]) -> str:
    """One line on an originated call: how it was answered and what the phone heard."""
    if not s.get("answered"):
        why = s.get("dialstatus") or (f"cause {s['cause']}" if s.get("cause") else "no answer")
        return f"{s['channel']}: not answered ({why})"
    own = s.get("heard_own_tone")
    echo = f", {own} of them our own tone back" if own is not None else ""
    leg = f" via {s['leg']}" if s.get("leg") else ""
    return (f"{s['channel']}{leg}: answered after {s.get('answer_ms')} ms; sent "
            f"{s.get('frames_sent')} frames, heard {s.get('frames_heard')}{echo}")


def originate_ok(s: dict[str, Any]) -> bool:
    """Answered, and audio other than silence came back to the phone."""
    return bool(s.get("answered")) and int(s.get("frames_heard") or 0) > int(
        s.get("heard_silent") or 0)


@ctl.command("originate")
@click.argument("exten")
@click.option("--context", default="internal", show_default=True,
              help="The dialplan context the phone calls from (office-b's [internal] dials "
                   "office-a).")
@click.option("--media", default="tone", show_default=True, metavar="tone|echo|silence|FILE.wav",
              help="What the phone says once answered (tone: 697 Hz, recognised if echoed).")
@click.option("--duration", type=click.FloatRange(0, 3600, min_open=True), default=10.0,
              show_default=True, help="Seconds the phone stays on once answered.")
@click.option("--background", is_flag=True,
              help="Return once the call is placed instead of waiting for its end.")
@click.option("--json", "as_json", is_flag=True, help="Print the call's final state as JSON.")
@click.pass_context
def originate(ctx: click.Context, exten: str, context: str, media: str, duration: float,
              background: bool, as_json: bool) -> None:
    """Place a call from an emulated local phone of a running serve to EXTEN through its
    dialplan (as Asterisk's `channel originate Local/EXTEN@CONTEXT`)."""
    s = _ask(ctx, "originate", exten=exten, context=context, media=media, duration=duration)
    if background:
        click.echo(f"{s['channel']}: placed (id {s['id']})")
        return
    deadline = time.monotonic() + duration + ORIGINATE_SLACK_S
    while s.get("state") != "ended" and time.monotonic() < deadline:
        time.sleep(0.25)
        s = _ask(ctx, "originate_status", id=s["id"])
    if as_json:
        import json

        click.echo(json.dumps(s, indent=2, sort_keys=True))
    else:
        click.echo(originate_line(s))
    if s.get("state") != "ended":
        _fail(f"{s['channel']} still {s.get('state')} after {duration + ORIGINATE_SLACK_S:g} s")
    if not originate_ok(s):
        sys.exit(1)
