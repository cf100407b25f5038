"""A multi-part payment across a restart of the payer: every part is tracked.

A pays B's hold invoice in two parts, one over the direct channel A - B and one through C.
While A is down, B cancels the payment: both parts fail back towards A. A restarts with only
one of its peers reachable: the part over that channel fails, the other one is still in flight,
so the payment is still pending (it was reported failed when only the last HTLC was recorded).
Once the other peer is back, the second part fails too, and the payment is failed. The peer
kept away is the one of the part *not* recorded last in the payment record, so the test does
not depend on the order in which the parts left.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from lightspeed.channel.htlc_log import Side
from lightspeed.crypto.hashes import sha256
from lightspeed.node.node import HtlcHeld, Node
from tests.support.network import (
    Network,
    bring_online,
    create_network,
    next_event,
    take_offline,
    until,
)

SAT = 1_000_000
AMOUNT_MSAT = 1_200_000 * 1000  # more than the direct channel carries: two parts


def _has_htlcs(node: Node, cid: bytes) -> bool:
    channel = node.channels.get(cid)
    assert channel is not None
    log = channel.log
    return bool(log.commitment(Side.LOCAL, pending=True).htlcs or log.commitment(Side.REMOTE, pending=True).htlcs)


async def _scenario(tmp_path: Path) -> None:
    net: Network = await create_network(3, [(0, 1, SAT, 0), (0, 2, SAT, 0), (2, 1, SAT, 0)], datadir=tmp_path)
    try:
        a, b = net.nodes[0], net.nodes[1]
        preimage = os.urandom(32)
        invoice = b.create_hold_invoice(sha256(preimage), AMOUNT_MSAT, "two parts")
        paying = asyncio.create_task(a.pay(invoice, timeout=20))
        held = await next_event(b, HtlcHeld, timeout=20)
        assert isinstance(held, HtlcHeld) and held.amount_msat == AMOUNT_MSAT
        direct, via_c = net.channel(0, 1), net.channel(0, 2)
        assert _has_htlcs(a, direct) and _has_htlcs(a, via_c)  # one part on each of A's channels
        await take_offline(net, 0)
        paying.cancel()

        await b.cancel_hold(invoice.payment_hash)  # both parts fail back towards A (offline)
        c = net.nodes[2]
        await until(lambda: not _has_htlcs(c, net.channel(2, 1)) and not _has_htlcs(b, net.channel(2, 1)))
        await until(lambda: any(r.failure is not None for r in c.store.incoming_htlcs()))

        record = a.store.payment(invoice.payment_hash)
        assert record is not None and record.status == "pending"
        recorded = record.channel_id  # the part recorded last: its failure comes first
        other = via_c if recorded == direct else direct
        away = 2 if other == via_c else 1
        await take_offline(net, away)

        a = await bring_online(net, 0)
        await until(lambda: recorded in a.channels and not _has_htlcs(a, recorded), timeout=20)
        await asyncio.sleep(0.3)
        record = a.store.payment(invoice.payment_hash)
        assert record is not None and record.status == "pending", record  # the other part is in flight
        assert _has_htlcs(a, other)

        await bring_online(net, away)
        await until(lambda: getattr(a.store.payment(invoice.payment_hash), "status", "") == "failed", timeout=20)
        assert not _has_htlcs(a, other)
        assert a.store.payment_parts(invoice.payment_hash) == []
    finally:
        await net.stop()


def test_mpp_payment_is_pending_while_a_part_is_in_flight_after_a_restart_and_fails_when_all_failed(
        tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(_scenario(tmp_path), 90))
