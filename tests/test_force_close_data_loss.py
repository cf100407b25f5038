"""A node restored from an old backup must not broadcast its stale commitment (BOLT 2 data loss)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from lightspeed.bitcoin.tx import OutPoint
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.resolve import SpendKind
from lightspeed.node.node import Node
from lightspeed.store import SqliteStore
from tests.onchain_support import (
    ANCHOR_SAT,
    ANCHORS_SAT,
    commitment_fee,
    fees_to,
    mine_until,
    open_paid_channel,
    settle,
    wait_for,
)


@pytest.mark.slow
def test_after_data_loss_we_ask_the_peer_to_close_and_sweep_our_to_remote(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x51)
        backup = tmp_path / "alice-backup.sqlite"
        with sqlite3.connect(tmp_path / "alice.sqlite") as source, sqlite3.connect(backup) as target:
            source.backup(target)  # an operator's backup, soon out of date
        old_ctn = alice.channels[cid].log.ctn[Side.LOCAL]
        invoice = bob.create_invoice(100_000_000, "after the backup")
        await asyncio.wait_for(alice.pay(invoice), 30)
        await settle(alice, bob, cid)
        alice_msat = alice.channels[cid].log.commitment(Side.LOCAL).to_local_msat
        assert alice_msat == 650_000_000
        funding = OutPoint(alice.channels[cid].config.funding_txid, alice.channels[cid].config.funding_output_index)
        await alice.stop()
        alice.store.close()
        alice_before = alice.wallet.balance_sat()
        # Alice comes back from the backup: her state is older than Bob's.
        alice = Node(alice.privkey, chain, alice.wallet_seed, store=SqliteStore(backup))
        assert alice.channels[cid].log.ctn[Side.LOCAL] == old_ctn
        await alice.start()  # dials Bob; the reestablish proves she lost data
        await wait_for(lambda: chain.spending_tx(funding) is not None)
        spend = chain.spending_tx(funding)
        assert spend is not None
        await mine_until(chain, lambda: alice.wallet.balance_sat() > alice_before)
        assert alice._onchain.resolutions[cid].kind is SpendKind.REMOTE  # Bob's commitment, not hers
        # Alice's to_remote pays her *current* balance, which her stale state did not even know.
        assert alice.wallet.balance_sat() - alice_before == (
            alice_msat // 1000 - commitment_fee(spend) - ANCHORS_SAT + ANCHOR_SAT - fees_to(chain, alice, spend))
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())
