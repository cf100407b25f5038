"""Our HTLC-success under option_anchors, on a regtest chain that refuses zero-fee transactions.

Two real nodes over TCP; a relay holds Bob's replies back, so the HTLC Alice offered stays in
Bob's commitment with its preimage known to Bob only. Bob's node goes on chain before the
deadline with its HTLC-success (zero fee as signed): with a fee input from his wallet it
confirms and Alice learns the preimage; without one it is refused, and after the expiry Alice
takes the HTLC back (Bob loses it). With no coin in his wallet Bob's node warns, and his other
claims still go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest

from lightspeed.bitcoin.tx import OutPoint, Transaction
from lightspeed.chain import RegtestChain
from lightspeed.chain.fee_policy import feerate_per_kw
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.resolve import FULFILL_DEADLINE_BLOCKS
from lightspeed.node.htlc_bump import deadline_feerate
from lightspeed.node.node import Node
from tests.onchain_support import fee_of, mine, open_paid_channel, wait_for

HTLC_SAT = 50_000


def _confirmed(chain: RegtestChain, tx: Transaction | None) -> bool:
    found = None if tx is None else chain.get_transaction(tx.txid)
    return found is not None and found[1] >= 1


async def _scenario(tmp_path: Path, tag: int, *, funded: bool, bumping: bool,
                    check: object) -> None:
    chain, alice, bob, cid = await open_paid_channel(tmp_path, tag, proxy=True)
    try:
        if funded:
            chain.fund(bob.wallet.new_key().script_pubkey, 200_000)
        chain.set_min_relay_feerate(253)
        if not bumping:
            bob._onchain.bumper = None
        alice.proxy.flowing.clear()  # type: ignore[attr-defined]
        invoice = bob.create_invoice(HTLC_SAT * 1000, "stuck")
        paying = asyncio.create_task(alice.pay(invoice, timeout=600))
        try:
            await wait_for(lambda: bool(bob.channels[cid].log.commitment(Side.LOCAL).htlcs))
            htlc = bob.channels[cid].log.commitment(Side.LOCAL).htlcs[0]
            chain.mine(htlc.cltv_expiry - FULFILL_DEADLINE_BLOCKS - chain.tip()[0])  # Bob's node goes on chain
            await wait_for(lambda: cid in bob._onchain.resolutions)
            spend_txid = bob._onchain.resolutions[cid].spend_txid
            found = chain.get_transaction(spend_txid or b"")
            assert found is not None
            commitment = found[0]
            outpoint = OutPoint(commitment.txid,
                                next(i for i, o in enumerate(commitment.outputs) if o.value_sat == HTLC_SAT))
            await check(chain, alice, bob, cid, htlc, commitment, outpoint, paying)  # type: ignore[operator]
        finally:
            paying.cancel()
    finally:
        await alice.proxy.stop()  # type: ignore[attr-defined]
        for node in (alice, bob):
            with contextlib.suppress(Exception):
                await node.stop()


async def _mine_until_spent(chain: RegtestChain, outpoint: OutPoint, blocks: int) -> Transaction | None:
    for _ in range(blocks):
        spender = chain.spending_tx(outpoint)
        if _confirmed(chain, spender):
            return spender
        await mine(chain, 1, pause=0.15)
    return chain.spending_tx(outpoint)


@pytest.mark.slow
def test_the_htlc_success_confirms_before_the_deadline_with_a_fee_input(tmp_path: Path) -> None:
    async def check(chain: RegtestChain, alice: Node, bob: Node, cid: bytes, htlc: object, commitment: Transaction,
                    outpoint: OutPoint, paying: asyncio.Task[object]) -> None:
        expiry = htlc.cltv_expiry  # type: ignore[attr-defined]
        spender = await _mine_until_spent(chain, outpoint, FULFILL_DEADLINE_BLOCKS)
        assert spender is not None and _confirmed(chain, spender)
        found = chain.get_transaction(spender.txid)
        assert found is not None and chain.tip()[0] - found[1] + 1 < expiry  # before Alice could time it out
        assert spender.inputs[0].prevout == outpoint and spender.outputs[0].value_sat == HTLC_SAT
        assert len(spender.inputs) >= 2 and len(spender.outputs) == 2  # Bob's coin and its change
        assert feerate_per_kw(fee_of(chain, spender), spender.weight) >= deadline_feerate(
            chain.estimate_feerate_per_kw(), FULFILL_DEADLINE_BLOCKS)
        await asyncio.wait_for(paying, 10)  # Alice learnt the preimage from the witness
        assert alice.store.payment(htlc.payment_hash).status == "succeeded"  # type: ignore[attr-defined,union-attr]

    asyncio.run(_scenario(tmp_path, 0x41, funded=True, bumping=True, check=check))


@pytest.mark.slow
def test_without_bumping_the_htlc_success_is_refused_and_the_payer_takes_the_htlc_back(tmp_path: Path) -> None:
    async def check(chain: RegtestChain, alice: Node, bob: Node, cid: bytes, htlc: object, commitment: Transaction,
                    outpoint: OutPoint, paying: asyncio.Task[object]) -> None:
        spender = await _mine_until_spent(chain, outpoint, FULFILL_DEADLINE_BLOCKS + 4)
        assert spender is not None and _confirmed(chain, spender)
        assert len(spender.inputs[0].witness) == 3  # Alice's timeout from Bob's commitment, not his HTLC-success
        assert spender.locktime == htlc.cltv_expiry  # type: ignore[attr-defined]

    asyncio.run(_scenario(tmp_path, 0x43, funded=True, bumping=False, check=check))


@pytest.mark.slow
def test_no_coin_in_the_wallet_warns_and_the_other_claims_still_go(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    async def check(chain: RegtestChain, alice: Node, bob: Node, cid: bytes, htlc: object, commitment: Transaction,
                    outpoint: OutPoint, paying: asyncio.Task[object]) -> None:
        caplog.set_level(logging.WARNING, logger="lightspeed.node")
        await mine(chain, 2)
        assert any("no confirmed coins" in r.getMessage() and "htlc_success" in r.getMessage()
                   for r in caplog.records)
        assert chain.spending_tx(outpoint) is None  # the zero-fee original was refused
        resolution = bob._onchain.resolutions[cid]
        to_local = next(c for c in resolution.claims if c.label == "to_local")
        for _ in range(150):  # Bob's to_local, after his delay, is still claimed
            if _confirmed(chain, to_local.tx):
                break
            chain.mine(1)
            await asyncio.sleep(0.06)
        await wait_for(lambda: _confirmed(chain, to_local.tx), timeout=5)

    asyncio.run(_scenario(tmp_path, 0x45, funded=False, bumping=True, check=check))
