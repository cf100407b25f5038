"""BIP 39 / 32 / 84 / 86 vectors from the BIPs (tests/vectors/bip39_32_84_86.json) and the HD wallet on them."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lightspeed.bitcoin.address import segwit_address
from lightspeed.bitcoin.network import BITCOIN, REGTEST
from lightspeed.bitcoin.script import p2wpkh_script
from lightspeed.bitcoin.tx import TxOut
from lightspeed.chain.hd import (
    ExtendedKey,
    check_mnemonic,
    generate_mnemonic,
    mnemonic_to_seed,
    taproot_output_key,
)
from lightspeed.chain.regtest import RegtestChain
from lightspeed.chain.wallet import HdSeed, Wallet
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import UsageError

VECTORS = json.loads((Path(__file__).parent / "vectors" / "bip39_32_84_86.json").read_text())
ZPRV = bytes.fromhex("04b2430c")


@pytest.mark.parametrize("vector", VECTORS["bip39"], ids=lambda v: v["entropy"][:8])
def test_bip39_seed(vector: dict[str, str]) -> None:
    seed = mnemonic_to_seed(vector["mnemonic"], vector["passphrase"])
    assert seed.hex() == vector["seed"]
    assert ExtendedKey.from_seed(seed).serialize() == vector["root_xprv"]


@pytest.mark.parametrize("chain", VECTORS["bip32"]["chains"], ids=lambda c: c["path"])
def test_bip32_vector_1(chain: dict[str, str]) -> None:
    root = ExtendedKey.from_seed(bytes.fromhex(VECTORS["bip32"]["seed"]))
    assert root.derive(chain["path"]).serialize() == chain["xprv"]


def test_bip84_vectors(tmp_path: Path) -> None:
    v = VECTORS["bip84"]
    root = ExtendedKey.from_seed(mnemonic_to_seed(v["mnemonic"]))
    assert root.derive("m/84'/0'/0'").serialize(ZPRV) == v["account_zprv"]
    for address in v["addresses"]:
        key = root.derive(address["path"])
        assert key.pubkey.hex() == address["pubkey"]
    wallet = Wallet(HdSeed(mnemonic_to_seed(v["mnemonic"])), RegtestChain(tmp_path / "chain.sqlite"), BITCOIN)
    got = [wallet.new_address(), wallet.new_address(), wallet.address(wallet.new_key(change=True))]
    assert got == [a["address"] for a in v["addresses"]]


def test_bip86_vectors(tmp_path: Path) -> None:
    v = VECTORS["bip86"]
    root = ExtendedKey.from_seed(mnemonic_to_seed(v["mnemonic"]))
    assert root.derive("m/86'/0'/0'").serialize() == v["account_xprv"]
    for address in v["addresses"]:
        key = root.derive(address["path"])
        assert key.pubkey[1:].hex() == address["internal_key"]
        assert taproot_output_key(key.pubkey).hex() == address["output_key"]
        assert segwit_address(1, bytes.fromhex(address["output_key"]), BITCOIN) == address["address"]
    wallet = Wallet(HdSeed(mnemonic_to_seed(v["mnemonic"])), RegtestChain(tmp_path / "chain.sqlite"), BITCOIN)
    got = [wallet.new_address("p2tr"), wallet.new_address("p2tr"), wallet.address(wallet.new_key("p2tr", True))]
    assert got == [a["address"] for a in v["addresses"]]
    assert wallet.new_key("p2tr").script_pubkey[:2] == b"\x51\x20"


def test_generated_mnemonics_check_and_bad_ones_say_why() -> None:
    assert len(generate_mnemonic(12).split()) == 12
    assert check_mnemonic("  " + generate_mnemonic(24).upper() + " ").count(" ") == 23
    with pytest.raises(UsageError, match="12 or 24 words"):
        generate_mnemonic(13)
    with pytest.raises(UsageError, match="11 words"):
        check_mnemonic("abandon " * 10 + "about")
    with pytest.raises(UsageError, match="'bitcoin' is not a word"):
        check_mnemonic("abandon " * 11 + "bitcoin")
    with pytest.raises(UsageError, match="checksum"):
        check_mnemonic("abandon " * 12)


@given(st.text(max_size=40))
def test_derivation_paths_never_traceback(path: str) -> None:
    root = ExtendedKey.from_seed(bytes(16))
    with contextlib.suppress(UsageError):
        root.derive(path)


def test_hd_wallet_spends_to_change_chain_and_finds_coins_after_restore(tmp_path: Path) -> None:
    seed = HdSeed(mnemonic_to_seed(generate_mnemonic()))
    chain = RegtestChain(tmp_path / "chain.sqlite")
    wallet = Wallet(seed, chain, REGTEST)
    chain.fund(wallet.new_key().script_pubkey, 100_000)
    chain.mine(1)
    tx = wallet.send([TxOut(30_000, bytes.fromhex("0014") + bytes(20))], feerate_per_kw=253)
    change = [o for o in tx.outputs if o.value_sat != 30_000]
    assert change and wallet.owns(change[0].script_pubkey) is not None
    key = wallet.owns(change[0].script_pubkey)
    assert key is not None and key.change and key.path == "m/84'/1'/0'/1/0"
    chain.mine(1)
    restored = Wallet(seed, chain, REGTEST)
    assert restored.balance_sat() == wallet.balance_sat() == change[0].value_sat
    assert restored.new_key(change=True).index == 1  # the change key holding coins is not handed out again


def test_p2tr_coins_count_but_fee_bumps_with_foreign_inputs_keep_to_p2wpkh(tmp_path: Path) -> None:
    chain = RegtestChain(tmp_path / "chain.sqlite")
    wallet = Wallet(HdSeed(mnemonic_to_seed(generate_mnemonic())), chain, REGTEST)
    chain.fund(wallet.new_key("p2tr").script_pubkey, 50_000)
    assert wallet.balance_sat() == 50_000  # spent by the BIP 341 key path (tests/test_chain16_taproot.py)
    assert [u.output.value_sat for u in wallet.all_utxos()] == [50_000]
    assert wallet.utxos() == []  # a CPFP child of an anchor cannot sign a P2TR input blind to the anchor


def test_legacy_wallet_keeps_its_keys_and_refuses_p2tr(tmp_path: Path) -> None:
    chain = RegtestChain(tmp_path / "chain.sqlite")
    wallet = Wallet(b"s" * 32, chain, REGTEST)
    # the pre-BIP 39 scheme: HMAC-SHA256(seed, "lightspeed/wallet/p2wpkh/" || i || counter)
    first = hmac.digest(b"s" * 32, b"lightspeed/wallet/p2wpkh/" + bytes(4) + b"\x00", hashlib.sha256)
    assert wallet.new_key().script_pubkey == p2wpkh_script(pubkey_from_privkey(first))
    with pytest.raises(UsageError, match="p2tr needs a BIP 39 wallet"):
        wallet.new_key("p2tr")
