"""After our wallet spends its BIP 86 P2TR coins, Debian's Electrum 4.3.4 restoring the same words
(BIP 84, as its wizard does; Electrum has no P2TR wallets) sees the same balance: the spend reached
the chain through ``serve-electrum``, its change went to the BIP 84 change chain Electrum derives,
and no P2TR coin is left to hold value Electrum cannot see."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lightspeed.bitcoin.address import address_to_script
from lightspeed.bitcoin.network import REGTEST
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
from tests.test_wallet16_electrum_restore import ELECTRUM_BIP39

pytestmark = [pytest.mark.interop, pytest.mark.slow, pytest.mark.timeout(300)]
EXTERNAL = bytes.fromhex("0014") + bytes(range(20))


def test_electrum_434_sees_our_balance_after_a_p2tr_spend(tmp_path: Path) -> None:
    release = release_or_skip("4.3.4")
    words = generate_mnemonic(12)
    chain_file = tmp_path / "chain.sqlite"
    chain = RegtestChain(chain_file)
    ours = Wallet(HdSeed(mnemonic_to_seed(words)), chain, REGTEST)
    chain.fund(address_to_script(ours.new_address("p2tr"), REGTEST), 150_000)
    chain.fund(address_to_script(ours.new_address(), REGTEST), 40_000)
    chain.mine(1)
    spend = ours.withdraw(EXTERNAL, 100_000, feerate_per_kw=500)  # largest first: the P2TR coin alone
    assert [len(i.witness) for i in spend.inputs] == [1]  # a key path spend (one Schnorr signature)
    chain.mine(1)
    assert all(u.output.script_pubkey[:2] == b"\x00\x14" for u in ours.spendable())
    expected = ours.balance_sat(min_confirmations=1)
    assert 40_000 < expected < 90_000

    derived = subprocess.run([*release.argv[:1], "-c", ELECTRUM_BIP39], input=words, capture_output=True,
                             text=True, timeout=60, env=electrum_env())
    assert derived.returncode == 0, derived.stderr
    electrum = json.loads(derived.stdout)
    change = [o for o in spend.outputs if o.script_pubkey != EXTERNAL]
    assert [address_to_script(a, REGTEST) for a in electrum["change"][:1]] == [change[0].script_pubkey]

    server = ElectrumServer(chain_file, tmp_path / "server.log")
    wallet = ElectrumWallet(release, tmp_path / "electrum", "restored")
    try:
        wallet.cli("restore", "--offline", electrum["xprv"])
        for key, value in (("auto_connect", "false"), ("oneserver", "true"), ("server", server.address),
                           ("log_to_file", "true"), ("rpcport", str(wallet.rpc_port))):
            wallet.cli("setconfig", "--offline", key, value)
        wallet.start()
        wait_for("Electrum's balance", lambda: btc_to_sat(wallet.rpc("getbalance").get("confirmed", 0)) == expected,
                 seconds=90)
    finally:
        wallet.stop()
        server.stop()
        chain.close()
