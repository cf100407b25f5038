"""The ``lightspeed`` command: a click group whose subcommands live in sibling modules.

Errors the user can fix are printed as ``error: <reason>`` on stderr with a
non-zero exit status, never as a traceback.
"""

from __future__ import annotations

import click

from lightspeed import __version__
from lightspeed.cli.demo import demo
from lightspeed.cli.invoice import invoice
from lightspeed.cli.route import route


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lightspeed")
def cli() -> None:
    """Lightspeed: a Lightning Network micropayment stack."""


cli.add_command(demo)
cli.add_command(invoice)
cli.add_command(route)


def main() -> None:
    cli()
