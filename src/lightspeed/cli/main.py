"""The ``lightspeed`` command: a click group whose subcommands live in sibling modules.

Errors the user can fix are printed as ``error: <reason>`` on stderr with a
non-zero exit status, never as a traceback; Ctrl-C is one line and exit 130; output,
amounts and ``--datadir`` follow one scheme (:mod:`lightspeed.cli.common`). The
subcommand modules import their heavy dependencies when they run, so ``--help``
starts fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from lightspeed import __version__
from lightspeed.cli.backup_cmd import backup_group
from lightspeed.cli.common import LightspeedGroup, run_as_program
from lightspeed.cli.demo import demo
from lightspeed.cli.invoice import invoice
from lightspeed.cli.micro_cmd import call, serve_example
from lightspeed.cli.multihash_cmd import multihash
from lightspeed.cli.node_cmd import register as register_node_commands
from lightspeed.cli.offer import offer
from lightspeed.cli.offer_node_cmd import offer_create, offer_fetch_invoice, offer_pay
from lightspeed.cli.onion_cmd import onion_message
from lightspeed.cli.ops_cmd import register as register_ops_commands
from lightspeed.cli.refund_cmd import refund
from lightspeed.cli.route import route
from lightspeed.cli.stream_cmd import stream
from lightspeed.cli.token_cmd import token_group
from lightspeed.cli.wallet_cmd import register as register_wallet_commands


@click.group(cls=LightspeedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lightspeed")
@click.option("--datadir", type=click.Path(file_okay=False, path_type=Path), envvar="LIGHTSPEED_DATADIR",
              default="~/.lightspeed/node", show_default=True,
              help="A node's data directory: where `node start` keeps it, where the other commands find it "
                   "(also accepted after the subcommand).")
@click.pass_context
def cli(ctx: click.Context, datadir: Path) -> None:
    """Lightspeed: a Lightning Network micropayment stack.

    Every command prints JSON (indented); errors are "error: <reason>" on stderr, exit 1.
    Amounts are in the unit their name says (AMOUNT_MSAT, AMOUNT_SAT) or carry it:
    250000msat, 250sat.

    \b
    Example:
      lightspeed node start --datadir ~/.lightspeed/alice     # in its own terminal
      lightspeed getinfo --datadir ~/.lightspeed/alice
    """
    ctx.ensure_object(dict)["datadir"] = datadir


cli.add_command(demo)
cli.add_command(backup_group)
cli.add_command(invoice)
cli.add_command(offer)
cli.add_command(onion_message)
offer.add_command(offer_create)
offer.add_command(offer_fetch_invoice)
offer.add_command(offer_pay)
cli.add_command(refund)
cli.add_command(multihash)
cli.add_command(route)
cli.add_command(stream)
cli.add_command(serve_example)
cli.add_command(call)
cli.add_command(token_group)
register_node_commands(cli, invoice)
register_ops_commands(cli, invoice)
register_wallet_commands(cli)


def main() -> None:
    run_as_program(cli)
