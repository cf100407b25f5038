"""BOLT 7 gossip: create and verify announcements, keep the network view, decide what to relay.

Sans-IO like the rest of the core: functions and state machines take raw bytes and
``now`` and return values; the runtime (``node/``) owns sockets, timers and the chain
(which it offers through :class:`FundingLookup`).
"""

from lightspeed.gossip.addresses import (
    DNS,
    IPV4,
    IPV6,
    TORV3,
    Address,
    decode_addresses,
    encode_addresses,
)
from lightspeed.gossip.create import (
    announcement_signatures,
    channel_announcement_hash,
    combine_announcement_signatures,
    create_channel_announcement,
    create_channel_update,
    create_node_announcement,
    direction_of,
    sign_channel_announcement,
    unsigned_channel_announcement,
)
from lightspeed.gossip.gossiper import Gossiper, GossipStep
from lightspeed.gossip.relay import Broadcaster, GossipItem, TimestampFilter, backlog
from lightspeed.gossip.store import (
    ChannelRecord,
    GossipStore,
    MemoryGossipStore,
    NodeRecord,
    UpdateRecord,
)
from lightspeed.gossip.verify import (
    FundingLookup,
    FundingOutput,
    GossipIgnored,
    verify_channel_announcement,
    verify_channel_update,
    verify_node_announcement,
)
from lightspeed.gossip.view import NetworkView, Outcome, Status

__all__ = [
    "DNS",
    "IPV4",
    "IPV6",
    "TORV3",
    "Address",
    "Broadcaster",
    "ChannelRecord",
    "FundingLookup",
    "FundingOutput",
    "GossipIgnored",
    "GossipItem",
    "GossipStep",
    "GossipStore",
    "Gossiper",
    "MemoryGossipStore",
    "NetworkView",
    "NodeRecord",
    "Outcome",
    "Status",
    "TimestampFilter",
    "UpdateRecord",
    "announcement_signatures",
    "backlog",
    "channel_announcement_hash",
    "combine_announcement_signatures",
    "create_channel_announcement",
    "create_channel_update",
    "create_node_announcement",
    "decode_addresses",
    "direction_of",
    "encode_addresses",
    "sign_channel_announcement",
    "unsigned_channel_announcement",
    "verify_channel_announcement",
    "verify_channel_update",
    "verify_node_announcement",
]
