"""The ``iaxgw`` command line: a thin click layer over functions the tests call directly.

Sub-command groups live beside the code they drive and are attached here.
"""

from __future__ import annotations

import logging
import sys

import click

from iaxgw.gateway import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="iaxgw")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """iaxgw: IAX2 trunk gateway, remote-site emulator and load tester."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _attach() -> None:
    """Attach the sub-commands that exist in this build."""
    import importlib

    for modname, attr in (
        ("iaxgw.sim.lab_cli", "lab"),
        ("iaxgw.gateway.serve_cli", "serve"),
        ("iaxgw.gateway.serve_cli", "show"),
        ("iaxgw.sim.loadtest_cli", "loadtest"),
        ("iaxgw.gateway.core_cli", "decode"),
        ("iaxgw.gateway.core_cli", "g711"),
        ("iaxgw.gateway.doctor_cli", "check"),
        ("iaxgw.gateway.doctor_cli", "probe"),
    ):
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:
                raise
            continue
        main.add_command(getattr(mod, attr))


_attach()

if __name__ == "__main__":  # pragma: no cover
    main()
