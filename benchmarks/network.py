"""Multi-hop payments per second: a 3-hop route beside a direct channel, in the same run.

Four durable nodes (SQLite stores in WAL mode, fsync on unless ``--no-fsync``) in one
process, over loopback TCP with BOLT 8, on the embedded regtest chain: 0 - 1 - 2 - 3. The
payer 0 pays invoices of node 1 (one channel, the direct figure) and of node 3 (three
channels, two forwarders) one after another with ``Node.pay`` (path finding, onion, the
commitment dance on every channel, the preimage back). The limit beside them: a 3-hop
payment runs the direct payment's channel work three times, so about a third of the
direct rate is what forwarding costs by itself; the rest is routing and onions.

All four nodes share one Python process and one core: every signature and every store
commit of every hop is on the same event loop. Daemon processes (one per node) would
run the hops in parallel; they are not measured here. Published per-node figures for
comparison: 20 to 90 payments/s for LND, Core Lightning and Eclair on real disks.

``--quick`` runs fewer payments (for a smoke run).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from tests.support.network import Network, create_network

from benchmarks._util import report
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


def main() -> None:
    quick = "--quick" in sys.argv
    fsync = "--no-fsync" not in sys.argv
    count = 20 if quick else 100
    results = asyncio.run(_measure(count, fsync))
    direct_rate, direct_ms = results["direct"]
    hops_rate, hops_ms = results["3 hops"]
    rows = [
        ("direct channel (0 -> 1)", direct_rate, direct_ms, "1.00"),
        ("3-hop route (0 -> 1 -> 2 -> 3)", hops_rate, hops_ms, f"{hops_rate / direct_rate:.2f}"),
        ("limit: a third of the direct rate", direct_rate / 3, direct_ms * 3, "0.33"),
    ]
    report(f"Sequential payments, 4 in-process nodes over TCP, fsync {'on' if fsync else 'off'} ({count} each)",
           ["path", "payments/s", "median ms", "vs direct"], rows,
           {"benchmark": "network", "payments": count, "fsync": fsync,
            "direct_payments_per_s": round(direct_rate, 1), "direct_median_ms": round(direct_ms, 2),
            "three_hop_payments_per_s": round(hops_rate, 1), "three_hop_median_ms": round(hops_ms, 2),
            "three_hop_vs_direct": round(hops_rate / direct_rate, 3)})


if __name__ == "__main__":
    main()
