"""Our HTLC-timeout under option_anchors, on a regtest chain with a real mempool's fee rules.

Two real nodes over TCP. Bob holds Alice's HTLC (a hold invoice: he never learns the preimage),
Alice force closes, and her HTLC-timeout (zero fee, the peer's signature SIGHASH_SINGLE|
ANYONECANPAY) must reach the chain after the HTLC's expiry. With a minimum relay feerate it
does only because her node adds a wallet input; with congested blocks only because the node
replaces it (RBF) at a higher feerate as the deadline nears, also across a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from lightspeed.bitcoin.tx import OutPoint, Transaction
from lightspeed.chain import RegtestChain
from lightspeed.chain.fee_policy import feerate_per_kw
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.sweep import _SWEEP_WEIGHT
from lightspeed.crypto.hashes import sha256
from lightspeed.node.htlc_bump import TIMEOUT_DEADLINE_BLOCKS, deadline_feerate
from lightspeed.node.node import Node
from lightspeed.store import SqliteStore
from tests.onchain_support import (
    ANCHOR_SAT,
    commitment_fee,
    fee_of,
    fees_to,
    mine,
    open_paid_channel,
    settle,
    wait_for,
)

HTLC_SAT = 50_000


async def _held(tmp_path: Path, tag: int) -> tuple[RegtestChain, Node, Node, bytes, asyncio.Task[object]]:
    chain, alice, bob, cid = await open_paid_channel(tmp_path, tag)
    invoice = bob.create_hold_invoice(sha256(os.urandom(32)), HTLC_SAT * 1000, "held by Bob")
    paying: asyncio.Task[object] = asyncio.create_task(alice.pay(invoice, timeout=600))
    await wait_for(lambda: bool(alice.channels[cid].log.commitment(Side.LOCAL).htlcs))
    await settle(alice, bob, cid)
    return chain, alice, bob, cid, paying


def _htlc_outpoint(commitment: Transaction) -> OutPoint:
    return OutPoint(commitment.txid, next(i for i, o in enumerate(commitment.outputs) if o.value_sat == HTLC_SAT))


def _confirmed(chain: RegtestChain, tx: Transaction | None) -> bool:
    found = None if tx is None else chain.get_transaction(tx.txid)
    return found is not None and found[1] >= 1


async def _mine_to(chain: RegtestChain, height: int) -> None:
    while chain.tip()[0] < height:
        await mine(chain, 1, pause=0.15)


async def _stop(*nodes: Node) -> None:
    for node in nodes:
        with contextlib.suppress(Exception):
            await node.stop()


@pytest.mark.slow
@pytest.mark.parametrize("bumping", [True, False])
def test_the_htlc_timeout_confirms_under_a_relay_minimum_only_with_a_fee_input(tmp_path: Path, bumping: bool) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid, paying = await _held(tmp_path, 0x31 if bumping else 0x33)
        try:
            await check(chain, alice, cid, paying)
        finally:
            paying.cancel()
            await _stop(alice, bob)

    async def check(chain: RegtestChain, alice: Node, cid: bytes, paying: asyncio.Task[object]) -> None:
        chain.set_min_relay_feerate(253)  # Bitcoin Core's floor: a zero-fee transaction is refused
        htlc = alice.channels[cid].log.commitment(Side.LOCAL).htlcs[0]
        alice_sat = alice.channels[cid].log.commitment(Side.LOCAL).to_local_msat // 1000
        before = alice.wallet.balance_sat()
        if not bumping:
            alice._onchain.bumper = None
        commitment = await alice.force_close_channel(cid, "test: the HTLC is stuck")
        await mine(chain, 1)
        outpoint = _htlc_outpoint(commitment)
        await _mine_to(chain, htlc.cltv_expiry + TIMEOUT_DEADLINE_BLOCKS)
        timeout_tx = chain.spending_tx(outpoint)
        if not bumping:  # the zero-fee original is refused by the mempool: the HTLC stays at risk
            assert timeout_tx is None
            assert alice.store.payment(htlc.payment_hash).status == "pending"  # type: ignore[union-attr]
            return
        assert _confirmed(chain, timeout_tx)
        assert timeout_tx is not None
        found = chain.get_transaction(timeout_tx.txid)
        assert found is not None
        confirmed_at = chain.tip()[0] - found[1] + 1
        assert confirmed_at <= htlc.cltv_expiry + TIMEOUT_DEADLINE_BLOCKS
        # input 0 / output 0 as the peer signed them; a wallet coin and the change added
        assert timeout_tx.inputs[0].prevout == outpoint and timeout_tx.outputs[0].value_sat == HTLC_SAT
        assert len(timeout_tx.inputs) >= 2 and len(timeout_tx.outputs) == 2
        assert feerate_per_kw(fee_of(chain, timeout_tx), timeout_tx.weight) >= deadline_feerate(
            chain.estimate_feerate_per_kw(), TIMEOUT_DEADLINE_BLOCKS)
        await wait_for(lambda: paying.done(), timeout=10)
        assert alice.store.payment(htlc.payment_hash).status == "failed"  # type: ignore[union-attr]
        # after her delay, the HTLC-timeout's output comes to her wallet, to the satoshi
        resolution = alice._onchain.resolutions[cid]
        await _mine_to(chain, confirmed_at + 145)
        await wait_for(lambda: resolution.finished, timeout=10)
        sweep = chain.spending_tx(OutPoint(timeout_tx.txid, 0))
        assert _confirmed(chain, sweep) and sweep is not None
        assert sweep.outputs[0].value_sat == HTLC_SAT - _SWEEP_WEIGHT * resolution.feerate_per_kw // 1000
        assert alice.wallet.balance_sat() - before == (
            alice_sat + HTLC_SAT - commitment_fee(commitment) - 660 + ANCHOR_SAT  # her anchor swept back
            - fees_to(chain, alice, commitment) - fees_to(chain, alice, timeout_tx))

    asyncio.run(scenario())


@pytest.mark.slow
def test_congested_blocks_the_htlc_timeout_is_replaced_at_rising_feerates_across_a_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid, paying = await _held(tmp_path, 0x35)
        nodes = [alice, bob]
        try:
            nodes.append(await check(chain, alice, cid, paying))
        finally:
            paying.cancel()
            await _stop(*nodes)

    async def check(chain: RegtestChain, alice: Node, cid: bytes, paying: asyncio.Task[object]) -> Node:
        chain.set_min_relay_feerate(253)
        chain.set_fee_estimate(1000)
        chain.congest(2000)  # the commitment (2500 sat/kw) is mined; 1000 sat/kw waits
        htlc = alice.channels[cid].log.commitment(Side.LOCAL).htlcs[0]
        commitment = await alice.force_close_channel(cid, "test: the HTLC is stuck")
        await mine(chain, 1)
        assert _confirmed(chain, commitment)
        outpoint = _htlc_outpoint(commitment)
        await _mine_to(chain, htlc.cltv_expiry)
        await wait_for(lambda: chain.spending_tx(outpoint) is not None, timeout=5)
        first = chain.spending_tx(outpoint)
        assert first is not None and not _confirmed(chain, first)
        assert feerate_per_kw(fee_of(chain, first), first.weight) < 2000  # waits in the mempool
        await mine(chain, 1)
        assert chain.spending_tx(outpoint) == first  # still waiting, not yet replaced
        # restart: the new node finds the version it broadcast in its record and replaces it
        paying.cancel()
        await alice.stop()
        alice.store.close()
        again = Node(bytes([0x35]) * 32, chain, b"alice wallet seed %d" % 0x35,
                     store=SqliteStore(tmp_path / "alice.sqlite"))
        await again.start()
        for _ in range(TIMEOUT_DEADLINE_BLOCKS):
            if _confirmed(chain, chain.spending_tx(outpoint)):
                break
            await mine(chain, 1, pause=0.3)
        final = chain.spending_tx(outpoint)
        assert final is not None and _confirmed(chain, final) and final.txid != first.txid
        found = chain.get_transaction(final.txid)
        assert found is not None and chain.tip()[0] - found[1] + 1 <= htlc.cltv_expiry + TIMEOUT_DEADLINE_BLOCKS
        assert feerate_per_kw(fee_of(chain, final), final.weight) >= 2000
        assert {i.prevout for i in first.inputs} <= {i.prevout for i in final.inputs}  # the same inputs replaced
        await wait_for(lambda: again.store.payment(htlc.payment_hash).status == "failed",  # type: ignore[union-attr]
                       timeout=10)
        return again

    asyncio.run(scenario())
