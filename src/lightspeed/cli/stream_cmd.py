"""``lightspeed stream``: buy a metered stream (``lightspeed stream ws://...``) and check receipts.

``lightspeed stream verify RECEIPT_FILE`` is the dispute tool: it needs no node and no network,
only the receipt the buyer kept (the seller's signed statement and every link paid).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click

from lightspeed.cli.common import Amount, fail, json_text, with_example


class _StreamGroup(click.Group):
    """``lightspeed stream ws://...`` is ``lightspeed stream buy ws://...``."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0].startswith(("ws://", "wss://")):
            args.insert(0, "buy")
        return super().resolve_command(ctx, args)


@click.group("stream", cls=_StreamGroup)
@with_example("lightspeed stream ws://127.0.0.1:8402/charge --max-msat 30000 --chain /tmp/ls/chain.sqlite",
              "lightspeed stream verify stream-RECEIPT.json")
def stream() -> None:
    """Metered streams: pay per tick with hash-chain links; verify receipts."""


@stream.command("verify")
@click.argument("receipt_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--node-id", default=None, help="The seller's node id (hex) the statement must be signed by.")
@with_example("lightspeed stream verify receipt.json --node-id 02...")
def verify(receipt_file: Path, node_id: str | None) -> None:
    """Recompute a stream receipt from its links: ticks paid, units delivered, the seller's signature.

    Prints one JSON object; exits 0 when the statement agrees with the links (and is signed by the
    seller), 1 otherwise ("error: <problem>" on stderr for each problem).
    """
    from lightspeed.errors import DecodeError
    from lightspeed.stream.receipt import Receipt, recompute

    try:
        data = json.loads(receipt_file.read_text())
    except OSError as exc:
        fail(f"{receipt_file}: {exc.strerror or exc}")
    except ValueError:
        fail(f"{receipt_file}: not JSON")
    try:
        receipt = Receipt.from_json(data)
    except DecodeError as exc:
        fail(str(exc))
    result = recompute(receipt)
    report: dict[str, Any] = {"stream_id": receipt.signed.statement.stream_id.hex(),
                              "seller_node_id": receipt.signed.statement.seller_node_id.hex(),
                              "unit": receipt.signed.statement.tariff.unit, **result.to_json()}
    problems = list(result.problems)
    if node_id is not None and node_id.lower() != report["seller_node_id"]:
        problems.append(f"seller_node_id: the statement is by {report['seller_node_id']}, not {node_id}")
        report["consistent"], report["problems"] = False, problems
    click.echo(json_text(report))
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    if problems:
        raise SystemExit(1)


@stream.command("buy")
@click.argument("urls", metavar="URL [URL...]", nargs=-1, required=True)
@click.option("--max-msat", type=Amount("msat", minimum=1), required=True, help="The most the stream may cost.")
@click.option("--max-msat-per-unit", type=Amount("msat"), default=None,
              help="Refuse a tariff above this price per unit (msat, or with a sat suffix).")
@click.option("--units", type=int, default=None, help="Stop paying once this many units are paid for.")
@click.option("--increments", type=click.IntRange(min=1), default=None,
              help="Pay without an allowance: one invoice per this many ticks (the exposure is one increment).")
@click.option("--receipt", "receipt_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the receipt (default: stream-<id>.json in this directory).")
@click.option("--chain", "chain_path", default="~/.lightspeed/chain.sqlite", show_default=True,
              help="Regtest chain file shared with the seller (serve-example).")
@click.option("--funding-sat", type=Amount("sat", minimum=1), default=500_000, show_default=True,
              help="Channel to open to the seller's node.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the live display.")
@with_example("lightspeed stream ws://127.0.0.1:8402/charge --max-msat 30000 --chain /tmp/ls/chain.sqlite",
              "lightspeed stream ws://127.0.0.1:8402/charge ws://127.0.0.1:8403/charge --max-msat 30000")
def buy(urls: tuple[str, ...], max_msat: int, max_msat_per_unit: int | None, units: int | None, increments: int | None,
        receipt_path: Path | None,
        chain_path: str, funding_sat: int, as_json: bool) -> None:
    """Buy a metered stream at URL (ws://...) for at most MAX_MSAT, showing units, price and credit live.

    Opens a channel to the seller's node (from the HTTP offer beside the first URL's stream), pays one
    link per tick, and writes the checked receipt (verify it with `lightspeed stream verify`). A dropped
    connection is resumed at the next URL: the ones given, then those the seller announces.
    """
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from lightspeed.chain.regtest import RegtestChain
    from lightspeed.cli.micro_cmd import _chain_file, _run
    from lightspeed.cli.paid_example import open_channel_to_api
    from lightspeed.cli.tables import key_value_table, result_table
    from lightspeed.micro.lightning import NodePayer
    from lightspeed.node.node import Node
    from lightspeed.stream.client import BuyPolicy, StreamBuyer
    from lightspeed.stream.machine import BuyerStream

    for url in urls:
        if not url.startswith("ws://"):
            fail(f"url: expected ws://HOST:PORT/PATH, got {url!r}")
    url = urls[0]
    origin = "http://" + url[len("ws://"):].split("/", 1)[0]

    def view(b: BuyerStream) -> Table:
        t = b.tariff
        table: Table = key_value_table(f"lightspeed stream {url}")
        table.add_row("delivered", f"{b.delivered_units:,} {t.unit}")
        table.add_row("price", f"{t.msat_per_unit} msat/{t.unit}, {t.tick_units} {t.unit} a tick")
        table.add_row("paid", f"{b.paid_msat:,} msat ({b.paid_ticks:,} ticks) of {max_msat:,}")
        table.add_row("credit", f"{b.paid_units - b.delivered_units} {t.unit} paid ahead (at most one tick); "
                      f"{b.prepaid_ticks * t.tick_msat:,} msat prepaid over Lightning")
        return table

    async def run() -> dict[str, Any]:
        chain = RegtestChain(_chain_file(chain_path))
        node = Node(os.urandom(32), chain, os.urandom(32))
        await node.start()
        try:
            await open_channel_to_api(node, chain, origin, funding_sat)
            started = time.perf_counter()
            with Live(auto_refresh=True, console=Console(stderr=True), transient=True) as live:
                def update(b: BuyerStream) -> None:
                    if not as_json:
                        live.update(view(b))
                policy = BuyPolicy(max_msat, max_msat_per_unit, ticks_per_increment=increments)
                # the prepayment carries a return path: unused credit can come back without naming us
                buyer = StreamBuyer(list(urls), NodePayer(node, return_path=True), policy, update)
                receipt = await buyer.run(units)
            elapsed = time.perf_counter() - started
        finally:
            await node.stop()
        s = receipt.signed.statement
        path = receipt_path or Path(f"stream-{s.stream_id.hex()}.json")
        path.write_text(json.dumps(receipt.to_json(), indent=2) + "\n")
        return {"url": url, "unit": s.tariff.unit, "delivered_units": s.delivered_units, "paid_ticks": s.paid_ticks,
                "paid_msat": s.paid_msat, "ticks_per_s": round(s.paid_ticks / elapsed, 1) if elapsed else None,
                "lightning_payments": len(buyer.paid_invoices), "reconnects": buyer.reconnected,
                "receipt": str(path)}

    result = _run(run())
    if as_json:
        click.echo(json_text(result))
        return
    Console().print(result_table(f"lightspeed stream {url}", result))
