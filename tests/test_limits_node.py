"""The negotiated BOLT 2 limits between real nodes over TCP (issue 11 #1 and #6).

The limits each side announced in open_channel / accept_channel are the ones enforced: the payer
and the router see the exact sendable amount (a payment over it fails at once with "can send at
most N msat", also through REST), a forward that would break a limit fails back with
temporary_channel_failure, and a peer whose update_add_htlc breaks one gets the channel failed
with our funds intact.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import httpx
import pytest

from lightspeed.api.app import create_app
from lightspeed.api.handlers import ApiContext
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.limits import max_offer_msat
from lightspeed.channel.resolve import SpendKind
from lightspeed.codec.generated import UpdateAddHtlc
from lightspeed.codec.messages import Error
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import PaymentError
from lightspeed.node.node import Node
from lightspeed.node.paying import RouteFailed
from lightspeed.node.peer import Peer
from lightspeed.onion.failure import FailureCode
from tests.onchain_support import ANCHORS_SAT, commitment_fee, open_paid_channel, wait_for
from tests.support.network import create_network, route_along, until

SAT = 1_000_000
TOKEN = "l" * 32


def _funder_above_reserve_msat(node: Node, cid: bytes) -> int:
    channel = node.channels[cid]
    view = channel.log.commitment(Side.LOCAL)
    built = channel.commitment(Side.LOCAL)
    return view.to_local_msat - 1000 * (built.base_fee_sat + ANCHORS_SAT) - 1000 * channel.config.reserve_for_local_sat


def test_the_agreed_limits_are_enforced_and_pay_says_what_it_can_send() -> None:
    async def scenario() -> None:
        net = await create_network(2, [(0, 1, SAT, 0)])
        alice, bob = net.nodes
        cid = net.channel(0, 1)
        mine, theirs = alice.channels[cid].config, bob.channels[cid].config
        # Each side's limits are what the other announced: 1% reserves, the funding amount in flight.
        assert (mine.reserve_for_local_sat, mine.reserve_from_remote_sat) == (10_000, 10_000)
        assert (theirs.reserve_for_local_sat, theirs.reserve_from_remote_sat) == (10_000, 10_000)
        assert mine.remote_max_htlc_value_in_flight_msat == theirs.max_htlc_value_in_flight_msat == SAT * 1000
        assert (mine.remote_htlc_minimum_msat, mine.remote_max_accepted_htlcs) == (1, 30)
        n = alice.channels[cid].sendable_msat()
        # The payment: 990,000,000 msat would leave the funder below its 1% reserve.
        began = time.monotonic()
        with pytest.raises(PaymentError, match=f"can send at most {n} msat"):
            await alice.pay(bob.create_invoice(990_000_000, "too much"), timeout=30)
        assert time.monotonic() - began < 5  # at once, not after the timeout
        # N + 1 through REST: a 409 naming the invoice, with the same message.
        ctx = ApiContext(alice, listen="127.0.0.1:0")
        transport = httpx.ASGITransport(app=create_app(ctx, TOKEN))
        async with httpx.AsyncClient(transport=transport, base_url="http://node",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            over = await client.post("/v1/payments", json={"invoice": bob.create_invoice(n + 1, "one more").encode()})
        assert over.status_code == 409, over.text
        assert over.json()["error"] == {"field": "invoice", "reason": f"can send at most {n} msat"}
        # Exactly N goes through, and leaves the funder at (above) its reserve.
        await asyncio.wait_for(alice.pay(bob.create_invoice(n, "all we can")), 20)
        await until(lambda: not alice.channels[cid].log.commitment(Side.LOCAL).htlcs)
        assert _funder_above_reserve_msat(alice, cid) >= 0
        # What is left above the reserve pays for no more HTLC outputs: only a dust (trimmed) one would fit.
        left = alice.channels[cid].sendable_msat()
        assert left < 546_000 and alice.channels[cid].offer_problem(546_000) is not None
        await net.stop()

    asyncio.run(scenario())


def test_a_forward_over_the_next_channel_s_limits_fails_back_with_temporary_channel_failure() -> None:
    async def scenario() -> None:
        net = await create_network(3, [(0, 1, 2 * SAT, 0), (1, 2, SAT, 0)])
        payer, hop = net.nodes[0], net.nodes[1]
        n = hop.channels[net.channel(1, 2)].sendable_msat()
        before = [net.balance_msat(i) for i in range(3)]
        invoice = net.nodes[2].create_invoice(n + 1, "one msat too many for the hop")
        with pytest.raises(RouteFailed) as caught:
            await asyncio.wait_for(payer.send_to_route(route_along(net, [0, 1, 2], n + 1), invoice.payment_hash,
                                                       invoice.payment_secret), 20)
        assert (caught.value.report.erring_index, caught.value.report.code) == (0, FailureCode.TEMPORARY_CHANNEL_FAILURE)
        await until(lambda: [net.balance_msat(i) for i in range(3)] == before)
        assert all(c in n_.channels for n_ in net.nodes[1:] for c in [net.channel(1, 2)])  # nothing failed
        invoice = net.nodes[2].create_invoice(n, "exactly what the hop can send")
        await asyncio.wait_for(payer.send_to_route(route_along(net, [0, 1, 2], n), invoice.payment_hash,
                                                   invoice.payment_secret), 20)
        await net.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("limit", ["reserve", "htlc_minimum_msat", "max_accepted_htlcs", "in_flight"])
def test_a_peer_breaking_a_limit_gets_the_channel_failed_and_our_funds_stay(tmp_path: Path, limit: str) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x51)
        if limit == "in_flight":  # as if Alice had announced 5,000,000 msat in accept_channel
            config = alice.channels[cid].config
            alice.channels[cid].config = dataclasses.replace(config, max_htlc_value_in_flight_msat=5_000_000)
        alice_msat = alice.channels[cid].log.commitment(Side.LOCAL).to_local_msat
        bob_msat = bob.channels[cid].log.commitment(Side.LOCAL).to_local_msat
        views = {owner: alice.channels[cid].log.commitment(owner, pending=True) for owner in Side}
        edge = max_offer_msat(alice.channels[cid].config, views, Side.REMOTE)
        amounts = {"reserve": [edge + 1], "htlc_minimum_msat": [0], "max_accepted_htlcs": [10_000] * 31,
                   "in_flight": [5_000_001]}[limit]
        if limit == "reserve":
            assert edge == bob_msat - 10_000_000  # all Bob has above the reserve Alice asked for
        errors: list[str] = []  # the errors Bob receives from Alice (he still acts on them)
        on_error = bob._on_error_message

        async def recording(peer: Peer, message: Error) -> None:
            errors.append(message.data.decode())
            await on_error(peer, message)

        bob._on_error_message = recording  # type: ignore[method-assign]
        # Bob ignores the rules: raw update_add_htlc messages, past his own checks.
        channel, peer = bob.channels[cid], bob._peers[alice.node_id]
        for i, amount in enumerate(amounts):
            htlc = channel.log.send_add(max(amount, 1), sha256(bytes([i]) * 32), chain.tip()[0] + 50)
            await peer.send(UpdateAddHtlc(channel_id=cid, id=htlc.htlc_id, amount_msat=amount,
                                          payment_hash=htlc.payment_hash, cltv_expiry=htlc.cltv_expiry,
                                          onion_routing_packet=bytes(1366)))
        await wait_for(lambda: cid not in alice.channels)  # BOLT 2: fail the channel and send an error
        await wait_for(lambda: bool(errors))
        words = {"reserve": "above its reserve", "htlc_minimum_msat": "below our htlc_minimum_msat",
                 "max_accepted_htlcs": "max_accepted_htlcs", "in_flight": "max_htlc_value_in_flight_msat"}[limit]
        assert len(errors) == 1 and words in errors[0], errors  # one error, naming the limit
        resolution = alice._onchain.resolutions[cid]
        # Alice fails the channel and Bob, told so by her error, fails it too: either's commitment may
        # reach the chain first. Neither holds any of Bob's HTLCs (none was ever signed).
        assert resolution.kind in (SpendKind.LOCAL, SpendKind.REMOTE) and resolution.spend_txid is not None
        found = chain.get_transaction(resolution.spend_txid)
        assert found is not None
        commitment = found[0]
        # The last signed commitment, without any of Bob's HTLCs: both balances as they were.
        values = sorted(o.value_sat for o in commitment.outputs)
        expected = sorted([330, 330, bob_msat // 1000, alice_msat // 1000 - commitment_fee(commitment) - ANCHORS_SAT])
        assert values == expected
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


def test_a_forward_below_the_next_peer_s_minimum_is_amount_below_minimum_with_its_real_minimum() -> None:
    """BOLT 7: our channel_update names the minimum HTLC the channel peer accepts; BOLT 4: below it,
    amount_below_minimum (not a temporary_channel_failure the payer cannot learn from)."""
    async def scenario() -> None:
        from lightspeed.codec.generated import ChannelUpdate
        from lightspeed.codec.messages import decode_message

        net = await create_network(3, [(0, 1, 2 * SAT, 0), (1, 2, SAT, 0)])
        hop, cid = net.nodes[1], net.channel(1, 2)
        # As if node 2 had announced htlc_minimum_msat 5000 and max_htlc_value_in_flight_msat 70,000,000.
        hop.channels[cid].config = dataclasses.replace(hop.channels[cid].config, remote_htlc_minimum_msat=5000,
                                                       remote_max_htlc_value_in_flight_msat=70_000_000)
        invoice = net.nodes[2].create_invoice(4999, "one msat below the minimum")
        with pytest.raises(RouteFailed) as caught:
            await asyncio.wait_for(net.nodes[0].send_to_route(route_along(net, [0, 1, 2], 4999), invoice.payment_hash,
                                                              invoice.payment_secret), 20)
        assert (caught.value.report.erring_index, caught.value.report.code) == (0, FailureCode.AMOUNT_BELOW_MINIMUM)
        assert caught.value.failure is not None
        update = decode_message(caught.value.failure.channel_update)
        assert isinstance(update, ChannelUpdate)
        assert (update.htlc_minimum_msat, update.htlc_maximum_msat) == (5000, 70_000_000)
        invoice = net.nodes[2].create_invoice(5000, "the minimum")
        await asyncio.wait_for(net.nodes[0].send_to_route(route_along(net, [0, 1, 2], 5000), invoice.payment_hash,
                                                          invoice.payment_secret), 20)
        await net.stop()

    asyncio.run(scenario())


def test_right_after_a_restart_pay_counts_the_channels_still_reestablishing() -> None:
    """'can send at most' must not be said while a channel with a connected (or redialed) peer is
    still coming back: the payment needs both channels, and waits the moment it takes."""
    async def scenario() -> None:
        from tests.support.network import bring_online, take_offline

        net = await create_network(3, [(0, 1, SAT, 0), (0, 2, SAT, 0), (2, 1, SAT, 0)])
        amount = net.nodes[0].channels[net.channel(0, 1)].sendable_msat() + 100_000_000
        invoice = net.nodes[1].create_invoice(amount, "needs both channels")
        await take_offline(net, 0)
        await take_offline(net, 2)
        payer = await bring_online(net, 0)
        try:
            await until(lambda: payer.channel_is_ready(net.channel(0, 1)))
            paying = asyncio.create_task(payer.pay(invoice, timeout=20))
            await asyncio.sleep(0.3)  # node 2 is still away: the payer redials it
            assert not paying.done(), paying
            await bring_online(net, 2)
            await asyncio.wait_for(paying, 25)
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_more_payments_in_flight_than_the_peer_takes_htlcs_wait_for_a_slot() -> None:
    """Our own HTLCs holding the peer's 30 slots are no reason to fail a payment: it waits for one
    to settle (40 at once failed some with "no route ... after 1 attempts" before)."""
    async def scenario() -> None:
        net = await create_network(2, [(0, 1, 5 * SAT, 0)])
        alice, bob = net.nodes
        cid = net.channel(0, 1)
        assert alice.channels[cid].config.remote_max_accepted_htlcs == 30
        invoices = [bob.create_invoice(1_000_000, f"call {i}") for i in range(40)]
        preimages = await asyncio.wait_for(asyncio.gather(*(alice.pay(i, timeout=30) for i in invoices)), 60)
        assert [sha256(p) for p in preimages] == [i.payment_hash for i in invoices]
        await until(lambda: not alice.channels[cid].log.commitment(Side.LOCAL).htlcs)
        await net.stop()

    asyncio.run(scenario())
