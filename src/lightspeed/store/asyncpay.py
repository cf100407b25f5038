"""SQLite persistence of asynchronous payments: held HTLCs, the onion-message mailbox,
client registrations and the webhook outbox.

It lives beside the node's store (same file or its own; tables are created on open, so an
older Lightspeed simply never reads them) with its own connection, WAL and one transaction
per change, so every record is durable before the node acts on it: an HTLC is recorded as
held before the LSP stops forwarding it, a mailbox message before it is acknowledged, a
notification before delivery starts. Restarting reloads all of it.

The mailbox is bounded per client (count and bytes) and each message expires: an LSP must
not become free storage for anyone who can reach it with onion messages.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lightspeed.asyncpay.policy import HeldHtlc, HoldRegistration, HoldState
from lightspeed.errors import UsageError
from lightspeed.store.base import StoreUnavailable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS async_held_htlcs (
    htlc_key TEXT PRIMARY KEY, client_id BLOB NOT NULL, payment_hash BLOB NOT NULL,
    amount_msat INTEGER NOT NULL, cltv_expiry INTEGER NOT NULL, held_at INTEGER NOT NULL,
    release_tag BLOB NOT NULL, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS async_hold_registrations (
    release_tag BLOB PRIMARY KEY, client_id BLOB NOT NULL, payment_hashes BLOB NOT NULL,
    amount_msat INTEGER NOT NULL, registered_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS async_mailbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, client_id BLOB NOT NULL, message BLOB NOT NULL,
    received_at INTEGER NOT NULL, expires_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS async_mailbox_by_client ON async_mailbox (client_id, id);
CREATE TABLE IF NOT EXISTS async_registrations (
    node_id BLOB PRIMARY KEY, webhook_url TEXT, registered_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS async_webhook_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, client_id BLOB NOT NULL, url TEXT NOT NULL,
    body TEXT NOT NULL, attempts INTEGER NOT NULL, next_attempt_at REAL NOT NULL,
    created_at INTEGER NOT NULL, state TEXT NOT NULL, last_error TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS async_static_invoices (
    slot BLOB PRIMARY KEY, client_id BLOB NOT NULL, invoice BLOB NOT NULL, stored_at INTEGER NOT NULL)
"""

#: Static invoices one client may have its LSP serve (one per offer; a replacement keeps its slot).
MAX_STATIC_INVOICES_PER_CLIENT = 16


@dataclass(frozen=True)
class MailboxLimits:
    """Per-client bounds of the onion-message mailbox an LSP keeps for offline clients."""

    max_messages: int = 32
    max_bytes: int = 64 * 1024
    ttl_seconds: int = 7 * 24 * 3600


@dataclass(frozen=True)
class MailboxMessage:
    id: int
    client_id: bytes
    message: bytes
    received_at: int
    expires_at: int


@dataclass(frozen=True)
class Registration:
    node_id: bytes
    webhook_url: str | None
    registered_at: int


@dataclass(frozen=True)
class OutboxItem:
    """A webhook notification waiting for (re)delivery. ``state``: pending, delivered, abandoned."""

    id: int
    client_id: bytes
    url: str
    body: str
    attempts: int
    next_attempt_at: float
    created_at: int
    state: str
    last_error: str


#: LSPS5: the webhook URL is at most 1024 ASCII characters.
MAX_WEBHOOK_URL_LENGTH = 1024


def check_webhook_url(url: str) -> None:
    """UsageError naming the problem: not http(s), too long, not ASCII, or no host.

    LSPS5 asks for HTTPS; plain http is accepted for loopback receivers (tests, local proxies)."""
    if len(url) > MAX_WEBHOOK_URL_LENGTH:
        raise UsageError(f"webhook url is {len(url)} characters, at most {MAX_WEBHOOK_URL_LENGTH}")
    if not url.isascii():
        raise UsageError("webhook url must be ASCII")
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0] if rest else ""
    if scheme not in ("https", "http") or not host:
        raise UsageError(f"webhook url {url!r} is not an http(s) URL with a host")
    if scheme == "http" and host not in ("127.0.0.1", "localhost", "[::1]"):
        raise UsageError("webhook url must be https (plain http only to a loopback receiver)")


class AsyncPayStore:
    """The async-payment tables in one SQLite file (``":memory:"`` for tests that never reopen)."""

    def __init__(self, path: str | Path, mailbox_limits: MailboxLimits | None = None) -> None:
        self.mailbox_limits = mailbox_limits or MailboxLimits()
        if str(path) != ":memory:":
            # Webhook URLs often embed a push token: private to the node, like its main store.
            try:
                os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            except OSError as exc:
                raise StoreUnavailable(f"{path}: {exc.strerror or exc}") from None
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"async-payment store: {exc}") from None

    # Held HTLCs -------------------------------------------------------------------------
    def put_held(self, record: HeldHtlc) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO async_held_htlcs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (record.htlc_key, record.client_id, record.payment_hash, record.amount_msat,
                        record.cltv_expiry, record.held_at, record.release_tag, record.state.value))

    def delete_held(self, htlc_key: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM async_held_htlcs WHERE htlc_key = ?", (htlc_key,))

    def held_htlcs(self) -> list[HeldHtlc]:
        rows = self._db.execute("SELECT htlc_key, client_id, payment_hash, amount_msat, cltv_expiry, held_at, "
                                "release_tag, state FROM async_held_htlcs ORDER BY held_at, htlc_key").fetchall()
        return [HeldHtlc(r[0], bytes(r[1]), bytes(r[2]), r[3], r[4], r[5], bytes(r[6]), HoldState(r[7]))
                for r in rows]

    def put_registration(self, r: HoldRegistration) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO async_hold_registrations VALUES (?, ?, ?, ?, ?)",
                       (r.release_tag, r.client_id, b"".join(r.payment_hashes), r.amount_msat, r.registered_at))

    def delete_registration(self, release_tag: bytes) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM async_hold_registrations WHERE release_tag = ?", (release_tag,))

    def hold_registrations(self) -> list[HoldRegistration]:
        rows = self._db.execute("SELECT release_tag, client_id, payment_hashes, amount_msat, registered_at "
                                "FROM async_hold_registrations ORDER BY registered_at, release_tag").fetchall()
        return [HoldRegistration(bytes(r[1]), tuple(bytes(r[2][i : i + 32]) for i in range(0, len(r[2]), 32)),
                                 bytes(r[0]), r[3], r[4]) for r in rows]

    # Static invoices (draft flow: served for an offline client) ---------------------------
    def put_static_invoice(self, slot: bytes, client_id: bytes, invoice: bytes, now: int) -> bool:
        """Keep (or replace) the client's static invoice in ``slot``. False: the slot is another
        client's, or the client already has :data:`MAX_STATIC_INVOICES_PER_CLIENT` (nothing changes)."""
        with self._tx() as db:
            row = db.execute("SELECT client_id FROM async_static_invoices WHERE slot = ?", (slot,)).fetchone()
            if row is not None and bytes(row[0]) != client_id:
                return False
            if row is None:
                (count,) = db.execute("SELECT COUNT(*) FROM async_static_invoices WHERE client_id = ?",
                                      (client_id,)).fetchone()
                if count >= MAX_STATIC_INVOICES_PER_CLIENT:
                    return False
            db.execute("INSERT OR REPLACE INTO async_static_invoices VALUES (?, ?, ?, ?)",
                       (slot, client_id, invoice, now))
        return True

    def static_invoice(self, slot: bytes) -> tuple[bytes, bytes] | None:
        """(client id, static invoice bytes) kept in ``slot``, or None."""
        row = self._db.execute("SELECT client_id, invoice FROM async_static_invoices WHERE slot = ?",
                               (slot,)).fetchone()
        return (bytes(row[0]), bytes(row[1])) if row else None

    # Mailbox ----------------------------------------------------------------------------
    def mailbox_put(self, client_id: bytes, message: bytes, now: int) -> int | None:
        """Keep ``message`` for ``client_id``; None (nothing stored) when its mailbox is full."""
        limits = self.mailbox_limits
        if len(message) > limits.max_bytes:
            return None
        with self._tx() as db:
            db.execute("DELETE FROM async_mailbox WHERE expires_at <= ?", (now,))
            count, size = db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(message)), 0) FROM async_mailbox "
                                     "WHERE client_id = ?", (client_id,)).fetchone()
            if count + 1 > limits.max_messages or size + len(message) > limits.max_bytes:
                return None
            cursor = db.execute("INSERT INTO async_mailbox (client_id, message, received_at, expires_at) "
                                "VALUES (?, ?, ?, ?)", (client_id, message, now, now + limits.ttl_seconds))
            return cursor.lastrowid

    def mailbox_peek(self, client_id: bytes, now: int) -> list[MailboxMessage]:
        """The client's unexpired messages, oldest first (they stay until :meth:`mailbox_ack`)."""
        rows = self._db.execute("SELECT id, client_id, message, received_at, expires_at FROM async_mailbox "
                                "WHERE client_id = ? AND expires_at > ? ORDER BY id", (client_id, now)).fetchall()
        return [MailboxMessage(r[0], bytes(r[1]), bytes(r[2]), r[3], r[4]) for r in rows]

    def mailbox_ack(self, ids: list[int]) -> None:
        """Forget delivered messages (after they were sent to the client, not before)."""
        with self._tx() as db:
            db.executemany("DELETE FROM async_mailbox WHERE id = ?", [(i,) for i in ids])

    def mailbox_prune(self, now: int) -> int:
        with self._tx() as db:
            return db.execute("DELETE FROM async_mailbox WHERE expires_at <= ?", (now,)).rowcount

    # Registrations ----------------------------------------------------------------------
    def register(self, node_id: bytes, webhook_url: str | None, now: int) -> Registration:
        if len(node_id) != 33:
            raise UsageError("node_id is a 33-byte compressed public key")
        if webhook_url is not None:
            check_webhook_url(webhook_url)
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO async_registrations VALUES (?, ?, ?)", (node_id, webhook_url, now))
        return Registration(node_id, webhook_url, now)

    def unregister(self, node_id: bytes) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM async_registrations WHERE node_id = ?", (node_id,))

    def registration(self, node_id: bytes) -> Registration | None:
        row = self._db.execute("SELECT node_id, webhook_url, registered_at FROM async_registrations "
                               "WHERE node_id = ?", (node_id,)).fetchone()
        return Registration(bytes(row[0]), row[1], row[2]) if row else None

    def registrations(self) -> list[Registration]:
        rows = self._db.execute("SELECT node_id, webhook_url, registered_at FROM async_registrations "
                                "ORDER BY registered_at, node_id").fetchall()
        return [Registration(bytes(r[0]), r[1], r[2]) for r in rows]

    # Webhook outbox ---------------------------------------------------------------------
    def outbox_add(self, client_id: bytes, url: str, body: str, now: int) -> int:
        with self._tx() as db:
            cursor = db.execute("INSERT INTO async_webhook_outbox (client_id, url, body, attempts, next_attempt_at, "
                                "created_at, state, last_error) VALUES (?, ?, ?, 0, ?, ?, 'pending', '')",
                                (client_id, url, body, float(now), now))
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def outbox_pending(self) -> list[OutboxItem]:
        rows = self._db.execute("SELECT id, client_id, url, body, attempts, next_attempt_at, created_at, state, "
                                "last_error FROM async_webhook_outbox WHERE state = 'pending' "
                                "ORDER BY next_attempt_at, id").fetchall()
        return [OutboxItem(r[0], bytes(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8]) for r in rows]

    def outbox_item(self, item_id: int) -> OutboxItem | None:
        r = self._db.execute("SELECT id, client_id, url, body, attempts, next_attempt_at, created_at, state, "
                             "last_error FROM async_webhook_outbox WHERE id = ?", (item_id,)).fetchone()
        return OutboxItem(r[0], bytes(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8]) if r else None

    def outbox_update(self, item_id: int, *, attempts: int, next_attempt_at: float, state: str,
                      last_error: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE async_webhook_outbox SET attempts = ?, next_attempt_at = ?, state = ?, last_error = ? "
                       "WHERE id = ?", (attempts, next_attempt_at, state, last_error, item_id))
