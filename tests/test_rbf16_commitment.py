"""Re-bumping our broadcast anchor commitment (issue 16): its CPFP child is replaced (RBF) at a
higher feerate while it waits, so a force close with an HTLC at risk resolves in a fee spike.

Two real nodes over TCP on a regtest chain with a real mempool's fee rules. Bob holds Alice's
HTLC (a hold invoice); Alice force closes at one estimate, then fees spike (congested blocks
above what her first child paid). Only if the child is replaced does the commitment confirm in
time for her HTLC-timeout; the child never pays more than the cap.
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
from lightspeed.crypto.hashes import sha256
from lightspeed.node.fee_bumper import MAX_FEE_SHARE_DIVISOR, MAX_FEERATE_PER_KW, value_at_stake_sat
from lightspeed.node.htlc_bump import TIMEOUT_DEADLINE_BLOCKS
from lightspeed.node.node import Node
from tests.onchain_support import commitment_fee, fee_of, mine, open_paid_channel, settle, wait_for

HTLC_SAT = 50_000


async def _held(tmp_path: Path, tag: int) -> tuple[RegtestChain, Node, Node, bytes, asyncio.Task[object]]:
    chain, alice, bob, cid = await open_paid_channel(tmp_path, tag)
    invoice = bob.create_hold_invoice(sha256(os.urandom(32)), HTLC_SAT * 1000, "held by Bob")
    paying: asyncio.Task[object] = asyncio.create_task(alice.pay(invoice, timeout=600))
    await wait_for(lambda: bool(alice.channels[cid].log.commitment(Side.LOCAL).htlcs))
    await settle(alice, bob, cid)
    return chain, alice, bob, cid, paying


def _confirmations(chain: RegtestChain, tx: Transaction | None) -> int:
    found = None if tx is None else chain.get_transaction(tx.txid)
    return 0 if found is None else found[1]


def _anchor_spender(chain: RegtestChain, commitment: Transaction) -> Transaction | None:
    spenders = [chain.spending_tx(OutPoint(commitment.txid, i)) for i, o in enumerate(commitment.outputs)
                if o.value_sat == 330]
    return next((s for s in spenders if s is not None), None)


@pytest.mark.slow
@pytest.mark.parametrize("rebump", [True, False])
def test_a_stuck_commitment_is_re_bumped_and_its_htlc_resolves_in_time(tmp_path: Path, rebump: bool) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid, paying = await _held(tmp_path, 0x51 if rebump else 0x53)
        try:
            await check(chain, alice, cid)
        finally:
            paying.cancel()
            for node in (alice, bob):
                with contextlib.suppress(Exception):
                    await node.stop()

    async def check(chain: RegtestChain, alice: Node, cid: bytes) -> None:
        chain.set_min_relay_feerate(253)
        chain.set_fee_estimate(3000)  # above the commitment's 2500 sat/kw: a first child at 3000
        htlc = alice.channels[cid].log.commitment(Side.LOCAL).htlcs[0]
        stake = value_at_stake_sat(alice.channels[cid])
        if not rebump:
            alice._onchain.commitment_bumper = None
        commitment = await alice.force_close_channel(cid, "test: fees are about to spike")
        first = _anchor_spender(chain, commitment)
        assert first is not None  # the child that went out with the commitment
        package = feerate_per_kw(commitment_fee(commitment) + fee_of(chain, first), commitment.weight + first.weight)
        assert 3000 <= package < 5000
        chain.set_fee_estimate(6000)
        chain.congest(5000)  # the spike: a package under 5000 sat/kw waits
        outpoint = OutPoint(commitment.txid, next(i for i, o in enumerate(commitment.outputs)
                                                  if o.value_sat == HTLC_SAT))
        while chain.tip()[0] < htlc.cltv_expiry + TIMEOUT_DEADLINE_BLOCKS:
            await mine(chain, 1, pause=0.15)
            if _confirmations(chain, chain.spending_tx(outpoint)) >= 1:
                break
        if not rebump:  # the commitment never confirmed: the HTLC is still at risk past its deadline
            assert _confirmations(chain, commitment) == 0
            assert chain.spending_tx(outpoint) is None
            assert _anchor_spender(chain, commitment) == first
            return
        assert _confirmations(chain, commitment) >= 1
        child = _anchor_spender(chain, commitment)
        assert child is not None and child.txid != first.txid and _confirmations(chain, child) >= 1
        # the replacement kept the first child's wallet coins (BIP 125 rule 2) and paid the spike
        assert {i.prevout for i in first.inputs} <= {i.prevout for i in child.inputs}
        paid = fee_of(chain, child)
        assert feerate_per_kw(commitment_fee(commitment) + paid, commitment.weight + child.weight) >= 5000
        assert paid <= stake // MAX_FEE_SHARE_DIVISOR
        timeout_tx = chain.spending_tx(outpoint)
        assert _confirmations(chain, timeout_tx) >= 1  # the HTLC went back to Alice in time
        found = chain.get_transaction(timeout_tx.txid)  # type: ignore[union-attr]
        assert found is not None
        assert chain.tip()[0] - found[1] + 1 <= htlc.cltv_expiry + TIMEOUT_DEADLINE_BLOCKS

    asyncio.run(scenario())


@pytest.mark.slow
def test_the_commitment_re_bump_never_pays_above_its_cap(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid, paying = await _held(tmp_path, 0x55)
        try:
            chain.set_fee_estimate(3000)
            stake = value_at_stake_sat(alice.channels[cid])
            commitment = await alice.force_close_channel(cid, "test: an absurd estimate follows")
            first = _anchor_spender(chain, commitment)
            assert first is not None
            chain.congest(10_000_000)  # nothing is mined
            chain.set_fee_estimate(10_000_000)  # 40,000 sat/vbyte: the cap must hold
            for _ in range(4):
                await mine(chain, 1, pause=0.3)
            child = _anchor_spender(chain, commitment)
            assert child is not None
            paid = fee_of(chain, child)
            package = feerate_per_kw(commitment_fee(commitment) + paid, commitment.weight + child.weight)
            assert package <= MAX_FEERATE_PER_KW and paid <= stake // MAX_FEE_SHARE_DIVISOR
            assert child.txid != first.txid  # it was re-bumped, up to the cap
        finally:
            paying.cancel()
            for node in (alice, bob):
                with contextlib.suppress(Exception):
                    await node.stop()

    asyncio.run(scenario())


@pytest.mark.slow
@pytest.mark.parametrize("bumping", [True, False])
def test_the_peers_stuck_commitment_is_cpfpd_through_our_anchor_on_it(tmp_path: Path, bumping: bool) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid, paying = await _held(tmp_path, 0x57 if bumping else 0x59)
        try:
            chain.set_min_relay_feerate(253)
            chain.set_fee_estimate(1000)  # Bob's commitment (2500 sat/kw) goes out without a child
            bob._onchain.commitment_bumper = None  # Bob does nothing more for it
            if not bumping:
                alice._onchain.commitment_bumper = None
            theirs = await bob.force_close_channel(cid, "test: Bob closes, then fees spike")
            assert _anchor_spender(chain, theirs) is None
            chain.set_fee_estimate(6000)
            chain.congest(5000)
            for _ in range(6):
                await mine(chain, 1, pause=0.3)
                if _confirmations(chain, theirs) >= 1:
                    break
            if not bumping:
                assert _confirmations(chain, theirs) == 0 and _anchor_spender(chain, theirs) is None
                return
            assert _confirmations(chain, theirs) >= 1
            child = _anchor_spender(chain, theirs)
            assert child is not None and _confirmations(chain, child) >= 1
            assert any(alice.wallet.owns(o.script_pubkey) for o in child.outputs)  # Alice's child
            paid = fee_of(chain, child)
            assert feerate_per_kw(commitment_fee(theirs) + paid, theirs.weight + child.weight) >= 5000
            assert paid <= value_at_stake_sat(alice.channels.get(cid) or alice._onchain.resolutions[cid].channel,
                                              Side.REMOTE) // MAX_FEE_SHARE_DIVISOR
        finally:
            paying.cancel()
            for node in (alice, bob):
                with contextlib.suppress(Exception):
                    await node.stop()

    asyncio.run(scenario())
