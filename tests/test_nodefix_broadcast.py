"""Fundings and mutual closes go through the Broadcaster: retried while the chain file is
locked, committed to the store before the first try, rebroadcast after a restart.

* A mutual close whose first broadcast finds the chain file locked by another process
  still completes, and its transaction confirms once the lock goes.
* A funding that could not be broadcast (chain locked) survives a ``kill -9`` of the node:
  restarted from its datadir, the node broadcasts it and the channel becomes ready.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from lightspeed.bitcoin.tx import Transaction
from lightspeed.chain import RegtestChain, Wallet
from lightspeed.node.node import Node
from lightspeed.store import SqliteStore, open_store
from tests.support.network import node_key, until, with_miner
from tests.test_chain_locked import locked_by_another_process, release

SAT = 1_000_000


def test_mutual_close_whose_first_broadcast_finds_the_chain_locked_confirms_after(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"

    async def scenario() -> None:
        chain = RegtestChain(path)
        alice = Node(node_key(70), chain, b"nodefix close alice", store=SqliteStore(tmp_path / "alice.sqlite"))
        bob = Node(node_key(71), chain, b"nodefix close bob", store=SqliteStore(tmp_path / "bob.sqlite"))
        chain.fund(alice.wallet.new_key().script_pubkey, 2 * SAT)
        await alice.connect("127.0.0.1", await bob.start(), bob.node_id)
        cids: list[bytes] = []

        async def open_one() -> None:
            cids.append(await alice.open_channel(bob.node_id, SAT))

        await with_miner(chain, open_one)
        (cid,) = cids
        await until(lambda: bob.channel_is_ready(cid))
        try:
            with locked_by_another_process(path) as locker:
                closing = await alice.close_channel(cid, timeout=10)
                await asyncio.sleep(0.5)  # several retries while the file is locked
                assert chain.get_transaction(closing.txid) is None
                assert closing.txid in alice.broadcaster.pending
                assert [t for t, _, _ in alice.store.broadcasts()] == [closing.txid]  # survives a restart
                assert cid not in alice.channels and alice.store.channel(cid) is not None  # closed, committed
                release(locker)
                await until(lambda: chain.get_transaction(closing.txid) is not None)
            chain.mine(1)
            found = chain.get_transaction(closing.txid)
            assert found is not None and found[1] == 1
            await until(lambda: not alice.broadcaster.pending and not bob.broadcaster.pending)
            assert alice.store.broadcasts() == [] and bob.store.broadcasts() == []
            assert alice.broadcaster.rejected == {} and bob.broadcaster.rejected == {}
        finally:
            await alice.stop()
            await bob.stop()
            chain.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


_ALICE = """
import asyncio, sys
from lightspeed.chain import RegtestChain
from lightspeed.node.node import Node
from lightspeed.store import open_store

async def main() -> None:
    chain_path, key, seed, datadir, port, bob_id = sys.argv[1:]
    alice = Node(bytes.fromhex(key), RegtestChain(chain_path), seed.encode(), store=open_store(datadir))
    await alice.start()
    await alice.connect("127.0.0.1", int(port), bytes.fromhex(bob_id))
    asyncio.create_task(alice.open_channel(bytes.fromhex(bob_id), 1_000_000))
    while not alice.broadcaster.pending:  # funding_signed came, the first broadcast found the chain locked
        await asyncio.sleep(0.01)
    (txid,) = alice.broadcaster.pending
    print(txid.hex(), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_funding_not_broadcast_when_killed_is_broadcast_after_the_restart(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    seed = "nodefix killed funder"

    async def scenario() -> None:
        chain = RegtestChain(path)
        chain.fund(Wallet(seed.encode(), chain).new_key().script_pubkey, 2 * SAT)
        bob = Node(node_key(73), chain, b"nodefix killed bob", store=SqliteStore(tmp_path / "bob.sqlite"))
        port = await bob.start()
        alice: Node | None = None
        try:
            with locked_by_another_process(path) as locker:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", _ALICE, str(path), node_key(72).hex(), seed, str(tmp_path / "alice"),
                    str(port), bob.node_id.hex(), stdout=asyncio.subprocess.PIPE, env=os.environ.copy())
                try:
                    assert proc.stdout is not None
                    line = await asyncio.wait_for(proc.stdout.readline(), 30)
                    funding_txid = bytes.fromhex(line.decode().strip())
                finally:
                    proc.send_signal(signal.SIGKILL)  # in the window: signed by the peer, not broadcast
                    await proc.wait()
                release(locker)
            assert chain.get_transaction(funding_txid) is None
            (cid,) = bob.channels  # Bob signed the funding: he waits for it
            assert bob.channels[cid].config.funding_txid == funding_txid

            alice = Node(node_key(72), chain, seed.encode(), store=open_store(tmp_path / "alice"))
            await alice.start()
            await until(lambda: chain.get_transaction(funding_txid) is not None)
            found = chain.get_transaction(funding_txid)
            assert found is not None and isinstance(found[0], Transaction)
            chain.mine(3)
            await until(lambda: alice is not None and alice.channel_is_ready(cid) and bob.channel_is_ready(cid),
                        timeout=20)
            assert alice.store.broadcasts() == []
        finally:
            if alice is not None:
                await alice.stop()
            await bob.stop()
            chain.close()

    asyncio.run(asyncio.wait_for(scenario(), 90))
