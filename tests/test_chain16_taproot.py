"""BIP 341 key path spending: the signature hash and signatures against the BIP's wallet vectors
(tests/vectors/bip341_wallet.json), the embedded chain's interpreter on witness v1 spends, and
the wallet spending its BIP 86 coins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lightspeed.bitcoin.interpreter import ScriptError, verify_input
from lightspeed.bitcoin.network import REGTEST
from lightspeed.bitcoin.sighash import bip341_sighash
from lightspeed.bitcoin.taproot import (
    key_path_witness_signature,
    schnorr_verify,
    taptweak,
    tweaked_privkey,
    tweaked_pubkey,
)
from lightspeed.bitcoin.tx import OutPoint, Transaction, TxIn, TxOut
from lightspeed.chain.hd import generate_mnemonic, mnemonic_to_seed
from lightspeed.chain.regtest import RegtestChain, RejectedTransaction
from lightspeed.chain.wallet import P2TR_INPUT_WEIGHT, P2WPKH_INPUT_WEIGHT, HdSeed, Wallet
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import UsageError
from tests.support.vectors import load_vectors

VECTORS = load_vectors("bip341_wallet.json")
KEY_PATH = VECTORS["keyPathSpending"][0]
EXTERNAL = bytes.fromhex("0014") + bytes(range(20))


def _spent_outputs() -> list[TxOut]:
    return [TxOut(u["amountSats"], bytes.fromhex(u["scriptPubKey"])) for u in KEY_PATH["given"]["utxosSpent"]]


def _unsigned() -> Transaction:
    return Transaction.parse(bytes.fromhex(KEY_PATH["given"]["rawUnsignedTx"]))


def _root(given: dict[str, Any]) -> bytes:
    return bytes.fromhex(given["merkleRoot"]) if given["merkleRoot"] else b""


@pytest.mark.parametrize("case", VECTORS["scriptPubKey"], ids=lambda c: str(c["given"]["internalPubkey"])[:8])
def test_output_key_of_every_script_pubkey_vector(case: dict[str, Any]) -> None:
    internal = bytes.fromhex(case["given"]["internalPubkey"])
    root = bytes.fromhex(case["intermediary"]["merkleRoot"]) if case["intermediary"]["merkleRoot"] else b""
    assert taptweak(internal, root).hex() == case["intermediary"]["tweak"]
    assert tweaked_pubkey(internal, root).hex() == case["intermediary"]["tweakedPubkey"]
    assert case["expected"]["scriptPubKey"] == "5120" + case["intermediary"]["tweakedPubkey"]


@pytest.mark.parametrize("case", KEY_PATH["inputSpending"], ids=lambda c: f"input{c['given']['txinIndex']}")
def test_key_path_sighash_and_witness_match_the_vectors(case: dict[str, Any]) -> None:
    given, mid = case["given"], case["intermediary"]
    privkey = bytes.fromhex(given["internalPrivkey"])
    assert pubkey_from_privkey(privkey)[1:].hex() == mid["internalPubkey"]
    assert tweaked_privkey(privkey, _root(given)).hex() == mid["tweakedPrivkey"]
    sighash = bip341_sighash(_unsigned(), given["txinIndex"], _spent_outputs(), given["hashType"])
    assert sighash.hex() == mid["sigHash"]
    witness_sig = key_path_witness_signature(privkey, sighash, given["hashType"], _root(given))
    assert [witness_sig.hex()] == case["expected"]["witness"]


def test_interpreter_accepts_the_vector_spends_and_rejects_tampering() -> None:
    tx, spent = _unsigned(), _spent_outputs()
    for case in KEY_PATH["inputSpending"]:
        index = case["given"]["txinIndex"]
        tx = tx.with_witness(index, tuple(bytes.fromhex(w) for w in case["expected"]["witness"]))
    for case in KEY_PATH["inputSpending"]:
        verify_input(tx, case["given"]["txinIndex"], spent[case["given"]["txinIndex"]], spent)
    first = KEY_PATH["inputSpending"][0]["given"]["txinIndex"]
    with pytest.raises(ScriptError, match="every input's spent output"):
        verify_input(tx, first, spent[first])
    lied = list(spent)
    lied[2] = TxOut(spent[2].value_sat + 1, spent[2].script_pubkey)  # a lie about another input's amount
    with pytest.raises(ScriptError, match="does not verify"):
        verify_input(tx, 3, spent[3], lied)  # input 3 signs SIGHASH_ALL: every amount is committed
    sig = tx.inputs[3].witness[0]
    with pytest.raises(ScriptError, match="65 with a non-zero type"):
        verify_input(tx.with_witness(3, (sig[:64] + b"\x00",)), 3, spent[3], spent)
    with pytest.raises(ScriptError, match="script path"):
        verify_input(tx.with_witness(3, (sig, b"\x51")), 3, spent[3], spent)
    annexed = tx.with_witness(3, (sig, b"\x50\x01"))  # an annex is signed: the old signature fails
    with pytest.raises(ScriptError, match="does not verify"):
        verify_input(annexed, 3, spent[3], spent)


def test_schnorr_verify_refuses_malformed_input_without_raising() -> None:
    assert not schnorr_verify(b"\x00" * 31, bytes(64), bytes(32))
    assert not schnorr_verify(bytes.fromhex("ff" * 32), bytes(64), bytes(32))
    assert not schnorr_verify(bytes.fromhex(VECTORS["scriptPubKey"][0]["intermediary"]["tweakedPubkey"]),
                              bytes(64), bytes(32))


def test_vector_file_carries_its_source() -> None:
    assert "bip-0341" in VECTORS["source"] and VECTORS["commit"]
    assert Path(__file__).parent.joinpath("vectors", "bip341_wallet.json").is_file()


def _hd_wallet(tmp_path: Path) -> tuple[Wallet, RegtestChain, HdSeed]:
    seed = HdSeed(mnemonic_to_seed(generate_mnemonic()))
    chain = RegtestChain(tmp_path / "chain.sqlite")
    return Wallet(seed, chain, REGTEST), chain, seed


def test_wallet_withdraws_from_p2tr_coins_and_the_chain_verifies_them(tmp_path: Path) -> None:
    wallet, chain, seed = _hd_wallet(tmp_path)
    chain.fund(wallet.new_key("p2tr").script_pubkey, 60_000)
    chain.fund(wallet.new_key("p2tr").script_pubkey, 40_000)
    chain.mine(1)
    tx = wallet.withdraw(EXTERNAL, 90_000, feerate_per_kw=1000)  # needs both P2TR coins
    assert len(tx.inputs) == 2 and all(len(i.witness) == 1 and len(i.witness[0]) == 64 for i in tx.inputs)
    assert chain.get_transaction(tx.txid) is not None  # accepted: the interpreter checked both key path spends
    fee = 100_000 - sum(o.value_sat for o in tx.outputs)
    # the estimate (57.5 vB per P2TR input) is the real weight: the fee is the feerate, not more, not less
    assert fee == tx.weight * 1000 // 1000 and tx.weight == 42 + 2 * P2TR_INPUT_WEIGHT + 2 * 4 * (9 + 22)
    chain.mine(1)
    change = [o for o in tx.outputs if o.script_pubkey != EXTERNAL]
    assert wallet.balance_sat() == change[0].value_sat
    assert Wallet(seed, chain, REGTEST).balance_sat() == change[0].value_sat  # a restore finds the change


def test_sweep_spends_p2tr_and_p2wpkh_together(tmp_path: Path) -> None:
    wallet, chain, _ = _hd_wallet(tmp_path)
    chain.fund(wallet.new_key("p2tr").script_pubkey, 30_000)
    chain.fund(wallet.new_key().script_pubkey, 20_000)
    chain.mine(1)
    tx = wallet.withdraw(EXTERNAL, None, feerate_per_kw=253)
    assert sorted(len(i.witness) for i in tx.inputs) == [1, 2]
    assert chain.get_transaction(tx.txid) is not None
    estimate = 42 + 4 * (9 + 22) + P2WPKH_INPUT_WEIGHT + P2TR_INPUT_WEIGHT  # ECDSA: 72-byte signatures assumed
    assert tx.weight <= estimate and tx.outputs[0].value_sat == 50_000 - estimate * 253 // 1000
    chain.mine(1)
    assert wallet.balance_sat() == 0


def test_a_p2tr_coin_is_not_signed_blind_to_the_other_inputs(tmp_path: Path) -> None:
    wallet, chain, _ = _hd_wallet(tmp_path)
    chain.fund(wallet.new_key("p2tr").script_pubkey, 30_000)
    coin = wallet.spendable()[0]
    foreign = OutPoint(bytes(32), 0)
    tx = Transaction(2, (TxIn(foreign), TxIn(coin.outpoint)), (TxOut(29_000, EXTERNAL),), 0)
    with pytest.raises(UsageError, match="input 1: a P2TR coin"):
        wallet.sign(tx, [coin], first=1)
    signed = wallet.sign(tx, [coin], first=1, spent_outputs=[TxOut(1000, EXTERNAL), coin.output])
    verify_input(signed, 1, coin.output, [TxOut(1000, EXTERNAL), coin.output])


def test_a_tampered_p2tr_spend_is_rejected_by_the_chain_with_its_reason(tmp_path: Path) -> None:
    wallet, chain, _ = _hd_wallet(tmp_path)
    chain.fund(wallet.new_key("p2tr").script_pubkey, 30_000)
    chain.mine(1)
    tx = wallet.create_transaction([TxOut(20_000, EXTERNAL)], feerate_per_kw=1000)
    sig = bytearray(tx.inputs[0].witness[0])
    sig[5] ^= 1
    with pytest.raises(RejectedTransaction, match="input 0: P2TR key path signature does not verify"):
        chain.broadcast(tx.with_witness(0, (bytes(sig),)))
