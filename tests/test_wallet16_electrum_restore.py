"""Restoring our BIP 39 words in Debian's Electrum 4.3.4 shows the same addresses and the same balance.

Electrum's command line ``restore`` takes Electrum's own seed format only (4.3.4: ``is_seed`` knows no
BIP 39); its wizard restores BIP 39 words with ``keystore.bip39_to_seed`` and
``keystore.from_bip43_rootseed(seed, "m/84'/1'/0'", xtype="p2wpkh")``. This test runs exactly that,
Electrum's code under Debian's python3, so the words are turned into keys by Electrum, not by us;
the account key Electrum derives is then restored in an Electrum daemon (``restore <vprv>``, the
same keystore) that syncs against ``lightspeed chain serve-electrum`` and reports the balance.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lightspeed.bitcoin.address import address_to_script
from lightspeed.bitcoin.network import REGTEST
from lightspeed.bitcoin.tx import TxOut
from lightspeed.chain.hd import generate_mnemonic, mnemonic_to_seed
from lightspeed.chain.regtest import RegtestChain
from lightspeed.chain.wallet import HdSeed, Wallet
from tests.interop.electrum_harness import (
    ElectrumServer,
    ElectrumWallet,
    btc_to_sat,
    electrum_env,
    release_or_skip,
    wait_for,
)

pytestmark = [pytest.mark.interop, pytest.mark.slow, pytest.mark.timeout(300)]

# Electrum's BIP 39 restore, as its wizard does it (electrum/keystore.py, 4.3.4).
ELECTRUM_BIP39 = """
import json, sys
from electrum import bitcoin, constants, keystore
constants.set_regtest()
words = sys.stdin.read().strip()
checksum_ok, wordlist_ok = keystore.bip39_is_checksum_valid(words)
assert checksum_ok and wordlist_ok, (checksum_ok, wordlist_ok)
k = keystore.from_bip43_rootseed(keystore.bip39_to_seed(words, ""), "m/84'/1'/0'", xtype="p2wpkh")
addr = lambda change, i: bitcoin.pubkey_to_address("p2wpkh", k.derive_pubkey(change, i).hex())
print(json.dumps({"xprv": k.get_master_private_key(None),
                  "receive": [addr(0, i) for i in range(3)], "change": [addr(1, i) for i in range(2)]}))
"""


def test_electrum_434_restores_our_words(tmp_path: Path) -> None:
    release = release_or_skip("4.3.4")
    words = generate_mnemonic(12)
    chain_file = tmp_path / "chain.sqlite"
    chain = RegtestChain(chain_file)
    ours = Wallet(HdSeed(mnemonic_to_seed(words)), chain, REGTEST)
    receive = [ours.new_address() for _ in range(3)]
    chain.fund(address_to_script(receive[0], REGTEST), 150_000)
    chain.fund(address_to_script(receive[1], REGTEST), 40_000)
    ours.send([TxOut(60_000, bytes.fromhex("0014") + bytes(20))], feerate_per_kw=500)  # makes change
    chain.mine(1)
    change = [ours.address(k) for u in ours.utxos() if (k := ours.owns(u.output.script_pubkey)) is not None and k.change]
    assert len(change) == 1

    derived = subprocess.run([*release.argv[:1], "-c", ELECTRUM_BIP39], input=words, capture_output=True,
                             text=True, timeout=60, env=electrum_env())
    assert derived.returncode == 0, derived.stderr
    electrum = json.loads(derived.stdout)
    assert electrum["receive"] == receive
    assert electrum["change"][0] == change[0]
    assert electrum["xprv"].startswith("vprv")  # BIP 84's testnet/regtest account key

    server = ElectrumServer(chain_file, tmp_path / "server.log")
    wallet = ElectrumWallet(release, tmp_path / "electrum", "restored")
    try:
        wallet.cli("restore", "--offline", electrum["xprv"])
        for key, value in (("auto_connect", "false"), ("oneserver", "true"), ("server", server.address),
                           ("log_to_file", "true"), ("rpcport", str(wallet.rpc_port))):
            wallet.cli("setconfig", "--offline", key, value)
        wallet.start()
        addresses = wallet.rpc("listaddresses", receiving=True)
        assert addresses[:3] == receive
        expected = ours.balance_sat(min_confirmations=1)
        assert expected > 0
        wait_for("Electrum's balance", lambda: btc_to_sat(wallet.rpc("getbalance").get("confirmed", 0)) == expected,
                 seconds=90)
    finally:
        wallet.stop()
        server.stop()
        chain.close()
