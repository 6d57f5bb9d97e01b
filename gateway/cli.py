"""The ``iaxgw`` command line: a thin click layer over functions the tests call directly.

Sub-command groups live beside the code they drive and are attached here.
"""

from __future__ import annotations

import logging
import sys

import click

from iaxgw.gateway import __version__


def _is_verbose_flag(arg: str) -> bool:
    return arg == "--verbose" or (len(arg) > 1 and arg[0] == "-" and set(arg[1:]) == {"v"})


class GlobalOptionsGroup(click.Group):
    """A group whose own ``-v``/``--verbose`` may also come after the sub-command
    (``iaxgw loadtest --calls 5 -v``): such flags are moved before it, up to a ``--``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        hoisted: list[str] = []
        rest: list[str] = []
        seen_command = False
        for i, arg in enumerate(args):
            if arg == "--":
                rest.extend(args[i:])
                break
            if seen_command and _is_verbose_flag(arg):
                hoisted.append(arg)
                continue
            if not arg.startswith("-"):
                seen_command = True
            rest.append(arg)
        return super().parse_args(ctx, hoisted + rest)


@click.group(cls=GlobalOptionsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="iaxgw")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """iaxgw: IAX2 trunk gateway, remote-site emulator and load tester."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _attach() -> None:
    """Attach the sub-commands, each defined beside the code it drives."""
    from iaxgw.gateway.doctor.doctor_cli import check, probe
    from iaxgw.gateway.serve.ctl_cli import ctl
    from iaxgw.gateway.serve.serve_cli import serve, show
    from iaxgw.sim.lab.lab_cli import lab
    from iaxgw.sim.load.loadtest_cli import loadtest, worker

    for command in (lab, serve, show, ctl, loadtest, worker, check, probe):
        main.add_command(command)


_attach()

if __name__ == "__main__":  # pragma: no cover
    main()
