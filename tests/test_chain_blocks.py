"""Real blocks (issue 12): Bitcoin Core's regtest genesis, valid headers with proof of work, wall-clock
times; old chain files refused clearly."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from lightspeed.bitcoin.network import REGTEST
from lightspeed.bitcoin.script import p2wpkh_script
from lightspeed.bitcoin.tx import Transaction, TxOut
from lightspeed.chain import RegtestChain, Wallet
from lightspeed.chain.blocks import (
    GENESIS_HASH,
    REGTEST_BITS,
    BlockHeader,
    bits_to_target,
    merkle_branch,
    merkle_root,
    root_from_branch,
    script_num,
)
from lightspeed.chain.regtest import COINBASE_MATURITY
from lightspeed.cli.main import cli
from lightspeed.crypto.hashes import sha256d
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import ChainError

SPK = p2wpkh_script(pubkey_from_privkey(b"\x51" * 32))
# Bitcoin Core's regtest genesis block header (chainparams.cpp: CreateGenesisBlock(1296688602, 2, 0x207fffff, 1, 50 * COIN)).
CORE_REGTEST_GENESIS_HEADER = bytes.fromhex(
    "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e"
    "67768f617fc81bc3888a51323a9fb8aa4b1e5e4adae5494dffff7f2002000000")
CORE_REGTEST_GENESIS_HASH = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"


def headers(chain: RegtestChain) -> list[bytes]:
    return chain.index.headers(0, chain.tip()[0] + 1)


def test_the_genesis_block_is_bitcoin_cores_regtest_genesis_byte_for_byte() -> None:
    chain = RegtestChain(":memory:")
    assert chain.index.header(0) == CORE_REGTEST_GENESIS_HEADER
    assert chain.tip() == (0, GENESIS_HASH)
    assert GENESIS_HASH[::-1].hex() == CORE_REGTEST_GENESIS_HASH
    # BOLT 0: chain_hash is the genesis block hash in Bitcoin's internal byte order
    assert REGTEST.chain_hash == sha256d(CORE_REGTEST_GENESIS_HEADER) == GENESIS_HASH
    assert REGTEST.chain_hash.hex() == "06226e46111a0b59caaf126043eb5bbf28c34f3a5e332a1fc7b2b73cf188910f"
    # its coinbase is in block 0 (merkle proofs work) but its output is unspendable, as in Core
    (coinbase_txid,) = chain.index.block_txids(0)
    assert BlockHeader.parse(CORE_REGTEST_GENESIS_HEADER).merkle_root == coinbase_txid
    assert chain.output_at(0, 0, 0) is None


def test_every_block_has_a_valid_header_linked_to_its_parent_with_proof_of_work() -> None:
    chain = RegtestChain(":memory:")
    wallet = Wallet(b"a wallet seed for blocks", chain)
    chain.fund(wallet.new_key().script_pubkey, 5_000_000)
    for _ in range(3):  # blocks with several witness transactions
        wallet.send([TxOut(100_000, SPK)])
    chain.mine(1)
    raw = headers(chain)
    assert len(raw) == chain.tip()[0] + 1 > COINBASE_MATURITY
    for height in range(1, len(raw)):
        header = BlockHeader.parse(raw[height])
        assert header.serialize() == raw[height]
        assert header.prev_hash == sha256d(raw[height - 1])
        assert header.bits == REGTEST_BITS and header.version == 0x20000000
        assert int.from_bytes(sha256d(raw[height]), "little") <= bits_to_target(REGTEST_BITS)
        assert header.merkle_root == merkle_root(chain.index.block_txids(height))
        assert header.time > BlockHeader.parse(raw[height - 1]).time
    assert chain.tip()[1] == sha256d(raw[-1])
    # The last block holds 3 spends: its coinbase commits to their wtxids (BIP 141).
    txids = chain.index.block_txids(chain.tip()[0])
    assert len(txids) == 4
    coinbase = Transaction.parse(chain.index.raw_transaction(txids[0])[0])  # type: ignore[index]
    wtxids = [Transaction.parse(chain.index.raw_transaction(t)[0]).wtxid for t in txids[1:]]  # type: ignore[index]
    commitment = sha256d(merkle_root([bytes(32), *wtxids]) + coinbase.inputs[0].witness[0])
    assert coinbase.outputs[1].script_pubkey == bytes.fromhex("6a24aa21a9ed") + commitment
    assert coinbase.inputs[0].script_sig == script_num(chain.tip()[0]) + b"\x00"  # BIP 34


def test_block_times_follow_the_clock_and_never_go_backwards() -> None:
    now = [1_900_000_000.0]
    chain = RegtestChain(":memory:", clock=lambda: now[0])
    chain.mine(1)
    assert chain.block_time(1) == 1_900_000_000
    chain.mine(2)  # the clock has not moved: each block one second after its parent
    assert [chain.block_time(h) for h in (2, 3)] == [1_900_000_001, 1_900_000_002]
    now[0] = 1_900_000_500.7
    chain.mine(1)
    assert chain.block_time(4) == 1_900_000_500
    now[0] = 1_000_000_000  # a clock set back: still after the parent
    chain.mine(1)
    assert chain.block_time(5) == 1_900_000_501
    fixed = RegtestChain(":memory:", clock=None)  # deterministic, for tests that need it
    fixed.mine(2)
    assert [fixed.block_time(h) for h in (1, 2)] == [1_296_688_602 + 600, 1_296_688_602 + 1200]


def test_the_default_clock_is_the_wall_clock() -> None:
    import time

    chain = RegtestChain(":memory:")
    chain.mine(1)
    assert abs(chain.block_time(1) - time.time()) < 60


def test_merkle_branches_prove_every_leaf() -> None:
    for count in range(1, 12):
        leaves = [sha256d(bytes([i])) for i in range(count)]
        for index in range(count):
            branch, root = merkle_branch(leaves, index)
            assert root == merkle_root(leaves)
            assert root_from_branch(leaves[index], index, branch) == root
    assert merkle_branch([b"\x01" * 32], 0) == ([], b"\x01" * 32)


def _old_format_file(path: Path) -> None:
    """A chain file as the versions before the genesis fix wrote it (own genesis, no user_version)."""
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE blocks (height INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE, header BLOB NOT NULL,
                             time INTEGER NOT NULL);
        CREATE TABLE txs (txid BLOB PRIMARY KEY, raw BLOB NOT NULL, height INTEGER, position INTEGER);
        CREATE TABLE outputs (txid BLOB NOT NULL, vout INTEGER NOT NULL, value INTEGER NOT NULL,
                              script BLOB NOT NULL, coinbase INTEGER NOT NULL, spent_by BLOB,
                              PRIMARY KEY (txid, vout));
    """)
    header = bytes(80)
    db.execute("INSERT INTO blocks VALUES (0, ?, ?, 1296688602)", (sha256d(header), header))
    db.commit()
    db.close()


def test_an_old_chain_file_gets_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    _old_format_file(path)
    with pytest.raises(ChainError, match=r"older format .* not Bitcoin Core's regtest genesis.* Delete it"):
        RegtestChain(path)
    result = CliRunner().invoke(cli, ["chain", "info", "--chain", str(path)])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "older format" in result.output
    assert "Traceback" not in result.output


def test_a_new_chain_file_reopens(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    RegtestChain(path).mine(2)
    again = RegtestChain(path)
    assert again.tip()[0] == 2 and again.index.header(0) == CORE_REGTEST_GENESIS_HEADER
