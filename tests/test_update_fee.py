"""update_fee: the funder can only raise the fee as far as its balance pays for it (BOLT 2), both ends checked."""

from __future__ import annotations

import pytest

from lightspeed.channel.htlc_log import Side
from lightspeed.channel.pair import channel_pair
from lightspeed.codec.generated import UpdateFee
from lightspeed.errors import PeerProtocolError, UsageError
from tests.test_channel_state import exchange_commitments

FUNDER_MSAT = 50_000_000
# Anchors: the funder pays 1124 weight * feerate / 1000 (rounded down) + two 330 sat anchors.
# 43,897 * 1124 // 1000 = 49,340 and 49,340 + 660 = 50,000 sat: exactly the funder's balance.
MAX_AFFORDABLE = 43_897


def test_the_funder_may_spend_its_whole_balance_on_the_fee_and_not_a_sat_more() -> None:
    alice, bob = channel_pair(1_000_000, FUNDER_MSAT)
    with pytest.raises(UsageError, match="below the reserve"):
        alice.update_fee(MAX_AFFORDABLE + 1)
    bob.receive(alice.update_fee(MAX_AFFORDABLE))
    exchange_commitments(alice, bob)  # real signatures on commitments whose fee leaves the funder 0 sat
    assert bob.log.commitment(Side.LOCAL).feerate_per_kw == MAX_AFFORDABLE
    assert alice.commitment(Side.LOCAL).tx == bob.commitment(Side.REMOTE).tx


def test_an_unaffordable_update_fee_from_the_funder_fails_the_channel() -> None:
    _, bob = channel_pair(1_000_000, FUNDER_MSAT)
    bob.receive(UpdateFee(channel_id=bob.config.channel_id, feerate_per_kw=MAX_AFFORDABLE))
    with pytest.raises(PeerProtocolError, match="cannot afford"):
        bob.receive(UpdateFee(channel_id=bob.config.channel_id, feerate_per_kw=MAX_AFFORDABLE + 1))


def test_the_reserve_the_peer_asked_for_is_kept() -> None:
    import dataclasses

    alice, _ = channel_pair(1_000_000, FUNDER_MSAT)
    alice.config = dataclasses.replace(alice.config, reserve_for_local_sat=10_000)
    # 40,000 sat may go to fees now: 35,000 * 1124 // 1000 + 660 = 40,000.
    alice.update_fee(35_000)
    with pytest.raises(UsageError, match="reserve of 10000 sat"):
        alice.update_fee(35_001)


def test_feerates_out_of_bounds_are_refused_before_anything_is_sent() -> None:
    alice, _ = channel_pair(1_000_000)
    for bad in (252, 100_001):
        with pytest.raises(UsageError, match="feerate_per_kw"):
            alice.update_fee(bad)
    assert not alice.log.has_changes_to_sign()
