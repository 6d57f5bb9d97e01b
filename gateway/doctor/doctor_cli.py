"""``iaxgw check`` and ``iaxgw probe``: the trunk doctor's command line (see check.py, probe.py)."""

from __future__ import annotations

import sys

import click

from iaxgw.gateway.doctor.check import check_dirs, findings_json, format_findings, has_errors
from iaxgw.gateway.iax2.address import Addr
from iaxgw.gateway.serve.serve_cli import hostport_cb


@click.command("check")
@click.argument("directory", type=click.Path())
@click.option("--remote", "remote", type=click.Path(), default=None,
              help="The other site's config folder (iax.conf, extensions.conf), or one of "
                   "its files.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def check(directory: str, remote: str | None, as_json: bool) -> None:
    """Explain what is wrong with the trunk configured in DIRECTORY (and --remote).

    DIRECTORY may also be a file in it (iax.conf, extensions.conf).

    Exit code 1 when an error is found.  A local entry is paired with the remote entry named by
    its username= (and whose username= names it), else by one of the two names, else by
    host/bindaddr, else when each side has exactly one trunk entry.
    """
    findings = check_dirs(directory, remote)
    click.echo(findings_json(findings) if as_json else format_findings(findings))
    sys.exit(1 if has_errors(findings) else 0)


@click.command("probe")
@click.argument("target", callback=hostport_cb(4569))
@click.option("--peer", required=True, help="Our entry name for the remote (its [section]).")
@click.option("--config", "config_dir", type=click.Path(file_okay=False), default=None,
              help="Our config folder: username, secret, codecs, trunk, bindaddr come from it.")
@click.option("--bind", callback=hostport_cb(0), default=None,
              help="Local ADDR[:PORT] (default: the config's bindaddr and bindport, else any).")
@click.option("--exten", default=None, help="An echo extension: test media for ~2 s.")
@click.option("--username", default=None, help="Override the USERNAME we send.")
@click.option("--secret", default=None, help="Override our secret.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def probe(target: Addr, peer: str, config_dir: str | None, bind: Addr | None, exten: str | None,
          username: str | None, secret: str | None, as_json: bool) -> None:
    """Talk to the live peer at TARGET (HOST[:PORT]) step by step; say where it stops."""
    from iaxgw.gateway.doctor.probe import run_probe

    rep = run_probe(target, peer, config_dir=config_dir, bind=bind, exten=exten,
                    username=username, secret=secret)
    click.echo(rep.to_json() if as_json else rep.format())
    sys.exit(0 if rep.ok else 1)
