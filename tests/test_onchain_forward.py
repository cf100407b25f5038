"""A forwarded HTLC claimed on chain downstream is fulfilled upstream: the forwarder is made whole."""

from __future__ import annotations

import asyncio
import os

import pytest

from lightspeed.channel.resolve import SpendKind
from lightspeed.crypto.hashes import sha256
from lightspeed.invoice import verify_payment_proof
from lightspeed.node.node import HtlcHeld
from tests.onchain_support import mine_until
from tests.support.network import (
    bring_online,
    claim_payment,
    create_network,
    next_event,
    take_offline,
)


@pytest.mark.slow
def test_a_preimage_learnt_on_chain_downstream_settles_the_incoming_htlc_off_chain() -> None:
    """Alice pays Carol through Bob (a hold invoice). While Bob is offline Carol releases the
    payment and, unable to reach him, claims the HTLC on chain. Back online, Bob's watcher reads
    the preimage from Carol's HTLC-success and fulfils Alice's HTLC: Alice's payment succeeds."""
    async def scenario() -> None:
        net = await create_network(3, [(0, 1, 1_000_000, 0), (1, 2, 1_000_000, 0)])
        alice, carol = net.nodes[0], net.nodes[2]
        secret = os.urandom(32)
        held = carol.create_hold_invoice(sha256(secret), 5_000_000, "held")
        paying = asyncio.create_task(alice.pay(held, timeout=60))
        await next_event(carol, HtlcHeld)
        await take_offline(net, 1)
        await claim_payment(net, 2, secret)  # the fulfill cannot reach Bob
        downstream = net.channel(1, 2)
        await carol.force_close_channel(downstream, "Bob is gone and the HTLC is mine")
        bob = await bring_online(net, 1)
        await mine_until(net.chain, lambda: paying.done(), max_blocks=10)
        assert verify_payment_proof(held, await paying)
        assert bob._onchain.resolutions[downstream].kind is SpendKind.REMOTE
        assert carol._onchain.resolutions[downstream].kind is SpendKind.LOCAL
        await net.stop()

    asyncio.run(scenario())
