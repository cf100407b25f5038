"""An HTLC in flight when the channel closes, between two real nodes: resolved on chain.

A relay holds Bob's replies back, so the commitment dance stops half way with the HTLC in
Bob's commitment only: Bob cannot fulfil it off chain, Alice cannot time it out off chain.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from lightspeed.bitcoin.tx import OutPoint
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.resolve import FULFILL_DEADLINE_BLOCKS, SpendKind
from lightspeed.errors import PaymentError
from lightspeed.invoice import build_invoice, verify_payment_proof
from tests.onchain_support import ANCHOR_SAT, fees_to, mine, mine_until, open_paid_channel, wait_for


@pytest.mark.slow
def test_the_payee_claims_a_stuck_htlc_on_chain_before_its_deadline_and_the_payer_learns_the_preimage(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x61, proxy=True)
        bob_msat = bob.channels[cid].log.commitment(Side.LOCAL).to_local_msat
        bob_before = bob.wallet.balance_sat()
        alice.proxy.flowing.clear()  # type: ignore[attr-defined]
        invoice = bob.create_invoice(50_000_000, "stuck")
        paying = asyncio.create_task(alice.pay(invoice, timeout=60))
        await wait_for(lambda: bool(bob.channels[cid].log.commitment(Side.LOCAL).htlcs))
        htlc = bob.channels[cid].log.commitment(Side.LOCAL).htlcs[0]
        # Nobody closes by hand: Bob's node must go on chain FULFILL_DEADLINE_BLOCKS before expiry.
        chain.mine(htlc.cltv_expiry - FULFILL_DEADLINE_BLOCKS - chain.tip()[0] - 1)
        await asyncio.sleep(0.3)
        assert cid in bob.channels  # not yet
        await mine_until(chain, lambda: paying.done(), max_blocks=5)
        assert bob._onchain.resolutions[cid].kind is SpendKind.LOCAL
        preimage = await paying  # learnt from Bob's HTLC-success witness
        assert verify_payment_proof(invoice, preimage)
        assert alice.store.payment(invoice.payment_hash).status == "succeeded"  # type: ignore[union-attr]
        # Bob's HTLC-success output and his to_local wait his delay, then reach his wallet (his anchor at once).
        spend_txid = bob._onchain.resolutions[cid].spend_txid
        assert spend_txid is not None
        found = chain.get_transaction(spend_txid)
        assert found is not None
        await mine(chain, 140)
        await mine_until(chain, lambda: bob._onchain.resolutions[cid].finished, max_blocks=10)
        commitment = found[0]
        index = next(i for i, o in enumerate(commitment.outputs) if o.value_sat == 50_000)
        htlc_success = chain.spending_tx(OutPoint(commitment.txid, index))
        assert htlc_success is not None  # zero fee (option_anchors); its output swept after the delay
        second_stage_fee = fees_to(chain, bob, htlc_success)
        assert bob.wallet.balance_sat() - bob_before == (
            bob_msat // 1000 + 50_000 + ANCHOR_SAT - fees_to(chain, bob, commitment) - second_stage_fee)
        await alice.proxy.stop()  # type: ignore[attr-defined]
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_an_htlc_the_payee_cannot_claim_times_out_on_chain_and_the_payment_fails(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x63, proxy=True)
        alice.proxy.flowing.clear()  # type: ignore[attr-defined]
        # An invoice Bob signed but whose preimage nobody knows: Bob can never claim the HTLC.
        unknown = build_invoice(payment_hash=os.urandom(32), payment_secret=os.urandom(32), timestamp=0,
                                expiry=10**9, network=bob.network, amount_msat=50_000_000,
                                description="unclaimable").sign(bob.privkey)
        paying = asyncio.create_task(alice.pay(unknown, timeout=60))
        await wait_for(lambda: bool(bob.channels[cid].log.commitment(Side.LOCAL).htlcs))
        htlc = bob.channels[cid].log.commitment(Side.LOCAL).htlcs[0]
        alice_msat = alice.channels[cid].log.commitment(Side.REMOTE).to_remote_msat  # in Bob's commitment
        alice_before = alice.wallet.balance_sat()
        commitment = await bob.force_close_channel(cid)  # Bob's commitment holds the HTLC
        await mine_until(chain, lambda: alice.wallet.balance_sat() > alice_before)  # Alice's to_remote
        assert alice._onchain.resolutions[cid].kind is SpendKind.REMOTE
        assert not paying.done()  # the HTLC is on chain, not yet expired
        chain.mine(htlc.cltv_expiry - chain.tip()[0] - 1)
        await mine_until(chain, lambda: paying.done(), max_blocks=5)
        with pytest.raises(PaymentError):  # the HTLC came back on chain: no other route to Bob is left
            await paying
        assert alice.store.payment(unknown.payment_hash).status == "failed"  # type: ignore[union-attr]
        await mine_until(chain, lambda: alice._onchain.resolutions[cid].finished)
        commitment_fee = 1_000_000 - sum(o.value_sat for o in commitment.outputs)
        # Alice funded: her balance and the refunded HTLC, minus the commitment fee and anchors (hers comes
        # back) and her claims.
        assert alice.wallet.balance_sat() - alice_before == (
            alice_msat // 1000 + 50_000 - commitment_fee - 660 + ANCHOR_SAT - fees_to(chain, alice, commitment))
        await alice.proxy.stop()  # type: ignore[attr-defined]
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())

