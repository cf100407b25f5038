"""The embedded regtest chain: each validation rule broken by exactly one transaction, restarts, the wallet."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.bitcoin.script import (
    OP_CHECKSEQUENCEVERIFY,
    OP_CHECKSIG,
    OP_DROP,
    multisig_2of2,
    p2pkh_script_code,
    p2wpkh_script,
    p2wsh_script,
    script,
)
from lightspeed.bitcoin.sighash import SIGHASH_ALL, bip143_sighash, sign_input
from lightspeed.bitcoin.tx import OutPoint, Transaction, TxIn, TxOut
from lightspeed.chain import RegtestChain, Wallet
from lightspeed.crypto.hashes import hash160
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import RejectedTransaction

KEY = b"\x31" * 32
PUB = pubkey_from_privkey(KEY)
SPK = p2wpkh_script(PUB)


def spend_p2wpkh(outpoint: OutPoint, value: int, outputs: list[TxOut], *, key: bytes = KEY, locktime: int = 0,
                 sequence: int = 0xFFFFFFFF, version: int = 2) -> Transaction:
    pub = pubkey_from_privkey(key)
    tx = Transaction(version, (TxIn(outpoint, sequence=sequence),), tuple(outputs), locktime)
    sighash = bip143_sighash(tx, 0, p2pkh_script_code(hash160(pub)), value, SIGHASH_ALL)
    return tx.with_witness(0, (sign_input(key, sighash, SIGHASH_ALL), pub))


def spend_p2wsh(outpoint: OutPoint, value: int, witness_script: bytes, keys: list[bytes], outputs: list[TxOut],
                *, sequence: int = 0xFFFFFFFF, prefix: tuple[bytes, ...] = ()) -> Transaction:
    tx = Transaction(2, (TxIn(outpoint, sequence=sequence),), tuple(outputs), 0)
    sighash = bip143_sighash(tx, 0, witness_script, value, SIGHASH_ALL)
    sigs = tuple(sign_input(k, sighash, SIGHASH_ALL) for k in keys)
    return tx.with_witness(0, (*prefix, *sigs, witness_script))


@pytest.fixture
def chain() -> RegtestChain:
    return RegtestChain(":memory:")


def test_valid_spend_is_accepted_then_confirmed(chain: RegtestChain) -> None:
    coin = chain.fund(SPK, 100_000)
    tx = spend_p2wpkh(coin, 100_000, [TxOut(99_000, SPK)])
    assert chain.broadcast(tx) == tx.txid
    assert chain.get_transaction(tx.txid) == (tx, 0)
    chain.mine(1)
    assert chain.get_transaction(tx.txid) == (tx, 1)
    assert chain.spending_tx(coin) == tx
    # the miner collected the 1,000 sat fee
    coinbase_value = chain.unspent([chain.miner_script])[-1].output.value_sat
    assert coinbase_value == 50 * 10**8 + 1000


def test_double_spend_in_chain_and_in_mempool(chain: RegtestChain) -> None:
    coin = chain.fund(SPK, 100_000)
    first = spend_p2wpkh(coin, 100_000, [TxOut(90_000, SPK)])
    second = spend_p2wpkh(coin, 100_000, [TxOut(80_000, SPK)])
    chain.broadcast(first)
    with pytest.raises(RejectedTransaction, match=r"input 0: .* already spent in the mempool"):
        chain.broadcast(second)
    chain.mine(1)
    with pytest.raises(RejectedTransaction, match="already spent in the chain"):
        chain.broadcast(second)


def test_overspend_missing_input_and_immature_coinbase(chain: RegtestChain) -> None:
    coin = chain.fund(SPK, 100_000)
    with pytest.raises(RejectedTransaction, match="exceed inputs"):
        chain.broadcast(spend_p2wpkh(coin, 100_000, [TxOut(100_001, SPK)]))
    with pytest.raises(RejectedTransaction, match="does not exist"):
        chain.broadcast(spend_p2wpkh(OutPoint(b"\x42" * 32, 0), 100_000, [TxOut(1, SPK)]))
    chain.mine(1, to_script=SPK)
    fresh = chain.unspent([SPK])[-1]
    with pytest.raises(RejectedTransaction, match="immature"):
        chain.broadcast(spend_p2wpkh(fresh.outpoint, fresh.output.value_sat, [TxOut(1000, SPK)]))
    chain.mine(99)
    chain.broadcast(spend_p2wpkh(fresh.outpoint, fresh.output.value_sat, [TxOut(1000, SPK)]))


def test_absolute_locktime(chain: RegtestChain) -> None:
    coin = chain.fund(SPK, 100_000)
    height = chain.tip()[0]
    early = spend_p2wpkh(coin, 100_000, [TxOut(99_000, SPK)], locktime=height + 2, sequence=0xFFFFFFFE)
    with pytest.raises(RejectedTransaction, match=r"locktime .* not reached"):
        chain.broadcast(early)
    chain.mine(2)
    chain.broadcast(early)


def test_relative_locktime_bip68_and_csv(chain: RegtestChain) -> None:
    witness_script = script(b"\x03", OP_CHECKSEQUENCEVERIFY, OP_DROP, PUB, OP_CHECKSIG)
    coin = chain.fund(p2wsh_script(witness_script), 100_000)  # confirmed at the tip
    too_soon = spend_p2wsh(coin, 100_000, witness_script, [KEY], [TxOut(99_000, SPK)], sequence=3)
    with pytest.raises(RejectedTransaction, match="relative locktime of 3 blocks not reached"):
        chain.broadcast(too_soon)
    weak = spend_p2wsh(coin, 100_000, witness_script, [KEY], [TxOut(99_000, SPK)], sequence=2)
    chain.mine(2)
    with pytest.raises(RejectedTransaction, match="input 0: CHECKSEQUENCEVERIFY: input sequence 2 is below 3"):
        chain.broadcast(weak)
    chain.broadcast(too_soon)


def test_bad_signature_wrong_script_and_2of2(chain: RegtestChain) -> None:
    key2 = b"\x32" * 32
    funding = multisig_2of2(PUB, pubkey_from_privkey(key2))
    coin = chain.fund(p2wsh_script(funding), 200_000)
    keys = sorted([KEY, key2], key=pubkey_from_privkey)  # signatures in key order
    one_sig = spend_p2wsh(coin, 200_000, funding, keys[:1], [TxOut(199_000, SPK)], prefix=(b"",))
    with pytest.raises(RejectedTransaction, match="input 0: "):
        chain.broadcast(one_sig)
    wrong_script = spend_p2wsh(coin, 200_000, funding + b"\x75\x51", keys, [TxOut(199_000, SPK)], prefix=(b"",))
    with pytest.raises(RejectedTransaction, match="witness script does not match"):
        chain.broadcast(wrong_script)
    good = spend_p2wsh(coin, 200_000, funding, keys, [TxOut(199_000, SPK)], prefix=(b"",))
    sig = bytearray(good.inputs[0].witness[1])
    sig[10] ^= 1
    forged = good.with_witness(0, (b"", bytes(sig), good.inputs[0].witness[2], funding))
    with pytest.raises(RejectedTransaction, match="input 0: signature does not verify"):
        chain.broadcast(forged)
    chain.broadcast(good)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 70), st.integers(1, 255))
def test_any_single_byte_change_to_a_signature_is_rejected(position: int, flip: int) -> None:
    chain = RegtestChain(":memory:")
    coin = chain.fund(SPK, 50_000)
    tx = spend_p2wpkh(coin, 50_000, [TxOut(49_000, SPK)])
    sig = bytearray(tx.inputs[0].witness[0])
    sig[position % len(sig)] ^= flip
    with pytest.raises(RejectedTransaction, match="input 0: "):
        chain.broadcast(tx.with_witness(0, (bytes(sig), PUB)))
    chain.broadcast(tx)


def test_restart_keeps_every_block_and_utxo(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    chain = RegtestChain(path)
    coin = chain.fund(SPK, 123_456)
    tip = chain.tip()
    unspent = chain.unspent([SPK, chain.miner_script])
    chain.close()
    again = RegtestChain(path)
    assert again.tip() == tip
    assert again.unspent([SPK, again.miner_script]) == unspent
    again.broadcast(spend_p2wpkh(coin, 123_456, [TxOut(120_000, SPK)]))
    again.mine(1)
    assert again.tip()[0] == tip[0] + 1


def test_wallet_funds_a_channel_output_and_spends_it_back(chain: RegtestChain) -> None:
    wallet = Wallet(b"wallet seed for tests", chain)
    address_key = wallet.new_key()
    chain.fund(address_key.script_pubkey, 1_000_000)
    chain.fund(wallet.new_key().script_pubkey, 300_000)
    assert wallet.balance_sat(min_confirmations=1) == 1_300_000
    other = b"\x33" * 32
    funding = multisig_2of2(address_key.pubkey, pubkey_from_privkey(other))
    tx = wallet.send([TxOut(1_100_000, p2wsh_script(funding))])
    chain.mine(1)
    assert chain.get_transaction(tx.txid) == (tx, 1)
    change = wallet.balance_sat()
    assert 1_300_000 - 1_100_000 - 2_000 < change < 200_000  # fee of a 2-in, 2-out tx at 253 sat/kw
    # Spend the 2-of-2 back to the wallet with both signatures.
    keys = sorted([address_key.privkey, other], key=pubkey_from_privkey)
    back = spend_p2wsh(OutPoint(tx.txid, 0), 1_100_000, funding, keys,
                       [TxOut(1_099_000, wallet.new_key().script_pubkey)], prefix=(b"",))
    chain.broadcast(back)
    chain.mine(1)
    assert wallet.balance_sat() == change + 1_099_000
    # A restored wallet (same seed) finds the same coins.
    assert Wallet(b"wallet seed for tests", chain).balance_sat() == wallet.balance_sat()
    before = wallet.balance_sat()
    swept = wallet.sweep(SPK)
    assert before - 1_000 < swept.outputs[0].value_sat < before
    assert wallet.balance_sat() == 0


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 2**256 - 2**129), st.integers(10_000, 10**8), st.integers(0, 5_000),
       st.lists(st.integers(1, 10**6), min_size=1, max_size=4))
def test_random_valid_spends_are_accepted(key_int: int, value: int, fee: int, splits: list[int]) -> None:
    key = key_int.to_bytes(32, "big")
    spk = p2wpkh_script(pubkey_from_privkey(key))
    chain = RegtestChain(":memory:")
    coin = chain.fund(spk, value)
    budget = value - fee
    total = sum(splits)
    outputs = [TxOut(max(1, budget * s // total), SPK) for s in splits]
    if sum(o.value_sat for o in outputs) > budget:
        outputs = [TxOut(budget, SPK)]
    tx = spend_p2wpkh(coin, value, outputs, key=key)
    assert chain.broadcast(tx) == tx.txid
    chain.mine(1)
    assert chain.get_transaction(tx.txid) == (tx, 1)
