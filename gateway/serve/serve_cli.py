"""``iaxgw serve`` and ``iaxgw show``: a thin click layer over :mod:`iaxgw.gateway.serve.app`.

Exit codes: 0 clean stop (SIGINT/SIGTERM), 1 runtime or configuration error (one line on
stderr, ``file:line: reason`` for config files), 2 bad command-line usage.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from iaxgw.gateway.driver.realtime import RT_PRIORITY, realtime
from iaxgw.gateway.iax2.address import parse_hostport
from iaxgw.gateway.serve.control import ControlError, default_control_path, query
from iaxgw.gateway.serve.show import format_show

log = logging.getLogger("iaxgw.serve")


def _fail(prog: str, message: str) -> None:
    click.echo(f"iaxgw {prog}: error: {message}", err=True)
    sys.exit(1)


def hostport_cb(default_port: int) -> Any:
    """A click callback: ``HOST[:PORT]`` -> (numeric address, port) by ``parse_hostport``."""
    def cb(ctx: click.Context | None, param: click.Parameter | None,
           value: str | None) -> tuple[str, int] | None:
        if value is None:
            return None
        try:
            return parse_hostport(value, default_port)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return cb


def impair_cb(ctx: click.Context | None, param: click.Parameter | None,
              value: str | None) -> Any:
    """``--impair SPEC`` -> :class:`~iaxgw.gateway.driver.impair.ImpairSpec` (BadParameter if
    bad)."""
    if value is None:
        return None
    from iaxgw.gateway.driver.impair import ImpairError, ImpairSpec

    try:
        return ImpairSpec.parse(value)
    except ImpairError as exc:
        raise click.BadParameter(str(exc)) from None


def metrics_addr_cb(ctx: click.Context | None, param: click.Parameter | None,
                    value: str | None) -> tuple[str, int] | None:
    """``--metrics-addr HOST:PORT`` -> (address, port); the port is required (0 = any)."""
    if value is None:
        return None
    host, sep, port_s = value.strip().rpartition(":")
    if not sep or not port_s.isdigit() or int(port_s) > 65535 or (
            ":" in host and not host.startswith("[")):
        raise click.BadParameter(f"{value!r}: give HOST:PORT or [V6]:PORT (port 0..65535, "
                                 "0 = any free port)")
    try:
        address = parse_hostport(host)[0]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return address, int(port_s)


def pick_metrics_addr(port: int | None, addr: tuple[str, int] | None) -> tuple[str, int] | None:
    """``--metrics-addr`` wins; ``--metrics-port N`` alone is 127.0.0.1:N; both: usage error."""
    if port is not None and addr is not None:
        raise click.UsageError("give --metrics-port or --metrics-addr, not both")
    if addr is not None:
        return addr
    return None if port is None else ("127.0.0.1", port)


IMPAIR_HELP = ("A bad network on our socket: loss=5%,burst=3,delay=40ms,jitter=20ms,reorder=1%,"
               "dup=1%[,gap=50ms,dist=uniform|normal,seed=N,dir=send|recv|both] (dir default "
               "both: each way sees the whole spec).")


@click.command("serve")
@click.option("--peer", "peer", required=True, metavar="NAME",
              help="The iax.conf peer/friend entry of the remote site (e.g. office-a).")
@click.option("--config", "config_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, metavar="DIR",
              help="Folder with iax.conf, extensions.conf [and phones.conf].  "
                   "[default: embedded office-b of the seed, on loopback]")
@click.option("--bind", "bind", callback=hostport_cb(4569), default=None,
              metavar="ADDR[:PORT]",
              help="Local address.  [default: [general] bindaddr:bindport; embedded "
                   "config: 127.0.0.20:4569]")
@click.option("--peer-host", "peer_host", callback=hostport_cb(4569), default=None,
              metavar="HOST[:PORT]",
              help="Where the --peer is (overrides its host=/port=).  "
                   "[embedded config: 127.0.0.10:4569]")
@click.option("--pcap", "pcap", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE", help="Write every datagram sent and received to this pcap file.")
@click.option("--metrics-port", "metrics_port", type=click.IntRange(0, 65535), default=None,
              metavar="N", help="Serve Prometheus metrics on 127.0.0.1:N (0 = any free port).")
@click.option("--metrics-addr", "metrics_addr", callback=metrics_addr_cb, default=None,
              metavar="HOST:PORT",
              help="Serve Prometheus metrics on HOST:PORT ([V6]:PORT; port 0 = any free port).")
@click.option("--debug-frames", is_flag=True, help="Log every decoded frame (one line each).")
@click.option("--control", "control", type=click.Path(dir_okay=False), default=None,
              metavar="PATH", help="Control socket for `iaxgw show`.  [default: "
                                   "/run/iaxgw/iaxgw.sock for root, else "
                                   "$XDG_RUNTIME_DIR/iaxgw/iaxgw.sock]")
@click.option("--phones", "phones", type=click.Path(dir_okay=False, path_type=Path),
              default=None, metavar="FILE",
              help="phones.conf: how the emulated local phones behave.  "
                   "[default: DIR/phones.conf if present]")
@click.option("--spool", "spool", type=click.Path(file_okay=False, path_type=Path),
              default=None, metavar="DIR", help="Where Voicemail() and recordings are written.")
@click.option("--impair", "impair", callback=impair_cb, default=None, metavar="SPEC",
              help=IMPAIR_HELP)
@click.option("--keys", "keys", type=click.Path(file_okay=False, path_type=Path),
              default=None, metavar="DIR",
              help="RSA keys for auth = rsa (NAME.pub, NAME.key).  [default: keys/ beside "
                   "iax.conf]")
@click.option("--realtime/--no-realtime", "realtime_on", default=False, show_default=True,
              help="Run at real-time priority (SCHED_RR), as `asterisk -p` (highpriority); "
                   "needs root or CAP_SYS_NICE, else serve says so and runs as usual.")
@click.option("--realtime-priority", "realtime_priority", type=click.IntRange(1, 99),
              default=RT_PRIORITY, show_default=True, metavar="N",
              help="The SCHED_RR priority --realtime takes (1-99; Asterisk's is 10).")
def serve(peer: str, config_dir: Path | None, bind: tuple[str, int] | None,
          peer_host: tuple[str, int] | None, pcap: Path | None, metrics_port: int | None,
          metrics_addr: tuple[str, int] | None,
          debug_frames: bool, control: str | None, phones: Path | None,
          spool: Path | None, impair: Any = None, keys: Path | None = None,
          realtime_on: bool = False, realtime_priority: int = RT_PRIORITY) -> None:
    """Run as one site of the trunk (by default the seed's office-b) until SIGINT/SIGTERM."""
    from iaxgw.gateway.serve.app import GatewayApp, PeerNotFound, ServeOptions, StartError, run_app

    opts = ServeOptions(peer=peer, config_dir=config_dir, bind=bind, peer_host=peer_host,
                        pcap=pcap, metrics_addr=pick_metrics_addr(metrics_port, metrics_addr),
                        debug_frames=debug_frames,
                        control=control or default_control_path(), phones=phones, spool=spool,
                        impair=impair, keys=keys)
    try:
        app = GatewayApp.from_options(opts)
    except PeerNotFound as exc:
        raise click.BadParameter(str(exc), param_hint="'--peer'") from None
    except StartError as exc:
        _fail("serve", str(exc))
        return
    app.announce = lambda line: click.echo(f"iaxgw serve: {line}", err=True)
    app.pace_gc = True          # this process is the serve: no full collection stops it
    from iaxgw.sim.load.loadtest_through import LoadtestHost

    # `iaxgw loadtest --through PATH`: load tests placed from this serve's own endpoint
    app.command_hooks.append(LoadtestHost(app).handle)
    if debug_frames:
        logging.getLogger("iaxgw.frames").setLevel(logging.DEBUG)
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        for handler in logging.getLogger().handlers:
            handler.setLevel(logging.DEBUG)
    try:
        with realtime(realtime_on, realtime_priority) as rt:
            if realtime_on:
                app.announce(f"real-time priority (SCHED_RR {realtime_priority}): {rt}")
            code = run_app(app)
    except StartError as exc:
        message = str(exc)
        if message.startswith("cannot bind"):
            message += ("; another process holds it (an Asterisk or another `iaxgw serve` "
                        "playing this site?): stop it, or give --bind ADDR[:PORT]")
            if peer in ("office-a", "office-b"):
                message += (f"; to load-test this site from {peer}'s side run "
                            f"`iaxgw loadtest --site {peer}` instead")
        _fail("serve", message)
        return
    sys.exit(code)


@click.command("show")
@click.argument("what", type=click.Choice(["peers", "channels", "netstats", "stats", "registry",
                                           "users", "peer"]))
@click.argument("name", required=False, default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the raw data as JSON.")
@click.option("--control", "control", type=click.Path(dir_okay=False), default=None,
              metavar="PATH", help="Control socket of the running `iaxgw serve` (or of "
                                   "`iaxgw loadtest --control PATH`).")
def show(what: str, name: str | None, as_json: bool, control: str | None) -> None:
    """Show peers, channels, netstats, stats, registry, users or `peer NAME` of a running
    `iaxgw serve` (or load test), as Asterisk's `iax2 show ...` prints them."""
    if (what == "peer") != (name is not None):
        raise click.UsageError("`show peer` takes the peer's NAME; the others take none")
    path = control or default_control_path()
    try:
        data = query(path, what, name=name) if name is not None else query(path, what)
    except ControlError as exc:
        _fail("show", str(exc))
        return
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(format_show(what, data, name or ""), nl=False)
