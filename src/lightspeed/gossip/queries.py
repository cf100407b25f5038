"""Gossip queries: ``query_channel_range``/``reply_channel_range`` and ``query_short_channel_ids``.

A node catching up asks a peer which channels exist in a block range
(:class:`ChannelRangeQuery` collects the replies), then asks for the messages of the
ones it lacks or holds older updates of (:func:`query_short_channel_ids`). The
answering side is :func:`reply_channel_range` and :func:`answer_short_channel_ids`.

Arrays of ids, timestamps and flags use BOLT 7's ``encoded_`` form: one encoding byte
then the items. Only encoding 0 (uncompressed, ascending) exists; encoding 1 (zlib)
"MUST NOT be used", so it is refused like any unknown encoding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightspeed.codec.bigsize import decode_bigsize, encode_bigsize
from lightspeed.codec.generated import (
    QueryChannelRange,
    QueryShortChannelIds,
    ReplyChannelRange,
    ReplyShortChannelIdsEnd,
)
from lightspeed.codec.messages import encode_message
from lightspeed.errors import DecodeError, UsageError
from lightspeed.gossip.signing import SINGLE_SIGNATURE_SIGNED_FROM
from lightspeed.gossip.store import GossipStore, UpdateRecord

ENCODING_UNCOMPRESSED = 0
ENCODING_ZLIB = 1  # deprecated: MUST NOT be used
WANT_TIMESTAMPS, WANT_CHECKSUMS = 1, 2  # query_option_flags bits 0 and 1
# query_flags bits (query_short_channel_ids)
WANT_ANNOUNCEMENT, WANT_UPDATE_1, WANT_UPDATE_2, WANT_NODE_1, WANT_NODE_2 = 1, 2, 4, 8, 16
WANT_ALL = WANT_ANNOUNCEMENT | WANT_UPDATE_1 | WANT_UPDATE_2 | WANT_NODE_1 | WANT_NODE_2

MAX_MESSAGE = 65535  # BOLT 8: the largest message a peer can send
_REPLY_FIXED = 2 + 32 + 4 + 4 + 1 + 2 + 1  # type, chain, first, count, sync_complete, len, encoding
_TLV_OVERHEAD = 1 + 3  # type and a 3-byte BigSize length, per TLV record
_QUERY_FIXED = 2 + 32 + 2 + 1
# Where a block range ends at the latest: first_blocknum + number_of_blocks must fit the u32
# both fields are (a query for "everything from 109" asks 109 + 0xFFFFFFFF blocks). A reply
# reaching 2^32 would wrap to 0 for a peer adding the two in u32 arithmetic; LDK and Core
# Lightning end such replies at 0xFFFFFFFF, and read ours the same way.
_RANGE_END = 0xFFFFFFFF


def block_of(short_channel_id: int) -> int:
    return short_channel_id >> 40


# ---------------------------------------------------------------- encoded arrays


def _check_encoding(data: bytes, field: str) -> bytes:
    if not data:
        return b""  # no encoding byte: an empty array (some implementations send this)
    if data[0] == ENCODING_ZLIB:
        raise DecodeError(field, "encoding 1 (zlib) MUST NOT be used")
    if data[0] != ENCODING_UNCOMPRESSED:
        raise DecodeError(field, f"unknown encoding type {data[0]}")
    return data[1:]


def encode_short_ids(short_channel_ids: Iterable[int]) -> bytes:
    """``encoded_short_ids``: encoding 0 and the ids in ascending order."""
    return bytes([ENCODING_UNCOMPRESSED]) + b"".join(
        s.to_bytes(8, "big") for s in sorted(short_channel_ids)
    )


def decode_short_ids(data: bytes, field: str = "encoded_short_ids") -> list[int]:
    body = _check_encoding(data, field)
    if len(body) % 8:
        raise DecodeError(field, f"{len(body)} bytes are not a whole number of short_channel_ids")
    return [int.from_bytes(body[i : i + 8], "big") for i in range(0, len(body), 8)]


def encode_query_flags(flags: Iterable[int]) -> bytes:
    """``encoded_query_flags``: encoding 0 then one minimal BigSize per id."""
    return bytes([ENCODING_UNCOMPRESSED]) + b"".join(encode_bigsize(f) for f in flags)


def decode_query_flags(data: bytes, field: str = "encoded_query_flags") -> list[int]:
    body = _check_encoding(data, field)
    flags, pos = [], 0
    while pos < len(body):
        value, pos = decode_bigsize(body, pos, field)
        flags.append(value)
    return flags


def encode_timestamps(pairs: Iterable[tuple[int, int]]) -> bytes:
    return bytes([ENCODING_UNCOMPRESSED]) + b"".join(
        a.to_bytes(4, "big") + b.to_bytes(4, "big") for a, b in pairs
    )


def decode_timestamps(data: bytes, field: str = "encoded_timestamps") -> list[tuple[int, int]]:
    body = _check_encoding(data, field)
    if len(body) % 8:
        raise DecodeError(field, f"{len(body)} bytes are not a whole number of timestamp pairs")
    return [
        (int.from_bytes(body[i : i + 4], "big"), int.from_bytes(body[i + 4 : i + 8], "big"))
        for i in range(0, len(body), 8)
    ]


# ---------------------------------------------------------------- checksums


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli, RFC 3720 appendix B.4)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def update_checksum(raw_update: bytes) -> int:
    """BOLT 7: the CRC32C of this channel_update without its signature and timestamp fields."""
    timestamp_at = SINGLE_SIGNATURE_SIGNED_FROM + 32 + 8
    return crc32c(
        raw_update[SINGLE_SIGNATURE_SIGNED_FROM:timestamp_at] + raw_update[timestamp_at + 4 :]
    )


# ---------------------------------------------------------------- answering range queries


def _option_flags(query: QueryChannelRange) -> int:
    option = query.tlvs.get("query_option")
    return int(option["query_option_flags"]) if isinstance(option, dict) else 0


def max_ids_per_reply(option_flags: int) -> int:
    """How many ids fit one ``reply_channel_range`` with the requested extras."""
    per_id, fixed = 8, _REPLY_FIXED
    if option_flags & WANT_TIMESTAMPS:
        per_id, fixed = per_id + 8, fixed + _TLV_OVERHEAD + 1
    if option_flags & WANT_CHECKSUMS:
        per_id, fixed = per_id + 8, fixed + _TLV_OVERHEAD
    return min((MAX_MESSAGE - fixed) // per_id, 0xFFFF // 8)


def _chunks(scids: Sequence[int], limit: int) -> list[list[int]]:
    """Split ascending ids into runs of at most ``limit``, cutting between blocks when possible."""
    chunks: list[list[int]] = []
    current: list[int] = []
    for scid in scids:
        if len(current) >= limit:
            # Move the ids of the last (unfinished) block to the next chunk, unless that block
            # alone fills the chunk.
            cut = len(current)
            while cut > 0 and block_of(current[cut - 1]) == block_of(scid):
                cut -= 1
            if cut == 0:
                cut = len(current)
            chunks.append(current[:cut])
            current = current[cut:]
        current.append(scid)
    chunks.append(current)
    return chunks


def _pair(store: GossipStore, scid: int, value: Any) -> tuple[int, int]:
    updates: list[UpdateRecord | None] = [store.update(scid, 0), store.update(scid, 1)]
    return (value(updates[0]) if updates[0] else 0, value(updates[1]) if updates[1] else 0)


def reply_channel_range(
    store: GossipStore, query: QueryChannelRange, chain_hash: bytes, *, limit: int | None = None
) -> list[ReplyChannelRange]:
    """The ``reply_channel_range`` messages answering ``query`` from the public channels stored.

    BOLT #7: the first reply starts at or before the query's first_blocknum and overlaps it;
    successive replies do not go backwards; the last reaches the query's end; each sets
    sync_complete (1 = the answer is complete). Timestamps and checksums are added when
    ``query_option`` asks. Blocks are kept whole within a reply unless one block alone
    overflows it. ``limit`` caps the ids per reply (default: what fits 65535 bytes).
    """
    if query.number_of_blocks == 0:
        raise DecodeError("query_channel_range.number_of_blocks", "must be 1 or greater")
    flags = _option_flags(query)
    start = query.first_blocknum
    end = max(min(start + query.number_of_blocks, _RANGE_END), start + 1)  # never an empty range
    if query.chain_hash == chain_hash:
        scids = sorted(
            r.short_channel_id
            for r in store.channels()
            if r.public and r.spent_at is None and start <= block_of(r.short_channel_id) < end
        )
    else:
        scids = []  # a chain we do not follow: one empty, complete reply
    chunks = _chunks(scids, limit or max_ids_per_reply(flags))
    replies = []
    first = start
    for i, chunk in enumerate(chunks):
        last_chunk = i == len(chunks) - 1
        stop = end if last_chunk else max(block_of(chunks[i + 1][0]), block_of(chunk[-1]) + 1)
        tlvs: dict[str | int, Any] = {}
        if flags & WANT_TIMESTAMPS:
            stamps = [_pair(store, s, lambda u: u.timestamp) for s in chunk]
            tlvs["timestamps_tlv"] = {
                "encoding_type": bytes([ENCODING_UNCOMPRESSED]),
                "encoded_timestamps": encode_timestamps(stamps)[1:],
            }
        if flags & WANT_CHECKSUMS:
            sums = [_pair(store, s, lambda u: update_checksum(u.raw)) for s in chunk]
            tlvs["checksums_tlv"] = {
                "checksums": [{"checksum_node_id_1": a, "checksum_node_id_2": b} for a, b in sums]
            }
        replies.append(
            ReplyChannelRange(
                chain_hash=query.chain_hash,
                first_blocknum=first,
                number_of_blocks=stop - first,
                sync_complete=b"\x01",
                encoded_short_ids=encode_short_ids(chunk),
                tlvs=tlvs,
            )
        )
        if not last_chunk:
            first = block_of(chunks[i + 1][0])
    return replies


# ---------------------------------------------------------------- asking for a range


@dataclass
class ChannelRangeQuery:
    """The asking side of one ``query_channel_range``: collects and checks the replies."""

    chain_hash: bytes
    first_blocknum: int
    number_of_blocks: int
    option_flags: int = 0
    short_channel_ids: list[int] = field(default_factory=list)
    timestamps: dict[int, tuple[int, int]] = field(default_factory=dict)
    checksums: dict[int, tuple[int, int]] = field(default_factory=dict)
    complete: bool = False
    _last_first: int = -1

    def __post_init__(self) -> None:
        if self.number_of_blocks < 1:
            raise UsageError("number_of_blocks must be 1 or greater")

    def message(self) -> QueryChannelRange:
        tlvs: dict[str | int, Any] = {}
        if self.option_flags:
            tlvs["query_option"] = {"query_option_flags": self.option_flags}
        return QueryChannelRange(
            chain_hash=self.chain_hash,
            first_blocknum=self.first_blocknum,
            number_of_blocks=self.number_of_blocks,
            tlvs=tlvs,
        )

    @property
    def end(self) -> int:
        """The first block after the range (capped so that it fits a u32, as replies are)."""
        return max(min(self.first_blocknum + self.number_of_blocks, _RANGE_END), self.first_blocknum + 1)

    def on_reply(self, reply: ReplyChannelRange) -> bool:
        """Take one reply; True once the whole range is answered. DecodeError for a bad reply."""
        where = "reply_channel_range"
        if self.complete:
            raise DecodeError(where, "reply after the range was complete")
        if reply.chain_hash != self.chain_hash:
            raise DecodeError(f"{where}.chain_hash", "is not the chain of the query")
        reply_end = reply.first_blocknum + reply.number_of_blocks
        if self._last_first < 0:
            # BOLT #7: the first reply MUST start at or before the query's first_blocknum and
            # end after it.
            if reply.first_blocknum > self.first_blocknum or reply_end <= self.first_blocknum:
                raise DecodeError(
                    f"{where}.first_blocknum", "the first reply does not overlap the query"
                )
        elif reply.first_blocknum < self._last_first:
            raise DecodeError(f"{where}.first_blocknum", "goes backwards")
        self._last_first = reply.first_blocknum
        scids = decode_short_ids(reply.encoded_short_ids)
        for scid in scids:
            if not reply.first_blocknum <= block_of(scid) < reply_end:
                raise DecodeError(
                    f"{where}.encoded_short_ids",
                    f"id in block {block_of(scid)} is outside the reply's range",
                )
        stamps = reply.tlvs.get("timestamps_tlv")
        if isinstance(stamps, dict):
            pairs = decode_timestamps(
                bytes(stamps["encoding_type"]) + bytes(stamps["encoded_timestamps"])
            )
            if len(pairs) != len(scids):
                raise DecodeError(f"{where}.timestamps_tlv", "needs one timestamp pair per id")
            self.timestamps.update(zip(scids, pairs, strict=True))
        sums = reply.tlvs.get("checksums_tlv")
        if isinstance(sums, dict):
            entries = sums["checksums"]
            if len(entries) != len(scids):
                raise DecodeError(f"{where}.checksums_tlv", "needs one checksum pair per id")
            self.checksums.update(
                (s, (e["checksum_node_id_1"], e["checksum_node_id_2"]))
                for s, e in zip(scids, entries, strict=True)
            )
        self.short_channel_ids.extend(scids)
        # BOLT #7: the final reply has first_blocknum plus number_of_blocks equal or greater
        # than the query's.
        if reply_end >= self.end:
            self.complete = True
        return self.complete

    def wanted(self, store: GossipStore) -> dict[int, int]:
        """Ids to ask for and the query flags for each: unknown channels, newer updates."""
        out: dict[int, int] = {}
        for scid in sorted(set(self.short_channel_ids)):
            if store.channel(scid) is None:
                out[scid] = WANT_ALL
                continue
            theirs = self.timestamps.get(scid)
            if theirs is None:
                continue
            flags = 0
            for direction, bit in ((0, WANT_UPDATE_1), (1, WANT_UPDATE_2)):
                ours = store.update(scid, direction)
                if theirs[direction] and (ours is None or theirs[direction] > ours.timestamp):
                    flags |= bit
            if flags:
                out[scid] = flags
        return out


# ---------------------------------------------------------------- query_short_channel_ids


def max_ids_per_query(with_flags: bool) -> int:
    per_id = 8 + (1 if with_flags else 0)  # flags below 0xfd take one byte
    fixed = _QUERY_FIXED + (_TLV_OVERHEAD + 1 if with_flags else 0)
    return (MAX_MESSAGE - fixed) // per_id


def query_short_channel_ids(
    chain_hash: bytes, wanted: dict[int, int] | Sequence[int]
) -> list[QueryShortChannelIds]:
    """Queries for ``wanted`` ids (a list: everything; a dict: with per-id query flags).

    Split so each fits a message; BOLT 7 allows one query in flight per peer, so the
    runtime sends the next after ``reply_short_channel_ids_end``.
    """
    ids = sorted(wanted)
    with_flags = isinstance(wanted, dict)
    limit = max_ids_per_query(with_flags)
    out = []
    for i in range(0, len(ids), limit):
        chunk = ids[i : i + limit]
        tlvs: dict[str | int, Any] = {}
        if isinstance(wanted, dict):
            flags = encode_query_flags(wanted[s] for s in chunk)
            tlvs["query_flags"] = {"encoding_type": flags[:1], "encoded_query_flags": flags[1:]}
        out.append(
            QueryShortChannelIds(
                chain_hash=chain_hash, encoded_short_ids=encode_short_ids(chunk), tlvs=tlvs
            )
        )
    return out


def answer_short_channel_ids(
    store: GossipStore, query: QueryShortChannelIds, chain_hash: bytes
) -> list[bytes]:
    """The raw messages answering ``query_short_channel_ids``, then ``reply_short_channel_ids_end``.

    BOLT #7: without query flags, each known channel's announcement and latest updates, then
    the node_announcements of its nodes; with flags, what each bit asks for. Node
    announcements are sent once per query. Unknown ids are skipped. full_information is 0
    for a chain we do not follow.
    """
    if query.chain_hash != chain_hash:
        return [
            encode_message(
                ReplyShortChannelIdsEnd(chain_hash=query.chain_hash, full_information=b"\x00")
            )
        ]
    scids = decode_short_ids(query.encoded_short_ids, "query_short_channel_ids.encoded_short_ids")
    raw_flags = query.tlvs.get("query_flags")
    if isinstance(raw_flags, dict):
        flags = decode_query_flags(
            bytes(raw_flags["encoding_type"]) + bytes(raw_flags["encoded_query_flags"]),
            "query_short_channel_ids.query_flags",
        )
        if len(flags) != len(scids):
            raise DecodeError(
                "query_short_channel_ids.query_flags", "needs exactly one flag per short_channel_id"
            )
    else:
        flags = [WANT_ALL] * len(scids)
    out: list[bytes] = []
    nodes_sent: set[bytes] = set()
    node_messages: list[bytes] = []
    for scid, flag in zip(scids, flags, strict=True):
        record = store.channel(scid)
        if record is None or record.announcement is None or record.spent_at is not None:
            continue
        if flag & WANT_ANNOUNCEMENT:
            out.append(record.announcement)
        for direction, bit in ((0, WANT_UPDATE_1), (1, WANT_UPDATE_2)):
            update = store.update(scid, direction)
            if flag & bit and update is not None and not update.dont_forward:
                out.append(update.raw)
        for node_id, bit in ((record.node_id_1, WANT_NODE_1), (record.node_id_2, WANT_NODE_2)):
            node = store.node(node_id)
            if flag & bit and node is not None and node.forwardable and node_id not in nodes_sent:
                nodes_sent.add(node_id)
                node_messages.append(node.raw)
    out.extend(node_messages)
    out.append(
        encode_message(ReplyShortChannelIdsEnd(chain_hash=chain_hash, full_information=b"\x01"))
    )
    return out
