"""The on-chain wallet's commands: ``node init``, ``newaddress``, ``withdraw``, ``listfunds``/``listunspent``,
``listtransactions``. All but ``node init`` are one REST call to the daemon running on --datadir.
"""

from __future__ import annotations

from pathlib import Path

import click

from lightspeed.cli.common import Amount, datadir_option, print_json, with_example
from lightspeed.cli.node_cmd import _call, _datadir, _errors_to_exit, node_group
from lightspeed.errors import UsageError


@node_group.command("init")
@click.option("--datadir", "datadir_option", type=click.Path(file_okay=False, path_type=Path),
              help="The node's data directory (else the global --datadir).")
@click.option("--network", type=click.Choice(["bitcoin", "testnet", "signet", "regtest"]), default="regtest",
              show_default=True, help="The network whose node key is shown (the key path's coin type).")
@click.option("--mnemonic-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Restore the BIP 39 words in this file instead of making new ones.")
@click.option("--passphrase-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Encrypt the mnemonic at rest with the passphrase in this file (start then needs it too).")
@click.option("--words", type=click.Choice(["12", "24"]), default="24", show_default=True,
              help="How many words a new mnemonic has.")
@click.pass_context
@_errors_to_exit
@with_example("lightspeed node init --datadir ~/.lightspeed/alice --words 12",
              "lightspeed node init --datadir ~/.lightspeed/restored --mnemonic-file words.txt")
def init(ctx: click.Context, datadir_option: Path | None, network: str, mnemonic_file: Path | None,
         passphrase_file: Path | None, words: str) -> None:
    """Create a node's keys in a new datadir (a BIP 39 mnemonic), without starting it.

    New words are printed once, on stderr, to write down; stdout gets the node id as JSON.
    """
    from lightspeed.api.daemon import mnemonic_banner
    from lightspeed.api.datadir import Datadir
    from lightspeed.api.node_secrets import read_text_file
    from lightspeed.bitcoin.network import network_by_name
    from lightspeed.crypto.secp256k1 import pubkey_from_privkey
    from lightspeed.store import open_store

    datadir = Datadir((datadir_option or _datadir(ctx)).expanduser())
    if datadir.has_secret():
        raise UsageError(f"--datadir {datadir.path}: it already has a node secret ({datadir.secret_file()})")
    passphrase = None if passphrase_file is None else read_text_file(passphrase_file, "--passphrase-file")
    restore = None if mnemonic_file is None else read_text_file(mnemonic_file, "--mnemonic-file")
    keys = datadir.keys(network_by_name(network), passphrase=passphrase, restore=restore, words=int(words))
    open_store(datadir.path).close()  # a datadir with a key and no store is refused by `node start`
    datadir.ensure_token()
    if keys.new_mnemonic is not None:
        click.echo(mnemonic_banner(keys.new_mnemonic, datadir), err=True)
    print_json({"node_id": pubkey_from_privkey(keys.node_privkey).hex(), "datadir": str(datadir.path),
                "restored": restore is not None, "encrypted": passphrase is not None})


@click.command("newaddress")
@click.option("--type", "kind", type=click.Choice(["p2wpkh", "p2tr"]), default="p2wpkh", show_default=True,
              help="p2wpkh (BIP 84) or p2tr (BIP 86, spent by the BIP 341 key path).")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice newaddress", "lightspeed newaddress --type p2tr")
def newaddress(ctx: click.Context, kind: str) -> None:
    """A fresh address of the node's on-chain wallet."""
    print_json(_call(ctx, "POST", "/v1/addresses", {"type": kind}))


@click.command("withdraw")
@click.argument("address")
@click.argument("amount")
@click.option("--feerate", "feerate_per_kw", type=click.IntRange(253, 10_000_000),
              help="Fee rate in sat per 1000 weight units (default: the chain's estimate).")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice withdraw bcrt1q... 50000",
              "lightspeed withdraw bcrt1q... all --feerate 2500")
def withdraw(ctx: click.Context, address: str, amount: str, feerate_per_kw: int | None) -> None:
    """Send AMOUNT_SAT (or all: every spendable coin, fee deducted) from the wallet to ADDRESS."""
    body: dict[str, object] = {"address": address}
    if amount == "all":
        body["all"] = True
    else:
        body["amount_sat"] = Amount("sat", minimum=294).convert(amount, None, ctx)
    if feerate_per_kw is not None:
        body["feerate_per_kw"] = feerate_per_kw
    print_json(_call(ctx, "POST", "/v1/withdraw", body))


@click.command("listfunds")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice listfunds")
def listfunds(ctx: click.Context) -> None:
    """The wallet's unspent outputs (address, key path, confirmations, whether it spends them)."""
    print_json(_call(ctx, "GET", "/v1/funds"))


@click.command("listunspent")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice listunspent")
def listunspent(ctx: click.Context) -> None:
    """The wallet's unspent outputs (the same as listfunds)."""
    print_json(_call(ctx, "GET", "/v1/funds"))


@click.command("listtransactions")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice listtransactions")
def listtransactions(ctx: click.Context) -> None:
    """The wallet's on-chain transactions, oldest first: received, sent, net and fee in sat."""
    print_json(_call(ctx, "GET", "/v1/transactions"))


def register(cli: click.Group) -> None:
    for command in (newaddress, withdraw, listfunds, listunspent, listtransactions):
        cli.add_command(command)
