"""The regtest faucet pays large amounts from several coinbases, and refuses what it cannot pay (issue 11, item 7)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lightspeed.bitcoin.address import script_to_address
from lightspeed.bitcoin.network import REGTEST
from lightspeed.bitcoin.script import p2wpkh_script
from lightspeed.chain import RegtestChain
from lightspeed.chain.regtest import FAUCET_MAX_SAT, SUBSIDY_SAT
from lightspeed.errors import UsageError

SCRIPT = p2wpkh_script(bytes(20))


def test_a_payment_above_one_coinbase_is_paid_from_several() -> None:
    chain = RegtestChain(":memory:")
    amount = SUBSIDY_SAT * 3 + 1  # used to loop forever: no single coinbase ever holds it
    outpoint = chain.fund(SCRIPT, amount)
    found = chain.get_transaction(outpoint.txid)
    assert found is not None and found[1] is not None
    tx = found[0]
    assert tx.outputs[0].value_sat == amount and tx.outputs[0].script_pubkey == SCRIPT
    assert len(tx.inputs) == 4
    assert [u.output.value_sat for u in chain.unspent([SCRIPT])] == [amount]


def test_the_faucet_pays_up_to_its_bound_and_refuses_beyond() -> None:
    chain = RegtestChain(":memory:")
    with pytest.raises(UsageError, match="amount_sat"):
        chain.fund(SCRIPT, FAUCET_MAX_SAT + 1)
    with pytest.raises(UsageError, match="amount_sat"):
        chain.fund(SCRIPT, 0)
    assert chain.tip()[0] == 0  # refused before mining anything
    outpoint = chain.fund(SCRIPT, FAUCET_MAX_SAT)
    assert [u.output.value_sat for u in chain.unspent([SCRIPT])] == [FAUCET_MAX_SAT]
    assert chain.get_transaction(outpoint.txid) is not None


def test_the_cli_says_why_instead_of_looping(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    RegtestChain(str(path)).close()
    address = script_to_address(SCRIPT, REGTEST)
    result = subprocess.run([sys.executable, "-m", "lightspeed", "chain", "send", "--chain", str(path), address,
                             str(FAUCET_MAX_SAT + 1)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1 and result.stderr.startswith("error: amount_sat: the faucet pays"), result.stderr
    assert "Traceback" not in result.stderr
