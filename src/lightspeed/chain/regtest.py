"""The embedded regtest chain: real transactions, real validation, kept in SQLite.

An honest stand-in for bitcoind's regtest where none can be installed. Blocks
have real headers (previous hash, merkle root of the txids), coinbases pay the
subsidy plus fees, and every transaction is validated before it enters the
mempool: inputs exist and are unspent (mempool included), values are in range
and conserved, coinbase outputs mature after 100 blocks, absolute locktimes
(nLockTime) and BIP 68 relative locktimes hold against block height and time,
and every witness is executed by :mod:`lightspeed.bitcoin.interpreter`. There
is no proof of work: blocks come from :meth:`RegtestChain.mine`.

Sharing between processes: every state change runs in one ``BEGIN IMMEDIATE``
SQLite transaction on a WAL database with a busy timeout, so several daemons on
one machine can point at the same file and see one chain (SQLite's file locks
serialize writers; readers never block).

Block times are not read from a clock: each block is 10 minutes after the
previous one unless a time is passed to :meth:`mine`.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
from lightspeed.chain.source import Utxo
from lightspeed.crypto.hashes import hash160, sha256, sha256d
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import ChainError, RejectedTransaction, UsageError

COINBASE_MATURITY = 100
SUBSIDY_SAT = 50 * 100_000_000
FAUCET_MAX_SAT = 21_000 * 100_000_000  # 420 coinbases: a bound on the blocks one faucet call mines


def _faucet_fee(inputs: int) -> int:
    """The faucet's fee: about 2 sat/vbyte for a transaction with this many P2WPKH inputs."""
    return 1000 + 150 * inputs
GENESIS_TIME = 1_296_688_602  # regtest genesis timestamp
DEFAULT_FEERATE_PER_KW = 253  # the floor most implementations use (1 sat/vbyte)
_NULL_OUTPOINT = OutPoint(bytes(32), 0xFFFFFFFF)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE, header BLOB NOT NULL, time INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS txs (
    txid BLOB PRIMARY KEY, raw BLOB NOT NULL, height INTEGER, position INTEGER);
CREATE TABLE IF NOT EXISTS outputs (
    txid BLOB NOT NULL, vout INTEGER NOT NULL, value INTEGER NOT NULL, script BLOB NOT NULL,
    coinbase INTEGER NOT NULL, spent_by BLOB, PRIMARY KEY (txid, vout));
CREATE INDEX IF NOT EXISTS outputs_script ON outputs (script) WHERE spent_by IS NULL;
CREATE INDEX IF NOT EXISTS txs_mempool ON txs (height) WHERE height IS NULL;
"""


def merkle_root(txids: list[bytes]) -> bytes:
    level = list(txids)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


class RegtestChain:
    """A validating regtest chain in one SQLite file (``":memory:"`` for a throwaway one)."""

    def __init__(self, path: str | Path, miner_seed: bytes = b"lightspeed regtest miner") -> None:
        self._db = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        if str(path) != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self.miner_key = sha256(miner_seed)
        self.miner_script = p2wpkh_script(pubkey_from_privkey(self.miner_key))
        with self._write():
            if self._height() < 0:
                self._add_block([], GENESIS_TIME, self.miner_script)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- ChainSource -------------------------------------------------------------------------

    def _height(self) -> int:
        row = self._db.execute("SELECT MAX(height) FROM blocks").fetchone()
        return -1 if row[0] is None else int(row[0])

    def tip(self) -> tuple[int, bytes]:
        row = self._db.execute("SELECT height, hash FROM blocks ORDER BY height DESC LIMIT 1").fetchone()
        return int(row[0]), bytes(row[1])

    def get_transaction(self, txid: bytes) -> tuple[Transaction, int] | None:
        row = self._db.execute("SELECT raw, height FROM txs WHERE txid = ?", (txid,)).fetchone()
        if row is None:
            return None
        confirmations = 0 if row[1] is None else self._height() - int(row[1]) + 1
        return Transaction.parse(bytes(row[0])), confirmations

    def tx_position(self, txid: bytes) -> tuple[int, int] | None:
        """(block height, index in the block) of a confirmed transaction: a short channel id's parts."""
        row = self._db.execute("SELECT height, position FROM txs WHERE txid = ?", (txid,)).fetchone()
        if row is None or row[0] is None or row[1] is None:
            return None
        return int(row[0]), int(row[1])

    def output_at(self, block_height: int, tx_index: int, output_index: int) -> tuple[TxOut, bool] | None:
        """The output a short channel id names, and whether it is spent; None if there is none."""
        row = self._db.execute(
            "SELECT o.value, o.script, o.spent_by FROM txs t JOIN outputs o ON o.txid = t.txid "
            "WHERE t.height = ? AND t.position = ? AND o.vout = ?", (block_height, tx_index, output_index)
        ).fetchone()
        if row is None:
            return None
        return TxOut(int(row[0]), bytes(row[1])), row[2] is not None

    def spending_tx(self, outpoint: OutPoint) -> Transaction | None:
        row = self._db.execute("SELECT spent_by FROM outputs WHERE txid = ? AND vout = ?",
                               (outpoint.txid, outpoint.index)).fetchone()
        if row is None or row[0] is None:
            return None
        found = self.get_transaction(bytes(row[0]))
        return None if found is None else found[0]

    def unspent(self, script_pubkeys: list[bytes]) -> list[Utxo]:
        out: list[Utxo] = []
        for script in script_pubkeys:
            rows = self._db.execute(
                "SELECT o.txid, o.vout, o.value, t.height FROM outputs o JOIN txs t ON t.txid = o.txid "
                "WHERE o.script = ? AND o.spent_by IS NULL ORDER BY t.height, o.txid, o.vout", (script,)
            ).fetchall()
            out.extend(Utxo(OutPoint(bytes(r[0]), r[1]), TxOut(r[2], script), r[3]) for r in rows)
        return out

    def estimate_feerate_per_kw(self, target_blocks: int = 6) -> int:
        return DEFAULT_FEERATE_PER_KW

    def mempool(self) -> list[bytes]:
        return [bytes(r[0]) for r in self._db.execute("SELECT txid FROM txs WHERE height IS NULL ORDER BY rowid")]

    def block_time(self, height: int) -> int:
        row = self._db.execute("SELECT time FROM blocks WHERE height = ?", (height,)).fetchone()
        if row is None:
            raise ChainError(f"no block at height {height}")
        return int(row[0])

    # -- validation --------------------------------------------------------------------------

    def broadcast(self, tx: Transaction) -> bytes:
        """Validate ``tx`` against the chain and the mempool and accept it, or raise RejectedTransaction."""
        with self._write():
            self._accept(tx)
        return tx.txid

    def _accept(self, tx: Transaction) -> None:
        txid = tx.txid
        if self._db.execute("SELECT 1 FROM txs WHERE txid = ?", (txid,)).fetchone():
            raise RejectedTransaction(f"transaction {tx.txid_hex} is already known")
        if not tx.inputs or not tx.outputs:
            raise RejectedTransaction("a transaction needs at least one input and one output")
        if tx.is_coinbase or any(txin.prevout == _NULL_OUTPOINT for txin in tx.inputs):
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
        for i, txin in enumerate(tx.inputs):
            row = self._db.execute(
                "SELECT o.value, o.script, o.coinbase, o.spent_by, t.height FROM outputs o "
                "JOIN txs t ON t.txid = o.txid WHERE o.txid = ? AND o.vout = ?",
                (txin.prevout.txid, txin.prevout.index),
            ).fetchone()
            if row is None:
                raise RejectedTransaction(f"input {i}: output {txin.prevout} does not exist")
            value, script, coinbase, spent_by, height = row
            if spent_by is not None:
                spender = self._db.execute("SELECT height FROM txs WHERE txid = ?", (spent_by,)).fetchone()
                where = "in the mempool" if spender[0] is None else "in the chain"
                raise RejectedTransaction(
                    f"input {i}: output {txin.prevout} is already spent {where} by {bytes(spent_by)[::-1].hex()}")
            if coinbase and next_height - height < COINBASE_MATURITY:
                raise RejectedTransaction(f"input {i}: coinbase output is immature ({next_height - height} of {COINBASE_MATURITY} blocks)")
            self._check_relative_locktime(tx, i, height, next_height, tip_time)
            total_in += value
            spent.append(TxOut(value, bytes(script)))
        if total_in < total_out:
            raise RejectedTransaction(f"outputs ({total_out} sat) exceed inputs ({total_in} sat)")
        for i, output in enumerate(spent):
            try:
                verify_input(tx, i, output)
            except ScriptError as exc:
                raise RejectedTransaction(f"input {i}: {exc}") from None
        self._store(tx, None, coinbase=False)

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

    def _store(self, tx: Transaction, height: int | None, coinbase: bool, position: int | None = None) -> None:
        txid = tx.txid
        self._db.execute("INSERT INTO txs (txid, raw, height, position) VALUES (?, ?, ?, ?)",
                         (txid, tx.serialize(), height, position))
        if not coinbase:
            for txin in tx.inputs:
                self._db.execute("UPDATE outputs SET spent_by = ? WHERE txid = ? AND vout = ?",
                                 (txid, txin.prevout.txid, txin.prevout.index))
        self._db.executemany(
            "INSERT INTO outputs (txid, vout, value, script, coinbase, spent_by) VALUES (?, ?, ?, ?, ?, NULL)",
            [(txid, n, out.value_sat, out.script_pubkey, int(coinbase)) for n, out in enumerate(tx.outputs)],
        )

    # -- mining ------------------------------------------------------------------------------

    def mine(self, blocks: int = 1, to_script: bytes | None = None, block_time: int | None = None) -> list[bytes]:
        """Mine ``blocks`` blocks holding the whole mempool; returns their hashes."""
        hashes = []
        for _ in range(blocks):
            with self._write():
                height = self._height()
                time = block_time if block_time is not None else self.block_time(height) + 600
                hashes.append(self._add_block(self.mempool(), time, to_script or self.miner_script))
        return hashes

    def _add_block(self, mempool_txids: list[bytes], time: int, to_script: bytes) -> bytes:
        height = self._height() + 1
        fees = 0
        txs = []
        for txid in mempool_txids:
            found = self.get_transaction(txid)
            assert found is not None
            tx = found[0]
            txs.append(tx)
            fees += sum(self._output_value(txin.prevout) for txin in tx.inputs) - sum(o.value_sat for o in tx.outputs)
        coinbase = Transaction(
            version=2,
            inputs=(TxIn(_NULL_OUTPOINT, script_sig=struct.pack("<BI", 4, height), sequence=0xFFFFFFFF),),
            outputs=(TxOut(SUBSIDY_SAT + fees, to_script),),
            locktime=0,
        )
        txids = [coinbase.txid, *(tx.txid for tx in txs)]
        prev = self.tip()[1] if height > 0 else bytes(32)
        header = struct.pack("<i", 0x20000000) + prev + merkle_root(txids) + struct.pack("<III", time, 0x207FFFFF, 0)
        block_hash = sha256d(header)
        self._db.execute("INSERT INTO blocks (height, hash, header, time) VALUES (?, ?, ?, ?)",
                         (height, block_hash, header, time))
        self._store(coinbase, height, coinbase=True, position=0)
        for position, tx in enumerate(txs, start=1):
            self._db.execute("UPDATE txs SET height = ?, position = ? WHERE txid = ?", (height, position, tx.txid))
        return block_hash

    def _output_value(self, outpoint: OutPoint) -> int:
        row = self._db.execute("SELECT value FROM outputs WHERE txid = ? AND vout = ?",
                               (outpoint.txid, outpoint.index)).fetchone()
        return int(row[0])

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
