"""A hold invoice settled after the channel went on chain is claimed at once, not a block later.

Found with Electrum (``test_htlcs_on_chain_after_electrum_force_close``): the chain watcher only
planned and broadcast claims when it polled on a new block, so the HTLC-output claim carrying a
preimage learned after the close waited for the next block, a block in which the payer's
HTLC-timeout may already be valid. Two real nodes over TCP, real SQLite stores, the validating
regtest chain; nobody mines after the settle.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from lightspeed.bitcoin.tx import OutPoint
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.resolve import SpendKind
from tests.onchain_support import mine, open_paid_channel, settle, wait_for


@pytest.mark.slow
def test_a_hold_invoice_settled_after_the_peers_force_close_is_claimed_without_a_new_block(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x71)
        preimage = os.urandom(32)
        invoice = bob.create_hold_invoice(hashlib.sha256(preimage).digest(), 60_000_000, "held")
        paying = asyncio.create_task(alice.pay(invoice, timeout=60))
        await wait_for(lambda: bool(bob.channels[cid].log.commitment(Side.REMOTE).htlcs))
        await settle(alice, bob, cid)  # the HTLC is in both commitments, held by Bob
        commitment = await alice.force_close_channel(cid)  # Alice's commitment: the remote one for Bob
        await mine(chain, 1)
        await wait_for(lambda: cid in bob._onchain.resolutions and bob._onchain.resolutions[cid].kind
                       is SpendKind.REMOTE)
        htlc = OutPoint(commitment.txid, next(i for i, o in enumerate(commitment.outputs) if o.value_sat == 60_000))
        await asyncio.sleep(0.3)
        assert chain.spending_tx(htlc) is None  # Bob cannot claim it yet
        tip = chain.tip()
        await bob.settle_hold(preimage)
        # BOLT 5: with the preimage Bob MUST resolve the output by spending it; he does so now
        await wait_for(lambda: chain.spending_tx(htlc) is not None, timeout=3)
        assert chain.tip() == tip, "no block was mined"
        claim = chain.spending_tx(htlc)
        assert claim is not None and preimage in claim.inputs[0].witness
        await mine(chain, 1)
        assert await asyncio.wait_for(paying, 30) == preimage  # Alice learns it from Bob's claim
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())
