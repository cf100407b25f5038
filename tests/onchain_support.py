"""Helpers for the end-to-end force-close tests: two nodes over TCP with a paid channel, mining."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from lightspeed.bitcoin.tx import OutPoint, Transaction
from lightspeed.chain import RegtestChain
from lightspeed.channel.anchor_sweep import our_anchor
from lightspeed.codec.features import Features
from lightspeed.node.node import Node
from lightspeed.node.peer import DEFAULT_FEATURES
from lightspeed.store import SqliteStore

FUNDING_SAT = 1_000_000
ANCHORS_SAT = 660  # two anchor outputs of 330 sat, paid by the funder (each side sweeps its own back)
ANCHOR_SAT = 330  # one anchor: what a force close gives each side back, less its sweep's fee


class Proxy:
    """A TCP relay between two nodes whose Bob-to-Alice direction can be held back.

    Holding replies back freezes a commitment dance half way, deterministically: the HTLC is
    in Bob's commitment, Alice never hears back. A real relay of real (encrypted) bytes.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, held: bool) -> None:
            try:
                while data := await src.read(65536):
                    if held:
                        await self.flowing.wait()
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        for task in (asyncio.create_task(pump(reader, up_writer, False)),
                     asyncio.create_task(pump(up_reader, writer, True))):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()


async def open_paid_channel(tmp_path: Path, tag: int, paid_msat: int = 250_000_000,
                            proxy: bool = False, alice_backup: Path | None = None,
                            alice_features: Features = DEFAULT_FEATURES) -> tuple[RegtestChain, Node, Node, bytes]:
    """Alice opens a channel to Bob (durable stores in ``tmp_path``) and pays him ``paid_msat``.

    With ``proxy``, Alice reaches Bob through a :class:`Proxy`, left at ``alice.proxy``; with
    ``alice_backup``, Alice keeps her static channel backup in that file; ``alice_features`` without
    option_anchors makes a static_remotekey channel.
    """
    chain = RegtestChain(":memory:")
    alice = Node(bytes([tag]) * 32, chain, b"alice wallet seed %d" % tag, store=SqliteStore(tmp_path / "alice.sqlite"),
                 channel_backup_file=alice_backup, features=alice_features)
    bob = Node(bytes([tag + 1]) * 32, chain, b"bob wallet seed %d" % tag, store=SqliteStore(tmp_path / "bob.sqlite"))
    chain.fund(alice.wallet.new_key().script_pubkey, 3_000_000)
    await alice.start()
    port = await bob.start()
    if proxy:
        relay = Proxy(port)
        port = await relay.start()
        alice.proxy = relay  # type: ignore[attr-defined]
    await alice.connect("127.0.0.1", port, bob.node_id)

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


def spenders(chain: RegtestChain, tx: Transaction) -> list[Transaction]:
    """Every transaction spending an output of ``tx``, once each (a sweep batching our anchor with
    another output spends two)."""
    found: dict[bytes, Transaction] = {}
    for index in range(len(tx.outputs)):
        spender = chain.spending_tx(OutPoint(tx.txid, index))
        if spender is not None:
            found.setdefault(spender.txid, spender)
    return list(found.values())


def claim_fees(chain: RegtestChain, tx: Transaction) -> int:
    """Fees of every transaction spending an output of ``tx`` (the claims on a commitment)."""
    return sum(fee_of(chain, spender) for spender in spenders(chain, tx))


def fees_to(chain: RegtestChain, node: Node, tx: Transaction) -> int:
    """Fees of the claims on ``tx`` that paid ``node``'s wallet (what its sweeps cost it)."""
    owned = {u.output.script_pubkey for u in node.wallet.utxos()}
    return sum(fee_of(chain, spender) for spender in spenders(chain, tx)
               if any(o.script_pubkey in owned for o in spender.outputs))


def swept_anchor(chain: RegtestChain, node: Node, channel_id: bytes, commitment: Transaction) -> Transaction | None:
    """The transaction that spent ``node``'s anchor on ``commitment`` (None while unspent)."""
    index = our_anchor(node._onchain.resolutions[channel_id].channel, commitment)
    assert index is not None, "no anchor of this node on the commitment"
    return chain.spending_tx(OutPoint(commitment.txid, index))


def anchor_alone_gain(chain: RegtestChain, node: Node, channel_id: bytes, commitment: Transaction) -> int:
    """What ``node``'s anchor, swept alone, brought its wallet: 330 sat less that sweep's fee."""
    sweep = swept_anchor(chain, node, channel_id, commitment)
    assert sweep is not None and len(sweep.inputs) == 1, "the anchor was not swept alone"
    return ANCHOR_SAT - fee_of(chain, sweep)


def commitment_fee(tx: Transaction) -> int:
    return FUNDING_SAT - sum(o.value_sat for o in tx.outputs)


async def wait_for(predicate: object, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.02)
