"""Real disk faults under the store: a full file system, a read-only store.

The full disk is a real one: the store lives on its own small tmpfs (we mount it;
tests run as root in CI) that a filler file exhausts, so SQLite gets ENOSPC from
the kernel and answers SQLITE_FULL. Where mounting is not permitted the fault
falls back to SQLite's own read-only mode (``PRAGMA query_only``), which fails
every write with SQLITE_READONLY, still a real error from the real database. The
read-only store at start is a tmpfs remounted read-only.

What must hold: the failing commit raises :class:`StoreUnavailable` (never a raw
``sqlite3.OperationalError``), leaves nothing half-written, and latches the store;
a node whose commit failed stops at once without sending what depended on it (its
peer is not sent an error, so no channel is failed), answers 503 to commands and
logs the fault once, without a traceback; restarted on the repaired disk it resumes
from the store and the payment caught in the middle completes, no money lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lightspeed.api.app import create_app
from lightspeed.api.handlers import ApiContext
from lightspeed.chain import RegtestChain
from lightspeed.channel.htlc_log import Side
from lightspeed.node.node import Node
from lightspeed.store import PaymentRecord, SqliteStore, StoreUnavailable, open_store
from tests.onchain_support import settle, wait_for

TOKEN = "f" * 32


class Disk:
    """A directory on its own tmpfs of ``size``: fill it, free it, remount it read-only."""

    def __init__(self, path: Path, size: str = "4m") -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                              capture_output=True, check=False)
        self.mounted = done.returncode == 0
        self._filler = path / "filler"
        self._faulted: SqliteStore | None = None

    def fault(self, store: SqliteStore) -> str:
        """Make the next write of ``store`` fail for real; returns which fault it is."""
        if not self.mounted:
            store._db.execute("PRAGMA query_only = 1")
            self._faulted = store
            return "read-only"
        # Start the write-ahead log afresh, so the next commit needs new space on the disk.
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, bytes(65536))
        except OSError:
            pass
        finally:
            os.close(fd)
        return "full"

    def repair(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._filler.unlink()

    def read_only(self) -> None:
        assert self.mounted
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)

    def remove(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    made = Disk(tmp_path / "disk")
    try:
        yield made
    finally:
        made.remove()


# -- the store alone -------------------------------------------------------------------------------

def test_a_failed_commit_raises_store_unavailable_keeps_nothing_and_latches(disk: Disk) -> None:
    store = open_store(disk.path, fsync=False)
    heard: list[str] = []
    store.add_failure_listener(lambda error: heard.append(str(error)))
    with store.transaction():
        store.put_payment(PaymentRecord(b"a" * 32, 1, "succeeded"))
    kind = disk.fault(store)
    expected = "database or disk is full" if kind == "full" else "attempt to write a readonly database"
    with pytest.raises(StoreUnavailable, match=f"store unavailable: {expected}"), store.transaction():
        store.put_payment(PaymentRecord(b"b" * 32, 2, "pending"))
        store.put_peer(b"\x02" * 33, "127.0.0.1", 9735)
    assert heard == [f"store unavailable: {expected}"]  # told once
    disk.repair()
    with pytest.raises(StoreUnavailable, match=expected), store.transaction():  # latched: memory may be ahead
        pass
    assert [p.payment_hash for p in store.payments()] == [b"a" * 32]  # reads still answer
    assert heard == [f"store unavailable: {expected}"]
    store.close()
    again = open_store(disk.path, fsync=False)  # a restart on the repaired disk: what was committed, only
    assert [p.payment_hash for p in again.payments()] == [b"a" * 32] and again.peers() == {}
    with again.transaction():
        again.put_payment(PaymentRecord(b"c" * 32, 3, "pending"))
    again.close()


def test_a_write_that_fails_inside_a_transaction_is_never_committed_even_if_the_caller_goes_on(
        tmp_path: Path) -> None:
    store = open_store(tmp_path, fsync=False)
    store._db.execute("PRAGMA query_only = 1")  # SQLITE_READONLY on the write itself, not at commit
    with pytest.raises(StoreUnavailable, match="readonly"), store.transaction():
        with contextlib.suppress(StoreUnavailable):  # a caller that swallows the write's error ...
            store.put_payment(PaymentRecord(b"b" * 32, 2, "pending"))
        store._db.execute("PRAGMA query_only = 0")
        with contextlib.suppress(StoreUnavailable):  # ... and writes on: refused, the store is latched
            store.put_peer(b"\x02" * 33, "127.0.0.1", 9735)
    assert store.payments() == [] and store.peers() == {} and not store._db.in_transaction
    store.close()


def test_a_store_on_a_read_only_file_system_is_refused_at_open_with_the_reason(tmp_path: Path, disk: Disk) -> None:
    if not disk.mounted:  # cannot mount here: a store file the process may not write is the same refusal
        pytest.fail("this test needs to mount a tmpfs (run as root, as CI does)")
    store = open_store(disk.path, fsync=False)
    store.close()
    disk.read_only()
    with pytest.raises(StoreUnavailable, match="Read-only file system"):
        open_store(disk.path)


# -- a node whose store fails in the middle of a payment -----------------------------------------

def test_a_node_whose_commit_fails_mid_payment_stops_cleanly_and_resumes_after_repair(
        tmp_path: Path, disk: Disk, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        chain = RegtestChain(":memory:")
        alice_key, alice_seed = b"\x51" * 32, b"alice faults seed 0001"
        alice = Node(alice_key, chain, alice_seed, store=open_store(disk.path, fsync=False))
        bob = Node(b"\x52" * 32, chain, b"bob faults seed 000002", store=open_store(tmp_path / "bob", fsync=False))
        chain.fund(alice.wallet.new_key().script_pubkey, 3_000_000)
        await alice.start()
        port = await bob.start()
        await alice.connect("127.0.0.1", port, bob.node_id)

        async def miner() -> None:
            while True:
                await asyncio.sleep(0.05)
                chain.mine(1)

        mining = asyncio.create_task(miner())
        cid = await asyncio.wait_for(alice.open_channel(bob.node_id, 1_000_000), 30)
        mining.cancel()
        first = bob.create_invoice(300_000_000, "before the fault")
        await asyncio.wait_for(alice.pay(first), 30)
        await settle(alice, bob, cid)
        invoice = alice.create_invoice(50_000_000, "paid while the disk fills")

        caplog.clear()
        caplog.set_level(logging.INFO)
        assert isinstance(alice.store, SqliteStore)
        kind = disk.fault(alice.store)
        paying = asyncio.create_task(bob.pay(invoice, timeout=60))
        await wait_for(lambda: alice.store_failure is not None)
        assert alice.store_failure in ("database or disk is full", "attempt to write a readonly database"), kind
        await wait_for(lambda: not alice.peer_ids())  # every connection closed, no error sent:
        assert cid in bob.channels and not bob.channel_is_closing(cid) and not bob.pending_sweeps()
        # Bob never got Alice's revoke_and_ack: the HTLC is in his view only.
        assert [h.amount_msat for h in bob.channels[cid].log.commitment(Side.REMOTE).htlcs] == [50_000_000]

        ctx = ApiContext(alice, listen="127.0.0.1:0")
        transport = httpx.ASGITransport(app=create_app(ctx, TOKEN))
        async with httpx.AsyncClient(transport=transport, base_url="http://node",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            for path, body in (("/v1/invoices", {"amount_msat": 1000}), ("/v1/payments", {"invoice": first.encode()}),
                               ("/v1/channels", {"node_id": bob.node_id.hex(), "amount_sat": 50_000})):
                answer = await client.post(path, json=body)
                assert answer.status_code == 503, (path, answer.text)
                assert answer.json()["error"]["reason"] == f"store unavailable: {alice.store_failure}"
            assert (await client.get("/v1/channels")).status_code == 200  # reads still answer
        with pytest.raises(StoreUnavailable):
            alice.create_invoice(1000, "the node is stopped")
        await asyncio.sleep(1.5)  # a second and more of timers: still one log line, no traceback
        gc.collect()
        store_lines = [r for r in caplog.records if "store unavailable" in r.getMessage()]
        assert [r.levelname for r in store_lines] == ["ERROR"], [r.getMessage() for r in store_lines]
        assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()
                    or "never retrieved" in r.getMessage()]

        # The operator frees the disk and restarts Alice: she resumes from her store.
        disk.repair()
        await alice.stop()
        alice.store.close()
        alice = Node(alice_key, chain, alice_seed, store=open_store(disk.path, fsync=False))
        assert alice.channels[cid].log.commitment(Side.LOCAL).htlcs == ()  # the lost step is not in the store
        await alice.start()
        preimage = await asyncio.wait_for(paying, 30)  # Bob retransmits, Alice settles: the payment completes
        assert preimage and invoice.payment_hash in alice.settled_invoices
        await settle(alice, bob, cid)
        mine_view = alice.channels[cid].log.commitment(Side.LOCAL)
        theirs = bob.channels[cid].log.commitment(Side.LOCAL)
        assert mine_view.to_remote_msat == theirs.to_local_msat == 300_000_000 - 50_000_000
        assert mine_view.to_local_msat == theirs.to_remote_msat
        assert alice.store.invoice(invoice.payment_hash).status == "paid"  # type: ignore[union-attr]
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())
