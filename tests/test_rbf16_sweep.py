"""RBF of our sweeps (issue 16): a to_local sweep planned at the close's feerate waits in congested
blocks until the node replaces it at the chain's new estimate; the replacement obeys BIP 125 (the
regtest chain checks it) and the cap. Two real nodes over TCP, a real regtest mempool."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from lightspeed.bitcoin.tx import OutPoint, Transaction
from lightspeed.chain import RegtestChain
from lightspeed.chain.fee_policy import feerate_per_kw
from lightspeed.node.node import Node
from lightspeed.store import SqliteStore
from tests.onchain_support import fee_of, mine, open_paid_channel, wait_for


def _confirmations(chain: RegtestChain, tx: Transaction | None) -> int:
    found = None if tx is None else chain.get_transaction(tx.txid)
    return -1 if found is None else found[1]


@pytest.mark.slow
@pytest.mark.parametrize("rbf", [True, False])
def test_a_stuck_to_local_sweep_is_replaced_and_confirms_across_a_restart(tmp_path: Path, rbf: bool) -> None:
    async def scenario() -> None:
        tag = 0x71 if rbf else 0x73
        chain, alice, bob, cid = await open_paid_channel(tmp_path, tag)
        nodes = [alice, bob]
        try:
            nodes.append(await check(chain, alice, cid, tag))
        finally:
            for node in nodes:
                with contextlib.suppress(Exception):
                    await node.stop()

    async def check(chain: RegtestChain, alice: Node, cid: bytes, tag: int) -> Node:
        chain.set_min_relay_feerate(253)
        chain.set_fee_estimate(1000)  # the sweep is planned at 1000 sat/kw
        alice._onchain.sweep_rbf = rbf
        commitment = await alice.force_close_channel(cid, "test: sweep in a fee spike")
        await mine(chain, 1)
        assert _confirmations(chain, commitment) >= 1
        to_local = OutPoint(commitment.txid, max(range(len(commitment.outputs)),
                                                 key=lambda i: commitment.outputs[i].value_sat))
        chain.set_fee_estimate(3000)
        chain.congest(2500)  # the spike: 1000 sat/kw waits
        chain.mine(alice._onchain.resolutions[cid].channel.config.local_to_self_delay - 6)
        for _ in range(10):  # up to the delay: the sweep goes out at 1000 sat/kw
            await mine(chain, 1, pause=0.2)
            if chain.spending_tx(to_local) is not None:
                break
        first = chain.spending_tx(to_local)
        assert first is not None and _confirmations(chain, first) == 0
        assert feerate_per_kw(fee_of(chain, first), first.weight) < 2500
        if rbf:  # replaced at the new estimate, which the blocks still refuse
            chain.congest(5000)
            for _ in range(4):
                await mine(chain, 1, pause=0.3)
                if chain.spending_tx(to_local) != first:
                    break
            second = chain.spending_tx(to_local)
            assert second is not None and second.txid != first.txid and _confirmations(chain, second) == 0
            assert 3000 <= feerate_per_kw(fee_of(chain, second), second.weight) < 5000
            # a restart: the recorded feerates rebuild both versions, the waiting one is known as ours
            await alice.stop()
            alice.store.close()
            alice = Node(bytes([tag]) * 32, chain, b"alice wallet seed %d" % tag,
                         store=SqliteStore(tmp_path / "alice.sqlite"))
            await alice.start()
            await mine(chain, 1, pause=0.3)
            assert not alice._onchain.resolutions[cid].finished
            chain.set_fee_estimate(6000)
        for _ in range(6):
            await mine(chain, 1, pause=0.3)
            if _confirmations(chain, chain.spending_tx(to_local)) >= 1:
                break
        final = chain.spending_tx(to_local)
        if not rbf:
            assert final == first and _confirmations(chain, first) == 0  # still waiting
            return alice
        assert final is not None and final.txid != first.txid and _confirmations(chain, final) >= 1
        assert final.txid != second.txid and feerate_per_kw(fee_of(chain, final), final.weight) >= 5000
        assert fee_of(chain, final) * 2 <= commitment.outputs[to_local.index].value_sat  # the cap
        await wait_for(lambda: alice._onchain.resolutions[cid].finished, timeout=10)
        return alice

    asyncio.run(scenario())
