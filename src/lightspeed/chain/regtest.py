"""The embedded regtest chain: real blocks, real transactions, real validation, kept in SQLite.

An honest stand-in for bitcoind's regtest where none can be installed. The genesis block is
Bitcoin Core's regtest genesis; every later block has a real header (previous hash, merkle
root of the txids, time, regtest bits, a nonce meeting the target: :mod:`.blocks`), so light
clients such as Electrum accept it. Coinbases pay the subsidy plus fees, and every
transaction is validated before it enters the mempool: inputs exist and are unspent (mempool
included), values are in range and conserved, coinbase outputs mature after 100 blocks,
absolute locktimes (nLockTime) and BIP 68 relative locktimes hold against block height and
time, and every witness is executed by :mod:`lightspeed.bitcoin.interpreter`. Blocks come
from :meth:`RegtestChain.mine`, or from elsewhere (:meth:`RegtestChain.submit_block`, checked
as a node checks a block), and :meth:`RegtestChain.trim_blocks` reorganises back to a height
(:mod:`.submit`).

Sharing between processes: every state change runs in one ``BEGIN IMMEDIATE`` SQLite
transaction on a WAL database, so several daemons on one machine can point at the same file
and see one chain (SQLite's file locks serialize writers; readers never block). The busy
timeout is short and bounded: a file held locked by another process makes a write fail with
:class:`~lightspeed.errors.ChainBusy` after ``busy_timeout_s`` instead of freezing the
caller's event loop; the caller retries (nothing was written).

Block times: ``max(previous + 1, now)`` from the injected ``clock`` (wall-clock time by
default, as wallets judge a tip's freshness by it); ``clock=None`` gives deterministic times,
600 s apart, for tests. The file also indexes every output and transaction by script hash
(SHA-256 of the output script) for the Electrum server (:mod:`.index`).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightspeed.bitcoin.interpreter import (
    LOCKTIME_THRESHOLD,
    SEQUENCE_DISABLE_FLAG,
    SEQUENCE_MASK,
    SEQUENCE_TYPE_FLAG,
    ScriptError,
    verify_input,
)
from lightspeed.bitcoin.script import p2pkh_script_code, p2wpkh_script
from lightspeed.bitcoin.sighash import SIGHASH_ALL, bip143_sighash, sign_input
from lightspeed.bitcoin.tx import MAX_MONEY_SAT, OutPoint, Transaction, TxIn, TxOut
from lightspeed.chain import submit
from lightspeed.chain.blocks import (
    GENESIS_COINBASE,
    GENESIS_HASH,
    GENESIS_HEADER,
    NULL_OUTPOINT,
    BlockHeader,
    coinbase,
    merkle_root,
    mine_header,
)
from lightspeed.chain.fee_policy import (
    MempoolEntry,
    feerate_per_kw,
    replacement_error,
    select_for_block,
)
from lightspeed.chain.index import ChainIndex, busy_errors
from lightspeed.chain.source import Utxo
from lightspeed.crypto.hashes import hash160, sha256
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import ChainError, RejectedTransaction, UsageError

__all__ = ["COINBASE_MATURITY", "FAUCET_MAX_SAT", "SUBSIDY_SAT", "PackageRejected", "RegtestChain", "merkle_root"]

COINBASE_MATURITY = 100
SUBSIDY_SAT = 50 * 100_000_000  # every block: no halving (Bitcoin Core's regtest halves every 150)
FAUCET_MAX_SAT = 21_000 * 100_000_000  # 420 coinbases: a bound on the blocks one faucet call mines


def _faucet_fee(inputs: int) -> int:
    """The faucet's fee: about 2 sat/vbyte for a transaction with this many P2WPKH inputs."""
    return 1000 + 150 * inputs


DEFAULT_FEERATE_PER_KW = 253  # the floor most implementations use (1 sat/vbyte)
DEFAULT_BUSY_TIMEOUT_S = 0.5
FIXED_BLOCK_INTERVAL_S = 600
SCHEMA_VERSION = 2  # PRAGMA user_version; 0 with blocks = a file of the pre-genesis-fix format

Clock = Callable[[], float]
_HAS_SETTINGS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'settings'"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE, header BLOB NOT NULL, time INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS txs (
    txid BLOB PRIMARY KEY, raw BLOB NOT NULL, height INTEGER, position INTEGER, fee INTEGER, vsize INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outputs (
    txid BLOB NOT NULL, vout INTEGER NOT NULL, value INTEGER NOT NULL, script BLOB NOT NULL,
    scripthash BLOB NOT NULL, coinbase INTEGER NOT NULL, spent_by BLOB, PRIMARY KEY (txid, vout));
CREATE TABLE IF NOT EXISTS history (scripthash BLOB NOT NULL, txid BLOB NOT NULL, PRIMARY KEY (scripthash, txid));
CREATE INDEX IF NOT EXISTS outputs_script ON outputs (script) WHERE spent_by IS NULL;
CREATE INDEX IF NOT EXISTS outputs_scripthash ON outputs (scripthash);
CREATE INDEX IF NOT EXISTS outputs_spent_by ON outputs (spent_by) WHERE spent_by IS NOT NULL;
CREATE INDEX IF NOT EXISTS txs_mempool ON txs (height) WHERE height IS NULL;
CREATE INDEX IF NOT EXISTS txs_block ON txs (height, position);
CREATE INDEX IF NOT EXISTS history_txid ON history (txid);
CREATE TABLE IF NOT EXISTS history_removed (seq INTEGER PRIMARY KEY AUTOINCREMENT, scripthash BLOB NOT NULL)
"""
# How many removals the journal keeps for followers in other processes (an Electrum server polls
# every few hundred ms; one further behind re-checks every subscription, see ChainIndex.touched_since).
REMOVED_KEPT = 10_000


class PackageRejected(RejectedTransaction):
    """A member of a package broke a rule: ``txid`` and ``reason``."""

    def __init__(self, txid: bytes, reason: str) -> None:
        super().__init__(f"{txid[::-1].hex()}: {reason}")
        self.txid, self.reason = txid, reason


class RegtestChain:
    """A validating regtest chain in one SQLite file (``":memory:"`` for a throwaway one)."""

    def __init__(self, path: str | Path, miner_seed: bytes = b"lightspeed regtest miner", *,
                 clock: Clock | None = time.time, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        self.path = str(path)
        self.clock = clock
        self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None,
                                   check_same_thread=False)
        try:
            with busy_errors(self.path):
                if self.path != ":memory:":
                    self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._open()
        except BaseException:
            self._db.close()
            raise
        self.index = ChainIndex(self._db, self.path)
        self.miner_key = sha256(miner_seed)
        self.miner_script = p2wpkh_script(pubkey_from_privkey(self.miner_key))

    def _open(self) -> None:
        """Check that the file is of this format; create the schema and the genesis block in a new one.

        A file already set up is only read (no write lock: opening never waits for another writer).
        """
        if self._check_format():
            return
        with self._write():
            if self._check_format():  # another process set it up meanwhile
                return
            for statement in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._add_genesis()

    def _check_format(self) -> bool:
        """True if the file holds a chain of this format; False if it is new; ChainError otherwise."""
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        has_blocks = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'blocks'").fetchone() is not None
        if not has_blocks:
            return False
        if version != SCHEMA_VERSION:
            raise ChainError(
                f"{self.path}: a chain file of an older format (schema {version}, its genesis block is "
                f"not Bitcoin Core's regtest genesis); this version reads schema {SCHEMA_VERSION}. "
                "Delete it (regtest coins are worthless) and let a daemon create a new one")
        row = self._db.execute("SELECT hash FROM blocks WHERE height = 0").fetchone()
        if row is None or bytes(row[0]) != GENESIS_HASH:
            found = "no genesis block" if row is None else f"genesis block {bytes(row[0])[::-1].hex()}"
            raise ChainError(f"{self.path}: {found}, not Bitcoin Core's regtest genesis {GENESIS_HASH[::-1].hex()}")
        return True

    def close(self) -> None:
        self._db.close()

    def set_busy_timeout(self, seconds: float) -> None:
        """How long a write waits for another process's lock (a command line may wait longer than a daemon)."""
        self._db.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with busy_errors(self.path):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a full disk): the first error is the one to report.
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise

    def _read(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]:
        with busy_errors(self.path):
            return self._db.execute(sql, args).fetchall()

    def _read_one(self, sql: str, args: tuple[object, ...] = ()) -> Any:
        rows = self._read(sql, args)
        return rows[0] if rows else None

    # -- ChainSource -------------------------------------------------------------------------

    def _height(self) -> int:
        row = self._db.execute("SELECT MAX(height) FROM blocks").fetchone()
        return -1 if row[0] is None else int(row[0])

    def tip(self) -> tuple[int, bytes]:
        row = self._read_one("SELECT height, hash FROM blocks ORDER BY height DESC LIMIT 1")
        assert row is not None  # the genesis block always exists
        return int(row[0]), bytes(row[1])

    def get_transaction(self, txid: bytes) -> tuple[Transaction, int] | None:
        with busy_errors(self.path):
            row = self._db.execute("SELECT raw, height FROM txs WHERE txid = ?", (txid,)).fetchone()
            if row is None:
                return None
            confirmations = 0 if row[1] is None else self._height() - int(row[1]) + 1
        return Transaction.parse(bytes(row[0])), confirmations

    def tx_position(self, txid: bytes) -> tuple[int, int] | None:
        """(block height, index in the block) of a confirmed transaction: a short channel id's parts."""
        row = self._read_one("SELECT height, position FROM txs WHERE txid = ?", (txid,))
        if row is None or row[0] is None or row[1] is None:
            return None
        return int(row[0]), int(row[1])

    def output_at(self, block_height: int, tx_index: int, output_index: int) -> tuple[TxOut, bool] | None:
        """The output a short channel id names, and whether it is spent; None if there is none."""
        row = self._read_one(
            "SELECT o.value, o.script, o.spent_by FROM txs t JOIN outputs o ON o.txid = t.txid "
            "WHERE t.height = ? AND t.position = ? AND o.vout = ?", (block_height, tx_index, output_index))
        if row is None:
            return None
        return TxOut(int(row[0]), bytes(row[1])), row[2] is not None

    def spending_tx(self, outpoint: OutPoint) -> Transaction | None:
        row = self._read_one("SELECT spent_by FROM outputs WHERE txid = ? AND vout = ?",
                             (outpoint.txid, outpoint.index))
        if row is None or row[0] is None:
            return None
        found = self.get_transaction(bytes(row[0]))
        return None if found is None else found[0]

    def unspent(self, script_pubkeys: list[bytes]) -> list[Utxo]:
        out: list[Utxo] = []
        with busy_errors(self.path):
            for script in script_pubkeys:
                rows = self._db.execute(
                    "SELECT o.txid, o.vout, o.value, t.height FROM outputs o JOIN txs t ON t.txid = o.txid "
                    "WHERE o.script = ? AND o.spent_by IS NULL ORDER BY t.height, o.txid, o.vout", (script,)
                ).fetchall()
                out.extend(Utxo(OutPoint(bytes(r[0]), r[1]), TxOut(r[2], script), r[3]) for r in rows)
        return out

    def history(self, script_pubkeys: list[bytes]) -> list[tuple[Transaction, int | None]]:
        """Transactions paying or spending ``script_pubkeys`` (the Electrum index's history), oldest first."""
        found: dict[bytes, tuple[Transaction, int | None]] = {}
        with self.index.snapshot():
            for script in script_pubkeys:
                for item in self.index.history(sha256(script)):
                    if item.txid not in found:
                        row = self.index.raw_transaction(item.txid)
                        if row is not None:
                            found[item.txid] = Transaction.parse(row[0]), item.height
        return sorted(found.values(), key=lambda e: (e[1] is None, e[1] or 0))

    def _setting(self, key: str) -> int | None:
        with busy_errors(self.path):
            if self._db.execute(_HAS_SETTINGS).fetchone() is None:  # no setting was ever made
                return None
            row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def _put_setting(self, key: str, value: int | None) -> None:
        with self._write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            db.execute("DELETE FROM settings WHERE key = ?", (key,))
            if value is not None:
                db.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (key, value))

    def estimate_feerate_per_kw(self, target_blocks: int = 6) -> int:
        """DEFAULT_FEERATE_PER_KW, or what :meth:`set_fee_estimate` put in the file (for every target)."""
        value = self._setting("feerate_per_kw")
        return DEFAULT_FEERATE_PER_KW if value is None else value

    def set_fee_estimate(self, feerate_per_kw: int | None) -> None:
        """Make every process on this file estimate ``feerate_per_kw`` (None: the default again).

        A regtest chain has no fee market; this is how a test plays one (a commitment that pays
        less than the estimate, a peer's update_fee). Fees are enforced only under
        :meth:`set_min_relay_feerate` and :meth:`congest`.
        """
        if feerate_per_kw is not None and not 253 <= feerate_per_kw <= 10_000_000:
            raise UsageError(f"feerate_per_kw: {feerate_per_kw} is outside 253..10000000")
        self._put_setting("feerate_per_kw", feerate_per_kw)

    def min_relay_feerate_per_kw(self) -> int:
        """Below this feerate a transaction is refused (0, the default: any fee, zero included)."""
        return self._setting("min_relay_feerate_per_kw") or 0

    def set_min_relay_feerate(self, feerate_per_kw: int | None) -> None:
        """Refuse transactions (or packages) paying less than ``feerate_per_kw``, as a real mempool
        does (Bitcoin Core: 253 sat/kw). None or 0: accept any fee again (the default, so that
        tests of other things need not pay fees)."""
        if feerate_per_kw is not None and not 0 <= feerate_per_kw <= 10_000_000:
            raise UsageError(f"min_relay_feerate_per_kw: {feerate_per_kw} is outside 0..10000000")
        self._put_setting("min_relay_feerate_per_kw", feerate_per_kw or None)

    def congested_below_per_kw(self) -> int:
        """Blocks leave out packages paying less than this (0: not congested, every block takes the mempool)."""
        return self._setting("congested_below_per_kw") or 0

    def congest(self, below_per_kw: int | None) -> None:
        """Play full blocks: packages paying less than ``below_per_kw`` wait in the mempool (None or 0: off)."""
        if below_per_kw is not None and not 0 <= below_per_kw <= 10_000_000:
            raise UsageError(f"below: {below_per_kw} sat/kw is outside 0..10000000")
        self._put_setting("congested_below_per_kw", below_per_kw or None)

    def mempool(self) -> list[bytes]:
        rows = self._read("SELECT txid FROM txs WHERE height IS NULL ORDER BY rowid")
        return [bytes(r[0]) for r in rows]

    def block_time(self, height: int) -> int:
        row = self._read_one("SELECT time FROM blocks WHERE height = ?", (height,))
        if row is None:
            raise ChainError(f"no block at height {height}")
        return int(row[0])

    # -- validation --------------------------------------------------------------------------

    def broadcast(self, tx: Transaction) -> bytes:
        """Validate ``tx`` against the chain and the mempool and accept it, or raise RejectedTransaction.

        ChainBusy (nothing written) if the file stays locked by another process for the busy timeout.
        """
        with self._write():
            self._accept(tx)
        return tx.txid

    def broadcast_package(self, txs: list[Transaction]) -> list[bytes]:
        """Accept a package (parents first, child last) whole or not at all; known members are skipped.

        PackageRejected names the first member the chain refused (then none was accepted).
        """
        with self._write():
            fee = weight = 0
            for tx in txs:
                if self._db.execute("SELECT 1 FROM txs WHERE txid = ?", (tx.txid,)).fetchone():
                    continue
                try:
                    fee += self._accept(tx, check_feerate=False)
                except RejectedTransaction as exc:
                    raise PackageRejected(tx.txid, str(exc)) from None
                weight += tx.weight
            minimum = self.min_relay_feerate_per_kw()
            if weight and feerate_per_kw(fee, weight) < minimum:  # the package as a whole (package relay)
                raise PackageRejected(txs[-1].txid, f"package feerate {feerate_per_kw(fee, weight)} sat/kw is "
                                                    f"below the minimum relay feerate {minimum} sat/kw")
        return [tx.txid for tx in txs]

    def _accept(self, tx: Transaction, check_feerate: bool = True, from_block: bool = False) -> int:
        """Validate and store ``tx`` in the mempool (evicting what it replaces); its fee.

        ``from_block``: a transaction of a block mined elsewhere, or one back from a reorganised
        block: no relay policy (feerate, replacement rules), what it conflicts with is evicted.
        """
        check_feerate = check_feerate and not from_block
        txid = tx.txid
        if self._db.execute("SELECT 1 FROM txs WHERE txid = ?", (txid,)).fetchone():
            raise RejectedTransaction(f"transaction {tx.txid_hex} is already known")
        if not tx.inputs or not tx.outputs:
            raise RejectedTransaction("a transaction needs at least one input and one output")
        if tx.is_coinbase or any(txin.prevout == NULL_OUTPOINT for txin in tx.inputs):
            raise RejectedTransaction("coinbase transactions only come from mining")
        if len({txin.prevout for txin in tx.inputs}) != len(tx.inputs):
            raise RejectedTransaction("the same output is spent twice within the transaction")
        total_out = 0
        for i, txout in enumerate(tx.outputs):
            if not 0 <= txout.value_sat <= MAX_MONEY_SAT:
                raise RejectedTransaction(f"output {i}: value {txout.value_sat} out of range")
            total_out += txout.value_sat
        if total_out > MAX_MONEY_SAT:
            raise RejectedTransaction("outputs exceed 21 million bitcoin")
        tip_height = self._height()
        next_height = tip_height + 1
        tip_time = self.block_time(tip_height)
        # Absolute locktime: final if 0, if every sequence is final, or if already reached.
        if tx.locktime and any(txin.sequence != 0xFFFFFFFF for txin in tx.inputs):
            if tx.locktime < LOCKTIME_THRESHOLD and tx.locktime >= next_height:
                raise RejectedTransaction(f"locktime {tx.locktime} not reached (next block is {next_height})")
            if tx.locktime >= LOCKTIME_THRESHOLD and tx.locktime > tip_time:
                raise RejectedTransaction(f"locktime {tx.locktime} (a time) not reached")
        total_in = 0
        spent: list[TxOut] = []
        conflicts: set[bytes] = set()
        unconfirmed_inputs: list[bool] = []
        for i, txin in enumerate(tx.inputs):
            row = self._db.execute(
                "SELECT o.value, o.script, o.coinbase, o.spent_by, t.height FROM outputs o "
                "JOIN txs t ON t.txid = o.txid WHERE o.txid = ? AND o.vout = ?",
                (txin.prevout.txid, txin.prevout.index),
            ).fetchone()
            if row is None:
                raise RejectedTransaction(f"input {i}: output {txin.prevout} does not exist")
            value, script, is_coinbase, spent_by, height = row
            if spent_by is not None:
                spender = self._db.execute("SELECT height FROM txs WHERE txid = ?", (spent_by,)).fetchone()
                if spender[0] is not None:
                    raise RejectedTransaction(f"input {i}: output {txin.prevout} is already spent in the chain "
                                              f"by {bytes(spent_by)[::-1].hex()}")
                conflicts.add(bytes(spent_by))  # in the mempool: a replacement if it pays enough (BIP 125)
            if is_coinbase and next_height - height < COINBASE_MATURITY:
                raise RejectedTransaction(f"input {i}: coinbase output is immature ({next_height - height} of {COINBASE_MATURITY} blocks)")
            self._check_relative_locktime(tx, i, height, next_height, tip_time)
            unconfirmed_inputs.append(height is None)
            total_in += value
            spent.append(TxOut(value, bytes(script)))
        if total_in < total_out:
            raise RejectedTransaction(f"outputs ({total_out} sat) exceed inputs ({total_in} sat)")
        fee = total_in - total_out
        minimum = self.min_relay_feerate_per_kw() if check_feerate else 0
        if feerate_per_kw(fee, tx.weight) < minimum:
            raise RejectedTransaction(f"feerate {feerate_per_kw(fee, tx.weight)} sat/kw (fee {fee} sat) is below "
                                      f"the minimum relay feerate {minimum} sat/kw")
        evicted = self._with_descendants(conflicts)
        if conflicts and not from_block:
            for old in sorted(conflicts):  # BIP 125 opt-in (Bitcoin Core before 28): the replaced must signal
                raw = self._db.execute("SELECT raw FROM txs WHERE txid = ?", (old,)).fetchone()[0]
                if not any(txin.sequence < 0xFFFFFFFE for txin in Transaction.parse(bytes(raw)).inputs):
                    spent_twice = next(i for i, txin in enumerate(tx.inputs)
                                       if self._spender(txin.prevout) == old)
                    raise RejectedTransaction(f"input {spent_twice}: output {tx.inputs[spent_twice].prevout} is "
                                              f"already spent in the mempool by {old[::-1].hex()} (not replaceable)")
            replaced = sum(self._mempool_fee(t) or 0 for t in evicted)
            direct = [(t, self._mempool_fee(t) or 0, self._mempool_weight(t)) for t in sorted(conflicts)]
            spent_before = {txin.prevout.txid for t in conflicts for txin in self._mempool_tx(t).inputs}
            added = [i for i, (txin, unconfirmed) in enumerate(zip(tx.inputs, unconfirmed_inputs, strict=True))
                     if unconfirmed and txin.prevout.txid not in spent_before]
            reason = replacement_error(fee, tx.weight, tx.vsize, direct, replaced, len(evicted), added)
            if reason is not None:
                spender = min(conflicts)[::-1].hex()
                raise RejectedTransaction(f"conflicts with {spender} in the mempool: {reason}")
        for i, output in enumerate(spent):
            try:
                verify_input(tx, i, output)
            except ScriptError as exc:
                raise RejectedTransaction(f"input {i}: {exc}") from None
        for old in evicted:
            self._evict(old)
        self._store(tx, None, is_coinbase=False, fee=fee)
        return fee

    def _spender(self, outpoint: OutPoint) -> bytes | None:
        row = self._db.execute("SELECT spent_by FROM outputs WHERE txid = ? AND vout = ?",
                               (outpoint.txid, outpoint.index)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def _with_descendants(self, txids: set[bytes]) -> list[bytes]:
        """``txids`` (in the mempool) and every mempool transaction spending their outputs."""
        found: list[bytes] = []
        todo = list(txids)
        while todo:
            txid = todo.pop()
            if txid in found:
                continue
            found.append(txid)
            rows = self._db.execute("SELECT spent_by FROM outputs WHERE txid = ? AND spent_by IS NOT NULL",
                                    (txid,)).fetchall()
            todo.extend(bytes(r[0]) for r in rows)
        return found

    def _evict(self, txid: bytes) -> None:
        """Inside a write: drop a replaced mempool transaction (what it spent is unspent again)."""
        self._db.execute("UPDATE outputs SET spent_by = NULL WHERE spent_by = ?", (txid,))
        self._db.execute("DELETE FROM outputs WHERE txid = ?", (txid,))
        self._forget_history(txid)
        self._db.execute("DELETE FROM txs WHERE txid = ? AND height IS NULL", (txid,))

    def _forget_history(self, txid: bytes) -> None:
        """Inside a write: drop ``txid``'s history rows, journalling their script hashes.

        A follower learns of new and newly mined transactions from the rows themselves; a
        removal (a replaced transaction, one a reorganisation dropped or re-added) leaves no row,
        so without the journal an Electrum client kept a history with a transaction that no
        longer exists (Electrum 4.8.1 replaces its own batch transactions this way).
        """
        self._db.execute("INSERT INTO history_removed (scripthash) SELECT scripthash FROM history WHERE txid = ?",
                         (txid,))
        self._db.execute("DELETE FROM history WHERE txid = ?", (txid,))
        self._db.execute("DELETE FROM history_removed WHERE seq <= (SELECT MAX(seq) FROM history_removed) - ?",
                         (REMOVED_KEPT,))

    def _check_relative_locktime(self, tx: Transaction, i: int, height: int | None, next_height: int,
                                 tip_time: int) -> None:
        """BIP 68: a version 2 transaction's input sequence can demand an age of the output it spends."""
        sequence = tx.inputs[i].sequence
        if tx.version < 2 or sequence & SEQUENCE_DISABLE_FLAG:
            return
        value = sequence & SEQUENCE_MASK
        if value == 0:
            return
        if height is None:
            raise RejectedTransaction(f"input {i}: relative locktime on an unconfirmed output")
        if sequence & SEQUENCE_TYPE_FLAG:
            age = tip_time - self.block_time(max(height - 1, 0))
            if age < value * 512:
                raise RejectedTransaction(f"input {i}: relative time lock of {value * 512}s not reached")
        elif next_height - height < value:
            raise RejectedTransaction(
                f"input {i}: relative locktime of {value} blocks not reached ({next_height - height} so far)")

    def _store(self, tx: Transaction, height: int | None, is_coinbase: bool, fee: int | None,
               position: int | None = None) -> None:
        """Record ``tx``, mark what it spends, add its outputs, and index both by script hash."""
        txid = tx.txid
        self._db.execute("INSERT INTO txs (txid, raw, height, position, fee, vsize) VALUES (?, ?, ?, ?, ?, ?)",
                         (txid, tx.serialize(), height, position, fee, tx.vsize))
        touched: set[bytes] = set()
        if not is_coinbase:
            for txin in tx.inputs:
                self._db.execute("UPDATE outputs SET spent_by = ? WHERE txid = ? AND vout = ?",
                                 (txid, txin.prevout.txid, txin.prevout.index))
                row = self._db.execute("SELECT scripthash FROM outputs WHERE txid = ? AND vout = ?",
                                       (txin.prevout.txid, txin.prevout.index)).fetchone()
                touched.add(bytes(row[0]))
        rows = []
        for n, out in enumerate(tx.outputs):
            scripthash = sha256(out.script_pubkey)
            touched.add(scripthash)
            rows.append((txid, n, out.value_sat, out.script_pubkey, scripthash, int(is_coinbase)))
        self._db.executemany(
            "INSERT INTO outputs (txid, vout, value, script, scripthash, coinbase, spent_by) "
            "VALUES (?, ?, ?, ?, ?, ?, NULL)", rows)
        self._db.executemany("INSERT INTO history (scripthash, txid) VALUES (?, ?)",
                             [(scripthash, txid) for scripthash in touched])

    # -- mining ------------------------------------------------------------------------------

    def mine(self, blocks: int = 1, to_script: bytes | None = None, block_time: int | None = None,
             empty: bool = False) -> list[bytes]:
        """Mine ``blocks`` blocks holding the whole mempool (``empty``: only their coinbase); returns their hashes.

        A block's time is ``block_time`` if given, else ``max(previous + 1, clock())``
        (previous + 600 without a clock).
        """
        hashes = []
        for _ in range(blocks):
            with self._write():
                prev_time = self.block_time(self._height())
                if block_time is not None:
                    when = block_time
                elif self.clock is None:
                    when = prev_time + FIXED_BLOCK_INTERVAL_S
                else:
                    when = max(prev_time + 1, int(self.clock()))
                hashes.append(self._add_block(when, to_script or self.miner_script, empty))
        return hashes

    def reorg(self, depth: int, empty: bool = False) -> list[bytes]:
        """Replace the last ``depth`` blocks by ``depth + 1`` new ones (more work: light clients switch).

        The replaced blocks' transactions go back to the mempool; the new blocks hold them again,
        or (``empty``) hold none, so they wait there for the next block. Returns the txids that
        no longer fit the new chain (dropped).
        """
        height = self._height()
        if not 1 <= depth <= height:
            raise UsageError(f"depth: 1 to {height} blocks (the tip's height), not {depth}")
        dropped = self.trim_blocks(height - depth)
        self.mine(depth + 1, empty=empty)
        return dropped

    def _add_genesis(self) -> None:
        """Bitcoin Core's regtest genesis; its coinbase output is unspendable, so it is not an output here."""
        self._db.execute("INSERT INTO blocks (height, hash, header, time) VALUES (0, ?, ?, ?)",
                         (GENESIS_HASH, GENESIS_HEADER.serialize(), GENESIS_HEADER.time))
        self._db.execute("INSERT INTO txs (txid, raw, height, position, fee, vsize) VALUES (?, ?, 0, 0, NULL, ?)",
                         (GENESIS_COINBASE.txid, GENESIS_COINBASE.serialize(), GENESIS_COINBASE.vsize))

    def _add_block(self, time: int, to_script: bytes, empty: bool = False) -> bytes:
        height = self._height() + 1
        rows = [] if empty else self._db.execute(
            "SELECT txid, raw, fee FROM txs WHERE height IS NULL ORDER BY rowid").fetchall()
        txs = [Transaction.parse(bytes(raw)) for _txid, raw, _fee in rows]  # parents before children
        below = self.congested_below_per_kw()
        if below:  # full blocks: the packages paying too little wait
            entries = [MempoolEntry(bytes(row[0]), int(row[2]), tx.weight,
                                    frozenset(txin.prevout.txid for txin in tx.inputs)) for row, tx in zip(rows, txs, strict=True)]
            chosen = select_for_block(entries, below)
            kept = [(row, tx) for row, tx in zip(rows, txs, strict=True) if bytes(row[0]) in chosen]
            rows, txs = [row for row, _ in kept], [tx for _, tx in kept]
        fees = sum(int(fee) for _txid, _raw, fee in rows)
        has_witness = any(txin.witness for tx in txs for txin in tx.inputs)
        coinbase_tx = coinbase(height, SUBSIDY_SAT + fees, to_script,
                               [tx.wtxid for tx in txs] if has_witness else None)
        header = mine_header(self.tip()[1], [coinbase_tx.txid, *(tx.txid for tx in txs)], time)
        block_hash = header.hash
        self._db.execute("INSERT INTO blocks (height, hash, header, time) VALUES (?, ?, ?, ?)",
                         (height, block_hash, header.serialize(), time))
        self._store(coinbase_tx, height, is_coinbase=True, fee=None, position=0)
        self._db.executemany("UPDATE txs SET height = ?, position = ? WHERE txid = ?",
                             [(height, position, bytes(txid)) for position, (txid, _raw, _fee) in enumerate(rows, 1)])
        return block_hash

    # -- blocks from elsewhere, reorganisations (the checks are in chain.submit) ---------------

    def submit_block(self, raw: bytes) -> bytes:
        """Check a serialized block and make it the new tip; its hash, or RejectedBlock (nothing changed)."""
        return submit.submit_block(self, raw)

    def trim_blocks(self, height: int) -> list[bytes]:
        """Reorganise back to ``height``: later blocks go, their transactions return to the mempool
        (the txids of those that no longer fit are returned, dropped)."""
        return submit.trim_blocks(self, height)

    def _mempool_tx(self, txid: bytes) -> Transaction:
        row = self._db.execute("SELECT raw FROM txs WHERE txid = ?", (txid,)).fetchone()
        return Transaction.parse(bytes(row[0]))

    def _mempool_weight(self, txid: bytes) -> int:
        return self._mempool_tx(txid).weight

    def _mempool_fee(self, txid: bytes) -> int | None:
        row = self._db.execute("SELECT fee FROM txs WHERE txid = ? AND height IS NULL", (txid,)).fetchone()
        return None if row is None else int(row[0])

    def _connect_block(self, header: BlockHeader, txs: list[Transaction], height: int) -> None:
        """Inside a write: ``header`` is the new tip; its coinbase is new, its other transactions are in the mempool."""
        self._db.execute("INSERT INTO blocks (height, hash, header, time) VALUES (?, ?, ?, ?)",
                         (height, header.hash, header.serialize(), header.time))
        self._store(txs[0], height, is_coinbase=True, fee=None, position=0)
        self._db.executemany("UPDATE txs SET height = ?, position = ? WHERE txid = ?",
                             [(height, position, tx.txid) for position, tx in enumerate(txs[1:], start=1)])

    def _disconnect_to(self, height: int) -> list[bytes]:
        """Inside a write: drop the blocks above ``height``; their transactions and the mempool's are
        validated again, in order, against the shorter chain. Returns the txids that no longer fit."""
        rows = self._db.execute(
            "SELECT txid, raw, position FROM txs WHERE height > ? OR height IS NULL "
            "ORDER BY height IS NULL, height, position, rowid", (height,)).fetchall()
        for txid, _raw, _position in rows:
            self._db.execute("UPDATE outputs SET spent_by = NULL WHERE spent_by = ?", (txid,))
            self._db.execute("DELETE FROM outputs WHERE txid = ?", (txid,))
            self._forget_history(txid)
            self._db.execute("DELETE FROM txs WHERE txid = ?", (txid,))
        self._db.execute("DELETE FROM blocks WHERE height > ?", (height,))
        dropped = []
        for txid, raw, position in rows:
            if position == 0:
                continue  # a coinbase goes with its block
            try:
                self._accept(Transaction.parse(bytes(raw)), from_block=True)
            except RejectedTransaction:
                dropped.append(bytes(txid))
        return dropped

    # -- faucet ------------------------------------------------------------------------------

    def fund(self, script_pubkey: bytes, value_sat: int, confirm: bool = True) -> OutPoint:
        """Pay ``value_sat`` to ``script_pubkey`` from mined coins (mining to maturity if needed).

        Large amounts are paid from several coinbases at once (one input each), so any amount up to
        :data:`FAUCET_MAX_SAT` takes a bounded number of blocks.
        """
        if not 1 <= value_sat <= FAUCET_MAX_SAT:
            raise UsageError(f"amount_sat: the faucet pays 1 to {FAUCET_MAX_SAT} sat at once, not {value_sat}")
        miner_pub = pubkey_from_privkey(self.miner_key)
        while True:
            height = self._height()
            coins = sorted((u for u in self.unspent([self.miner_script])
                            if u.height is not None and height + 1 - u.height >= COINBASE_MATURITY),
                           key=lambda u: u.output.value_sat, reverse=True)
            chosen: list[Utxo] = []
            for coin in coins:
                chosen.append(coin)
                if sum(c.output.value_sat for c in chosen) >= value_sat + _faucet_fee(len(chosen)):
                    break
            else:
                missing = value_sat + _faucet_fee(len(coins) + 1) - sum(c.output.value_sat for c in coins)
                more = -(-missing // SUBSIDY_SAT)  # coinbases still needed, each matures after 100 blocks
                self.mine(more + (COINBASE_MATURITY if height < COINBASE_MATURITY else 0))
                continue
            break
        change = sum(c.output.value_sat for c in chosen) - value_sat - _faucet_fee(len(chosen))
        outputs = [TxOut(value_sat, script_pubkey)]
        if change > 0:
            outputs.append(TxOut(change, self.miner_script))
        tx = Transaction(2, tuple(TxIn(c.outpoint, sequence=0xFFFFFFFD) for c in chosen), tuple(outputs), 0)
        script_code = p2pkh_script_code(hash160(miner_pub))
        for i, coin in enumerate(chosen):
            sighash = bip143_sighash(tx, i, script_code, coin.output.value_sat, SIGHASH_ALL)
            tx = tx.with_witness(i, (sign_input(self.miner_key, sighash, SIGHASH_ALL), miner_pub))
        self.broadcast(tx)
        if confirm:
            self.mine(1)
        return OutPoint(tx.txid, 0)
