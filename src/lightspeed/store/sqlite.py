"""The SQLite store: WAL mode, one ``BEGIN IMMEDIATE`` transaction per state change.

``synchronous=FULL`` (the default) fsyncs the write-ahead log at every commit,
so a committed state survives a power cut, not only a process kill; ``fsync=False``
sets ``synchronous=OFF`` (commits reach the OS, not the disk: they survive a
``kill -9`` but not a power cut), for benchmarks. One connection per store; the
node uses it from its event loop thread only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lightspeed.errors import UsageError
from lightspeed.store.base import IncomingHtlcRecord, InvoiceRecord, PaymentRecord, StoredChannel

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS channels (
    channel_id BLOB PRIMARY KEY, peer_id BLOB NOT NULL, state BLOB NOT NULL,
    ready INTEGER NOT NULL, closing_txid BLOB, shutdown_script BLOB);
CREATE TABLE IF NOT EXISTS remote_commitments (
    channel_id BLOB NOT NULL, ctn INTEGER NOT NULL, record BLOB NOT NULL,
    PRIMARY KEY (channel_id, ctn));
CREATE TABLE IF NOT EXISTS peers (node_id BLOB PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS invoices (
    payment_hash BLOB PRIMARY KEY, invoice TEXT NOT NULL, preimage BLOB NOT NULL,
    payment_secret BLOB NOT NULL, amount_msat INTEGER, status TEXT NOT NULL,
    received_msat INTEGER NOT NULL, paid_channel_id BLOB, paid_htlc_id INTEGER);
CREATE TABLE IF NOT EXISTS payments (
    payment_hash BLOB PRIMARY KEY, amount_msat INTEGER NOT NULL, status TEXT NOT NULL,
    invoice TEXT NOT NULL, preimage BLOB, channel_id BLOB, htlc_id INTEGER, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS onions (
    channel_id BLOB NOT NULL, htlc_id INTEGER NOT NULL, onion BLOB NOT NULL,
    PRIMARY KEY (channel_id, htlc_id));
CREATE TABLE IF NOT EXISTS resolutions (channel_id BLOB PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS incoming_htlcs (
    channel_id BLOB NOT NULL, htlc_id INTEGER NOT NULL, payment_hash BLOB NOT NULL,
    shared_secret BLOB NOT NULL, out_channel_id BLOB, out_htlc_id INTEGER, preimage BLOB, failure BLOB,
    PRIMARY KEY (channel_id, htlc_id));
"""

_INVOICE_COLUMNS = ("payment_hash, invoice, preimage, payment_secret, amount_msat, status, received_msat, "
                    "paid_channel_id, paid_htlc_id")
_INCOMING_COLUMNS = ("channel_id, htlc_id, payment_hash, shared_secret, out_channel_id, out_htlc_id, preimage, "
                     "failure")
_PAYMENT_COLUMNS = "payment_hash, amount_msat, status, invoice, preimage, channel_id, htlc_id, reason"


class SqliteStore:
    """A :class:`~lightspeed.store.base.Store` in one SQLite file (``":memory:"`` for tests)."""

    def __init__(self, path: str | Path, fsync: bool = True) -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        if self.path != ":memory:":
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise UsageError(f"{self.path}: cannot switch the store to WAL mode (got {mode})")
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'OFF'}")
        self._depth = 0
        self.commits = 0  # durable commits so far (benchmarks count them per payment)
        with self.transaction():
            for statement in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                self._db.execute(statement)
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise UsageError(f"{self.path}: store schema version {row[0]}, this node reads {SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self._db.execute("ROLLBACK")
            raise
        self._depth = 0
        self._db.execute("COMMIT")
        self.commits += 1

    def _write(self, sql: str, args: tuple[object, ...]) -> None:
        if not self._depth:
            raise UsageError("store writes must happen inside store.transaction()")
        self._db.execute(sql, args)

    # -- channels ------------------------------------------------------------------------------

    def allocate_key_index(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'next_key_index'").fetchone()
        index = 0 if row is None else int(row[0])
        self._write("INSERT OR REPLACE INTO meta VALUES ('next_key_index', ?)", (str(index + 1),))
        return index

    def put_channel(self, channel_id: bytes, peer_id: bytes, state: bytes, ready: bool) -> None:
        self._write("INSERT INTO channels (channel_id, peer_id, state, ready) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (channel_id) DO UPDATE SET peer_id = excluded.peer_id, state = excluded.state, "
                    "ready = excluded.ready", (channel_id, peer_id, state, int(ready)))

    def add_remote_commitment(self, channel_id: bytes, ctn: int, record: bytes) -> None:
        # A retransmitted commitment_signed signs the same commitment again: same record.
        self._write("INSERT OR REPLACE INTO remote_commitments VALUES (?, ?, ?)", (channel_id, ctn, record))

    def put_shutdown(self, channel_id: bytes, script_pubkey: bytes) -> None:
        self._write("UPDATE channels SET shutdown_script = ? WHERE channel_id = ?", (script_pubkey, channel_id))

    def close_channel(self, channel_id: bytes, closing_txid: bytes) -> None:
        self._write("UPDATE channels SET closing_txid = ? WHERE channel_id = ?", (closing_txid, channel_id))

    def channels(self) -> list[StoredChannel]:
        """Open channels (not yet closed), each with its remote commitments."""
        result = []
        rows = self._db.execute("SELECT channel_id, peer_id, state, ready, shutdown_script FROM channels "
                                "WHERE closing_txid IS NULL ORDER BY rowid").fetchall()
        for channel_id, peer_id, state, ready, script in rows:
            remote = dict(self._db.execute("SELECT ctn, record FROM remote_commitments WHERE channel_id = ?",
                                           (channel_id,)).fetchall())
            result.append(StoredChannel(channel_id, peer_id, state, remote, bool(ready), script))
        return result

    # -- peers ---------------------------------------------------------------------------------

    def put_peer(self, node_id: bytes, host: str, port: int) -> None:
        self._write("INSERT OR REPLACE INTO peers VALUES (?, ?, ?)", (node_id, host, port))

    def peers(self) -> dict[bytes, tuple[str, int]]:
        return {n: (h, p) for n, h, p in self._db.execute("SELECT node_id, host, port FROM peers")}

    # -- invoices and payments -----------------------------------------------------------------

    def put_invoice(self, invoice: InvoiceRecord) -> None:
        self._write(f"INSERT OR REPLACE INTO invoices ({_INVOICE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (invoice.payment_hash, invoice.invoice, invoice.preimage, invoice.payment_secret,
                     invoice.amount_msat, invoice.status, invoice.received_msat, invoice.paid_channel_id,
                     invoice.paid_htlc_id))

    def invoice(self, payment_hash: bytes) -> InvoiceRecord | None:
        row = self._db.execute(f"SELECT {_INVOICE_COLUMNS} FROM invoices WHERE payment_hash = ?",
                               (payment_hash,)).fetchone()
        return None if row is None else InvoiceRecord(*row)

    def invoices(self) -> list[InvoiceRecord]:
        return [InvoiceRecord(*row) for row in
                self._db.execute(f"SELECT {_INVOICE_COLUMNS} FROM invoices ORDER BY rowid")]

    def put_payment(self, payment: PaymentRecord) -> None:
        self._write(f"INSERT OR REPLACE INTO payments ({_PAYMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (payment.payment_hash, payment.amount_msat, payment.status, payment.invoice,
                     payment.preimage, payment.channel_id, payment.htlc_id, payment.reason))

    def payment(self, payment_hash: bytes) -> PaymentRecord | None:
        row = self._db.execute(f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE payment_hash = ?",
                               (payment_hash,)).fetchone()
        return None if row is None else PaymentRecord(*row)

    def payments(self) -> list[PaymentRecord]:
        return [PaymentRecord(*row) for row in
                self._db.execute(f"SELECT {_PAYMENT_COLUMNS} FROM payments ORDER BY rowid")]

    # -- onions --------------------------------------------------------------------------------

    def put_onion(self, channel_id: bytes, htlc_id: int, onion: bytes) -> None:
        self._write("INSERT OR REPLACE INTO onions VALUES (?, ?, ?)", (channel_id, htlc_id, onion))

    def delete_onion(self, channel_id: bytes, htlc_id: int) -> None:
        self._write("DELETE FROM onions WHERE channel_id = ? AND htlc_id = ?", (channel_id, htlc_id))

    def onion(self, channel_id: bytes, htlc_id: int) -> bytes | None:
        row = self._db.execute("SELECT onion FROM onions WHERE channel_id = ? AND htlc_id = ?",
                               (channel_id, htlc_id)).fetchone()
        return None if row is None else bytes(row[0])

    # -- incoming HTLCs forwarded or resolved ------------------------------------------------------

    def put_incoming_htlc(self, record: IncomingHtlcRecord) -> None:
        self._write(f"INSERT OR REPLACE INTO incoming_htlcs ({_INCOMING_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (record.channel_id, record.htlc_id, record.payment_hash, record.shared_secret,
                     record.out_channel_id, record.out_htlc_id, record.preimage, record.failure))

    def delete_incoming_htlc(self, channel_id: bytes, htlc_id: int) -> None:
        self._write("DELETE FROM incoming_htlcs WHERE channel_id = ? AND htlc_id = ?", (channel_id, htlc_id))

    def incoming_htlcs(self) -> list[IncomingHtlcRecord]:
        rows = self._db.execute(f"SELECT {_INCOMING_COLUMNS} FROM incoming_htlcs ORDER BY rowid").fetchall()
        return [IncomingHtlcRecord(*row) for row in rows]

    # -- on-chain resolutions ------------------------------------------------------------------

    def channel(self, channel_id: bytes) -> StoredChannel | None:
        row = self._db.execute("SELECT channel_id, peer_id, state, ready, shutdown_script FROM channels "
                               "WHERE channel_id = ?", (channel_id,)).fetchone()
        if row is None:
            return None
        remote = dict(self._db.execute("SELECT ctn, record FROM remote_commitments WHERE channel_id = ?",
                                       (channel_id,)).fetchall())
        return StoredChannel(bytes(row[0]), bytes(row[1]), bytes(row[2]), remote, bool(row[3]), row[4])

    def put_resolution(self, channel_id: bytes, record: bytes) -> None:
        self._write("INSERT OR REPLACE INTO resolutions VALUES (?, ?)", (channel_id, record))

    def resolutions(self) -> dict[bytes, bytes]:
        return {bytes(c): bytes(r) for c, r in self._db.execute("SELECT channel_id, record FROM resolutions")}
