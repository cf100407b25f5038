"""The SQLite store: records round-trip, one transaction is all or nothing, even across kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lightspeed.errors import UsageError
from lightspeed.store import InvoiceRecord, PaymentRecord, SqliteStore, open_store


def test_records_round_trip_and_survive_reopening(tmp_path: Path) -> None:
    store = open_store(tmp_path, fsync=False)
    invoice = InvoiceRecord(b"h" * 32, "lnbcrt1...", b"p" * 32, b"s" * 32, 5_000, "paid", 5_000, b"c" * 32, 3)
    payment = PaymentRecord(b"q" * 32, 7_000, "pending", "lnbcrt1...", None, b"c" * 32, 4)
    with store.transaction():
        store.put_channel(b"c" * 32, b"\x02" * 33, b'{"state": 1}', ready=True)
        store.add_remote_commitment(b"c" * 32, 0, b"r0")
        store.add_remote_commitment(b"c" * 32, 1, b"r1")
        store.put_peer(b"\x02" * 33, "127.0.0.1", 9735)
        store.put_invoice(invoice)
        store.put_payment(payment)
        store.put_onion(b"c" * 32, 4, b"onion")
    store.close()
    again = SqliteStore(tmp_path / "node.sqlite")
    assert again._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    [channel] = again.channels()
    assert (channel.channel_id, channel.state, channel.ready) == (b"c" * 32, b'{"state": 1}', True)
    assert channel.remote_commitments == {0: b"r0", 1: b"r1"}
    assert again.peers() == {b"\x02" * 33: ("127.0.0.1", 9735)}
    assert again.invoice(b"h" * 32) == invoice and again.invoices() == [invoice]
    assert again.payment(b"q" * 32) == payment and again.payments() == [payment]
    assert again.onion(b"c" * 32, 4) == b"onion"
    with again.transaction():
        again.delete_onion(b"c" * 32, 4)
        again.close_channel(b"c" * 32, b"t" * 32)
    assert again.onion(b"c" * 32, 4) is None
    assert again.channels() == []  # a closed channel is not resumed


def test_writes_outside_a_transaction_are_refused() -> None:
    store = SqliteStore(":memory:")
    with pytest.raises(UsageError, match=r"inside store\.transaction"):
        store.put_peer(b"\x02" * 33, "127.0.0.1", 1)


def test_a_failed_transaction_leaves_nothing_behind() -> None:
    store = SqliteStore(":memory:")
    with pytest.raises(RuntimeError), store.transaction():
        store.put_peer(b"\x02" * 33, "127.0.0.1", 1)
        with store.transaction():  # nested: joins the outer one
            store.put_peer(b"\x03" * 33, "127.0.0.1", 2)
        raise RuntimeError("crash before commit")
    assert store.peers() == {}


_KILLED_MID_TRANSACTION = """
import os, signal, sys
from lightspeed.store import SqliteStore, PaymentRecord
store = SqliteStore(sys.argv[1])
with store.transaction():
    store.put_payment(PaymentRecord(b"a" * 32, 1, "succeeded"))
with store.transaction():
    store.put_payment(PaymentRecord(b"b" * 32, 2, "pending"))
    store.put_channel(b"c" * 32, b"d" * 33, b"half", ready=False)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_9_inside_a_transaction_keeps_the_committed_and_drops_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    done = subprocess.run([sys.executable, "-c", _KILLED_MID_TRANSACTION, str(path)], check=False,
                          env={**os.environ, "PYTHONPATH": "src"})
    assert done.returncode == -signal.SIGKILL
    store = SqliteStore(path)
    assert [p.payment_hash for p in store.payments()] == [b"a" * 32]
    assert store.channels() == []


def test_channel_secrets_derive_from_the_node_key_and_index() -> None:
    from lightspeed.node.keys import channel_seed, derive_channel_secrets

    seed = channel_seed(b"\x01" * 32)
    assert derive_channel_secrets(seed, 3) == derive_channel_secrets(seed, 3)
    assert derive_channel_secrets(seed, 3) != derive_channel_secrets(seed, 4)
    assert derive_channel_secrets(seed, 3) != derive_channel_secrets(channel_seed(b"\x02" * 32), 3)
