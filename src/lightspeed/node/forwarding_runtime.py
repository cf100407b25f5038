"""Forwarding glue: our channels as the forwarder sees them, channel_update, and the link in -> out.

A part of :class:`~lightspeed.node.node.Node` (its methods, bound onto the class there); the pure
reading of the onion is :mod:`lightspeed.node.forwarding`, the decision
:func:`~lightspeed.payments.forward.decide_forward`. The link from the outgoing HTLC back to the
incoming one is committed with the outgoing add, so a restart still settles or fails it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from lightspeed.channel.htlc_log import LoggedHtlc, Side
from lightspeed.channel.limits import advertised_htlc_range
from lightspeed.channel.state import Channel
from lightspeed.codec.messages import encode_message
from lightspeed.errors import UsageError
from lightspeed.gossip.create import create_channel_update, direction_of
from lightspeed.node.forwarding import (
    Forward,
    ForwardSettled,
)
from lightspeed.node.forwarding import short_channel_id as encode_scid
from lightspeed.node.outcomes import HtlcKey, NodeEvent
from lightspeed.node.paying import HtlcOutcome
from lightspeed.onion.failure import (
    FailureCode,
    FailureMessage,
    create_failure_packet,
    wrap_failure_packet,
)
from lightspeed.payments.forward import ForwardingPolicy, ForwardTo, OutgoingChannel, decide_forward
from lightspeed.store import IncomingHtlcRecord

if TYPE_CHECKING:
    from lightspeed.node.node import Node


def short_channel_id(self: Node, channel_id: bytes) -> int | None:
    """BOLT 7 short channel id of a channel whose funding transaction is mined (else None)."""
    scid = self._scid.get(channel_id)
    if scid is None:
        channel = self.channels.get(channel_id)
        position = None if channel is None else self.chain.tx_position(channel.config.funding_txid)
        if channel is None or position is None:
            return None
        scid = encode_scid(position[0], position[1], channel.config.funding_output_index)
        self._scid[channel_id], self._by_scid[scid] = scid, channel_id
    return scid


def _sendable_msat(self: Node, channel: Channel) -> int:
    """Exactly the largest HTLC ``add_htlc`` accepts now (BOLT 2 limits, reserve, fees: channel/limits.py)."""
    return channel.sendable_msat()


def _usable(self: Node, channel_id: bytes) -> bool:
    """Ready, reestablished with a connected peer, not closing: new HTLCs may go out on it."""
    peer = self._channel_peer.get(channel_id)
    return (self.channel_is_ready(channel_id) and channel_id in self._reestablished and peer is not None
            and not peer.session.closed and channel_id not in self._closings)


def _outgoing_channels(self: Node) -> dict[int, OutgoingChannel]:
    out: dict[int, OutgoingChannel] = {}
    for cid, channel in self.channels.items():
        scid = self.short_channel_id(cid)
        if scid is None:
            continue
        usable = self._usable(cid)
        log = channel.log
        offered = sum(1 for h in log.commitment(Side.REMOTE, pending=True).htlcs if h.offerer is Side.LOCAL)
        slots = channel.config.remote_max_accepted_htlcs - offered if usable else 0
        out[scid] = OutgoingChannel(scid, self._channel_policy(channel),
                                    self._sendable_msat(channel) if usable else 0, slots,
                                    self._channel_update(cid, scid, usable))
    return out


def _channel_policy(self: Node, channel: Channel) -> ForwardingPolicy:
    """Our forwarding policy narrowed to the HTLC amounts this channel's peer agreed to take."""
    p = self.forwarding_policy
    low, high = advertised_htlc_range(channel.config, p.htlc_minimum_msat, p.htlc_maximum_msat)
    return dataclasses.replace(p, htlc_minimum_msat=low, htlc_maximum_msat=high)


def _channel_update(self: Node, channel_id: bytes, scid: int, enabled: bool) -> bytes:
    """Our signed channel_update for the direction leaving us (type included), for failures.

    Cached per channel and state: signing one for every forward would cost a signature each.
    """
    key = (scid, enabled, self.forwarding_policy)
    cached = self._updates.get(channel_id)
    if cached is not None and cached[0] == key:
        return cached[1]
    p = self._channel_policy(self.channels[channel_id])
    update = create_channel_update(
        self.privkey, chain_hash=self.network.chain_hash, short_channel_id=scid, timestamp=int(time.time()),
        direction=direction_of(self.node_id, self._channel_node[channel_id]),
        cltv_expiry_delta=p.cltv_expiry_delta, htlc_minimum_msat=p.htlc_minimum_msat,
        htlc_maximum_msat=p.htlc_maximum_msat,
        fee_base_msat=p.fee_base_msat, fee_proportional_millionths=p.fee_proportional_millionths,
        disabled=not enabled)
    encoded = encode_message(update)
    self._updates[channel_id] = (key, encoded)
    return encoded


def _forward(self: Node, channel: Channel, htlc: LoggedHtlc, read: Forward, height: int,
             received: list[NodeEvent]) -> None:
    cid = channel.config.channel_id
    if self.asyncpay.intercept(channel, htlc, read.shared_secret, height, received):
        return  # held for an async payment, or failed back (node.async_runtime)
    decision = decide_forward(htlc.amount_msat, htlc.cltv_expiry, read.payload, self._outgoing_channels(), height)
    if isinstance(decision, ForwardTo):
        out_cid = self._by_scid[decision.short_channel_id]
        out = self.channels[out_cid]
        try:
            add = out.add_htlc(decision.amount_msat, htlc.payment_hash, decision.cltv_expiry, read.next_onion)
        except UsageError:
            update = self._channel_update(out_cid, decision.short_channel_id, True)
            decision = FailureMessage(FailureCode.TEMPORARY_CHANNEL_FAILURE, channel_update=update)
        else:
            self._dirty.setdefault(out_cid, []).append(add)
            self._record(IncomingHtlcRecord(cid, htlc.htlc_id, htlc.payment_hash, read.shared_secret,
                                            out_channel_id=out_cid, out_htlc_id=add.id))
            return
    reason = create_failure_packet(read.shared_secret, decision.to_bytes())
    self._record(IncomingHtlcRecord(cid, htlc.htlc_id, htlc.payment_hash, read.shared_secret, failure=reason))


def _forward_settled(self: Node, out: HtlcKey, preimage: bytes, out_msat: int) -> bool:
    """An HTLC we forwarded was fulfilled: fulfil the incoming one at once (True if it was ours)."""
    incoming = self._by_out.get(out)
    record = self._incoming.get(incoming) if incoming is not None else None
    if record is None or incoming is None:
        return False
    if record.preimage is None:
        self._record(dataclasses.replace(record, preimage=preimage, failure=None))
        self.asyncpay.settled(incoming)
        channel = self.channels.get(incoming[0])
        in_msat = None if channel is None else next(
            (h.amount_msat for h in channel.log.commitment(Side.LOCAL, pending=True).htlcs
             if h.offerer is Side.REMOTE and h.htlc_id == incoming[1]), None)
        if in_msat is not None:
            self.events.put_nowait(ForwardSettled(incoming[0], out[0], in_msat, out_msat, record.payment_hash))
    return True


def _forward_failed(self: Node, out: HtlcKey, payment_hash: bytes) -> bool:
    """An HTLC we forwarded is gone without a preimage: fail the incoming one with its reason."""
    incoming = self._by_out.get(out)
    record = self._incoming.get(incoming) if incoming is not None else None
    if record is None or record.payment_hash != payment_hash:
        return False
    del self._by_out[out]
    if record.preimage is not None or record.failure is not None:
        return True
    outcome = self._failures.pop(out, HtlcOutcome())
    blinded = self.blinded.failure_record(incoming, record.payment_hash, None) if incoming is not None else None
    if blinded is not None:  # BOLT 2: inside a blinded path every downstream error is invalid_onion_blinding
        reason = blinded
    elif outcome.reason is not None:
        reason = wrap_failure_packet(record.shared_secret, outcome.reason)
    else:
        # BOLT 4: a malformed answer from the next node becomes our failure with its code;
        # an HTLC that never left us (dropped on a disconnection) a temporary channel failure.
        scid = self.short_channel_id(out[0])
        update = b"" if scid is None or out[0] not in self.channels else self._channel_update(
            out[0], scid, self._usable(out[0]))
        failure = (FailureMessage(outcome.malformed_code, sha256_of_onion=outcome.sha256_of_onion)
                   if outcome.malformed_code is not None
                   else FailureMessage(FailureCode.TEMPORARY_CHANNEL_FAILURE, channel_update=update))
        reason = create_failure_packet(record.shared_secret, failure.to_bytes())
    self._record(dataclasses.replace(record, out_channel_id=None, out_htlc_id=None, failure=reason))
    return True
