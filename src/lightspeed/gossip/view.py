"""The node's local view of the network: the acceptance rules of BOLT 7 over a store.

:meth:`NetworkView.receive` takes one raw gossip message and ``now`` and returns an
:class:`Outcome`: accepted (with what to queue for rebroadcast), ignored (silently,
with the reason), or invalid (the peer SHOULD get a ``warning``). Only valid,
signed, on-chain-backed and newer information reaches the store:

* ``channel_announcement``: signatures, chain, node id order and the funding output
  (through the runtime's :class:`~lightspeed.gossip.verify.FundingLookup`);
  one announcement per ``short_channel_id``.
* ``channel_update``: only for a known channel (a public one, or one of our own
  private channels registered with :meth:`NetworkView.add_local_channel`), signed by
  the end the direction bit names, with a timestamp strictly greater than the
  stored one of that direction and not more than a day ahead of ``now``. Updates for
  unknown channels are ignored, not held: BOLT 7 says the receiver "MUST ignore"
  them, and the outcome carries the ``short_channel_id`` so the runtime can ask the
  peer with ``query_short_channel_ids``.
* ``node_announcement``: only for a node with a known public channel, newer
  timestamps only.

Once the runtime reports a channel's funding output spent (:meth:`NetworkView.funding_spent`)
only disabling updates are accepted and the announcement is no longer sent; 72 blocks
later :meth:`NetworkView.forget_spent` drops it. Not done: blacklisting nodes that sign
conflicting announcements or same-timestamp updates (such messages are only ignored).

:meth:`NetworkView.channel_graph` exports the usable part as a
:class:`~lightspeed.routing.graph.ChannelGraph` for path finding.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from lightspeed.codec.features import Features
from lightspeed.codec.generated import ChannelAnnouncement, ChannelUpdate, NodeAnnouncement
from lightspeed.codec.messages import decode_message
from lightspeed.errors import DecodeError, UsageError
from lightspeed.gossip.create import DISABLE, scid_from_bytes
from lightspeed.gossip.relay import RANK_CHANNEL, RANK_NODE, RANK_UPDATE, GossipItem, PeerId
from lightspeed.gossip.signing import SINGLE_SIGNATURE_SIGNED_FROM
from lightspeed.gossip.store import (
    ChannelRecord,
    GossipStore,
    MemoryGossipStore,
    NodeRecord,
    UpdateRecord,
)
from lightspeed.gossip.verify import (
    FundingLookup,
    GossipIgnored,
    verify_channel_announcement,
    verify_channel_update,
    verify_node_announcement,
)
from lightspeed.routing.graph import ChannelGraph

MAX_FUTURE_S = 24 * 3600  # BOLT 7: an update "unreasonably far in the future" MAY be discarded
SPENT_FORGET_BLOCKS = 72  # BOLT 7: forget a channel 72 blocks after its funding output is spent
STALE_AFTER_S = 1_209_600  # BOLT 7: two weeks without a channel_update: MAY prune the channel
# channel_update bytes after the signature up to the timestamp, and from after the timestamp on:
_UPDATE_TIMESTAMP_AT = SINGLE_SIGNATURE_SIGNED_FROM + 32 + 8
_UPDATE_AFTER_TIMESTAMP = _UPDATE_TIMESTAMP_AT + 4


class Status(enum.Enum):
    ACCEPTED = "accepted"
    IGNORED = "ignored"
    INVALID = "invalid"  # the sender SHOULD get a warning


@dataclass(frozen=True)
class Outcome:
    """What became of one received gossip message."""

    status: Status
    message_name: str
    reason: str = ""
    relay: tuple[GossipItem, ...] = ()  # queue these for the staggered broadcast
    unknown_short_channel_id: int | None = None  # an update for a channel we do not know

    @property
    def accepted(self) -> bool:
        return self.status is Status.ACCEPTED


class NetworkView:
    """Accepts gossip into a :class:`GossipStore` by the BOLT 7 rules (see the module docstring)."""

    def __init__(
        self,
        chain_hash: bytes,
        funding: FundingLookup,
        store: GossipStore | None = None,
        *,
        max_future_s: int = MAX_FUTURE_S,
    ) -> None:
        self.chain_hash = chain_hash
        self.funding = funding
        self.store: GossipStore = store if store is not None else MemoryGossipStore()
        self.max_future_s = max_future_s

    # ------------------------------------------------------------------ receiving

    def receive(self, raw: bytes, now: int, origin: PeerId | None = None) -> Outcome:
        """Apply one raw gossip message (type included) received from ``origin`` (None: ours)."""
        name = "gossip"
        try:
            message = decode_message(raw)
            if isinstance(message, ChannelAnnouncement):
                name = message.NAME
                return self._channel_announcement(raw, message, origin)
            if isinstance(message, ChannelUpdate):
                name = message.NAME
                return self._channel_update(raw, message, now, origin)
            if isinstance(message, NodeAnnouncement):
                name = message.NAME
                return self._node_announcement(raw, message, origin)
        except GossipIgnored as exc:
            return Outcome(Status.IGNORED, name, str(exc))
        except DecodeError as exc:
            return Outcome(Status.INVALID, name, str(exc))
        raise UsageError(f"{type(message).__name__} is not a gossip message")

    def _channel_announcement(
        self, raw: bytes, message: ChannelAnnouncement, origin: PeerId | None
    ) -> Outcome:
        name = message.NAME
        scid = scid_from_bytes(message.short_channel_id)
        known = self.store.channel(scid)
        if known is not None and known.public:
            if (known.node_id_1, known.node_id_2) != (message.node_id_1, message.node_id_2):
                # BOLT 7 would blacklist both pairs of nodes (their keys leaked); we keep the first.
                return Outcome(
                    Status.IGNORED, name, "another announcement of this channel names other nodes"
                )
            return Outcome(Status.IGNORED, name, "channel already announced")
        verified = verify_channel_announcement(raw, self.chain_hash, self.funding)
        if known is not None and {known.node_id_1, known.node_id_2} != {
            message.node_id_1,
            message.node_id_2,
        }:
            return Outcome(Status.IGNORED, name, "our private channel with this id has other nodes")
        self.store.put_channel(
            ChannelRecord(
                scid,
                message.node_id_1,
                message.node_id_2,
                verified.capacity_sat,
                message.features,
                raw,
            )
        )
        relay: tuple[GossipItem, ...] = ()
        if known is not None:  # our own channel just became public: updates may already be there
            relay = self._announcement_items(scid, origin)
        # Otherwise nothing is relayed yet. BOLT #7: MUST consider whether to send the
        # channel_announcement after receiving the first corresponding channel_update.
        return Outcome(Status.ACCEPTED, name, relay=relay)

    def _announcement_items(self, scid: int, origin: PeerId | None) -> tuple[GossipItem, ...]:
        record = self.store.channel(scid)
        if record is None or record.announcement is None:
            return ()
        updates = [
            u
            for u in (self.store.update(scid, 0), self.store.update(scid, 1))
            if u is not None and not u.dont_forward
        ]
        if not updates:
            return ()
        items = []
        # BOLT #7: once its funding output has been spent: SHOULD NOT rebroadcast this
        # channel_announcement.
        if record.spent_at is None:
            items.append(
                GossipItem(
                    ("channel", scid),
                    RANK_CHANNEL,
                    record.announcement,
                    updates[0].timestamp,
                    self.chain_hash,
                    origin,
                )
            )
        items.extend(
            GossipItem(
                ("update", scid, u.direction),
                RANK_UPDATE,
                u.raw,
                u.timestamp,
                self.chain_hash,
                origin,
            )
            for u in updates
        )
        return tuple(items)

    def _channel_update(
        self, raw: bytes, message: ChannelUpdate, now: int, origin: PeerId | None
    ) -> Outcome:
        name = message.NAME
        scid = scid_from_bytes(message.short_channel_id)
        channel = self.store.channel(scid)
        if channel is None:
            # BOLT #7: if the short_channel_id does NOT match a previous channel_announcement:
            # MUST ignore channel_updates that do NOT correspond to one of its own channels.
            return Outcome(Status.IGNORED, name, "unknown channel", unknown_short_channel_id=scid)
        direction = message.channel_flags[0] & 1
        if channel.spent_at is not None and not message.channel_flags[0] & DISABLE:
            # BOLT #7: if the channel output has been spent: MUST ignore channel_updates,
            # unless they have the disable bit set to 1.
            return Outcome(Status.IGNORED, name, "funding output spent")
        previous = self.store.update(scid, direction)
        if previous is not None:
            if message.timestamp < previous.timestamp:
                # BOLT #7: if timestamp is lower than that of the last-received: SHOULD ignore.
                return Outcome(Status.IGNORED, name, "older than the stored update")
            if message.timestamp == previous.timestamp:
                # BOLT #7: equal timestamp, equal fields: SHOULD ignore; different fields:
                # MAY blacklist the node (we only ignore the message).
                same = _fields_after_timestamp(raw) == _fields_after_timestamp(previous.raw)
                return Outcome(
                    Status.IGNORED,
                    name,
                    "duplicate"
                    if same
                    else "same timestamp as the stored update but other parameters",
                )
        if message.timestamp > now + self.max_future_s:
            return Outcome(Status.IGNORED, name, "timestamp is too far in the future")
        verify_channel_update(raw, self.chain_hash, channel.node_id_1, channel.node_id_2)
        # The announcement went out with the first relayable update of the channel.
        stored = (self.store.update(scid, 0), self.store.update(scid, 1))
        first_update = not any(u is not None and not u.dont_forward for u in stored)
        record = UpdateRecord(
            scid,
            direction,
            message.timestamp,
            message.message_flags[0],
            message.channel_flags[0],
            message.cltv_expiry_delta,
            message.htlc_minimum_msat,
            message.htlc_maximum_msat,
            message.fee_base_msat,
            message.fee_proportional_millionths,
            raw,
        )
        self.store.put_update(record)
        if not channel.public or record.dont_forward:
            return Outcome(Status.ACCEPTED, name)  # BOLT 7: MUST NOT forward such updates
        if first_update:
            return Outcome(Status.ACCEPTED, name, relay=self._announcement_items(scid, origin))
        item = GossipItem(
            ("update", scid, direction),
            RANK_UPDATE,
            raw,
            message.timestamp,
            self.chain_hash,
            origin,
        )
        return Outcome(Status.ACCEPTED, name, relay=(item,))

    def _node_announcement(
        self, raw: bytes, message: NodeAnnouncement, origin: PeerId | None
    ) -> Outcome:
        name = message.NAME
        # BOLT #7: if node_id is NOT previously known from a channel_announcement message, OR
        # if timestamp is NOT greater than the last-received node_announcement: SHOULD ignore.
        if not self._has_public_channel(message.node_id):
            return Outcome(Status.IGNORED, name, "node has no announced channel")
        previous = self.store.node(message.node_id)
        if previous is not None and message.timestamp <= previous.timestamp:
            return Outcome(Status.IGNORED, name, "not newer than the stored announcement")
        message, addresses = verify_node_announcement(raw)
        self.store.put_node(
            NodeRecord(
                message.node_id,
                message.timestamp,
                message.features,
                message.alias,
                message.rgb_color,
                addresses.addresses,
                addresses.forwardable,
                raw,
            )
        )
        if not addresses.forwardable:
            return Outcome(Status.ACCEPTED, name, "more than one DNS hostname: not relayed")
        item = GossipItem(
            ("node", message.node_id), RANK_NODE, raw, message.timestamp, self.chain_hash, origin
        )
        return Outcome(Status.ACCEPTED, name, relay=(item,))

    def _has_public_channel(self, node_id: bytes) -> bool:
        for scid in self.store.node_channels(node_id):
            record = self.store.channel(scid)
            if record is not None and record.public:
                return True
        return False

    # ------------------------------------------------------------------ local changes

    def add_local_channel(
        self, short_channel_id: int, node_id_a: bytes, node_id_b: bytes, capacity_sat: int
    ) -> None:
        """Register one of our own channels so its peer's ``channel_update``s are accepted.

        BOLT #7: SHOULD accept channel_updates for its own channels (even if non-public).
        Such a channel is never relayed unless a ``channel_announcement`` for it arrives.
        """
        if self.store.channel(short_channel_id) is not None:
            return
        node_1, node_2 = sorted((node_id_a, node_id_b))
        self.store.put_channel(ChannelRecord(short_channel_id, node_1, node_2, capacity_sat))

    def funding_spent(self, short_channel_id: int, block_height: int) -> None:
        """The runtime saw the channel's funding output spent in block ``block_height``.

        The channel stays usable (a splice may replace it) but is no longer announced, and
        only disabling updates are accepted until :meth:`forget_spent` drops it.
        """
        record = self.store.channel(short_channel_id)
        if record is not None and record.spent_at is None:
            self.store.put_channel(dataclasses.replace(record, spent_at=block_height))

    def forget_spent(self, block_height: int) -> list[int]:
        """Forget channels whose funding output was spent at least 72 blocks ago.

        BOLT #7: once its funding output has been spent OR reorganized out: SHOULD forget a
        channel after a 72-block delay.
        """
        gone = [
            r.short_channel_id
            for r in self.store.channels()
            if r.spent_at is not None and block_height - r.spent_at >= SPENT_FORGET_BLOCKS
        ]
        for short_channel_id in gone:
            self.forget_channel(short_channel_id)
        return gone

    def forget_channel(self, short_channel_id: int) -> None:
        """Drop a closed channel (BOLT 7: 72 blocks after its funding output was spent)."""
        record = self.store.channel(short_channel_id)
        self.store.remove_channel(short_channel_id)
        if record is not None:
            for node_id in (record.node_id_1, record.node_id_2):
                # BOLT #7: if the announced node no longer has any associated open channels:
                # MAY prune nodes added through node_announcement messages.
                if not self._has_public_channel(node_id):
                    self.store.remove_node(node_id)

    def prune_stale(self, now: int) -> list[int]:
        """Forget public channels whose older direction's update is more than two weeks old."""
        stale = []
        for record in self.store.channels():
            if not record.public:
                continue
            stamps = [
                u.timestamp
                for u in (
                    self.store.update(record.short_channel_id, 0),
                    self.store.update(record.short_channel_id, 1),
                )
                if u is not None
            ]
            if stamps and min(stamps) < now - STALE_AFTER_S:
                stale.append(record.short_channel_id)
        for scid in stale:
            self.forget_channel(scid)
        return stale

    # ------------------------------------------------------------------ export

    def channel_graph(self) -> ChannelGraph:
        """The channels a router may use, with each direction's policy.

        Left out, as BOLT 7 asks: channels with unknown even feature bits ("MUST NOT attempt
        to route messages through the channel"), channels of nodes whose announcement has
        unknown even feature bits ("MUST NOT route a payment through the node"), and
        directions whose htlc_maximum_msat is below htlc_minimum_msat or above the
        capacity ("SHOULD ignore this channel during route considerations").
        """
        graph = ChannelGraph()
        refused = {
            n.node_id
            for n in self.store.nodes()
            if Features.from_bytes(n.features).unknown_required()
        }
        for record in self.store.channels():
            if record.node_id_1 in refused or record.node_id_2 in refused:
                continue
            if Features.from_bytes(record.features).unknown_required():
                continue
            policies = []
            for direction in (0, 1):
                update = self.store.update(record.short_channel_id, direction)
                usable = (
                    update is not None
                    and update.htlc_minimum_msat <= update.htlc_maximum_msat
                    and (
                        record.capacity_sat is None
                        or update.htlc_maximum_msat <= record.capacity_sat * 1000
                    )
                )
                policies.append(update.policy() if usable and update is not None else None)
            graph.add_channel(
                record.short_channel_id,
                record.node_id_1,
                record.node_id_2,
                record.capacity_sat,
                policies[0],
                policies[1],
            )
        return graph


def _fields_after_timestamp(raw: bytes) -> bytes:
    return raw[SINGLE_SIGNATURE_SIGNED_FROM:_UPDATE_TIMESTAMP_AT] + raw[_UPDATE_AFTER_TIMESTAMP:]
