"""The standard wallet through the daemon: mnemonic shown once, restore, encryption, withdraw, funds, history."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightspeed.api.node_secrets import decrypt_mnemonic, encrypt_mnemonic
from lightspeed.bitcoin.address import address_to_script, segwit_address
from lightspeed.bitcoin.network import REGTEST
from lightspeed.bitcoin.script import p2wpkh_script
from lightspeed.chain.hd import ExtendedKey, mnemonic_to_seed
from lightspeed.chain.regtest import RegtestChain
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import UsageError
from tests.test_daemon import ENV, PYTHON, Daemon, call, lightspeed

EXTERNAL = segwit_address(0, bytes(range(20)), REGTEST)  # an address that is not the node's


@pytest.fixture
def started() -> Iterator[list[Daemon]]:
    daemons: list[Daemon] = []
    try:
        yield daemons
    finally:
        for daemon in daemons:
            daemon.stop()


def _words_from_log(datadir: Path) -> list[str]:
    log = (datadir.parent / f"{datadir.name}.log").read_text()
    assert "write these 24 words down" in log and "shown only now" in log
    return [line.split(". ", 1)[1] for line in log.splitlines() if line[:4].strip().rstrip(".").isdigit()]


def _bip84_address(words: str, index: int) -> str:
    key = ExtendedKey.from_seed(mnemonic_to_seed(words)).derive(f"m/84'/1'/0'/0/{index}")
    return segwit_address(0, p2wpkh_script(key.pubkey)[2:], REGTEST)


@pytest.mark.slow
def test_new_node_shows_its_words_once_pays_out_and_a_restore_finds_everything(
        tmp_path: Path, started: list[Daemon]) -> None:
    chain_file = tmp_path / "chain.sqlite"
    alice = tmp_path / "alice"
    started.append(Daemon(alice, chain_file))
    words = _words_from_log(alice)
    assert len(words) == 24 and (alice / "wallet_mnemonic").read_text().split() == words
    assert (alice / "wallet_mnemonic").stat().st_mode & 0o777 == 0o600 and not (alice / "node_secret").exists()
    mnemonic = " ".join(words)
    node_key = ExtendedKey.from_seed(mnemonic_to_seed(mnemonic)).derive("m/1017'/1'/6'/0/0").privkey
    assert started[0].ready["node_id"] == pubkey_from_privkey(node_key).hex()

    first = call(alice, "newaddress")
    assert first == {"address": _bip84_address(mnemonic, 0), "type": "p2wpkh", "path": "m/84'/1'/0'/0/0"}
    taproot = call(alice, "newaddress", "--type", "p2tr")
    assert taproot["address"].startswith("bcrt1p") and taproot["path"] == "m/86'/1'/0'/0/0"
    chain = RegtestChain(chain_file)
    chain.fund(address_to_script(first["address"], REGTEST), 200_000)
    chain.fund(address_to_script(taproot["address"], REGTEST), 10_000)

    sent = call(alice, "withdraw", EXTERNAL, "50000", "--feerate", "1000")
    assert sent["amount_sat"] == 50_000
    chain.mine(1)
    funds = call(alice, "listfunds")
    assert all(o["spendable"] for o in funds["outputs"])  # P2TR coins are spent too (BIP 341 key path)
    change = [o for o in funds["outputs"] if o["type"] == "p2wpkh"]
    assert len(change) == 1 and change[0]["path"] == "m/84'/1'/0'/1/0" and change[0]["status"] == "confirmed"
    assert [o["value_sat"] for o in funds["outputs"] if o["type"] == "p2tr"] == [10_000]
    assert call(alice, "listunspent") == funds
    history = call(alice, "listtransactions")["transactions"]
    withdrawal = [t for t in history if t["txid"] == sent["txid"]]
    assert len(withdrawal) == 1 and withdrawal[0]["sent_sat"] == 200_000
    assert withdrawal[0]["fee_sat"] == 200_000 - 50_000 - change[0]["value_sat"] > 0
    assert withdrawal[0]["net_sat"] == -(50_000 + withdrawal[0]["fee_sat"])
    assert sum(t["net_sat"] for t in history) == funds["total_sat"]

    refused = lightspeed(alice, "withdraw", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "1000", check=False)
    assert refused.returncode == 1 and "not a regtest address" in refused.stderr and "Traceback" not in refused.stderr
    too_much = lightspeed(alice, "withdraw", EXTERNAL, "5000000", check=False)
    assert too_much.returncode == 1 and "insufficient funds" in too_much.stderr
    started[0].stop()

    words_file = tmp_path / "words.txt"
    words_file.write_text(mnemonic + "\n")
    restored = tmp_path / "restored"
    started.append(Daemon(restored, chain_file, "127.0.0.1:0", "--mnemonic-file", str(words_file)))
    assert started[1].ready["node_id"] == started[0].ready["node_id"]
    assert "write these" not in (tmp_path / "restored.log").read_text()  # restored words are not shown again
    again = call(restored, "listfunds")
    assert again["total_sat"] == funds["total_sat"] == again["spendable_sat"] == change[0]["value_sat"] + 10_000
    assert call(restored, "newaddress")["path"] == "m/84'/1'/0'/0/0"  # the spent key: BIP 84 gap scan, not used
    swept = call(restored, "withdraw", EXTERNAL, "all")  # spends the P2WPKH change and the P2TR coin
    assert change[0]["value_sat"] < swept["amount_sat"] < change[0]["value_sat"] + 10_000
    assert call(restored, "listfunds")["spendable_sat"] == 0


def test_encrypted_mnemonic_needs_its_passphrase(tmp_path: Path) -> None:
    passphrase = tmp_path / "pass.txt"
    passphrase.write_text("correct horse\n")
    datadir = tmp_path / "enc"
    init = subprocess.run([PYTHON, "-m", "lightspeed", "node", "init", "--datadir", str(datadir), "--words", "12",
                           "--passphrase-file", str(passphrase)], capture_output=True, text=True, timeout=60, env=ENV)
    assert init.returncode == 0, init.stderr
    assert "write these 12 words down" in init.stderr
    assert not (datadir / "wallet_mnemonic").exists() and (datadir / "wallet_mnemonic.enc").exists()
    shown = [line.split(". ", 1)[1] for line in init.stderr.splitlines() if line[:4].strip().rstrip(".").isdigit()]
    assert " ".join(shown) not in (datadir / "wallet_mnemonic.enc").read_text()
    chain = tmp_path / "chain.sqlite"
    start = [PYTHON, "-m", "lightspeed", "node", "start", "--datadir", str(datadir), "--listen", "127.0.0.1:0",
             "--chain", str(chain)]
    missing = subprocess.run(start, capture_output=True, text=True, timeout=60, env=ENV)
    assert missing.returncode == 1 and "encrypted; give --passphrase-file" in missing.stderr
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("incorrect horse")
    bad = subprocess.run([*start, "--passphrase-file", str(wrong)], capture_output=True, text=True, timeout=60, env=ENV)
    assert bad.returncode == 1 and "wrong passphrase" in bad.stderr and "Traceback" not in bad.stderr
    assert (datadir / "wallet_mnemonic.enc").exists()  # a refused start leaves the datadir as it was
    daemon = Daemon(datadir, chain, "127.0.0.1:0", "--passphrase-file", str(passphrase))
    try:
        key = ExtendedKey.from_seed(mnemonic_to_seed(" ".join(shown))).derive("m/1017'/1'/6'/0/0").privkey
        assert daemon.ready["node_id"] == pubkey_from_privkey(key).hex()
        assert "write these" not in (tmp_path / "enc.log").read_text()
    finally:
        daemon.stop()


def test_encryption_round_trip_and_tampering() -> None:
    sealed = encrypt_mnemonic("abandon " * 11 + "about", "pw")
    assert decrypt_mnemonic(sealed, "pw", "f") == "abandon " * 11 + "about"
    with pytest.raises(UsageError, match="f: wrong passphrase"):
        decrypt_mnemonic(sealed.replace(b'"ciphertext": "', b'"ciphertext": "00'), "pw", "f")
    with pytest.raises(UsageError, match="not an encrypted mnemonic file"):
        decrypt_mnemonic(b"abandon abandon", "pw", "f")
    with pytest.raises(UsageError, match="passphrase: empty"):
        encrypt_mnemonic("abandon", "")


def test_a_datadir_from_before_bip39_keeps_its_node_key(tmp_path: Path, started: list[Daemon]) -> None:
    datadir = tmp_path / "old"
    datadir.mkdir(mode=0o700)
    secret = os.urandom(32)
    (datadir / "node_secret").write_bytes(secret)
    (datadir / "node_secret").chmod(0o600)
    started.append(Daemon(datadir, tmp_path / "chain.sqlite", "127.0.0.1:0", "--new-store"))
    node_key = hmac.digest(secret, b"lightspeed/node key", hashlib.sha256)
    assert started[0].ready["node_id"] == pubkey_from_privkey(node_key).hex()
    assert not (datadir / "wallet_mnemonic").exists()
    refused = lightspeed(datadir, "newaddress", "--type", "p2tr", check=False)
    assert refused.returncode == 1 and "p2tr needs a BIP 39 wallet" in refused.stderr
