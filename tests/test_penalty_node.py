"""Cheating between real nodes: a peer that broadcasts a revoked commitment loses everything."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lightspeed.bitcoin.tx import OutPoint
from lightspeed.channel.penalty import revoked_commitment_number
from lightspeed.channel.resolve import SpendKind
from tests.onchain_support import (
    ANCHORS_SAT,
    FUNDING_SAT,
    anchor_alone_gain,
    commitment_fee,
    fee_of,
    mine,
    mine_until,
    open_paid_channel,
    settle,
    swept_anchor,
    wait_for,
)


@pytest.mark.slow
def test_a_peer_broadcasting_a_revoked_commitment_loses_the_whole_channel(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x41, paid_msat=400_000_000)
        old = bob.channels[cid].signed_local_commitment()  # Bob keeps his commitment holding 400k sat...
        invoice = alice.create_invoice(300_000_000, "a refund")
        await asyncio.wait_for(bob.pay(invoice), 30)  # ...then pays 300k back: that commitment is revoked
        await settle(alice, bob, cid)
        assert revoked_commitment_number(alice.channels[cid], old) is not None
        alice_before, bob_before = alice.wallet.balance_sat(), bob.wallet.balance_sat()

        chain.broadcast(old)  # Bob cheats
        await mine(chain)
        await wait_for(lambda: cid not in alice.channels)
        assert alice._onchain.resolutions[cid].kind is SpendKind.REVOKED
        # the penalty (no delay) and Alice's own to_remote (one block); Bob's anchor (his own key)
        await mine_until(chain, lambda: sum(chain.spending_tx(OutPoint(old.txid, i)) is not None
                                            for i in range(len(old.outputs))) == 3)
        spenders = [chain.spending_tx(OutPoint(old.txid, i)) for i in range(len(old.outputs))]
        claims = {tx.txid: tx for tx in spenders if tx is not None}
        bobs = swept_anchor(chain, bob, cid, old)
        assert bobs is not None and bobs.txid in claims
        del claims[bobs.txid]
        assert len(claims) == 2  # the penalty transaction and Alice's to_remote sweep
        fees = sum(fee_of(chain, tx) for tx in claims.values())
        # Alice gets the whole channel: all but the commitment fee, the anchors and her two claims' fees.
        assert alice.wallet.balance_sat() - alice_before == FUNDING_SAT - commitment_fee(old) - ANCHORS_SAT - fees
        await mine(chain, 200)
        # the cheater got nothing of the channel: only his own anchor back, less its sweep's fee
        assert bob.wallet.balance_sat() == bob_before + anchor_alone_gain(chain, bob, cid, old)
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())
