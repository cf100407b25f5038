"""Gossip queries: BOLT 7 extended-queries vectors, range replies, a full sync by queries."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.bitcoin.network import BITCOIN
from lightspeed.codec.generated import (
    QueryChannelRange,
    QueryShortChannelIds,
    ReplyChannelRange,
    ReplyShortChannelIdsEnd,
)
from lightspeed.codec.messages import decode_message, encode_message
from lightspeed.errors import DecodeError
from lightspeed.gossip import MemoryGossipStore, NetworkView
from lightspeed.gossip.queries import (
    WANT_ALL,
    WANT_ANNOUNCEMENT,
    WANT_CHECKSUMS,
    WANT_NODE_1,
    WANT_TIMESTAMPS,
    WANT_UPDATE_2,
    ChannelRangeQuery,
    answer_short_channel_ids,
    block_of,
    crc32c,
    decode_query_flags,
    decode_short_ids,
    decode_timestamps,
    encode_query_flags,
    encode_short_ids,
    max_ids_per_reply,
    query_short_channel_ids,
    reply_channel_range,
    update_checksum,
)
from lightspeed.gossip.store import ChannelRecord, UpdateRecord
from lightspeed.invoice.fields import parse_short_channel_id
from tests.gossip_network import (
    CHAIN,
    Utxos,
    announcement,
    node_announcement,
    node_id,
    scid,
    update,
)
from tests.support.vectors import load_vectors

NOW = 1_700_000_000
VECTORS = load_vectors("bolt07_extended_queries.json")["vectors"]


# ---------------------------------------------------------------- spec vectors


def _vector_id(case: dict[str, Any]) -> str:
    msg = case["msg"]
    encodings = [msg.get("shortChannelIds", {}).get("encoding", "")]
    encodings += [
        r["encoding"] for r in msg.get("tlvStream", {}).get("records", []) if isinstance(r, dict)
    ]
    return f"{msg['type']}-{'-'.join(e for e in encodings if e) or 'plain'}"


@pytest.mark.parametrize("case", VECTORS, ids=[_vector_id(c) for c in VECTORS])
def test_extended_queries_vectors(case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["hex"])
    expected = case["msg"]
    message = decode_message(raw)
    assert encode_message(message) == raw  # byte-exact both ways
    assert type(message).__name__ == expected["type"]
    assert isinstance(message, (QueryChannelRange, ReplyChannelRange, QueryShortChannelIds))
    assert message.chain_hash.hex() == expected["chainHash"]
    if isinstance(message, (QueryChannelRange, ReplyChannelRange)):
        assert (message.first_blocknum, message.number_of_blocks) == (
            expected["firstBlockNum"],
            expected["numberOfBlocks"],
        )
    if isinstance(message, QueryChannelRange):
        records = expected["tlvStream"]["records"]
        flags = message.tlvs.get("query_option", {}).get("query_option_flags", 0)
        assert flags == (WANT_TIMESTAMPS | WANT_CHECKSUMS if records else 0)
        return
    ids = expected["shortChannelIds"]
    if ids["encoding"] == "COMPRESSED_ZLIB":
        # BOLT #7: encoding 1 (zlib) "MUST NOT be used": we refuse to read it.
        with pytest.raises(DecodeError, match="zlib"):
            decode_short_ids(message.encoded_short_ids)
        return
    assert decode_short_ids(message.encoded_short_ids) == [
        parse_short_channel_id(s) for s in ids["array"]
    ]
    if isinstance(message, ReplyChannelRange):
        assert message.sync_complete == bytes([expected["complete"]])
        if "timestamps" in expected:
            stamps = message.tlvs["timestamps_tlv"]
            pairs = decode_timestamps(stamps["encoding_type"] + stamps["encoded_timestamps"])
            assert pairs == [
                (t["timestamp1"], t["timestamp2"]) for t in expected["timestamps"]["timestamps"]
            ]
            sums = [
                (c["checksum_node_id_1"], c["checksum_node_id_2"])
                for c in message.tlvs["checksums_tlv"]["checksums"]
            ]
            assert sums == [
                (c["checksum1"], c["checksum2"]) for c in expected["checksums"]["checksums"]
            ]
    else:
        records = expected["tlvStream"]["records"]
        for record in records:
            flags = message.tlvs["query_flags"]
            assert record["encoding"] == "COMPRESSED_ZLIB"
            with pytest.raises(DecodeError, match="zlib"):
                decode_query_flags(flags["encoding_type"] + flags["encoded_query_flags"])


def test_encoded_arrays_round_trip_and_refusals() -> None:
    ids = [scid(5, 2, 1), scid(1), scid(700_000, 3000, 7)]
    assert decode_short_ids(encode_short_ids(ids)) == sorted(ids)
    assert decode_query_flags(encode_query_flags([1, 31, 300])) == [1, 31, 300]
    assert decode_short_ids(b"") == [] and decode_short_ids(b"\x00") == []
    with pytest.raises(DecodeError, match="unknown encoding type 2"):
        decode_short_ids(b"\x02" + bytes(8))
    with pytest.raises(DecodeError, match="whole number"):
        decode_short_ids(b"\x00" + bytes(9))
    with pytest.raises(DecodeError, match="not canonical"):
        decode_query_flags(b"\x00\xfd\x00\x01")


def test_crc32c_rfc3720_vectors() -> None:
    # RFC 3720 appendix B.4 CRC examples.
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C


def test_update_checksum_ignores_signature_and_timestamp_only() -> None:
    s = scid(100)
    assert update_checksum(update(s, 1, 2, 10)) == update_checksum(update(s, 1, 2, 99))
    assert update_checksum(update(s, 1, 2, 10)) != update_checksum(
        update(s, 1, 2, 10, fee_base_msat=1)
    )


# ---------------------------------------------------------------- reply_channel_range


def _store_with(ids: list[int], private: tuple[int, ...] = ()) -> MemoryGossipStore:
    """Channel records straight into a store (the store never validates): only the ids matter."""
    store = MemoryGossipStore()
    for short_id in ids:
        store.put_channel(
            ChannelRecord(
                short_id,
                node_id(1),
                node_id(2),
                1000,
                b"",
                None if short_id in private else b"announcement",
            )
        )
    return store


def _check_replies(
    query: QueryChannelRange, replies: list[ReplyChannelRange], expected: list[int]
) -> None:
    start, end = query.first_blocknum, query.first_blocknum + query.number_of_blocks
    assert (
        replies[0].first_blocknum <= start < replies[0].first_blocknum + replies[0].number_of_blocks
    )
    assert replies[-1].first_blocknum + replies[-1].number_of_blocks >= end
    seen: list[int] = []
    for before, after in itertools.pairwise(replies):
        assert after.first_blocknum >= before.first_blocknum
    for reply in replies:
        assert reply.sync_complete == b"\x01" and reply.chain_hash == query.chain_hash
        assert len(encode_message(reply)) <= 65535
        ids = decode_short_ids(reply.encoded_short_ids)
        assert all(
            reply.first_blocknum <= block_of(s) < reply.first_blocknum + reply.number_of_blocks
            for s in ids
        )
        seen.extend(ids)
    assert seen == expected


@settings(max_examples=60, deadline=None)
@given(
    blocks=st.lists(st.tuples(st.integers(0, 60), st.integers(1, 6)), max_size=25),
    first=st.integers(0, 60),
    count=st.integers(1, 70),
    limit=st.integers(1, 8),
)
def test_reply_channel_range_property(
    blocks: list[tuple[int, int]], first: int, count: int, limit: int
) -> None:
    ids = sorted({scid(b, tx) for b, n in blocks for tx in range(n)})
    store = _store_with(ids, private=tuple(ids[:1]))
    query = QueryChannelRange(chain_hash=CHAIN, first_blocknum=first, number_of_blocks=count)
    replies = reply_channel_range(store, query, CHAIN, limit=limit)
    expected = [s for s in ids[1:] if first <= block_of(s) < first + count]
    _check_replies(query, replies, expected)
    assert all(len(decode_short_ids(r.encoded_short_ids)) <= limit for r in replies)


def test_reply_channel_range_fits_messages_at_mainnet_scale() -> None:
    ids = [scid(500_000 + i // 3, i % 3 + 1) for i in range(20_000)]
    store = _store_with(ids)
    for i, short_id in enumerate(ids):
        for direction in (0, 1):
            store.put_update(
                UpdateRecord(
                    short_id,
                    direction,
                    NOW + i,
                    1,
                    direction,
                    40,
                    1,
                    10**9,
                    1,
                    1,
                    update(short_id, 1, 2, 5) if i < 3 else bytes(130),
                )
            )
    flags = WANT_TIMESTAMPS | WANT_CHECKSUMS
    query = QueryChannelRange(
        chain_hash=CHAIN,
        first_blocknum=0,
        number_of_blocks=0xFFFFFFFF,
        tlvs={"query_option": {"query_option_flags": flags}},
    )
    replies = reply_channel_range(store, query, CHAIN)
    assert len(replies) >= -(-20_000 // max_ids_per_reply(flags)) > 1
    _check_replies(query, replies, ids)
    asker = ChannelRangeQuery(CHAIN, 0, 0xFFFFFFFF, flags)
    done = [asker.on_reply(decode_message(encode_message(r))) for r in replies]  # type: ignore[arg-type]
    assert done[-1] and not any(done[:-1])
    assert asker.timestamps[ids[7]] == (NOW + 7, NOW + 7)
    assert asker.checksums[ids[0]][0] == update_checksum(update(ids[0], 1, 2, 5))


def test_reply_for_another_chain_or_an_empty_range() -> None:
    store = _store_with([scid(10)])
    other = reply_channel_range(
        store,
        QueryChannelRange(chain_hash=BITCOIN.chain_hash, first_blocknum=0, number_of_blocks=100),
        CHAIN,
    )
    assert len(other) == 1 and decode_short_ids(other[0].encoded_short_ids) == []
    assert other[0].chain_hash == BITCOIN.chain_hash
    empty = reply_channel_range(
        store, QueryChannelRange(chain_hash=CHAIN, first_blocknum=11, number_of_blocks=5), CHAIN
    )
    assert [(r.first_blocknum, r.number_of_blocks) for r in empty] == [(11, 5)]
    with pytest.raises(DecodeError, match="number_of_blocks"):
        reply_channel_range(
            store, QueryChannelRange(chain_hash=CHAIN, first_blocknum=1, number_of_blocks=0), CHAIN
        )


def _reply(first: int, count: int, ids: list[int], **tlvs: Any) -> ReplyChannelRange:
    return ReplyChannelRange(
        chain_hash=CHAIN,
        first_blocknum=first,
        number_of_blocks=count,
        sync_complete=b"\x01",
        encoded_short_ids=encode_short_ids(ids),
        tlvs=dict(tlvs),
    )


def test_range_query_refuses_bad_replies() -> None:
    def asker() -> ChannelRangeQuery:
        return ChannelRangeQuery(CHAIN, 100, 50, WANT_TIMESTAMPS)

    with pytest.raises(DecodeError, match="does not overlap"):
        asker().on_reply(_reply(101, 60, []))
    with pytest.raises(DecodeError, match="outside the reply's range"):
        asker().on_reply(_reply(100, 10, [scid(120)]))
    with pytest.raises(DecodeError, match="chain"):
        asker().on_reply(
            ReplyChannelRange(
                chain_hash=BITCOIN.chain_hash,
                first_blocknum=100,
                number_of_blocks=50,
                sync_complete=b"\x01",
                encoded_short_ids=b"\x00",
            )
        )
    with pytest.raises(DecodeError, match="one timestamp pair per id"):
        asker().on_reply(
            _reply(
                100,
                60,
                [scid(120)],
                timestamps_tlv={"encoding_type": b"\x00", "encoded_timestamps": b""},
            )
        )
    going = asker()
    assert not going.on_reply(_reply(90, 30, [scid(110)]))
    with pytest.raises(DecodeError, match="goes backwards"):
        going.on_reply(_reply(89, 100, []))
    assert going.on_reply(_reply(120, 30, [scid(121)]))
    with pytest.raises(DecodeError, match="after the range was complete"):
        going.on_reply(_reply(150, 1, []))


# ------------------------------------------------ query_short_channel_ids and a full sync


def _source() -> NetworkView:
    utxos = Utxos()
    view = NetworkView(CHAIN, utxos)
    for i, (a, b) in enumerate([(1, 2), (2, 3), (3, 4), (4, 5), (1, 5)]):
        short_id = scid(200 + i, 1)
        utxos.fund(short_id, a, b)
        assert view.receive(announcement(short_id, a, b), NOW).accepted
        assert view.receive(update(short_id, a, b, NOW - i), NOW).accepted
        assert view.receive(update(short_id, b, a, NOW - 10 - i), NOW).accepted
    for n in range(1, 6):
        assert view.receive(node_announcement(n, NOW - n), NOW).accepted
    return view


def test_answer_short_channel_ids_with_and_without_flags() -> None:
    source = _source()
    s0, s1 = scid(200, 1), scid(201, 1)
    full = answer_short_channel_ids(
        source.store, query_short_channel_ids(CHAIN, [s0, scid(999)])[0], CHAIN
    )
    kinds = [type(decode_message(raw)).__name__ for raw in full]
    assert kinds == [
        "ChannelAnnouncement",
        "ChannelUpdate",
        "ChannelUpdate",
        "NodeAnnouncement",
        "NodeAnnouncement",
        "ReplyShortChannelIdsEnd",
    ]
    end = decode_message(full[-1])
    assert isinstance(end, ReplyShortChannelIdsEnd) and end.full_information == b"\x01"
    flagged = query_short_channel_ids(
        CHAIN, {s0: WANT_UPDATE_2, s1: WANT_ANNOUNCEMENT | WANT_NODE_1}
    )[0]
    answer = [decode_message(raw) for raw in answer_short_channel_ids(source.store, flagged, CHAIN)]
    assert [type(m).__name__ for m in answer] == [
        "ChannelUpdate",
        "ChannelAnnouncement",
        "NodeAnnouncement",
        "ReplyShortChannelIdsEnd",
    ]
    assert answer[0].channel_flags[0] & 1 == 1  # type: ignore[union-attr]
    other = QueryShortChannelIds(
        chain_hash=BITCOIN.chain_hash, encoded_short_ids=encode_short_ids([s0])
    )
    reply = [decode_message(raw) for raw in answer_short_channel_ids(source.store, other, CHAIN)]
    assert reply == [
        ReplyShortChannelIdsEnd(chain_hash=BITCOIN.chain_hash, full_information=b"\x00")
    ]
    bad = QueryShortChannelIds(
        chain_hash=CHAIN,
        encoded_short_ids=encode_short_ids([s0, s1]),
        tlvs={"query_flags": {"encoding_type": b"\x00", "encoded_query_flags": b"\x01"}},
    )
    with pytest.raises(DecodeError, match="one flag per short_channel_id"):
        answer_short_channel_ids(source.store, bad, CHAIN)


def test_full_sync_by_range_and_id_queries_then_catch_up() -> None:
    source = _source()
    fresh = NetworkView(CHAIN, source.funding)
    fresh_has_one = announcement(scid(200, 1), 1, 2)
    assert fresh.receive(fresh_has_one, NOW).accepted
    assert fresh.receive(update(scid(200, 1), 1, 2, NOW - 1000), NOW).accepted  # stale fee

    def sync() -> None:
        asker = ChannelRangeQuery(CHAIN, 0, 1000, WANT_TIMESTAMPS | WANT_CHECKSUMS)
        query = decode_message(encode_message(asker.message()))
        assert isinstance(query, QueryChannelRange)
        for reply in reply_channel_range(source.store, query, CHAIN, limit=2):
            asker.on_reply(decode_message(encode_message(reply)))  # type: ignore[arg-type]
        assert asker.complete
        wanted = asker.wanted(fresh.store)
        for q in query_short_channel_ids(CHAIN, wanted):
            received = decode_message(encode_message(q))
            assert isinstance(received, QueryShortChannelIds)
            for raw in answer_short_channel_ids(source.store, received, CHAIN)[:-1]:
                assert fresh.receive(raw, NOW).accepted

    sync()

    def summary(view: NetworkView) -> list[Any]:
        graph = view.channel_graph()
        return sorted(
            (c.short_channel_id, c.source, c.policy)
            for n in graph.nodes
            for c in graph.channels_into(n)
        )

    assert summary(fresh) == summary(source)
    assert {n.node_id for n in fresh.store.nodes()} == {node_id(n) for n in range(1, 6)}
    # Only the newer update is asked for on a second sync.
    assert source.receive(update(scid(202, 1), 4, 3, NOW + 1, fee_base_msat=77), NOW).accepted
    asker = ChannelRangeQuery(CHAIN, 0, 1000, WANT_TIMESTAMPS)
    for reply in reply_channel_range(source.store, asker.message(), CHAIN):
        asker.on_reply(reply)
    direction = 0 if node_id(4) < node_id(3) else 1
    assert asker.wanted(fresh.store) == {scid(202, 1): (2 if direction == 0 else 4)}
    sync()
    assert summary(fresh) == summary(source)


def test_query_split_and_flag_helpers() -> None:
    ids = list(range(1, 9000))
    queries = query_short_channel_ids(CHAIN, {i: WANT_ALL for i in ids})
    assert len(queries) == 2
    assert all(len(encode_message(q)) <= 65535 for q in queries)
    assert sum(len(decode_short_ids(q.encoded_short_ids)) for q in queries) == len(ids)


def test_spent_channels_are_not_offered_and_open_ended_ranges_complete() -> None:
    source = _source()
    source.funding_spent(scid(200, 1), 1000)
    asker = ChannelRangeQuery(CHAIN, 150, 0xFFFFFFFF)  # past the last u32 block: capped
    replies = reply_channel_range(source.store, asker.message(), CHAIN)
    assert [asker.on_reply(r) for r in replies][-1]
    assert scid(200, 1) not in asker.short_channel_ids and scid(201, 1) in asker.short_channel_ids
    query = query_short_channel_ids(CHAIN, [scid(200, 1)])[0]
    assert len(answer_short_channel_ids(source.store, query, CHAIN)) == 1  # only the end marker
