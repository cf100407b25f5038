"""RBF of our sweeps: a claim that pays its own fee, replaced at a higher feerate while it waits.

The claims of a closed channel (to_local after its delay, to_remote, HTLC outputs spent directly,
the penalty) pay their fee from the output they spend, at the feerate planned when the channel
closed, and signal replaceability (BIP 125: every input's nSequence is below 0xfffffffe, the
delays included). One still unconfirmed :data:`SWEEP_RBF_AFTER_BLOCKS` blocks after its broadcast
is signed again over the same input at a higher feerate: the chain's estimate while its deadline
is far, climbing to four times it at the deadline (the curve of the HTLC claims,
:func:`lightspeed.node.htlc_bump.deadline_feerate`). Deadlines: an HTLC we received, its
``cltv_expiry`` (then the peer may time it out); one we offered, ``cltv_expiry`` +
:data:`~lightspeed.node.htlc_bump.TIMEOUT_DEADLINE_BLOCKS`; the penalty, the cheater's
``to_self_delay`` after its commitment confirmed (then it may take its to_local); our own
balances have none (nobody else can take them): the estimate.

Caps: a replacement never pays above :data:`~lightspeed.node.fee_bumper.MAX_FEERATE_PER_KW`, nor
a fee above ``1 / MAX_FEE_SHARE_DIVISOR`` of the value it sweeps. Every feerate used is recorded
before its broadcast, so a restarted node rebuilds the same versions (byte for byte: signatures
are deterministic) and knows them all as its own.
"""

from __future__ import annotations

from lightspeed.bitcoin.tx import Transaction
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.resolve import Claim, SpendKind
from lightspeed.channel.state import Channel
from lightspeed.node.fee_bumper import MAX_FEE_SHARE_DIVISOR, MAX_FEERATE_PER_KW, deadline_feerate
from lightspeed.node.htlc_bump import TIMEOUT_DEADLINE_BLOCKS

SWEEP_RBF_AFTER_BLOCKS = 2  # a sweep unconfirmed this many blocks after its broadcast is replaced
SWEEP_STEP_PER_KW = 300  # at least this much more: 1 sat/vbyte (BIP 125 rule 4) over an estimated weight


def claim_key(claim: Claim) -> str:
    """The claim's identity across versions: the first output it spends (``txid:index``)."""
    prevout = claim.tx.inputs[0].prevout
    return f"{prevout.txid.hex()}:{prevout.index}"


def sweep_deadline(channel: Channel, claim: Claim, kind: SpendKind, spend_height: int | None) -> int | None:
    """The height by which ``claim`` must confirm (module docstring), None if it has none."""
    if kind is SpendKind.REVOKED and claim.label.startswith("penalty"):
        return None if spend_height is None else spend_height + channel.config.remote_to_self_delay - 1
    if claim.payment_hash is None:
        return None
    if claim.offered:
        return claim.tx.locktime + TIMEOUT_DEADLINE_BLOCKS
    expiries = [h.cltv_expiry for owner in Side for h in channel.log.commitment(owner).htlcs
                if h.offerer is Side.REMOTE and h.payment_hash == claim.payment_hash]
    return min(expiries) if expiries else None


def next_sweep_feerate(estimate_per_kw: int, current_per_kw: int, deadline: int | None, tip: int) -> int | None:
    """The feerate of a replacement, or None when the estimate and the deadline ask no more
    than the sweep pays (or the cap is reached)."""
    wanted = min(estimate_per_kw, MAX_FEERATE_PER_KW) if deadline is None else deadline_feerate(
        estimate_per_kw, deadline - tip)
    if wanted <= current_per_kw:
        return None
    feerate = min(max(wanted, current_per_kw + SWEEP_STEP_PER_KW), MAX_FEERATE_PER_KW)
    return feerate if feerate > current_per_kw else None


def within_cap(value_in_sat: int, tx: Transaction) -> bool:
    """A sweep's fee is at most ``1 / MAX_FEE_SHARE_DIVISOR`` of what it spends."""
    fee = value_in_sat - sum(o.value_sat for o in tx.outputs)
    return fee * MAX_FEE_SHARE_DIVISOR <= value_in_sat
