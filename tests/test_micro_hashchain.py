"""Hash chains: the walker hands out exactly the PayWord links, in O(log N) memory."""

from __future__ import annotations

import hashlib
import math
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.errors import UsageError
from lightspeed.micro.hashchain import ChainWalker, anchor, hash_times, lane_tip, links_to


def naive_links(tip: bytes, length: int) -> list[bytes]:
    """h[0..length] by brute force: h[length] = tip, h[i] = SHA256(h[i+1])."""
    links = [tip]
    for _ in range(length):
        links.append(hashlib.sha256(links[-1]).digest())
    return links[::-1]


@given(length=st.integers(1, 300), data=st.data())
@settings(max_examples=60, deadline=None)
def test_walker_hands_out_the_chain_links_with_skips(length: int, data: st.DataObject) -> None:
    tip = os.urandom(32)
    expected = naive_links(tip, length)
    walker = ChainWalker.from_tip(tip, length)
    index = 0
    while index < length:
        index = data.draw(st.integers(index + 1, min(length, index + 5)), label="next index")
        assert walker.link(index) == expected[index]
        assert len(walker.pebbles) <= math.ceil(math.log2(length)) + 2
    assert anchor(tip, length) == expected[0]


def test_walker_memory_and_work_are_logarithmic_for_a_million_links() -> None:
    length = 1 << 17
    walker = ChainWalker.from_tip(os.urandom(32), length)
    most = 0
    for index in range(1, length + 1):
        walker.link(index)
        most = max(most, len(walker.pebbles))
    assert most <= 18  # log2(length) + 1
    assert walker.hashes <= length * 18 / 2 + length  # about log2(N)/2 hashes per link


def test_walker_resumes_from_its_json_state() -> None:
    tip = os.urandom(32)
    expected = naive_links(tip, 100)
    walker = ChainWalker.from_tip(tip, 100)
    for index in range(1, 41):
        walker.link(index)
    resumed = ChainWalker.from_json(walker.to_json())
    assert [resumed.link(i) for i in range(41, 101)] == expected[41:]


def test_walker_refuses_going_back_or_past_the_end() -> None:
    walker = ChainWalker.from_tip(os.urandom(32), 10)
    walker.link(5)
    with pytest.raises(UsageError, match="already handed out"):
        walker.link(5)
    with pytest.raises(UsageError, match="outside"):
        walker.link(11)
    walker.skip_to(9)
    with pytest.raises(UsageError, match="already"):
        walker.link(8)


def test_links_to_checks_with_the_given_number_of_hashes() -> None:
    tip = os.urandom(32)
    chain = naive_links(tip, 10)
    assert links_to(chain[7], 4, chain[3])
    assert not links_to(chain[7], 3, chain[3])
    assert hash_times(chain[5], 0) == chain[5]


def test_lanes_of_one_seed_differ_and_seed_must_be_long() -> None:
    seed = os.urandom(32)
    assert lane_tip(seed, 0) != lane_tip(seed, 1)
    with pytest.raises(UsageError, match="seed"):
        lane_tip(b"short", 0)
