"""Issue 11, item 17, while the node runs (audit): expired unpaid invoices are pruned without a
restart, and never one whose payment a channel still holds.

``tests/test_store_safety_invoices.py`` proves the prune at start. A pay-per-call server makes
one invoice per allowance offer and may run for months, so the hourly prune of a running node
is what bounds its store; and a held payment (hold invoice) outlives its invoice's expiry, so
pruning that invoice would lose the payment the channel still carries.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from lightspeed.crypto.hashes import sha256
from lightspeed.node.invoices import PRUNE_GRACE_S, PRUNE_INTERVAL_S
from lightspeed.node.node import HtlcHeld, Node
from tests.support.network import create_network, until

LATER = PRUNE_GRACE_S + PRUNE_INTERVAL_S + 60  # past the grace period, and an hour after the start's prune


def _jump(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """The wall clock ``seconds`` ahead (asyncio's timers run on the monotonic clock, untouched)."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + seconds)


def test_a_running_node_prunes_expired_unpaid_invoices_hourly_and_keeps_a_held_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        net = await create_network(2, [(0, 1, 1_000_000, 0)], datadir=tmp_path)
        alice, bob = net.nodes
        try:
            offers = [bob.create_invoice(1_000 + i, f"allowance offer {i}", expiry=60) for i in range(20)]
            live = bob.create_invoice(5_000, "payable for a week", expiry=7 * 24 * 3600)
            paid = bob.create_invoice(6_000, "paid")
            await asyncio.wait_for(alice.pay(paid), 20)
            secret = os.urandom(32)
            hold = bob.create_hold_invoice(sha256(secret), 7_000, "held past its expiry", expiry=60)
            held: list[HtlcHeld] = []

            async def watch(node: Node) -> None:
                async for event in node.events():
                    if isinstance(event, HtlcHeld):
                        held.append(event)

            watcher = asyncio.create_task(watch(bob))
            paying = asyncio.create_task(alice.pay(hold, timeout=60))
            await until(lambda: len(held) == 1)

            _jump(monkeypatch, LATER)  # no restart: only the running node's timer can prune now
            await until(lambda: bob.store.invoice(offers[0].payment_hash) is None)
            assert all(bob.store.invoice(o.payment_hash) is None for o in offers)
            assert bob.store.invoice(live.payment_hash) is not None  # not expired
            record = bob.store.invoice(paid.payment_hash)
            assert record is not None and record.status == "paid"  # paid: the record of what came in
            assert bob.store.invoice(hold.payment_hash) is not None  # expired, but its HTLC is in the channel

            await bob.settle_hold(secret)  # the payment the channel carried is still received
            assert await asyncio.wait_for(paying, 20)
            record = bob.store.invoice(hold.payment_hash)
            assert record is not None and record.status == "paid"
            watcher.cancel()
        finally:
            await net.stop()

    asyncio.run(asyncio.wait_for(scenario(), 90))
