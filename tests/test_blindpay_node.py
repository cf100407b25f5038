"""Blinded payment paths between in-process nodes over loopback TCP (tests/support/network.py).

Real nodes, signed commitments, Sphinx onions: the payee builds blinded paths to itself, the
payer pays over them, and the nodes inside the path forward with the path's own terms and
answer every failure the way BOLT 2 and BOLT 4 say (``invalid_onion_blinding``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import pytest

from lightspeed.codec.features import Features
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import PaymentError
from lightspeed.invoice import build_invoice
from lightspeed.invoice.encode import DEFAULT_FEATURES as INVOICE_FEATURES
from lightspeed.node.node import Node, PaymentReceived
from lightspeed.node.paying import decode_outcome
from lightspeed.node.peer import DEFAULT_FEATURES
from lightspeed.onion.blinding import BlindedHop, PaymentRelay
from lightspeed.onion.failure import FailureCode
from lightspeed.payments.blinded import (
    PathTerms,
    RelayHop,
    amount_at_introduction,
    blinded_onion,
    build_payment_path,
)
from lightspeed.routing import Route, RouteHop
from tests.support.network import (
    Network,
    create_network,
    next_event,
    no_htlcs,
    restart_from_disk,
    route_along,
    until,
)

SAT = 1_000_000
LINE = [(0, 1, SAT, 0), (1, 2, SAT, 0), (2, 3, SAT, 0)]  # A - B - C - D
DIAMOND = [(0, 1, 2 * SAT, 0), (0, 2, 2 * SAT, 0), (1, 3, SAT, 0), (2, 3, SAT, 0)]  # A - B|C - D


def run(scenario: object) -> None:
    """Run a scenario; on failure, give its nodes' tasks 5 s to end instead of waiting for ever."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(scenario, 60))  # type: ignore[arg-type]
    finally:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.wait(tasks, timeout=5))
        loop.close()


def balances(net: Network) -> list[int]:
    return [net.balance_msat(i) for i in range(len(net.nodes))]


def test_a_pays_d_over_a_blinded_path_introduced_by_b_with_a_dummy_hop() -> None:
    async def scenario() -> None:
        net = await create_network(4, LINE)
        a, b, c, d = net.nodes
        request = d.blinded_payment_paths(50_000_000, via=[[b.node_id, c.node_id]], dummy_hops=1)
        (path, info), = request.paths
        assert path.first_node_id == b.node_id and len(path.hops) == 4  # B, C, D, D's dummy
        assert not {h.blinded_node_id for h in path.hops} & {b.node_id, c.node_id, d.node_id}
        before = balances(net)
        preimage = await a.pay_blinded(request.paths, 50_000_000, request.payment_hash, timeout=15)
        assert sha256(preimage) == request.payment_hash
        assert await next_event(d, PaymentReceived) == PaymentReceived(request.payment_hash, 50_000_000)
        await until(lambda: no_htlcs(net))
        after = balances(net)
        sent = before[0] - after[0]
        assert sent == 50_000_000 + info.fee_base_msat + 50_000_000 * info.fee_proportional_millionths // 1_000_000
        # B and C forwarded by the payment_relay D put in the path (their own policies), to the msat.
        relay_b, relay_c = (PaymentRelay(p.cltv_expiry_delta, p.fee_proportional_millionths, p.fee_base_msat)
                            for p in (b.forwarding_policy, c.forwarding_policy))
        to_c = relay_b.amount_to_forward_msat(sent)
        to_d = relay_c.amount_to_forward_msat(to_c)
        assert after[1] - before[1] == sent - to_c > 0
        assert after[2] - before[2] == to_c - to_d > 0
        assert after[3] - before[3] == to_d >= 50_000_000
        record = d.store.invoice(request.payment_hash)
        assert record is not None and record.status == "paid"
        await net.stop()

    run(scenario())


def forged_path(net: Network, payee: int, via: list[int], path_id: bytes) -> tuple[object, object]:
    """A blinded path to ``payee`` made by someone else (the payer): right hops, wrong path_id."""
    nodes = [net.nodes[i] for i in [*via, payee]]
    relays = [RelayHop(n.node_id, net.scid(via[k], [*via, payee][k + 1]), n.forwarding_policy.fee_base_msat,
                       n.forwarding_policy.fee_proportional_millionths, n.forwarding_policy.cltv_expiry_delta, 1,
                       10**12) for k, n in enumerate(nodes[:-1])]
    height = net.chain.tip()[0]
    return build_payment_path(os.urandom(32), relays, PathTerms(nodes[-1].node_id, path_id, height + 500, 18), 1)


def test_a_wrong_path_id_or_tampered_recipient_data_is_refused_as_invalid_onion_blinding() -> None:
    async def scenario() -> None:
        net = await create_network(4, LINE)
        a, b, c, d = net.nodes
        request = d.blinded_payment_paths(20_000_000, via=[[b.node_id, c.node_id]])
        before = balances(net)
        # A path to D made by A itself, for D's payment hash: D cannot find its path_id in it.
        forged = forged_path(net, 3, [1, 2], os.urandom(32))
        with pytest.raises(PaymentError, match="invalid_onion_blinding from hop 0"):
            await a.pay_blinded([forged], 20_000_000, request.payment_hash, timeout=10)  # type: ignore[list-item]
        # D's own path with its last hop's encrypted_recipient_data flipped by one bit.
        (path, info), = request.paths
        hops = list(path.hops)
        data = hops[-1].encrypted_recipient_data
        hops[-1] = BlindedHop(hops[-1].blinded_node_id, data[:-1] + bytes([data[-1] ^ 1]))
        tampered = dataclasses.replace(path, hops=tuple(hops))
        with pytest.raises(PaymentError, match="invalid_onion_blinding from hop 0"):
            await a.pay_blinded([(tampered, info)], 20_000_000, request.payment_hash, timeout=10)
        await until(lambda: no_htlcs(net))
        assert balances(net) == before  # nothing moved
        # Inside the path the failures went back malformed; the introduction node turned them
        # into update_fail_htlc(invalid_onion_blinding) for the payer.
        assert d.sent_counts["update_fail_malformed_htlc"] == 2 and c.sent_counts["update_fail_malformed_htlc"] == 2
        assert c.sent_counts["update_fail_htlc"] == 0 and b.sent_counts["update_fail_htlc"] == 2
        record = d.store.invoice(request.payment_hash)
        assert record is not None and record.status == "unpaid"
        preimage = await a.pay_blinded(request.paths, 20_000_000, request.payment_hash, timeout=15)
        assert sha256(preimage) == request.payment_hash  # the real path still pays
        await net.stop()

    run(scenario())


def test_an_unblinded_payment_cannot_pay_a_blinded_only_request() -> None:
    async def scenario() -> None:
        net = await create_network(2, [(0, 1, SAT, 0)])
        a, d = net.nodes
        request = d.blinded_payment_paths(10_000_000)
        record = d.store.invoice(request.payment_hash)
        assert record is not None
        # Even knowing the secret (the path_id), a payment outside a blinded path is refused.
        with pytest.raises(PaymentError, match="incorrect_or_unknown_payment_details"):
            await a.send_to_route(route_along(net, [0, 1], 10_000_000), request.payment_hash, record.payment_secret)
        await net.stop()

    run(scenario())


def test_mpp_across_two_blinded_paths_when_one_cannot_carry_the_amount() -> None:
    async def scenario() -> None:
        net = await create_network(4, DIAMOND)
        a, b, c, d = net.nodes
        request = d.blinded_payment_paths(1_400_000_000, via=[[b.node_id], [c.node_id]])
        assert all(info.htlc_maximum_msat == SAT * 1000 for _, info in request.paths)
        before = balances(net)
        preimage = await a.pay_blinded(request.paths, 1_400_000_000, request.payment_hash, timeout=20)
        assert sha256(preimage) == request.payment_hash
        assert await next_event(d, PaymentReceived) == PaymentReceived(request.payment_hash, 1_400_000_000)
        await until(lambda: no_htlcs(net))
        after = balances(net)
        assert after[1] > before[1] and after[2] > before[2]  # both introduction nodes carried a part
        assert b.sent_counts["update_add_htlc"] == 1 and c.sent_counts["update_add_htlc"] == 1
        await net.stop()

    run(scenario())


def test_a_failed_path_is_retried_over_the_next_one() -> None:
    async def scenario() -> None:
        net = await create_network(4, DIAMOND)
        a, b, c, d = net.nodes
        request = d.blinded_payment_paths(30_000_000, via=[[b.node_id], [c.node_id]])
        # B raises its fee after D made the path: B refuses what the path pays it (BOLT 4: any
        # error at the introduction node is invalid_onion_blinding); A moves on to C's path.
        b.forwarding_policy = dataclasses.replace(b.forwarding_policy, fee_base_msat=1_000_000)
        preimage = await a.pay_blinded(request.paths, 30_000_000, request.payment_hash, timeout=20)
        assert sha256(preimage) == request.payment_hash
        assert b.sent_counts["update_fail_htlc"] == 1 and b.sent_counts["update_add_htlc"] == 0
        assert c.sent_counts["update_add_htlc"] == 1
        await net.stop()

    run(scenario())


def test_every_path_failing_ends_the_payment_with_the_last_reason() -> None:
    async def scenario() -> None:
        net = await create_network(4, DIAMOND)
        a, b, c, d = net.nodes
        request = d.blinded_payment_paths(30_000_000, via=[[b.node_id], [c.node_id]])
        for node in (b, c):
            node.forwarding_policy = dataclasses.replace(node.forwarding_policy, fee_base_msat=1_000_000)
        with pytest.raises(PaymentError, match=r"every blinded path failed \(invalid_onion_blinding from hop 0\)"):
            await a.pay_blinded(request.paths, 30_000_000, request.payment_hash, timeout=20)
        payment = a.payment_status(request.payment_hash)
        assert payment is not None and payment.status == "failed"
        await net.stop()

    run(scenario())


def test_the_payees_paths_survive_its_restart_and_pay_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        net = await create_network(4, LINE, datadir=tmp_path)
        a, b, c, d = net.nodes
        request = d.blinded_payment_paths(25_000_000, via=[[b.node_id, c.node_id]])
        d = await restart_from_disk(net, 3)  # crash and restart: the request lives in the store
        await until(lambda: all(d.channel_is_ready(cid) and cid in d._reestablished for cid in d.channels)
                    and c._usable(net.channel(2, 3)))
        preimage = await a.pay_blinded(request.paths, 25_000_000, request.payment_hash, timeout=20)
        assert sha256(preimage) == request.payment_hash
        await until(lambda: no_htlcs(net))
        d = await restart_from_disk(net, 3)
        record = d.store.invoice(request.payment_hash)
        assert record is not None and record.status == "paid" and record.received_msat >= 25_000_000
        await net.stop()

    run(scenario())


def test_a_bolt11_invoice_requiring_route_blinding_is_refused_only_by_a_node_without_it() -> None:
    async def scenario() -> None:
        net = await create_network(2, [(0, 1, SAT, 0)])
        a, d = net.nodes
        plain = d.create_invoice(5_000_000, "requires 24")
        record = d.store.invoice(plain.payment_hash)
        assert record is not None
        # The same payment, re-issued by D with option_route_blinding required (bit 24).
        invoice = build_invoice(network=d.network, amount_msat=5_000_000, description="requires 24",
                                payment_hash=plain.payment_hash, payment_secret=plain.payment_secret,
                                timestamp=plain.timestamp, expiry=3600, payee=None,
                                features=INVOICE_FEATURES | {24}).sign(d.privkey)
        without = Node(os.urandom(32), net.chain, b"a wallet seed without blinding", features=Features(
            DEFAULT_FEATURES.bits - {25}))
        with pytest.raises(PaymentError, match="requires option_route_blinding"):
            await without.pay(invoice)
        with pytest.raises(PaymentError, match="option_route_blinding"):
            await without.pay_blinded([], 1000, bytes(32))
        preimage = await a.pay(invoice, timeout=15)  # BOLT 11 carries no blinded path: paid as usual
        assert sha256(preimage) == invoice.payment_hash
        await net.stop()

    run(scenario())


def test_the_payee_restarts_between_two_parts_and_settles_both(tmp_path: Path) -> None:
    """Part one reaches D over B's path and waits in D's MPP set; D crashes and restarts (the
    HTLC's onion and its path_key come back from the store, the part is read again); part two
    arrives over C's path and both settle."""

    async def scenario() -> None:
        net = await create_network(4, DIAMOND, datadir=tmp_path)
        a, b, c, d = net.nodes
        request = d.blinded_payment_paths(40_000_000, via=[[b.node_id], [c.node_id]])
        height = net.chain.tip()[0]

        def part(index: int) -> asyncio.Task[object]:
            blinded, info = request.paths[index]
            intro = net.nodes[index + 1]
            at_intro = amount_at_introduction(info, 20_000_000)
            route = Route((RouteHop(net.scid(0, index + 1), intro.node_id, at_intro, 0, 0),))
            built = blinded_onion(route, blinded, info, 20_000_000, 40_000_000, height + 12, request.payment_hash,
                                  os.urandom(32))
            return asyncio.ensure_future(a._offer_htlc(route.hops[0].short_channel_id, intro.node_id, at_intro,
                                                       request.payment_hash, built.first_cltv_expiry, built.onion,
                                                       built.shared_secrets))

        first = part(0)
        await until(lambda: len(d._handled) == 1)  # in D's receiver, waiting for the rest of the set
        d = await restart_from_disk(net, 3)
        # Read again from the stored onion and path_key once B and D have reestablished; a loaded CI
        # machine (the suite on 2 workers) has taken over 10 s for the reconnection and reestablish.
        await until(lambda: len(d._handled) == 1, timeout=30)
        await until(lambda: c._usable(net.channel(2, 3)), timeout=30)  # C is back in touch with D for part two
        second = part(1)
        outcomes = await asyncio.wait_for(asyncio.gather(first, second), 20)
        assert all(o[0].preimage is not None and sha256(o[0].preimage) == request.payment_hash  # type: ignore[index]
                   for o in outcomes)
        await until(lambda: no_htlcs(net))
        record = d.store.invoice(request.payment_hash)
        assert record is not None and record.status == "paid" and record.received_msat == 40_000_000
        await net.stop()

    run(scenario())


def test_the_introduction_node_restarted_mid_payment_still_answers_as_introduction_node(tmp_path: Path) -> None:
    """B forwards A's part into the path and restarts; D's MPP set times out and fails inside the path
    (malformed); B, reading its role again from the stored onion, answers A with update_fail_htlc
    invalid_onion_blinding naming the onion B received (not C's)."""

    async def scenario() -> None:
        net = await create_network(4, LINE, datadir=tmp_path, mpp_timeout=2.0)
        a, b, c, d = net.nodes
        request = d.blinded_payment_paths(20_000_000, via=[[b.node_id, c.node_id]])
        (blinded, info), = request.paths
        at_intro = amount_at_introduction(info, 10_000_000)
        route = Route((RouteHop(net.scid(0, 1), b.node_id, at_intro, 0, 0),))
        built = blinded_onion(route, blinded, info, 10_000_000, 20_000_000, net.chain.tip()[0] + 12,
                              request.payment_hash, os.urandom(32))  # half of the total: D waits for more
        sending = asyncio.ensure_future(a._offer_htlc(net.scid(0, 1), b.node_id, at_intro, request.payment_hash,
                                                      built.first_cltv_expiry, built.onion, built.shared_secrets))
        await until(lambda: len(d._handled) == 1)
        b = await restart_from_disk(net, 1)
        outcome, secrets = await asyncio.wait_for(sending, 20)
        report, failure = decode_outcome(outcome, secrets)
        assert report.erring_index == 0 and report.code == FailureCode.INVALID_ONION_BLINDING
        assert failure is not None and failure.sha256_of_onion == sha256(built.onion)
        assert b.sent_counts["update_fail_htlc"] == 1
        await until(lambda: no_htlcs(net))
        await net.stop()

    run(scenario())
