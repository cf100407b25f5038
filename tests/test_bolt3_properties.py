"""Property tests for the BOLT 3 builders: conservation, ordering, trimming, round trips, signatures."""

from __future__ import annotations

import contextlib

import pytest
from coincurve import PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.bitcoin.tx import Transaction
from lightspeed.channel.commitment import (
    ChannelBasepoints,
    CommitmentKeys,
    CommitmentParams,
    Htlc,
    build_commitment_tx,
    commitment_fee_sat,
    commitment_sighash,
    is_trimmed,
    sign_commitment,
    with_funding_witness,
)
from lightspeed.channel.htlc_tx import build_htlc_txs, htlc_sighash, sign_htlc_tx
from lightspeed.channel.scripts import ANCHOR_OUTPUT_SAT
from lightspeed.crypto.keys import derive_privkey, point_from_secret
from lightspeed.errors import DecodeError, UsageError


def _secret(tag: int) -> bytes:
    return bytes([tag]) * 32


PCP = point_from_secret(_secret(9))
OWNER = ChannelBasepoints(*(point_from_secret(_secret(t)) for t in (1, 2, 3, 4, 5)))
OTHER = ChannelBasepoints(*(point_from_secret(_secret(t)) for t in (11, 12, 13, 14, 15)))
KEYS = CommitmentKeys.derive(PCP, OWNER, OTHER)

htlcs = st.builds(
    Htlc,
    offered=st.booleans(),
    amount_msat=st.integers(1, 50_000_000),
    payment_hash=st.binary(min_size=32, max_size=32),
    cltv_expiry=st.integers(0, 600_000),
)


@st.composite
def commitment_params(draw: st.DrawFn) -> CommitmentParams:
    funding_sat = draw(st.integers(20_000, 50_000_000))
    hs = tuple(draw(st.lists(htlcs, max_size=12)))
    in_htlcs = sum(h.amount_msat for h in hs)
    left = funding_sat * 1000 - in_htlcs
    if left < 0:
        hs, left = (), funding_sat * 1000
    to_local = draw(st.integers(0, left))
    to_remote = draw(st.integers(0, left - to_local))
    local_is_funder = draw(st.booleans())
    anchors = draw(st.booleans())
    funder_msat = to_local if local_is_funder else to_remote
    if anchors and funder_msat < 2 * ANCHOR_OUTPUT_SAT * 1000:
        anchors = False  # a state BOLT 2 forbids; see test_funder_must_afford_anchors
    return CommitmentParams(
        funding_txid=draw(st.binary(min_size=32, max_size=32)),
        funding_output_index=draw(st.integers(0, 5)),
        funding_sat=funding_sat,
        commitment_number=draw(st.integers(0, (1 << 48) - 1)),
        obscuring_factor=draw(st.integers(0, (1 << 48) - 1)),
        to_self_delay=draw(st.integers(1, 2016)),
        dust_limit_sat=draw(st.integers(354, 5000)),
        feerate_per_kw=draw(st.integers(253, 20_000)),
        to_local_msat=to_local,
        to_remote_msat=to_remote,
        local_is_funder=local_is_funder,
        anchors=anchors,
        keys=KEYS,
        htlcs=hs,
    )


@settings(max_examples=150, deadline=None)
@given(commitment_params())
def test_commitment_outputs_conserve_value(params: CommitmentParams) -> None:
    commitment = build_commitment_tx(params)
    outs = commitment.tx.outputs
    untrimmed = [
        h
        for h in params.htlcs
        if not is_trimmed(h, params.dust_limit_sat, params.feerate_per_kw, params.anchors)
    ]
    trimmed_sat = sum(h.amount_msat // 1000 for h in params.htlcs if h not in untrimmed)
    # Outputs plus fee are exactly the funding amount; the fee never goes negative.
    assert sum(o.value_sat for o in outs) + commitment.fee_sat == params.funding_sat
    assert commitment.fee_sat >= 0
    assert commitment.base_fee_sat == commitment_fee_sat(
        params.feerate_per_kw, len(untrimmed), params.anchors
    )
    funder_msat = params.to_local_msat if params.local_is_funder else params.to_remote_msat
    anchors_sat = 2 * ANCHOR_OUTPUT_SAT if params.anchors else 0
    if funder_msat // 1000 >= commitment.base_fee_sat + anchors_sat:
        # The funder pays the whole base fee; the rest of the fee is only trimmed
        # HTLCs, balances below the dust limit, unallocated funds and msat rounding.
        unallocated = (
            params.funding_sat * 1000
            - params.to_local_msat
            - params.to_remote_msat
            - sum(h.amount_msat for h in params.htlcs)
        ) // 1000
        # Anchors are charged to the funder even when one is not output (no HTLCs,
        # one side's balance below dust): that 330 sat then goes to fee as well.
        anchors_out = sum(o.value_sat == ANCHOR_OUTPUT_SAT for o in outs)
        floor = (
            commitment.base_fee_sat + anchors_sat - ANCHOR_OUTPUT_SAT * anchors_out + trimmed_sat
        )
        rounding = len(params.htlcs) + 3
        assert (
            floor
            <= commitment.fee_sat
            <= floor + 2 * params.dust_limit_sat + unallocated + rounding
        )
    # Every untrimmed HTLC has its output, in BIP 69 + CLTV order.
    assert len(commitment.htlc_outputs) == len(untrimmed)
    keys = [(o.value_sat, o.script_pubkey) for o in outs]
    assert keys == sorted(keys)
    for out in commitment.htlc_outputs:
        assert outs[out.output_index].value_sat == out.htlc.amount_msat // 1000
    # No output below the owner's dust limit, except anchors of exactly 330 sat.
    for o in outs:
        assert o.value_sat >= params.dust_limit_sat or (
            params.anchors and o.value_sat == ANCHOR_OUTPUT_SAT
        )


@settings(max_examples=60, deadline=None)
@given(commitment_params())
def test_signed_transactions_round_trip_and_verify(params: CommitmentParams) -> None:
    commitment = build_commitment_tx(params)
    local_sig = sign_commitment(commitment, _secret(1))
    remote_sig = sign_commitment(commitment, _secret(11))
    signed = with_funding_witness(commitment, local_sig, remote_sig)
    raw = signed.serialize()
    assert Transaction.parse(raw) == signed
    assert Transaction.parse(raw).txid == commitment.tx.txid  # witness does not change the txid
    digest = commitment_sighash(commitment)
    assert PublicKey(OWNER.funding_pubkey).verify(local_sig[:-1], digest, hasher=None)
    assert PublicKey(OTHER.funding_pubkey).verify(remote_sig[:-1], digest, hasher=None)

    owner_htlc_priv = derive_privkey(_secret(5), PCP)
    other_htlc_priv = derive_privkey(_secret(15), PCP)
    txs = build_htlc_txs(
        commitment,
        params.to_self_delay,
        KEYS.revocation_pubkey,
        KEYS.local_delayed_pubkey,
        params.feerate_per_kw,
        params.anchors,
    )
    for out, tx in zip(commitment.htlc_outputs, txs, strict=True):
        assert Transaction.parse(tx.serialize()) == tx
        assert tx.inputs[0].prevout.txid == commitment.tx.txid
        assert tx.inputs[0].sequence == (1 if params.anchors else 0)
        assert tx.locktime == (out.htlc.cltv_expiry if out.htlc.offered else 0)
        remote = sign_htlc_tx(tx, out, other_htlc_priv, by_owner=False, anchors=params.anchors)
        assert remote[-1] == (0x83 if params.anchors else 0x01)
        digest = htlc_sighash(tx, out, remote[-1])
        assert PublicKey(KEYS.remote_htlc_pubkey).verify(remote[:-1], digest, hasher=None)
        local = sign_htlc_tx(tx, out, owner_htlc_priv, by_owner=True, anchors=params.anchors)
        assert PublicKey(KEYS.local_htlc_pubkey).verify(
            local[:-1], htlc_sighash(tx, out, 0x01), hasher=None
        )


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_into_transaction_parse_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        Transaction.parse(data)


def test_funder_must_afford_anchors() -> None:
    params = CommitmentParams(
        funding_txid=bytes(32),
        funding_output_index=0,
        funding_sat=100_000,
        commitment_number=0,
        obscuring_factor=0,
        to_self_delay=144,
        dust_limit_sat=354,
        feerate_per_kw=253,
        to_local_msat=99_500_000,
        to_remote_msat=500_000,
        local_is_funder=False,
        anchors=True,
        keys=KEYS,
    )
    with pytest.raises(UsageError):
        build_commitment_tx(params)
