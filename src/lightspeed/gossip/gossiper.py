"""One node's whole gossip protocol with all its peers, sans-IO: what the runtime plugs in.

Theory of operation: the runtime tells the :class:`Gossiper` about connections
(:meth:`~Gossiper.connected` with the peer's ``init``, :meth:`~Gossiper.disconnected`),
feeds it every gossip-range message a peer sends (:meth:`~Gossiper.receive`), calls
:meth:`~Gossiper.handle_timer` at :meth:`~Gossiper.next_timer`, hands it the gossip this
node creates (:meth:`~Gossiper.publish`), and sends what each call returns in a
:class:`GossipStep`: messages per peer, and warnings for peers that sent invalid data.

Per peer it follows BOLT 7: on connecting it sends a ``gossip_timestamp_filter`` (asking
for gossip from ``filter_window_s`` back, or for none from a peer that does not offer
``gossip_queries``) and, optionally, a ``query_channel_range`` over all blocks followed
by ``query_short_channel_ids`` for what it lacks, one query in flight at a time.

Older peers: until 2024 BOLT 9 had ``initial_routing_sync`` (bit 3), with which a peer
that does not offer ``gossip_queries`` asked for a full dump of the gossip at connection
(there was no filter to ask with). Such a peer gets what a filter admitting everything
would get, the stored gossip now and the relayed gossip later (LDK does the same).
Received announcements and updates go through the :class:`NetworkView`; accepted ones
are rebroadcast by the staggered :class:`Broadcaster`.

Wire bytes matter: gossip signatures cover fields this node may not know, so pass the
raw message when the transport has it; a typed message is re-encoded, which loses any
unknown trailing fields (its signature then fails).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lightspeed.codec.generated import (
    GossipTimestampFilter,
    QueryChannelRange,
    QueryShortChannelIds,
    ReplyChannelRange,
    ReplyShortChannelIdsEnd,
)
from lightspeed.codec.messages import Init, Message, decode_message, encode_message
from lightspeed.errors import DecodeError
from lightspeed.gossip.queries import (
    WANT_CHECKSUMS,
    WANT_TIMESTAMPS,
    ChannelRangeQuery,
    answer_short_channel_ids,
    query_short_channel_ids,
    reply_channel_range,
)
from lightspeed.gossip.relay import Broadcaster, PeerId
from lightspeed.gossip.store import GossipStore
from lightspeed.gossip.verify import FundingLookup
from lightspeed.gossip.view import NetworkView, Outcome, Status

GOSSIP_TYPES = frozenset(range(256, 266)) - {259}  # 259 announcement_signatures is channel business
_ANNOUNCEMENTS = frozenset((256, 257, 258))
FILTER_WINDOW_S = 14 * 24 * 3600  # ask for the last two weeks: older channels may be pruned anyway
ALL_BLOCKS = 0xFFFFFFFF
# BOLT 9 until bolts commit fc687e8 (2024): | 3 | initial_routing_sync | Sending node needs a
# complete routing information dump | I |. Only meaningful without gossip_queries.
INITIAL_ROUTING_SYNC = 3


@dataclass
class GossipStep:
    """What one call asks the runtime to do."""

    send: list[tuple[PeerId, bytes]] = field(default_factory=list)
    warnings: list[tuple[PeerId, str]] = field(
        default_factory=list
    )  # send a BOLT 1 warning, may disconnect
    outcomes: list[Outcome] = field(default_factory=list)  # for logs and tests

    def to(self, peer_id: PeerId, messages: list[bytes]) -> None:
        self.send.extend((peer_id, raw) for raw in messages)


@dataclass
class _Peer:
    queries: bool  # the peer offers gossip_queries: worth asking
    range_query: ChannelRangeQuery | None = None
    id_queries: list[QueryShortChannelIds] = field(default_factory=list)  # not yet sent
    id_query_in_flight: bool = False


class Gossiper:
    """Gossip with every peer: filters, queries, validation and the staggered broadcast."""

    def __init__(
        self,
        chain_hash: bytes,
        funding: FundingLookup,
        now: int,
        store: GossipStore | None = None,
        *,
        sync_on_connect: bool = True,
        filter_window_s: int = FILTER_WINDOW_S,
    ) -> None:
        self.view = NetworkView(chain_hash, funding, store)
        self.broadcaster = Broadcaster(chain_hash, started_at=now)
        self.chain_hash = chain_hash
        self.sync_on_connect = sync_on_connect
        self.filter_window_s = filter_window_s
        self._peers: dict[PeerId, _Peer] = {}

    # ------------------------------------------------------------------ connections

    def connected(self, peer_id: PeerId, remote_init: Init, now: int) -> GossipStep:
        """A peer finished ``init``: ask for its gossip, and sync from it if it offers queries."""
        features = remote_init.all_features
        peer = _Peer(queries=features.supports("gossip_queries"))
        self._peers[peer_id] = peer
        self.broadcaster.add_peer(peer_id, remote_init.networks)
        step = GossipStep()
        if remote_init.networks is not None and self.chain_hash not in remote_init.networks:
            return step  # the peer follows other chains only
        if peer.queries:
            first = max(now - self.filter_window_s, 0)
            gossip_filter = GossipTimestampFilter(
                chain_hash=self.chain_hash,
                first_timestamp=first,
                timestamp_range=ALL_BLOCKS - first,
            )
        else:
            # BOLT #7: if the receiver does not offer gossip_queries: SHOULD set first_timestamp
            # to 0xFFFFFFFF and timestamp_range to 0.
            gossip_filter = GossipTimestampFilter(
                chain_hash=self.chain_hash, first_timestamp=0xFFFFFFFF, timestamp_range=0
            )
        step.to(peer_id, [encode_message(gossip_filter)])
        if not peer.queries and INITIAL_ROUTING_SYNC in features.bits:
            # An old peer asking for everything: as if it had sent a filter admitting it all.
            dump = GossipTimestampFilter(chain_hash=self.chain_hash, first_timestamp=0, timestamp_range=ALL_BLOCKS)
            step.to(peer_id, self.broadcaster.set_filter(peer_id, dump, self.view.store))
        if peer.queries and self.sync_on_connect:
            options = (
                WANT_TIMESTAMPS | WANT_CHECKSUMS if features.supports("gossip_queries_ex") else 0
            )
            peer.range_query = ChannelRangeQuery(self.chain_hash, 0, ALL_BLOCKS, options)
            step.to(peer_id, [encode_message(peer.range_query.message())])
        return step

    def disconnected(self, peer_id: PeerId) -> None:
        self._peers.pop(peer_id, None)
        self.broadcaster.remove_peer(peer_id)

    # ------------------------------------------------------------------ messages

    def receive(self, peer_id: PeerId, message: bytes | Message, now: int) -> GossipStep:
        """One gossip-range message (type 256..265 except 259) from ``peer_id``."""
        raw = message if isinstance(message, bytes) else encode_message(message)
        step = GossipStep()
        number = int.from_bytes(raw[:2], "big")
        if number not in GOSSIP_TYPES:
            step.warnings.append((peer_id, f"message type {number} is not gossip"))
            return step
        if number in _ANNOUNCEMENTS:
            outcome = self.view.receive(raw, now, origin=peer_id)
            step.outcomes.append(outcome)
            if outcome.status is Status.INVALID:
                step.warnings.append((peer_id, f"invalid {outcome.message_name}: {outcome.reason}"))
            self.broadcaster.queue(outcome.relay)
            return step
        try:
            decoded = decode_message(raw)
            self._query_message(peer_id, decoded, step)
        except DecodeError as exc:
            step.warnings.append((peer_id, str(exc)))
        return step

    def _query_message(self, peer_id: PeerId, message: Message, step: GossipStep) -> None:
        peer = self._peers.get(peer_id)
        store = self.view.store
        if isinstance(message, GossipTimestampFilter):
            step.to(peer_id, self.broadcaster.set_filter(peer_id, message, store))
        elif isinstance(message, QueryChannelRange):
            step.to(
                peer_id,
                [encode_message(r) for r in reply_channel_range(store, message, self.chain_hash)],
            )
        elif isinstance(message, QueryShortChannelIds):
            step.to(peer_id, answer_short_channel_ids(store, message, self.chain_hash))
        elif isinstance(message, ReplyChannelRange):
            if peer is None or peer.range_query is None:
                raise DecodeError("reply_channel_range", "no query_channel_range was sent")
            try:
                complete = peer.range_query.on_reply(message)
            except DecodeError:
                peer.range_query = None  # a peer that answers badly is not synced from
                raise
            if complete:
                wanted = peer.range_query.wanted(store)
                peer.range_query = None
                peer.id_queries.extend(
                    query_short_channel_ids(self.chain_hash, wanted) if wanted else []
                )
                self._next_id_query(peer_id, peer, step)
        elif isinstance(message, ReplyShortChannelIdsEnd):
            if peer is None or not peer.id_query_in_flight:
                raise DecodeError(
                    "reply_short_channel_ids_end", "no query_short_channel_ids was sent"
                )
            peer.id_query_in_flight = False
            self._next_id_query(peer_id, peer, step)

    @staticmethod
    def _next_id_query(peer_id: PeerId, peer: _Peer, step: GossipStep) -> None:
        # BOLT #7: MUST NOT send query_short_channel_ids if it has sent a previous one to this
        # peer and not received reply_short_channel_ids_end.
        if peer.id_queries and not peer.id_query_in_flight:
            step.to(peer_id, [encode_message(peer.id_queries.pop(0))])
            peer.id_query_in_flight = True

    # ------------------------------------------------------------------ our gossip and time

    def publish(self, raw: bytes, now: int) -> Outcome:
        """Gossip this node created (its channel_updates, node_announcement, channel_announcements).

        It is checked like any other, then goes to every peer at the next flush, regardless
        of their filters (BOLT 7: SHOULD send gossip messages as it generates them).
        """
        outcome = self.view.receive(raw, now, origin=None)
        self.broadcaster.queue(outcome.relay)
        return outcome

    def next_timer(self) -> int:
        return self.broadcaster.next_flush_at()

    def handle_timer(self, now: int) -> GossipStep:
        """The staggered broadcast: at most once per interval, queued gossip goes out."""
        step = GossipStep()
        for peer_id, messages in self.broadcaster.flush(now).items():
            step.to(peer_id, messages)
        return step

    def syncing(self, peer_id: PeerId) -> bool:
        """True while a range query or id queries to ``peer_id`` are unanswered."""
        peer = self._peers.get(peer_id)
        return peer is not None and (
            peer.range_query is not None or peer.id_query_in_flight or bool(peer.id_queries)
        )
