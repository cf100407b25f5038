"""The fee bumping rules as functions (issue 16): the replacement feerate of a sweep, the fee of a
CPFP child and its replacement, and the caps, checked against a real wallet and regtest chain."""

from __future__ import annotations

import pytest

from lightspeed.bitcoin.tx import TxOut
from lightspeed.chain import RegtestChain
from lightspeed.chain.fee_policy import feerate_per_kw
from lightspeed.chain.source import Utxo
from lightspeed.chain.wallet import Wallet
from lightspeed.errors import PaymentError
from lightspeed.node.fee_bumper import (
    MAX_FEERATE_PER_KW,
    ParentBumper,
    build_child,
    child_fee,
    fee_paid,
)
from lightspeed.node.htlc_bump import MAX_DEADLINE_FACTOR
from lightspeed.node.sweep_rbf import SWEEP_STEP_PER_KW, next_sweep_feerate, within_cap


def test_a_sweep_is_replaced_only_when_the_estimate_or_its_deadline_asks_more() -> None:
    assert next_sweep_feerate(1000, 1000, None, 100) is None  # no deadline: the estimate, already paid
    assert next_sweep_feerate(1100, 1000, None, 100) == 1000 + SWEEP_STEP_PER_KW  # at least a BIP 125 step
    assert next_sweep_feerate(3000, 1000, None, 100) == 3000
    assert next_sweep_feerate(1000, 1000, 200, 100) is None  # the deadline is far: the estimate
    assert next_sweep_feerate(1000, 1000, 100, 100) == MAX_DEADLINE_FACTOR * 1000  # at the deadline: 4x
    assert next_sweep_feerate(10**7, 1000, None, 100) == MAX_FEERATE_PER_KW  # capped
    assert next_sweep_feerate(10**7, MAX_FEERATE_PER_KW, None, 100) is None  # nothing beyond the cap


def test_a_sweep_may_spend_at_most_half_of_what_it_sweeps_on_fees() -> None:
    from lightspeed.bitcoin.tx import OutPoint, Transaction, TxIn

    tx = Transaction(2, (TxIn(OutPoint(bytes(32), 0)),), (TxOut(5_000, b"\x00" * 22),), 0)
    assert within_cap(10_000, tx)
    assert not within_cap(10_001, tx)  # a fee of 5,001 sat out of 10,001


def test_a_replacement_child_pays_the_replaced_fee_plus_its_own_size() -> None:
    assert child_fee(1000, 0, 600, 2000, None) == -(-2000 * 1604 // 1000)  # the package at 2000 sat/kw
    assert child_fee(1000, 5000, 600, 2000, None) == 0  # the parent pays enough alone
    from lightspeed.node.fee_bumper import Child

    previous = Child(tx=None, feerate_per_kw=2000, fee_sat=3000, height=0)  # type: ignore[arg-type]
    assert child_fee(1000, 0, 600, 1000, previous) == 3000 + 151 + 1  # BIP 125 rules 3 and 4, above the package's 1,604


@pytest.fixture
def funded() -> tuple[RegtestChain, Wallet]:
    chain = RegtestChain(":memory:", clock=None)
    wallet = Wallet(b"rbf16 unit wallet", chain)
    chain.fund(wallet.new_key().script_pubkey, 200_000)
    chain.fund(wallet.new_key().script_pubkey, 300_000)
    return chain, wallet


def test_a_child_never_pays_above_the_cap_feerate_nor_its_fee_cap(funded: tuple[RegtestChain, Wallet]) -> None:
    chain, wallet = funded
    parent = wallet.create_transaction([TxOut(100_000, b"\x00\x20" + bytes(32))], feerate_per_kw=300)
    chain.broadcast(parent)
    ours = [Utxo(parent.outpoint(n), o, None) for n, o in enumerate(parent.outputs) if wallet.owns(o.script_pubkey)]
    parent_fee = fee_paid(chain, parent)
    child = build_child(wallet, parent, parent_fee, 10**7, ours, None, 10**9, chain.tip()[0])
    rate = feerate_per_kw(parent_fee + fee_paid(chain, child.tx), parent.weight + child.tx.weight)
    assert rate <= MAX_FEERATE_PER_KW and rate > MAX_FEERATE_PER_KW * 99 // 100
    with pytest.raises(PaymentError, match=r"a fee of \d+ sat is above the cap of 1000 sat"):
        build_child(wallet, parent, parent_fee, 20_000, ours, None, 1000, chain.tip()[0])


def test_a_parent_waiting_is_cpfpd_then_replaced_as_its_deadline_nears(funded: tuple[RegtestChain, Wallet]) -> None:
    chain, wallet = funded
    chain.set_min_relay_feerate(253)
    chain.congest(100_000)  # nothing the bumper pays at these estimates is mined
    parent = wallet.create_transaction([TxOut(100_000, b"\x00\x20" + bytes(32))], feerate_per_kw=300)
    chain.broadcast(parent)
    chain.set_fee_estimate(1000)
    bumper = ParentBumper(chain, wallet)
    bumper.watch(parent, "test parent")
    assert bumper.poll() == []  # just seen: it may confirm on its own
    chain.mine(2)
    first = bumper.poll()
    assert len(first) == 1 and chain.spending_tx(parent.outpoint(1)) == first[0]
    chain.mine(2)
    second = bumper.poll()  # closer to its deadline: the same coins at a higher feerate (the chain checks BIP 125)
    assert len(second) == 1 and second[0].txid != first[0].txid
    assert {i.prevout for i in first[0].inputs} <= {i.prevout for i in second[0].inputs}
    assert chain.get_transaction(first[0].txid) is None and chain.spending_tx(parent.outpoint(1)) == second[0]
    chain.congest(None)
    chain.mine(1)
    assert bumper.poll() == [] and parent.txid in bumper.confirmed
