"""Where accepted gossip lives: records, the narrow :class:`GossipStore` interface, and memory.

The store only keeps what :class:`~lightspeed.gossip.view.NetworkView` decided to
accept; it never validates. Records keep the raw message bytes next to the parsed
fields, because relaying and answering queries must send the message exactly as
signed (including fields this node does not understand). A SQLite store implements
the same dozen methods.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from lightspeed.gossip.addresses import Address
from lightspeed.gossip.create import DISABLE, DONT_FORWARD
from lightspeed.routing.graph import Policy


@dataclass(frozen=True)
class ChannelRecord:
    """A channel from a verified ``channel_announcement``, or one of our own private channels."""

    short_channel_id: int
    node_id_1: bytes
    node_id_2: bytes
    capacity_sat: int | None
    features: bytes = b""
    announcement: bytes | None = None  # raw channel_announcement; None: private, never relayed
    spent_at: int | None = None  # block height at which the funding output was spent

    @property
    def public(self) -> bool:
        return self.announcement is not None


@dataclass(frozen=True)
class UpdateRecord:
    """The latest accepted ``channel_update`` of one direction of a channel."""

    short_channel_id: int
    direction: int  # 0: set by node_id_1 for HTLCs leaving it; 1: by node_id_2
    timestamp: int
    message_flags: int
    channel_flags: int
    cltv_expiry_delta: int
    htlc_minimum_msat: int
    htlc_maximum_msat: int
    fee_base_msat: int
    fee_proportional_millionths: int
    raw: bytes

    @property
    def disabled(self) -> bool:
        return bool(self.channel_flags & DISABLE)

    @property
    def dont_forward(self) -> bool:
        return bool(self.message_flags & DONT_FORWARD)

    def policy(self) -> Policy:
        return Policy(
            fee_base_msat=self.fee_base_msat,
            fee_proportional_millionths=self.fee_proportional_millionths,
            cltv_expiry_delta=self.cltv_expiry_delta,
            htlc_minimum_msat=self.htlc_minimum_msat,
            htlc_maximum_msat=self.htlc_maximum_msat,
            disabled=self.disabled,
        )


@dataclass(frozen=True)
class NodeRecord:
    """The latest accepted ``node_announcement`` of a node."""

    node_id: bytes
    timestamp: int
    features: bytes
    alias: bytes
    rgb_color: bytes
    addresses: tuple[Address, ...]
    forwardable: bool  # False: more than one DNS hostname, BOLT 7 "MUST not forward"
    raw: bytes

    @property
    def alias_text(self) -> str:
        """The alias to display: trailing zeros dropped, bad UTF-8 replaced (it is self-signed)."""
        return self.alias.rstrip(b"\0").decode("utf-8", errors="replace")


class GossipStore(Protocol):
    """Storage of accepted gossip. Implementations keep a node's channels indexed."""

    def channel(self, short_channel_id: int) -> ChannelRecord | None: ...

    def put_channel(self, record: ChannelRecord) -> None: ...

    def remove_channel(self, short_channel_id: int) -> None:
        """Forget the channel and both its updates."""

    def channels(self) -> Iterable[ChannelRecord]: ...

    def node_channels(self, node_id: bytes) -> Iterable[int]:
        """The short channel ids of the channels ``node_id`` is an end of."""

    def update(self, short_channel_id: int, direction: int) -> UpdateRecord | None: ...

    def put_update(self, record: UpdateRecord) -> None: ...

    def node(self, node_id: bytes) -> NodeRecord | None: ...

    def put_node(self, record: NodeRecord) -> None: ...

    def remove_node(self, node_id: bytes) -> None: ...

    def nodes(self) -> Iterable[NodeRecord]: ...


@dataclass
class MemoryGossipStore:
    """The in-memory :class:`GossipStore` (dicts; a node's channels as a set of ids)."""

    _channels: dict[int, ChannelRecord] = field(default_factory=dict)
    _updates: dict[tuple[int, int], UpdateRecord] = field(default_factory=dict)
    _nodes: dict[bytes, NodeRecord] = field(default_factory=dict)
    _by_node: dict[bytes, set[int]] = field(default_factory=dict)

    def channel(self, short_channel_id: int) -> ChannelRecord | None:
        return self._channels.get(short_channel_id)

    def put_channel(self, record: ChannelRecord) -> None:
        self._channels[record.short_channel_id] = record
        for node_id in (record.node_id_1, record.node_id_2):
            self._by_node.setdefault(node_id, set()).add(record.short_channel_id)

    def remove_channel(self, short_channel_id: int) -> None:
        record = self._channels.pop(short_channel_id, None)
        if record is None:
            return
        for direction in (0, 1):
            self._updates.pop((short_channel_id, direction), None)
        for node_id in (record.node_id_1, record.node_id_2):
            ids = self._by_node.get(node_id)
            if ids is not None:
                ids.discard(short_channel_id)
                if not ids:
                    del self._by_node[node_id]

    def channels(self) -> Iterable[ChannelRecord]:
        return list(self._channels.values())

    def node_channels(self, node_id: bytes) -> Iterable[int]:
        return tuple(self._by_node.get(node_id, ()))

    def update(self, short_channel_id: int, direction: int) -> UpdateRecord | None:
        return self._updates.get((short_channel_id, direction))

    def put_update(self, record: UpdateRecord) -> None:
        self._updates[(record.short_channel_id, record.direction)] = record

    def node(self, node_id: bytes) -> NodeRecord | None:
        return self._nodes.get(node_id)

    def put_node(self, record: NodeRecord) -> None:
        self._nodes[record.node_id] = record

    def remove_node(self, node_id: bytes) -> None:
        self._nodes.pop(node_id, None)

    def nodes(self) -> Iterable[NodeRecord]:
        return list(self._nodes.values())
