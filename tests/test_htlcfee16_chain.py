"""The regtest chain's fee market: minimum relay feerate, package relay, congested blocks, BIP 125
replacement, their commands, and the deadline feerate of HTLC claims. Each limit at its boundary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lightspeed.bitcoin.tx import OutPoint, Transaction, TxOut
from lightspeed.chain import RegtestChain
from lightspeed.chain.fee_policy import feerate_per_kw
from lightspeed.chain.regtest import PackageRejected
from lightspeed.cli.main import cli
from lightspeed.errors import RejectedTransaction, UsageError
from lightspeed.node.htlc_bump import DEADLINE_WINDOW_BLOCKS, MAX_DEADLINE_FACTOR, deadline_feerate
from tests.test_chain import SPK, spend_p2wpkh

RBF = 0xFFFFFFFD  # BIP 125 signalling


@pytest.fixture
def chain() -> RegtestChain:
    return RegtestChain(":memory:", clock=None)


def _feerate(chain: RegtestChain, tx: Transaction, value_in: int) -> int:
    return feerate_per_kw(value_in - sum(o.value_sat for o in tx.outputs), tx.weight)


def test_min_relay_feerate_refuses_below_and_accepts_at_it(chain: RegtestChain) -> None:
    coin = chain.fund(SPK, 100_000)
    tx = spend_p2wpkh(coin, 100_000, [TxOut(99_800, SPK)])
    rate = _feerate(chain, tx, 100_000)
    assert chain.min_relay_feerate_per_kw() == 0  # the default: any fee (what existing tests rely on)
    chain.set_min_relay_feerate(rate + 1)
    with pytest.raises(RejectedTransaction, match=rf"feerate {rate} sat/kw \(fee 200 sat\) is below the minimum "
                                                  rf"relay feerate {rate + 1} sat/kw"):
        chain.broadcast(tx)
    assert chain.mempool() == []
    chain.set_min_relay_feerate(rate)
    assert chain.broadcast(tx) == tx.txid
    with pytest.raises(UsageError, match="min_relay_feerate_per_kw: -1 is outside"):
        chain.set_min_relay_feerate(-1)


def test_a_package_pays_for_its_zero_fee_parent_and_is_judged_as_a_whole(chain: RegtestChain) -> None:
    coin = chain.fund(SPK, 100_000)
    parent = spend_p2wpkh(coin, 100_000, [TxOut(100_000, SPK)])  # zero fee
    child = spend_p2wpkh(OutPoint(parent.txid, 0), 100_000, [TxOut(99_500, SPK)])
    package_rate = feerate_per_kw(500, parent.weight + child.weight)
    chain.set_min_relay_feerate(package_rate + 1)
    with pytest.raises(RejectedTransaction, match="below the minimum relay feerate"):
        chain.broadcast(parent)
    with pytest.raises(PackageRejected, match=rf"package feerate {package_rate} sat/kw is below"):
        chain.broadcast_package([parent, child])
    assert chain.mempool() == []  # nothing of a refused package stays
    chain.set_min_relay_feerate(package_rate)
    chain.broadcast_package([parent, child])
    assert chain.mempool() == [parent.txid, child.txid]


def test_congested_blocks_leave_low_fee_transactions_waiting_until_a_child_pays(chain: RegtestChain) -> None:
    coin = chain.fund(SPK, 100_000)
    low = spend_p2wpkh(coin, 100_000, [TxOut(99_900, SPK)])
    rate = _feerate(chain, low, 100_000)
    chain.broadcast(low)
    chain.congest(rate + 1)
    chain.mine(1)
    assert chain.get_transaction(low.txid) == (low, 0)  # waits
    chain.congest(rate)  # exactly at the threshold: mined
    chain.mine(1)
    assert chain.get_transaction(low.txid) == (low, 1)
    # CPFP: a child lifts its waiting parent's package over the threshold
    coin = chain.fund(SPK, 100_000)
    parent = spend_p2wpkh(coin, 100_000, [TxOut(99_900, SPK)])
    chain.broadcast(parent)
    chain.congest(5 * rate)
    chain.mine(1)
    assert chain.get_transaction(parent.txid) == (parent, 0)
    child = spend_p2wpkh(OutPoint(parent.txid, 0), 99_900, [TxOut(97_000, SPK)])
    chain.broadcast(child)
    chain.mine(1)
    assert chain.get_transaction(parent.txid) == (parent, 1) and chain.get_transaction(child.txid) == (child, 1)
    chain.congest(None)
    assert chain.congested_below_per_kw() == 0


def test_replacement_needs_bip125_signalling_and_the_replaced_fees_plus_its_own_size(chain: RegtestChain) -> None:
    coin = chain.fund(SPK, 100_000)
    first = spend_p2wpkh(coin, 100_000, [TxOut(99_000, SPK)], sequence=RBF)  # 1,000 sat
    chain.broadcast(first)
    descendant = spend_p2wpkh(OutPoint(first.txid, 0), 99_000, [TxOut(98_500, SPK)])  # 500 sat more to beat
    chain.broadcast(descendant)
    probe = spend_p2wpkh(coin, 100_000, [TxOut(1, SPK)], sequence=RBF)
    needed = 1_000 + 500 + probe.vsize  # BIP 125 rules 3 and 4
    short = spend_p2wpkh(coin, 100_000, [TxOut(100_000 - needed + 1, SPK)], sequence=RBF)
    with pytest.raises(RejectedTransaction, match=r"must pay 1 sat more"):
        chain.broadcast(short)
    enough = spend_p2wpkh(coin, 100_000, [TxOut(100_000 - needed, SPK)], sequence=RBF)
    chain.broadcast(enough)
    assert chain.mempool() == [enough.txid]  # the replaced and its descendant are gone
    assert chain.spending_tx(coin) == enough and chain.get_transaction(descendant.txid) is None
    # a transaction that does not signal is not replaced, whatever it pays
    other = chain.fund(SPK, 100_000)
    final = spend_p2wpkh(other, 100_000, [TxOut(99_000, SPK)])
    chain.broadcast(final)
    with pytest.raises(RejectedTransaction, match=r"already spent in the mempool by [0-9a-f]{64} \(not replaceable\)"):
        chain.broadcast(spend_p2wpkh(other, 100_000, [TxOut(50_000, SPK)], sequence=RBF))


def test_chain_congest_and_min_relay_commands(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    RegtestChain(path).close()
    runner = CliRunner()
    done = runner.invoke(cli, ["chain", "set-feerate", "1000", "--min-relay", "253", "--chain", str(path)])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output) == {"feerate_per_kw": 1000, "min_relay_feerate_per_kw": 253}
    done = runner.invoke(cli, ["chain", "congest", "--below", "2000", "--chain", str(path)])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output) == {"congested_below_per_kw": 2000}
    reader = RegtestChain(path)  # every process on the file sees it
    assert reader.congested_below_per_kw() == 2000 and reader.min_relay_feerate_per_kw() == 253
    done = runner.invoke(cli, ["chain", "congest", "--below", "-1", "--chain", str(path)])
    assert done.exit_code != 0 and "Traceback" not in done.output
    done = runner.invoke(cli, ["chain", "congest", "--below", "10000001", "--chain", str(path)])
    assert done.exit_code != 0 and "below: 10000001 sat/kw is outside 0..10000000" in done.output
    done = runner.invoke(cli, ["chain", "congest", "--below", "0", "--chain", str(path)])
    assert json.loads(done.output) == {"congested_below_per_kw": 0}
    reader.close()


def test_the_deadline_feerate_climbs_from_the_estimate_to_its_maximum() -> None:
    assert deadline_feerate(1000, 1000) == 1000
    assert deadline_feerate(1000, DEADLINE_WINDOW_BLOCKS) == 1000  # the window's edge: the estimate
    assert deadline_feerate(1000, DEADLINE_WINDOW_BLOCKS - 1) == 1250  # one block in: higher
    assert deadline_feerate(1000, 0) == MAX_DEADLINE_FACTOR * 1000
    assert deadline_feerate(1000, -5) == MAX_DEADLINE_FACTOR * 1000  # past it: no higher
    rates = [deadline_feerate(2500, left) for left in range(DEADLINE_WINDOW_BLOCKS, -1, -1)]
    assert rates == sorted(rates) and len(set(rates)) == len(rates)
