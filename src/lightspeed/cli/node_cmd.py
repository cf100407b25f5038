"""``lightspeed node start``, ``lightspeed chain ...`` and the subcommands that call a daemon's API.

``lightspeed --datadir DIR getinfo|connect|open-channel|channels|invoice new|pay|payments|close|
balance|fund`` (and :mod:`lightspeed.cli.wallet_cmd`'s) each make one REST call (httpx) to the daemon running on DIR and print
its JSON answer on stdout (``channels`` and ``payments`` also as a table with ``--table``).
Anything that goes wrong is ``error: <reason>`` on stderr, exit 1. ``--datadir`` may also follow
the subcommand; amounts take ``msat``/``sat`` suffixes (:mod:`lightspeed.cli.common`). httpx and
the node are imported only when a command runs: ``--help`` stays fast.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar

import click

from lightspeed.api.datadir import ADDRESS_FILE, default_chain_path
from lightspeed.cli.common import (
    INTERRUPT_HINT,
    Amount,
    datadir_option,
    graceful_interrupt,
    print_json,
    segment,
    with_example,
)
from lightspeed.cli.tables import print_table
from lightspeed.errors import LightspeedError, UsageError

P = ParamSpec("P")
R = TypeVar("R")


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(1)


def _errors_to_exit(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn every Lightspeed error into ``error: <reason>`` and exit 1 (no traceback)."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except LightspeedError as exc:
            _fail(str(exc))

    return wrapper


def _datadir(ctx: click.Context) -> Path:
    obj = ctx.find_root().obj
    path = obj.get("datadir") if isinstance(obj, dict) else None
    if path is None:
        raise UsageError("give --datadir DIR or set LIGHTSPEED_DATADIR")
    return Path(path).expanduser()


ANSWER_MARGIN_S = 15  # a request that waits WAIT_S on the daemon gets its answer within this much more


def _call(ctx: click.Context, method: str, path: str, body: dict[str, Any] | None = None,
          params: dict[str, str] | None = None, wait_s: float | None = None) -> Any:
    """One REST call; ``wait_s``: the daemon waits that long before it answers (a payment's or a
    long poll's ``timeout_s``), so the client waits for it, and no longer (not a fixed 120 s)."""
    from lightspeed.api.client import DEFAULT_TIMEOUT_S, ApiClient

    timeout_s = DEFAULT_TIMEOUT_S if wait_s is None else wait_s + ANSWER_MARGIN_S
    return ApiClient.from_datadir(_datadir(ctx), timeout_s).call(method, path, body, params)


_print = print_json

_table_option = click.option("--table", is_flag=True, help="A table for people instead of JSON.")


# -- the daemon ----------------------------------------------------------------------------------

@click.group("node")
def node_group() -> None:
    """Run a node daemon (peers over TCP plus a REST API on loopback).

    \b
    Example:
      lightspeed node start --datadir ~/.lightspeed/alice --listen 127.0.0.1:9735
    """


@node_group.command("start")
@click.option("--datadir", "datadir_option", type=click.Path(file_okay=False, path_type=Path),
              help="The node's data directory (default: the global --datadir).")
@click.option("--listen", default="127.0.0.1:9735", show_default=True, help="HOST:PORT for peers (BOLT 8).")
@click.option("--api", default="127.0.0.1:0", show_default=True,
              help="HOST:PORT of the REST API, loopback only (port 0: any free port; see DATADIR/api_address).")
@click.option("--chain", "chain_file", type=click.Path(dir_okay=False, path_type=Path),
              help="The shared regtest chain file (default: DATADIR/../chain.sqlite).")
@click.option("--announce-channels", is_flag=True,
              help="Open public channels: announce them (BOLT 7) so other nodes can route through them.")
@click.option("--new-store", is_flag=True,
              help="Start with a new, empty store beside an existing node key (its old channels are forgotten).")
@click.option("--network", type=click.Choice(["bitcoin", "testnet", "signet", "regtest"]), default="regtest",
              show_default=True, help="The Bitcoin network (anything but regtest needs --electrum).")
@click.option("--electrum", "electrum", multiple=True, metavar="HOST:PORT:s|t",
              help="An Electrum server (s: TLS, t: plain TCP); repeat for fallbacks. Without it: the "
                   "embedded regtest chain file (--chain).")
@click.option("--electrum-cafile", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Trust this certificate or CA bundle for TLS servers (default: the system's CAs).")
@click.option("--i-accept-the-risk", "accept_risk", is_flag=True,
              help="Required with --network bitcoin: real money, on software that is not ready for it (README).")
@click.option("--mnemonic-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A new datadir restores the BIP 39 words in this file (else it makes new ones, shown once).")
@click.option("--passphrase-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The datadir's mnemonic is (a new one: will be) encrypted with the passphrase in this file.")
@click.option("--restore-backup", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Recover the channels of this static channel backup (`backup export`): their peers are asked "
                   "to force close and our balances are swept to the wallet. Only on a datadir without channels.")
@click.option("--words", type=click.Choice(["12", "24"]), default="24", show_default=True,
              help="How many words a new mnemonic has.")
@click.option("--ui", is_flag=True,
              help="Also serve the web dashboard at http://API/ui/ (log in with a token: DATADIR/api_token, "
                   "or one from `lightspeed token create`).")
@click.option("--lsp", is_flag=True,
              help="Be an LSP for async payments: hold registered clients' HTLCs until their payee unblocks "
                   "them, keep offline clients' onion messages, wake them by webhook (DATADIR/asyncpay.sqlite).")
@click.option("--lsp-max-hold-seconds", type=click.IntRange(1, 14 * 24 * 3600), default=24 * 3600,
              show_default=True, help="With --lsp: the longest an HTLC is held (announced to clients).")
@click.option("--fee-update", "fee_update", type=click.Choice(["auto", "on", "off"]), default="auto",
              show_default=True,
              help="Move the commitment feerate of the channels we fund with the chain's fee estimates "
                   "(update_fee), and check the peers' against them. auto: on, except on regtest.")
@click.option("-v", "--verbose", is_flag=True, help="Log what the node does on stderr.")
@click.pass_context
@_errors_to_exit
@with_example("lightspeed node start --datadir ~/.lightspeed/alice --listen 127.0.0.1:9735",
              "lightspeed node start --datadir ~/.lightspeed/alice --ui   # ready line has \"ui\": the page's URL",
              "lightspeed node start --datadir ~/.lightspeed/alice2 --mnemonic-file words.txt "
              "--restore-backup alice-channels.backup")
def start(ctx: click.Context, datadir_option: Path | None, listen: str, api: str, chain_file: Path | None,
          announce_channels: bool, new_store: bool, network: str, electrum: tuple[str, ...],
          electrum_cafile: Path | None, accept_risk: bool, mnemonic_file: Path | None,
          passphrase_file: Path | None, restore_backup: Path | None, words: str, ui: bool, lsp: bool,
          lsp_max_hold_seconds: int, fee_update: str, verbose: bool) -> None:
    """Start a node daemon; stops on Ctrl-C or SIGTERM (cleanly, exit 0: that is how it is stopped).

    Once serving it prints one JSON line: node_id, listen, api (and ui with --ui): a daemon's ready line.
    """
    if network == "bitcoin" and not accept_risk:
        raise UsageError("--network bitcoin: Lightspeed is not ready for real money (never run with other nodes "
                         "on a real network, no watchtower; see README). Pass --i-accept-the-risk to run anyway")
    if network != "regtest" and not electrum:
        raise UsageError(f"--network {network}: needs --electrum HOST:PORT:s|t (the embedded chain is regtest only)")
    if electrum and chain_file is not None:
        raise UsageError("--chain and --electrum: choose one chain (the file, or Electrum servers)")
    import asyncio

    from lightspeed.api.daemon import DaemonConfig, parse_hostport, run

    graceful_interrupt()
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: every thread's stack on stderr

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    datadir = (datadir_option or _datadir(ctx)).expanduser()
    config = DaemonConfig(datadir, parse_hostport(listen, "--listen"), parse_hostport(api, "--api"),
                          (chain_file or default_chain_path(datadir)).expanduser(), announce_channels,
                          new_store, network, electrum, electrum_cafile, ui, mnemonic_file, passphrase_file,
                          int(words), lsp, lsp_max_hold_seconds, restore_backup=restore_backup,
                          fee_updates={"on": True, "off": False}.get(fee_update))
    asyncio.run(run(config))


# -- the shared regtest chain --------------------------------------------------------------------

@click.group("chain")
@click.option("--chain", "chain_file", type=click.Path(dir_okay=False, path_type=Path),
              help="The regtest chain file (default: the chain of the daemon running on --datadir, "
                   "else DATADIR/../chain.sqlite).")
@datadir_option
@click.pass_context
def chain_group(ctx: click.Context, chain_file: Path | None) -> None:
    """The regtest chain file shared by the daemons: mine, pay from the faucet, show the tip.

    Without --chain, a subcommand works on the chain of the daemon running on --datadir (its own
    --chain), or on DATADIR/../chain.sqlite when none runs.

    \b
    Example:
      lightspeed --datadir ~/.lightspeed/alice chain mine 3
      lightspeed chain info --chain /tmp/ls/chain.sqlite
    """
    ctx.ensure_object(dict)
    ctx.obj["chain_file"] = chain_file


CLI_BUSY_TIMEOUT_S = 10.0  # a command waits out another process's write lock longer than a daemon would


def _open_chain(ctx: click.Context, chain_file: Path | None, create: bool = False) -> Any:
    from lightspeed.api.chain_file import open_chain

    path = chain_file or (ctx.obj or {}).get("chain_file") or _daemon_chain_file(_datadir(ctx))
    chain = open_chain(Path(path).expanduser(), create=create)
    chain.set_busy_timeout(CLI_BUSY_TIMEOUT_S)
    return chain


def _daemon_chain_file(datadir: Path) -> Path:
    """The chain of the daemon running on ``datadir`` (it may have its own ``--chain``), else the default."""
    if (datadir / ADDRESS_FILE).exists():
        try:
            chain_file = _call_datadir(datadir, "GET", "/v1/getinfo").get("chain_file")
        except LightspeedError:  # a stale address file: no daemon runs there
            chain_file = None
        if chain_file:
            return Path(chain_file)
    return default_chain_path(datadir)


def _call_datadir(datadir: Path, method: str, path: str) -> Any:
    from lightspeed.api.client import ApiClient

    return ApiClient.from_datadir(datadir).call(method, path)


_chain_option = click.option("--chain", "chain_file", type=click.Path(dir_okay=False, path_type=Path),
                             help="The regtest chain file.")


@chain_group.command("mine")
@click.argument("blocks", type=click.IntRange(1, 10_000))
@_chain_option
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice chain mine 3")
def mine(ctx: click.Context, blocks: int, chain_file: Path | None) -> None:
    """Mine BLOCKS blocks (they confirm the whole mempool)."""
    chain = _open_chain(ctx, chain_file)
    hashes = chain.mine(blocks)
    height, _tip = chain.tip()
    chain.close()
    _print({"mined": len(hashes), "height": height, "tip": hashes[-1][::-1].hex()})


@chain_group.command("reorg")
@click.argument("depth", type=click.IntRange(1, 1_000))
@click.option("--empty", is_flag=True, help="The new blocks hold no transactions: the replaced ones wait in the mempool.")
@_chain_option
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed chain reorg 2 --empty --chain ~/.lightspeed/chain.sqlite")
def reorg(ctx: click.Context, depth: int, empty: bool, chain_file: Path | None) -> None:
    """Replace the last DEPTH blocks by DEPTH+1 new ones (a reorganisation, for tests); Electrum
    clients of `chain serve-electrum` are told the new tip and switch to it (it has more work)."""
    chain = _open_chain(ctx, chain_file)
    try:
        dropped = chain.reorg(depth, empty=empty)
        height, tip = chain.tip()
    finally:
        chain.close()
    _print({"replaced": depth, "height": height, "tip": tip[::-1].hex(),
            "dropped": [txid[::-1].hex() for txid in dropped], "mempool_kept": empty})


@chain_group.command("info")
@_chain_option
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed chain info --chain ~/.lightspeed/chain.sqlite")
def chain_info(ctx: click.Context, chain_file: Path | None) -> None:
    """The tip and the mempool size."""
    chain = _open_chain(ctx, chain_file)
    height, tip = chain.tip()
    _print({"height": height, "tip": tip[::-1].hex(), "mempool": len(chain.mempool())})
    chain.close()


@chain_group.command("set-feerate")
@click.argument("feerate_per_kw", type=click.IntRange(min=0))
@_chain_option
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice chain set-feerate 5000   # the daemon's chain, in sat/kw",
              "lightspeed chain set-feerate 2500 --chain ~/.lightspeed/chain.sqlite")
@click.option("--min-relay", "min_relay", type=click.IntRange(min=0), default=None,
              help="Also refuse transactions paying less than this many sat/kw (0: accept any fee, the default).")
def chain_set_feerate(ctx: click.Context, feerate_per_kw: int, chain_file: Path | None, min_relay: int | None) -> None:
    """Make the chain's fee estimate FEERATE_PER_KW (sat per 1000 weight; 0: the default, 253) for every process.

    A regtest chain has no fee market: this plays one for tests, with ``--min-relay`` (a real
    mempool's minimum relay feerate) and ``chain congest`` (blocks leave low-fee packages out).
    """
    chain = _open_chain(ctx, chain_file)
    chain.set_fee_estimate(feerate_per_kw or None)
    if min_relay is not None:
        chain.set_min_relay_feerate(min_relay)
    _print({"feerate_per_kw": chain.estimate_feerate_per_kw(),
            "min_relay_feerate_per_kw": chain.min_relay_feerate_per_kw()})
    chain.close()


@chain_group.command("congest")
@click.option("--below", "below", type=click.IntRange(min=0), required=True,
              help="Packages paying less than this many sat/kw wait in the mempool (0: blocks take everything).")
@_chain_option
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed chain congest --below 5000 --chain ~/.lightspeed/chain.sqlite")
def chain_congest(ctx: click.Context, below: int, chain_file: Path | None) -> None:
    """Play full blocks for tests: transactions (with their unconfirmed ancestors) below a feerate are not mined."""
    chain = _open_chain(ctx, chain_file)
    chain.congest(below)
    _print({"congested_below_per_kw": chain.congested_below_per_kw()})
    chain.close()


@chain_group.command("send")
@click.argument("address")
@click.argument("amount_sat", type=Amount("sat", minimum=294))
@_chain_option
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed chain send bcrt1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqdku202 100000sat --chain ~/.lightspeed/chain.sqlite")
def chain_send(ctx: click.Context, address: str, amount_sat: int, chain_file: Path | None) -> None:
    """Pay AMOUNT_SAT to ADDRESS from the faucet (mined coins) and confirm it with one block."""
    _print(_faucet(_open_chain(ctx, chain_file), address, amount_sat))


@chain_group.command("serve-electrum")
@_chain_option
@click.option("--listen", default="127.0.0.1:50001", show_default=True,
              help="HOST:PORT to serve the Electrum protocol on (port 0: any free port).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Serve TLS with this certificate (PEM; the server string ends in :s).")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The certificate's private key (PEM).")
@click.option("-v", "--verbose", is_flag=True, help="Log connections and requests on stderr.")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed chain serve-electrum --chain ~/.lightspeed/chain.sqlite --listen 127.0.0.1:50001")
def serve_electrum(ctx: click.Context, chain_file: Path | None, listen: str, tls_cert: Path | None,
                   tls_key: Path | None, verbose: bool) -> None:
    """Serve the chain to Electrum-protocol wallets (TCP, protocol 1.4 to 1.6) until Ctrl-C or SIGTERM.

    Once listening it prints one JSON line {"electrum_server": "HOST:PORT:t"}: the server string
    an Electrum wallet takes (electrum --regtest setconfig server HOST:PORT:t, oneserver true).
    """
    import asyncio

    from lightspeed.api.daemon import parse_hostport
    from lightspeed.node.electrum_server import serve_until_signalled

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    host, port = parse_hostport(listen, "--listen")
    tls = None
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key: give both (or neither, for plain TCP)")
    if tls_cert is not None and tls_key is not None:
        import ssl

        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            tls.load_cert_chain(tls_cert, tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"--tls-cert/--tls-key: {exc}") from None
    graceful_interrupt()
    chain = _open_chain(ctx, chain_file, create=True)
    try:
        asyncio.run(serve_until_signalled(chain, host, port,
                                          lambda server: click.echo(json.dumps({"electrum_server": server})),
                                          tls=tls))
    except OSError as exc:
        raise UsageError(f"--listen {listen}: {exc.strerror or exc}") from None
    finally:
        chain.close()


def _faucet(chain: Any, address: str, amount_sat: int) -> dict[str, Any]:
    from lightspeed.bitcoin.address import address_to_script
    from lightspeed.bitcoin.network import REGTEST

    try:
        outpoint = chain.fund(address_to_script(address, REGTEST), amount_sat)
    finally:
        chain.close()
    return {"address": address, "amount_sat": amount_sat, "txid": outpoint.txid[::-1].hex(),
            "confirmed": True}


# -- calls to the daemon -------------------------------------------------------------------------

@click.command("getinfo")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed getinfo --datadir ~/.lightspeed/alice")
def getinfo(ctx: click.Context) -> None:
    """The node's id, addresses, chain tip and counts."""
    _print(_call(ctx, "GET", "/v1/getinfo"))


@click.command("connect")
@click.argument("peer")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice connect $BOB@127.0.0.1:9736")
def connect(ctx: click.Context, peer: str) -> None:
    """Connect to PEER given as NODE_ID@HOST:PORT."""
    from lightspeed.api.address import parse_hostport

    node_id, sep, address = peer.partition("@")
    if not sep:
        raise UsageError(f"PEER must be NODE_ID@HOST:PORT, got {peer!r}")
    host, port = parse_hostport(address, "PEER")
    _print(_call(ctx, "POST", "/v1/peers", {"node_id": node_id, "host": host, "port": port}))


@click.command("peers")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice peers")
def peers(ctx: click.Context) -> None:
    """Peers connected now."""
    _print(_call(ctx, "GET", "/v1/peers"))


@click.command("open-channel")
@click.argument("node_id")
@click.argument("amount_sat", type=Amount("sat", minimum=1))
@click.option("--push-msat", type=Amount("msat"), default=0, show_default=True,
              help="Given to the peer at opening (msat, or with a sat suffix).")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice open-channel $BOB 1000000",
              "lightspeed --datadir ~/.lightspeed/alice open-channel $BOB 1000000sat --push-msat 10sat")
def open_channel(ctx: click.Context, node_id: str, amount_sat: int, push_msat: int) -> None:
    """Open a channel of AMOUNT_SAT with NODE_ID (then mine 3 blocks to confirm it)."""
    _print(_call(ctx, "POST", "/v1/channels",
                 {"node_id": node_id, "amount_sat": amount_sat, "push_msat": push_msat}))


@click.command("channels")
@_table_option
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice channels --table")
def channels(ctx: click.Context, table: bool) -> None:
    """Channels with their state and balances."""
    data = _call(ctx, "GET", "/v1/channels")
    if table:
        print_table("channels", data["channels"], ["channel_id", "short_channel_id", "peer_id", "state", "active",
                                                   "capacity_sat", "local_balance_msat", "remote_balance_msat",
                                                   "spendable_msat", "receivable_msat", "pending_htlcs",
                                                   "close_type", "limbo_sat"])
    else:
        _print(data)


@click.command("close")
@click.argument("channel")
@click.option("--force", is_flag=True, help="unilateral close: broadcast our commitment (peer offline)")
@click.option("--feerate", "feerate_per_kw", type=click.IntRange(253, 100_000),
              help="The closing transaction's feerate in sat per 1000 weight (the peer must accept it).")
@click.option("--address", help="Where our balance goes (default: a fresh address of the node's wallet).")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice close $CHANNEL",
              "lightspeed --datadir ~/.lightspeed/alice close 103x1x0 --feerate 2500 --address $ADDRESS",
              "lightspeed --datadir ~/.lightspeed/alice close $BOB --force")
def close(ctx: click.Context, channel: str, force: bool, feerate_per_kw: int | None, address: str | None) -> None:
    """Close CHANNEL cooperatively (then mine a block to confirm the closing transaction).

    CHANNEL is a channel id, a short channel id (BLOCKxTXxOUTPUT), a funding outpoint
    (TXID:INDEX) or the node id of a peer with one open channel.

    With --force, broadcast our latest commitment instead; our balance returns to the wallet
    after the peer's to_self_delay blocks (the node sweeps it).
    """
    from lightspeed.cli.ops_cmd import resolve_channel

    if force and (feerate_per_kw is not None or address is not None):
        raise UsageError("--feerate and --address are for a mutual close: a force close spends our commitment, "
                         "whose fee is fixed, and sweeps to the wallet")
    channel_id = resolve_channel(ctx, channel)
    if force:
        _print(_call(ctx, "POST", f"/v1/channels/{segment(channel_id, 'CHANNEL_ID')}/force-close"))
        return
    body: dict[str, Any] = {}
    if feerate_per_kw is not None:
        body["feerate_per_kw"] = feerate_per_kw
    if address is not None:
        body["address"] = address
    _print(_call(ctx, "POST", f"/v1/channels/{segment(channel_id, 'CHANNEL_ID')}/close", body))


@click.command("update-fee")
@click.argument("channel_id")
@click.argument("feerate_per_kw", type=int)
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice update-fee $CHANNEL 2500")
def update_fee(ctx: click.Context, channel_id: str, feerate_per_kw: int) -> None:
    """As CHANNEL_ID's funder, move its commitments to FEERATE_PER_KW (sat per 1000 weight)."""
    _print(_call(ctx, "POST", f"/v1/channels/{segment(channel_id, 'CHANNEL_ID')}/fee",
                 {"feerate_per_kw": feerate_per_kw}))


@click.command("new")
@click.argument("amount")
@click.argument("description", default="")
@click.option("--expiry", type=int, default=3600, show_default=True, help="Seconds until it expires.")
@click.option("--hold", "payment_hash", metavar="PAYMENT_HASH",
              help="A hold invoice for this hash: payments wait for `invoice settle PREIMAGE` or `invoice cancel`.")
@click.option("--private", is_flag=True, help="Add route hints for our private (unannounced) channels.")
@click.option("--description-hash", metavar="SHA256",
              help="The sha256 (hex) of a description kept elsewhere, instead of DESCRIPTION (BOLT 11 h).")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/bob invoice new 250000000 \"a book\"",
              "lightspeed --datadir ~/.lightspeed/bob invoice new 250000sat \"a book\"   # the same amount",
              "lightspeed --datadir ~/.lightspeed/bob invoice new any \"tips\" --private")
def invoice_new(ctx: click.Context, amount: str, description: str, expiry: int, payment_hash: str | None,
                private: bool, description_hash: str | None) -> None:
    """Ask the running node (--datadir) for an invoice of AMOUNT (msat, or with a sat suffix; "any": the payer
    chooses)."""
    from lightspeed.cli.common import parse_amount

    body: dict[str, Any] = {"description": description, "expiry": expiry}
    if amount != "any":
        try:
            body["amount_msat"] = parse_amount(amount, "msat")
        except ValueError as exc:
            raise UsageError(f"AMOUNT: {exc}, or 'any'") from None
        if body["amount_msat"] < 1:
            raise UsageError(f"AMOUNT {amount!r}: must be at least 1 msat, or 'any'")
    if payment_hash is not None:
        body["payment_hash"] = payment_hash
    if private:
        body["private"] = True
    if description_hash is not None:
        body["description_hash"] = description_hash
    _print(_call(ctx, "POST", "/v1/invoices", body))


@click.command("settle")
@click.argument("preimage")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/bob invoice settle $PREIMAGE")
def invoice_settle(ctx: click.Context, preimage: str) -> None:
    """Release the payment held by a hold invoice, with its PREIMAGE."""
    from lightspeed.crypto.hashes import sha256

    try:
        payment_hash = sha256(bytes.fromhex(preimage)).hex()
    except ValueError:
        raise UsageError("PREIMAGE must be 32 bytes in hex") from None
    _print(_call(ctx, "POST", f"/v1/invoices/{segment(payment_hash, 'PAYMENT_HASH')}/settle", {"preimage": preimage}))


@click.command("cancel")
@click.argument("payment_hash")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/bob invoice cancel $PAYMENT_HASH")
def invoice_cancel(ctx: click.Context, payment_hash: str) -> None:
    """Refuse the payment held by the hold invoice of PAYMENT_HASH (it fails back to the payer)."""
    _print(_call(ctx, "POST", f"/v1/invoices/{segment(payment_hash, 'PAYMENT_HASH')}/cancel"))


@click.command("list")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/bob invoice list")
def invoice_list(ctx: click.Context) -> None:
    """Invoices the running node (--datadir) issued."""
    _print(_call(ctx, "GET", "/v1/invoices"))


def _pay_interrupted(invoice: str) -> str:
    """What Ctrl-C during `pay` says: the payment goes on, and the command that waits for its end."""
    from lightspeed.invoice import decode

    try:
        payment_hash = decode(invoice.strip()).payment_hash.hex()
    except LightspeedError:  # the daemon refuses it with the reason; nothing goes on
        return "the daemon goes on with the payment; `lightspeed payments` shows how it ends"
    return f"the daemon goes on with the payment; `lightspeed trackpayment {payment_hash}` waits for its end"


@click.command("pay")
@click.argument("invoice")
@click.option("--timeout", "timeout_s", type=click.IntRange(1, 600), default=60, show_default=True,
              help="Seconds to wait.")
@click.option("--amount-msat", type=Amount("msat", minimum=1),
              help="The amount, for an invoice that names none (msat, or with a sat suffix).")
@click.option("--max-fee-msat", type=Amount("msat"), help="The most the routing fees may be, all parts together.")
@click.option("--max-fee-percent", type=click.FloatRange(0, 100),
              help="The most the routing fees may be, in percent of the amount (with --max-fee-msat: the smaller).")
@click.option("--outgoing-channel", metavar="SHORT_CHANNEL_ID", help="Leave over this channel of ours (BLOCKxTXxOUT).")
@click.option("--max-parts", type=click.IntRange(1, 16), help="Split into at most this many parts (MPP).")
@click.option("--async", "async_", is_flag=True,
              help="The payee may be offline: our LSP holds the HTLC until the payee unblocks it; returns at "
                   "once (see `payments`). Automatic without it when the invoice's last route hint is our LSP.")
@click.option("--lsp", "lsp_id", metavar="NODE_ID",
              help="With --async: our LSP, a peer started with --lsp (default: the one we registered with).")
@click.option("--return-path", is_flag=True,
              help="Send a blinded return path with the payment: the payee can refund it (`refund send`) "
                   "without learning our node id.")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice pay $INVOICE",
              "lightspeed --datadir ~/.lightspeed/alice pay $INVOICE --return-path",
              "lightspeed --datadir ~/.lightspeed/alice pay $AMOUNTLESS_INVOICE --amount-msat 2000sat",
              "lightspeed --datadir ~/.lightspeed/alice pay $INVOICE --max-fee-percent 0.5 --max-parts 4",
              "lightspeed --datadir ~/.lightspeed/alice pay $INVOICE --async")
def pay(ctx: click.Context, invoice: str, timeout_s: int, amount_msat: int | None, max_fee_msat: int | None,
        max_fee_percent: float | None, outgoing_channel: str | None, max_parts: int | None, async_: bool,
        lsp_id: str | None, return_path: bool) -> None:
    """Pay INVOICE; prints the payment with its preimage (the proof of payment) and the fee paid.

    Ctrl-C stops waiting, not the payment: the daemon goes on with it (`trackpayment` waits for its end).
    """
    ctx.meta[INTERRUPT_HINT] = _pay_interrupted(invoice)
    if async_ or lsp_id is not None:
        if not async_:
            raise UsageError("--lsp goes with --async (the LSP that holds the HTLC)")
        async_body = {"invoice": invoice} if lsp_id is None else {"invoice": invoice, "lsp_id": lsp_id}
        _print(_call(ctx, "POST", "/v1/payments/async", async_body))
        return
    body: dict[str, Any] = {"invoice": invoice, "timeout_s": timeout_s}
    if return_path:
        body["return_path"] = True
    if amount_msat is not None:
        body["amount_msat"] = amount_msat
    if max_fee_percent is not None:  # a percentage is no amount: as parts per million of it, an integer
        body["max_fee_ppm"] = round(max_fee_percent * 10_000)
    for key, value in (("max_fee_msat", max_fee_msat), ("outgoing_channel", outgoing_channel),
                       ("max_parts", max_parts)):
        if value is not None:
            body[key] = value
    paid = _call(ctx, "POST", "/v1/payments", body, wait_s=timeout_s)
    if paid.get("async_lsp_id"):  # the payee is our LSP's client: paid asynchronously (pending)
        click.echo(f"paid asynchronously through our LSP {paid['async_lsp_id']}: it ends when the payee "
                   f"comes online (`lightspeed trackpayment {paid['payment_hash']}` waits for it)", err=True)
    _print(paid)


@click.command("payments")
@click.option("--direction", type=click.Choice(["sent", "received"]), help="Only these.")
@_table_option
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice payments --direction sent --table")
def payments(ctx: click.Context, direction: str | None, table: bool) -> None:
    """Payments sent and received."""
    data = _call(ctx, "GET", "/v1/payments", params={"direction": direction} if direction else None)
    if table:
        print_table("payments", data["payments"], ["direction", "payment_hash", "amount_msat", "status",
                                                   "failure_reason"])
    else:
        _print(data)


@click.command("balance")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice balance")
def balance(ctx: click.Context) -> None:
    """On-chain and channel balances."""
    _print(_call(ctx, "GET", "/v1/balance"))


@click.command("fund")
@click.argument("amount_sat", type=Amount("sat", minimum=294))
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice fund 2000000")
def fund(ctx: click.Context, amount_sat: int) -> None:
    """Give the running node AMOUNT_SAT on chain from the regtest faucet (confirmed by one block)."""
    from lightspeed.api.chain_file import open_chain

    info = _call(ctx, "GET", "/v1/getinfo")
    if not info.get("chain_file"):
        raise UsageError("this node follows Electrum servers, not a chain file with a faucet: pay its "
                         "address (`lightspeed newaddress`) from a wallet, or on regtest run "
                         "`lightspeed chain send ADDRESS AMOUNT --chain FILE` on the server's chain file")
    chain = open_chain(Path(info["chain_file"]))
    address = _call(ctx, "POST", "/v1/addresses")["address"]
    _print(_faucet(chain, address, amount_sat))


@click.group("lsp")
def lsp_group() -> None:
    """Async payments: register with an LSP and list them (client), list held HTLCs (LSP, `node start --lsp`).

    \b
    Example:
      lightspeed --datadir ~/.lightspeed/bob lsp register $LSP_ID --webhook https://push.example/bob
    """


@lsp_group.command("register")
@click.argument("lsp_id")
@click.option("--webhook", metavar="URL", help="https URL the LSP POSTs (LSPS5-signed) notifications to.")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/bob lsp register $LSP_ID --webhook https://push.example/bob")
def lsp_register(ctx: click.Context, lsp_id: str, webhook: str | None) -> None:
    """Ask the peer LSP_ID to be our LSP; prints the hold limits it announces."""
    body: dict[str, Any] = {"lsp_id": lsp_id}
    if webhook is not None:
        body["webhook"] = webhook
    _print(_call(ctx, "POST", "/v1/lsp/register", body))


@lsp_group.command("list")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/bob lsp list")
def lsp_list(ctx: click.Context) -> None:
    """As a client: the LSPs we registered with, and whether each is connected now."""
    _print(_call(ctx, "GET", "/v1/lsp"))


@lsp_group.command("held")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/lsp lsp held")
def lsp_held(ctx: click.Context) -> None:
    """As an LSP: the HTLCs held for clients, with when each is failed back."""
    _print(_call(ctx, "GET", "/v1/lsp/held"))


def register(cli: click.Group, invoice_group: click.Group) -> None:
    """Add these commands to the ``lightspeed`` group (and ``new``/``list`` to ``invoice``)."""
    for command in (node_group, chain_group, getinfo, connect, peers, open_channel, channels, close, update_fee,
                    pay, payments, balance, fund, lsp_group):
        cli.add_command(command)
    for sub in (invoice_new, invoice_list, invoice_settle, invoice_cancel):
        invoice_group.add_command(sub)
