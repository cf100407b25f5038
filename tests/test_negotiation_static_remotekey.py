"""A node with Electrum 4.3.4's init features (no option_anchors) and a default node, over TCP.

They agree on an option_static_remotekey channel whichever side opens, and that channel works
end to end: payments both ways, a force close by either side with every output swept (our
to_remote is a plain P2WPKH, spendable at once), an HTLC claimed on chain through a fee-paying
HTLC-success transaction, and a revoked commitment punished.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from lightspeed.bitcoin.script import p2wpkh_script
from lightspeed.bitcoin.tx import OutPoint, Transaction
from lightspeed.chain import RegtestChain
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.penalty import revoked_commitment_number
from lightspeed.channel.resolve import FULFILL_DEADLINE_BLOCKS, SpendKind
from lightspeed.codec.features import Features
from lightspeed.errors import PaymentError
from lightspeed.invoice import build_invoice, verify_payment_proof
from lightspeed.node.node import Node
from lightspeed.node.peer import DEFAULT_FEATURES
from lightspeed.store import SqliteStore
from tests.onchain_support import (
    FUNDING_SAT,
    Proxy,
    commitment_fee,
    fee_of,
    fees_to,
    mine,
    mine_until,
    settle,
    wait_for,
)

# Electrum 4.3.4's LNWALLET_FEATURES as it sends them in init (lnworker.py): both bits of
# data_loss_protect and static_remotekey, gossip_queries required, trampoline (151) optional.
ELECTRUM_4_3_4 = Features(frozenset({0, 1, 5, 6, 9, 12, 13, 15, 17, 27, 45, 151}))
DEFAULT = DEFAULT_FEATURES
TO_SELF_DELAY = 144


async def open_channel(tmp_path: Path, tag: int, funder: Features, fundee: Features, paid_msat: int = 250_000_000,
                       proxy: bool = False) -> tuple[RegtestChain, Node, Node, bytes]:
    """Alice (``funder`` features) opens to Bob (``fundee``) and pays him ``paid_msat``."""
    chain = RegtestChain(":memory:")
    alice = Node(bytes([tag]) * 32, chain, b"alice wallet seed %d" % tag, features=funder,
                 store=SqliteStore(tmp_path / "alice.sqlite"))
    bob = Node(bytes([tag + 1]) * 32, chain, b"bob wallet seed %d" % tag, features=fundee,
               store=SqliteStore(tmp_path / "bob.sqlite"))
    chain.fund(alice.wallet.new_key().script_pubkey, 3_000_000)
    await alice.start()
    port = await bob.start()
    if proxy:
        relay = Proxy(port)
        port = await relay.start()
        alice.proxy = relay  # type: ignore[attr-defined]
    await alice.connect("127.0.0.1", port, bob.node_id)

    async def miner() -> None:
        while True:
            await asyncio.sleep(0.05)
            chain.mine(1)

    mining = asyncio.create_task(miner())
    try:
        cid = await asyncio.wait_for(alice.open_channel(bob.node_id, FUNDING_SAT), 30)
    finally:
        mining.cancel()
    await asyncio.wait_for(alice.pay(bob.create_invoice(paid_msat, "before")), 30)
    await settle(alice, bob, cid)
    return chain, alice, bob, cid


def assert_static_remotekey(alice: Node, bob: Node, cid: bytes) -> None:
    """Both sides built the same non-anchor commitments: two outputs, to_remote a P2WPKH."""
    assert not alice.channels[cid].config.anchors and not bob.channels[cid].config.anchors
    for owner, other in ((alice, bob), (bob, alice)):
        commitment = owner.channels[cid].signed_local_commitment()
        assert len(commitment.outputs) == 2  # to_local and to_remote, no anchor outputs
        payment_key = other.channels[cid].secrets.basepoints().payment_basepoint
        assert p2wpkh_script(payment_key) in {o.script_pubkey for o in commitment.outputs}


@pytest.mark.parametrize(("funder", "fundee"), [(ELECTRUM_4_3_4, DEFAULT), (DEFAULT, ELECTRUM_4_3_4)],
                         ids=["electrum-features-open", "electrum-features-accept"])
def test_without_anchors_on_one_side_the_channel_is_static_remotekey_and_pays_both_ways(
        tmp_path: Path, funder: Features, fundee: Features) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_channel(tmp_path, 0x71, funder, fundee)
        assert_static_remotekey(alice, bob, cid)
        preimage = await asyncio.wait_for(bob.pay(alice.create_invoice(40_000_000, "back")), 30)
        assert len(preimage) == 32
        await settle(alice, bob, cid)
        assert alice.channels[cid].log.commitment(Side.LOCAL).to_remote_msat == 210_000_000
        assert bob.channels[cid].log.commitment(Side.LOCAL).to_local_msat == 210_000_000
        # Alice restarts from her store and redials Bob: still static_remotekey, still paying.
        await alice.stop()
        alice = Node(alice.privkey, chain, alice.wallet_seed, features=alice.features, store=alice.store)
        await alice.start()
        assert not alice.channels[cid].config.anchors
        await asyncio.wait_for(bob.pay(alice.create_invoice(10_000_000, "after a restart")), 30)
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


def test_two_default_nodes_still_agree_on_anchors(tmp_path: Path) -> None:
    async def scenario() -> None:
        _, alice, bob, cid = await open_channel(tmp_path, 0x73, DEFAULT, DEFAULT)
        assert alice.channels[cid].config.anchors and bob.channels[cid].config.anchors
        assert len(alice.channels[cid].signed_local_commitment().outputs) == 4  # two anchors
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("closer", ["funder", "fundee"])
def test_a_static_remotekey_force_close_sweeps_every_output(tmp_path: Path, closer: str) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_channel(tmp_path, 0x75, ELECTRUM_4_3_4, DEFAULT)
        alice_msat = alice.channels[cid].log.commitment(Side.LOCAL).to_local_msat
        bob_msat = bob.channels[cid].log.commitment(Side.LOCAL).to_local_msat
        assert (alice_msat, bob_msat) == (750_000_000, 250_000_000)
        alice_before, bob_before = alice.wallet.balance_sat(), bob.wallet.balance_sat()
        closing, other = (alice, bob) if closer == "funder" else (bob, alice)
        commitment = await closing.force_close_channel(cid)
        await wait_for(lambda: cid not in other.channels)
        # The other side's to_remote is a P2WPKH of its payment basepoint: swept without any CSV.
        other_before = bob_before if other is bob else alice_before
        await mine_until(chain, lambda: other.wallet.balance_sat() > other_before, max_blocks=3)
        payment_key = other.channels.get(cid) or other._onchain.resolutions[cid].channel
        index = next(i for i, o in enumerate(commitment.outputs)
                     if o.script_pubkey == p2wpkh_script(payment_key.secrets.basepoints().payment_basepoint))
        sweep = chain.spending_tx(OutPoint(commitment.txid, index))
        assert sweep is not None and sweep.inputs[0].sequence == 0xFFFFFFFF  # no relative lock (anchors: 1)
        assert other._onchain.resolutions[cid].kind is SpendKind.REMOTE
        assert closing._onchain.resolutions[cid].kind is SpendKind.LOCAL
        closing_before = closing.wallet.balance_sat()
        await mine(chain, TO_SELF_DELAY - 5)
        assert closing.wallet.balance_sat() == closing_before  # to_local waits its delay
        await mine_until(chain, lambda: closing.wallet.balance_sat() > closing_before)
        # Alice funded: she alone pays the commitment fee (and there are no anchors).
        fee = commitment_fee(commitment)
        assert alice.wallet.balance_sat() - alice_before == alice_msat // 1000 - fee - fees_to(chain, alice, commitment)
        assert bob.wallet.balance_sat() - bob_before == bob_msat // 1000 - fees_to(chain, bob, commitment)
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


def test_a_stuck_htlc_is_claimed_on_chain_with_a_fee_paying_htlc_success(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_channel(tmp_path, 0x77, ELECTRUM_4_3_4, DEFAULT, proxy=True)
        bob_msat = bob.channels[cid].log.commitment(Side.LOCAL).to_local_msat
        bob_before = bob.wallet.balance_sat()
        alice.proxy.flowing.clear()  # type: ignore[attr-defined]
        invoice = bob.create_invoice(50_000_000, "stuck")
        paying = asyncio.create_task(alice.pay(invoice, timeout=60))
        await wait_for(lambda: bool(bob.channels[cid].log.commitment(Side.LOCAL).htlcs))
        htlc = bob.channels[cid].log.commitment(Side.LOCAL).htlcs[0]
        chain.mine(htlc.cltv_expiry - FULFILL_DEADLINE_BLOCKS - chain.tip()[0] - 1)
        await mine_until(chain, lambda: paying.done(), max_blocks=5)
        assert verify_payment_proof(invoice, await paying)  # Alice read the preimage from the chain
        resolution = bob._onchain.resolutions[cid]
        assert resolution.kind is SpendKind.LOCAL and resolution.spend_txid is not None
        found = chain.get_transaction(resolution.spend_txid)
        assert found is not None
        commitment: Transaction = found[0]
        index = next(i for i, o in enumerate(commitment.outputs) if o.value_sat == 50_000)
        htlc_success = chain.spending_tx(OutPoint(commitment.txid, index))
        assert htlc_success is not None
        # Without anchors the HTLC-success pays its own fee (BOLT 3: feerate * 703 / 1000).
        assert fee_of(chain, htlc_success) == 2500 * 703 // 1000
        assert htlc_success.inputs[0].sequence == 0
        await mine(chain, 140)
        await mine_until(chain, lambda: bob._onchain.resolutions[cid].finished, max_blocks=10)
        assert bob.wallet.balance_sat() - bob_before == (
            bob_msat // 1000 + 50_000 - fee_of(chain, htlc_success) - fees_to(chain, bob, commitment)
            - fees_to(chain, bob, htlc_success))
        await alice.proxy.stop()  # type: ignore[attr-defined]
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


def test_a_revoked_static_remotekey_commitment_is_punished(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_channel(tmp_path, 0x79, ELECTRUM_4_3_4, DEFAULT, paid_msat=400_000_000)
        old = bob.channels[cid].signed_local_commitment()  # Bob keeps the commitment holding 400k sat...
        await asyncio.wait_for(bob.pay(alice.create_invoice(300_000_000, "a refund")), 30)
        await settle(alice, bob, cid)  # ...which is revoked now
        assert revoked_commitment_number(alice.channels[cid], old) is not None
        alice_before, bob_before = alice.wallet.balance_sat(), bob.wallet.balance_sat()
        chain.broadcast(old)  # Bob cheats
        await mine(chain)
        await wait_for(lambda: cid not in alice.channels)
        assert alice._onchain.resolutions[cid].kind is SpendKind.REVOKED
        # The penalty and Alice's to_remote (P2WPKH, no CSV): both without delay.
        await mine_until(chain, lambda: all(chain.spending_tx(OutPoint(old.txid, i)) is not None
                                            for i in range(len(old.outputs))))
        claims = {tx.txid: tx for i in range(len(old.outputs))
                  if (tx := chain.spending_tx(OutPoint(old.txid, i))) is not None}
        assert len(claims) == 2
        fees = sum(fee_of(chain, tx) for tx in claims.values())
        assert alice.wallet.balance_sat() - alice_before == FUNDING_SAT - commitment_fee(old) - fees
        await mine(chain, 200)
        assert bob.wallet.balance_sat() == bob_before  # the cheater got nothing
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


def test_an_unclaimable_htlc_times_out_from_the_peers_static_remotekey_commitment(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_channel(tmp_path, 0x7B, ELECTRUM_4_3_4, DEFAULT, proxy=True)
        alice.proxy.flowing.clear()  # type: ignore[attr-defined]
        # An invoice Bob signed whose preimage nobody knows: Bob can never claim the HTLC.
        unknown = build_invoice(payment_hash=os.urandom(32), payment_secret=os.urandom(32), timestamp=0,
                                expiry=10**9, network=bob.network, amount_msat=50_000_000,
                                description="unclaimable").sign(bob.privkey)
        paying = asyncio.create_task(alice.pay(unknown, timeout=60))
        await wait_for(lambda: bool(bob.channels[cid].log.commitment(Side.LOCAL).htlcs))
        htlc = bob.channels[cid].log.commitment(Side.LOCAL).htlcs[0]
        alice_msat = alice.channels[cid].log.commitment(Side.REMOTE).to_remote_msat  # in Bob's commitment
        alice_before = alice.wallet.balance_sat()
        commitment = await bob.force_close_channel(cid)  # Bob's commitment holds the HTLC
        await mine_until(chain, lambda: alice.wallet.balance_sat() > alice_before)  # to_remote: no CSV
        chain.mine(htlc.cltv_expiry - chain.tip()[0] - 1)
        await mine_until(chain, lambda: paying.done(), max_blocks=5)
        with pytest.raises(PaymentError):
            await paying
        await mine_until(chain, lambda: alice._onchain.resolutions[cid].finished)
        index = next(i for i, o in enumerate(commitment.outputs) if o.value_sat == 50_000)
        timeout_claim = chain.spending_tx(OutPoint(commitment.txid, index))
        assert timeout_claim is not None
        # BOLT 3 without anchors: spent straight from the commitment, nSequence not final, locktime = expiry.
        assert timeout_claim.locktime == htlc.cltv_expiry and timeout_claim.inputs[0].sequence == 0xFFFFFFFE
        assert alice.wallet.balance_sat() - alice_before == (
            alice_msat // 1000 + 50_000 - commitment_fee(commitment) - fees_to(chain, alice, commitment))
        await alice.proxy.stop()  # type: ignore[attr-defined]
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())
