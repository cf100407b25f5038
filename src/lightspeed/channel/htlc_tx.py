"""BOLT 3 second-stage HTLC transactions: HTLC-timeout and HTLC-success.

They spend one HTLC output of the owner's commitment into a delayed,
revocable output (the ``to_local`` script), so that an HTLC can resolve on time
while the owner still waits ``to_self_delay``. Both parties sign them: the
other party's signature travels in ``commitment_signed.htlc_signatures``.
Under option_anchors they carry no fee and the other party signs with
SIGHASH_SINGLE|SIGHASH_ANYONECANPAY, so the owner can attach fee inputs.
"""

from __future__ import annotations

from lightspeed.bitcoin.script import p2wsh_script
from lightspeed.bitcoin.sighash import (
    SIGHASH_ALL,
    SIGHASH_ANYONECANPAY,
    SIGHASH_SINGLE,
    bip143_sighash,
    sign_input,
)
from lightspeed.bitcoin.tx import OutPoint, Transaction, TxIn, TxOut
from lightspeed.channel.commitment import (
    CommitmentTx,
    HtlcOutput,
    htlc_success_fee_sat,
    htlc_timeout_fee_sat,
)
from lightspeed.channel.scripts import to_local_script
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import UsageError


def remote_htlc_sighash_type(anchors: bool) -> int:
    """BOLT #3: option_anchors uses SIGHASH_SINGLE|SIGHASH_ANYONECANPAY for the remote signature."""
    return SIGHASH_SINGLE | SIGHASH_ANYONECANPAY if anchors else SIGHASH_ALL


def build_htlc_tx(
    commitment_txid: bytes,
    htlc_output: HtlcOutput,
    to_self_delay: int,
    revocation_pubkey: bytes,
    local_delayed_pubkey: bytes,
    feerate_per_kw: int,
    anchors: bool,
) -> Transaction:
    """Unsigned HTLC-timeout (offered HTLC) or HTLC-success (received HTLC) transaction."""
    wscript = to_local_script(revocation_pubkey, to_self_delay, local_delayed_pubkey)
    return _htlc_tx(commitment_txid, htlc_output, p2wsh_script(wscript), feerate_per_kw, anchors)


def _htlc_tx(
    commitment_txid: bytes,
    htlc_output: HtlcOutput,
    script_pubkey: bytes,
    feerate_per_kw: int,
    anchors: bool,
) -> Transaction:
    htlc = htlc_output.htlc
    if htlc.offered:
        fee = htlc_timeout_fee_sat(feerate_per_kw, anchors)
        locktime = htlc.cltv_expiry  # BOLT #3: locktime cltv_expiry for HTLC-timeout
    else:
        fee = htlc_success_fee_sat(feerate_per_kw, anchors)
        locktime = 0
    amount = htlc.amount_msat // 1000 - fee
    if amount <= 0:
        raise UsageError("HTLC is trimmed: no second-stage transaction exists for it")
    txin = TxIn(
        OutPoint(commitment_txid, htlc_output.output_index),
        sequence=1 if anchors else 0,  # BOLT #3: sequence 0 (1 for option_anchors)
    )
    return Transaction(2, (txin,), (TxOut(amount, script_pubkey),), locktime)


def build_htlc_txs(
    commitment: CommitmentTx,
    to_self_delay: int,
    revocation_pubkey: bytes,
    local_delayed_pubkey: bytes,
    feerate_per_kw: int,
    anchors: bool,
) -> tuple[Transaction, ...]:
    """One second-stage transaction per untrimmed HTLC, in commitment output order."""
    txid = commitment.tx.txid
    # Every HTLC transaction pays to the same delayed script: build it once.
    spk = p2wsh_script(to_local_script(revocation_pubkey, to_self_delay, local_delayed_pubkey))
    return tuple(
        _htlc_tx(txid, out, spk, feerate_per_kw, anchors) for out in commitment.htlc_outputs
    )


def htlc_sighash(tx: Transaction, htlc_output: HtlcOutput, sighash_type: int) -> bytes:
    """BIP 143 digest of the HTLC transaction's single input."""
    amount_sat = htlc_output.htlc.amount_msat // 1000
    return bip143_sighash(tx, 0, htlc_output.witness_script, amount_sat, sighash_type)


def sign_htlc_tx(
    tx: Transaction, htlc_output: HtlcOutput, htlc_privkey: bytes, by_owner: bool, anchors: bool
) -> bytes:
    """DER + sighash byte; ``by_owner`` is False for the signature the other party sends."""
    sighash_type = SIGHASH_ALL if by_owner else remote_htlc_sighash_type(anchors)
    return sign_input(htlc_privkey, htlc_sighash(tx, htlc_output, sighash_type), sighash_type)


def with_htlc_witness(
    tx: Transaction,
    htlc_output: HtlcOutput,
    remote_signature: bytes,
    local_signature: bytes,
    payment_preimage: bytes | None = None,
) -> Transaction:
    """Witness ``0 <remotehtlcsig> <localhtlcsig> <payment_preimage or <>> <script>``."""
    if htlc_output.htlc.offered:
        if payment_preimage is not None:
            raise UsageError("HTLC-timeout takes no preimage")
        last = b""
    else:
        if payment_preimage is None or sha256(payment_preimage) != htlc_output.htlc.payment_hash:
            raise UsageError("HTLC-success needs the preimage of the HTLC's payment_hash")
        last = payment_preimage
    txin = tx.inputs[0]
    witness = (b"", remote_signature, local_signature, last, htlc_output.witness_script)
    signed = TxIn(txin.prevout, txin.script_sig, txin.sequence, witness)
    return Transaction(tx.version, (signed,), tx.outputs, tx.locktime)
