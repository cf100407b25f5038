"""One durable node in its own process, driven by JSON lines on stdin (for crash tests and benchmarks).

    python -m tests.support.node_runner --datadir DIR --chain FILE [--port N] [--no-fsync] [--profile FILE]

The node's key and wallet seed live in DIR (created on first start), its store in
DIR/node.sqlite, the shared regtest chain in FILE. Each command is one JSON object on
a line; each answer is one JSON line on stdout carrying the command's ``id``. ``pay``
answers when the payment ends, so many can be in flight. Commands: ``info``,
``connect``, ``open``, ``graph`` (the channels to route over), ``invoice``, ``invoices`` (many at once), ``pay``, ``bench`` (pay a list, timed in-process), ``state``.
Killing this process at any moment (``kill -9``) is what the crash tests do.
``--profile FILE`` runs the node under cProfile timed by ``time.process_time`` (CPU time, so
waiting on the peer or on fsync does not count) and writes the stats to FILE at a clean exit.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from lightspeed.chain import RegtestChain
from lightspeed.channel.htlc_log import Side
from lightspeed.errors import LightspeedError
from lightspeed.invoice import Invoice, decode
from lightspeed.node.forwarding import DEFAULT_POLICY
from lightspeed.node.node import Node
from lightspeed.routing import ChannelGraph, Policy
from lightspeed.store import SqliteStore, open_store


def _secret(path: Path) -> bytes:
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(os.urandom(32))
        os.replace(tmp, path)
    return path.read_bytes()


def _commits(node: Node) -> int:
    assert isinstance(node.store, SqliteStore)
    return node.store.commits


def _state(node: Node) -> dict[str, Any]:
    channels = {}
    for cid, channel in node.channels.items():
        view = channel.log.commitment(Side.LOCAL)
        channels[cid.hex()] = {
            "capacity_msat": channel.log.capacity_msat,
            "local_msat": view.to_local_msat,
            "remote_msat": view.to_remote_msat,
            "htlc_msat": sum(h.amount_msat for h in view.htlcs),
            "htlcs": len(view.htlcs),
            "remote_htlcs": len(channel.log.commitment(Side.REMOTE).htlcs),
            "pending_changes": channel.log.has_changes_to_sign() or channel.log.awaiting_revoke,
            "ready": node.channel_is_ready(cid),
        }
    stats = {"sent": dict(node.sent_counts), "channel_writes": node.channel_writes, "commits": _commits(node),
             "htlc_signatures": node.htlc_signatures_sent, "cpu_s": time.process_time()}
    payments = [{"payment_hash": p.payment_hash.hex(), "status": p.status, "amount_msat": p.amount_msat}
                for p in node.store.payments()]
    invoices = [{"payment_hash": i.payment_hash.hex(), "status": i.status, "received_msat": i.received_msat}
                for i in node.store.invoices()]
    return {"channels": channels, "payments": payments, "invoices": invoices, "stats": stats}


async def _bench(node: Node, invoices: list[str], concurrency: int) -> dict[str, Any]:
    """Pay ``invoices`` with at most ``concurrency`` in flight; time it inside this process."""
    decoded = [decode(i) for i in invoices]
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    sent_before, commits_before = Counter(node.sent_counts), _commits(node)
    htlc_signatures_before, cpu_before = node.htlc_signatures_sent, time.process_time()

    async def one(invoice: Invoice) -> None:
        async with gate:
            began = time.perf_counter()
            await node.pay(invoice, timeout=60)
            latencies.append(time.perf_counter() - began)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in decoded))
    elapsed = time.perf_counter() - start
    sent = node.sent_counts - sent_before
    return {"elapsed_s": elapsed, "latencies_s": latencies, "sent": dict(sent),
            "commits": _commits(node) - commits_before,
            "htlc_signatures": node.htlc_signatures_sent - htlc_signatures_before,
            "cpu_s": time.process_time() - cpu_before}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datadir", required=True, type=Path)
    parser.add_argument("--chain", required=True, type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args()
    args.datadir.mkdir(parents=True, exist_ok=True)
    chain = RegtestChain(args.chain)
    node = Node(_secret(args.datadir / "node_key"), chain, _secret(args.datadir / "wallet_seed"),
                store=open_store(args.datadir, fsync=not args.no_fsync))
    port = await node.start("127.0.0.1", args.port)
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read_stdin, daemon=True).start()

    def answer(request: dict[str, Any], **fields: Any) -> None:
        sys.stdout.write(json.dumps({"id": request.get("id"), **fields}) + "\n")
        sys.stdout.flush()

    async def run(request: dict[str, Any]) -> None:
        cmd = request["cmd"]
        try:
            if cmd == "info":
                answer(request, node_id=node.node_id.hex(), port=port,
                       script=node.wallet.new_key().script_pubkey.hex())
            elif cmd == "connect":
                await node.connect(request["host"], request["port"], bytes.fromhex(request["node_id"]))
                answer(request, ok=True)
            elif cmd == "open":
                cid = await node.open_channel(bytes.fromhex(request["node_id"]), request["funding_sat"])
                answer(request, channel_id=cid.hex(), short_channel_id=node.short_channel_id(cid))
            elif cmd == "graph":  # the network to route over: [[scid, node1, node2, capacity_sat], ...]
                graph = ChannelGraph()
                policy = Policy(DEFAULT_POLICY.fee_base_msat, DEFAULT_POLICY.fee_proportional_millionths,
                                DEFAULT_POLICY.cltv_expiry_delta, DEFAULT_POLICY.htlc_minimum_msat)
                for scid, node1, node2, capacity in request["channels"]:
                    graph.add_channel(scid, bytes.fromhex(node1), bytes.fromhex(node2), capacity, policy, policy)
                node.graph = graph
                answer(request, ok=True)
            elif cmd == "invoices":
                made = [node.create_invoice(request["amount_msat"], f"crash {i}").encode()
                        for i in range(request["count"])]
                answer(request, invoices=made)
            elif cmd == "pay":
                preimage = await node.pay(decode(request["invoice"]), timeout=request.get("timeout", 30))
                answer(request, status="succeeded", preimage=preimage.hex())
            elif cmd == "bench":
                answer(request, **await _bench(node, request["invoices"], request["concurrency"]))
            elif cmd == "state":
                answer(request, **_state(node))
            else:
                answer(request, error=f"unknown command {cmd}")
        except (LightspeedError, TimeoutError, OSError, KeyError) as exc:
            answer(request, error=f"{type(exc).__name__}: {exc}")

    answer({"id": "ready"}, node_id=node.node_id.hex(), port=port)
    tasks = set()
    while (line := await lines.get()) is not None:
        task = asyncio.create_task(run(json.loads(line)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await node.stop()


def _profiled(path: Path) -> None:
    """Run the node under cProfile in CPU time; the stats file is what benchmarks/channel.py reads."""
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    try:
        asyncio.run(main())
    finally:
        profiler.disable()
        profiler.dump_stats(str(path))


if __name__ == "__main__":
    if "--profile" in sys.argv:
        _profiled(Path(sys.argv[sys.argv.index("--profile") + 1]))
    else:
        asyncio.run(main())
