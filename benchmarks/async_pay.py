"""Asynchronous payments (issue 14, LightningRod) beside a direct payment over the same four nodes.

A - LSP_a - LSP_b - B in one process over loopback TCP (BOLT 8, real signatures, SQLite stores in
memory), the LSPs with real hold stores. An async round: B goes offline, A pays B's invoice with
``pay_async`` (LSP_a holds the HTLC, LSP_b keeps A's notice in B's mailbox), B stays away
``--offline-s``, then comes back (a new node object on its store, as a restarted phone); measured
from B online to A's preimage, wall and CPU time (the CPU time of this thread, which runs all
four nodes), with the release at LSP_a on the way. A direct round: B online, A pays B's invoice
over the same three channels with ``Node.pay``, measured from the call to the preimage.

Capital locked x time, per payment: the payment's amount times how long its HTLC was outstanding
on A's channel (sent to preimage) and, for async, how long LSP_a held it (admitted to released).
A direct payment locks its amount for its latency; an async one for as long as the payee is away.

Rounds alternate async and direct, ``--per-window`` of each per window, over ``--windows``
windows; the table gives the median of the window medians, the best and worst window, the
spread, and the load average at the start and end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from tests.support.network import (
    Network,
    bring_online,
    create_network,
    next_event,
    no_htlcs,
    take_offline,
    until,
)

from benchmarks._util import report
from lightspeed.asyncpay.policy import HoldLimits
from lightspeed.gossip.store import NodeRecord
from lightspeed.node.async_lsp import AsyncLsp, release_key_for
from lightspeed.node.node import HtlcHeld, HtlcReleased, PaymentReceived
from lightspeed.store.asyncpay import AsyncPayStore

A, LSP_A, LSP_B, B = 0, 1, 2, 3
AMOUNT_MSAT = 10_000_000
FUNDING_SAT = 5_000_000


@dataclass
class Samples:
    """Per window: a list of each figure of one kind of round."""

    windows: list[dict[str, list[float]]] = field(default_factory=list)

    def new_window(self) -> None:
        self.windows.append({})

    def add(self, **figures: float) -> None:
        for name, value in figures.items():
            self.windows[-1].setdefault(name, []).append(value)

    def window_medians(self, name: str) -> list[float]:
        return [statistics.median(w[name]) for w in self.windows]


def _announce(net: Network) -> None:
    """Every node knows every other's node_announcement features (what gossip would tell)."""
    for node in net.nodes:
        for other in net.nodes:
            node.gossip.gossiper.view.store.put_node(NodeRecord(
                other.node_id, 1, other.features.for_context("N").to_bytes(), b"", b"\0\0\0", (), True, b""))


async def async_round(net: Network, offline_s: float, samples: Samples) -> None:
    payer, lsp_a, lsp_b = net.nodes[A], net.nodes[LSP_A], net.nodes[LSP_B]
    assert lsp_a.async_lsp is not None and lsp_b.async_lsp is not None
    invoice = net.nodes[B].create_invoice(AMOUNT_MSAT, "async bench")
    await take_offline(net, B)

    async def when(kind: type) -> float:
        await next_event(lsp_a, kind, timeout=60)
        return time.perf_counter()

    held = asyncio.ensure_future(when(HtlcHeld))
    sent_at = time.perf_counter()
    payment = await payer.asyncpay.pay_async(invoice, lsp_a.node_id)
    held_at = await held
    released = asyncio.ensure_future(when(HtlcReleased))
    b_id = net.nodes[B].node_id
    await until(lambda: bool(lsp_b.async_lsp and lsp_b.async_lsp.pending_for(b_id, now=int(time.time()))))
    await asyncio.sleep(offline_s)  # B is away

    cpu0, online_at = time.thread_time_ns(), time.perf_counter()
    payee = await bring_online(net, B)
    preimage = await asyncio.wait_for(payment.task, 60)
    preimage_at, cpu = time.perf_counter(), (time.thread_time_ns() - cpu0) / 1e6
    released_at = await released
    assert preimage is not None
    await next_event(payee, PaymentReceived, timeout=30)
    await until(lambda: no_htlcs(net) and not lsp_a.async_lsp.book.held(), timeout=30)
    samples.add(b_online_to_preimage_ms=(preimage_at - online_at) * 1000, cpu_ms=cpu,
                b_online_to_release_ms=(released_at - online_at) * 1000,
                held_s=released_at - held_at, outstanding_s=preimage_at - sent_at,
                held_msat_s=AMOUNT_MSAT * (released_at - held_at),
                outstanding_msat_s=AMOUNT_MSAT * (preimage_at - sent_at))


async def direct_round(net: Network, samples: Samples) -> None:
    invoice = net.nodes[B].create_invoice(AMOUNT_MSAT, "direct bench")
    cpu0, sent_at = time.thread_time_ns(), time.perf_counter()
    await net.nodes[A].pay(invoice, timeout=30)
    done_at, cpu = time.perf_counter(), (time.thread_time_ns() - cpu0) / 1e6
    await until(lambda: no_htlcs(net), timeout=30)
    samples.add(b_online_to_preimage_ms=(done_at - sent_at) * 1000, cpu_ms=cpu,
                outstanding_s=done_at - sent_at, outstanding_msat_s=AMOUNT_MSAT * (done_at - sent_at))


async def measure(windows: int, per_window: int, offline_s: float) -> tuple[Samples, Samples]:
    # B opens its channel to LSP_b (pushing LSP_b half, to pay B with): B dials its LSP, as a
    # phone does, so when B comes back it connects at once (no redial backoff on LSP_b's side).
    net = await create_network(4, [(A, LSP_A, FUNDING_SAT, 0), (LSP_A, LSP_B, FUNDING_SAT, 0),
                                   (B, LSP_B, FUNDING_SAT, FUNDING_SAT * 500)])
    _announce(net)
    stores = []
    for i in (LSP_A, LSP_B):
        node = net.nodes[i]
        stores.append(AsyncPayStore(":memory:"))
        node.async_lsp = AsyncLsp(stores[-1], HoldLimits(), release_key_for(node.privkey))
    stores[1].register(net.nodes[B].node_id, None, 0)  # B's mailbox at LSP_b
    async_samples, direct_samples = Samples(), Samples()
    try:
        warm = Samples()
        warm.new_window()
        await direct_round(net, warm)  # warm up: connections, caches, the first commitment dance
        await async_round(net, 0.05, warm)
        for _ in range(windows):
            async_samples.new_window()
            direct_samples.new_window()
            for _ in range(per_window):  # alternating, so a burst of load lands on both
                await async_round(net, offline_s, async_samples)
                await direct_round(net, direct_samples)
        return async_samples, direct_samples
    finally:
        await net.stop()
        for store in stores:
            store.close()


def _spread(medians: list[float]) -> float:
    middle = statistics.median(medians)
    return (max(medians) - min(medians)) / middle * 100 if middle else 0.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks async_pay", description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=5, help="windows (default 5)")
    parser.add_argument("--per-window", type=int, default=2, help="rounds of each kind per window (default 2)")
    parser.add_argument("--offline-s", type=float, default=1.0, help="how long B is away per async round (1.0)")
    parser.add_argument("--quick", action="store_true", help="2 windows of 1 round, B away 0.2 s (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.windows, args.per_window, args.offline_s = 2, 1, 0.2
    if args.windows < 1 or args.per_window < 1 or args.offline_s < 0:
        parser.error("--windows and --per-window must be >= 1, --offline-s >= 0")
    return args


def main() -> None:
    args = parse_args()
    start_load = [round(x, 2) for x in os.getloadavg()]
    async_s, direct_s = asyncio.run(measure(args.windows, args.per_window, args.offline_s))
    end_load = [round(x, 2) for x in os.getloadavg()]
    rows: list[list[object]] = []
    summary: dict[str, object] = {
        "benchmark": "async_pay", "windows": args.windows, "per_window": args.per_window,
        "offline_s": args.offline_s, "amount_msat": AMOUNT_MSAT,
        "machine": {"load_average": start_load, "cpu_count": os.cpu_count()}, "load_average_end": end_load}
    figures = [
        ("async: B online -> A's preimage (ms)", async_s, "b_online_to_preimage_ms"),
        ("async: B online -> LSP_a releases (ms)", async_s, "b_online_to_release_ms"),
        ("async: CPU, B online -> preimage (ms)", async_s, "cpu_ms"),
        ("direct: pay -> preimage (ms)", direct_s, "b_online_to_preimage_ms"),
        ("direct: CPU, pay -> preimage (ms)", direct_s, "cpu_ms"),
        ("async: held at LSP_a (msat*s)", async_s, "held_msat_s"),
        ("async: outstanding on A's channel (msat*s)", async_s, "outstanding_msat_s"),
        ("direct: outstanding on A's channel (msat*s)", direct_s, "outstanding_msat_s"),
    ]
    for label, samples, name in figures:
        medians = samples.window_medians(name)
        middle = statistics.median(medians)
        rows.append([label, middle, min(medians), max(medians), f"{_spread(medians):.0f}%"])
        side, _, _ = label.partition(":")
        summary[f"{side}_{name}"] = {"median": round(middle, 3), "window_medians": [round(m, 3) for m in medians],
                                     "spread_pct": round(_spread(medians), 1)}
    direct_ms = statistics.median(direct_s.window_medians("b_online_to_preimage_ms"))
    async_ms = statistics.median(async_s.window_medians("b_online_to_preimage_ms"))
    summary["async_over_direct_latency"] = round(async_ms / direct_ms, 2)
    summary["async_over_direct_capital_time"] = round(
        statistics.median(async_s.window_medians("outstanding_msat_s"))
        / statistics.median(direct_s.window_medians("outstanding_msat_s")), 1)
    report(f"async payment vs direct, A - LSP_a - LSP_b - B in process, {AMOUNT_MSAT} msat, B away "
           f"{args.offline_s:g} s; {args.windows} windows x {args.per_window} alternating rounds; load average "
           f"{start_load[0]} at start, {end_load[0]} at end, {os.cpu_count()} CPUs",
           ["figure", "median", "best window", "worst window", "spread"], rows, summary)


if __name__ == "__main__":
    main()
