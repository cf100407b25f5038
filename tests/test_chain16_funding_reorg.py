"""A funding transaction reorganised out after channel_ready (node.funding_watch): both sides stop
using the channel until it is ``minimum_depth`` deep again (under its new short channel id), and
give the channel up once a double spend of its funding is that deep. Two nodes over loopback TCP
on the embedded regtest chain, reorganised with its ``trim_blocks``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lightspeed.bitcoin.tx import Transaction, TxIn, TxOut
from lightspeed.chain.regtest import RegtestChain
from lightspeed.chain.source import Utxo
from lightspeed.channel.htlc_log import Side
from lightspeed.errors import PaymentError
from lightspeed.node.electrum_chain import ElectrumChainSource, ServerAddress
from lightspeed.node.node import Node
from lightspeed.store import SqliteStore
from tests.onchain_support import open_paid_channel, settle, wait_for
from tests.support.electrum_servers import ServerLoop

EXTERNAL = bytes.fromhex("0014") + bytes(range(20))


def _funding(chain: RegtestChain, node: Node, cid: bytes) -> tuple[Transaction, int]:
    found = chain.get_transaction(node.channels[cid].config.funding_txid)
    position = chain.tx_position(node.channels[cid].config.funding_txid)
    assert found is not None and position is not None
    return found[0], position[0]


async def _reorganise_out(chain: RegtestChain, alice: Node, bob: Node, cid: bytes) -> Transaction:
    """Drop the funding's block (it goes back to the mempool) and wait until both sides notice."""
    funding, height = _funding(chain, alice, cid)
    assert alice.channel_is_ready(cid) and bob.channel_is_ready(cid)
    chain.trim_blocks(height - 1)
    chain.mine(1, empty=True)  # a longer chain without it: the funding waits in the mempool
    assert chain.get_transaction(funding.txid) == (funding, 0)
    await wait_for(lambda: not alice.channel_is_ready(cid) and not bob.channel_is_ready(cid))
    return funding


@pytest.mark.slow
def test_a_reorganised_funding_suspends_the_channel_until_it_is_deep_again(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x61)
        old_scid = alice.short_channel_id(cid)
        assert old_scid is not None
        await _reorganise_out(chain, alice, bob, cid)
        assert alice.short_channel_id(cid) is None and bob.short_channel_id(cid) is None
        with pytest.raises(PaymentError, match="suspended: its funding was reorganised out"):
            await alice.pay(bob.create_invoice(1_000_000, "while reorganised out"), timeout=5)
        with pytest.raises(PaymentError, match="suspended"):
            await bob.pay(alice.create_invoice(1_000_000, "the other way"), timeout=5)
        chain.mine(1)  # mined again, one block later: depth 1 of the 3 both sides asked for
        await asyncio.sleep(0.3)
        assert not alice.channel_is_ready(cid) and not bob.channel_is_ready(cid)
        chain.mine(2)
        await wait_for(lambda: alice.channel_is_ready(cid) and bob.channel_is_ready(cid))
        new_scid = alice.short_channel_id(cid)
        assert new_scid is not None and new_scid != old_scid and bob.short_channel_id(cid) == new_scid
        await asyncio.wait_for(alice.pay(bob.create_invoice(2_000_000, "confirmed again")), 30)
        await settle(alice, bob, cid)
        assert cid in alice.channels and cid in bob.channels
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_a_double_spent_funding_ends_the_channel_on_both_sides(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x63)
        funding = await _reorganise_out(chain, alice, bob, cid)
        # The funder's coin is spent elsewhere (BIP 125: the funding signals replaceability).
        spent = funding.inputs[0].prevout
        parent = chain.get_transaction(spent.txid)
        assert parent is not None
        coin = Utxo(spent, parent[0].outputs[spent.index], None)
        conflict = alice.wallet.sign(Transaction(2, (TxIn(spent, sequence=0xFFFFFFFD),),
                                                 (TxOut(coin.output.value_sat - 50_000, EXTERNAL),), 0), [coin])
        chain.broadcast(conflict)
        assert chain.get_transaction(funding.txid) is None
        chain.mine(1)
        await asyncio.sleep(0.3)
        assert cid in alice.channels and cid in bob.channels  # one confirmation could still be reorganised
        chain.mine(2)
        await wait_for(lambda: cid not in alice.channels and cid not in bob.channels)
        for node in (alice, bob):
            [record] = [c for c in node.closed_channel_records() if c.channel_id == cid]
            assert record.closing_txid == conflict.txid
            assert record.summary is not None and record.summary.kind == "funding_double_spent"
            assert node.closed_channels[cid].txid == conflict.txid
            assert cid not in node._onchain.resolutions  # nothing to claim: the output never existed
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_a_peer_that_missed_the_reorganisation_has_its_payment_refused(tmp_path: Path) -> None:
    """Alice follows the chain through an Electrum server that stops answering before the reorganisation
    (a lagging light client): she still sees the channel confirmed and pays over it. Bob, on the chain
    itself, has suspended the channel: he fails the HTLC rather than take a payment that may not exist."""
    chain = RegtestChain(tmp_path / "chain.sqlite")
    servers = ServerLoop()
    server, port = servers.electrum(tmp_path / "chain.sqlite")
    source = ElectrumChainSource([ServerAddress("127.0.0.1", port, False)], "regtest", request_timeout_s=5)
    source.start(20)

    async def scenario() -> None:
        alice = Node(b"\x65" * 32, source, b"alice wallet seed, lagging", store=SqliteStore(tmp_path / "a.sqlite"))
        bob = Node(b"\x66" * 32, chain, b"bob wallet seed, on chain", store=SqliteStore(tmp_path / "b.sqlite"))
        chain.fund(alice.wallet.new_key().script_pubkey, 3_000_000)
        await wait_for(lambda: alice.wallet.balance_sat() == 3_000_000)
        await alice.start()
        await alice.connect("127.0.0.1", await bob.start(), bob.node_id)
        opening = asyncio.create_task(alice.open_channel(bob.node_id, 1_000_000))
        while not opening.done():
            await asyncio.sleep(0.1)
            chain.mine(1)
        cid = opening.result()
        await wait_for(lambda: alice.channel_is_ready(cid) and bob.channel_is_ready(cid))
        invoice = bob.create_invoice(3_000_000, "over a channel only alice believes in")
        servers.stop_server(server)  # alice's view stops here
        _, height = _funding(chain, bob, cid)
        chain.trim_blocks(height - 1)
        chain.mine(1, empty=True)
        await wait_for(lambda: not bob.channel_is_ready(cid))
        assert alice.channel_is_ready(cid)
        with pytest.raises(PaymentError):
            await alice.pay(invoice, timeout=10)
        await settle(alice, bob, cid)
        assert bob.channels[cid].log.commitment(Side.LOCAL).to_local_msat == 0  # nothing taken
        assert invoice.payment_hash not in bob.settled_invoices
        await alice.stop()
        await bob.stop()

    try:
        asyncio.run(scenario())
    finally:
        source.close()
        servers.close()
