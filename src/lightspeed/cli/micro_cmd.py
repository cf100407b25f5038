"""``lightspeed serve-example`` and ``lightspeed call``: pay-per-call from the command line.

httpx, rich and the node are imported when a command runs, not when ``lightspeed`` starts.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import click

from lightspeed.cli.common import Amount, graceful_interrupt, json_text, with_example
from lightspeed.errors import LightspeedError

DEFAULT_CHAIN = "~/.lightspeed/chain.sqlite"
OPEN_BACK_SAT = 100_000  # serve-example opens a channel back to each client: refunds go over it


def _hostport(value: str, name: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}", param_hint=name)
    return host or "127.0.0.1", int(port)


@click.command("serve-example")
@click.option("--listen", default="127.0.0.1:8402", show_default=True, help="HTTP address of the paid API.")
@click.option("--node-port", default=0, type=int, help="Port of the node's BOLT 8 listener (0: any).")
@click.option("--chain", "chain_path", default=DEFAULT_CHAIN, show_default=True,
              help="Regtest chain file shared with the clients.")
@click.option("--store", default="sqlite:~/.lightspeed/allowances.sqlite", show_default=True,
              help="Spent-token store: memory, sqlite:PATH, redis://..., postgresql://...")
@click.option("--price-msat", type=Amount("msat", minimum=1), default=1, show_default=True,
              help="Price: this many msat ...")
@click.option("--per-calls", default=1, show_default=True, help="... per this many calls.")
@with_example("lightspeed serve-example --listen 127.0.0.1:8402 --chain /tmp/ls/chain.sqlite")
def serve_example(listen: str, node_port: int, chain_path: str, store: str, price_msat: int, per_calls: int) -> None:
    """Run a paid example API (weather) on the embedded network until Ctrl-C or SIGTERM (exit 0).

    Once serving it shows a table on stderr and prints one JSON line on stdout (its ready line):
    url, metered (the EV charger's WebSocket URL), node_id, node (HOST:PORT of its Lightning node).
    """
    import asyncio

    from rich.console import Console

    from lightspeed.chain.regtest import RegtestChain
    from lightspeed.cli.paid_example import EXAMPLE_PRICES, start_paid_api
    from lightspeed.cli.stream_example import CHARGER_PATH, CHARGER_TARIFF
    from lightspeed.cli.tables import key_value_table
    from lightspeed.micro.stores import open_allowance_store
    from lightspeed.micro.terms import Price
    from lightspeed.stream.state import open_stream_store

    host, port = _hostport(listen, "--listen")
    graceful_interrupt()

    async def run() -> None:
        chain = RegtestChain(_chain_file(chain_path))
        # a shared store (PostgreSQL, Redis) shares the charger's streams too: another serve-example
        # on the same store resumes them if this one dies
        api = await start_paid_api(chain, open_allowance_store(store), Price(price_msat, per_calls),
                                   http_host=host, http_port=port, node_port=node_port,
                                   open_back_sat=OPEN_BACK_SAT,  # the server's liquidity for refunds
                                   stream_store=open_stream_store(store))
        # Ctrl-C stops the server cleanly from the moment the banner can be read (a handler installed
        # after it lost a Ctrl-C sent right after the banner: exit 130 instead of 0).
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        console = Console(stderr=True)
        table = key_value_table("Lightspeed example API")
        table.add_row("URL", api.url)
        table.add_row("node", f"{api.node.node_id.hex()}@{api.node_address}")
        table.add_row("price", f"{price_msat} msat per {per_calls} call(s)")
        table.add_row("routes", ", ".join(f"{k} ({v} link{'s' * (v > 1)})" for k, v in EXAMPLE_PRICES.items()))
        table.add_row("chain", str(_chain_file(chain_path)))
        ws_url = "ws://" + api.url.split("://", 1)[1] + CHARGER_PATH
        await api.charger.announce(ws_url)  # buyers learn every process serving the same store
        table.add_row("metered", f"{ws_url} (EV charger, {CHARGER_TARIFF.msat_per_unit} msat/"
                      f"{CHARGER_TARIFF.unit}, 1 {CHARGER_TARIFF.unit} every 100 ms)")
        console.print(table)
        console.print(f"try: lightspeed call {api.url}/weather/lisbon -n 100 --chain {chain_path}",
                      soft_wrap=True)  # a command to copy: the terminal wraps it, not rich
        console.print(f"     lightspeed stream {ws_url} --max-msat 30000 --chain {chain_path}", soft_wrap=True)
        # the ready line, as `node start` prints one: a script reads the URL here, not from the table
        print(json.dumps({"url": api.url, "metered": ws_url, "node_id": api.node.node_id.hex(),
                          "node": api.node_address}), flush=True)
        await stop.wait()
        await api.stop()

    _run(run())


@click.command("call")
@click.argument("url")
@click.option("-n", "--count", default=1, show_default=True, help="How many calls to make.")
@click.option("--concurrency", default=4, show_default=True, help="Calls in flight at once (one lane each).")
@click.option("--chain", "chain_path", default=DEFAULT_CHAIN, show_default=True, help="Regtest chain file.")
@click.option("--calls-per-lane", default=1000, show_default=True, help="Size of each allowance lane.")
@click.option("--batch", default=0, show_default=True, help="Pay in batches of this many calls (0: prepay).")
@click.option("--funding-sat", type=Amount("sat", minimum=1), default=500_000, show_default=True,
              help="Channel to open to the API's node.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def call(url: str, count: int, concurrency: int, chain_path: str, calls_per_lane: int, batch: int,
         funding_sat: int, as_json: bool) -> None:
    """Call a Lightspeed-paid URL COUNT times, paying as it calls (opens a channel to the API's node).

    \b
    Example:
      lightspeed call http://127.0.0.1:8402/weather/lisbon -n 1000 --chain /tmp/ls/chain.sqlite
    """
    import asyncio

    import httpx
    from rich.console import Console
    from rich.progress import Progress

    from lightspeed.chain.regtest import RegtestChain
    from lightspeed.cli.paid_example import open_channel_to_api
    from lightspeed.cli.tables import result_table
    from lightspeed.micro.client import ClientPolicy, LightspeedAuth
    from lightspeed.micro.lightning import NodePayer
    from lightspeed.node.node import Node

    parsed = httpx.URL(url)
    origin = f"{parsed.scheme}://{parsed.netloc.decode()}"

    async def run() -> dict[str, Any]:
        chain = RegtestChain(_chain_file(chain_path))
        node = Node(os.urandom(32), chain, os.urandom(32))
        await node.start()
        try:
            started = time.perf_counter()
            offer = await open_channel_to_api(node, chain, origin, funding_sat)
            channel_s = time.perf_counter() - started
            policy = ClientPolicy(calls_per_lane=calls_per_lane, lanes=max(1, concurrency), batch_calls=batch)
            # each payment carries a return path: the API refunds the unused calls without learning who we are
            payer = NodePayer(node, return_path=True)
            auth = LightspeedAuth(payer, policy)
            statuses: dict[int, int] = {}
            last: Any = None
            limits = httpx.Limits(max_connections=concurrency)
            async with httpx.AsyncClient(auth=auth, limits=limits, timeout=30) as http:
                queue: asyncio.Queue[int] = asyncio.Queue()
                for n in range(count):
                    queue.put_nowait(n)
                with Progress(transient=True, disable=as_json) as progress:
                    task = progress.add_task("calling", total=count)

                    async def worker() -> None:
                        nonlocal last
                        while not queue.empty():
                            queue.get_nowait()
                            response = await http.get(url)
                            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                            last = response.json() if response.headers.get("content-type", "").startswith(
                                "application/json") else response.text
                            progress.advance(task)

                    calls_started = time.perf_counter()
                    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
                    elapsed = time.perf_counter() - calls_started
            received_before = _received_msat(node)
            closed = await auth.close_allowances()  # unused calls are refunded when an allowance closes
            refund = _refund_summary(closed, payer.without_return_path > 0)
            if refund["status"] == "paid":  # it arrives at our node over Lightning: wait for it briefly
                for _ in range(50):
                    if _received_msat(node) - received_before >= refund["refunded_msat"]:
                        break
                    await asyncio.sleep(0.1)
            refund["received_msat"] = _received_msat(node) - received_before
            return {"url": url, "calls": count, "statuses": statuses, "channel_open_s": round(channel_s, 2),
                    "calls_per_s": round(count / elapsed, 1) if elapsed else None,
                    "lightning_payments": len(auth.paid_invoices), "paid_msat": auth.spent_msat,
                    "price": offer.get("price"), "server_node": offer.get("node_id"),
                    "unused_calls": refund.pop("unused_calls"), "refund": refund, "last_response": last}
        finally:
            await node.stop()

    result = _run(run())
    if as_json:
        click.echo(json_text(result))
        return
    Console().print(result_table(f"lightspeed call {url}", result))


def _received_msat(node: Any) -> int:
    return sum(i.received_msat for i in node.store.invoices() if i.status == "paid")


def _refund_summary(closed: list[dict[str, Any]], some_without_path: bool) -> dict[str, Any]:
    """One refund line for the allowances closed: the unused calls, the amount, and its status
    (paid, in_flight, failed, not_refundable, none; the worst of them when there are several)."""
    unused = sum(int(c.get("unused_calls") or 0) for c in closed)
    amount = sum(int(c.get("refund_msat") or 0) for c in closed)
    refunded = sum(int((c.get("refund") or {}).get("refunded_msat") or 0) for c in closed)
    order = ["failed", "not_refundable", "due", "in_flight", "by_invoice", "paid", "none"]
    statuses = [str((c.get("refund") or {}).get("status", "due")) for c in closed] or ["none"]
    status = min(statuses, key=lambda s: order.index(s) if s in order else 0)
    summary: dict[str, Any] = {"unused_calls": unused, "amount_msat": amount, "status": status,
                               "refunded_msat": refunded}
    reasons = [str(c["refund"]["reason"]) for c in closed if (c.get("refund") or {}).get("reason")]
    if reasons:
        summary["reason"] = reasons[0]
    elif status == "not_refundable" or (status == "due" and some_without_path):
        summary["reason"] = "our payment carried no return path"
    return summary


def _chain_file(path: str) -> Path:
    chain = Path(path).expanduser()
    chain.parent.mkdir(parents=True, exist_ok=True)
    return chain


def _run(coro: Any) -> Any:
    import asyncio

    import httpx

    try:
        return asyncio.run(coro)
    except (LightspeedError, httpx.HTTPError, OSError, TimeoutError) as exc:
        click.echo(f"error: {exc or type(exc).__name__}", err=True)
        raise SystemExit(1) from None
