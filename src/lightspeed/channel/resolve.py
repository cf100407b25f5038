"""On-chain resolution (BOLT 5), pure: what spent the funding output, and what claims our share.

Theory of operation: once a channel's funding output is spent, :func:`classify_spend`
says which transaction did it: our latest commitment, one of the peer's unrevoked
commitments, a commitment the peer already revoked (a cheat), or a mutual close.
:func:`claims_for` then lists every transaction that moves our money to ``to_script``,
each as a :class:`Claim` carrying the locks the chain will enforce on it (a relative
delay on the transaction it spends, an absolute height in ``tx.locktime``). The
runtime broadcasts a claim once :meth:`Claim.ready` holds, and drops it when the
output it spends went elsewhere (the peer won an HTLC race, or timed it out).

Everything here is a function of the channel's state and the spending transaction,
so a restarted node rebuilds the same claims (same txids) and simply resumes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from lightspeed.bitcoin.script import p2pkh_script_code, p2wpkh_script, p2wsh_script
from lightspeed.bitcoin.sighash import SIGHASH_ALL, bip143_sighash, sign_input
from lightspeed.bitcoin.tx import OutPoint, Transaction, TxIn, TxOut
from lightspeed.channel.anchor_sweep import (
    AnchorSpend,
    batched_anchor_fee,
    our_anchor,
    sweep_anchor_alone,
)
from lightspeed.channel.commitment import (
    CommitmentParams,
    HtlcOutput,
    build_commitment_tx,
    commitment_number_from_tx,
)
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.penalty import build_penalty_tx, revoked_commitment_number
from lightspeed.channel.scripts import ANCHOR_OUTPUT_SAT, to_local_script, to_remote_anchors_script
from lightspeed.channel.state import Channel
from lightspeed.channel.sweep import ForceClose, force_close, sweep_delayed
from lightspeed.crypto.hashes import hash160, sha256
from lightspeed.crypto.keys import (
    MAX_INDEX,
    derive_privkey,
    derive_revocation_privkey,
    point_from_secret,
)
from lightspeed.errors import UsageError

DUST_SAT = 294  # below this a P2WPKH sweep output is not worth creating (and not relayed)
# BIP 141 weights for the fee of a one-input, one-output claim: overhead and output, one
# input outside the witness, and the largest witness of each kind (signature 73 bytes).
_BASE_WEIGHT = 42 + 4 * 43 + 4 * 41
_TO_REMOTE_WITNESS = 1 + 74 + 38
_HTLC_WITNESS = 1 + 74 + 33 + 140


# BOLT 2 "Risks With HTLC Timeouts": G = 2 blocks of grace after an offered HTLC's cltv_expiry.
# An HTLC we can fulfil goes on chain FULFILL_DEADLINE_BLOCKS before its cltv_expiry: the spec
# calls 2R+G+S = 18 reasonable, but that equals the default min_final_cltv_expiry, so a final
# HTLC delayed a few blocks would close the channel; 10 (LND's incoming broadcast delta) still
# leaves the HTLC-success (one block of CSV under anchors) ample blocks to confirm.
OFFERED_GRACE_BLOCKS = 2
FULFILL_DEADLINE_BLOCKS = 10


class SpendKind(Enum):
    LOCAL = "local"  # our latest commitment: our outputs wait to_self_delay
    REMOTE = "remote"  # a commitment of the peer's it has not revoked: ours is paid at once
    REVOKED = "revoked"  # a commitment the peer revoked: everything is ours, now
    MUTUAL = "mutual"  # not a commitment: a closing transaction both signed


@dataclass(frozen=True)
class Claim:
    """One transaction of ours, and when the chain accepts it.

    ``csv`` is the number of confirmations ``parent_txid`` needs (BIP 68); the
    absolute lock is ``tx.locktime`` (a block height, 0 for none). An HTLC claim
    names its ``payment_hash`` and whether we ``offered`` the HTLC (a timeout,
    refunding a payment we made) or received it (claimed with its preimage).
    """

    label: str
    tx: Transaction
    parent_txid: bytes
    csv: int = 0
    payment_hash: bytes | None = None
    offered: bool = False

    def ready(self, tip_height: int, parent_confirmations: int) -> bool:
        """True when the next block may include the claim."""
        if parent_confirmations < self.csv:
            return False
        return self.tx.locktime <= tip_height


def htlc_deadline_passed(channel: Channel, height: int, preimage_known: Callable[[bytes], bool]) -> str | None:
    """Why the channel must be failed now for an HTLC (BOLT 2), or None.

    An offering node MUST fail the channel once an HTLC it offered is in either current
    commitment past its timeout deadline; a fulfilling node once an HTLC it can fulfil is
    still there past its fulfilment deadline. ``height`` is the chain tip.
    """
    for owner in Side:
        for htlc in channel.log.commitment(owner).htlcs:
            if htlc.offerer is Side.LOCAL and height >= htlc.cltv_expiry + OFFERED_GRACE_BLOCKS:
                return f"HTLC {htlc.htlc_id} we offered timed out at block {htlc.cltv_expiry}"
            if (htlc.offerer is Side.REMOTE and height >= htlc.cltv_expiry - FULFILL_DEADLINE_BLOCKS
                    and preimage_known(htlc.payment_hash)):
                return f"HTLC {htlc.htlc_id} must be claimed on chain before block {htlc.cltv_expiry}"
    return None


def classify_spend(channel: Channel, tx: Transaction) -> tuple[SpendKind, int | None]:
    """Which transaction spent the funding output, with its commitment number if it is one."""
    ctn = commitment_number_from_tx(tx, channel.obscuring)
    if ctn is None:
        return SpendKind.MUTUAL, None
    if ctn == channel.log.ctn[Side.LOCAL] and channel.commitment(Side.LOCAL).tx.txid == tx.txid:
        return SpendKind.LOCAL, ctn
    revoked = revoked_commitment_number(channel, tx)
    params = channel.signed_remote.get(ctn)
    if revoked is not None and params is not None and build_commitment_tx(params).tx.txid == tx.txid:
        return SpendKind.REVOKED, ctn
    # The peer's current or previous commitment, or one newer than we know (we lost data):
    # in every case our to_remote output is found by its script.
    return SpendKind.REMOTE, ctn


@dataclass(frozen=True)
class AnchorPlan:
    """How our anchor on the commitment is swept (the watcher decides, :mod:`.anchor_sweep`):
    ``batch``, as a second input of the main sweep (to_local on ours, to_remote on the peer's),
    at that sweep's feerate; else alone, in a claim labelled "anchor" at ``feerate_per_kw``."""

    batch: bool
    feerate_per_kw: int = 0


def batch_partner(kind: SpendKind) -> str:
    """The label of the claim our anchor rides along with (the balance swept from the commitment)."""
    return "to_local" if kind is SpendKind.LOCAL else "to_remote"


def claims_for(channel: Channel, tx: Transaction, kind: SpendKind, preimages: dict[bytes, bytes],
               to_script: bytes, feerate_per_kw: int, anchor: AnchorPlan | None = None) -> list[Claim]:
    """Every claim of ours on ``tx`` (the funding spend), parents before children; with ``anchor``,
    our anchor on it too (on our commitment or the peer's)."""
    index = our_anchor(channel, tx) if anchor is not None and kind in (SpendKind.LOCAL, SpendKind.REMOTE) else None
    spend = None if index is None or anchor is None or not anchor.batch else AnchorSpend.of(channel, tx, index)
    claims: list[Claim] = []
    if kind is SpendKind.LOCAL:
        claims = local_claims(channel, force_close(channel, preimages), to_script, feerate_per_kw, spend)
    elif kind is SpendKind.REVOKED:
        claims = penalty_claims(channel, tx, to_script, feerate_per_kw)
    elif kind is SpendKind.REMOTE:
        claims = remote_claims(channel, tx, preimages, to_script, feerate_per_kw, spend)
    if index is not None and anchor is not None and not anchor.batch:
        claims.append(Claim("anchor", sweep_anchor_alone(channel, tx, index, to_script, anchor.feerate_per_kw),
                            tx.txid))
    return claims


def _fee(witness_bytes: int, to_script: bytes, feerate_per_kw: int) -> int:
    return (_BASE_WEIGHT + witness_bytes + 4 * len(to_script)) * feerate_per_kw // 1000


def local_claims(channel: Channel, close: ForceClose, to_script: bytes, feerate_per_kw: int,
                 anchor: AnchorSpend | None = None) -> list[Claim]:
    """Our commitment: to_local after the delay (with ``anchor`` as a second input if given); HTLC
    txs, then their delayed outputs."""
    claims: list[Claim] = []
    commitment = close.commitment
    if close.to_local_index is not None:
        value = commitment.outputs[close.to_local_index].value_sat
        if value - _fee(_HTLC_WITNESS, to_script, feerate_per_kw) >= DUST_SAT:
            sweep = sweep_delayed(channel, close, commitment, close.to_local_index, to_script, feerate_per_kw, anchor)
            claims.append(Claim("to_local", sweep, commitment.txid, close.to_self_delay))
    csv = 1 if channel.config.anchors else 0  # BOLT 3: anchors HTLC txs spend with sequence 1
    for out, htlc_tx in close.htlc_txs:
        if htlc_tx is None:  # received, preimage unknown: the peer times it out
            continue
        kind = "htlc_timeout" if out.htlc.offered else "htlc_success"
        claims.append(Claim(f"{kind} {out.output_index}", htlc_tx, commitment.txid, csv,
                            out.htlc.payment_hash, out.htlc.offered))
        value = htlc_tx.outputs[0].value_sat
        if value - _fee(_HTLC_WITNESS, to_script, feerate_per_kw) >= DUST_SAT:
            second = sweep_delayed(channel, close, htlc_tx, 0, to_script, feerate_per_kw)
            claims.append(Claim(f"{kind} {out.output_index} output", second, htlc_tx.txid, close.to_self_delay))
    return claims


def to_remote_claim(channel: Channel, tx: Transaction, to_script: bytes, feerate_per_kw: int,
                    anchor: AnchorSpend | None = None) -> Claim | None:
    """Our output on the peer's commitment (option_static_remotekey: to our payment basepoint).

    Found by its script, so it works for a commitment newer than any we know (after data loss).
    Under option_anchors it is ``<key> OP_CHECKSIGVERIFY 1 OP_CSV``: one confirmation first.
    """
    return payment_key_claim(channel.secrets.payment, channel.config.anchors, tx, to_script, feerate_per_kw, anchor)


def payment_key_claim(privkey: bytes, anchors: bool, tx: Transaction, to_script: bytes,
                      feerate_per_kw: int, anchor: AnchorSpend | None = None) -> Claim | None:
    """:func:`to_remote_claim` from our payment basepoint secret alone: all a static backup restores
    (``anchor``: our anchor as a second input, its value less what its input costs)."""
    pubkey = point_from_secret(privkey)
    witness_script = to_remote_anchors_script(pubkey)
    script_pubkey = p2wsh_script(witness_script) if anchors else p2wpkh_script(pubkey)
    index = next((i for i, o in enumerate(tx.outputs) if o.script_pubkey == script_pubkey), None)
    if index is None:
        return None
    value = tx.outputs[index].value_sat
    amount = value - _fee(_TO_REMOTE_WITNESS, to_script, feerate_per_kw)
    if amount < DUST_SAT:
        return None
    inputs: tuple[TxIn, ...] = (TxIn(OutPoint(tx.txid, index), sequence=1 if anchors else 0xFFFFFFFF),)
    if anchor is not None:
        inputs += (anchor.txin,)
        amount += ANCHOR_OUTPUT_SAT - batched_anchor_fee(feerate_per_kw)
    sweep = Transaction(2, inputs, (TxOut(amount, to_script),), 0)
    code = witness_script if anchors else p2pkh_script_code(hash160(pubkey))
    signature = sign_input(privkey, bip143_sighash(sweep, 0, code, value, SIGHASH_ALL), SIGHASH_ALL)
    witness = (signature, witness_script) if anchors else (signature, pubkey)
    sweep = sweep.with_witness(0, witness)
    return Claim("to_remote", sweep if anchor is None else anchor.sign(sweep, 1), tx.txid, 1 if anchors else 0)


def remote_claims(channel: Channel, tx: Transaction, preimages: dict[bytes, bytes], to_script: bytes,
                  feerate_per_kw: int, anchor: AnchorSpend | None = None) -> list[Claim]:
    """The peer's unrevoked commitment: to_remote, and HTLCs straight from the commitment.

    BOLT 5: an HTLC the peer offered is ours with its preimage (``<sig> <preimage>``); one we
    offered comes back to us after its ``cltv_expiry`` (``<sig> <>``, locktime cltv_expiry).
    """
    claims: list[Claim] = []
    to_remote = to_remote_claim(channel, tx, to_script, feerate_per_kw, anchor)
    if to_remote is not None:
        claims.append(to_remote)
    ctn = commitment_number_from_tx(tx, channel.obscuring)
    params = channel.signed_remote.get(ctn) if ctn is not None else None
    if params is None:
        return claims
    commitment = build_commitment_tx(params)
    if commitment.tx.txid != tx.txid:
        return claims
    claims.extend(_direct_htlc_claims(channel, tx, params, commitment.htlc_outputs, preimages, to_script,
                                      feerate_per_kw))
    return claims


def _direct_htlc_claims(channel: Channel, tx: Transaction, params: CommitmentParams,
                        htlc_outputs: tuple[HtlcOutput, ...], preimages: dict[bytes, bytes], to_script: bytes,
                        feerate_per_kw: int) -> list[Claim]:
    ctn = params.commitment_number
    htlc_key = derive_privkey(channel.secrets.htlc, channel.remote_points[ctn])
    anchors = params.anchors
    claims: list[Claim] = []
    for out in htlc_outputs:
        htlc = out.htlc
        ours_offered = not htlc.offered  # "offered" is from the commitment owner's (the peer's) side
        preimage = preimages.get(htlc.payment_hash)
        if not ours_offered and (preimage is None or sha256(preimage) != htlc.payment_hash):
            continue  # an HTLC to us whose preimage we do not know: the peer times it out
        value = tx.outputs[out.output_index].value_sat
        amount = value - _fee(_HTLC_WITNESS, to_script, feerate_per_kw)
        if amount < DUST_SAT:
            continue
        sequence = 1 if anchors else (0xFFFFFFFE if ours_offered else 0xFFFFFFFF)
        locktime = htlc.cltv_expiry if ours_offered else 0
        claim = Transaction(2, (TxIn(OutPoint(tx.txid, out.output_index), sequence=sequence),),
                            (TxOut(amount, to_script),), locktime)
        sighash = bip143_sighash(claim, 0, out.witness_script, value, SIGHASH_ALL)
        signature = sign_input(htlc_key, sighash, SIGHASH_ALL)
        last = b"" if ours_offered else preimage
        assert last is not None
        label = "htlc_timeout" if ours_offered else "htlc_claim"
        claims.append(Claim(f"{label} {out.output_index}",
                            claim.with_witness(0, (signature, last, out.witness_script)),
                            tx.txid, 1 if anchors else 0, htlc.payment_hash, ours_offered))
    return claims


def penalty_claims(channel: Channel, tx: Transaction, to_script: bytes, feerate_per_kw: int,
                   taken: dict[int, Transaction] | None = None) -> list[Claim]:
    """A revoked commitment: the penalty (to_local and every HTLC, at once) and our to_remote.

    ``taken`` maps outputs of ``tx`` the cheater already spent to the transaction that did:
    the penalty then covers the rest, and each of the cheater's HTLC transactions is punished
    in turn (its output is a revocable to_local script: ours with the revocation key too).
    """
    ctn = revoked_commitment_number(channel, tx)
    if ctn is None:
        raise UsageError("not a revoked commitment of the peer")
    taken = taken or {}
    claims: list[Claim] = []
    if not taken:
        # (UsageError: nothing of theirs to take, their balance below dust and no HTLCs)
        with contextlib.suppress(UsageError):
            claims.append(Claim("penalty", build_penalty_tx(channel, tx, to_script, feerate_per_kw), tx.txid))
    else:
        key, params = _revocation_key(channel, ctn)
        rest = _revocable_outputs(tx, params, exclude=set(taken))
        if rest:
            claims.append(Claim("penalty (rest)", _revocation_spend(tx, rest, key, to_script, feerate_per_kw), tx.txid))
        script = to_local_script(params.keys.revocation_pubkey, params.to_self_delay,
                                 params.keys.local_delayed_pubkey)
        for spender in {t.txid: t for t in taken.values()}.values():
            outs = [(i, script, b"\x01") for i, o in enumerate(spender.outputs)
                    if o.script_pubkey == p2wsh_script(script)]
            if outs:
                claims.append(Claim("penalty (second stage)",
                                    _revocation_spend(spender, outs, key, to_script, feerate_per_kw), spender.txid))
    to_remote = to_remote_claim(channel, tx, to_script, feerate_per_kw)
    if to_remote is not None:
        claims.append(to_remote)
    return claims


def _revocation_key(channel: Channel, ctn: int) -> tuple[bytes, CommitmentParams]:
    secret = channel.remote_secrets.get(MAX_INDEX - ctn)
    params = channel.signed_remote.get(ctn)
    if secret is None or params is None:
        raise UsageError(f"no secret or no signed record for remote commitment {ctn}")
    return derive_revocation_privkey(channel.secrets.revocation, secret), params


def _revocable_outputs(tx: Transaction, params: CommitmentParams,
                       exclude: set[int]) -> list[tuple[int, bytes, bytes]]:
    """(index, witness script, branch selector) of the cheater's outputs still unspent."""
    keys = params.keys
    to_local = to_local_script(keys.revocation_pubkey, params.to_self_delay, keys.local_delayed_pubkey)
    spends = [(i, to_local, b"\x01") for i, o in enumerate(tx.outputs) if o.script_pubkey == p2wsh_script(to_local)]
    spends += [(h.output_index, h.witness_script, keys.revocation_pubkey)
               for h in build_commitment_tx(params).htlc_outputs]
    return [s for s in spends if s[0] not in exclude]


def _revocation_spend(tx: Transaction, spends: list[tuple[int, bytes, bytes]], key: bytes, to_script: bytes,
                      feerate_per_kw: int) -> Transaction:
    """Spend ``spends`` of ``tx`` through their revocation branches (BOLT 3 witnesses)."""
    total = sum(tx.outputs[i].value_sat for i, _, _ in spends)
    fee = (_BASE_WEIGHT - 4 * 41 + 4 * len(to_script) + (4 * 41 + 1 + 74 + 34 + 140) * len(spends)) \
        * feerate_per_kw // 1000
    out = Transaction(2, tuple(TxIn(OutPoint(tx.txid, i)) for i, _, _ in spends), (TxOut(total - fee, to_script),), 0)
    for n, (index, script, selector) in enumerate(spends):
        sighash = bip143_sighash(out, n, script, tx.outputs[index].value_sat, SIGHASH_ALL)
        out = out.with_witness(n, (sign_input(key, sighash, SIGHASH_ALL), selector, script))
    return out
