"""BOLT 3: build one commitment transaction and sign it and all its HTLC transactions.

One "round" is what a ``commitment_signed`` costs both peers together: build the
commitment with N HTLCs (static_remotekey, none trimmed), both funding
signatures, build every HTLC transaction and both parties' HTLC signatures:
2 + 2N ECDSA signatures. The "limit" column is that many bare coincurve signs,
measured in the same run: no Python around them could make the round cheaper.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from coincurve import PrivateKey

from benchmarks._util import median_us, print_table, report
from lightspeed.channel import (
    ChannelBasepoints,
    CommitmentKeys,
    CommitmentParams,
    Htlc,
    build_commitment_tx,
    build_htlc_txs,
    sign_commitment,
    sign_htlc_tx,
    with_funding_witness,
)
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.keys import derive_privkey, point_from_secret


def _secret(tag: int) -> bytes:
    return bytes([tag]) * 32


PCP = point_from_secret(_secret(9))
OWNER = ChannelBasepoints(*(point_from_secret(_secret(t)) for t in (1, 2, 3, 4, 5)))
OTHER = ChannelBasepoints(*(point_from_secret(_secret(t)) for t in (11, 12, 13, 14, 15)))
KEYS = CommitmentKeys.derive(PCP, OWNER, OTHER)
OWNER_HTLC_PRIV = derive_privkey(_secret(5), PCP)
OTHER_HTLC_PRIV = derive_privkey(_secret(15), PCP)


def _params(n_htlcs: int) -> CommitmentParams:
    htlcs = tuple(
        Htlc(
            offered=i % 2 == 0,
            amount_msat=100_000_000 + i * 1000,
            payment_hash=sha256(i.to_bytes(4, "big")),
            cltv_expiry=800_000 + i,
        )
        for i in range(n_htlcs)
    )
    return CommitmentParams(
        funding_txid=sha256(b"funding"),
        funding_output_index=0,
        funding_sat=100_000_000,
        commitment_number=42,
        obscuring_factor=0x2BB038521914,
        to_self_delay=144,
        dust_limit_sat=546,
        feerate_per_kw=2500,
        to_local_msat=60_000_000_000,
        to_remote_msat=40_000_000_000 - sum(h.amount_msat for h in htlcs),
        local_is_funder=True,
        anchors=False,
        keys=KEYS,
        htlcs=htlcs,
    )


def round_trip(params: CommitmentParams) -> int:
    """Build, sign both sides; returns the number of signatures made."""
    commitment = build_commitment_tx(params)
    local = sign_commitment(commitment, _secret(1))
    remote = sign_commitment(commitment, _secret(11))
    with_funding_witness(commitment, local, remote)
    txs = build_htlc_txs(
        commitment, 144, KEYS.revocation_pubkey, KEYS.local_delayed_pubkey, 2500, False
    )
    for out, tx in zip(commitment.htlc_outputs, txs, strict=True):
        sign_htlc_tx(tx, out, OTHER_HTLC_PRIV, by_owner=False, anchors=False)
        sign_htlc_tx(tx, out, OWNER_HTLC_PRIV, by_owner=True, anchors=False)
    return 2 + 2 * len(commitment.htlc_outputs)


def main() -> None:
    key = PrivateKey(_secret(1))
    digest = sha256(b"x")
    sign_us = median_us(lambda: key.sign(digest, hasher=None), 2000)
    rows = []
    summary: dict[str, object] = {"benchmark": "bolt3", "sign_us": round(sign_us, 2)}
    for n in (0, 10, 100):
        params = _params(n)
        signatures = round_trip(params)
        assert signatures == 2 + 2 * n
        repeat = 300 if n < 100 else 40
        ours_us = median_us(partial(round_trip, params), repeat, warmup=3)
        build_us = median_us(partial(build_commitment_tx, params), repeat, warmup=3)
        limit_us = signatures * sign_us
        rows.append(
            [
                f"{n} HTLCs",
                signatures,
                ours_us / 1000,
                build_us / 1000,
                limit_us / 1000,
                f"{ours_us / limit_us:.2f}x",
            ]
        )
        summary[f"htlcs_{n}"] = {
            "signatures": signatures,
            "build_and_sign_ms": round(ours_us / 1000, 3),
            "build_commitment_only_ms": round(build_us / 1000, 3),
            "sign_limit_ms": round(limit_us / 1000, 3),
            "ratio_to_limit": round(ours_us / limit_us, 2),
        }
    # The issue asks for the chain's validation throughput in this run too.
    from benchmarks import chain as chain_benchmark

    chain_rows, chain_summary = chain_benchmark.measure()
    print_table(chain_benchmark.TITLE, chain_benchmark.COLUMNS, chain_rows)
    summary["chain"] = chain_summary
    report(
        "BOLT 3: one commitment + its HTLC txs, both parties' signatures (ms, median)",
        ["commitment", "signatures", "build+sign", "build commitment", "sign limit", "ours/limit"],
        rows,
        summary,
    )


if __name__ == "__main__":
    main()
