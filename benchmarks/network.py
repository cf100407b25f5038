"""Multi-hop payments per second: a 3-hop route beside a direct channel, in the same run.

Four durable nodes (SQLite stores in WAL mode, fsync on unless ``--no-fsync``) over
loopback TCP with BOLT 8, on one regtest chain: 0 - 1 - 2 - 3. The payer 0 pays invoices
of node 1 (one channel, the direct figure) and of node 3 (three channels, two forwarders)
one after another with ``Node.pay`` (path finding, onion, the commitment dance on every
channel, the preimage back). Two setups: four daemon processes (``tests.support.node_runner``,
one per node: the hops run in parallel, as on a real network), and the same four nodes in
one process (every hop's signatures and commits on one event loop). The limit beside them:
sequentially, a 3-hop payment runs the direct payment's channel work three times, so a
third of the direct rate is what forwarding costs by itself.

Published per-node figures for comparison: 20 to 90 payments/s for LND, Core Lightning and
Eclair on real disks.

``--quick`` runs fewer payments (for a smoke run).
"""

from __future__ import annotations

import asyncio
import queue
import statistics
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from tests.support.network import Network, create_network
from tests.support.runner_client import RunnerProcess

from benchmarks._util import report
from lightspeed.chain import RegtestChain
from lightspeed.node.node import Node

AMOUNT_MSAT = 1_000_000
FUNDING_SAT = 5_000_000


async def _run(net: Network, payee: int, count: int) -> tuple[float, float]:
    """(payments per second, median milliseconds per payment) for ``count`` sequential payments."""
    payer: Node = net.nodes[0]
    latencies = []
    start = time.perf_counter()
    for _ in range(count):
        invoice = net.nodes[payee].create_invoice(AMOUNT_MSAT, "bench")
        began = time.perf_counter()
        await payer.pay(invoice, timeout=30)
        latencies.append((time.perf_counter() - began) * 1000)
    elapsed = time.perf_counter() - start
    return count / elapsed, statistics.median(latencies)


async def _measure(count: int, fsync: bool) -> dict[str, tuple[float, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        import tests.support.network as dsl

        original = dsl._store
        dsl._store = lambda datadir, i: dsl.open_store(datadir / f"node{i}", fsync=fsync)  # type: ignore[assignment]
        try:
            net = await create_network(4, [(0, 1, FUNDING_SAT, 0), (1, 2, FUNDING_SAT, 0),
                                           (2, 3, FUNDING_SAT, 0)], datadir=Path(tmp))
        finally:
            dsl._store = original  # type: ignore[assignment]
        try:
            await _run(net, 1, max(2, count // 10))  # warm up both paths
            await _run(net, 3, max(2, count // 10))
            results = {}
            for name, payee in (("direct", 1), ("3 hops", 3)):
                results[name] = await _run(net, payee, count)
            return results
        finally:
            await net.stop()
            for node in net.nodes:
                node.store.close()


def _open(chain: RegtestChain, funder: RunnerProcess, peer: RunnerProcess) -> int:
    chain.fund(bytes.fromhex(funder.call("info")["script"]), FUNDING_SAT + 1_000_000)
    funder.call("connect", host="127.0.0.1", port=peer.port, node_id=peer.node_id)
    request = funder.send("open", node_id=peer.node_id, funding_sat=FUNDING_SAT)
    while True:
        chain.mine(1)
        try:
            answer = funder.answer(request, timeout=0.05)
        except queue.Empty:
            continue
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return int(answer["short_channel_id"])


def daemons(count: int, fsync: bool) -> dict[str, tuple[float, float]]:
    """The same measurement with one node process per node."""
    with tempfile.TemporaryDirectory() as tmp:
        chain_path = Path(tmp) / "chain.sqlite"
        chain = RegtestChain(chain_path)
        nodes = [RunnerProcess(Path(tmp) / f"node{i}", chain_path, fsync=fsync) for i in range(4)]
        try:
            edges = []
            for a, b in ((0, 1), (1, 2), (2, 3)):
                scid = _open(chain, nodes[a], nodes[b])
                edges.append([scid, nodes[a].node_id, nodes[b].node_id, FUNDING_SAT])
            nodes[0].call("graph", channels=edges)
            time.sleep(0.3)  # channel_ready both ways on every channel
            results = {}
            for name, payee in (("direct", 1), ("3 hops", 3)):
                warm = nodes[payee].call("invoices", amount_msat=AMOUNT_MSAT, count=max(2, count // 10))["invoices"]
                nodes[0].call("bench", timeout=600, invoices=warm, concurrency=1)
                invoices = nodes[payee].call("invoices", amount_msat=AMOUNT_MSAT, count=count)["invoices"]
                run = nodes[0].call("bench", timeout=600, invoices=invoices, concurrency=1)
                results[name] = (count / run["elapsed_s"], 1000 * statistics.median(run["latencies_s"]))
            return results
        finally:
            for node in nodes:
                node.stop()


def main() -> None:
    quick = "--quick" in sys.argv
    fsync = "--no-fsync" not in sys.argv
    count = 20 if quick else 100
    measured = {"daemons": daemons(count, fsync), "in-process": asyncio.run(_measure(count, fsync))}
    rows = []
    summary: dict[str, object] = {"benchmark": "network", "payments": count, "fsync": fsync}
    for setup, results in measured.items():
        direct_rate, direct_ms = results["direct"]
        hops_rate, hops_ms = results["3 hops"]
        rows += [
            (f"{setup}: direct channel (0 -> 1)", direct_rate, direct_ms, "1.00"),
            (f"{setup}: 3-hop route (0 -> 1 -> 2 -> 3)", hops_rate, hops_ms, f"{hops_rate / direct_rate:.2f}"),
            (f"{setup}: limit, a third of the direct rate", direct_rate / 3, direct_ms * 3, "0.33"),
        ]
        key = setup.replace("-", "_")
        summary.update({f"{key}_direct_payments_per_s": round(direct_rate, 1),
                        f"{key}_direct_median_ms": round(direct_ms, 2),
                        f"{key}_three_hop_payments_per_s": round(hops_rate, 1),
                        f"{key}_three_hop_median_ms": round(hops_ms, 2),
                        f"{key}_three_hop_vs_direct": round(hops_rate / direct_rate, 3)})
    report(f"Sequential payments, 4 nodes over loopback TCP, fsync {'on' if fsync else 'off'} ({count} each)",
           ["setup and path", "payments/s", "median ms", "vs direct"], rows, summary)


if __name__ == "__main__":
    main()
