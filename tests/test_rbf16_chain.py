"""The regtest chain's BIP 125 replacement rules beyond fees (issue 16): a higher feerate than
each replaced transaction, no new unconfirmed input (rule 2), at most 100 evicted (rule 5)."""

from __future__ import annotations

import pytest

from lightspeed.bitcoin.script import p2pkh_script_code
from lightspeed.bitcoin.sighash import SIGHASH_ALL, bip143_sighash, sign_input
from lightspeed.bitcoin.tx import OutPoint, Transaction, TxIn, TxOut
from lightspeed.chain import RegtestChain
from lightspeed.chain.fee_policy import feerate_per_kw
from lightspeed.crypto.hashes import hash160
from lightspeed.errors import RejectedTransaction
from tests.test_chain import KEY, PUB, SPK, spend_p2wpkh

RBF = 0xFFFFFFFD


@pytest.fixture
def chain() -> RegtestChain:
    return RegtestChain(":memory:", clock=None)


def _spend_many(coins: list[tuple[OutPoint, int]], outputs: list[TxOut]) -> Transaction:
    """A replaceable transaction spending several P2WPKH coins of KEY."""
    tx = Transaction(2, tuple(TxIn(op, sequence=RBF) for op, _ in coins), tuple(outputs), 0)
    for i, (_, value) in enumerate(coins):
        sighash = bip143_sighash(tx, i, p2pkh_script_code(hash160(PUB)), value, SIGHASH_ALL)
        tx = tx.with_witness(i, (sign_input(KEY, sighash, SIGHASH_ALL), PUB))
    return tx


def test_a_replacement_paying_more_in_total_but_at_a_lower_feerate_is_refused(chain: RegtestChain) -> None:
    coin, extra = chain.fund(SPK, 100_000), chain.fund(SPK, 100_000)
    first = spend_p2wpkh(coin, 100_000, [TxOut(98_000, SPK)], sequence=RBF)  # 2,000 sat
    chain.broadcast(first)
    # two inputs: more fee than the replaced plus its own size, yet a lower feerate
    probe = _spend_many([(coin, 100_000), (extra, 100_000)], [TxOut(1, SPK)])
    fee = 2_000 + probe.vsize + 10
    assert fee * first.weight < 2_000 * probe.weight
    cheap = _spend_many([(coin, 100_000), (extra, 100_000)], [TxOut(200_000 - fee, SPK)])
    with pytest.raises(RejectedTransaction, match=rf"its feerate {feerate_per_kw(fee, cheap.weight)} sat/kw is not "
                                                  rf"above the {feerate_per_kw(2_000, first.weight)} sat/kw of"):
        chain.broadcast(cheap)
    assert chain.mempool() == [first.txid]
    fee = 2_000 * (probe.weight + 4) // first.weight + 1  # a signature may be a byte longer
    better = _spend_many([(coin, 100_000), (extra, 100_000)], [TxOut(200_000 - fee, SPK)])
    chain.broadcast(better)
    assert chain.mempool() == [better.txid]


def test_a_replacement_may_not_add_an_unconfirmed_input(chain: RegtestChain) -> None:
    coin, other = chain.fund(SPK, 100_000), chain.fund(SPK, 100_000)
    first = spend_p2wpkh(coin, 100_000, [TxOut(99_000, SPK)], sequence=RBF)
    chain.broadcast(first)
    unconfirmed = spend_p2wpkh(other, 100_000, [TxOut(99_000, SPK)], sequence=RBF)
    chain.broadcast(unconfirmed)
    adding = _spend_many([(coin, 100_000), (OutPoint(unconfirmed.txid, 0), 99_000)], [TxOut(150_000, SPK)])
    with pytest.raises(RejectedTransaction, match=r"input 1: a replacement may not add an unconfirmed input"):
        chain.broadcast(adding)
    chain.mine(1)  # the parent confirms (and so does first): the same input is allowed in a replacement now
    coin2 = chain.fund(SPK, 100_000)
    first2 = spend_p2wpkh(coin2, 100_000, [TxOut(99_000, SPK)], sequence=RBF)
    chain.broadcast(first2)
    confirmed_parent = OutPoint(unconfirmed.txid, 0)
    ok = _spend_many([(coin2, 100_000), (confirmed_parent, 99_000)], [TxOut(150_000, SPK)])
    chain.broadcast(ok)
    assert chain.spending_tx(coin2) == ok


@pytest.mark.parametrize(("children", "allowed"), [(99, True), (100, False)])
def test_a_replacement_evicts_at_most_100_transactions(chain: RegtestChain, children: int, allowed: bool) -> None:
    coin = chain.fund(SPK, 1_000_000)
    fan = _spend_many([(coin, 1_000_000)], [TxOut(9_000, SPK)] * children)
    chain.broadcast(fan)
    for i in range(children):
        chain.broadcast(spend_p2wpkh(OutPoint(fan.txid, i), 9_000, [TxOut(8_800, SPK)], sequence=RBF))
    replacement = spend_p2wpkh(coin, 1_000_000, [TxOut(500_000, SPK)], sequence=RBF)
    if allowed:  # the fan and its 99 children: 100 evicted
        chain.broadcast(replacement)
        assert chain.mempool() == [replacement.txid]
    else:
        with pytest.raises(RejectedTransaction, match=r"it would evict 101 transactions, more than the 100"):
            chain.broadcast(replacement)
        assert len(chain.mempool()) == 101
