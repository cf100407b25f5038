"""Demo scenarios for the chain layer and onions (kept apart from the demo runner)."""

from __future__ import annotations

import os
import time
from typing import Any


def commitment_on_chain() -> dict[str, Any]:
    """A wallet funds a 2-of-2; both parties sign a BOLT 3 anchors commitment; the chain accepts it."""
    from lightspeed.bitcoin.script import p2wsh_script
    from lightspeed.bitcoin.tx import TxOut
    from lightspeed.chain import RegtestChain, Wallet
    from lightspeed.channel import (
        ChannelBasepoints,
        CommitmentKeys,
        CommitmentParams,
        Htlc,
        build_commitment_tx,
        funding_script,
        obscuring_factor,
        sign_commitment,
        with_funding_witness,
    )
    from lightspeed.crypto.hashes import sha256
    from lightspeed.crypto.keys import per_commitment_secret, point_from_secret
    from lightspeed.errors import RejectedTransaction

    chain = RegtestChain(":memory:")
    wallet = Wallet(os.urandom(32), chain)
    chain.fund(wallet.new_key().script_pubkey, 2_000_000)
    secrets = {name: [os.urandom(32) for _ in range(5)] for name in ("alice", "bob")}
    points = {name: ChannelBasepoints(*(point_from_secret(s) for s in keys)) for name, keys in secrets.items()}
    fscript = funding_script(points["alice"].funding_pubkey, points["bob"].funding_pubkey)
    funding_tx = wallet.send([TxOut(1_000_000, p2wsh_script(fscript))])
    chain.mine(3)
    height = chain.tip()[0]
    pcp = point_from_secret(per_commitment_secret(os.urandom(32), 2**48 - 1))
    params = CommitmentParams(
        funding_txid=funding_tx.txid, funding_output_index=0, funding_sat=1_000_000, commitment_number=0,
        obscuring_factor=obscuring_factor(points["alice"].payment_basepoint, points["bob"].payment_basepoint),
        to_self_delay=144, dust_limit_sat=546, feerate_per_kw=2500, to_local_msat=700_000_000,
        to_remote_msat=200_000_000, local_is_funder=True, anchors=True,
        keys=CommitmentKeys.derive(pcp, points["alice"], points["bob"]),
        htlcs=(Htlc(offered=True, amount_msat=60_000_000, payment_hash=sha256(b"a"), cltv_expiry=height + 40),
               Htlc(offered=False, amount_msat=40_000_000, payment_hash=sha256(b"b"), cltv_expiry=height + 50)),
    )
    start = time.perf_counter()
    commitment = build_commitment_tx(params)
    signed = with_funding_witness(commitment, sign_commitment(commitment, secrets["alice"][0]),
                                  sign_commitment(commitment, secrets["bob"][0]))
    build_ms = (time.perf_counter() - start) * 1000
    forged = with_funding_witness(commitment, sign_commitment(commitment, secrets["alice"][0]),
                                  sign_commitment(commitment, secrets["alice"][0]))
    try:
        chain.broadcast(forged)
        raise AssertionError("a commitment with a wrong signature was accepted")
    except RejectedTransaction as exc:
        rejected = str(exc)
    chain.broadcast(signed)
    chain.mine(1)
    return {"funding_txid": funding_tx.txid_hex, "commitment_txid": signed.txid_hex,
            "commitment_outputs": len(signed.outputs), "build_and_sign_ms": round(build_ms, 2),
            "forged_signature_rejected": rejected, "confirmations": chain.get_transaction(signed.txid)[1]}  # type: ignore[index]


def onion_five_hops() -> dict[str, Any]:
    """Build a 5-hop onion and peel it at every hop, each hop reading exactly its own payload."""
    from lightspeed.crypto.secp256k1 import pubkey_from_privkey
    from lightspeed.onion import FailureCode, OnionPacket, build_onion, peel_onion
    from lightspeed.onion.payload import HopPayload

    keys = [os.urandom(32) for _ in range(5)]
    payloads = [HopPayload(amt_to_forward_msat=1000 * (10 - i), outgoing_cltv_value=800_000 - 40 * i,
                           short_channel_id=i + 1).to_bytes() for i in range(5)]
    payment_hash = os.urandom(32)
    start = time.perf_counter()
    built = build_onion(os.urandom(32), [pubkey_from_privkey(k) for k in keys], payloads, payment_hash)
    build_us = (time.perf_counter() - start) * 1e6
    packet: OnionPacket | None = built.packet
    peeled = 0
    for key, payload in zip(keys, payloads, strict=True):
        assert packet is not None
        layer = peel_onion(packet, key, payment_hash)
        if layer.payload != payload:
            raise AssertionError("a hop read the wrong payload")
        packet = layer.next_packet
        peeled += 1
    return {"hops_peeled": peeled, "build_us": round(build_us, 1), "failure_codes_known": len(FailureCode)}
