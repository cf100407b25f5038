"""Force close between two real nodes over TCP on the regtest chain: every satoshi accounted for."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lightspeed.channel.htlc_log import Side
from lightspeed.channel.resolve import SpendKind
from lightspeed.codec.generated import CommitmentSigned
from lightspeed.crypto.hashes import sha256
from lightspeed.node.node import Node
from lightspeed.store import SqliteStore
from tests.onchain_support import (
    ANCHOR_SAT,
    ANCHORS_SAT,
    anchor_alone_gain,
    commitment_fee,
    fees_to,
    mine,
    mine_until,
    open_paid_channel,
    swept_anchor,
    wait_for,
)

TO_SELF_DELAY = 144


@pytest.mark.slow
def test_force_close_by_us_sweeps_to_local_after_the_delay_and_survives_a_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x31)
        alice_msat = alice.channels[cid].log.commitment(Side.LOCAL).to_local_msat
        bob_msat = bob.channels[cid].log.commitment(Side.LOCAL).to_local_msat
        assert (alice_msat, bob_msat) == (750_000_000, 250_000_000)
        alice_before, bob_before = alice.wallet.balance_sat(), bob.wallet.balance_sat()
        commitment = await alice.force_close_channel(cid)
        assert cid not in alice.channels and alice.store.channels() == []
        await wait_for(lambda: cid not in bob.channels)  # Bob saw the error (or the spend)
        # Bob's to_remote waits one confirmation (option_anchors)
        await mine_until(chain, lambda: bob.wallet.balance_sat() > bob_before)
        # ... and his anchor on Alice's commitment rides along in the same sweep
        to_remote = swept_anchor(chain, bob, cid, commitment)
        assert to_remote is not None and len(to_remote.inputs) == 2
        assert bob.wallet.balance_sat() - bob_before == bob_msat // 1000 + ANCHOR_SAT - fees_to(chain, bob, commitment)
        # Alice's anchor: swept alone at once (to_local waits 144 blocks; anyone may take it after 16)
        await wait_for(lambda: swept_anchor(chain, alice, cid, commitment) is not None)
        # Alice restarts in the middle of her delay: the resolution resumes from her store.
        await alice.stop()
        alice.store.close()
        alice = Node(alice.privkey, chain, alice.wallet_seed, store=SqliteStore(tmp_path / "alice.sqlite"))
        await alice.start()
        await mine(chain, TO_SELF_DELAY - 3)
        anchor = anchor_alone_gain(chain, alice, cid, commitment)
        assert alice.wallet.balance_sat() == alice_before + anchor  # to_local is not spendable yet
        await mine_until(chain, lambda: alice.wallet.balance_sat() > alice_before + anchor)
        # Alice funded the channel: she pays the commitment fee and the two anchors, and gets hers back.
        assert alice.wallet.balance_sat() - alice_before == (alice_msat // 1000 - commitment_fee(commitment)
                                                             - ANCHORS_SAT + ANCHOR_SAT - fees_to(chain, alice, commitment))
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_when_the_peer_force_closes_our_to_remote_is_swept(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x33)
        alice_msat = alice.channels[cid].log.commitment(Side.LOCAL).to_local_msat
        bob_msat = bob.channels[cid].log.commitment(Side.LOCAL).to_local_msat
        alice_before, bob_before = alice.wallet.balance_sat(), bob.wallet.balance_sat()
        commitment = await bob.force_close_channel(cid)  # Bob, the fundee, closes
        await wait_for(lambda: cid not in alice.channels)
        await mine_until(chain, lambda: alice.wallet.balance_sat() > alice_before)
        resolution = alice._onchain.resolutions[cid]
        assert resolution.kind is SpendKind.REMOTE
        # Alice's to_remote, with her anchor batched in: her balance minus the commitment fee and the
        # anchors (she funded), plus her anchor back, minus the sweep.
        batched = swept_anchor(chain, alice, cid, commitment)
        assert batched is not None and len(batched.inputs) == 2
        assert alice.wallet.balance_sat() - alice_before == (alice_msat // 1000 - commitment_fee(commitment)
                                                             - ANCHORS_SAT + ANCHOR_SAT - fees_to(chain, alice, commitment))
        # Bob waits for his delay; his anchor is swept alone meanwhile
        await wait_for(lambda: swept_anchor(chain, bob, cid, commitment) is not None)
        anchor = anchor_alone_gain(chain, bob, cid, commitment)
        assert bob.wallet.balance_sat() == bob_before + anchor
        await mine(chain, TO_SELF_DELAY - 5)
        await mine_until(chain, lambda: bob.wallet.balance_sat() > bob_before + anchor)
        assert bob.wallet.balance_sat() - bob_before == bob_msat // 1000 + ANCHOR_SAT - fees_to(chain, bob, commitment)
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_a_bad_commitment_signature_fails_the_channel_with_funds_intact(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x35)
        alice_msat = alice.channels[cid].log.commitment(Side.LOCAL).to_local_msat
        bob_msat = bob.channels[cid].log.commitment(Side.LOCAL).to_local_msat
        alice_before, bob_before = alice.wallet.balance_sat(), bob.wallet.balance_sat()
        # Bob's side misbehaves: an HTLC, then a commitment_signed whose signature does not verify.
        channel = bob.channels[cid]
        add = channel.add_htlc(10_000_000, sha256(b"x" * 32), chain.tip()[0] + 50)
        signed = channel.sign()
        forged = CommitmentSigned(channel_id=cid, htlc_signature=signed.htlc_signature,
                                  signature=signed.signature[:-1] + bytes([signed.signature[-1] ^ 1]))
        peer = bob._peers[alice.node_id]
        await peer.send(add)
        await peer.send(forged)
        await wait_for(lambda: cid not in alice.channels)  # BOLT 2: error, then fail the channel
        resolution = alice._onchain.resolutions[cid]
        assert resolution.kind is SpendKind.LOCAL  # Alice broadcast her (valid) latest commitment
        assert resolution.spend_txid is not None
        found = chain.get_transaction(resolution.spend_txid)
        assert found is not None
        commitment = found[0]
        await wait_for(lambda: cid not in bob.channels)  # Bob got the error and sees the spend
        await mine_until(chain, lambda: bob.wallet.balance_sat() > bob_before)
        await mine(chain, TO_SELF_DELAY - 5)
        anchor = anchor_alone_gain(chain, alice, cid, commitment)
        await mine_until(chain, lambda: alice.wallet.balance_sat() > alice_before + anchor)
        assert bob.wallet.balance_sat() - bob_before == bob_msat // 1000 + ANCHOR_SAT - fees_to(chain, bob, commitment)
        assert alice.wallet.balance_sat() - alice_before == (alice_msat // 1000 - commitment_fee(commitment)
                                                             - ANCHORS_SAT + ANCHOR_SAT - fees_to(chain, alice, commitment))
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())
