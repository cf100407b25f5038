"""Unilateral close (BOLT 5): our commitment, its HTLC transactions, and sweeps of delayed outputs.

After :meth:`Channel.signed_local_commitment` is broadcast, our ``to_local``
and the outputs of our HTLC transactions wait ``to_self_delay`` blocks (the
CSV the peer imposed); offered HTLCs are timed out with HTLC-timeout after
their ``cltv_expiry``, received ones claimed with HTLC-success and the
preimage. The chain enforces every one of those waits.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightspeed.bitcoin.script import p2wsh_script
from lightspeed.bitcoin.sighash import SIGHASH_ALL, bip143_sighash, sign_input
from lightspeed.bitcoin.tx import OutPoint, Transaction, TxIn, TxOut
from lightspeed.channel.anchor_sweep import AnchorSpend, batched_anchor_fee
from lightspeed.channel.commitment import HtlcOutput
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.htlc_tx import build_htlc_txs, sign_htlc_tx, with_htlc_witness
from lightspeed.channel.scripts import ANCHOR_OUTPUT_SAT, to_local_script
from lightspeed.channel.state import Channel
from lightspeed.crypto.keys import derive_privkey
from lightspeed.errors import UsageError

_SWEEP_WEIGHT = 42 + 4 * 43 + 4 * 41 + 160


@dataclass(frozen=True)
class ForceClose:
    commitment: Transaction
    # (the HTLC, its signed HTLC-timeout/-success transaction, or None while the preimage is unknown)
    htlc_txs: tuple[tuple[HtlcOutput, Transaction | None], ...]
    to_local_index: int | None
    to_local_script: bytes
    to_self_delay: int


def force_close(channel: Channel, preimages: dict[bytes, bytes]) -> ForceClose:
    """Our latest commitment and its HTLC transactions, signed by both sides."""
    commitment = channel.commitment(Side.LOCAL)
    signed = channel.signed_local_commitment()
    params = channel.params_for(channel.log.commitment(Side.LOCAL))
    keys = params.keys
    unsigned = build_htlc_txs(commitment, params.to_self_delay, keys.revocation_pubkey, keys.local_delayed_pubkey,
                              params.feerate_per_kw, params.anchors)
    if len(channel.remote_htlc_signatures) != len(unsigned):
        raise UsageError("missing the peer's HTLC signatures for our latest commitment")
    htlc_key = derive_privkey(channel.secrets.htlc, channel.local_point(channel.log.ctn[Side.LOCAL]))
    htlc_txs: list[tuple[HtlcOutput, Transaction | None]] = []
    for tx, out, remote_sig in zip(unsigned, commitment.htlc_outputs, channel.remote_htlc_signatures, strict=True):
        preimage = preimages.get(out.htlc.payment_hash)
        if not out.htlc.offered and preimage is None:
            htlc_txs.append((out, None))
            continue
        local_sig = sign_htlc_tx(tx, out, htlc_key, by_owner=True, anchors=params.anchors)
        htlc_txs.append((out, with_htlc_witness(tx, out, remote_sig, local_sig,
                                                None if out.htlc.offered else preimage)))
    script = to_local_script(keys.revocation_pubkey, params.to_self_delay, keys.local_delayed_pubkey)
    index = next((i for i, o in enumerate(signed.outputs) if o.script_pubkey == p2wsh_script(script)), None)
    return ForceClose(signed, tuple(htlc_txs), index, script, params.to_self_delay)


def sweep_delayed(channel: Channel, close: ForceClose, tx: Transaction, output_index: int,
                  to_script: bytes, feerate_per_kw: int, anchor: AnchorSpend | None = None) -> Transaction:
    """Spend a ``to_local``-style output of ``tx`` (the commitment or an HTLC tx) after the CSV delay,
    with our ``anchor`` as a second input if given (its value less what its input costs)."""
    value = tx.outputs[output_index].value_sat
    fee = _SWEEP_WEIGHT * feerate_per_kw // 1000
    inputs: tuple[TxIn, ...] = (TxIn(OutPoint(tx.txid, output_index), sequence=close.to_self_delay),)
    if anchor is not None:
        inputs += (anchor.txin,)
        fee -= ANCHOR_OUTPUT_SAT - batched_anchor_fee(feerate_per_kw)
    sweep = Transaction(2, inputs, (TxOut(value - fee, to_script),), 0)
    delayed_key = derive_privkey(channel.secrets.delayed_payment, channel.local_point(channel.log.ctn[Side.LOCAL]))
    sighash = bip143_sighash(sweep, 0, close.to_local_script, value, SIGHASH_ALL)
    # BOLT 3 to_local, delayed branch: <local_delayedsig> <>
    sweep = sweep.with_witness(0, (sign_input(delayed_key, sighash, SIGHASH_ALL), b"", close.to_local_script))
    return sweep if anchor is None else anchor.sign(sweep, 1)
