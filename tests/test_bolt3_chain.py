"""BOLT 3 transactions against the validating regtest chain: every spending path executes.

The chain runs each witness through the script interpreter and enforces
locktimes and BIP 68, so these tests show that the scripts, the signatures and
the timelocks the builders produce do what BOLT 3 says, both variants.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from lightspeed.bitcoin.script import p2wpkh_script, p2wsh_script
from lightspeed.bitcoin.sighash import SIGHASH_ALL, bip143_sighash, sign_input
from lightspeed.bitcoin.tx import OutPoint, Transaction, TxIn, TxOut
from lightspeed.chain import RegtestChain
from lightspeed.channel import (
    ChannelBasepoints,
    CommitmentKeys,
    CommitmentParams,
    CommitmentTx,
    Htlc,
    build_commitment_tx,
    build_htlc_txs,
    funding_script,
    obscuring_factor,
    sign_commitment,
    sign_htlc_tx,
    to_local_script,
    with_funding_witness,
    with_htlc_witness,
)
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.keys import (
    derive_privkey,
    derive_revocation_privkey,
    per_commitment_secret,
    point_from_secret,
)
from lightspeed.errors import RejectedTransaction

TO_SELF_DELAY = 6
FUNDING_SAT = 1_000_000
FEERATE = 2500
PREIMAGE = b"\x42" * 32


def _secret(tag: int) -> bytes:
    return bytes([tag]) * 32


@dataclass
class Party:
    funding: bytes
    revocation: bytes
    payment: bytes
    delayed: bytes
    htlc: bytes

    @property
    def basepoints(self) -> ChannelBasepoints:
        return ChannelBasepoints(
            *(
                point_from_secret(s)
                for s in (self.funding, self.revocation, self.payment, self.delayed, self.htlc)
            )
        )


ALICE = Party(*(_secret(t) for t in (1, 2, 3, 4, 5)))  # owner of the commitment, funder
BOB = Party(*(_secret(t) for t in (11, 12, 13, 14, 15)))
PCS = per_commitment_secret(_secret(99), 2**48 - 1 - 7)  # Alice's secret for commitment 7
PCP = point_from_secret(PCS)


@pytest.fixture
def chain() -> RegtestChain:
    return RegtestChain(":memory:")


def _open(chain: RegtestChain, anchors: bool) -> tuple[CommitmentParams, CommitmentTx]:
    fscript = funding_script(ALICE.basepoints.funding_pubkey, BOB.basepoints.funding_pubkey)
    outpoint = chain.fund(p2wsh_script(fscript), FUNDING_SAT)
    height = chain.tip()[0]
    htlcs = (
        Htlc(
            offered=True,
            amount_msat=50_000_000,
            payment_hash=sha256(b"x" * 32),
            cltv_expiry=height + 20,
        ),
        Htlc(
            offered=False,
            amount_msat=40_000_000,
            payment_hash=sha256(PREIMAGE),
            cltv_expiry=height + 30,
        ),
    )
    params = CommitmentParams(
        funding_txid=outpoint.txid,
        funding_output_index=outpoint.index,
        funding_sat=FUNDING_SAT,
        commitment_number=7,
        obscuring_factor=obscuring_factor(
            ALICE.basepoints.payment_basepoint, BOB.basepoints.payment_basepoint
        ),
        to_self_delay=TO_SELF_DELAY,
        dust_limit_sat=546,
        feerate_per_kw=FEERATE,
        to_local_msat=600_000_000,
        to_remote_msat=FUNDING_SAT * 1000 - 600_000_000 - 90_000_000,
        local_is_funder=True,
        anchors=anchors,
        keys=CommitmentKeys.derive(PCP, ALICE.basepoints, BOB.basepoints),
        htlcs=htlcs,
    )
    return params, build_commitment_tx(params)


def _broadcast_commitment(chain: RegtestChain, commitment: CommitmentTx) -> Transaction:
    signed = with_funding_witness(
        commitment,
        sign_commitment(commitment, ALICE.funding),
        sign_commitment(commitment, BOB.funding),
    )
    chain.broadcast(signed)
    return signed


def _htlc_txs(params: CommitmentParams, commitment: CommitmentTx) -> dict[bool, Transaction]:
    """Signed HTLC-timeout (key True) and HTLC-success (key False) transactions."""
    keys = params.keys
    txs = build_htlc_txs(
        commitment,
        TO_SELF_DELAY,
        keys.revocation_pubkey,
        keys.local_delayed_pubkey,
        FEERATE,
        params.anchors,
    )
    alice_htlc = derive_privkey(ALICE.htlc, PCP)
    bob_htlc = derive_privkey(BOB.htlc, PCP)
    result = {}
    for out, tx in zip(commitment.htlc_outputs, txs, strict=True):
        remote = sign_htlc_tx(tx, out, bob_htlc, by_owner=False, anchors=params.anchors)
        local = sign_htlc_tx(tx, out, alice_htlc, by_owner=True, anchors=params.anchors)
        preimage = None if out.htlc.offered else PREIMAGE
        result[out.htlc.offered] = with_htlc_witness(tx, out, remote, local, preimage)
    return result


def _spend_to_local(
    prev: Transaction, index: int, params: CommitmentParams, privkey: bytes, revoke: bool
) -> Transaction:
    keys = params.keys
    wscript = to_local_script(keys.revocation_pubkey, TO_SELF_DELAY, keys.local_delayed_pubkey)
    value = prev.outputs[index].value_sat
    tx = Transaction(
        2,
        (TxIn(OutPoint(prev.txid, index), sequence=0 if revoke else TO_SELF_DELAY),),
        (TxOut(value - 500, p2wpkh_script(point_from_secret(_secret(77)))),),
        0,
    )
    sig = sign_input(privkey, bip143_sighash(tx, 0, wscript, value, SIGHASH_ALL), SIGHASH_ALL)
    # BOLT #3: <local_delayedsig> <> after the delay, or <revocation_sig> 1 at once.
    return tx.with_witness(0, (sig, b"\x01" if revoke else b"", wscript))


@pytest.mark.parametrize("anchors", [False, True])
def test_commitment_signed_by_both_is_accepted(chain: RegtestChain, anchors: bool) -> None:
    _, commitment = _open(chain, anchors)
    unsigned_twice = with_funding_witness(
        commitment,
        sign_commitment(commitment, ALICE.funding),
        sign_commitment(commitment, ALICE.funding),
    )
    with pytest.raises(RejectedTransaction):
        chain.broadcast(unsigned_twice)  # a signature by the wrong key
    signed = _broadcast_commitment(chain, commitment)
    chain.mine()
    assert chain.get_transaction(signed.txid) is not None


@pytest.mark.parametrize("anchors", [False, True])
def test_htlc_timeout_waits_for_its_locktime(chain: RegtestChain, anchors: bool) -> None:
    params, commitment = _open(chain, anchors)
    _broadcast_commitment(chain, commitment)
    chain.mine()
    timeout_tx = _htlc_txs(params, commitment)[True]
    cltv = timeout_tx.locktime
    with pytest.raises(RejectedTransaction, match="locktime"):
        chain.broadcast(timeout_tx)
    # Consensus: final once locktime < the height of the block that includes it.
    chain.mine(cltv - 1 - chain.tip()[0])  # the next block would be cltv_expiry itself
    with pytest.raises(RejectedTransaction, match="locktime"):
        chain.broadcast(timeout_tx)
    chain.mine()
    chain.broadcast(timeout_tx)


@pytest.mark.parametrize("anchors", [False, True])
def test_htlc_success_with_preimage(chain: RegtestChain, anchors: bool) -> None:
    params, commitment = _open(chain, anchors)
    _broadcast_commitment(chain, commitment)
    if anchors:
        # BOLT #3: with option_anchors the HTLC transaction input has sequence 1 (CSV 1).
        with pytest.raises(RejectedTransaction, match="relative locktime"):
            chain.broadcast(_htlc_txs(params, commitment)[False])
    chain.mine()
    success_tx = _htlc_txs(params, commitment)[False]
    chain.broadcast(success_tx)
    chain.mine()
    # Its output is the delayed, revocable script: Alice waits to_self_delay...
    alice_delayed = derive_privkey(ALICE.delayed, PCP)
    early = _spend_to_local(success_tx, 0, params, alice_delayed, revoke=False)
    with pytest.raises(RejectedTransaction, match="relative locktime"):
        chain.broadcast(early)
    chain.mine(TO_SELF_DELAY - 1)
    chain.broadcast(early)


@pytest.mark.parametrize("anchors", [False, True])
def test_revoked_to_local_is_punishable_at_once(chain: RegtestChain, anchors: bool) -> None:
    params, commitment = _open(chain, anchors)
    signed = _broadcast_commitment(chain, commitment)
    chain.mine()
    index = next(
        i
        for i, out in enumerate(signed.outputs)
        if out.script_pubkey
        == p2wsh_script(
            to_local_script(
                params.keys.revocation_pubkey, TO_SELF_DELAY, params.keys.local_delayed_pubkey
            )
        )
    )
    # Once Alice has revealed PCS, Bob holds the revocation key and sweeps at once.
    revocation_priv = derive_revocation_privkey(BOB.revocation, PCS)
    chain.broadcast(_spend_to_local(signed, index, params, revocation_priv, revoke=True))
