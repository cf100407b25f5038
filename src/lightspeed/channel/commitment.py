"""BOLT 3 commitment transactions: keys, fees, trimming, outputs, ordering, funding signatures.

A commitment transaction is described from its *owner's* point of view ("local"
is the node that can broadcast it): everything paying the owner is delayed by
``to_self_delay`` and revocable, everything paying the other party is not.
:func:`build_commitment_tx` is a pure function of a :class:`CommitmentParams`
value; both parties run it, one for each side's commitment, and must get
byte-identical transactions, so every rounding and ordering rule below is the
spec's, quoted where enforced.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightspeed.bitcoin.script import p2wpkh_script, p2wsh_script
from lightspeed.bitcoin.sighash import SIGHASH_ALL, bip143_sighash, sign_input
from lightspeed.bitcoin.tx import OutPoint, Transaction, TxIn, TxOut
from lightspeed.channel.scripts import (
    ANCHOR_OUTPUT_SAT,
    anchor_script,
    funding_script,
    offered_htlc_script,
    received_htlc_script,
    to_local_script,
    to_remote_anchors_script,
)
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.keys import derive_pubkey, derive_revocation_pubkey
from lightspeed.errors import UsageError

COMMITMENT_WEIGHT = 724
COMMITMENT_WEIGHT_ANCHORS = 1124
HTLC_OUTPUT_WEIGHT = 172
HTLC_TIMEOUT_WEIGHT = 663
HTLC_SUCCESS_WEIGHT = 703


@dataclass(frozen=True, slots=True)
class Htlc:
    """An HTLC as the commitment owner sees it: ``offered`` by the owner, or received."""

    offered: bool
    amount_msat: int
    payment_hash: bytes
    cltv_expiry: int


@dataclass(frozen=True, slots=True)
class ChannelBasepoints:
    """One party's long-lived public points (from ``open_channel``/``accept_channel``)."""

    funding_pubkey: bytes
    revocation_basepoint: bytes
    payment_basepoint: bytes
    delayed_payment_basepoint: bytes
    htlc_basepoint: bytes


@dataclass(frozen=True, slots=True)
class CommitmentKeys:
    """The per-commitment keys one commitment transaction is built from."""

    revocation_pubkey: bytes
    local_delayed_pubkey: bytes
    local_htlc_pubkey: bytes
    remote_htlc_pubkey: bytes
    remote_pubkey: bytes
    local_funding_pubkey: bytes
    remote_funding_pubkey: bytes

    @classmethod
    def derive(
        cls, per_commitment_point: bytes, owner: ChannelBasepoints, other: ChannelBasepoints
    ) -> CommitmentKeys:
        """Keys of the owner's commitment for ``per_commitment_point`` (the owner's point).

        The revocation key combines the *other* party's revocation basepoint, so
        only the other party can punish. Under option_static_remotekey,
        ``remotepubkey`` is simply the other party's ``payment_basepoint``.
        """
        return cls(
            revocation_pubkey=derive_revocation_pubkey(
                other.revocation_basepoint, per_commitment_point
            ),
            local_delayed_pubkey=derive_pubkey(
                owner.delayed_payment_basepoint, per_commitment_point
            ),
            local_htlc_pubkey=derive_pubkey(owner.htlc_basepoint, per_commitment_point),
            remote_htlc_pubkey=derive_pubkey(other.htlc_basepoint, per_commitment_point),
            remote_pubkey=other.payment_basepoint,
            local_funding_pubkey=owner.funding_pubkey,
            remote_funding_pubkey=other.funding_pubkey,
        )


@dataclass(frozen=True, slots=True)
class CommitmentParams:
    """Everything that determines one commitment transaction.

    ``to_local_msat``/``to_remote_msat`` are the balances *before* the funder
    pays the fee and the anchors, and exclude in-flight HTLCs.
    ``dust_limit_sat`` and ``to_self_delay`` are the owner's (the latter set by
    the other party). ``obscuring_factor`` comes from :func:`obscuring_factor`.
    """

    funding_txid: bytes
    funding_output_index: int
    funding_sat: int
    commitment_number: int
    obscuring_factor: int
    to_self_delay: int
    dust_limit_sat: int
    feerate_per_kw: int
    to_local_msat: int
    to_remote_msat: int
    local_is_funder: bool
    anchors: bool
    keys: CommitmentKeys
    htlcs: tuple[Htlc, ...] = ()


@dataclass(frozen=True, slots=True)
class HtlcOutput:
    """An untrimmed HTLC and where it landed in the commitment transaction."""

    output_index: int
    htlc: Htlc
    witness_script: bytes


@dataclass(frozen=True, slots=True)
class CommitmentTx:
    """An unsigned commitment transaction and what its signers and watchers need to know."""

    tx: Transaction
    htlc_outputs: tuple[HtlcOutput, ...]
    """Untrimmed HTLCs in output order: the order of ``htlc_signatures`` in BOLT 2."""
    base_fee_sat: int
    funding_script: bytes
    funding_sat: int
    local_funding_pubkey: bytes
    remote_funding_pubkey: bytes

    @property
    def fee_sat(self) -> int:
        """Actual fee: the base fee plus everything trimmed or rounded away."""
        return self.funding_sat - sum(out.value_sat for out in self.tx.outputs)


def obscuring_factor(opener_payment_basepoint: bytes, accepter_payment_basepoint: bytes) -> int:
    """BOLT #3: the lower 48 bits of SHA256(open_channel basepoint || accept_channel basepoint)."""
    digest = sha256(opener_payment_basepoint + accepter_payment_basepoint)
    return int.from_bytes(digest[-6:], "big")


def htlc_timeout_fee_sat(feerate_per_kw: int, anchors: bool) -> int:
    """BOLT #3: 0 with option_anchors, else feerate_per_kw * 663 / 1000 rounded down."""
    return 0 if anchors else feerate_per_kw * HTLC_TIMEOUT_WEIGHT // 1000


def htlc_success_fee_sat(feerate_per_kw: int, anchors: bool) -> int:
    """BOLT #3: 0 with option_anchors, else feerate_per_kw * 703 / 1000 rounded down."""
    return 0 if anchors else feerate_per_kw * HTLC_SUCCESS_WEIGHT // 1000


def is_trimmed(htlc: Htlc, dust_limit_sat: int, feerate_per_kw: int, anchors: bool) -> bool:
    """BOLT #3: an HTLC whose amount minus its second-stage fee is below the dust limit is not output."""
    if htlc.offered:
        fee = htlc_timeout_fee_sat(feerate_per_kw, anchors)
    else:
        fee = htlc_success_fee_sat(feerate_per_kw, anchors)
    return htlc.amount_msat // 1000 - fee < dust_limit_sat


def commitment_fee_sat(feerate_per_kw: int, untrimmed_htlcs: int, anchors: bool) -> int:
    """BOLT #3 base fee: (724 or 1124 + 172 per untrimmed HTLC) * feerate_per_kw / 1000, rounded down."""
    weight = COMMITMENT_WEIGHT_ANCHORS if anchors else COMMITMENT_WEIGHT
    return feerate_per_kw * (weight + HTLC_OUTPUT_WEIGHT * untrimmed_htlcs) // 1000


def _check(params: CommitmentParams) -> None:
    if len(params.funding_txid) != 32:
        raise UsageError("funding_txid must be 32 bytes (internal byte order)")
    if not 0 <= params.commitment_number < 1 << 48:
        raise UsageError("commitment_number must fit in 48 bits")
    amounts = (params.to_local_msat, params.to_remote_msat, params.feerate_per_kw)
    if min(amounts) < 0 or any(h.amount_msat <= 0 for h in params.htlcs):
        raise UsageError("amounts and feerate must not be negative")
    if not 0 <= params.to_self_delay <= 0xFFFF or not 0 <= params.funding_output_index <= 0xFFFF:
        raise UsageError("to_self_delay and funding_output_index are 16-bit values")
    for htlc in params.htlcs:
        if len(htlc.payment_hash) != 32:
            raise UsageError("payment_hash must be 32 bytes")
        # BOLT #2: cltv_expiry MUST be less than 500000000 (a block height, not a time).
        if not 0 <= htlc.cltv_expiry < 500_000_000:
            raise UsageError("cltv_expiry must be a block height below 500000000")
    total_msat = params.to_local_msat + params.to_remote_msat
    total_msat += sum(h.amount_msat for h in params.htlcs)
    if total_msat > params.funding_sat * 1000:
        raise UsageError("balances and HTLCs exceed the funding amount")
    funder_msat = params.to_local_msat if params.local_is_funder else params.to_remote_msat
    if params.anchors and funder_msat < 2 * ANCHOR_OUTPUT_SAT * 1000:
        # BOLT 2 keeps the funder able to pay the anchors; building anyway would
        # create outputs worth more than the funding output.
        raise UsageError("under option_anchors the funder must be able to pay both anchors")


def build_commitment_tx(params: CommitmentParams) -> CommitmentTx:
    """The owner's unsigned commitment transaction, following BOLT 3 "Commitment Transaction Construction"."""
    _check(params)
    keys = params.keys
    anchors = params.anchors
    # 1. Which HTLCs are trimmed, 2. the base fee.
    untrimmed = [
        h
        for h in params.htlcs
        if not is_trimmed(h, params.dust_limit_sat, params.feerate_per_kw, anchors)
    ]
    base_fee = commitment_fee_sat(params.feerate_per_kw, len(untrimmed), anchors)
    # 3. BOLT #3: subtract the base fee (and, with option_anchors, two anchors of
    # 330 sat) from the funder; an output that cannot pay it all simply vanishes.
    funder_cost_msat = (base_fee + (2 * ANCHOR_OUTPUT_SAT if anchors else 0)) * 1000
    to_local_msat, to_remote_msat = params.to_local_msat, params.to_remote_msat
    if params.local_is_funder:
        to_local_msat = max(0, to_local_msat - funder_cost_msat)
    else:
        to_remote_msat = max(0, to_remote_msat - funder_cost_msat)

    # (output, cltv tie-break, htlc or None, witness script or None)
    outputs: list[tuple[TxOut, int, Htlc | None, bytes | None]] = []
    # 4./5. Offered and received HTLC outputs, amounts rounded down to whole satoshis.
    for htlc in untrimmed:
        if htlc.offered:
            wscript = offered_htlc_script(
                keys.revocation_pubkey,
                keys.local_htlc_pubkey,
                keys.remote_htlc_pubkey,
                htlc.payment_hash,
                anchors,
            )
        else:
            wscript = received_htlc_script(
                keys.revocation_pubkey,
                keys.local_htlc_pubkey,
                keys.remote_htlc_pubkey,
                htlc.payment_hash,
                htlc.cltv_expiry,
                anchors,
            )
        txout = TxOut(htlc.amount_msat // 1000, p2wsh_script(wscript))
        outputs.append((txout, htlc.cltv_expiry, htlc, wscript))
    # 6./7. BOLT #3: to_local/to_remote only if greater or equal to dust_limit_satoshis.
    to_local_sat, to_remote_sat = to_local_msat // 1000, to_remote_msat // 1000
    has_local = to_local_sat >= params.dust_limit_sat
    has_remote = to_remote_sat >= params.dust_limit_sat
    if has_local:
        wscript = to_local_script(
            keys.revocation_pubkey, params.to_self_delay, keys.local_delayed_pubkey
        )
        outputs.append((TxOut(to_local_sat, p2wsh_script(wscript)), 0, None, None))
    if has_remote:
        if anchors:
            spk = p2wsh_script(to_remote_anchors_script(keys.remote_pubkey))
        else:
            spk = p2wpkh_script(keys.remote_pubkey)
        outputs.append((TxOut(to_remote_sat, spk), 0, None, None))
    # 8. BOLT #3: each anchor exists if its side's output exists or there are untrimmed HTLCs.
    if anchors and (has_local or untrimmed):
        spk = p2wsh_script(anchor_script(keys.local_funding_pubkey))
        outputs.append((TxOut(ANCHOR_OUTPUT_SAT, spk), 0, None, None))
    if anchors and (has_remote or untrimmed):
        spk = p2wsh_script(anchor_script(keys.remote_funding_pubkey))
        outputs.append((TxOut(ANCHOR_OUTPUT_SAT, spk), 0, None, None))
    # 9. BOLT #3: sort by value, then scriptPubKey (memcmp, shorter first), then cltv_expiry.
    outputs.sort(key=lambda o: (o[0].value_sat, o[0].script_pubkey, o[1]))

    obscured = params.commitment_number ^ params.obscuring_factor
    txin = TxIn(
        prevout=OutPoint(params.funding_txid, params.funding_output_index),
        # BOLT #3: sequence upper 8 bits 0x80, lower 24 bits the upper 24 bits of the obscured number.
        sequence=(0x80 << 24) | (obscured >> 24),
    )
    tx = Transaction(
        version=2,
        inputs=(txin,),
        outputs=tuple(o[0] for o in outputs),
        # BOLT #3: locktime upper 8 bits 0x20, lower 24 bits the lower 24 bits of the obscured number.
        locktime=(0x20 << 24) | (obscured & 0xFFFFFF),
    )
    htlc_outputs = tuple(
        HtlcOutput(index, htlc, wscript)
        for index, (_, _, htlc, wscript) in enumerate(outputs)
        if htlc is not None and wscript is not None
    )
    fscript = funding_script(keys.local_funding_pubkey, keys.remote_funding_pubkey)
    return CommitmentTx(
        tx,
        htlc_outputs,
        base_fee,
        fscript,
        params.funding_sat,
        keys.local_funding_pubkey,
        keys.remote_funding_pubkey,
    )


def commitment_sighash(commitment: CommitmentTx) -> bytes:
    """BIP 143 SIGHASH_ALL digest both funding keys sign."""
    return bip143_sighash(
        commitment.tx, 0, commitment.funding_script, commitment.funding_sat, SIGHASH_ALL
    )


def sign_commitment(commitment: CommitmentTx, funding_privkey: bytes) -> bytes:
    """DER signature + SIGHASH_ALL byte for the funding input (``commitment_signed.signature``)."""
    return sign_input(funding_privkey, commitment_sighash(commitment), SIGHASH_ALL)


def with_funding_witness(
    commitment: CommitmentTx, local_signature: bytes, remote_signature: bytes
) -> Transaction:
    """The broadcastable transaction: witness ``0 <sig for pubkey1> <sig for pubkey2> <script>``.

    Signatures are DER plus sighash byte, placed in the order of the
    lexicographically sorted funding pubkeys, as OP_CHECKMULTISIG requires.
    """
    first, second = local_signature, remote_signature
    if commitment.local_funding_pubkey > commitment.remote_funding_pubkey:
        first, second = second, first
    txin = commitment.tx.inputs[0]
    witness = (b"", first, second, commitment.funding_script)
    signed = TxIn(txin.prevout, txin.script_sig, txin.sequence, witness)
    tx = commitment.tx
    return Transaction(tx.version, (signed,), tx.outputs, tx.locktime)


def commitment_number_from_tx(tx: Transaction, obscuring_factor: int) -> int | None:
    """The commitment number a broadcast commitment carries, or ``None`` if it is not one.

    Reverses the locktime/sequence encoding, so a node seeing its channel's
    funding output spent can tell which (possibly revoked) commitment it was.
    """
    if len(tx.inputs) != 1 or tx.locktime >> 24 != 0x20 or tx.inputs[0].sequence >> 24 != 0x80:
        return None
    obscured = ((tx.inputs[0].sequence & 0xFFFFFF) << 24) | (tx.locktime & 0xFFFFFF)
    return obscured ^ obscuring_factor
