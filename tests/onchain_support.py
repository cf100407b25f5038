"""Helpers for the end-to-end force-close tests: two nodes over TCP with a paid channel, mining."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from lightspeed.bitcoin.tx import OutPoint, Transaction
from lightspeed.chain import RegtestChain
from lightspeed.node.node import Node
from lightspeed.store import SqliteStore

FUNDING_SAT = 1_000_000
ANCHORS_SAT = 660  # two anchor outputs of 330 sat, paid by the funder, left for anyone to sweep


async def open_paid_channel(tmp_path: Path, tag: int, paid_msat: int = 250_000_000) -> tuple[
        RegtestChain, Node, Node, bytes]:
    """Alice opens a channel to Bob (durable stores in ``tmp_path``) and pays him ``paid_msat``."""
    chain = RegtestChain(":memory:")
    alice = Node(bytes([tag]) * 32, chain, b"alice wallet seed %d" % tag, store=SqliteStore(tmp_path / "alice.sqlite"))
    bob = Node(bytes([tag + 1]) * 32, chain, b"bob wallet seed %d" % tag, store=SqliteStore(tmp_path / "bob.sqlite"))
    chain.fund(alice.wallet.new_key().script_pubkey, 3_000_000)
    await alice.start()
    await alice.connect("127.0.0.1", await bob.start(), bob.node_id)

    async def miner() -> None:
        while True:
            await asyncio.sleep(0.05)
            chain.mine(1)

    mining = asyncio.create_task(miner())
    try:
        channel_id = await asyncio.wait_for(alice.open_channel(bob.node_id, FUNDING_SAT), 30)
    finally:
        mining.cancel()
    invoice = bob.create_invoice(paid_msat, "before the close")
    await asyncio.wait_for(alice.pay(invoice), 30)
    await settle(alice, bob, channel_id)
    return chain, alice, bob, channel_id


async def settle(alice: Node, bob: Node, channel_id: bytes, timeout: float = 10) -> None:
    """Wait until neither side has anything left to sign or revoke on the channel."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        quiet = all(not c.log.has_changes_to_sign() and not c.log.awaiting_revoke
                    for c in (alice.channels[channel_id], bob.channels[channel_id]))
        if quiet:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the channel did not settle")


async def mine(chain: RegtestChain, blocks: int = 1, pause: float = 0.25) -> None:
    """Mine, then give the nodes' chain watchers (polling every 50 ms) time to act."""
    chain.mine(blocks)
    await asyncio.sleep(pause)


async def mine_until(chain: RegtestChain, predicate: Callable[[], bool], max_blocks: int = 10) -> None:
    """Mine a block at a time until ``predicate`` holds (the watchers broadcast on new blocks)."""
    for _ in range(max_blocks):
        await mine(chain, 1, pause=0.1)
        for _ in range(10):
            if predicate():
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"not reached within {max_blocks} blocks")


def fee_of(chain: RegtestChain, tx: Transaction) -> int:
    spent = 0
    for txin in tx.inputs:
        parent = chain.get_transaction(txin.prevout.txid)
        assert parent is not None
        spent += parent[0].outputs[txin.prevout.index].value_sat
    return spent - sum(o.value_sat for o in tx.outputs)


def claim_fees(chain: RegtestChain, tx: Transaction) -> int:
    """Fees of every transaction spending an output of ``tx`` (the claims on a commitment)."""
    total = 0
    for index in range(len(tx.outputs)):
        spender = chain.spending_tx(OutPoint(tx.txid, index))
        if spender is not None:
            total += fee_of(chain, spender)
    return total


def fees_to(chain: RegtestChain, node: Node, tx: Transaction) -> int:
    """Fees of the claims on ``tx`` that paid ``node``'s wallet (what its sweeps cost it)."""
    owned = {u.output.script_pubkey for u in node.wallet.utxos()}
    total = 0
    for index in range(len(tx.outputs)):
        spender = chain.spending_tx(OutPoint(tx.txid, index))
        if spender is not None and any(o.script_pubkey in owned for o in spender.outputs):
            total += fee_of(chain, spender)
    return total


def commitment_fee(tx: Transaction) -> int:
    return FUNDING_SAT - sum(o.value_sat for o in tx.outputs)


async def wait_for(predicate: object, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.02)
