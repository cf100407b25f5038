"""Our to_local after our own force close waits the PEER's to_self_delay, and not one block more.

Against Electrum (which asks 10 blocks while Lightspeed asks 144) the sweep looked missing; it was
the test stopping one block short. This pins the node's side without Electrum: two real nodes over
TCP, real SQLite stores, the validating regtest chain, delays that differ on each side.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from lightspeed.bitcoin.tx import OutPoint
from lightspeed.chain import RegtestChain
from lightspeed.node.node import Node
from lightspeed.node.settings import ChannelSettings
from lightspeed.store import SqliteStore
from tests.onchain_support import FUNDING_SAT, mine, settle, wait_for

BOB_ASKS = 10  # what Bob's open/accept tells Alice to wait for her to_local (Electrum's choice in the suite)


def test_our_to_local_is_swept_at_the_first_block_the_peers_delay_allows(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain = RegtestChain(":memory:")
        alice = Node(b"\x91" * 32, chain, b"alice wallet seed, delays", store=SqliteStore(tmp_path / "alice.sqlite"))
        bob = Node(b"\x92" * 32, chain, b"bob wallet seed, delays", store=SqliteStore(tmp_path / "bob.sqlite"),
                   channel_settings=ChannelSettings(to_self_delay=BOB_ASKS))
        chain.fund(alice.wallet.new_key().script_pubkey, 3_000_000)
        await alice.start()
        port = await bob.start()
        try:
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
            await asyncio.wait_for(alice.pay(bob.create_invoice(100_000_000, "both outputs")), 30)
            await settle(alice, bob, cid)
            config = alice.channels[cid].config
            assert (config.local_to_self_delay, config.remote_to_self_delay) == (BOB_ASKS, 144)

            commitment = await alice.force_close_channel(cid)
            await mine(chain, 1)
            confirmed_at = chain.tip()[0]
            [sweep] = alice.pending_sweeps()
            assert (sweep.label, sweep.maturity_height) == ("to_local", confirmed_at + BOB_ASKS)
            to_local = next(i for i, o in enumerate(commitment.outputs) if o.value_sat > 800_000)
            outpoint = OutPoint(commitment.txid, to_local)
            await mine(chain, BOB_ASKS - 2)  # the next block is one too early (BIP 68)
            assert chain.tip()[0] == confirmed_at + BOB_ASKS - 2 and chain.spending_tx(outpoint) is None
            await mine(chain, 1, pause=0)  # now the next block may hold it: no further block needed
            await wait_for(lambda: chain.spending_tx(outpoint) is not None)
            sweep_tx = chain.spending_tx(outpoint)
            assert sweep_tx is not None and sweep_tx.inputs[0].sequence == BOB_ASKS
            assert sweep_tx.outputs[0].value_sat == sweep.amount_sat
            chain.mine(1)  # and the chain takes it in that block
            found = chain.get_transaction(sweep_tx.txid)
            assert found is not None and found[1] == 1 and chain.tip()[0] == confirmed_at + BOB_ASKS
        finally:
            await alice.stop()
            await bob.stop()

    asyncio.run(scenario())
