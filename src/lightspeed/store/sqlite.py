"""The SQLite store: WAL mode, one ``BEGIN IMMEDIATE`` transaction per state change.

``synchronous=FULL`` (the default) fsyncs the write-ahead log at every commit,
so a committed state survives a power cut, not only a process kill; ``fsync=False``
sets ``synchronous=OFF`` (commits reach the OS, not the disk: they survive a
``kill -9`` but not a power cut), for benchmarks. One connection per store; the
node uses it from its event loop thread only.

The file holds private state (channel records, invoice preimages): it is created
0600, and so are its ``-wal`` and ``-shm`` files (SQLite gives them the database
file's mode); an older store found readable by others is tightened on open.

Faults: any SQLite error on a write (``SQLITE_FULL``, ``SQLITE_READONLY``, an I/O
error) rolls the transaction back, latches the store as failed and raises
:class:`~lightspeed.store.base.StoreUnavailable`; see :mod:`lightspeed.store.base`.
A file that is not a store (not SQLite, damaged, another program's tables)
raises :class:`~lightspeed.store.base.StoreCorrupt` naming the reason.

Schema versions: 1 (the first), 2 (invoice expiry for pruning, the payment-secret
index, closed-channel summaries), 3 (private refunds' return paths), 4 (the payer's side of
async payments: which outgoing payments are async and whether their ``AsyncPaymentSucceeded``
was emitted, and the LSPs we registered with). An older store is upgraded in place on open.
The ``pending_broadcasts`` table (transactions still to reach the chain) and ``payment_parts``
(every HTLC of an outgoing payment still in flight) are created on open in any version: an
older Lightspeed ignores them (and tracks a payment by its last HTLC), so they need no new version;
so is ``refunds`` (BOLT 12 refunds we created), which an older Lightspeed never reads.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightspeed.errors import UsageError
from lightspeed.store.base import (
    AsyncPaymentRecord,
    ClosedChannel,
    CloseSummary,
    IncomingHtlcRecord,
    InvoiceRecord,
    PaymentRecord,
    RefundRecord,
    StoreCorrupt,
    StoredChannel,
    StoreUnavailable,
)

SCHEMA_VERSION = 4

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
    received_msat INTEGER NOT NULL, paid_channel_id BLOB, paid_htlc_id INTEGER, expires_at INTEGER);
CREATE TABLE IF NOT EXISTS payments (
    payment_hash BLOB PRIMARY KEY, amount_msat INTEGER NOT NULL, status TEXT NOT NULL,
    invoice TEXT NOT NULL, preimage BLOB, channel_id BLOB, htlc_id INTEGER, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS onions (
    channel_id BLOB NOT NULL, htlc_id INTEGER NOT NULL, onion BLOB NOT NULL,
    PRIMARY KEY (channel_id, htlc_id));
CREATE TABLE IF NOT EXISTS resolutions (channel_id BLOB PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS pending_broadcasts (txid BLOB PRIMARY KEY, tx BLOB NOT NULL, what TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS payment_parts (
    channel_id BLOB NOT NULL, htlc_id INTEGER NOT NULL, payment_hash BLOB NOT NULL,
    PRIMARY KEY (channel_id, htlc_id));
CREATE TABLE IF NOT EXISTS incoming_htlcs (
    channel_id BLOB NOT NULL, htlc_id INTEGER NOT NULL, payment_hash BLOB NOT NULL,
    shared_secret BLOB NOT NULL, out_channel_id BLOB, out_htlc_id INTEGER, preimage BLOB, failure BLOB,
    PRIMARY KEY (channel_id, htlc_id));
CREATE TABLE IF NOT EXISTS closed_channels (
    channel_id BLOB PRIMARY KEY, kind TEXT NOT NULL, funding_txid BLOB NOT NULL,
    funding_output_index INTEGER NOT NULL, capacity_sat INTEGER NOT NULL, initiator INTEGER NOT NULL,
    local_balance_msat INTEGER NOT NULL, remote_balance_msat INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS refunds (
    payer_id BLOB PRIMARY KEY, refund TEXT NOT NULL, path_id BLOB NOT NULL UNIQUE, amount_msat INTEGER NOT NULL,
    expires_at INTEGER, status TEXT NOT NULL, payment_hash BLOB, invoice TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS return_paths (payment_hash BLOB PRIMARY KEY, offer TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS return_refunds (
    refund_hash BLOB PRIMARY KEY, payment_hash BLOB NOT NULL, amount_msat INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS async_payments (
    payment_hash BLOB PRIMARY KEY, lsp_id BLOB NOT NULL, amount_msat INTEGER NOT NULL,
    started_at INTEGER NOT NULL, succeeded_at INTEGER);
CREATE TABLE IF NOT EXISTS lsp_registrations (
    lsp_id BLOB PRIMARY KEY, webhook_url TEXT, registered_at INTEGER NOT NULL)
"""

#: Statements that take a store of version N to N + 1 (the tables new in N + 1 come from _SCHEMA).
_UPGRADES: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE invoices ADD COLUMN expires_at INTEGER",),
    2: (),  # version 3 adds the return_paths and return_refunds tables (private refunds)
    3: (),  # version 4 adds async_payments and lsp_registrations (the payer's side of async payments)
}

_INDEXES = """
CREATE INDEX IF NOT EXISTS invoices_by_secret ON invoices (payment_secret);
CREATE INDEX IF NOT EXISTS unpaid_invoices_by_expiry ON invoices (expires_at) WHERE status = 'unpaid';
CREATE INDEX IF NOT EXISTS payments_by_status ON payments (status);
CREATE INDEX IF NOT EXISTS payment_parts_by_hash ON payment_parts (payment_hash);
CREATE INDEX IF NOT EXISTS return_refunds_by_payment ON return_refunds (payment_hash)
"""

_INVOICE_COLUMNS = ("payment_hash, invoice, preimage, payment_secret, amount_msat, status, received_msat, "
                    "paid_channel_id, paid_htlc_id, expires_at")
_INCOMING_COLUMNS = ("channel_id, htlc_id, payment_hash, shared_secret, out_channel_id, out_htlc_id, preimage, "
                     "failure")
_PAYMENT_COLUMNS = "payment_hash, amount_msat, status, invoice, preimage, channel_id, htlc_id, reason"
_REFUND_COLUMNS = "payer_id, refund, path_id, amount_msat, expires_at, status, payment_hash, invoice"
_CORRUPT = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _reason(exc: sqlite3.Error) -> str:
    return str(exc) or type(exc).__name__


def _is_corrupt(exc: sqlite3.Error) -> bool:
    return type(exc) is sqlite3.DatabaseError or getattr(exc, "sqlite_errorname", "") in _CORRUPT


def _create_private(path: Path) -> None:
    """Create the store file 0600 (SQLite gives -wal/-shm the same mode); tighten an older one."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as exc:
        raise StoreUnavailable(f"{path}: {exc.strerror or exc}") from None
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            if name.stat().st_mode & 0o077:
                os.chmod(name, 0o600)


class SqliteStore:
    """A :class:`~lightspeed.store.base.Store` in one SQLite file (``":memory:"`` for tests)."""

    def __init__(self, path: str | Path, fsync: bool = True) -> None:
        self.path = str(path)
        self._depth = 0
        self.commits = 0  # durable commits so far (benchmarks count them per payment)
        self.failure: str | None = None  # why the store stopped taking writes (latched; see the module doc)
        self._listeners: list[Callable[[StoreUnavailable], None]] = []
        name = Path(self.path).name
        if self.path != ":memory:":
            _create_private(Path(self.path))
        try:
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.path}: {_reason(exc)}") from None
        try:
            self._open(fsync)
        except sqlite3.Error as exc:
            self._db.close()
            if _is_corrupt(exc):
                raise StoreCorrupt(f"{name} is not a valid Lightspeed store: {_reason(exc)}") from None
            raise StoreUnavailable(f"{self.path}: {_reason(exc)}") from None
        except (StoreCorrupt, StoreUnavailable):
            self._db.close()
            raise

    def _open(self, fsync: bool) -> None:
        name = Path(self.path).name
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = None
        if "meta" in tables:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = None if row is None else row[0]
        if tables and version is None:
            raise StoreCorrupt(f"{name} is not a valid Lightspeed store: it holds other tables "
                               f"({', '.join(sorted(tables)[:5])}) and no schema version")
        if version is not None and (not str(version).isdigit() or not 1 <= int(version) <= SCHEMA_VERSION):
            raise StoreCorrupt(f"{name} is not a valid Lightspeed store: schema version {version!r} "
                               f"(this version of Lightspeed reads 1 to {SCHEMA_VERSION}; a newer one wrote it?)")
        if self.path != ":memory:":
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreUnavailable(f"{self.path}: cannot switch the store to WAL mode (got {mode})")
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'OFF'}")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(_SCHEMA):
                self._db.execute(statement)
            if version is None:
                self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            else:
                for step in range(int(version), SCHEMA_VERSION):
                    for statement in _UPGRADES.get(step, ()):
                        self._db.execute(statement)
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            for statement in _statements(_INDEXES):
                self._db.execute(statement)
            self._db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()

    # -- transactions and faults -----------------------------------------------------------------

    def add_failure_listener(self, listener: Callable[[StoreUnavailable], None]) -> None:
        self._listeners.append(listener)

    def _fail(self, exc: sqlite3.Error | str) -> StoreUnavailable:
        """Latch the store as failed (the first reason stays), tell the listeners once; the error to raise."""
        first = self.failure is None
        if first:
            self.failure = exc if isinstance(exc, str) else _reason(exc)
        assert self.failure is not None
        error = StoreUnavailable(self.failure)
        if first:
            for listener in self._listeners:
                listener(error)
        return error

    def _rollback(self) -> None:
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error as exc:
                self._fail(exc)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        if self.failure is not None:
            raise StoreUnavailable(self.failure)
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._rollback()
            raise self._fail(exc) from None
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self._rollback()
            raise
        self._depth = 0
        if self.failure is not None:  # a write failed and the caller went on: none of it may stay
            self._rollback()
            raise StoreUnavailable(self.failure)
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()  # a failed COMMIT leaves the transaction open
            raise self._fail(exc) from None
        self.commits += 1

    def _write(self, sql: str, args: tuple[object, ...]) -> sqlite3.Cursor:
        if not self._depth:
            raise UsageError("store writes must happen inside store.transaction()")
        if self.failure is not None:
            raise StoreUnavailable(self.failure)
        try:
            return self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise self._fail(exc) from None

    def _read(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]:
        """Rows of a query; a failing read is reported, not latched (nothing was changed)."""
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            if _is_corrupt(exc):
                raise StoreCorrupt(f"{Path(self.path).name} is not a valid Lightspeed store: {_reason(exc)}") from None
            raise StoreUnavailable(_reason(exc)) from None

    def _one(self, sql: str, args: tuple[object, ...] = ()) -> Any:
        rows = self._read(sql, args)
        return rows[0] if rows else None

    # -- channels ------------------------------------------------------------------------------

    def put_channel(self, channel_id: bytes, peer_id: bytes, state: bytes, ready: bool) -> None:
        self._write("INSERT INTO channels (channel_id, peer_id, state, ready) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (channel_id) DO UPDATE SET peer_id = excluded.peer_id, state = excluded.state, "
                    "ready = excluded.ready", (channel_id, peer_id, state, int(ready)))

    def add_remote_commitment(self, channel_id: bytes, ctn: int, record: bytes) -> None:
        # A retransmitted commitment_signed signs the same commitment again: same record.
        self._write("INSERT OR REPLACE INTO remote_commitments VALUES (?, ?, ?)", (channel_id, ctn, record))

    def put_shutdown(self, channel_id: bytes, script_pubkey: bytes) -> None:
        self._write("UPDATE channels SET shutdown_script = ? WHERE channel_id = ?", (script_pubkey, channel_id))

    def close_channel(self, channel_id: bytes, closing_txid: bytes, summary: CloseSummary | None = None) -> None:
        self._write("UPDATE channels SET closing_txid = ? WHERE channel_id = ?", (closing_txid, channel_id))
        if summary is not None:
            self._write("INSERT OR REPLACE INTO closed_channels VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (channel_id, summary.kind, summary.funding_txid, summary.funding_output_index,
                         summary.capacity_sat, int(summary.initiator), summary.local_balance_msat,
                         summary.remote_balance_msat))

    def _remote_commitments(self, channel_id: bytes) -> dict[int, bytes]:
        return dict(self._read("SELECT ctn, record FROM remote_commitments WHERE channel_id = ?", (channel_id,)))

    def channels(self) -> list[StoredChannel]:
        """Open channels (not yet closed), each with its remote commitments."""
        rows = self._read("SELECT channel_id, peer_id, state, ready, shutdown_script FROM channels "
                          "WHERE closing_txid IS NULL ORDER BY rowid")
        return [StoredChannel(channel_id, peer_id, state, self._remote_commitments(channel_id), bool(ready), script)
                for channel_id, peer_id, state, ready, script in rows]

    def closed_channels(self) -> list[ClosedChannel]:
        """Closed channels, oldest first, with what they were when they closed."""
        rows = self._read("SELECT c.channel_id, c.peer_id, c.closing_txid, s.kind, s.funding_txid, "
                          "s.funding_output_index, s.capacity_sat, s.initiator, s.local_balance_msat, "
                          "s.remote_balance_msat FROM channels c LEFT JOIN closed_channels s "
                          "ON s.channel_id = c.channel_id WHERE c.closing_txid IS NOT NULL ORDER BY c.rowid")
        closed = []
        for channel_id, peer_id, txid, kind, funding, index, capacity, initiator, local, remote in rows:
            summary = None if kind is None else CloseSummary(kind, bytes(funding), index, capacity, bool(initiator),
                                                             local, remote)
            closed.append(ClosedChannel(bytes(channel_id), bytes(peer_id),
                                        None if bytes(txid) == bytes(32) else bytes(txid), summary))
        return closed

    # -- peers ---------------------------------------------------------------------------------

    def put_peer(self, node_id: bytes, host: str, port: int) -> None:
        self._write("INSERT OR REPLACE INTO peers VALUES (?, ?, ?)", (node_id, host, port))

    def peers(self) -> dict[bytes, tuple[str, int]]:
        return {n: (h, p) for n, h, p in self._read("SELECT node_id, host, port FROM peers")}

    # -- invoices and payments -----------------------------------------------------------------

    def put_invoice(self, invoice: InvoiceRecord) -> None:
        # An update that does not know the expiry (None) keeps the one recorded.
        self._write(f"INSERT INTO invoices ({_INVOICE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (payment_hash) DO UPDATE SET invoice = excluded.invoice, "
                    "preimage = excluded.preimage, payment_secret = excluded.payment_secret, "
                    "amount_msat = excluded.amount_msat, status = excluded.status, "
                    "received_msat = excluded.received_msat, paid_channel_id = excluded.paid_channel_id, "
                    "paid_htlc_id = excluded.paid_htlc_id, "
                    "expires_at = COALESCE(excluded.expires_at, invoices.expires_at)",
                    (invoice.payment_hash, invoice.invoice, invoice.preimage, invoice.payment_secret,
                     invoice.amount_msat, invoice.status, invoice.received_msat, invoice.paid_channel_id,
                     invoice.paid_htlc_id, invoice.expires_at))

    def invoice(self, payment_hash: bytes) -> InvoiceRecord | None:
        row = self._one(f"SELECT {_INVOICE_COLUMNS} FROM invoices WHERE payment_hash = ?", (payment_hash,))
        return None if row is None else InvoiceRecord(*row)

    def invoice_by_secret(self, payment_secret: bytes) -> InvoiceRecord | None:
        row = self._one(f"SELECT {_INVOICE_COLUMNS} FROM invoices WHERE payment_secret = ? LIMIT 1",
                        (payment_secret,))
        return None if row is None else InvoiceRecord(*row)

    def invoices(self) -> list[InvoiceRecord]:
        return [InvoiceRecord(*row) for row in self._read(f"SELECT {_INVOICE_COLUMNS} FROM invoices ORDER BY rowid")]

    def paid_invoice_hashes(self) -> set[bytes]:
        return {bytes(h) for (h,) in self._read("SELECT payment_hash FROM invoices WHERE status = 'paid'")}

    def invoices_without_expiry(self) -> list[InvoiceRecord]:
        return [InvoiceRecord(*row) for row in self._read(
            f"SELECT {_INVOICE_COLUMNS} FROM invoices WHERE status = 'unpaid' AND expires_at IS NULL ORDER BY rowid")]

    def set_invoice_expiry(self, payment_hash: bytes, expires_at: int) -> None:
        self._write("UPDATE invoices SET expires_at = ? WHERE payment_hash = ?", (expires_at, payment_hash))

    def prune_invoices(self, expired_before: int, keep: Collection[bytes] = ()) -> int:
        doomed = [bytes(h) for (h,) in self._read(
            "SELECT payment_hash FROM invoices WHERE status = 'unpaid' AND expires_at < ?", (expired_before,))]
        kept = set(keep)
        doomed = [h for h in doomed if h not in kept]
        for payment_hash in doomed:
            self._write("DELETE FROM invoices WHERE payment_hash = ? AND status = 'unpaid'", (payment_hash,))
        return len(doomed)

    def put_payment(self, payment: PaymentRecord) -> None:
        self._write(f"INSERT OR REPLACE INTO payments ({_PAYMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (payment.payment_hash, payment.amount_msat, payment.status, payment.invoice,
                     payment.preimage, payment.channel_id, payment.htlc_id, payment.reason))

    def payment(self, payment_hash: bytes) -> PaymentRecord | None:
        row = self._one(f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE payment_hash = ?", (payment_hash,))
        return None if row is None else PaymentRecord(*row)

    def payments(self) -> list[PaymentRecord]:
        return [PaymentRecord(*row) for row in self._read(f"SELECT {_PAYMENT_COLUMNS} FROM payments ORDER BY rowid")]

    def pending_payments(self) -> list[PaymentRecord]:
        return [PaymentRecord(*row) for row in self._read(
            f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE status = 'pending' ORDER BY rowid")]

    def put_payment_part(self, payment_hash: bytes, channel_id: bytes, htlc_id: int) -> None:
        self._write("INSERT OR REPLACE INTO payment_parts VALUES (?, ?, ?)", (channel_id, htlc_id, payment_hash))

    def delete_payment_part(self, channel_id: bytes, htlc_id: int) -> None:
        self._write("DELETE FROM payment_parts WHERE channel_id = ? AND htlc_id = ?", (channel_id, htlc_id))

    def payment_parts(self, payment_hash: bytes) -> list[tuple[bytes, int]]:
        return [(bytes(c), int(h)) for c, h in self._read(
            "SELECT channel_id, htlc_id FROM payment_parts WHERE payment_hash = ? ORDER BY rowid", (payment_hash,))]

    # -- BOLT 12 refunds we created -------------------------------------------------------------

    def put_refund(self, refund: RefundRecord) -> None:
        self._write(f"INSERT OR REPLACE INTO refunds ({_REFUND_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (refund.payer_id, refund.refund, refund.path_id, refund.amount_msat, refund.expires_at,
                     refund.status, refund.payment_hash, refund.invoice))

    @staticmethod
    def _refund(row: Any) -> RefundRecord:
        payment_hash = None if row[6] is None else bytes(row[6])
        return RefundRecord(bytes(row[0]), row[1], bytes(row[2]), row[3], row[4], row[5], payment_hash, row[7])

    def refund(self, payer_id: bytes) -> RefundRecord | None:
        row = self._one(f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE payer_id = ?", (payer_id,))
        return None if row is None else self._refund(row)

    def refund_by_path_id(self, path_id: bytes) -> RefundRecord | None:
        row = self._one(f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE path_id = ?", (path_id,))
        return None if row is None else self._refund(row)

    def refunds(self) -> list[RefundRecord]:
        return [self._refund(row) for row in self._read(f"SELECT {_REFUND_COLUMNS} FROM refunds ORDER BY rowid")]

    # -- return paths received with payments (private refunds) ----------------------------------

    def put_return_path(self, payment_hash: bytes, offer: str) -> None:
        self._write("INSERT OR REPLACE INTO return_paths VALUES (?, ?)", (payment_hash, offer))

    def return_path(self, payment_hash: bytes) -> str | None:
        row = self._one("SELECT offer FROM return_paths WHERE payment_hash = ?", (payment_hash,))
        return None if row is None else str(row[0])

    def put_return_refund(self, payment_hash: bytes, refund_hash: bytes, amount_msat: int) -> None:
        self._write("INSERT INTO return_refunds VALUES (?, ?, ?)", (refund_hash, payment_hash, amount_msat))

    def return_refunds(self, payment_hash: bytes) -> list[tuple[bytes, int]]:
        return [(bytes(h), int(a)) for h, a in self._read(
            "SELECT refund_hash, amount_msat FROM return_refunds WHERE payment_hash = ? ORDER BY rowid",
            (payment_hash,))]

    # -- async payments we made, LSPs we registered with (node.async_runtime, client side) -------

    def put_async_payment(self, payment: AsyncPaymentRecord) -> None:
        self._write("INSERT OR REPLACE INTO async_payments VALUES (?, ?, ?, ?, ?)",
                    (payment.payment_hash, payment.lsp_id, payment.amount_msat, payment.started_at,
                     payment.succeeded_at))

    def async_payment(self, payment_hash: bytes) -> AsyncPaymentRecord | None:
        row = self._one("SELECT payment_hash, lsp_id, amount_msat, started_at, succeeded_at FROM async_payments "
                        "WHERE payment_hash = ?", (payment_hash,))
        return None if row is None else AsyncPaymentRecord(bytes(row[0]), bytes(row[1]), row[2], row[3], row[4])

    def mark_async_payment_succeeded(self, payment_hash: bytes, now: int) -> bool:
        # One UPDATE that matches only a row not yet marked: True exactly once per payment.
        cursor = self._write("UPDATE async_payments SET succeeded_at = ? WHERE payment_hash = ? "
                             "AND succeeded_at IS NULL", (now, payment_hash))
        return cursor.rowcount == 1

    def put_lsp_registration(self, lsp_id: bytes, webhook_url: str | None, registered_at: int) -> None:
        self._write("INSERT OR REPLACE INTO lsp_registrations VALUES (?, ?, ?)", (lsp_id, webhook_url, registered_at))

    def lsp_registrations(self) -> list[tuple[bytes, str | None, int]]:
        return [(bytes(n), w, int(t)) for n, w, t in self._read(
            "SELECT lsp_id, webhook_url, registered_at FROM lsp_registrations ORDER BY registered_at, rowid")]

    # -- onions --------------------------------------------------------------------------------

    def put_onion(self, channel_id: bytes, htlc_id: int, onion: bytes) -> None:
        self._write("INSERT OR REPLACE INTO onions VALUES (?, ?, ?)", (channel_id, htlc_id, onion))

    def delete_onion(self, channel_id: bytes, htlc_id: int) -> None:
        self._write("DELETE FROM onions WHERE channel_id = ? AND htlc_id = ?", (channel_id, htlc_id))

    def onion(self, channel_id: bytes, htlc_id: int) -> bytes | None:
        row = self._one("SELECT onion FROM onions WHERE channel_id = ? AND htlc_id = ?", (channel_id, htlc_id))
        return None if row is None else bytes(row[0])

    # -- incoming HTLCs forwarded or resolved ------------------------------------------------------

    def put_incoming_htlc(self, record: IncomingHtlcRecord) -> None:
        self._write(f"INSERT OR REPLACE INTO incoming_htlcs ({_INCOMING_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (record.channel_id, record.htlc_id, record.payment_hash, record.shared_secret,
                     record.out_channel_id, record.out_htlc_id, record.preimage, record.failure))

    def delete_incoming_htlc(self, channel_id: bytes, htlc_id: int) -> None:
        self._write("DELETE FROM incoming_htlcs WHERE channel_id = ? AND htlc_id = ?", (channel_id, htlc_id))

    def incoming_htlcs(self) -> list[IncomingHtlcRecord]:
        rows = self._read(f"SELECT {_INCOMING_COLUMNS} FROM incoming_htlcs ORDER BY rowid")
        return [IncomingHtlcRecord(*row) for row in rows]

    # -- on-chain resolutions ------------------------------------------------------------------

    def channel(self, channel_id: bytes) -> StoredChannel | None:
        row = self._one("SELECT channel_id, peer_id, state, ready, shutdown_script FROM channels "
                        "WHERE channel_id = ?", (channel_id,))
        if row is None:
            return None
        return StoredChannel(bytes(row[0]), bytes(row[1]), bytes(row[2]), self._remote_commitments(channel_id),
                             bool(row[3]), row[4])

    def put_resolution(self, channel_id: bytes, record: bytes) -> None:
        self._write("INSERT OR REPLACE INTO resolutions VALUES (?, ?)", (channel_id, record))

    def resolutions(self) -> dict[bytes, bytes]:
        return {bytes(c): bytes(r) for c, r in self._read("SELECT channel_id, record FROM resolutions")}

    # -- transactions still to broadcast (node.broadcast) ---------------------------------------

    def put_broadcast(self, txid: bytes, tx: bytes, what: str) -> None:
        self._write("INSERT OR REPLACE INTO pending_broadcasts VALUES (?, ?, ?)", (txid, tx, what))

    def delete_broadcast(self, txid: bytes) -> None:
        self._write("DELETE FROM pending_broadcasts WHERE txid = ?", (txid,))

    def broadcasts(self) -> list[tuple[bytes, bytes, str]]:
        return [(bytes(t), bytes(x), str(w)) for t, x, w in self._read("SELECT txid, tx, what FROM pending_broadcasts")]
