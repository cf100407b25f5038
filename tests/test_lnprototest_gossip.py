"""Gossip defects lnprototest found (test_bolt7-01, test_bolt7-20), fixed in the gossiper and queries."""

from __future__ import annotations

from lightspeed.codec.features import Features
from lightspeed.codec.generated import QueryChannelRange, ReplyChannelRange
from lightspeed.codec.messages import Init, decode_message
from lightspeed.gossip.gossiper import Gossiper
from lightspeed.gossip.queries import (
    ChannelRangeQuery,
    decode_short_ids,
    encode_short_ids,
    reply_channel_range,
)
from tests.gossip_network import CHAIN, Utxos, announcement, node_announcement, scid
from tests.test_gossip_gossiper import Net, seeded

NOW = 1_700_000_000
INITIAL_ROUTING_SYNC = 3


def _names(raws: list[bytes]) -> list[str]:
    return [type(decode_message(raw)).__name__ for raw in raws]


def test_a_peer_asking_for_the_initial_routing_sync_gets_the_stored_gossip() -> None:
    """A peer without gossip_queries that sets bit 3 (BOLT 9 until 2024) gets everything stored,
    each channel_announcement before its updates, node announcements last."""
    node = seeded(Net(Utxos()), "n")
    node.handle_timer(NOW + 60)  # what it published is flushed (to no one yet)
    old_peer = Init(features=Features(frozenset({INITIAL_ROUTING_SYNC})).to_bytes())
    sent = [raw for _, raw in node.connected("old", old_peer, NOW).send]
    assert _names(sent)[0] == "GossipTimestampFilter"
    dump = _names(sent[1:])
    assert dump.count("ChannelAnnouncement") == 5 and dump.count("ChannelUpdate") == 10
    assert dump.count("NodeAnnouncement") == 4
    assert dump.index("ChannelAnnouncement") < dump.index("ChannelUpdate") < dump.index("NodeAnnouncement")
    # and gossip from others is relayed to it later, as to a peer whose filter admits everything
    assert node.receive("other", node_announcement(3, NOW + 66), NOW + 66).outcomes[0].accepted
    relayed = [raw for peer, raw in node.handle_timer(NOW + 120).send if peer == "old"]
    assert _names(relayed) == ["NodeAnnouncement"]


def test_without_the_bit_or_with_gossip_queries_nothing_is_dumped() -> None:
    """BOLT 7: MUST NOT relay any gossip messages it did not generate itself, unless explicitly requested."""
    node = seeded(Net(Utxos()), "n")
    plain = node.connected("plain", Init(), NOW).send
    assert _names([raw for _, raw in plain]) == ["GossipTimestampFilter"]
    modern = Init(features=Features(frozenset({INITIAL_ROUTING_SYNC, 7})).to_bytes())  # gossip_queries too
    sent = [raw for _, raw in Gossiper(CHAIN, Utxos(), NOW, sync_on_connect=False).connected("m", modern, NOW).send]
    assert _names(sent) == ["GossipTimestampFilter"]
    sent = [raw for _, raw in node.connected("m", modern, NOW).send]
    assert "ChannelAnnouncement" not in _names(sent)


def _store_with_channel_at(block: int) -> Net:
    net = Net(Utxos())
    node = net.add("n")
    short_id = scid(block)
    net.utxos.fund(short_id, 1, 2)
    assert node.publish(announcement(short_id, 1, 2), NOW).accepted
    return net


def test_a_range_reply_to_everything_from_a_block_ends_where_a_u32_ends() -> None:
    """Query 109 + 0xFFFFFFFF blocks: the reply's first_blocknum + number_of_blocks must fit the
    u32 both fields are (a sum of 2^32 wraps to 0 for a peer adding them in u32); lnprototest,
    LDK and Core Lightning expect 0xFFFFFFFF."""
    store = _store_with_channel_at(109).nodes["n"].view.store
    query = QueryChannelRange(chain_hash=CHAIN, first_blocknum=109, number_of_blocks=0xFFFFFFFF)
    (reply,) = reply_channel_range(store, query, CHAIN)
    assert (reply.first_blocknum, reply.number_of_blocks) == (109, 0xFFFFFFFF - 109)
    assert reply.first_blocknum + reply.number_of_blocks <= 0xFFFFFFFF
    assert decode_short_ids(reply.encoded_short_ids) == [scid(109)]
    # The last block a u32 can name still gets a non-empty range.
    last = QueryChannelRange(chain_hash=CHAIN, first_blocknum=0xFFFFFFFF, number_of_blocks=1)
    (edge,) = reply_channel_range(store, last, CHAIN)
    assert (edge.first_blocknum, edge.number_of_blocks) == (0xFFFFFFFF, 1)


def test_our_range_query_is_complete_with_a_reply_ending_at_the_u32_end() -> None:
    """A reply ending at 0xFFFFFFFF (LDK's, Core Lightning's) answers our query for everything from a block."""
    asker = ChannelRangeQuery(CHAIN, 109, 0xFFFFFFFF, 0)
    reply = ReplyChannelRange(chain_hash=CHAIN, first_blocknum=109, number_of_blocks=0xFFFFFFFF - 109,
                              sync_complete=b"\x01", encoded_short_ids=encode_short_ids([scid(109)]))
    assert asker.on_reply(reply)
