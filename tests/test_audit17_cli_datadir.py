"""Issue 17 audit: `--datadir` after the subcommand for EVERY command that talks to a node, and
amounts with unit suffixes in the commands that still took bare integers.

`onion-message stats --datadir DIR` (its own help's example), the `offer` and `refund` node
commands and `chain set-feerate` refused `--datadir` after the subcommand; `refund create`,
`offer pay --amount-msat` and `stream buy --max-msat-per-unit` refused `25sat`.
"""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from lightspeed.chain import RegtestChain
from lightspeed.cli.main import cli

# Commands that never reach a node's datadir: offline codecs, their own embedded network, a URL.
OFFLINE = {"call", "demo", "invoice create", "invoice decode", "invoice encode", "offer decode", "route",
           "serve-example", "stream buy", "stream verify", "multihash verify"}
OFFER = ("lno1pqps7sjqpgtyzm3qv4uxzmtsd3jjqer9wd3hy6tsw35k7msjzfpy7nz5yqcnygrfdej82um5wf5k2uckyypwa3eyt44h6t"
         "xtxquqh7lz5djge4afgfjn7k4rgrkuag0jsd5xvxg")
NODE_ID = "02" + "11" * 32


def leaves(group: click.Group = cli, path: tuple[str, ...] = ()) -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += leaves(command, (*path, name))
        else:
            found.append((" ".join((*path, name)), command))
    return found


def test_every_command_that_talks_to_a_node_takes_datadir_after_its_name() -> None:
    without = {name for name, command in leaves()
               if "--datadir" not in {o for p in command.params for o in getattr(p, "opts", [])}}
    assert without == OFFLINE


@pytest.mark.parametrize("args", [
    ["onion-message", "stats"], ["onion-message", "blinded-path"], ["onion-message", "send", NODE_ID],
    ["offer", "create", "25sat", "tea"], ["offer", "fetch-invoice", OFFER], ["offer", "pay", OFFER],
    ["offer", "pay", OFFER, "--amount-msat", "2sat"], ["refund", "create", "25sat"], ["refund", "list"],
    ["refund", "pay", "lnr1qqqq"],
], ids=" ".join)
def test_the_datadir_given_after_the_command_is_the_one_used(args: list[str], tmp_path: Path) -> None:
    node = tmp_path / "node"
    node.mkdir()
    result = CliRunner().invoke(cli, ["--datadir", str(tmp_path / "elsewhere"), *args, "--datadir", str(node)])
    assert result.exit_code == 1, result.output
    assert f"error: no daemon is running for {node} " in result.output, result.output


def test_amounts_with_units_where_bare_integers_were_required(tmp_path: Path) -> None:
    refused = CliRunner().invoke(cli, ["refund", "create", "25xyz", "--datadir", str(tmp_path)])
    assert refused.exit_code == 2 and "is not an amount" in refused.output, refused.output
    refused = CliRunner().invoke(cli, ["offer", "pay", OFFER, "--amount-msat", "0sat", "--datadir", str(tmp_path)])
    assert refused.exit_code == 2 and "below the minimum of 1 msat" in refused.output, refused.output
    refused = CliRunner().invoke(cli, ["refund", "create", "0", "--datadir", str(tmp_path)])
    assert refused.exit_code == 2 and "below the minimum of 1 msat" in refused.output, refused.output
    refused = CliRunner().invoke(cli, ["stream", "buy", "ws://127.0.0.1:1/x", "--max-msat", "1sat",
                                       "--max-msat-per-unit", "2xyz"])
    assert refused.exit_code == 2 and "'2xyz' is not an amount" in refused.output, refused.output


def test_chain_set_feerate_after_the_command_uses_the_node_s_chain(tmp_path: Path) -> None:
    chain_file = tmp_path / "chain.sqlite"  # DATADIR/../chain.sqlite: where a daemon of DATADIR keeps it
    RegtestChain(str(chain_file)).close()
    node = tmp_path / "node"
    node.mkdir()
    result = CliRunner().invoke(cli, ["chain", "set-feerate", "2500", "--datadir", str(node)])
    assert result.exit_code == 0, result.output
    chain = RegtestChain(str(chain_file))
    try:
        assert chain.estimate_feerate_per_kw() == 2500
    finally:
        chain.close()
