"""Our 330-sat anchor is swept to the wallet after a force close, when the fee leaves enough of it.

Two real nodes over TCP on a regtest chain; Alice (the funder) force-closes, so the commitment
confirmed is hers (LOCAL, to_local waits 144 blocks) and the peer's for Bob (REMOTE, to_remote
after one block). The chain's estimate is set in the same breath as the block that confirms the
commitment, so no CPFP child took the anchor first (each test asserts it).

Boundaries (channel.anchor_sweep): batched, the anchor's input is worth it up to 589 sat/kw;
alone, up to 369 sat/kw (half the anchor left in both).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lightspeed.bitcoin.tx import OutPoint, Transaction, TxIn, TxOut
from lightspeed.chain import RegtestChain
from lightspeed.channel.anchor_sweep import (
    ANCHOR_GIVE_UP_BLOCKS,
    alone_anchor_fee,
    batched_anchor_fee,
    our_anchor,
    worth_alone,
    worth_batching,
)
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.scripts import anchor_script
from lightspeed.errors import RejectedTransaction
from lightspeed.node.node import Node
from lightspeed.store import SqliteStore
from tests.onchain_support import (
    ANCHOR_SAT,
    ANCHORS_SAT,
    anchor_alone_gain,
    commitment_fee,
    fee_of,
    fees_to,
    mine,
    mine_until,
    open_paid_channel,
    swept_anchor,
    wait_for,
)

TO_SELF_DELAY = 144
P2WPKH = bytes(22)  # a wallet output script's length is all the fee depends on


def test_where_sweeping_the_anchor_stops_paying() -> None:
    assert worth_batching(589) and not worth_batching(590)
    assert worth_alone(369, P2WPKH) and not worth_alone(370, P2WPKH)
    assert (batched_anchor_fee(253), alone_anchor_fee(253, P2WPKH)) == (71, 113)  # 1 sat/vbyte, rounded up


async def _restart(node: Node, path: Path) -> Node:
    await node.stop()
    node.store.close()
    again = Node(node.privkey, node.chain, node.wallet_seed, store=SqliteStore(path))
    await again.start()
    return again


async def _close_at(chain: RegtestChain, alice: Node, cid: bytes, feerate_per_kw: int) -> bytes:
    """Alice force-closes; the estimate becomes ``feerate_per_kw`` as the commitment confirms."""
    commitment = await alice.force_close_channel(cid)
    chain.set_fee_estimate(feerate_per_kw)  # no await in between: no watcher ran at the old estimate
    chain.mine(1)
    assert chain.mempool() == []  # the commitment alone, no CPFP child
    found = chain.get_transaction(commitment.txid)
    assert found is not None and found[1] == 1
    return commitment.txid


@pytest.mark.slow
def test_at_a_middling_fee_the_anchor_rides_with_to_remote_and_with_to_local_across_a_restart(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x71)
        alice_msat = alice.channels[cid].log.commitment(Side.LOCAL).to_local_msat
        bob_msat = bob.channels[cid].log.commitment(Side.LOCAL).to_local_msat
        alice_before, bob_before = alice.wallet.balance_sat(), bob.wallet.balance_sat()
        txid = await _close_at(chain, alice, cid, 500)  # worth batching, not alone
        found = chain.get_transaction(txid)
        assert found is not None
        commitment = found[0]
        # Bob (the peer's commitment): his anchor goes out in the to_remote sweep, one transaction
        await mine_until(chain, lambda: bob.wallet.balance_sat() > bob_before)
        sweep = swept_anchor(chain, bob, cid, commitment)
        assert sweep is not None and len(sweep.inputs) == 2 and len(sweep.outputs) == 1
        assert bob.wallet.balance_sat() - bob_before == bob_msat // 1000 + ANCHOR_SAT - fees_to(chain, bob, commitment)
        # Alice: the anchor waits for to_local (alone it would not pay at 500 sat/kw)
        assert alice._onchain.resolutions[cid].anchor == "batch"
        await mine(chain, 20)
        assert swept_anchor(chain, alice, cid, commitment) is None  # past block 16, still ours here
        chain.set_fee_estimate(2_000)  # deciding afresh now would leave the anchor out
        alice = await _restart(alice, tmp_path / "alice.sqlite")
        assert alice._onchain.resolutions[cid].anchor == "batch"  # the recorded decision holds
        await mine(chain, TO_SELF_DELAY - 25)
        assert alice.wallet.balance_sat() == alice_before
        await mine_until(chain, lambda: alice.wallet.balance_sat() > alice_before)
        sweep = swept_anchor(chain, alice, cid, commitment)
        assert sweep is not None and len(sweep.inputs) == 2  # to_local and the anchor
        assert alice.wallet.balance_sat() - alice_before == (alice_msat // 1000 - commitment_fee(commitment)
                                                             - ANCHORS_SAT + ANCHOR_SAT - fees_to(chain, alice, commitment))
        await mine(chain, 1)
        assert alice._onchain.resolutions[cid].finished
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_at_a_high_fee_the_anchor_is_left_then_swept_alone_when_the_estimate_drops(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x73)
        bob_msat = bob.channels[cid].log.commitment(Side.LOCAL).to_local_msat
        bob_before = bob.wallet.balance_sat()
        txid = await _close_at(chain, alice, cid, 2_000)  # the anchor would lose half or more either way
        found = chain.get_transaction(txid)
        assert found is not None
        commitment = found[0]
        await mine_until(chain, lambda: bob.wallet.balance_sat() > bob_before)
        to_remote = bob.wallet.balance_sat() - bob_before
        await mine(chain, 3)
        assert swept_anchor(chain, bob, cid, commitment) is None  # to_remote went alone
        assert swept_anchor(chain, alice, cid, commitment) is None
        assert bob._onchain.resolutions[cid].anchor == "" and not bob._onchain.resolutions[cid].finished
        assert to_remote == bob_msat // 1000 - fees_to(chain, bob, commitment)
        bob = await _restart(bob, tmp_path / "bob.sqlite")  # undecided across a restart
        chain.set_fee_estimate(253)
        await mine_until(chain, lambda: bob.wallet.balance_sat() > bob_before + to_remote)
        gain = anchor_alone_gain(chain, bob, cid, commitment)
        assert gain == ANCHOR_SAT - alone_anchor_fee(253, P2WPKH) == 217
        assert bob.wallet.balance_sat() - bob_before == to_remote + gain
        await wait_for(lambda: swept_anchor(chain, alice, cid, commitment) is not None)
        assert anchor_alone_gain(chain, alice, cid, commitment) == 217
        await mine(chain, 1)
        assert bob._onchain.resolutions[cid].finished
        sweep = swept_anchor(chain, bob, cid, commitment)
        assert sweep is not None and fee_of(chain, sweep) == 113
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_an_anchor_never_worth_sweeping_is_given_up_and_the_resolution_finishes(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x75)
        bob_before = bob.wallet.balance_sat()
        txid = await _close_at(chain, alice, cid, 2_000)
        found = chain.get_transaction(txid)
        assert found is not None
        commitment = found[0]
        await mine_until(chain, lambda: bob.wallet.balance_sat() > bob_before)
        resolution = bob._onchain.resolutions[cid]
        await mine(chain, ANCHOR_GIVE_UP_BLOCKS - 4)
        assert resolution.anchor == "" and not resolution.finished
        await mine_until(chain, lambda: resolution.finished)
        assert resolution.anchor == "none"
        assert swept_anchor(chain, bob, cid, commitment) is None
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_a_third_party_taking_the_anchor_after_16_blocks_costs_only_the_anchor(tmp_path: Path) -> None:
    """Batched with a to_local 144 blocks away, the anchor races anyone from block 16 on: when
    someone else takes it, to_local is swept without it (not given up as "spent by another")."""
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x77)
        alice_msat = alice.channels[cid].log.commitment(Side.LOCAL).to_local_msat
        alice_before = alice.wallet.balance_sat()
        txid = await _close_at(chain, alice, cid, 500)
        found = chain.get_transaction(txid)
        assert found is not None
        commitment = found[0]
        resolution = alice._onchain.resolutions[cid]
        await mine(chain, 1)
        assert resolution.anchor == "batch"
        script = anchor_script(resolution.channel.secrets.basepoints().funding_pubkey)
        index = our_anchor(resolution.channel, commitment)
        assert index is not None
        # anyone: an empty signature, once the anchor has 16 confirmations (BOLT 3)
        taker = Transaction(2, (TxIn(OutPoint(commitment.txid, index), sequence=16),),
                            (TxOut(ANCHOR_SAT - 150, bytes.fromhex("0014") + bytes(20)),), 0)
        taker = taker.with_witness(0, (b"", script))
        with pytest.raises(RejectedTransaction):
            chain.broadcast(taker)  # block 2: only Alice's key can spend it yet
        await mine(chain, 15)
        chain.broadcast(taker)
        await mine(chain, 1)
        assert resolution.anchor == "spent"
        await mine(chain, TO_SELF_DELAY - 18)
        await mine_until(chain, lambda: alice.wallet.balance_sat() > alice_before)
        sweep = chain.spending_tx(OutPoint(commitment.txid, next(
            i for i, o in enumerate(commitment.outputs) if o.value_sat > 600_000)))
        assert sweep is not None and len(sweep.inputs) == 1  # to_local alone
        assert alice.wallet.balance_sat() - alice_before == (alice_msat // 1000 - commitment_fee(commitment)
                                                             - ANCHORS_SAT - fees_to(chain, alice, commitment))
        await mine(chain, 1)
        assert resolution.finished
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())
