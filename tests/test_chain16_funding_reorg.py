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
from lightspeed.errors import PaymentError
from lightspeed.node.node import Node
from tests.onchain_support import open_paid_channel, settle, wait_for

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
