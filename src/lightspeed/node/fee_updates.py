"""Commitment feerates that follow the chain backend's estimates (BOLT 2 ``update_fee``).

Theory of operation. The funder of a channel pays its commitment's fee and alone may change
the feerate (BOLT 2). What feerate a commitment needs depends on its type:

- ``option_static_remotekey`` (no anchors): a force close must confirm on its own, nobody can
  add fee later, so the commitment follows the estimate for :data:`FEE_TARGET_BLOCKS` blocks.
  Hysteresis, so that the noise of an estimate does not cost an update_fee (two signatures and
  two round trips) at every block: we raise once the target is more than
  :data:`RAISE_ABOVE_PERCENT` % above the current feerate (a commitment at most a fifth short
  of a 3-block estimate still confirms within a few more blocks, and a raise is what a force
  close needs in time), and lower only once the current feerate is more than
  :data:`LOWER_BELOW_DIVISOR` times the target (an overpaying commitment is safe; lowering only
  saves the funder fee in a force close that may never happen).
- ``option_anchors``: the commitment is CPFP'd through its anchor (node.anchor_cpfp), so its
  own feerate only has to relay: it is kept at the relay floor times
  :data:`RELAY_MARGIN_PERCENT` % (LDK and Core Lightning do the same; lnd caps anchor
  commitments at a fixed maximum instead). It is raised when the floor rises above it and
  lowered when it is more than :data:`ANCHOR_FAR_ABOVE` times that need.

Every feerate is at least the backend's relay floor plus the margin (never below
:data:`~lightspeed.channel.state.MIN_FEERATE_PER_KW`), and at most what the funder can afford
(BOLT 2: the fee must leave the funder its reserve): an unaffordable target is capped at the
most we can afford, so a raise still happens, as far as it can.

The runtime part, :class:`FeeFollower`, runs at every block and after every reestablish; it
sends only for a channel that is usable (ready, reestablished with a connected peer, neither
shutting down nor closing) and with no update_fee of ours still in flight (one at a time),
through :meth:`Node.update_fee`, i.e. the ordinary commit flow (commitment_signed follows).

The receiving side (:func:`incoming_fee_problem`): a peer's update_fee that lowers the feerate
too far for timely processing (below our relay floor; on a non-anchor channel also below half
our estimate) or
unreasonably large (more than :data:`TOO_LARGE_MULTIPLE` times what we would pay) gets a BOLT 1
warning and the connection closed, not an error: BOLT 2 allows either, and failing the channel
would force-close it, at the old feerate, over what is often a transient disagreement of two
estimators; the funder can try again after the reconnection. The absolute bounds of
:class:`~lightspeed.channel.state.Channel` still fail the channel.

Whether a node follows the estimates is :attr:`Node.fee_updates` (None: on, except on regtest,
whose tests pin the commitment feerate they open with).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from lightspeed.bitcoin.network import REGTEST
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.state import MAX_FEERATE_PER_KW, MIN_FEERATE_PER_KW, Channel
from lightspeed.errors import LightspeedError, PeerProtocolError

if TYPE_CHECKING:
    from lightspeed.node.node import Node

log = logging.getLogger(__name__)

FEE_TARGET_BLOCKS = 3  # a non-anchor commitment should confirm within about this many blocks
RAISE_ABOVE_PERCENT = 20  # raise once the target is more than this much above the current feerate
LOWER_BELOW_DIVISOR = 2  # lower once the current feerate is more than this many times the target
RELAY_MARGIN_PERCENT = 125  # the least feerate we use: the relay floor plus a quarter
ANCHOR_FAR_ABOVE = 4  # an anchor commitment above this many times its need is lowered
TOO_LARGE_MULTIPLE = 10  # a peer's feerate above this many times ours is "unreasonably large"


@runtime_checkable
class RelayFloorSource(Protocol):
    """A chain backend that knows its minimum relay feerate (the embedded chain does)."""

    def min_relay_feerate_per_kw(self) -> int:
        ...


def least_feerate(relay_floor_per_kw: int) -> int:
    """The lowest feerate we put on a commitment: the relay floor plus the margin, rounded up."""
    floor = max(relay_floor_per_kw, MIN_FEERATE_PER_KW)
    return min(-(-floor * RELAY_MARGIN_PERCENT // 100), MAX_FEERATE_PER_KW)


def wanted_feerate(current_per_kw: int, estimate_per_kw: int, relay_floor_per_kw: int, anchors: bool) -> int | None:
    """The feerate the funder should move its commitments to, or None to leave them as they are.

    Pure: the estimate and floor come from the backend, the current feerate from the channel.
    """
    least = least_feerate(relay_floor_per_kw)
    floor = max(relay_floor_per_kw, MIN_FEERATE_PER_KW)
    if anchors:
        if current_per_kw < floor or current_per_kw > ANCHOR_FAR_ABOVE * least:
            return least
        return None
    target = min(max(estimate_per_kw, least), MAX_FEERATE_PER_KW)
    if current_per_kw < floor:  # would not even relay: move whatever the band says
        return target
    if target * 100 > current_per_kw * (100 + RAISE_ABOVE_PERCENT):
        return target
    if current_per_kw > LOWER_BELOW_DIVISOR * target:
        return target
    return None


def affordable_feerate(channel: Channel, wanted_per_kw: int) -> int | None:
    """``wanted_per_kw``, or the highest feerate below it that the funder can afford (None: none)."""
    if channel.update_fee_problem(wanted_per_kw) is None:
        return wanted_per_kw
    low, high = MIN_FEERATE_PER_KW, wanted_per_kw  # the fee grows with the feerate: bisect
    if channel.update_fee_problem(low) is not None:
        return None
    while high - low > 1:
        middle = (low + high) // 2
        if channel.update_fee_problem(middle) is None:
            low = middle
        else:
            high = middle
    return low


def incoming_fee_problem(feerate_per_kw: int, current_per_kw: int, estimate_per_kw: int,
                         relay_floor_per_kw: int, anchors: bool) -> str | None:
    """Why a peer's update_fee is too low for timely processing or unreasonably large, or None.

    A raise (above ``current_per_kw``, the feerate it replaces) is never too low: refusing it would
    leave the commitment at a lower feerate still (a funder that cannot afford the estimate sends
    the most it can).
    """
    floor = max(relay_floor_per_kw, MIN_FEERATE_PER_KW)
    # BOLT #2: if the update_fee is too low for timely processing, or is unreasonably large:
    # MUST send a warning and close the connection, or send an error and fail the channel.
    if feerate_per_kw >= current_per_kw:
        pass
    elif feerate_per_kw < floor:
        return f"update_fee {feerate_per_kw} sat/kw is below the relay floor of {floor} sat/kw"
    elif not anchors and feerate_per_kw * 2 < estimate_per_kw:
        return (f"update_fee {feerate_per_kw} sat/kw is too low for timely processing: the estimate "
                f"is {estimate_per_kw} sat/kw and the commitment has no anchor to bump it")
    ours = max(estimate_per_kw, least_feerate(relay_floor_per_kw))
    if feerate_per_kw > TOO_LARGE_MULTIPLE * ours:
        return (f"update_fee {feerate_per_kw} sat/kw is unreasonably large: more than {TOO_LARGE_MULTIPLE} "
                f"times the {ours} sat/kw we estimate")
    return None


class FeeFollower:
    """Keeps the commitments of the channels we fund at the feerate :func:`wanted_feerate` says."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.sent = 0  # update_fee messages it sent (tests, operators)

    @property
    def enabled(self) -> bool:
        setting = self.node.fee_updates
        return self.node.network is not REGTEST if setting is None else setting

    def relay_floor(self) -> int:
        chain = self.node.chain
        if isinstance(chain, RelayFloorSource):
            try:
                return max(chain.min_relay_feerate_per_kw(), MIN_FEERATE_PER_KW)
            except LightspeedError:
                pass
        return MIN_FEERATE_PER_KW

    def estimate(self) -> int:
        return self.node.chain.estimate_feerate_per_kw(FEE_TARGET_BLOCKS)

    async def on_block(self) -> None:
        """Every block: each channel we fund follows the estimate."""
        if not self.enabled:
            return
        for cid in list(self.node.channels):
            await self.follow(cid)

    async def follow(self, channel_id: bytes) -> int | None:
        """Send update_fee on one channel if its feerate should move; returns the feerate sent."""
        node = self.node
        channel = node.channels.get(channel_id)
        if (not self.enabled or channel is None or not channel.config.local_is_funder
                or channel_id in node.closed_channels or not node._usable(channel_id)):
            return None
        current = channel.log.commitment(Side.REMOTE, pending=True).feerate_per_kw
        if current != channel.log.commitment(Side.LOCAL).feerate_per_kw:
            return None  # our previous update_fee is still being committed: one at a time
        try:
            wanted = wanted_feerate(current, self.estimate(), self.relay_floor(), channel.config.anchors)
        except LightspeedError as exc:  # the backend could not answer: next block
            log.info("no fee estimate for channel %s: %s", channel_id.hex(), exc)
            return None
        if wanted is None:
            return None
        feerate = affordable_feerate(channel, wanted)
        if feerate is None or feerate == current or (wanted > current and feerate < current):
            return None  # nothing affordable moves it the way it should go
        try:
            await node.update_fee(channel_id, feerate)
        except LightspeedError as exc:  # the peer went away meanwhile: the reestablish tries again
            log.info("update_fee %d on channel %s not sent: %s", feerate, channel_id.hex(), exc)
            return None
        self.sent += 1
        log.info("update_fee: channel %s from %d to %d sat/kw (wanted %d)", channel_id.hex(), current, feerate, wanted)
        return feerate

    def check_incoming(self, channel: Channel, feerate_per_kw: int) -> None:
        """Raise :class:`PeerProtocolError` (a warning, not a channel failure) for a peer's update_fee
        our estimate finds too low or unreasonably large; the channel's own bounds are left to it."""
        if (not self.enabled or channel.config.local_is_funder
                or not MIN_FEERATE_PER_KW <= feerate_per_kw <= MAX_FEERATE_PER_KW):
            return
        try:
            estimate, floor = self.estimate(), self.relay_floor()
        except LightspeedError:
            return  # no estimate: the channel's absolute bounds alone
        current = channel.log.commitment(Side.LOCAL, pending=True).feerate_per_kw
        problem = incoming_fee_problem(feerate_per_kw, current, estimate, floor, channel.config.anchors)
        if problem is not None:
            raise PeerProtocolError(problem, channel.config.channel_id)
