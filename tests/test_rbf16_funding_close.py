"""CPFP of our own funding and mutual-close transactions when they are stuck (issue 16).

Two real nodes over TCP on a regtest chain with congested blocks. A funding transaction that pays
less than the blocks take waits in the mempool; Alice's node spends its change output in a child
(the funding txid, so the channel's outpoint, stays as the peer signed it) that pays for both,
replaced at a higher feerate while it waits. The same for her output of the mutual close, which
both sides signed and neither can replace alone. Without the bumper both wait forever.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from lightspeed.bitcoin.tx import OutPoint, Transaction
from lightspeed.chain import RegtestChain
from lightspeed.chain.fee_policy import feerate_per_kw
from lightspeed.node.fee_bumper import FUNDING_TARGET_BLOCKS, MAX_FEE_SHARE_DIVISOR
from lightspeed.node.node import Node
from lightspeed.store import SqliteStore
from tests.onchain_support import fee_of, mine, wait_for

FUNDING_SAT = 1_000_000


def _confirmations(chain: RegtestChain, txid: bytes) -> int:
    found = chain.get_transaction(txid)
    return -1 if found is None else found[1]


def _child_of(chain: RegtestChain, parent: Transaction, node: Node) -> Transaction | None:
    for n, out in enumerate(parent.outputs):
        if node.wallet.owns(out.script_pubkey) is not None:
            spender = chain.spending_tx(OutPoint(parent.txid, n))
            if spender is not None:
                return spender
    return None


def _package_feerate(chain: RegtestChain, parent: Transaction, child: Transaction) -> int:
    return feerate_per_kw(fee_of(chain, parent) + fee_of(chain, child), parent.weight + child.weight)


async def _mine_until_confirmed(chain: RegtestChain, txid: bytes, blocks: int) -> None:
    for _ in range(blocks):
        if _confirmations(chain, txid) >= 1:
            return
        await mine(chain, 1, pause=0.3)


@pytest.mark.slow
@pytest.mark.parametrize("bumping", [True, False])
def test_a_stuck_funding_and_a_stuck_mutual_close_confirm_after_a_cpfp(tmp_path: Path, bumping: bool) -> None:
    async def scenario() -> None:
        tag = 0x61 if bumping else 0x63
        chain = RegtestChain(":memory:")
        alice = Node(bytes([tag]) * 32, chain, b"alice wallet seed %d" % tag,
                     store=SqliteStore(tmp_path / "alice.sqlite"))
        bob = Node(bytes([tag + 1]) * 32, chain, b"bob wallet seed %d" % tag, store=SqliteStore(tmp_path / "bob.sqlite"))
        chain.fund(alice.wallet.new_key().script_pubkey, 3_000_000)
        chain.fund(alice.wallet.new_key().script_pubkey, 500_000)  # a second coin for the fees
        chain.set_min_relay_feerate(253)
        chain.set_fee_estimate(1000)
        if not bumping:
            alice.parent_bumper = None
        await alice.start()
        port = await bob.start()
        opening: asyncio.Task[bytes] | None = None
        try:
            await alice.connect("127.0.0.1", port, bob.node_id)
            opening = asyncio.create_task(alice.open_channel(bob.node_id, FUNDING_SAT))
            await wait_for(lambda: len(chain.mempool()) == 1, timeout=15)
            funding = chain.get_transaction(chain.mempool()[0])
            assert funding is not None
            funding_tx = funding[0]
            assert feerate_per_kw(fee_of(chain, funding_tx), funding_tx.weight) < 2000
            chain.set_fee_estimate(3000)  # the fee spike: blocks take only packages at 2500 sat/kw or more
            chain.congest(2500)
            await _mine_until_confirmed(chain, funding_tx.txid, FUNDING_TARGET_BLOCKS + 2)
            if not bumping:
                assert _confirmations(chain, funding_tx.txid) == 0 and _child_of(chain, funding_tx, alice) is None
                return
            assert _confirmations(chain, funding_tx.txid) >= 1
            child = _child_of(chain, funding_tx, alice)
            assert child is not None and _confirmations(chain, child.txid) >= 1
            assert _package_feerate(chain, funding_tx, child) >= 2500
            assert fee_of(chain, child) <= (funding_tx.outputs[1].value_sat // MAX_FEE_SHARE_DIVISOR)
            await mine(chain, 3)
            cid = await asyncio.wait_for(opening, 30)
            assert alice.channels[cid].config.funding_txid == funding_tx.txid  # the outpoint the peer signed
            # the mutual close: agreed at a low feerate, then the blocks ask for more
            chain.congest(None)
            chain.set_fee_estimate(1000)
            closing = await alice.close_channel(cid)
            await wait_for(lambda: chain.get_transaction(closing.txid) is not None, timeout=10)
            assert feerate_per_kw(fee_of(chain, closing), closing.weight) < 5000
            chain.set_fee_estimate(7000)
            chain.congest(6000)
            await _mine_until_confirmed(chain, closing.txid, FUNDING_TARGET_BLOCKS + 2)
            assert _confirmations(chain, closing.txid) >= 1
            close_child = _child_of(chain, closing, alice)
            assert close_child is not None and _package_feerate(chain, closing, close_child) >= 6000
        finally:
            if opening is not None:
                opening.cancel()
            for node in (alice, bob):
                with contextlib.suppress(Exception):
                    await node.stop()

    asyncio.run(scenario())
