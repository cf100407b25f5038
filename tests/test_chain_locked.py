"""A chain file held locked by another process (issue 11, item 4).

Writes fail fast with ChainBusy (nothing written) instead of freezing the caller for 30 s;
reads go on; a funding transaction is retried until the lock goes, a rejected one is
reported; the wallet never counts the held inputs as both spent and unspent.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from lightspeed.bitcoin.script import p2wpkh_script
from lightspeed.bitcoin.tx import TxOut
from lightspeed.chain import RegtestChain, Wallet
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import ChainBusy
from lightspeed.node.broadcast import Broadcaster, BroadcastRejected
from lightspeed.node.node import Node

OTHER = p2wpkh_script(pubkey_from_privkey(b"\x44" * 32))
_LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
db.execute("ROLLBACK")
"""


@contextmanager
def locked_by_another_process(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holds the chain file's write lock until the block ends (or stdin closes)."""
    proc = subprocess.Popen([sys.executable, "-c", _LOCKER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        release(proc)


def release(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None and not proc.stdin.closed:
        proc.stdin.close()
    proc.wait(10)


class StallMeter:
    """The longest time the event loop went without running a 10 ms ticker."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        async def tick() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                self.longest = max(self.longest, now - last)
                last = now

        self._task = asyncio.create_task(tick())

    def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()


def test_writes_to_a_locked_file_fail_fast_with_chain_busy_and_reads_go_on(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    chain = RegtestChain(path)
    coin = chain.fund(OTHER, 100_000)
    tip = chain.tip()
    wallet = Wallet(b"a wallet seed for the lock", chain)
    chain.fund(wallet.new_key().script_pubkey, 500_000)
    tx = wallet.create_transaction([TxOut(100_000, OTHER)])
    with locked_by_another_process(path):
        started = time.monotonic()
        with pytest.raises(ChainBusy, match="locked by another process"):
            chain.broadcast(tx)
        assert time.monotonic() - started < 2.0  # the bounded busy timeout, not 30 s
        with pytest.raises(ChainBusy):
            chain.mine(1)
        assert chain.get_transaction(coin.txid) is not None  # WAL: readers never wait for the writer
        assert chain.tip()[0] == tip[0] + 1
        assert chain.get_transaction(tx.txid) is None  # nothing was written
        started = time.monotonic()
        # opening a set-up file only reads: a daemon starts meanwhile. Had it asked for the write
        # lock it would wait out this 30 s busy timeout (and fail): the bound tells the two apart
        # with room for a loaded machine (0.4 s against the default 0.5 s timeout did not)
        another = RegtestChain(path, busy_timeout_s=30)
        assert another.tip() == chain.tip() and time.monotonic() - started < 10
        another.close()
    assert chain.broadcast(tx) == tx.txid  # the same call, retried, succeeds
    chain.close()


def test_a_busy_broadcast_is_retried_in_the_background_and_the_wallet_counts_it_as_sent(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"

    async def scenario() -> None:
        chain = RegtestChain(path)
        wallet = Wallet(b"a wallet seed for the retry", chain)
        chain.fund(wallet.new_key().script_pubkey, 1_000_000)
        before = wallet.balance_sat()
        tasks: list[asyncio.Task[None]] = []
        reports: list[BroadcastRejected] = []
        broadcaster = Broadcaster(chain, wallet, lambda c: tasks.append(asyncio.ensure_future(c)), reports.append)
        tx = wallet.create_transaction([TxOut(600_000, OTHER)])
        change = sum(o.value_sat for o in tx.outputs if o.script_pubkey != OTHER)
        meter = StallMeter()
        meter.start()
        with locked_by_another_process(path) as locker:
            assert broadcaster.submit(tx, "a test payment") is False
            await asyncio.sleep(1.5)  # several retries while locked
            assert chain.get_transaction(tx.txid) is None
            assert broadcaster.pending == {tx.txid: tx}
            # Held: the input is spent, the change is an unconfirmed coin; never both.
            assert wallet.balance_sat() == change < before - 600_000
            assert wallet.balance_sat(min_confirmations=1) == 0
            with pytest.raises(Exception, match="insufficient funds"):
                wallet.create_transaction([TxOut(100_000, OTHER)])  # the held coins are not spendable twice
            release(locker)
            for _ in range(100):
                if chain.get_transaction(tx.txid) is not None:
                    break
                await asyncio.sleep(0.05)
        meter.stop()
        assert chain.get_transaction(tx.txid) == (tx, 0)
        assert broadcaster.pending == {} and reports == []
        assert wallet.balance_sat() == change
        chain.mine(1)
        assert wallet.balance_sat(min_confirmations=1) == change
        assert meter.longest < 1.5  # each try waits at most the busy timeout
        await asyncio.gather(*tasks)
        chain.close()

    asyncio.run(scenario())


def test_a_rejected_broadcast_is_reported_and_the_coins_count_again() -> None:
    async def scenario() -> None:
        chain = RegtestChain(":memory:")
        wallet = Wallet(b"a wallet seed for rejection", chain)
        chain.fund(wallet.new_key().script_pubkey, 1_000_000)
        reports: list[BroadcastRejected] = []
        broadcaster = Broadcaster(chain, wallet, lambda c: pytest.fail("no retry expected"), reports.append)
        first = wallet.create_transaction([TxOut(300_000, OTHER)])
        second = wallet.create_transaction([TxOut(200_000, OTHER)])  # the same coin
        chain.broadcast(first)
        assert broadcaster.submit(second, "funding of a test channel") is True
        assert [r.txid for r in reports] == [second.txid]
        # (the wallet signals replaceability: the same fee is a refused BIP 125 replacement)
        assert reports[0].what == "funding of a test channel" and "conflicts with" in reports[0].reason
        assert broadcaster.rejected[second.txid] == reports[0]
        assert wallet.balance_sat() == sum(o.value_sat for o in first.outputs if o.script_pubkey != OTHER)
        assert broadcaster.submit(first, "again") is True  # already in the mempool: done, not rejected
        assert len(reports) == 1

    asyncio.run(scenario())


@pytest.mark.slow
def test_open_channel_with_the_chain_file_locked_funds_the_channel_once_it_is_released(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"

    async def scenario() -> None:
        chain = RegtestChain(path)
        alice = Node(b"\x1a" * 32, chain, b"alice wallet seed, locked")
        bob = Node(b"\x1b" * 32, chain, b"bob wallet seed, locked!")
        chain.fund(alice.wallet.new_key().script_pubkey, 3_000_000)
        before = alice.wallet.balance_sat()
        await alice.connect("127.0.0.1", await bob.start(), bob.node_id)
        meter = StallMeter()
        meter.start()
        with locked_by_another_process(path) as locker:
            opening = asyncio.create_task(alice.open_channel(bob.node_id, 1_000_000))
            for _ in range(200):
                if alice.channels:
                    break
                await asyncio.sleep(0.02)
            (channel_id, channel), = alice.channels.items()
            funding_txid = channel.config.funding_txid
            await asyncio.sleep(1.0)
            assert chain.get_transaction(funding_txid) is None  # still locked
            held = alice.wallet.balance_sat()
            assert held + 1_000_000 < before  # the funding inputs are not counted in the wallet too
            assert held > before - 1_000_000 - 2_000  # the change is
            release(locker)
            for _ in range(200):
                if chain.get_transaction(funding_txid) is not None:
                    break
                await asyncio.sleep(0.05)
            assert chain.get_transaction(funding_txid) is not None
        chain.mine(3)
        assert await asyncio.wait_for(opening, 20) == channel_id
        meter.stop()
        assert meter.longest < 1.5
        assert alice.wallet.balance_sat() == held
        await alice.stop()
        await bob.stop()
        chain.close()

    asyncio.run(scenario())
