"""A real Electrum wallet (Debian's electrum 4.3.4) on `lightspeed chain serve-electrum`.

It checks what it is given: the genesis hash, every header's link to its parent, the merkle
proof of each of its transactions against the header. The wallet syncs to our tip, sees a
faucet payment confirmed, pays back with payto + broadcast (our chain validates it), and
sees its own transaction SPV-verified once mined. Skipped only where /usr/bin/electrum is
missing; CI installs Debian's ``electrum`` package (.ci/run).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from lightspeed.bitcoin.address import script_to_address
from lightspeed.bitcoin.network import REGTEST
from lightspeed.bitcoin.script import p2wpkh_script
from lightspeed.bitcoin.tx import Transaction
from lightspeed.chain import RegtestChain
from lightspeed.crypto.secp256k1 import pubkey_from_privkey

ELECTRUM = Path("/usr/bin/electrum")
pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(not ELECTRUM.exists(), reason="Debian's electrum is not installed (CI installs it)"),
]
PAY_BACK_TO = script_to_address(p2wpkh_script(pubkey_from_privkey(b"\x72" * 32)), REGTEST)


def lightspeed(*args: str) -> Any:
    result = subprocess.run([sys.executable, "-m", "lightspeed", *args], capture_output=True, text=True,
                            timeout=120, check=True)
    return json.loads(result.stdout)


class Wallet:
    """Debian's electrum command line on one data directory (its own Python, not our virtualenv)."""

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        self.env["HOME"] = str(datadir)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ELECTRUM), "--regtest", "-D", str(self.datadir), *args], capture_output=True,
                              text=True, timeout=60, check=check, env=self.env)

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args).stdout)


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 45) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last answer {last!r}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    chain_file = tmp_path / "chain.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "lightspeed", "chain", "serve-electrum", "--chain",
                             str(chain_file), "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        yield chain_file, json.loads(proc.stdout.readline())["electrum_server"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def test_electrum_syncs_receives_and_pays_back(tmp_path: Path, server: tuple[Path, str]) -> None:
    chain_file, address = server
    lightspeed("chain", "mine", "3", "--chain", str(chain_file))
    wallet = Wallet(tmp_path / "electrum")
    wallet.run("create", "--offline")
    # One setconfig makes Electrum write its config file (and its format version); the other
    # settings go into that JSON as setconfig stores them: each command line is a whole Electrum start
    wallet.run("setconfig", "--offline", "oneserver", "true")
    config_file = wallet.datadir / "regtest" / "config"
    config = json.loads(config_file.read_text())
    config.update({"auto_connect": False, "server": address})
    config_file.write_text(json.dumps(config, indent=4, sort_keys=True))
    wallet.run("daemon", "-d")
    try:
        wallet.run("load_wallet")
        tip = lightspeed("chain", "info", "--chain", str(chain_file))["height"]
        info = wait_for("electrum to connect and sync", lambda: (
            i if (i := wallet.json("getinfo"))["connected"] and i["blockchain_height"] == tip else None))
        assert info["server_height"] == tip and info["server"] == "127.0.0.1"

        receive = wallet.run("getunusedaddress").stdout.strip()
        paid = lightspeed("chain", "send", receive, "1000000", "--chain", str(chain_file))
        lightspeed("chain", "mine", "1", "--chain", str(chain_file))
        balance = wait_for("the payment", lambda: (b if (b := wallet.json("getbalance")).get("confirmed") == "0.01"
                                                   and "unconfirmed" not in b else None))
        assert balance == {"confirmed": "0.01"}
        history = wallet.json("onchain_history")["transactions"]
        assert [(t["txid"], t["incoming"]) for t in history] == [(paid["txid"], True)]
        assert history[0]["confirmations"] == 2  # SPV-verified: the merkle proof matched our header

        raw = wallet.run("payto", PAY_BACK_TO, "0.003").stdout.strip()
        tx = Transaction.parse(bytes.fromhex(raw))
        assert wallet.run("broadcast", raw).stdout.strip() == tx.txid_hex
        chain = RegtestChain(chain_file)
        assert chain.get_transaction(tx.txid) == (tx, 0)  # validated and in our mempool
        chain.close()
        # The same inputs with another locktime: a double spend of the payment in our mempool, at the same fee
        # (Electrum signals BIP 125: a replacement paying no more is refused as bitcoind does). Electrum shows
        # a server's message only when it holds one of bitcoind's reject reasons (ours are tagged with them).
        rejected = wallet.run("broadcast", raw[:-8] + "01000000", check=False)
        assert rejected.returncode != 0
        assert rejected.stderr.strip().splitlines()[0] == "insufficient fee"
        lightspeed("chain", "mine", "1", "--chain", str(chain_file))
        mined = wait_for("the payment back to be verified", lambda: next(
            (t for t in wallet.json("onchain_history")["transactions"]
             if t["txid"] == tx.txid_hex and t["confirmations"] == 1), None))
        assert mined["incoming"] is False and Decimal(mined["bc_value"]) < Decimal("-0.003")
        fee = Decimal(mined["bc_value"]).copy_abs() - Decimal("0.003")
        assert wallet.json("getbalance") == {"confirmed": str(Decimal("0.007") - fee).rstrip("0")}
    finally:
        wallet.run("stop", check=False)
