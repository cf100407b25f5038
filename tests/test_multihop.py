"""Multi-hop payments between in-process nodes over loopback TCP (tests/support/network.py).

Every scenario runs real nodes: BOLT 8 connections, signed commitments, Sphinx onions, and
failures that travel back encrypted through every hop.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from lightspeed.codec.generated import ChannelUpdate
from lightspeed.codec.messages import decode_message
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import PaymentError
from lightspeed.gossip.create import scid_from_bytes
from lightspeed.invoice import decode, verify_payment_proof
from lightspeed.node.node import HtlcHeld, PaymentReceived
from lightspeed.node.paying import RouteFailed
from lightspeed.onion.failure import FailureCode
from lightspeed.routing import directed_key
from tests.support.network import (
    claim_payment,
    create_network,
    next_event,
    route_along,
    send_payment,
    take_offline,
    until,
)

SAT = 1_000_000
LINE = [(0, 1, SAT, 0), (1, 2, SAT, 0), (2, 3, SAT, 0), (3, 4, SAT, 0)]


def run(scenario: object) -> None:
    asyncio.run(asyncio.wait_for(scenario, 50))  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_payment_crosses_four_hops_and_every_forwarder_earns_its_fee() -> None:
    async def scenario() -> None:
        net = await create_network(5, LINE)
        before = [net.balance_msat(i) for i in range(5)]
        preimage, invoice = await send_payment(net, [0, 1, 2, 3, 4], 50_000_000)
        assert verify_payment_proof(invoice, preimage)
        assert await next_event(net.nodes[4], PaymentReceived) == PaymentReceived(invoice.payment_hash, 50_000_000)
        route = route_along(net, [0, 1, 2, 3, 4], 50_000_000)
        await until(lambda: net.balance_msat(4) == before[4] + 50_000_000)
        await until(lambda: net.balance_msat(0) == before[0] - route.total_amount_msat)
        for i, hop in zip((1, 2, 3), route.hops, strict=False):
            await until(lambda i=i, hop=hop: net.balance_msat(i) == before[i] + hop.fee_msat)
        await net.stop()

    run(scenario())


async def expect_failure(coro: object) -> RouteFailed:
    with pytest.raises(RouteFailed) as caught:
        await asyncio.wait_for(coro, 20)  # type: ignore[arg-type]
    return caught.value


@pytest.mark.slow
def test_each_failure_code_is_produced_by_the_right_hop_and_nothing_moves() -> None:
    async def scenario() -> None:
        net = await create_network(5, [(0, 1, SAT, 0), (1, 2, SAT, 0), (2, 3, 200_000, 0), (3, 4, SAT, 0)],
                                   mpp_timeout=1.0)
        before = [net.balance_msat(i) for i in range(5)]
        path = [0, 1, 2, 3, 4]
        payer = net.nodes[0]

        async def failing(amount: int, secret: bytes | None = None, total: int | None = None,
                          **tamper: object) -> RouteFailed:
            invoice = net.nodes[4].create_invoice(amount, "x")
            route = route_along(net, path, amount, **tamper)  # type: ignore[arg-type]
            return await expect_failure(payer.send_to_route(
                route, invoice.payment_hash, secret or invoice.payment_secret, total))

        cases = [
            (await failing(10_000_000, scid_override={1: 999 << 40}), 0, FailureCode.UNKNOWN_NEXT_PEER),
            (await failing(10_000_000, fee_cut_msat=1), 0, FailureCode.FEE_INSUFFICIENT),
            (await failing(10_000_000, cltv_cut=1), 0, FailureCode.INCORRECT_CLTV_EXPIRY),
            (await failing(300_000_000), 1, FailureCode.TEMPORARY_CHANNEL_FAILURE),  # 2 -> 3 is too small
            (await failing(10_000_000, secret=os.urandom(32)), 3, FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS),
            (await failing(10_000_000, total=20_000_000), 3, FailureCode.MPP_TIMEOUT),  # half of a set
        ]
        for failure, erring, code in cases:
            assert (failure.report.erring_index, failure.report.code) == (erring, code), failure
        # Policy and liquidity failures carry the forwarder's signed channel_update for its outgoing channel.
        for failure, channel in ((cases[1][0], (1, 2)), (cases[3][0], (2, 3))):
            assert failure.failure is not None and failure.failure.channel_update
            update = decode_message(failure.failure.channel_update)
            assert isinstance(update, ChannelUpdate)
            assert scid_from_bytes(update.short_channel_id) == net.scid(*channel)
            assert update.fee_base_msat == net.nodes[channel[0]].forwarding_policy.fee_base_msat
        await until(lambda: [net.balance_msat(i) for i in range(5)] == before)
        preimage, invoice = await send_payment(net, path, 10_000_000)  # the network still pays
        assert verify_payment_proof(invoice, preimage)
        await net.stop()

    run(scenario())


DIAMOND = [(0, 1, SAT, 0), (0, 2, SAT, 0), (1, 3, SAT, 0), (2, 3, SAT, 0)]


@pytest.mark.slow
def test_pay_retries_around_a_channel_without_liquidity() -> None:
    from lightspeed.node.forwarding import DEFAULT_POLICY
    from lightspeed.payments.forward import ForwardingPolicy

    async def scenario() -> None:
        dear = ForwardingPolicy(5_000, 100, 40, 1, DEFAULT_POLICY.htlc_maximum_msat)
        # 3 funded the channel with 1: node 1 has nothing to send towards 3, though the graph cannot know.
        net = await create_network(4, [(0, 1, SAT, 0), (0, 2, SAT, 0), (3, 1, SAT, 0), (2, 3, SAT, 0)],
                                   policies={2: dear})
        before = [net.balance_msat(i) for i in range(4)]
        invoice = net.nodes[3].create_invoice(100_000_000, "retry")
        # The cheapest route is through 1 (default fees); it fails there, the retry goes through 2.
        preimage = await asyncio.wait_for(net.nodes[0].pay(invoice), 20)
        assert verify_payment_proof(invoice, preimage)
        await until(lambda: net.balance_msat(2) == before[2] + dear.fee_msat(100_000_000))
        assert net.balance_msat(1) == before[1]
        # The payer learned that 1 -> 3 could not carry the amount (max offset set on that direction).
        key = directed_key(net.scid(1, 3), net.nodes[1].node_id, net.nodes[3].node_id)
        learned = {entry[0]: entry for entry in net.nodes[0].scorer.to_json()["liquidity"]}
        assert key in learned and learned[key][2] > 0
        payment = net.nodes[0].payment_status(invoice.payment_hash)
        assert payment is not None and payment.status == "succeeded"
        await net.stop()

    run(scenario())


@pytest.mark.slow
def test_pay_retries_around_an_offline_node() -> None:
    from lightspeed.node.forwarding import DEFAULT_POLICY
    from lightspeed.payments.forward import ForwardingPolicy

    async def scenario() -> None:
        dear = ForwardingPolicy(5_000, 100, 40, 1, DEFAULT_POLICY.htlc_maximum_msat)
        # 0 -> 1 -> {2 (cheap), 3 (dear)} -> 4; node 2 goes offline: 1 fails the forward, 0 retries via 3.
        net = await create_network(5, [(0, 1, SAT, 0), (1, 2, SAT, 0), (1, 3, SAT, 0), (2, 4, SAT, 0),
                                       (3, 4, SAT, 0)], policies={3: dear})
        await take_offline(net, 2)
        await until(lambda: not net.nodes[1].channel_is_ready(net.channel(1, 2)))
        before = net.balance_msat(3)
        invoice = net.nodes[4].create_invoice(20_000_000, "offline")
        preimage = await asyncio.wait_for(net.nodes[0].pay(invoice), 20)
        assert verify_payment_proof(invoice, preimage)
        await until(lambda: net.balance_msat(3) == before + dear.fee_msat(20_000_000))
        await net.stop()

    run(scenario())


@pytest.mark.slow
def test_mpp_splits_a_payment_no_single_route_carries_and_amp_settles_when_every_share_arrived() -> None:
    async def scenario() -> None:
        net = await create_network(4, DIAMOND)
        amount = 1_200_000_000  # more than any single channel holds
        invoice = net.nodes[3].create_invoice(amount, "big")
        preimage = await asyncio.wait_for(net.nodes[0].pay(invoice), 20)
        assert verify_payment_proof(invoice, preimage)
        received = await next_event(net.nodes[3], PaymentReceived)
        assert received == PaymentReceived(invoice.payment_hash, amount)
        set_id = await asyncio.wait_for(net.nodes[0].pay_amp(net.nodes[3].node_id, 300_000_000, parts=3), 20)
        assert await next_event(net.nodes[3], PaymentReceived) == PaymentReceived(set_id, 300_000_000)
        await net.stop()

    run(scenario())


@pytest.mark.slow
def test_an_incomplete_amp_set_times_out() -> None:
    from lightspeed.payments.amp import AMP_RECORD_TYPE, AmpPayment

    async def scenario() -> None:
        net = await create_network(3, [(0, 1, SAT, 0), (1, 2, SAT, 0)], mpp_timeout=1.0)
        shard = AmpPayment.new().shards(2)[0]
        route = route_along(net, [0, 1, 2], 10_000_000)
        failure = await expect_failure(net.nodes[0].send_to_route(
            route, shard.payment_hash, os.urandom(32), 20_000_000,
            custom_records=((AMP_RECORD_TYPE, shard.record.to_bytes()),)))
        assert (failure.report.erring_index, failure.report.code) == (1, FailureCode.MPP_TIMEOUT)
        await net.stop()

    run(scenario())


@pytest.mark.slow
def test_keysend_hold_invoices_and_the_double_pay_guard() -> None:
    async def scenario() -> None:
        net = await create_network(3, [(0, 1, SAT, 0), (1, 2, SAT, 0)])
        payer, payee = net.nodes[0], net.nodes[2]
        preimage = await asyncio.wait_for(payer.keysend(payee.node_id, 7_000_000), 20)
        assert await next_event(payee, PaymentReceived) == PaymentReceived(sha256(preimage), 7_000_000)

        secret = os.urandom(32)
        held = payee.create_hold_invoice(sha256(secret), 5_000_000, "held")
        paying = asyncio.create_task(payer.pay(held, timeout=20))
        assert await next_event(payee, HtlcHeld) == HtlcHeld(held.payment_hash, 5_000_000)
        with pytest.raises(PaymentError, match="already being paid"):
            await payer.pay(held)  # in flight: a second payment to the hash is refused
        await claim_payment(net, 2, secret)
        assert await paying == secret
        with pytest.raises(PaymentError, match="already paid"):
            await payer.pay(held)

        cancelled = payee.create_hold_invoice(sha256(os.urandom(32)), 5_000_000, "cancelled")
        paying = asyncio.create_task(payer.pay(cancelled, timeout=20))
        await next_event(payee, HtlcHeld)
        await payee.cancel_hold(cancelled.payment_hash)
        with pytest.raises(PaymentError, match="refused"):
            await paying
        await net.stop()

    run(scenario())


@pytest.mark.slow
def test_an_invoice_through_two_lsps_is_paid_through_the_second_when_the_first_is_offline() -> None:
    from lightspeed.node.forwarding import DEFAULT_POLICY
    from lightspeed.payments.forward import ForwardingPolicy

    async def scenario() -> None:
        dear = ForwardingPolicy(5_000, 100, 40, 1, DEFAULT_POLICY.htlc_maximum_msat)
        # 0 -> 1 (hub) -> LSP 2 (cheap) | LSP 3 (dear) -> 4; the LSPs' channels to 4 are private.
        net = await create_network(5, [(0, 1, SAT, 0), (1, 2, SAT, 0), (1, 3, SAT, 0), (2, 4, SAT, 0),
                                       (3, 4, SAT, 0)], private=[(2, 4), (3, 4)], policies={3: dear})
        invoice = net.nodes[4].create_invoice(30_000_000, "multi-node", route_hints=[net.hint(2, 4), net.hint(3, 4)])
        assert len(invoice.route_hints) == 2
        await take_offline(net, 2)
        await until(lambda: not net.nodes[1].channel_is_ready(net.channel(1, 2)))
        before = net.balance_msat(3)
        preimage = await asyncio.wait_for(net.nodes[0].pay(invoice), 20)
        assert verify_payment_proof(invoice, preimage)
        await until(lambda: net.balance_msat(3) == before + dear.fee_msat(30_000_000))
        await net.stop()

    run(scenario())


@pytest.mark.slow
def test_a_ten_node_network_pays_between_many_pairs_and_no_msat_appears_or_vanishes() -> None:
    from tests.support.network import no_htlcs

    async def scenario() -> None:
        ring = [(i, (i + 1) % 10, SAT, 400_000_000) for i in range(10)]
        net = await create_network(10, [*ring, (0, 5, SAT, 400_000_000), (2, 7, SAT, 400_000_000)])
        total = sum(net.balance_msat(i) for i in range(10))
        pairs = [(0, 6), (3, 9), (8, 2), (5, 1), (7, 4), (1, 8)]
        payments = await asyncio.gather(*(
            asyncio.wait_for(net.nodes[a].pay(net.nodes[b].create_invoice(5_000_000 + i, f"pair {i}")), 20)
            for i, (a, b) in enumerate(pairs)))
        assert len(payments) == len(pairs)
        for i, (_, b) in enumerate(pairs):
            event = await next_event(net.nodes[b], PaymentReceived)
            assert event.amount_msat == 5_000_000 + i  # type: ignore[union-attr]
        await until(lambda: no_htlcs(net))
        assert sum(net.balance_msat(i) for i in range(10)) == total
        await net.stop()

    run(scenario())


@pytest.mark.slow
def test_pay_goes_around_a_forwarder_whose_fee_rose_since_the_graph_was_made() -> None:
    from lightspeed.node.forwarding import DEFAULT_POLICY
    from lightspeed.payments.forward import ForwardingPolicy

    async def scenario() -> None:
        dear = ForwardingPolicy(5_000, 100, 40, 1, DEFAULT_POLICY.htlc_maximum_msat)
        net = await create_network(4, DIAMOND, policies={2: dear})
        net.nodes[1].forwarding_policy = ForwardingPolicy(50_000, 100, 40, 1, DEFAULT_POLICY.htlc_maximum_msat)
        before = net.balance_msat(2)
        invoice = net.nodes[3].create_invoice(10_000_000, "stale fee")
        # The graph still shows node 1's old fee: it answers fee_insufficient, the retry goes through 2.
        preimage = await asyncio.wait_for(net.nodes[0].pay(invoice), 20)
        assert verify_payment_proof(invoice, preimage)
        await until(lambda: net.balance_msat(2) == before + dear.fee_msat(10_000_000))
        await net.stop()

    run(scenario())


def test_a_payment_recorded_but_never_sent_before_a_stop_fails_on_the_next_start() -> None:
    from lightspeed.chain import RegtestChain
    from lightspeed.node.node import Node
    from lightspeed.store import PaymentRecord, SqliteStore

    store = SqliteStore(":memory:")
    with store.transaction():
        store.put_payment(PaymentRecord(bytes(32), 1_000, "pending"))  # no HTLC committed for it
    Node(b"\x01" * 32, RegtestChain(":memory:"), b"a wallet seed of 16+ bytes", store=store)
    record = store.payment(bytes(32))
    assert record is not None and record.status == "failed" and "stopped" in record.reason


@pytest.mark.slow
def test_an_amp_invoice_is_paid_by_shards_over_two_hops_and_only_once() -> None:
    async def scenario() -> None:
        net = await create_network(3, [(0, 1, SAT, 0), (1, 2, SAT, 0)])
        payer, payee = net.nodes[0], net.nodes[2]
        invoice = decode(payee.create_amp_invoice(30_000_000, "an AMP invoice").encode())  # via the string
        assert invoice.has_feature("amp")
        set_id = await asyncio.wait_for(payer.pay(invoice), 20)  # pay() sees the feature and sends AMP shards
        assert await next_event(payee, PaymentReceived) == PaymentReceived(set_id, 30_000_000)
        record = payee.store.invoice(invoice.payment_hash)
        assert record is not None and record.status == "paid" and record.received_msat == 30_000_000
        with pytest.raises(PaymentError, match="already paid"):
            await payer.pay(invoice)
        await net.stop()

    run(scenario())
