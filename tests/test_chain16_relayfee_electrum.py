"""Debian's Electrum 4.3.4 (its own ``Network`` code under Debian's python3) connected to
``serve-electrum`` takes the chain's minimum relay feerate as its relay fee: the floor of its fee
rates and of its dust threshold (``bitcoin.relayfee`` / ``dust_threshold``)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lightspeed.chain.regtest import RegtestChain
from tests.interop.electrum_harness import ElectrumServer, electrum_env, release_or_skip

pytestmark = [pytest.mark.interop, pytest.mark.slow, pytest.mark.timeout(180)]

# Electrum's network layer alone: connect to one server, wait for its answer to blockchain.relayfee.
ELECTRUM_RELAY_FEE = """
import json, os, sys, time
from electrum import bitcoin, constants
from electrum.network import Network
from electrum.simple_config import SimpleConfig
from electrum.util import create_and_start_event_loop
constants.set_regtest()
create_and_start_event_loop()
config = SimpleConfig({"oneserver": True, "auto_connect": False, "server": sys.argv[1],
                       "electrum_path": sys.argv[2], "regtest": True})
network = Network(config)
network.start()
deadline = time.time() + 60
while network.relay_fee is None and time.time() < deadline:
    time.sleep(0.1)
print(json.dumps({"relay_fee": network.relay_fee, "relayfee": bitcoin.relayfee(network),
                  "dust_threshold": bitcoin.dust_threshold(network)}), flush=True)
os._exit(0)
"""


def test_electrum_434_takes_the_chains_minimum_relay_feerate(tmp_path: Path) -> None:
    release = release_or_skip("4.3.4")
    chain_file = tmp_path / "chain.sqlite"
    chain = RegtestChain(chain_file)
    chain.mine(1)
    chain.set_min_relay_feerate(2500)  # sat/kw: 10,000 sat/kvB
    server = ElectrumServer(chain_file, tmp_path / "server.log")
    try:
        seen = subprocess.run([release.argv[0], "-c", ELECTRUM_RELAY_FEE, server.address, str(tmp_path / "el")],
                              capture_output=True, text=True, timeout=120, env=electrum_env())
    finally:
        server.stop()
        chain.close()
    assert seen.returncode == 0, seen.stderr[-2000:]
    # 182 bytes * 3 at the relay fee: Electrum's dust threshold rises with it (546 at 1 sat/vB)
    assert json.loads(seen.stdout) == {"relay_fee": 10_000, "relayfee": 10_000, "dust_threshold": 5460}
