"""A forwarding node restarted from its store in the middle of a payment: nothing is lost.

The node in the middle commits the link incoming -> outgoing with the outgoing add, and the
preimage (or failure) with the incoming HTLC's removal, before sending either; after a
restart it resolves from what it committed. Each scenario checks the payment's end state and
that every node's balance adds up (the fee moves only if the payment succeeded).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from lightspeed.channel.htlc_log import Side
from lightspeed.codec.generated import UpdateFailHtlc, UpdateFulfillHtlc
from lightspeed.codec.message_base import WireMessage
from lightspeed.invoice import verify_payment_proof
from lightspeed.node.node import PaymentReceived
from lightspeed.node.paying import RouteFailed
from lightspeed.onion.failure import FailureCode
from tests.support.network import create_network, next_event, restart_from_disk, route_along, until

SAT = 1_000_000


def _no_htlcs(net: object) -> bool:
    return all(not c.log.commitment(Side.LOCAL).htlcs and not c.log.commitment(Side.REMOTE).htlcs
               for n in net.nodes for c in n.channels.values())  # type: ignore[attr-defined]


@pytest.mark.slow
def test_a_forward_lost_in_a_crash_is_retransmitted_and_completes(tmp_path: Path) -> None:
    async def scenario() -> None:
        net = await create_network(3, [(0, 1, SAT, 0), (1, 2, SAT, 0)], datadir=tmp_path)
        before = [net.balance_msat(i) for i in range(3)]
        forwarder = net.nodes[1]
        out_peer = forwarder._channel_peer[net.channel(1, 2)]
        out_peer.session.send = lambda message: None  # type: ignore[method-assign]  # the add never leaves
        invoice = net.nodes[2].create_invoice(40_000_000, "crash")
        paying = asyncio.create_task(net.nodes[0].pay(invoice, timeout=20))
        await until(lambda: any(r.out_channel_id for r in forwarder.store.incoming_htlcs()))
        assert not net.nodes[2].channels[net.channel(1, 2)].log.commitment(Side.LOCAL).htlcs
        # Committed: the link and the signed outgoing add; the restart retransmits the add.
        await restart_from_disk(net, 1)
        preimage = await asyncio.wait_for(paying, 25)
        assert verify_payment_proof(invoice, preimage)
        await until(lambda: _no_htlcs(net))
        fee = net.nodes[1].forwarding_policy.fee_msat(40_000_000)
        assert [net.balance_msat(i) for i in range(3)] == [before[0] - 40_000_000 - fee, before[1] + fee,
                                                          before[2] + 40_000_000]
        await until(lambda: net.nodes[1].store.incoming_htlcs() == [])  # resolved and forgotten
        await net.stop()

    asyncio.run(asyncio.wait_for(scenario(), 55))


@pytest.mark.slow
def test_a_preimage_lost_in_a_crash_is_passed_back_after_the_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        net = await create_network(3, [(0, 1, SAT, 0), (1, 2, SAT, 0)], datadir=tmp_path)
        before = [net.balance_msat(i) for i in range(3)]
        forwarder = net.nodes[1]
        back = forwarder._channel_peer[net.channel(0, 1)]
        original = back.session.send
        cut = asyncio.Event()

        def send(message: WireMessage) -> None:  # from the fulfil on, nothing reaches the payer
            if isinstance(message, UpdateFulfillHtlc):
                cut.set()
            if not cut.is_set():
                original(message)

        back.session.send = send  # type: ignore[method-assign]
        invoice = net.nodes[2].create_invoice(40_000_000, "crash")
        paying = asyncio.create_task(net.nodes[0].pay(invoice, timeout=20))
        await next_event(net.nodes[2], PaymentReceived)
        await until(cut.is_set)
        assert any(r.preimage for r in forwarder.store.incoming_htlcs())  # committed before it was sent
        await restart_from_disk(net, 1)
        preimage = await asyncio.wait_for(paying, 25)
        assert verify_payment_proof(invoice, preimage)
        await until(lambda: _no_htlcs(net))
        fee = net.nodes[1].forwarding_policy.fee_msat(40_000_000)
        assert net.balance_msat(0) == before[0] - 40_000_000 - fee
        assert net.balance_msat(1) == before[1] + fee
        assert net.balance_msat(2) == before[2] + 40_000_000
        await net.stop()

    asyncio.run(asyncio.wait_for(scenario(), 55))


@pytest.mark.slow
def test_a_failure_lost_in_a_crash_is_passed_back_after_the_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        net = await create_network(3, [(0, 1, SAT, 0), (1, 2, SAT, 0)], datadir=tmp_path)
        before = [net.balance_msat(i) for i in range(3)]
        forwarder = net.nodes[1]
        back = forwarder._channel_peer[net.channel(0, 1)]
        original = back.session.send
        cut = asyncio.Event()

        def send(message: WireMessage) -> None:  # from the fail on, nothing reaches the payer
            if isinstance(message, UpdateFailHtlc):
                cut.set()
            if not cut.is_set():
                original(message)

        back.session.send = send  # type: ignore[method-assign]
        invoice = net.nodes[2].create_invoice(40_000_000, "crash")
        route = route_along(net, [0, 1, 2], 40_000_000)
        sending = asyncio.create_task(net.nodes[0].send_to_route(route, invoice.payment_hash, os.urandom(32)))
        await until(cut.is_set)
        assert any(r.failure for r in forwarder.store.incoming_htlcs())  # committed before it was sent
        await restart_from_disk(net, 1)
        with pytest.raises(RouteFailed) as failed:
            await asyncio.wait_for(sending, 25)
        assert (failed.value.report.erring_index, failed.value.report.code) == (
            1, FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS)  # the payee's answer, unwrapped by the payer
        await until(lambda: _no_htlcs(net))
        assert [net.balance_msat(i) for i in range(3)] == before
        await net.stop()

    asyncio.run(asyncio.wait_for(scenario(), 55))
