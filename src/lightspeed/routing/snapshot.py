"""A compact cached form of a channel graph: struct-packed arrays, written once, reloaded fast.

Loading LND ``describegraph`` JSON at mainnet size spends most of its time turning
strings into numbers and checking every field; a graph already checked can be
kept as fixed-size records instead and read back with one ``struct.iter_unpack``.
The file is::

    header   magic "LSGRAPH" + format byte, the SHA-256 of the source it was built
             from, node count, direction count, channel count    (struct ``_HEADER``)
    nodes    every node id, 33 bytes each, in sorted order
    records  one per direction, grouped by the node they lead to, in the graph's order
    trailer  SHA-256 of everything before it

The directions are written in the graph's own order (``ChannelGraph.incoming``), so the
reloaded graph compiles to the same search index and finds exactly the same routes,
ties included. The recorded source digest makes a snapshot of an older source
:class:`StaleSnapshot`; a damaged file fails its checksum and raises :class:`DecodeError`
naming it. Callers then rebuild from the source (``lightspeed route --graph-cache``:
:mod:`lightspeed.cli.graph_cache`): a cache can cost a rebuild, never a wrong route. No I/O here:
the file is the caller's.
"""

from __future__ import annotations

import hashlib
import struct

from lightspeed.errors import DecodeError, UsageError
from lightspeed.routing.graph import (
    ChannelGraph,
    DirectedChannel,
    Policy,
    SearchIndex,
    collector_paused,
)

MAGIC = b"LSGRAPH\x01"
_HEADER = struct.Struct("<8s32sIII")
# scid, source index, target index, capacity_sat (-1: unknown), fee_base_msat,
# fee_proportional_millionths, cltv_expiry_delta, htlc_minimum_msat, htlc_maximum_msat (-1: none),
# disabled
_RECORD = struct.Struct("<QIIqQQIQqB")
_NODE_SIZE = 33
_DIGEST_SIZE = 32


class StaleSnapshot(DecodeError):
    """The snapshot was built from another version of the source: rebuild it."""


def encode_snapshot(graph: ChannelGraph, source_digest: bytes) -> bytes:
    """The snapshot bytes of ``graph``; UsageError if a number does not fit its field."""
    if len(source_digest) != _DIGEST_SIZE:
        raise UsageError("a snapshot's source digest is 32 bytes")
    ids = sorted(graph.nodes)
    position = {node: i for i, node in enumerate(ids)}
    pack = _RECORD.pack
    records = []
    try:
        for channels in graph.incoming.values():
            for ch in channels:
                p = ch.policy
                records.append(pack(
                    ch.short_channel_id, position[ch.source], position[ch.target],
                    -1 if ch.capacity_sat is None else ch.capacity_sat, p.fee_base_msat,
                    p.fee_proportional_millionths, p.cltv_expiry_delta, p.htlc_minimum_msat,
                    -1 if p.htlc_maximum_msat is None else p.htlc_maximum_msat, p.disabled))
        header = _HEADER.pack(MAGIC, source_digest, len(ids), len(records), graph.channel_count)
    except struct.error as exc:
        raise UsageError(f"the graph has a number a snapshot cannot hold: {exc}") from None
    body = b"".join([header, *ids, *records])
    return body + hashlib.sha256(body).digest()


def decode_snapshot(data: bytes, source_digest: bytes | None = None) -> ChannelGraph:
    """The graph in snapshot ``data``; DecodeError if damaged, StaleSnapshot if built from another source."""
    with collector_paused():
        return _decode(data, source_digest)


def _decode(data: bytes, source_digest: bytes | None) -> ChannelGraph:
    if len(data) < _HEADER.size + _DIGEST_SIZE:
        raise DecodeError("graph snapshot", f"{len(data)} bytes is too short for a snapshot")
    body, checksum = memoryview(data)[:-_DIGEST_SIZE], data[-_DIGEST_SIZE:]
    if hashlib.sha256(body).digest() != checksum:
        raise DecodeError("graph snapshot", "checksum mismatch: the file is damaged")
    magic, digest, node_count, direction_count, channel_count = _HEADER.unpack_from(body)
    if magic != MAGIC:
        raise DecodeError("graph snapshot", f"unknown format {magic[:8]!r}")
    if source_digest is not None and digest != source_digest:
        raise StaleSnapshot("graph snapshot", "built from another version of the graph")
    nodes_end = _HEADER.size + node_count * _NODE_SIZE
    if len(body) != nodes_end + direction_count * _RECORD.size:
        raise DecodeError("graph snapshot", "its length does not match its node and direction counts")
    ids = [bytes(body[i:i + _NODE_SIZE]) for i in range(_HEADER.size, nodes_end, _NODE_SIZE)]
    graph = ChannelGraph(nodes=set(ids), channel_count=channel_count)
    # The search index is compiled as it is read: ChannelGraph.compiled() numbers the nodes in
    # sorted order (the table's) and adds the directions in the graph's order (the records').
    count = len(ids)
    index = SearchIndex(ids, {node: i for i, node in enumerate(ids)}, [[] for _ in range(count)], [],
                        0, [[] for _ in range(count)], [0] * count)
    add_at = index.add_at
    incoming = graph.incoming
    target_id = b""
    into: list[DirectedChannel] = []
    # Fees and minimums take few distinct values (1000 msat, 1 ppm, ...): one int object for
    # each value instead of one per direction saves ~6% of the graph's memory (measured at 1x).
    shared: dict[int, int] = {}
    same = shared.setdefault
    try:
        for (scid, source, target, capacity, base, rate, delta, minimum, maximum,
             disabled) in _RECORD.iter_unpack(body[nodes_end:]):
            policy = Policy(same(base, base), same(rate, rate), delta, same(minimum, minimum),
                            None if maximum < 0 else maximum, disabled != 0)
            if ids[target] is not target_id:
                target_id = ids[target]
                into = incoming.setdefault(target_id, [])
            channel = DirectedChannel(scid, ids[source], target_id, None if capacity < 0 else capacity, policy)
            into.append(channel)
            if not disabled and source != target:
                add_at(source, target, channel)
    except IndexError:
        raise DecodeError("graph snapshot", "a record names a node past the node table") from None
    graph._compiled = index
    return graph
