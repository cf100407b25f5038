"""BOLT 3 Appendices B, C and F: funding output, commitment and HTLC transactions, both variants."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from lightspeed.bitcoin.script import p2wsh_script
from lightspeed.bitcoin.tx import Transaction
from lightspeed.channel.commitment import (
    ChannelBasepoints,
    CommitmentKeys,
    CommitmentParams,
    CommitmentTx,
    Htlc,
    build_commitment_tx,
    commitment_fee_sat,
    commitment_number_from_tx,
    htlc_success_fee_sat,
    htlc_timeout_fee_sat,
    is_trimmed,
    obscuring_factor,
    sign_commitment,
    with_funding_witness,
)
from lightspeed.channel.htlc_tx import build_htlc_txs, sign_htlc_tx, with_htlc_witness
from lightspeed.channel.scripts import funding_script
from lightspeed.crypto.hashes import hash160, sha256
from lightspeed.crypto.keys import derive_privkey, derive_revocation_pubkey, point_from_secret
from tests.support.vectors import load_vectors

FUNDING = load_vectors("bolt03_funding.json")
C = load_vectors("bolt03_commitment.json")
F = load_vectors("bolt03_anchors.json")
WEIGHTS = load_vectors("bolt03_weights.json")
P = C["params"]
INTERNAL = P["internal"]
h = bytes.fromhex

PCP = h(INTERNAL["local_per_commitment_point"])
LOCAL_FUNDING_PRIV = h(P["local_funding_privkey"])
REMOTE_FUNDING_PRIV = h(INTERNAL["remote_funding_privkey"])
# The vectors use each side's payment basepoint as its HTLC basepoint.
LOCAL_HTLC_PRIV = derive_privkey(h(INTERNAL["local_payment_basepoint_secret"]), PCP)
REMOTE_HTLC_PRIV = derive_privkey(h(INTERNAL["remote_payment_basepoint_secret"]), PCP)

LOCAL = ChannelBasepoints(
    funding_pubkey=h(P["local_funding_pubkey"]),
    revocation_basepoint=b"",  # not used for the local commitment
    payment_basepoint=h(P["local_payment_basepoint"]),
    delayed_payment_basepoint=h(INTERNAL["local_delayed_payment_basepoint"]),
    htlc_basepoint=h(P["local_htlc_basepoint"]),
)
REMOTE = ChannelBasepoints(
    funding_pubkey=h(P["remote_funding_pubkey"]),
    revocation_basepoint=h(INTERNAL["remote_revocation_basepoint"]),
    payment_basepoint=h(P["remote_payment_basepoint"]),
    delayed_payment_basepoint=b"",
    htlc_basepoint=h(P["remote_htlc_basepoint"]),
)
KEYS = CommitmentKeys.derive(PCP, LOCAL, REMOTE)

ALL_HTLCS = {
    x["id"]: Htlc(
        offered=x["direction"] == "local->remote",
        amount_msat=x["amount_msat"],
        payment_hash=sha256(h(x["payment_preimage"])),
        cltv_expiry=x["expiry"],
    )
    for x in C["htlcs"]
}
PREIMAGES = {sha256(h(x["payment_preimage"])): h(x["payment_preimage"]) for x in C["htlcs"]}


def _htlc_ids(name: str, uses_htlcs: bool) -> list[int]:
    """Appendix C: HTLCs 0-4 everywhere but the first test; 5 and 6 only in the "same amount" test."""
    if not uses_htlcs:
        return []
    if "same amount and preimage" in name:
        return [1, 5, 6]
    return [0, 1, 2, 3, 4]


def _params(
    to_local_msat: int, to_remote_msat: int, feerate: int, dust: int, ids: list[int], anchors: bool
) -> CommitmentParams:
    return CommitmentParams(
        funding_txid=h(P["funding_tx_id"])[::-1],
        funding_output_index=P["funding_output_index"],
        funding_sat=P["funding_amount_satoshi"],
        commitment_number=P["commitment_number"],
        obscuring_factor=obscuring_factor(LOCAL.payment_basepoint, REMOTE.payment_basepoint),
        to_self_delay=P["local_delay"],
        dust_limit_sat=dust,
        feerate_per_kw=feerate,
        to_local_msat=to_local_msat,
        to_remote_msat=to_remote_msat,
        local_is_funder=True,
        anchors=anchors,
        keys=KEYS,
        htlcs=tuple(ALL_HTLCS[i] for i in ids),
    )


def _sign_both(commitment: CommitmentTx) -> tuple[bytes, bytes, Transaction]:
    local_sig = sign_commitment(commitment, LOCAL_FUNDING_PRIV)
    remote_sig = sign_commitment(commitment, REMOTE_FUNDING_PRIV)
    return local_sig, remote_sig, with_funding_witness(commitment, local_sig, remote_sig)


def _signed_htlc_txs(
    commitment: CommitmentTx, feerate: int, anchors: bool
) -> list[tuple[bytes, bytes, Transaction]]:
    unsigned = build_htlc_txs(
        commitment,
        P["local_delay"],
        KEYS.revocation_pubkey,
        KEYS.local_delayed_pubkey,
        feerate,
        anchors,
    )
    result = []
    for out, tx in zip(commitment.htlc_outputs, unsigned, strict=True):
        remote = sign_htlc_tx(tx, out, REMOTE_HTLC_PRIV, by_owner=False, anchors=anchors)
        local = sign_htlc_tx(tx, out, LOCAL_HTLC_PRIV, by_owner=True, anchors=anchors)
        preimage = None if out.htlc.offered else PREIMAGES[out.htlc.payment_hash]
        result.append((remote, local, with_htlc_witness(tx, out, remote, local, preimage)))
    return result


def test_keys_match_the_vector_keys() -> None:
    assert point_from_secret(LOCAL_FUNDING_PRIV).hex() == P["local_funding_pubkey"]
    assert point_from_secret(REMOTE_FUNDING_PRIV).hex() == P["remote_funding_pubkey"]
    assert KEYS.revocation_pubkey.hex() == P["local_revocation_pubkey"]
    assert KEYS.local_delayed_pubkey.hex() == P["local_delayedpubkey"]
    assert KEYS.local_htlc_pubkey.hex() == P["local_htlcpubkey"]
    assert KEYS.remote_htlc_pubkey.hex() == P["remote_htlcpubkey"]
    assert point_from_secret(LOCAL_HTLC_PRIV).hex() == P["local_htlcpubkey"]
    assert point_from_secret(REMOTE_HTLC_PRIV).hex() == P["remote_htlcpubkey"]
    assert (
        derive_privkey(h(INTERNAL["local_delayed_payment_basepoint_secret"]), PCP).hex()
        == (INTERNAL["local_delayed_privkey"])
    )
    assert (
        derive_privkey(h(INTERNAL["local_payment_basepoint_secret"]), PCP).hex()
        == P["local_privkey"]
    )
    revocation_basepoint = point_from_secret(h(INTERNAL["remote_revocation_basepoint_secret"]))
    assert derive_revocation_pubkey(revocation_basepoint, PCP).hex() == P["local_revocation_pubkey"]


def test_obscuring_factor() -> None:
    factor = int(P["obscured_commitment_number_expr"].split("^")[0], 16)
    assert obscuring_factor(LOCAL.payment_basepoint, REMOTE.payment_basepoint) == factor


def test_funding_output_appendix_b() -> None:
    wscript = funding_script(
        h(FUNDING["remote_funding_pubkey"]), h(FUNDING["local_funding_pubkey"])
    )
    assert wscript.hex() == FUNDING["funding_witness_script"]
    tx = Transaction.parse(h(FUNDING["funding_tx"]))
    assert tx.txid[::-1].hex() == FUNDING["txid"] == P["funding_tx_id"]
    funding_out = tx.outputs[FUNDING["funding_output"]]
    assert funding_out.script_pubkey == p2wsh_script(wscript)
    assert funding_out.value_sat == FUNDING["funding_satoshis"]
    assert tx.outputs[1].value_sat == FUNDING["change_satoshis"]
    assert tx.inputs[0].prevout.txid[::-1].hex() == FUNDING["input_txid"]
    coinbase = Transaction.parse(h(FUNDING["block1_coinbase_tx"]))
    assert tx.inputs[0].prevout.txid == coinbase.txid
    fee = FUNDING["input_satoshis"] - FUNDING["funding_satoshis"] - FUNDING["change_satoshis"]
    assert fee == FUNDING["feerate_per_kw"] * len(tx.serialize()) * 4 // 1000
    assert tx.serialize().hex() == FUNDING["funding_tx"]


def test_fee_weights() -> None:
    assert commitment_fee_sat(1000, 0, anchors=False) == WEIGHTS["commitment_base_weight"]
    assert commitment_fee_sat(1000, 0, anchors=True) == WEIGHTS["commitment_base_weight_anchors"]
    assert commitment_fee_sat(1000, 1, anchors=False) - 724 == WEIGHTS["htlc_output_weight"]


@pytest.mark.parametrize("case", C["cases"], ids=lambda c: c["name"])
def test_appendix_c_static_remotekey(case: dict[str, Any]) -> None:
    ids = _htlc_ids(case["name"], case["name"] != "simple commitment tx with no HTLCs")
    params = _params(
        case["to_local_msat"],
        case["to_remote_msat"],
        case["local_feerate_per_kw"],
        P["local_dust_limit_satoshi"],
        ids,
        anchors=False,
    )
    commitment = build_commitment_tx(params)
    if "base_fee_sat" in case:
        assert commitment.base_fee_sat == case["base_fee_sat"]
        assert commitment.fee_sat == case["actual_fee_sat"]
    # Each output the spec lists, with its witness script or P2WPKH key (the last
    # case lists only its HTLC outputs).
    listed = sorted(
        (o["amount_sat"], p2wsh_script(h(o["witness_script"])))
        if o["witness_script"]
        else (o["amount_sat"], b"\x00\x14" + hash160(h(o["p2wpkh_pubkey"])))
        for o in case["outputs"]
    )
    got = sorted((o.value_sat, o.script_pubkey) for o in commitment.tx.outputs)
    if "base_fee_sat" in case:
        assert got == listed
    else:
        assert all(o in got for o in listed)
    local_sig, remote_sig, signed = _sign_both(commitment)
    assert local_sig[:-1].hex() == case["local_signature"]
    assert remote_sig[:-1].hex() == case["remote_signature"]
    assert signed.serialize().hex() == case["commit_tx"]
    parsed = Transaction.parse(h(case["commit_tx"]))
    assert commitment_number_from_tx(parsed, params.obscuring_factor) == P["commitment_number"]
    assert len(commitment.htlc_outputs) == case["num_htlcs"]

    htlc_txs = _signed_htlc_txs(commitment, case["local_feerate_per_kw"], anchors=False)
    assert len(htlc_txs) == len(case["htlcs"])
    for expected, out, (remote, local, tx) in zip(
        case["htlcs"], commitment.htlc_outputs, htlc_txs, strict=True
    ):
        assert out.output_index == expected["output_index"]
        assert out.htlc == ALL_HTLCS[expected["htlc_id"]]
        assert expected["kind"] == ("htlc-timeout" if out.htlc.offered else "htlc-success")
        assert remote[:-1].hex() == expected["remote_signature"]
        assert local[:-1].hex() == expected["local_signature"]
        assert tx.serialize().hex() == expected["tx"]


@pytest.mark.parametrize("case", F["cases"], ids=lambda c: c["Name"])
def test_appendix_f_anchors(case: dict[str, Any]) -> None:
    ids = _htlc_ids(case["Name"], case["UseTestHtlcs"])
    params = _params(
        case["LocalBalance"],
        case["RemoteBalance"],
        case["FeePerKw"],
        case["DustLimitSatoshis"],
        ids,
        anchors=True,
    )
    commitment = build_commitment_tx(params)
    _, remote_sig, signed = _sign_both(commitment)
    assert remote_sig[:-1].hex() == case["RemoteSigHex"]
    assert signed.serialize().hex() == case["ExpectedCommitmentTxHex"]
    htlc_txs = _signed_htlc_txs(commitment, case["FeePerKw"], anchors=True)
    assert len(htlc_txs) == len(case["HtlcDescs"])
    for expected, (remote, _, tx) in zip(case["HtlcDescs"], htlc_txs, strict=True):
        assert remote[-1] == 0x83  # SIGHASH_SINGLE|SIGHASH_ANYONECANPAY
        assert remote[:-1].hex() == expected["RemoteSigHex"]
        assert tx.serialize().hex() == expected["ResolutionTxHex"]


def _weight(tx: Transaction) -> int:
    return 3 * len(tx.serialize(include_witness=False)) + len(tx.serialize())


@pytest.mark.parametrize("anchors", [False, True])
def test_appendix_a_expected_weights_bound_the_real_ones(anchors: bool) -> None:
    """Appendix A assumes 73-byte signatures and both balance outputs: real txs never weigh more."""
    base = WEIGHTS["commitment_base_weight_anchors" if anchors else "commitment_base_weight"]
    timeout = WEIGHTS["htlc_timeout_weight_anchors" if anchors else "htlc_timeout_weight"]
    success = WEIGHTS["htlc_success_weight_anchors" if anchors else "htlc_success_weight"]
    params = _params(6_988_000_000, 3_000_000_000, 0, 546, [0, 1, 2, 3, 4], anchors)
    commitment = build_commitment_tx(params)
    assert len(commitment.tx.outputs) == 5 + 2 + (2 if anchors else 0)
    _, _, signed = _sign_both(commitment)
    expected = base + WEIGHTS["htlc_output_weight"] * 5
    # DER signatures are 71-73 bytes; Appendix A also rounds the anchors case up a little.
    assert expected - 16 <= _weight(signed) <= expected
    for _, _, tx in _signed_htlc_txs(commitment, 0, anchors):
        assert _weight(tx) <= (timeout if tx.locktime else success)
        assert _weight(tx) >= (timeout if tx.locktime else success) - 8


def test_fee_calculation_example() -> None:
    """BOLT 3 "Fee Calculation" example: 2 of 4 HTLCs trimmed, base fee 5340, actual fee 7140."""
    ex = WEIGHTS["fee_example"]
    rate, dust = ex["feerate_per_kw"], ex["dust_limit_sat"]
    assert htlc_timeout_fee_sat(rate, anchors=False) == ex["htlc_timeout_fee_sat"]
    assert htlc_success_fee_sat(rate, anchors=False) == ex["htlc_success_fee_sat"]
    hs = [Htlc(True, m, sha256(b"o%d" % m), 500) for m in ex["offered_msat"]]
    hs += [Htlc(False, m, sha256(b"r%d" % m), 500) for m in ex["received_msat"]]
    kept = [h for h in hs if not is_trimmed(h, dust, rate, anchors=False)]
    assert [h.amount_msat for h in kept if h.offered] == ex["untrimmed_offered_msat"]
    assert [h.amount_msat for h in kept if not h.offered] == ex["untrimmed_received_msat"]
    assert commitment_fee_sat(rate, len(kept), anchors=False) == ex["base_fee_sat"]
    assert ex["weight"] * rate // 1000 == ex["base_fee_sat"]
    # Both balances well above dust: the actual fee is the base fee plus the trimmed HTLCs.
    params = _params(6_000_000_000, 3_000_000_000, rate, dust, [], anchors=False)
    params = dataclasses.replace(
        params,
        htlcs=tuple(hs),
        to_local_msat=10_000_000_000 - 3_000_000_000 - sum(h.amount_msat for h in hs),
    )
    assert build_commitment_tx(params).fee_sat == ex["actual_fee_sat"]
