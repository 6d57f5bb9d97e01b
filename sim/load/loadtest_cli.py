"""``iaxgw loadtest``: the click layer over :func:`iaxgw.sim.load.loadtest.run_loadtest`.

Also :func:`lab_main`, the default action of ``iaxgw lab`` (plugged into ``sim/lab/lab_cli.py``):
a whole two-site run on loopback from the embedded seed configs, with or without a real Asterisk.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from iaxgw.gateway.iax2.address import split_hostport
from iaxgw.gateway.serve.serve_cli import IMPAIR_HELP, impair_cb, metrics_addr_cb, pick_metrics_addr
from iaxgw.sim.load.loadtest_plan import (
    LoadtestOptions,
    PlanError,
    parse_bind_list,
    parse_duration,
    parse_extens,
)

F = TypeVar("F", bound=Callable[..., Any])


T = TypeVar("T")
Callback = Callable[[click.Context | None, click.Parameter | None, str | None], Any]


def _parsed(parse: Callable[[str], T]) -> Callback:
    """A click callback: the option's text through ``parse`` (a PlanError or an AddressError,
    both ValueErrors, is a bad value)."""
    def callback(ctx: click.Context | None, param: click.Parameter | None,
                 value: str | None) -> T | None:
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return callback


_duration = _parsed(parse_duration)
_extens = _parsed(parse_extens)
_hostport = _parsed(split_hostport)
_binds = _parsed(parse_bind_list)
MASTER_PORT = 5557          # Locust's default master port
_hostport_master = _parsed(lambda text: split_hostport(text, MASTER_PORT))


def _cluster(master: bool, expect: int | None, bind: tuple[str, int], impair: Any,
             kw: dict[str, Any]) -> int:
    """``loadtest --master``: checked here, run by iaxgw.sim.scale.cluster (Locust)."""
    if not master or expect is None:
        raise click.UsageError("--master and --expect-workers go together")
    if impair is not None or kw.get("bind") or kw.get("shards"):
        raise click.UsageError("--master: --impair, --bind and --shards belong to the workers "
                               "(each worker is one shard from its own --bind)")
    if kw.get("pcap") is not None:
        raise click.UsageError("--master: --pcap captures on one machine; the workers' datagrams "
                               "are on theirs (capture there, e.g. with dumpcap)")
    opts = build_options(**kw)
    given = [k for k in ("control", "metrics_addr") if getattr(opts, k, None) is not None]
    if given:
        names = ", ".join("--" + k.replace("_", "-") for k in given)
        raise click.UsageError(f"--master: {names}: not with a cluster yet (the workers run "
                               "on other machines); use them on a run on one machine")
    try:
        from iaxgw.sim.scale.cluster import run_master
    except ImportError as exc:
        raise click.UsageError(f"--master needs Locust: pip install 'iaxgw[cluster]' "
                               f"({exc})") from None
    return _guarded(lambda: int(run_master(opts, expect, bind).exit_code))


def common_options(f: F) -> F:
    """Options shared by ``loadtest`` and ``lab`` (the ones that make sense for both)."""
    opts = [
        click.option("--calls", "-l", "calls", type=click.IntRange(1, 30_000), default=10,
                     show_default=True, help="Concurrent calls to reach and hold (SIPp -l)."),
        click.option("--rate", "-r", "rate", type=click.FloatRange(0, 10_000, min_open=True),
                     default=None,
                     help="Call attempts per second (ramp).  [default: calls/5, at least 10]"),
        click.option("--max-pending", type=click.IntRange(1, 10_000), default=None,
                     help="Calls awaiting authentication at the target at once (from its "
                          "AUTHREQ until our AUTHREP arrives, paced on the measured round "
                          "trip); Asterisk refuses a user's 4th (maxauthreq).  [default: 3]"),
        click.option("--allow-underrun", is_flag=True, default=None,
                     help="Pass even when the rate or concurrency asked for was not reached "
                          "(the summary still names what capped it)."),
        click.option("--duration", "-d", "duration", callback=_duration, default="20",
                     show_default=True, metavar="SECONDS|MIN-MAX",
                     help="How long each call stays up once answered (SIPp -d, in seconds)."),
        click.option("--codec", type=click.Choice(["ulaw", "alaw"]), default="ulaw",
                     show_default=True),
        click.option("--trunk/--no-trunk", default=None,
                     help="Send media in trunk (meta) frames.  [default: as the peer entry says]"),
        click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path),
                     default=None,
                     help="Write summary.json, calls.csv, timeseries.csv, plots here."),
        click.option("--quiet", "-q", is_flag=True, help="No live screen, only the final summary."),
        click.option("--json", "json_out", is_flag=True, help="Print summary.json to stdout."),
        click.option("--impair", "impair", callback=impair_cb, default=None, metavar="SPEC",
                     help=IMPAIR_HELP),
        click.option("--total", "-m", "total", type=click.IntRange(1, 10_000_000), default=None,
                     help="Stop after this many call attempts (SIPp -m).  "
                          "[default: one round = --calls]"),
        click.option("--exten", "extens", callback=_extens, default=None,
                     metavar="EXTEN|LO-HI",
                     help="Extensions to dial, round-robin.  [default: the peer's echo "
                          "extension]"),
        click.option("--media", default="tone", show_default=True,
                     metavar="tone|silence|FILE.wav",
                     help="What each call sends; 'tone' gives every call its own audio "
                          "signature (only then is the audio checked)."),
        click.option("--trunktimestamps/--no-trunktimestamps", default=None,
                     help="Add a timestamp to each trunk entry.  [default: as [general] says]"),
        click.option("--encryption/--no-encryption", default=None,
                     help="Offer and require AES-128 (encryption = aes128 + forceencryption "
                          "for the peer): a target that will not encrypt fails the call.  "
                          "[default: as the peer entry says]"),
        click.option("--mode", type=click.Choice(["direct", "hairpin"]), default="direct",
                     show_default=True,
                     help="hairpin: the target dials every call back to us and we echo it."),
        click.option("--max-failed", type=click.IntRange(0), default=0, show_default=True,
                     help="Exit 0 only when failed calls <= this (and the audio checks pass)."),
        click.option("--setup-timeout", type=click.FloatRange(0.1, 300), default=10.0,
                     show_default=True,
                     help="Seconds from NEW to ANSWER before a call counts as TIMEOUT."),
        click.option("--seed", type=int, default=1, show_default=True,
                     help="Random seed for MIN-MAX durations."),
        click.option("--metrics-port", "metrics_port", type=click.IntRange(0, 65535),
                     default=None, metavar="N",
                     help="Serve the run's Prometheus metrics on 127.0.0.1:N (0 = any free "
                          "port)."),
        click.option("--metrics-addr", "metrics_addr", callback=metrics_addr_cb, default=None,
                     metavar="HOST:PORT",
                     help="Serve the run's Prometheus metrics on HOST:PORT (port 0 = any)."),
        click.option("--pcap", "pcap", type=click.Path(dir_okay=False, path_type=Path),
                     default=None, metavar="FILE",
                     help="Write every datagram sent and received to this pcap file (0600)."),
        click.option("--control", "control", type=click.Path(dir_okay=False), default=None,
                     metavar="PATH",
                     help="Open a control socket here while the run goes: `iaxgw show ... "
                          "--control PATH` and `iaxgw ctl --control PATH rate N|pause|resume|"
                          "stop`.  [default: none]"),
        click.option("--step", type=click.IntRange(1, 30_000), default=None,
                     help="Capacity search: start with this many calls and add as many every "
                          "--step-time until --stop-when trips or --max-calls held."),
        click.option("--step-time", type=click.FloatRange(2, 3600), default=10.0,
                     show_default=True, help="Capacity search: seconds per step."),
        click.option("--max-calls", type=click.IntRange(1, 30_000), default=None,
                     help="Capacity search: the last step."),
        click.option("--stop-when", default=None, metavar="EXPR",
                     help="Capacity search: the rule a step must not trip, over mos_p5, "
                          "mos_p50, loss_pct, jitter_p95_ms, setup_p95_ms, setup_fail_pct, "
                          "calls_up.  [default: setup_fail_pct > 1 or loss_pct > 1 or "
                          "mos_p5 < 3.5]"),
        click.option("--realtime/--no-realtime", default=None,
                     help="Run the load tester's media loop (each shard's) at real-time "
                          "priority, as `asterisk -p` runs Asterisk's: ahead of everything "
                          "else on this machine, the far end included.  Needs root or "
                          "CAP_SYS_NICE.  [default: off; on for `iaxgw lab`]"),
        click.option("--shards", type=click.IntRange(1, 256), default=None,
                     help="Load-test processes, each with its own source address (--bind "
                          "list or range).  [default: one per --bind address; one when the "
                          "calls fit one address's 2048 call numbers, else one per core]"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


#: Options that choose who we are and whom we call: ``lab`` sets them itself.
ROLE_OPTIONS = ("config_dir", "site", "peer", "peer_host", "bind", "keys_dir")


def role_options(f: F) -> F:
    """Options that pick our site and the peer we call (``loadtest``; ``lab`` refuses them
    with the reason)."""
    opts = [
        click.option("--site", type=click.Choice(["office-a", "office-b"]), default=None,
                     help="Play this site of the seed's trunk from the embedded config, calling "
                          "the other one (office-a 127.0.0.10, office-b 127.0.0.20).  "
                          "[default: office-b]"),
        click.option("--keys", "keys_dir", type=click.Path(exists=True, file_okay=False,
                                                           path_type=Path),
                     default=None, metavar="DIR",
                     help="RSA keys for auth = rsa (NAME.pub, NAME.key).  [default: keys/ "
                          "beside iax.conf]"),
        click.option("--config", "config_dir", type=click.Path(exists=True, file_okay=False,
                     path_type=Path), default=None,
                     help="Folder with our iax.conf.  [default: the embedded seed of --site]"),
        click.option("--peer", default=None,
                     help="The iax.conf entry to call.  [default: the other site]"),
        click.option("--peer-host", callback=_hostport, default=None, metavar="HOST[:PORT]",
                     help="Call this address instead of the peer entry's host."),
        click.option("--bind", callback=_binds, default=None,
                     metavar="HOST[:PORT]|A,B,..|A-B",
                     help="Our local address, or one per shard as a list or an IPv4 range "
                          "(127.0.0.20-127.0.0.23).  [default: the config's bindaddr/bindport; "
                          "more shards take the next loopback addresses]"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def build_options(**kw: Any) -> LoadtestOptions:
    """CLI keyword arguments -> checked :class:`LoadtestOptions` (``click.UsageError`` if bad)."""
    opts = LoadtestOptions()
    kw["metrics_addr"] = pick_metrics_addr(kw.pop("metrics_port", None),
                                           kw.get("metrics_addr"))
    binds = kw.pop("bind", None)
    if binds:
        opts.bind = binds[0]
        opts.binds = list(binds) if len(binds) > 1 else None
    for key, value in kw.items():
        if value is None:
            continue
        if not hasattr(opts, key):
            raise TypeError(f"unknown load test option {key!r}")
        setattr(opts, key, value)
    if opts.json_out or not sys.stdout.isatty():
        opts.live = False
    if opts.quiet:
        opts.live = False
    opts.hot_keys = _stdin_is_terminal()
    try:
        opts.check()
    except PlanError as exc:
        raise click.UsageError(str(exc)) from None
    return opts


def _stdin_is_terminal() -> bool:
    """The hot keys (+ - * / p q) are read only from a terminal."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        return False


EXIT_HELP = ("Exit codes: 0 pass; 1 failed calls, audio not verified or a target not "
             "reached; 2 usage or configuration error; 3 could not run (our address taken, "
             "the target never answered anything); 130 interrupted by SIGINT (143 SIGTERM).")


def _cannot_run(message: str) -> int:
    """A run that could not take place: the reason on stderr, exit 3."""
    from iaxgw.sim.load.loadtest import EXIT_CANNOT_RUN

    click.echo(f"Error: {message}", err=True)
    return EXIT_CANNOT_RUN


def _guarded(run: Callable[[], int]) -> int:
    """Run a load test, mapping what went wrong onto the exit codes (EXIT_HELP)."""
    from iaxgw.sim.load.loadtest import EXIT_SIGINT, ConfigUsageError, LoadtestError

    try:
        return run()
    except (ConfigUsageError, PlanError) as exc:
        raise click.UsageError(str(exc)) from None
    except LoadtestError as exc:
        return _cannot_run(str(exc))
    except KeyboardInterrupt:
        click.echo("iaxgw: interrupted", err=True)
        return EXIT_SIGINT


def cluster_options(f: F) -> F:
    """``--master``: spread the run over ``iaxgw worker`` machines (``iaxgw[cluster]``)."""
    opts = [
        click.option("--master", "master", is_flag=True,
                     help="Be the master of a cluster run: wait for --expect-workers "
                          "`iaxgw worker`s, give each a shard, merge (pip install "
                          "'iaxgw[cluster]')."),
        click.option("--expect-workers", type=click.IntRange(1, 256), default=None,
                     help="--master: how many workers to wait for."),
        click.option("--master-bind", callback=_hostport_master, default=None,
                     metavar="HOST[:PORT]",
                     help="--master: where the workers connect.  [default: 0.0.0.0:5557]"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@click.command("loadtest", epilog=EXIT_HELP)
@common_options
@role_options
@click.option("--through", "through", type=click.Path(dir_okay=False), default=None,
              metavar="PATH",
              help="Run through the running `iaxgw serve` whose control socket is PATH: its "
                   "endpoint, address and peer place the calls while it goes on answering.")
@cluster_options
def loadtest(through: str | None = None, **kw: Any) -> None:
    """Place many concurrent IAX2 calls at a peer and measure them (exit 0 = all good)."""
    from iaxgw.sim.load.loadtest import run_loadtest

    impair = kw.pop("impair", None)
    if through is not None:
        _through_usage(kw, impair)
    master, expect = kw.pop("master"), kw.pop("expect_workers")
    master_bind = kw.pop("master_bind") or ("0.0.0.0", MASTER_PORT)
    if master or expect is not None:
        if through is not None:
            raise click.UsageError("--through runs inside one serve; --master spreads the "
                                   "load over workers: give one of them")
        sys.exit(_cluster(master, expect, master_bind, impair, kw))
    opts = build_options(**kw)
    if through is not None:
        from iaxgw.sim.load.loadtest_through import run_through

        sys.exit(_guarded(lambda: run_through(through, opts)))
    if opts.shard_count() > 1:
        from iaxgw.sim.scale.shards import run_sharded_loadtest

        sys.exit(_guarded(lambda: run_sharded_loadtest(opts, impair=impair).exit_code))
    sys.exit(_guarded(lambda: run_loadtest(opts, impair=impair).exit_code))


#: what a run through a serve cannot take (the serve's own site, endpoint and socket)
THROUGH_EXCLUDES = (*ROLE_OPTIONS, "trunk", "trunktimestamps", "control", "pcap",
                    "metrics_port", "metrics_addr")


def _through_usage(kw: dict[str, Any], impair: Any) -> None:
    given = [k for k in THROUGH_EXCLUDES if kw.get(k) is not None]
    if impair is not None:
        given.append("impair")
    if kw.get("mode") == "hairpin":
        given.append("mode hairpin")
    if given:
        raise click.UsageError(f"{_flags(given)}: a load test --through a serve uses the "
                               "serve's own site, peer, address, trunk and socket (give them "
                               "to serve)")


def _flags(keys: list[str]) -> str:
    """Option keys as the flags the user typed (config_dir -> --config)."""
    return ", ".join("--" + k.removesuffix("_dir").replace("_", "-") for k in keys)


def lab_main(*, asterisk: bool = False, **kw: Any) -> int:
    """``iaxgw lab``'s default action: serve + loadtest on loopback (or loadtest vs Asterisk)."""
    from iaxgw.sim.lab.loadtest_lab import lab_ramp, run_lab

    given = [k for k in ROLE_OPTIONS if kw.pop(k, None) is not None]
    if given:
        raise click.UsageError(
            f"{_flags(given)}: `iaxgw lab` plays both sites itself (the load tester as office-a "
            "against serve as office-b, or with --asterisk as office-b against the lab's "
            "Asterisk office-a); use `iaxgw loadtest` to choose them")
    impair = kw.pop("impair", None)
    ctx = click.get_current_context(silent=True)
    source = ctx.get_parameter_source("duration") if ctx is not None else None
    note = lab_ramp(kw, duration_given=source not in (None, click.core.ParameterSource.DEFAULT))
    opts = build_options(**kw)
    if note:
        opts.warnings.insert(0, note)
    return _guarded(lambda: run_lab(opts, asterisk=asterisk, impair=impair))


@click.command("worker", epilog=EXIT_HELP)
@click.option("--master", "master", callback=_hostport_master, required=True,
              metavar="HOST[:PORT]", help="The master's address (port 5557 by default).")
@click.option("--bind", "bind", callback=_hostport, required=True, metavar="HOST[:PORT]",
              help="This worker's source address (its shard's; the target must permit it).")
def worker(master: tuple[str, int], bind: tuple[str, int]) -> None:
    """Run one shard of an `iaxgw loadtest --master` cluster run (pip install 'iaxgw[cluster]')."""
    try:
        from iaxgw.sim.scale.cluster import run_worker
    except ImportError as exc:
        raise click.UsageError(f"worker needs Locust: pip install 'iaxgw[cluster]' "
                               f"({exc})") from None
    sys.exit(run_worker(master, bind))
