"""Demo: a channel between two in-process parties, funded on the regtest chain, paid both ways, closed.

The parties exchange real BOLT 2 messages (encoded and decoded on the wire
format) and real signatures, first in process, then as two nodes over TCP.
"""

from __future__ import annotations

import os
import time
from typing import Any


def channel_lifecycle() -> dict[str, Any]:
    from lightspeed.bitcoin.script import p2wpkh_script, p2wsh_script
    from lightspeed.bitcoin.tx import TxOut
    from lightspeed.chain import RegtestChain, Wallet
    from lightspeed.channel import Channel, ChannelConfig, LocalSecrets
    from lightspeed.channel.closing import ClosingNegotiation
    from lightspeed.channel.htlc_log import Side
    from lightspeed.channel.scripts import funding_script
    from lightspeed.channel.state import channel_id_from_funding
    from lightspeed.codec.message_base import WireMessage
    from lightspeed.codec.messages import decode_message, encode_message
    from lightspeed.crypto.hashes import sha256

    def wire(message: WireMessage) -> WireMessage:
        decoded = decode_message(encode_message(message))
        assert isinstance(decoded, WireMessage)
        return decoded

    chain = RegtestChain(":memory:")
    wallet = Wallet(os.urandom(32), chain)
    chain.fund(wallet.new_key().script_pubkey, 3_000_000)
    alice_s, bob_s = (LocalSecrets(*(os.urandom(32) for _ in range(6))) for _ in range(2))
    a_b, b_b = alice_s.basepoints(), bob_s.basepoints()
    funding_sat = 2_000_000
    funding_tx = wallet.create_transaction([TxOut(funding_sat, p2wsh_script(funding_script(a_b.funding_pubkey, b_b.funding_pubkey)))])
    channel_id = channel_id_from_funding(funding_tx.txid, 0)

    def config(funder: bool, remote: LocalSecrets) -> ChannelConfig:
        return ChannelConfig(channel_id, funding_tx.txid, 0, funding_sat, funder, True, remote.basepoints(),
                             546, 546, 144, 144)

    probe_a = Channel(config(True, bob_s), alice_s, 0, 0, 2500, {})
    probe_b = Channel(config(False, alice_s), bob_s, 0, 0, 2500, {})
    alice = Channel(config(True, bob_s), alice_s, funding_sat * 1000, 0, 2500, {0: probe_b.local_point(0)})
    bob = Channel(config(False, alice_s), bob_s, 0, funding_sat * 1000, 2500, {0: probe_a.local_point(0)})
    bob.receive_initial_signature(alice.initial_signature())
    alice.receive_initial_signature(bob.initial_signature())
    chain.broadcast(funding_tx)
    chain.mine(3)
    alice.receive_channel_ready(bob.channel_ready())
    bob.receive_channel_ready(alice.channel_ready())

    def commit(signer: Channel, other: Channel) -> None:
        replies, _ = other.receive(wire(signer.sign()))
        for reply in replies:
            signer.receive(wire(reply))

    def pay(payer: Channel, payee: Channel, amount_msat: int) -> None:
        preimage = os.urandom(32)
        add = payer.add_htlc(amount_msat, sha256(preimage), chain.tip()[0] + 40)
        payee.receive(wire(add))
        commit(payer, payee)
        commit(payee, payer)
        payer.receive(wire(payee.fulfill_htlc(add.id, preimage)))
        commit(payee, payer)
        commit(payer, payee)

    start = time.perf_counter()
    payments = [(alice, bob, 300_000_000), (bob, alice, 120_000_000), (alice, bob, 45_000_000)]
    for payer, payee, amount in payments:
        pay(payer, payee, amount)
    pay_ms = (time.perf_counter() - start) * 1000 / len(payments)
    a_script, b_script = p2wpkh_script(a_b.payment_basepoint), p2wpkh_script(b_b.payment_basepoint)
    a_close = ClosingNegotiation.start(alice, a_script, b_script, 300, 2000)
    b_close = ClosingNegotiation.start(bob, b_script, a_script, 300, 2000)
    reply = b_close.receive(a_close.propose(700))
    if reply is not None:
        a_close.receive(reply)
    closing = a_close.agreed
    if closing is None or closing != b_close.agreed:
        raise AssertionError("the parties did not agree on a closing transaction")
    chain.broadcast(closing)
    chain.mine(1)
    paid = {out.script_pubkey: out.value_sat for out in closing.outputs}
    return {"funding_txid": funding_tx.txid_hex, "payments": len(payments), "ms_per_payment": round(pay_ms, 2),
            "closing_txid": closing.txid_hex, "alice_sat": paid.get(a_script, 0), "bob_sat": paid.get(b_script, 0),
            "commitment_numbers": {"alice": alice.log.ctn[Side.LOCAL], "bob": bob.log.ctn[Side.LOCAL]}}


def nodes_pay_over_tcp() -> dict[str, Any]:
    """Two nodes over loopback TCP: open a channel, pay invoices both ways, close it cooperatively."""
    import asyncio

    from lightspeed.chain import RegtestChain
    from lightspeed.invoice import decode, verify_payment_proof
    from lightspeed.node import Node
    from lightspeed.node.regtest import mine_forever

    async def scenario() -> dict[str, Any]:
        chain = RegtestChain(":memory:")
        alice = Node(os.urandom(32), chain, os.urandom(32))
        bob = Node(os.urandom(32), chain, os.urandom(32))
        chain.fund(alice.wallet.new_key().script_pubkey, 3_000_000)
        await alice.connect("127.0.0.1", await bob.start(), bob.node_id)

        mining = asyncio.create_task(mine_forever(chain, 0.02))
        start = time.perf_counter()
        channel_id = await alice.open_channel(bob.node_id, 1_000_000)
        open_ms = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        proofs = 0
        payments = [(alice, bob, 100_000_000), (bob, alice, 25_000_000), (alice, bob, 1_000)]
        for payer, payee, amount in payments:
            invoice = decode(payee.create_invoice(amount, "demo").encode())
            proofs += verify_payment_proof(invoice, await payer.pay(invoice))
        pay_ms = (time.perf_counter() - start) * 1000 / len(payments)
        await asyncio.sleep(0.2)  # let the last revoke_and_ack land before closing
        closing = await alice.close_channel(channel_id)
        while (found := chain.get_transaction(closing.txid)) is None or found[1] < 1:
            await asyncio.sleep(0.02)  # until the closing transaction is mined
        mining.cancel()
        outputs = sorted(out.value_sat for out in closing.outputs)
        await alice.stop()
        await bob.stop()
        return {"channel_open_ms": round(open_ms, 1), "payments_both_ways": len(payments),
                "proofs_verified": proofs, "ms_per_payment_over_tcp": round(pay_ms, 2),
                "mutual_close_txid": closing.txid_hex, "closing_outputs_sat": outputs,
                "close_confirmations": found[1]}

    return asyncio.run(scenario())


def three_nodes_multihop() -> dict[str, Any]:
    """Alice, Bob, Carol over TCP: public channels announced by gossip; Alice pays Carol through Bob."""
    import asyncio

    from lightspeed.chain import RegtestChain
    from lightspeed.invoice import decode, verify_payment_proof
    from lightspeed.node import Node
    from lightspeed.node.regtest import mine_forever

    async def scenario() -> dict[str, Any]:
        chain = RegtestChain(":memory:")
        alice, bob, carol = (Node(os.urandom(32), chain, os.urandom(32), announce_channels=True) for _ in range(3))
        for funder in (alice, bob):
            chain.fund(funder.wallet.new_key().script_pubkey, 3_000_000)
        await alice.connect("127.0.0.1", await bob.start(), bob.node_id)
        await bob.connect("127.0.0.1", await carol.start(), carol.node_id)
        await alice.start()

        mining = asyncio.create_task(mine_forever(chain, 0.02))
        try:
            await asyncio.gather(alice.open_channel(bob.node_id, 1_000_000), bob.open_channel(carol.node_id, 1_000_000))
            start = time.perf_counter()
            while alice.graph is None or not list(alice.graph.channels_into(carol.node_id)):  # gossip
                await asyncio.sleep(0.05)
            gossip_ms = (time.perf_counter() - start) * 1000
            start = time.perf_counter()
            invoice = decode(carol.create_invoice(40_000_000, "two hops").encode())
            proof = verify_payment_proof(invoice, await alice.pay(invoice))
            await alice.keysend(carol.node_id, 5_000_000)  # spontaneous, no invoice
            pay_ms = (time.perf_counter() - start) * 1000 / 2
        finally:
            mining.cancel()
            for node in (alice, bob, carol):
                await node.stop()
        return {"graph_learned_by_gossip_ms": round(gossip_ms, 1), "paid_over_two_hops": proof,
                "keysend": True, "ms_per_multihop_payment": round(pay_ms, 1)}

    return asyncio.run(scenario())
