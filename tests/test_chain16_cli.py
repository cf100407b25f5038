"""`lightspeed node start` network options: refusals that must come before anything starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lightspeed.chain.regtest import RegtestChain


def _start(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lightspeed", "node", "start", "--datadir", str(tmp_path / "n"),
                           "--listen", "127.0.0.1:0", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("args", "message"), [
    (["--network", "bitcoin", "--electrum", "127.0.0.1:1:t"], "--network bitcoin: Lightspeed is not ready for real money"),
    (["--network", "signet"], "--network signet: needs --electrum HOST:PORT:s|t"),
    (["--electrum", "127.0.0.1:1:t", "--chain", "x.sqlite"], "--chain and --electrum: choose one"),
    (["--electrum", "127.0.0.1:50001"], "a server is HOST:PORT:s (TLS) or HOST:PORT:t (TCP)"),
])
def test_node_start_refuses_unsafe_or_incomplete_network_options(tmp_path: Path, args: list[str], message: str) -> None:
    result = _start(tmp_path, *args)
    assert result.returncode == 1 and result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "n").exists()  # nothing was left behind


def test_chain_reorg_replaces_the_tip_blocks_with_one_more(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    chain = RegtestChain(path, clock=None)
    chain.mine(5)
    old = chain.tip()
    chain.close()
    result = subprocess.run([sys.executable, "-m", "lightspeed", "chain", "reorg", "2", "--chain", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["replaced"], out["height"], out["dropped"]) == (2, old[0] + 1, [])
    chain = RegtestChain(path, clock=None)
    assert chain.tip()[0] == old[0] + 1 and chain.tip()[1] != old[1]
    too_deep = subprocess.run([sys.executable, "-m", "lightspeed", "chain", "reorg", "7", "--chain", str(path)],
                              capture_output=True, text=True, timeout=60)
    assert too_deep.returncode == 1 and "depth: 1 to 6 blocks" in too_deep.stderr
    chain.close()
