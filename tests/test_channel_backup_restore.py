"""A node that lost its whole store recovers its channels' funds from the mnemonic and the static backup only."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lightspeed.bitcoin.tx import OutPoint
from lightspeed.channel.htlc_log import Side
from lightspeed.codec.features import Features
from lightspeed.node.backup import decode_backup
from lightspeed.node.node import Node
from lightspeed.node.peer import DEFAULT_FEATURES
from lightspeed.store import SqliteStore
from tests.onchain_support import (
    ANCHORS_SAT,
    commitment_fee,
    fees_to,
    mine_until,
    open_paid_channel,
    wait_for,
)

WITHOUT_ANCHORS = Features(DEFAULT_FEATURES.bits - Features.of(optional=["option_anchors"]).bits)


@pytest.mark.slow
@pytest.mark.parametrize(("anchors", "restart"), [(True, False), (False, False), (True, True)],
                         ids=["anchors", "static_remotekey", "restarted_before_the_close"])
def test_a_node_restored_from_its_backup_gets_its_balance_back(tmp_path: Path, anchors: bool, restart: bool) -> None:
    async def scenario() -> None:
        backup_file = tmp_path / "channel.backup"
        chain, alice, bob, cid = await open_paid_channel(
            tmp_path, 0x71, alice_backup=backup_file, alice_features=DEFAULT_FEATURES if anchors else WITHOUT_ANCHORS)
        channel = alice.channels[cid]
        assert channel.config.anchors is anchors
        alice_msat = channel.log.commitment(Side.LOCAL).to_local_msat
        assert alice_msat == 750_000_000
        funding = OutPoint(channel.config.funding_txid, channel.config.funding_output_index)
        # The backup never overrides a store that knows the channel.
        assert alice.resume_recovery(decode_backup(alice.privkey, backup_file.read_bytes())) == 0
        await alice.stop()
        alice.store.close()
        (tmp_path / "alice.sqlite").unlink()  # the whole store is gone: only the key, the seed and the backup
        for leftover in tmp_path.glob("alice.sqlite-*"):
            leftover.unlink()
        saved = backup_file.read_bytes()
        alice = Node(alice.privkey, chain, alice.wallet_seed, store=SqliteStore(tmp_path / "alice-new.sqlite"),
                     channel_backup_file=backup_file)
        alice_before = alice.wallet.balance_sat()
        alice.restore_from_backup(decode_backup(alice.privkey, saved))
        assert [r.state for r in alice.recovering_channels()] == ["recovering"]
        assert alice.channels == {}  # nothing to pay with: no balance is known
        if restart:  # stopped before it ever dialled Bob: its own backup file carries the recovery on
            alice.store.close()
            alice = Node(alice.privkey, chain, alice.wallet_seed, store=SqliteStore(tmp_path / "alice-new.sqlite"),
                         channel_backup_file=backup_file)
            assert alice.resume_recovery(decode_backup(alice.privkey, backup_file.read_bytes())) == 1
        await alice.start()  # dials Bob; her reestablish shows she is behind: Bob force-closes
        await wait_for(lambda: chain.spending_tx(funding) is not None)
        spend = chain.spending_tx(funding)
        assert spend is not None
        await mine_until(chain, lambda: alice.wallet.balance_sat() > alice_before)
        assert alice.recovering_channels() == []  # now in the closed-channel history, with the sweep
        assert decode_backup(alice.privkey, backup_file.read_bytes()) == []  # nothing left to recover
        assert alice.wallet.balance_sat() - alice_before == (
            alice_msat // 1000 - commitment_fee(spend) - (ANCHORS_SAT if anchors else 0) - fees_to(chain, alice, spend))
        await alice.stop()
        alice.store.close()
        alice = Node(alice.privkey, chain, alice.wallet_seed, store=SqliteStore(tmp_path / "alice-new.sqlite"),
                     channel_backup_file=backup_file)  # a restart still lists it, closed
        [closed] = alice.closed_channel_records()
        assert (closed.channel_id, closed.closing_txid) == (cid, spend.txid)
        assert closed.summary is not None and closed.summary.kind == "data_loss"
        assert (closed.summary.funding_txid, closed.summary.funding_output_index) == (funding.txid, funding.index)
        ours = alice_msat // 1000 - commitment_fee(spend) - (ANCHORS_SAT if anchors else 0)  # she funded it
        assert closed.summary.local_balance_msat == ours * 1000  # her to_remote output in Bob's commitment
        assert closed.summary.remote_balance_msat == (sum(
            o.value_sat for o in spend.outputs) - ours - (ANCHORS_SAT if anchors else 0)) * 1000
        assert alice.resume_recovery(decode_backup(alice.privkey, backup_file.read_bytes())) == 0
        alice.store.close()
        await bob.stop()

    asyncio.run(scenario())
