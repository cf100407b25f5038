"""``lightspeed backup export``: the static channel backup of the daemon running on --datadir."""

from __future__ import annotations

import base64
from pathlib import Path

import click

from lightspeed.cli.common import datadir_option, print_json, with_example
from lightspeed.cli.node_cmd import _call, _errors_to_exit
from lightspeed.errors import UsageError


@click.group("backup")
def backup_group() -> None:
    """The static channel backup: with the mnemonic, it recovers the open channels' funds.

    \b
    Example:
      lightspeed --datadir ~/.lightspeed/alice backup export --output alice-channels.backup
    """


@backup_group.command("export")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the backup file here (else print it, base64, in the JSON answer).")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice backup export --output alice-channels.backup",
              "lightspeed backup export")
def export(ctx: click.Context, output: Path | None) -> None:
    """Export the encrypted channel backup (the daemon also keeps DATADIR/channel.backup up to date)."""
    answer = _call(ctx, "GET", "/v1/backup")
    if output is None:
        print_json(answer)
        return
    from lightspeed.node.backup import write_atomically  # not at import: `--help` stays light

    try:
        write_atomically(output, base64.b64decode(answer["backup"]))
    except OSError as exc:
        raise UsageError(f"--output {output}: {exc.strerror or exc}") from None
    print_json({"output": str(output), "channels": answer["channels"], "version": answer["version"]})
