"""Which gossip goes to which peer, and when (BOLT 7 "Rebroadcasting", ``gossip_timestamp_filter``).

Accepted messages are queued as :class:`GossipItem`; a newer item for the same
channel direction or node replaces the queued one, and the queue is flushed to all
peers once per interval (60 s), independently of arrival times: the *staggered
broadcast*, a natural rate limit. Time is an input: :meth:`Broadcaster.next_flush_at`
says when, :meth:`Broadcaster.flush` takes ``now``.

Per peer the rules are: nothing we did not generate ourselves until the peer sent a
``gossip_timestamp_filter``, then only messages whose timestamp falls in its range
(our own messages ignore filters); never back to the peer it came from; nothing for
a chain the peer did not list in its ``init`` ``networks``. A new filter also asks
for the stored messages in its range: :func:`backlog` (the initial sync).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from lightspeed.codec.generated import GossipTimestampFilter
from lightspeed.gossip.store import GossipStore

FLUSH_INTERVAL_S = 60  # BOLT 7: SHOULD flush outgoing gossip messages once every 60 seconds

# Sending order inside a flush or a backlog: a channel_announcement precedes its
# channel_updates and the node_announcements of its nodes.
RANK_CHANNEL, RANK_UPDATE, RANK_NODE = 0, 1, 2

PeerId = Hashable


@dataclass(frozen=True)
class GossipItem:
    """One message to rebroadcast.

    ``key`` names what it describes (``("channel", scid)``, ``("update", scid, direction)``,
    ``("node", node_id)``) so a newer message replaces an older queued one; ``timestamp``
    is the message's (for a channel_announcement: that of a corresponding update);
    ``origin`` is the peer it came from, None if we generated it.
    """

    key: tuple[object, ...]
    rank: int
    raw: bytes
    timestamp: int
    chain_hash: bytes
    origin: PeerId | None = None


@dataclass(frozen=True)
class TimestampFilter:
    """A peer's ``gossip_timestamp_filter``: timestamps in ``[first, first + range)``."""

    first_timestamp: int
    timestamp_range: int

    def admits(self, timestamp: int) -> bool:
        # BOLT #7: greater or equal to first_timestamp, and less than first_timestamp
        # plus timestamp_range.
        return self.first_timestamp <= timestamp < self.first_timestamp + self.timestamp_range


@dataclass
class PeerGossip:
    """What we know of one peer's gossip wishes."""

    networks: frozenset[bytes] | None = None  # from init; None: the peer did not say
    filter: TimestampFilter | None = None  # None: no gossip_timestamp_filter received yet

    def wants_chain(self, chain_hash: bytes) -> bool:
        # BOLT #7: SHOULD NOT forward gossip messages to peers who sent networks in init
        # and did not specify the chain_hash of this gossip message.
        return self.networks is None or chain_hash in self.networks

    def wants(self, item: GossipItem, peer_id: PeerId) -> bool:
        if item.origin == peer_id or not self.wants_chain(item.chain_hash):
            return False
        if item.origin is None:
            # BOLT #7: SHOULD send gossip messages as it generates them regardless of
            # timestamp (our own messages ignore filters, and need none).
            return True
        # BOLT #7: MUST not send gossip it did not generate itself, until it receives
        # gossip_timestamp_filter.
        return self.filter is not None and self.filter.admits(item.timestamp)


def _ordered(items: Iterable[GossipItem]) -> list[GossipItem]:
    return sorted(items, key=lambda item: item.rank)  # stable: arrival order within a rank


@dataclass
class Broadcaster:
    """The staggered broadcast of one node to all its peers."""

    chain_hash: bytes
    started_at: int
    interval_s: int = FLUSH_INTERVAL_S
    peers: dict[PeerId, PeerGossip] = field(default_factory=dict)
    _queue: dict[tuple[object, ...], GossipItem] = field(default_factory=dict)
    _next_flush: int | None = None

    def add_peer(self, peer_id: PeerId, networks: Iterable[bytes] | None = None) -> None:
        self.peers[peer_id] = PeerGossip(None if networks is None else frozenset(networks))

    def remove_peer(self, peer_id: PeerId) -> None:
        self.peers.pop(peer_id, None)

    def set_filter(
        self, peer_id: PeerId, message: GossipTimestampFilter, store: GossipStore
    ) -> list[bytes]:
        """Apply a peer's filter (it replaces any previous one); returns its initial sync.

        BOLT #7: the receiver SHOULD send all gossip messages whose timestamp is in the
        range (the backlog, returned here for the runtime to send, paced as it likes).
        A filter for another chain selects nothing of ours.
        """
        peer = self.peers.setdefault(peer_id, PeerGossip())
        if message.chain_hash != self.chain_hash:
            peer.filter = TimestampFilter(0, 0)
            return []
        peer.filter = TimestampFilter(message.first_timestamp, message.timestamp_range)
        if not peer.wants_chain(self.chain_hash):
            return []
        return [item.raw for item in backlog(store, peer.filter, self.chain_hash)]

    def queue(self, items: Iterable[GossipItem]) -> None:
        """Queue accepted messages for the next flush, replacing older ones with the same key."""
        for item in items:
            self._queue.pop(item.key, None)  # re-insert: ordered by the newest arrival
            self._queue[item.key] = item

    @property
    def pending(self) -> int:
        return len(self._queue)

    def next_flush_at(self) -> int:
        """When the next flush is due (a pure function of the start time and past flushes)."""
        return (
            self._next_flush if self._next_flush is not None else self.started_at + self.interval_s
        )

    def flush(self, now: int) -> dict[PeerId, list[bytes]]:
        """If due at ``now``: each peer's messages, in sending order; the queue empties.

        The next flush is the first interval boundary after ``now``, so a late call
        does not cause a burst of catch-up flushes.
        """
        due = self.next_flush_at()
        if now < due:
            return {}
        elapsed = (now - due) // self.interval_s + 1
        self._next_flush = due + elapsed * self.interval_s
        items = _ordered(self._queue.values())
        self._queue.clear()
        out: dict[PeerId, list[bytes]] = {}
        for peer_id, peer in self.peers.items():
            chosen = [item.raw for item in items if peer.wants(item, peer_id)]
            if chosen:
                out[peer_id] = chosen
        return out


def backlog(store: GossipStore, flt: TimestampFilter, chain_hash: bytes) -> list[GossipItem]:
    """The stored messages a peer's filter selects, in sending order.

    BOLT #7: if a channel_announcement has no corresponding channel_updates: MUST NOT send
    it; otherwise MUST consider its timestamp to be the timestamp of a corresponding
    channel_update (here: it is sent when any of its relayable updates is in range);
    MUST send it prior to any corresponding channel_updates and node_announcements.
    Each channel's announcement is followed by its updates; node announcements come last.
    """
    out: list[GossipItem] = []
    for record in sorted(store.channels(), key=lambda r: r.short_channel_id):
        if record.announcement is None or record.spent_at is not None:
            continue  # private, or (BOLT 7) funding output spent: SHOULD NOT send
        scid = record.short_channel_id
        chosen = []
        for direction in (0, 1):
            update = store.update(scid, direction)
            if update is not None and not update.dont_forward and flt.admits(update.timestamp):
                chosen.append(
                    GossipItem(
                        ("update", scid, direction),
                        RANK_UPDATE,
                        update.raw,
                        update.timestamp,
                        chain_hash,
                    )
                )
        if chosen:
            out.append(
                GossipItem(
                    ("channel", scid),
                    RANK_CHANNEL,
                    record.announcement,
                    chosen[0].timestamp,
                    chain_hash,
                )
            )
            out.extend(chosen)
    out.extend(
        GossipItem(("node", node.node_id), RANK_NODE, node.raw, node.timestamp, chain_hash)
        for node in sorted(store.nodes(), key=lambda n: n.node_id)
        if node.forwardable and flt.admits(node.timestamp)
    )
    return out
