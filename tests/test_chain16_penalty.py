"""Punishment over the Electrum protocol: two nodes whose only view of the chain is an Electrum server.

Each node has its own ElectrumChainSource (real loopback TCP to ``ElectrumServer`` over a chain
file); the test plays the network by writing that file (the faucet, blocks, and the cheater's
broadcast). The honest node must notice the revoked commitment from its subscriptions, broadcast
the penalty through the server, and end up with the whole channel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightspeed.bitcoin.tx import OutPoint
from lightspeed.chain.regtest import RegtestChain
from lightspeed.channel.penalty import revoked_commitment_number
from lightspeed.channel.resolve import SpendKind
from lightspeed.node.electrum_chain import ElectrumChainSource, ServerAddress
from lightspeed.node.node import Node
from lightspeed.store import SqliteStore
from tests.onchain_support import (
    ANCHORS_SAT,
    FUNDING_SAT,
    anchor_alone_gain,
    commitment_fee,
    fee_of,
    settle,
    swept_anchor,
    wait_for,
)
from tests.support.electrum_servers import ServerLoop


@pytest.fixture
def servers() -> Iterator[ServerLoop]:
    loop = ServerLoop()
    yield loop
    loop.close()


@pytest.mark.slow
def test_a_revoked_commitment_is_punished_by_a_node_that_sees_the_chain_through_electrum(
        tmp_path: Path, servers: ServerLoop) -> None:
    chain = RegtestChain(tmp_path / "chain.sqlite")
    _server, port = servers.electrum(tmp_path / "chain.sqlite")
    sources = [ElectrumChainSource([ServerAddress("127.0.0.1", port, False)], "regtest", request_timeout_s=10)
               for _ in range(2)]
    for source in sources:
        source.start(20)

    async def mine(blocks: int = 1) -> None:
        chain.mine(blocks)
        tip = chain.tip()
        await wait_for(lambda: all(s.tip() == tip for s in sources))
        await asyncio.sleep(0.2)  # the nodes' watchers poll every 50 ms

    async def scenario() -> None:
        alice = Node(b"\x61" * 32, sources[0], b"alice wallet seed, electrum", store=SqliteStore(tmp_path / "a.sqlite"))
        bob = Node(b"\x62" * 32, sources[1], b"bob wallet seed, electrum", store=SqliteStore(tmp_path / "b.sqlite"))
        chain.fund(alice.wallet.new_key().script_pubkey, 3_000_000)
        await wait_for(lambda: alice.wallet.balance_sat() == 3_000_000)
        await alice.start()
        port = await bob.start()
        await alice.connect("127.0.0.1", port, bob.node_id)
        opening = asyncio.create_task(alice.open_channel(bob.node_id, FUNDING_SAT))
        while not opening.done():
            await asyncio.sleep(0.1)
            chain.mine(1)
        cid = opening.result()
        await asyncio.wait_for(alice.pay(bob.create_invoice(400_000_000, "first")), 30)
        await settle(alice, bob, cid)
        old = bob.channels[cid].signed_local_commitment()  # Bob keeps his commitment holding 400k sat...
        await asyncio.wait_for(bob.pay(alice.create_invoice(300_000_000, "a refund")), 30)
        await settle(alice, bob, cid)  # ...then pays 300k back: that commitment is revoked
        assert revoked_commitment_number(alice.channels[cid], old) is not None
        alice_before, bob_before = alice.wallet.balance_sat(), bob.wallet.balance_sat()

        chain.broadcast(old)  # Bob cheats (straight into the network, as any node could)
        await mine()
        await wait_for(lambda: cid not in alice.channels)
        assert alice._onchain.resolutions[cid].kind is SpendKind.REVOKED

        def claimed() -> int:
            return sum(chain.spending_tx(OutPoint(old.txid, i)) is not None for i in range(len(old.outputs)))

        # the penalty (no delay) and Alice's to_remote (one block), via Electrum; Bob's own anchor
        for _ in range(10):
            await mine()
            if claimed() == 3:
                break
        assert claimed() == 3
        bobs = swept_anchor(chain, bob, cid, old)
        assert bobs is not None
        spenders = {tx.txid: tx for i in range(len(old.outputs))
                    if (tx := chain.spending_tx(OutPoint(old.txid, i))) is not None and tx.txid != bobs.txid}
        fees = sum(fee_of(chain, tx) for tx in spenders.values())
        expected = FUNDING_SAT - commitment_fee(old) - ANCHORS_SAT - fees  # the whole channel, less fees
        await wait_for(lambda: alice.wallet.balance_sat() - alice_before == expected)
        await mine(150)
        # the cheater got nothing of the channel: only his own anchor back, less its sweep's fee
        assert bob.wallet.balance_sat() == bob_before + anchor_alone_gain(chain, bob, cid, old)
        await alice.stop()
        await bob.stop()

    try:
        asyncio.run(scenario())
    finally:
        for source in sources:
            source.close()
        chain.close()
