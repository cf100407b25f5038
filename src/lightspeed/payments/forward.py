"""A forwarding node's decision for one incoming HTLC (BOLT 4 "Failure Messages", BOLT 7 fees).

Sans-IO: the runtime peels the onion, finds a non-final payload, and asks
:func:`decide_forward` with the incoming amount and expiry, our channels by short channel
id, and the block height. The answer is either a :class:`ForwardTo` (add this HTLC on that
channel) or the :class:`~lightspeed.onion.failure.FailureMessage` to return, with the code
BOLT 4 prescribes. Checks run in the order of the spec's list: the next peer, then the
outgoing channel's policy (minimum, fee, CLTV delta, expiry too soon or too far, disabled),
then what the channel can carry right now (``temporary_channel_failure``).

``channel_update`` in failures is optional since the spec noted that applying updates from
onions fingerprints nodes; we attach ours when the runtime supplies it (``len`` 0 otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lightspeed.onion.failure import FailureCode, FailureMessage
from lightspeed.onion.payload import HopPayload

MAX_HTLC_CLTV = 2016  # BOLT 4 "max_htlc_cltv Selection"
MIN_OUTGOING_EXPIRY_MARGIN = 6  # blocks left on the outgoing HTLC below which we refuse (expiry_too_soon)


@dataclass(frozen=True)
class ForwardingPolicy:
    """What we announce for the direction from us over one channel (our channel_update)."""

    fee_base_msat: int
    fee_proportional_millionths: int
    cltv_expiry_delta: int
    htlc_minimum_msat: int
    htlc_maximum_msat: int
    enabled: bool = True

    def fee_msat(self, amount_to_forward_msat: int) -> int:
        """BOLT 7: fee_base_msat + amount_to_forward * fee_proportional_millionths / 1000000."""
        return self.fee_base_msat + amount_to_forward_msat * self.fee_proportional_millionths // 1_000_000


@dataclass(frozen=True)
class OutgoingChannel:
    short_channel_id: int
    policy: ForwardingPolicy
    available_msat: int  # what we can add to this channel now (balance above reserve, limits)
    free_slots: int  # HTLCs the peer will still accept from us
    channel_update: bytes = b""  # our latest signed channel_update for it, if we attach one


@dataclass(frozen=True)
class ForwardTo:
    short_channel_id: int
    amount_msat: int
    cltv_expiry: int
    fee_msat: int  # what we earn


def decide_forward(amount_msat: int, cltv_expiry: int, payload: HopPayload,
                   channels: Mapping[int, OutgoingChannel], height: int) -> ForwardTo | FailureMessage:
    scid, out_amount, out_cltv = payload.short_channel_id, payload.amt_to_forward_msat, payload.outgoing_cltv_value
    if scid is None or out_amount is None or out_cltv is None:
        missing = 6 if scid is None else 2 if out_amount is None else 4
        return FailureMessage(FailureCode.INVALID_ONION_PAYLOAD, tlv_type=missing, offset=0)
    channel = channels.get(scid)
    if channel is None:
        return FailureMessage(FailureCode.UNKNOWN_NEXT_PEER)
    policy, update = channel.policy, channel.channel_update
    if out_amount < policy.htlc_minimum_msat:
        return FailureMessage(FailureCode.AMOUNT_BELOW_MINIMUM, htlc_msat=out_amount, channel_update=update)
    fee = policy.fee_msat(out_amount)
    if amount_msat - fee < out_amount:
        return FailureMessage(FailureCode.FEE_INSUFFICIENT, htlc_msat=amount_msat, channel_update=update)
    if cltv_expiry - policy.cltv_expiry_delta < out_cltv:
        return FailureMessage(FailureCode.INCORRECT_CLTV_EXPIRY, cltv_expiry=out_cltv, channel_update=update)
    if out_cltv <= height + MIN_OUTGOING_EXPIRY_MARGIN:
        return FailureMessage(FailureCode.EXPIRY_TOO_SOON, channel_update=update)
    if cltv_expiry > height + MAX_HTLC_CLTV:
        return FailureMessage(FailureCode.EXPIRY_TOO_FAR)
    if not policy.enabled:
        return FailureMessage(FailureCode.CHANNEL_DISABLED, disabled_flags=0, channel_update=update)
    if out_amount > policy.htlc_maximum_msat or out_amount > channel.available_msat or channel.free_slots < 1:
        return FailureMessage(FailureCode.TEMPORARY_CHANNEL_FAILURE, channel_update=update)
    return ForwardTo(scid, out_amount, out_cltv, amount_msat - out_amount)
