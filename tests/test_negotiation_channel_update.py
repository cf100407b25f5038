"""Private channels: each side sends the other its channel_update once the channel is ready.

Without it a payee cannot put the right fees in its invoices' route hints, and every payment
routed through us to it first fails with fee_insufficient (issue 12: Electrum as the payee).
"""

from __future__ import annotations

import asyncio

from lightspeed.gossip.create import DONT_FORWARD, direction_of
from lightspeed.payments.forward import ForwardingPolicy
from tests.support.network import Network, create_network, until

SAT = 1_000_000
BOB_POLICY = ForwardingPolicy(fee_base_msat=2_000, fee_proportional_millionths=700, cltv_expiry_delta=50,
                              htlc_minimum_msat=1, htlc_maximum_msat=10**10)


def run(scenario: object) -> None:
    asyncio.run(asyncio.wait_for(scenario, 50))  # type: ignore[arg-type]


async def alice_bob_carol() -> Network:
    """Alice (0) - Bob (1) - Carol (2); Bob-Carol is private, Bob charges BOB_POLICY."""
    return await create_network(3, [(0, 1, SAT, 0), (1, 2, SAT, 0)], private=[(1, 2)], policies={1: BOB_POLICY})


def carols_stored_update(net: Network) -> object:
    carol, bob = net.nodes[2], net.nodes[1]
    return carol.gossip.gossiper.view.store.update(net.scid(1, 2), direction_of(bob.node_id, carol.node_id))


def test_the_payee_learns_the_peers_fees_for_its_route_hints_and_the_first_attempt_succeeds() -> None:
    async def scenario() -> None:
        net = await alice_bob_carol()
        alice, bob, carol = net.nodes
        # Carol's hint for the private channel carries Bob's fees, as Bob's own update told her.
        await until(lambda: carol.private_route_hints() == [net.hint(1, 2)])
        update = carols_stored_update(net)
        assert update is not None
        assert update.message_flags & DONT_FORWARD  # type: ignore[attr-defined]  # BOLT 7: MUST set dont_forward
        assert update.short_channel_id == net.scid(1, 2)  # type: ignore[attr-defined]  # the real scid
        # Bob learnt Carol's fees the same way (she runs the default policy).
        await until(lambda: [net.scid(1, 2), carol.forwarding_policy.fee_base_msat] in (
            [[h[0].short_channel_id, h[0].fee_base_msat] for h in bob.private_route_hints()]))
        invoice = carol.create_invoice(30_000_000, "through Bob", route_hints=carol.private_route_hints())
        bob_before = net.balance_msat(1)
        adds_before = alice.sent_counts["update_add_htlc"]
        await asyncio.wait_for(alice.pay(invoice), 20)
        assert alice.sent_counts["update_add_htlc"] - adds_before == 1  # no fee_insufficient retry
        await until(lambda: net.balance_msat(1) == bob_before + BOB_POLICY.fee_msat(30_000_000))
        await net.stop()

    run(scenario())


def test_a_new_policy_and_a_reconnection_send_the_update_again() -> None:
    async def scenario() -> None:
        net = await alice_bob_carol()
        _, bob, carol = net.nodes
        await until(lambda: carols_stored_update(net) is not None)
        first = carols_stored_update(net)
        bob.forwarding_policy = ForwardingPolicy(3_000, 900, 60, 1, 10**10)
        await until(lambda: [h[0].fee_base_msat for h in carol.private_route_hints()] == [3_000])
        changed = carols_stored_update(net)
        assert changed.timestamp > first.timestamp  # type: ignore[attr-defined]
        # The connection drops: Carol redials, the channel is reestablished and Bob sends it again.
        await carol._peers[bob.node_id].close()
        await until(lambda: carols_stored_update(net).timestamp > changed.timestamp)  # type: ignore[attr-defined]
        assert [h[0].cltv_expiry_delta for h in carol.private_route_hints()] == [60]
        await net.stop()

    run(scenario())
