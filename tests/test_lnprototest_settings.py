"""The values BOLT 2 leaves to each node (dust limit, reserve, delays, depth) are node settings."""

from __future__ import annotations

import asyncio

import pytest

from lightspeed.chain import RegtestChain
from lightspeed.channel.establish import STATIC_REMOTEKEY
from lightspeed.codec.generated import AcceptChannel
from lightspeed.errors import UsageError
from lightspeed.node.node import Node
from lightspeed.node.peer import DEFAULT_FEATURES
from lightspeed.node.settings import ChannelSettings
from tests.test_negotiation_node import open_channel, reply_to


def test_the_node_asks_what_its_settings_say() -> None:
    settings = ChannelSettings(dust_limit_sat=600, reserve_ppm=20_000, to_self_delay=50, minimum_depth=4,
                               max_accepted_htlcs=100, htlc_minimum_msat=5)

    async def main() -> None:
        node = Node(b"\x23" * 32, RegtestChain(":memory:"), b"settings node wallet seed", channel_settings=settings)
        port = await node.start()
        try:
            reply = await reply_to(node, port, DEFAULT_FEATURES, open_channel(STATIC_REMOTEKEY))
        finally:
            await node.stop()
        assert isinstance(reply, AcceptChannel), reply
        assert (reply.dust_limit_satoshis, reply.channel_reserve_satoshis, reply.to_self_delay,
                reply.minimum_depth, reply.max_accepted_htlcs, reply.htlc_minimum_msat) == (600, 20_000, 50, 4, 100, 5)

    asyncio.run(main())


def test_the_reserve_is_a_share_of_the_channel_and_never_below_the_dust_limit() -> None:
    one_percent = ChannelSettings()
    assert one_percent.reserve_sat(999_800) == 9_998  # what lnprototest expects of a 1% reserve
    assert one_percent.reserve_sat(10_000) == 546
    assert ChannelSettings(reserve_ppm=0).reserve_sat(1_000_000) == 546


@pytest.mark.parametrize(("field", "bad", "good"), [
    ("dust_limit_sat", 353, 354), ("reserve_ppm", 1_000_001, 1_000_000), ("max_accepted_htlcs", 484, 483),
    ("to_self_delay", 0, 1), ("minimum_depth", 0, 1)])
def test_settings_outside_what_bolt_2_allows_are_refused(field: str, bad: int, good: int) -> None:
    with pytest.raises(UsageError, match=field):
        ChannelSettings(**{field: bad})
    assert getattr(ChannelSettings(**{field: good}), field) == good
