"""``iaxgw lab``: provision and drive the Asterisk 22 lab (a thin layer over ``sim.lab.lab``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from iaxgw.sim.lab.capture import DEFAULT_FILTER, Capture, CaptureError, decode_counts
from iaxgw.sim.lab.lab import Lab, LabError, default_root
from iaxgw.sim.lab.labconfig import seed_site
from iaxgw.sim.load.loadtest_cli import EXIT_HELP, lab_main, role_options
from iaxgw.sim.load.loadtest_cli import common_options as lab_options

F = TypeVar("F", bound=Callable[..., Any])


def root_option(fn: F) -> F:
    return click.option(
        "--root", "root", type=click.Path(file_okay=False), default=None, envvar="IAXGW_LAB_ROOT",
        help=f"Lab cache folder (default {default_root()}; env IAXGW_LAB_ROOT).")(fn)


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc))


def _one_line(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Refuse option values with newlines or other control characters: they are written into
    Asterisk's config files, where a newline would add lines of the caller's choosing."""
    for v in value if isinstance(value, tuple) else (value,):
        if isinstance(v, str) and any(ord(c) < 0x20 or ord(c) == 0x7F for c in v):
            raise click.BadParameter("must be one line without control characters")
    return value


def _instance(lab_: Lab, name: str) -> Any:
    """``lab_.instance(name)``, or a clear error for a name that is no lab site."""
    try:
        return lab_.instance(name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(invoke_without_command=True, epilog=EXIT_HELP)
@lab_options
@role_options
@click.option("--asterisk", is_flag=True,
              help="Load the lab's real Asterisk 22 (office-a) instead of `iaxgw serve`.")
@click.pass_context
def lab(ctx: click.Context, /, asterisk: bool, **loadtest_kw: Any) -> None:
    """The Asterisk 22 lab: a real Asterisk (Debian sid chroot) playing office-a/office-b.

    Without a sub-command: the two-site load test on loopback (`iaxgw lab --calls 200`):
    `iaxgw serve` as office-b and the load tester as office-a, or with --asterisk the real
    Asterisk as office-a and the load tester as office-b."""
    if ctx.invoked_subcommand is None:
        # ---- HOOK: default action of `iaxgw lab` without a sub-command ----------------------
        ctx.exit(lab_main(asterisk=asterisk, **loadtest_kw))


@lab.command()
@root_option
@click.option("--force", is_flag=True, help="Rebuild even when already provisioned.")
@click.option("--mirror", default=None, help="Debian mirror (default: from /etc/apt sources).")
def provision(root: str | None, force: bool, mirror: str | None) -> None:
    """Build the Debian sid chroot with Asterisk 22 (once; fast when already done)."""
    lab_ = Lab(root)
    try:
        already = lab_.is_provisioned() and not force
        info = lab_.provision(force=force, mirror=mirror, log=lambda m: click.echo(m, err=True))
    except LabError as exc:
        _fail(exc)
        return
    state = "already provisioned" if already else f"provisioned in {info.seconds:.0f} s"
    click.echo(f"{info.asterisk_version} {state} at {lab_.root}")


@lab.command()
@root_option
@click.option("--office-b", "office_b", type=click.Choice(["asterisk", "none"]),
              default="asterisk", show_default=True,
              help="Run office-b as Asterisk too, or leave 127.0.0.20 free for iaxgw.")
@click.option("--trunk/--no-trunk", default=True, show_default=True)
@click.option("--trunkfreq", type=int, default=None, help="ms between trunk datagrams.")
@click.option("--trunktimestamps/--no-trunktimestamps", default=None)
@click.option("--codec", "codecs", multiple=True, callback=_one_line,
              help="allow= list (default ulaw, alaw).")
@click.option("--auth", default="md5", show_default=True, callback=_one_line)
@click.option("--requirecalltoken", type=click.Choice(["yes", "no", "auto"]), default=None)
@click.option("--secret", default=None, callback=_one_line,
              help="office-a's secret for office-b.")
@click.option("--secret-b", default=None, callback=_one_line,
              help="office-b's secret for office-a.")
@click.option("--qualify", default="yes", show_default=True, callback=_one_line)
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the peers show OK (with --office-b asterisk).")
def up(root: str | None, office_b: str, trunk: bool, trunkfreq: int | None,
       trunktimestamps: bool | None, codecs: tuple[str, ...], auth: str,
       requirecalltoken: str | None, secret: str | None, secret_b: str | None, qualify: str,
       wait: bool) -> None:
    """Start office-a (127.0.0.10:4569) and office-b (127.0.0.20:4569); they keep running."""
    common: dict[str, object] = {"trunk": trunk, "trunkfreq": trunkfreq,
                                 "trunktimestamps": trunktimestamps, "auth": auth,
                                 "requirecalltoken": requirecalltoken, "qualify": qualify}
    if codecs:
        common["codecs"] = tuple(codecs)
    cfg_a = seed_site("office-a", **common, **({"secret": secret} if secret else {}))
    cfg_b = seed_site("office-b", **common, **({"secret": secret_b} if secret_b else {}))
    lab_ = Lab(root)
    try:
        a = lab_.instance("office-a", cfg_a).start()
        click.echo(f"office-a up: pid {a.pid}, config {a.etc_path}, log {a.log_path}")
        if office_b == "asterisk":
            b = lab_.instance("office-b", cfg_b).start()
            click.echo(f"office-b up: pid {b.pid}, config {b.etc_path}, log {b.log_path}")
            if wait and qualify not in ("no", "0"):
                peer = a.wait_peer_ok("office-b", timeout=30)
                click.echo(f"office-a sees office-b {peer.status} ({peer.latency_ms} ms)")
    except LabError as exc:
        _fail(exc)
    # the instances are daemons: keep them running after this process exits
    from iaxgw.sim.lab import lab as lab_mod
    lab_mod._STARTED.clear()


@lab.command("cli")
@root_option
@click.argument("name")
@click.argument("command", nargs=-1, required=True)
def cli_cmd(root: str | None, name: str, command: tuple[str, ...]) -> None:
    """Run an Asterisk CLI command on instance NAME, e.g. office-a "iax2 show peers"."""
    inst = _instance(Lab(root), name)
    if inst.pid is None:
        raise click.ClickException(f"{name} is not running (iaxgw lab up)")
    try:
        click.echo(inst.cli(" ".join(command)), nl=False)
    except LabError as exc:
        _fail(exc)


@lab.command()
@root_option
def down(root: str | None) -> None:
    """Stop every running lab instance."""
    try:
        names = Lab(root).down()
    except LabError as exc:
        _fail(exc)
        return
    click.echo("stopped: " + (", ".join(names) if names else "nothing was running"))


@lab.command()
@root_option
def status(root: str | None) -> None:
    """Provisioning state, running instances and their IAX2 peers."""
    lab_ = Lab(root)
    info = lab_.info()
    if info is None:
        click.echo(f"lab root {lab_.root}: not provisioned (iaxgw lab provision)")
    else:
        click.echo(f"lab root {lab_.root}: {info.asterisk_version} "
                   f"(provisioned {time.strftime('%F %T', time.localtime(info.created))})")
        running = lab_.running()
        if not running:
            click.echo("no instance running")
        for inst in running:
            try:
                peers = inst.peers()
                desc = ", ".join(f"{p.name} {p.status}"
                                 + (f" ({p.latency_ms} ms)" if p.latency_ms is not None else "")
                                 for p in peers.values())
                calls = inst.active_calls()
            except LabError as exc:
                desc, calls = f"CLI error: {exc}", 0
            click.echo(f"{inst.name}: pid {inst.pid}, {calls} active calls, peers: {desc}")


@lab.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--seconds", type=float, default=10.0, show_default=True)
@click.option("--filter", "capture_filter", default=DEFAULT_FILTER, show_default=True)
@click.option("--interface", default="lo", show_default=True)
def capture(file: str, seconds: float, capture_filter: str, interface: str) -> None:
    """Capture the trunk on loopback into FILE for N seconds and print tshark's counts."""
    try:
        with Capture(file, capture_filter, interface):
            time.sleep(seconds)
        counts = decode_counts(file)
    except CaptureError as exc:
        _fail(exc)
        return
    click.echo(f"{file}: {counts.total} datagrams in {seconds:.1f} s "
               f"({counts.total / seconds:.0f}/s): full {counts.full}, mini {counts.mini}, "
               f"trunk {counts.trunk} ({counts.trunk_entries} media frames in trunks)")
    for (src, dst), n in sorted(counts.by_direction.items()):
        click.echo(f"  {src} -> {dst}: {n}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(lab())
