"""Sans-IO parts of onion messages in the node: per-peer token buckets, paths, what may be sent.

The limiter is tested at its boundary (``burst`` pass, the next is dropped, one more passes
after exactly one refill interval); the path finder on small graphs; and the peel of arbitrary
packets never raises anything but a Lightspeed error (which the node turns into a silent drop).
"""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import LightspeedError, UsageError
from lightspeed.node.onion_messenger import check_records
from lightspeed.node.onion_ratelimit import OnionMessageLimits, PeerRateLimiter
from lightspeed.onion.message import OnionMessage, peel_onion_message
from lightspeed.routing.graph import ChannelGraph, Policy
from lightspeed.routing.onion_path import find_onion_message_path, graph_neighbours

A, B = b"\x02" + bytes(32), b"\x03" + bytes(32)


def test_a_peer_gets_exactly_its_burst_then_one_message_per_refill() -> None:
    limiter = PeerRateLimiter(OnionMessageLimits(burst=5, per_second=2))
    assert [limiter.allow(A, 100.0) for _ in range(5)] == [True] * 5  # N pass
    assert limiter.allow(A, 100.0) is False  # N+1 is dropped
    assert limiter.dropped[A] == 1
    assert limiter.allow(A, 100.49) is False  # not yet a whole token back (2 a second)
    assert limiter.allow(A, 100.5 + 0.49) is True  # half a second after the drop refilled one
    assert limiter.allow(B, 100.5) is True  # another peer's bucket is its own
    assert limiter.dropped == {A: 2}


def test_a_bucket_never_holds_more_than_its_burst_and_time_going_back_refills_nothing() -> None:
    limiter = PeerRateLimiter(OnionMessageLimits(burst=3, per_second=10))
    limiter.allow(A, 0.0)
    results = [limiter.allow(A, 1000.0) for _ in range(4)]  # a long silence refills to 3, no more
    assert results == [True, True, True, False]
    assert limiter.allow(A, 999.0) is False  # a clock that steps back gives no tokens
    limiter.forget(A)
    assert limiter.allow(A, 999.0) is True  # a reconnected peer starts full; its drops stay counted
    assert limiter.dropped[A] == 2


def test_limits_must_be_positive() -> None:
    with pytest.raises(UsageError, match="at least 1"):
        OnionMessageLimits(burst=0)
    with pytest.raises(UsageError, match="at least 1"):
        OnionMessageLimits(per_second=0)


def _id(i: int) -> bytes:
    return pubkey_from_privkey(hashlib.sha256(b"n%d" % i).digest())


def test_the_shortest_path_over_relaying_nodes_from_a_connected_peer() -> None:
    n = [_id(i) for i in range(6)]
    graph = ChannelGraph()
    policy = Policy(1000, 1, 40)
    for scid, (x, y) in enumerate([(0, 1), (1, 2), (2, 3), (1, 4), (4, 5), (5, 3)]):
        graph.add_channel(scid + 1, n[x], n[y], 100_000, policy, None)  # one direction known: still a link
    neighbours = graph_neighbours(graph)
    everyone = set(n)
    assert find_onion_message_path(neighbours, [n[1]], n[3], everyone.__contains__) == [n[1], n[2], n[3]]
    # Node 2 does not relay: the longer way round.
    assert find_onion_message_path(neighbours, [n[1]], n[3], (everyone - {n[2]}).__contains__) == \
        [n[1], n[4], n[5], n[3]]
    # The target need not relay; with no relaying way there is no path; hop limit at its boundary.
    assert find_onion_message_path(neighbours, [n[1]], n[3], {n[1], n[2]}.__contains__) == [n[1], n[2], n[3]]
    assert find_onion_message_path(neighbours, [n[1]], n[3], set().__contains__) is None
    assert find_onion_message_path(neighbours, [n[1]], n[3], everyone.__contains__, max_hops=3) is not None
    assert find_onion_message_path(neighbours, [n[1]], n[3], everyone.__contains__, max_hops=2) is None
    assert find_onion_message_path(neighbours, [n[3]], n[3], set().__contains__) == [n[3]]  # a direct peer


def test_only_one_final_payload_field_of_type_64_or_more_may_be_sent() -> None:
    assert check_records([(64, b"x")]) == ((64, b"x"),)
    with pytest.raises(UsageError, match="64 and above"):
        check_records([(63, b"x")])
    with pytest.raises(UsageError, match="exactly one payload field"):
        check_records([(64, b"x"), (66, b"y")])
    with pytest.raises(UsageError, match="exactly one payload field"):
        check_records([])
    with pytest.raises(UsageError, match="twice"):
        check_records([(65, b"x"), (65, b"y")])


@settings(max_examples=200, deadline=None)
@given(path_key=st.binary(min_size=33, max_size=33), packet=st.binary(max_size=2000))
def test_peeling_arbitrary_bytes_raises_only_lightspeed_errors(path_key: bytes, packet: bytes) -> None:
    with contextlib.suppress(LightspeedError):
        peel_onion_message(hashlib.sha256(b"k").digest(), OnionMessage(path_key, packet))


def test_a_node_takes_its_onion_message_limits_from_its_settings() -> None:
    from lightspeed.chain import RegtestChain
    from lightspeed.crypto.hashes import sha256
    from lightspeed.node.node import Node

    node = Node(sha256(b"limited"), RegtestChain(":memory:"), sha256(b"w"),
                onion_message_limits=OnionMessageLimits(burst=2, per_second=1))
    assert [node.onion_messages.limiter.allow(A, 0.0) for _ in range(3)] == [True, True, False]


def test_drop_counts_are_kept_for_a_bounded_number_of_peers() -> None:
    from lightspeed.node.onion_ratelimit import MAX_COUNTED_PEERS

    limiter = PeerRateLimiter(OnionMessageLimits(burst=1, per_second=1))
    peers = [i.to_bytes(33, "big") for i in range(MAX_COUNTED_PEERS + 1)]
    for peer in peers:
        limiter.allow(peer, 0.0)
        limiter.allow(peer, 0.0)  # dropped: counted
    assert len(limiter.dropped) == MAX_COUNTED_PEERS  # N counted, the N+1th pushed the first out
    assert peers[0] not in limiter.dropped and limiter.dropped[peers[-1]] == 1
