"""Two nodes over loopback TCP: open a channel funded on the shared regtest chain, pay an invoice."""

from __future__ import annotations

import asyncio

import pytest

from lightspeed.chain import RegtestChain
from lightspeed.channel.htlc_log import Side
from lightspeed.errors import PaymentError
from lightspeed.invoice import decode, verify_payment_proof
from lightspeed.node.node import Node, PaymentReceived, PaymentSent


@pytest.mark.slow
def test_two_nodes_open_a_channel_and_pay_an_invoice() -> None:
    async def scenario() -> None:
        chain = RegtestChain(":memory:")
        alice = Node(b"\x0a" * 32, chain, b"alice wallet seed 1234")
        bob = Node(b"\x0b" * 32, chain, b"bob wallet seed 123456")
        chain.fund(alice.wallet.new_key().script_pubkey, 3_000_000)
        bob_port = await bob.start()
        await alice.connect("127.0.0.1", bob_port, bob.node_id)

        async def miner() -> None:
            while True:
                await asyncio.sleep(0.05)
                chain.mine(1)

        mining = asyncio.create_task(miner())
        channel_id = await asyncio.wait_for(alice.open_channel(bob.node_id, 1_000_000), 30)
        invoice = decode(bob.create_invoice(250_000_000, "a coffee").encode())  # through the string form
        preimage = await asyncio.wait_for(alice.pay(invoice), 30)
        assert verify_payment_proof(invoice, preimage)
        received = await asyncio.wait_for(bob.events.get(), 10)
        assert received == PaymentReceived(invoice.payment_hash, 250_000_000)
        assert await alice.events.get() == PaymentSent(invoice.payment_hash, preimage, 250_000_000)
        await asyncio.sleep(0.3)  # let the last revoke_and_ack land
        assert bob.channels[channel_id].log.commitment(Side.LOCAL).to_local_msat == 250_000_000
        with pytest.raises(PaymentError):
            await alice.pay(invoice)  # paying the same invoice twice is refused
        mining.cancel()
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_the_payee_refuses_an_htlc_that_does_not_match_its_invoice() -> None:
    async def scenario() -> None:
        import os

        from lightspeed.invoice import build_invoice

        chain = RegtestChain(":memory:")
        alice = Node(b"\x0c" * 32, chain, b"alice wallet seed 5678")
        bob = Node(b"\x0d" * 32, chain, b"bob wallet seed 567890")
        chain.fund(alice.wallet.new_key().script_pubkey, 3_000_000)
        await alice.connect("127.0.0.1", await bob.start(), bob.node_id)

        async def miner() -> None:
            while True:
                await asyncio.sleep(0.05)
                chain.mine(1)

        mining = asyncio.create_task(miner())
        await asyncio.wait_for(alice.open_channel(bob.node_id, 1_000_000), 30)
        real = bob.create_invoice(100_000_000, "tea")
        # Same hash, signed by Bob, but a payment secret Bob never issued: the onion will not match.
        forged = build_invoice(payment_hash=real.payment_hash, payment_secret=os.urandom(32), timestamp=real.timestamp,
                               network=real.network, amount_msat=100_000_000, description="tea").sign(bob.privkey)
        with pytest.raises(PaymentError, match="refused"):
            await asyncio.wait_for(alice.pay(forged), 30)
        preimage = await asyncio.wait_for(alice.pay(real), 30)  # the genuine invoice still pays
        assert verify_payment_proof(real, preimage)
        mining.cancel()
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


def test_an_out_of_order_message_drops_only_that_connection() -> None:
    async def scenario() -> None:
        from lightspeed.codec.generated import FundingCreated
        from lightspeed.node import connect

        chain = RegtestChain(":memory:")
        bob = Node(b"\x0e" * 32, chain, b"bob wallet seed abcdef")
        port = await bob.start()
        rogue = await connect("127.0.0.1", port, b"\x0f" * 32, bob.node_id)
        await rogue.send(FundingCreated(temporary_channel_id=bytes(32), funding_txid=bytes(32),
                                        funding_output_index=0, signature=bytes(64)))
        reason = await asyncio.wait_for(rogue.closed(), 5)
        assert reason  # bob answered with an error and hung up
        # bob still serves others
        other = await connect("127.0.0.1", port, b"\x10" * 32, bob.node_id)
        assert other.remote_pubkey == bob.node_id
        await other.close()
        await bob.stop()

    asyncio.run(scenario())
