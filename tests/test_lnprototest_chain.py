"""The regtest chain takes blocks built elsewhere (checked as a node checks them) and reorganises
back to a height: what lnprototest's chain needs (its own block 1, ``trim_blocks``)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lightspeed.bitcoin.script import p2pkh_script_code, p2wpkh_script
from lightspeed.bitcoin.sighash import SIGHASH_ALL, bip143_sighash, sign_input
from lightspeed.bitcoin.tx import OutPoint, Transaction, TxIn, TxOut, varint
from lightspeed.chain import RegtestChain
from lightspeed.chain.blocks import GENESIS_HASH, BlockHeader, coinbase, mine_header
from lightspeed.chain.regtest import SUBSIDY_SAT
from lightspeed.chain.submit import parse_block
from lightspeed.crypto.hashes import hash160
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import DecodeError, RejectedBlock

# lnprototest 0.0.7, lnprototest/backend/bitcoind.py: the block 1 it submits on the regtest
# genesis, and lnprototest/utils/bitcoin_utils.py: tx_spendable, which spends its coinbase.
SUITE_BLOCK_1 = bytes.fromhex(
    "0000002006226e46111a0b59caaf126043eb5bbf28c34f3a5e332a1fc7b2b73cf188910f84591a56720aabc8023cecf71801c5e0f9"
    "d049d0c550ab42412ad12a67d89f3a3dbb6c60ffff7f200400000001020000000001010000000000000000000000000000000000000000"
    "000000000000000000000000ffffffff03510101ffffffff0200f2052a0100000016001419f5016f07fe815f611df3a2a0802dbd74e6"
    "34c40000000000000000266a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf90120000000"
    "000000000000000000000000000000000000000000000000000000000000000000")
SUITE_TX_SPENDABLE = bytes.fromhex(
    "0200000000010184591a56720aabc8023cecf71801c5e0f9d049d0c550ab42412ad12a67d89f3a0000000000feffffff0780841e0000"
    "000000160014fd9658fbd476d318f3b825b152b152aafa49bc9240420f000000000016001483440596268132e6c99d44dae2d151dabd"
    "9a2b232c180a2901000000160014d295f76da2319791f36df5759e45b15d5e105221c0c62d000000000016001454d14ae910793e930d"
    "8e33d3de0b0cbf05aa533300093d00000000001600141b42e1fc7b1cd93a469fa67ed5eabf36ce354dd620a107000000000016001406"
    "afd46bcdfd22ef94ac122aa11f241244a37ecc808d5b000000000022002000b068df6e0e0542e776cea5ebe8f5f1a9b40b531ddd8e94"
    "b1a7ff9829b5bbaa024730440220367b9bfed0565bad2137124f736373626fa3135e59b20a7b5c1d8f2b8f1b26bb02202f664de397"
    "87082a376d222487f02ef19e45696c041044a6d579eecabb68e94501210356609a904a7026c7391d3fbf71ad92a00e04b4cd2fb6a8"
    "d1e69cbc0998f6690a65000000")
KEY = b"\x07" * 32
SCRIPT = p2wpkh_script(pubkey_from_privkey(KEY))


def _spend(outpoint: OutPoint, value_in: int, value_out: int) -> Transaction:
    """A signed spend of our P2WPKH output ``outpoint`` to ourselves."""
    tx = Transaction(2, (TxIn(outpoint),), (TxOut(value_out, SCRIPT),), 0)
    sighash = bip143_sighash(tx, 0, p2pkh_script_code(hash160(pubkey_from_privkey(KEY))), value_in, SIGHASH_ALL)
    return tx.with_witness(0, (sign_input(KEY, sighash, SIGHASH_ALL), pubkey_from_privkey(KEY)))


def _block(header: BlockHeader, txs: list[Transaction]) -> bytes:
    return header.serialize() + varint(len(txs)) + b"".join(tx.serialize() for tx in txs)


def _build(chain: RegtestChain, txs: list[Transaction] = (), *, value: int = SUBSIDY_SAT, height: int | None = None,
           time: int | None = None, coinbase_tx: Transaction | None = None) -> bytes:
    """A block on the tip as another miner would make it (its coinbase at ``height``)."""
    tip_height, tip_hash = chain.tip()
    txs = list(txs)
    witness = [t.wtxid for t in txs] if any(i.witness for t in txs for i in t.inputs) else None
    cb = coinbase_tx or coinbase(tip_height + 1 if height is None else height, value, SCRIPT, witness)
    when = chain.block_time(tip_height) + 600 if time is None else time
    return _block(mine_header(tip_hash, [cb.txid, *(t.txid for t in txs)], when), [cb, *txs])


def test_the_suites_block_1_and_its_spend() -> None:
    chain = RegtestChain(":memory:")
    block_hash = chain.submit_block(SUITE_BLOCK_1)
    assert chain.tip() == (1, block_hash)
    assert block_hash[::-1].hex() == "5501e7cf420429dd0ffad2f1d3d471bdae855823ee8992f0dde35c8c0fd97a1a"
    assert BlockHeader.parse(SUITE_BLOCK_1[:80]).prev_hash == GENESIS_HASH
    chain.mine(100)  # the coinbase matures
    spend = Transaction.parse(SUITE_TX_SPENDABLE)
    chain.broadcast(spend)  # its witness is checked against block 1's coinbase output
    assert chain.mempool() == [spend.txid]
    with pytest.raises(RejectedBlock, match="not on the tip"):
        chain.submit_block(SUITE_BLOCK_1)  # once is enough: it no longer builds on the tip


def test_blocks_that_break_a_rule_are_refused_and_change_nothing() -> None:
    chain = RegtestChain(":memory:")
    chain.mine(101)
    coin = chain.fund(SCRIPT, 10_000, confirm=False)
    found = chain.get_transaction(coin.txid)
    assert found is not None
    payment = found[0]
    before = (chain.tip(), chain.mempool())
    good = _build(chain)
    header = BlockHeader.parse(good[:80])
    tip_height = chain.tip()[0]

    def refused(raw: bytes, reason: str) -> None:
        with pytest.raises(RejectedBlock, match=reason):
            chain.submit_block(raw)
        assert (chain.tip(), chain.mempool()) == before

    # proof of work: a nonce whose hash is above the regtest target (about half of them)
    nonce = next(n for n in range(1000) if not replace(header, nonce=n).meets_target())
    refused(replace(header, nonce=nonce).serialize() + good[80:], "proof of work")
    refused(replace(header, bits=0x1D00FFFF).serialize() + good[80:], "bits")
    refused(_block(mine_header(bytes(32), [Transaction.parse(good[81:]).txid], header.time),
                   [Transaction.parse(good[81:])]), "not on the tip")
    refused(_build(chain, height=tip_height + 2), "BIP 34")
    refused(_build(chain, value=SUBSIDY_SAT + 1), "claims")
    refused(_build(chain, time=chain.block_time(tip_height - 5)), "median time")
    wrong_root = mine_header(chain.tip()[1], [bytes(32)], header.time)
    refused(wrong_root.serialize() + good[80:], "merkle root")
    refused(b"\x00" * 79, "malformed")
    # a transaction spending an output that does not exist
    orphan = Transaction(2, (TxIn(OutPoint(b"\x01" * 32, 0)),), (TxOut(1000, SCRIPT),), 0)
    refused(_build(chain, [orphan]), "does not exist")
    # a wrong witness commitment
    cb = coinbase(tip_height + 1, SUBSIDY_SAT, SCRIPT, [b"\x02" * 32])
    refused(_block(mine_header(chain.tip()[1], [cb.txid], header.time), [cb]), "witness commitment")
    # the boundaries pass: the whole subsidy, and a block with a valid transaction and its fee
    assert payment.txid in chain.mempool()
    fee = chain._mempool_fee(payment.txid)
    assert fee is not None and fee > 0
    chain.submit_block(_build(chain, [payment], value=SUBSIDY_SAT + fee))
    assert chain.get_transaction(payment.txid)[1] == 1  # type: ignore[index]
    assert chain.mempool() == []


def test_a_block_may_bring_transactions_the_mempool_never_saw() -> None:
    chain = RegtestChain(":memory:")
    chain.mine(101)
    coin = chain.fund(SCRIPT, 10_000)
    spend = _spend(coin, 10_000, 9_000)
    assert chain.mempool() == []
    chain.submit_block(_build(chain, [spend], value=SUBSIDY_SAT + 1_000))
    assert chain.get_transaction(spend.txid)[1] == 1  # type: ignore[index]
    again = _spend(OutPoint(spend.txid, 0), 9_000, 8_000)
    forged = again.with_witness(0, (again.inputs[0].witness[0], pubkey_from_privkey(b"\x08" * 32)))
    with pytest.raises(RejectedBlock, match="transaction 1"):
        chain.submit_block(_build(chain, [forged]))  # the witness is executed: a wrong key fails
    assert chain.tip()[0] == 103 and chain.mempool() == []


def test_trim_blocks_reorganises_back_to_a_height() -> None:
    chain = RegtestChain(":memory:")
    chain.mine(101)
    confirmed = chain.fund(SCRIPT, 20_000)  # mined at 102
    coinbase_102 = chain.index.block_txids(102)[0]
    chain.mine(100)
    # The faucet spends its largest coin: block 102's coinbase (the subsidy and the fee of `confirmed`).
    early = chain.fund(SCRIPT, 30_000, confirm=False)
    assert chain.get_transaction(early.txid)[0].inputs[0].prevout.txid == coinbase_102  # type: ignore[index]
    assert chain.tip()[0] == 202
    dropped = chain.trim_blocks(150)
    assert chain.tip()[0] == 150
    assert chain.get_transaction(confirmed.txid)[1] == 49  # type: ignore[index]  # still in block 102
    assert dropped == [early.txid]  # that coinbase is immature at 150 again
    assert chain.mempool() == []
    assert chain.trim_blocks(101) == []
    assert chain.tip()[0] == 101
    assert chain.get_transaction(coinbase_102) is None  # a coinbase goes with its block
    assert chain.get_transaction(confirmed.txid)[1] == 0  # type: ignore[index]  # back to the mempool
    assert confirmed.txid in chain.mempool()
    chain.mine(1)
    assert chain.get_transaction(confirmed.txid)[1] == 1  # type: ignore[index]
    with pytest.raises(RejectedBlock, match="height"):
        chain.trim_blocks(500)
    with pytest.raises(RejectedBlock, match="height"):
        chain.trim_blocks(-1)
    assert chain.trim_blocks(chain.tip()[0]) == []  # trimming to the tip changes nothing


def test_a_reorganisation_drops_what_no_longer_fits() -> None:
    chain = RegtestChain(":memory:")
    chain.mine(100)
    chain.mine(1, to_script=SCRIPT)  # block 101 pays our key
    chain.mine(100)  # it matures at 201
    [coin] = chain.unspent([SCRIPT])
    spend = _spend(coin.outpoint, SUBSIDY_SAT, SUBSIDY_SAT - 1_000)
    chain.broadcast(spend)
    child = _spend(OutPoint(spend.txid, 0), SUBSIDY_SAT - 1_000, SUBSIDY_SAT - 2_000)
    chain.broadcast(child)
    assert chain.trim_blocks(199) == [spend.txid, child.txid]  # the coinbase is immature at 199, so
    # the spend goes, and its child with it
    assert chain.mempool() == []
    assert chain.trim_blocks(100) == []
    assert chain.unspent([SCRIPT]) == []  # block 101's coinbase is gone


def test_parse_block_reads_consecutive_transactions() -> None:
    _, txs = parse_block(SUITE_BLOCK_1)
    assert len(txs) == 1 and txs[0].is_coinbase
    two = Transaction.parse(SUITE_TX_SPENDABLE)
    raw = SUITE_BLOCK_1[:80] + varint(2) + txs[0].serialize() + two.serialize()
    assert [t.txid for t in parse_block(raw)[1]] == [txs[0].txid, two.txid]
    with pytest.raises(DecodeError, match="after its 2 transactions"):
        parse_block(raw + b"\x00")
    with pytest.raises(DecodeError, match="block transaction 1"):
        parse_block(raw[:-3])
    assert Transaction.parse_prefix(raw, 81 + len(txs[0].serialize())) == (two, len(raw))
