"""Read access to the regtest chain file by height, position and script hash (what an Electrum server asks).

Every transaction is indexed under the script hashes it touches (``history``: the outputs it
creates and the outputs it spends) and every output carries its script hash, so a wallet's
history, balance and unspent outputs are index lookups, never table scans. Several
statements that must agree run in one read transaction (:meth:`ChainIndex.snapshot`): in WAL
mode it sees one committed state of the file, whatever other processes write meanwhile.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from lightspeed.errors import ChainBusy, ChainError, ChainUnavailable, storage_fault


@contextmanager
def busy_errors(path: str) -> Iterator[None]:
    """SQLite errors as ChainError; a lock held past the busy timeout as ChainBusy (retry later); a full
    disk or a read-only file as ChainUnavailable (naming the file and the reason)."""
    try:
        yield
    except sqlite3.Error as exc:
        text = str(exc)
        fault = storage_fault(exc)
        if fault is not None:  # a full disk, a read-only file: the operator's to fix, then retry
            raise ChainUnavailable(path, fault) from None
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
            raise ChainBusy(f"{path}: the chain file is locked by another process ({text}); retry") from None
        raise ChainError(f"{path}: {text}") from None


@dataclass(frozen=True, slots=True)
class HistoryItem:
    """A transaction touching a script hash. ``height``: its block, or None in the mempool."""

    txid: bytes
    height: int | None
    position: int | None
    fee_sat: int | None
    unconfirmed_parent: bool  # in the mempool and spends an output of another mempool transaction


@dataclass(frozen=True, slots=True)
class OutputItem:
    txid: bytes
    vout: int
    value_sat: int
    height: int | None  # of the transaction that created it; None in the mempool
    position: int | None
    spent: bool  # by any transaction, mempool included
    spent_in_chain: bool  # by a confirmed transaction


@dataclass(frozen=True, slots=True)
class ChainCursor:
    """Where a follower of the file has read up to: the tip height, the last transaction row and
    the last history removal journalled (``history_removed``; 0: none, or a file without the journal)."""

    height: int
    tip_hash: bytes
    last_row: int
    last_removed: int = 0


class ChainIndex:
    """Queries over one connection to the chain file (the :class:`RegtestChain`'s own)."""

    def __init__(self, db: sqlite3.Connection, path: str) -> None:
        self._db, self._path = db, path
        self._depth = 0

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction: every query inside sees the same committed state."""
        if self._depth or self._db.in_transaction:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        with busy_errors(self._path):
            self._db.execute("BEGIN")
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            with busy_errors(self._path):
                self._db.execute("COMMIT")

    def _all(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]:
        with busy_errors(self._path):
            return self._db.execute(sql, args).fetchall()

    # -- blocks --------------------------------------------------------------------------------

    def cursor(self) -> ChainCursor:
        with self.snapshot():
            height, tip_hash = self._all("SELECT height, hash FROM blocks ORDER BY height DESC LIMIT 1")[0]
            last_row = self._all("SELECT MAX(rowid) FROM txs")[0][0]
            last_removed = self._all("SELECT MAX(seq) FROM history_removed")[0][0] if self._journal() else 0
        return ChainCursor(int(height), bytes(tip_hash), int(last_row or 0), int(last_removed or 0))

    def _journal(self) -> bool:
        """Whether the file has the removal journal (a file written by an older version has not)."""
        return bool(self._all("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'history_removed'"))

    def header(self, height: int) -> bytes | None:
        rows = self._all("SELECT header FROM blocks WHERE height = ?", (height,))
        return bytes(rows[0][0]) if rows else None

    def headers(self, start: int, count: int) -> list[bytes]:
        """Up to ``count`` consecutive headers from ``start`` (fewer past the tip)."""
        rows = self._all("SELECT header FROM blocks WHERE height >= ? AND height < ? ORDER BY height",
                         (start, start + count))
        return [bytes(r[0]) for r in rows]

    def block_hashes(self, count: int) -> list[bytes]:
        """The hashes of blocks 0 .. count-1 (a header checkpoint's merkle tree)."""
        rows = self._all("SELECT hash FROM blocks WHERE height < ? ORDER BY height", (count,))
        return [bytes(r[0]) for r in rows]

    def block_txids(self, height: int) -> list[bytes]:
        rows = self._all("SELECT txid FROM txs WHERE height = ? ORDER BY position", (height,))
        return [bytes(r[0]) for r in rows]

    # -- transactions --------------------------------------------------------------------------

    def raw_transaction(self, txid: bytes) -> tuple[bytes, int | None, int | None] | None:
        """(serialized transaction, block height or None, position or None), None if unknown."""
        rows = self._all("SELECT raw, height, position FROM txs WHERE txid = ?", (txid,))
        if not rows:
            return None
        raw, height, position = rows[0]
        return bytes(raw), height, position

    def mempool_fees(self) -> list[tuple[int, int]]:
        """(fee in sat, vsize) of every mempool transaction."""
        return [(int(fee), int(vsize)) for fee, vsize in
                self._all("SELECT fee, vsize FROM txs WHERE height IS NULL")]

    # -- script hashes -------------------------------------------------------------------------

    def history(self, scripthash: bytes) -> list[HistoryItem]:
        rows = self._all(
            "SELECT t.txid, t.height, t.position, t.fee, t.height IS NULL AND EXISTS ("
            "  SELECT 1 FROM outputs o JOIN txs p ON p.txid = o.txid WHERE o.spent_by = t.txid AND p.height IS NULL)"
            " FROM history h JOIN txs t ON t.txid = h.txid WHERE h.scripthash = ?", (scripthash,))
        return [HistoryItem(bytes(txid), height, position, fee, bool(parent))
                for txid, height, position, fee, parent in rows]

    def outputs(self, scripthash: bytes) -> list[OutputItem]:
        rows = self._all(
            "SELECT o.txid, o.vout, o.value, t.height, t.position, o.spent_by IS NOT NULL,"
            " s.height IS NOT NULL FROM outputs o JOIN txs t ON t.txid = o.txid"
            " LEFT JOIN txs s ON s.txid = o.spent_by WHERE o.scripthash = ?", (scripthash,))
        return [OutputItem(bytes(txid), vout, value, height, position, bool(spent), bool(in_chain))
                for txid, vout, value, height, position, spent, in_chain in rows]

    def touched_since(self, cursor: ChainCursor) -> set[bytes] | None:
        """Script hashes whose history changed after ``cursor``: new transactions, newly mined ones,
        removed ones (replaced, or dropped by a reorganisation). None: the follower is further
        behind than the removal journal goes, so any script hash may have changed."""
        rows = self._all(
            "SELECT h.scripthash FROM txs t JOIN history h ON h.txid = t.txid WHERE t.rowid > ? "
            "UNION SELECT h.scripthash FROM txs t JOIN history h ON h.txid = t.txid WHERE t.height > ?",
            (cursor.last_row, cursor.height))
        touched = {bytes(r[0]) for r in rows}
        if self._journal():
            oldest = self._all("SELECT MIN(seq) FROM history_removed")[0][0]
            if oldest is not None and oldest > cursor.last_removed + 1:
                return None  # trimmed past the cursor: what was removed meanwhile is unknown
            touched |= {bytes(r[0]) for r in self._all("SELECT scripthash FROM history_removed WHERE seq > ?",
                                                       (cursor.last_removed,))}
        return touched
