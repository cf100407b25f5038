"""BOLT 2 HTLC limits on the sans-IO channel pair, each at its boundary, in both directions (issue 11 #1).

What we may offer (``add_htlc``, ``sendable_msat``) and what we refuse from the peer (``receive``
fails the channel) come from one rule book, channel/limits.py; these tests pin each rule at N / N+1
and check, with the real commitment builder, that what we send is what the peer accepts.
"""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from lightspeed.channel.commitment import commitment_fee_sat
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.limits import max_offer_msat, untrimmed_from_msat
from lightspeed.channel.pair import channel_pair
from lightspeed.channel.scripts import ANCHOR_OUTPUT_SAT
from lightspeed.channel.serialize import channel_from_record, channel_to_record
from lightspeed.channel.state import Channel, ChannelFailure
from lightspeed.codec.generated import UpdateAddHtlc
from lightspeed.codec.messages import decode_message, encode_message
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import UsageError

FUNDING_SAT = 1_000_000
RESERVE_SAT = 10_000  # 1%, what Lightspeed asks


def _hash() -> bytes:
    return sha256(os.urandom(32))


def _deliver(sender: Channel, receiver: Channel, amount_msat: int) -> None:
    add = sender.add_htlc(amount_msat, _hash(), 700)
    receiver.receive(decode_message(encode_message(add)))  # type: ignore[arg-type]


def _raw_add(receiver: Channel, htlc_id: int, amount_msat: int) -> UpdateAddHtlc:
    """An update_add_htlc as a peer that ignores the rules would send it."""
    return UpdateAddHtlc(channel_id=receiver.config.channel_id, id=htlc_id, amount_msat=amount_msat,
                         payment_hash=_hash(), cltv_expiry=700, onion_routing_packet=bytes(1366))


def _exchange(signer: Channel, other: Channel) -> None:
    replies, _ = other.receive(decode_message(encode_message(signer.sign())))  # type: ignore[arg-type]
    for reply in replies:
        signer.receive(reply)
    replies, _ = signer.receive(decode_message(encode_message(other.sign())))  # type: ignore[arg-type]
    for reply in replies:
        other.receive(reply)


def _funder_above_reserve_msat(funder: Channel) -> int:
    """The funder's output in each real commitment (BOLT 3 builder) minus its reserve: never negative."""
    worst = None
    for owner in Side:
        view = funder.log.commitment(owner)
        built = funder.commitment(owner)
        fee = commitment_fee_sat(view.feerate_per_kw, len(built.htlc_outputs), funder.config.anchors)
        mine = view.to_local_msat if owner is Side.LOCAL else view.to_remote_msat
        left = mine - 1000 * (fee + (2 * ANCHOR_OUTPUT_SAT if funder.config.anchors else 0))
        left -= 1000 * funder.config.reserve_for_local_sat
        worst = left if worst is None else min(worst, left)
    assert worst is not None
    return worst


# -- the example ------------------------------------------------------------------------

@pytest.mark.parametrize("anchors", [True, False])
def test_the_funder_cannot_spend_into_its_reserve(anchors: bool) -> None:
    funder, fundee = channel_pair(FUNDING_SAT, anchors=anchors, reserve_sat=RESERVE_SAT)
    with pytest.raises(UsageError, match="above our reserve"):
        funder.add_htlc(990_000_000, _hash(), 700)  # the payment: it left the funder below 1%
    n = funder.sendable_msat()
    assert 980_000_000 < n < 990_000_000
    with pytest.raises(UsageError, match="reserve"):
        funder.add_htlc(n + 1, _hash(), 700)
    _deliver(funder, fundee, n)
    _exchange(funder, fundee)
    assert _funder_above_reserve_msat(funder) >= 0
    assert funder.sendable_msat() == 0


@pytest.mark.parametrize("anchors", [True, False])
def test_the_fundee_keeps_its_reserve_and_the_receiver_refuses_one_msat_more(anchors: bool) -> None:
    funder, fundee = channel_pair(FUNDING_SAT, 600_000_000, anchors=anchors, reserve_sat=RESERVE_SAT)
    n = fundee.sendable_msat()
    assert n == 400_000_000 - RESERVE_SAT * 1000  # the fundee pays no fee
    with pytest.raises(UsageError, match="reserve"):
        fundee.add_htlc(n + 1, _hash(), 700)
    # The funder, receiving: exactly the fundee's spendable balance is accepted, one msat more fails the channel.
    other_funder, _ = channel_pair(FUNDING_SAT, 600_000_000, anchors=anchors, reserve_sat=RESERVE_SAT)
    with pytest.raises(ChannelFailure, match="above its reserve"):
        other_funder.receive(_raw_add(other_funder, 0, n + 1))
    _deliver(fundee, funder, n)
    _exchange(fundee, funder)
    assert fundee.log.commitment(Side.LOCAL).to_local_msat == RESERVE_SAT * 1000


def test_a_funder_offer_over_its_means_fails_the_channel_at_the_receiver() -> None:
    funder, fundee = channel_pair(FUNDING_SAT, anchors=True, reserve_sat=RESERVE_SAT)
    views = {owner: fundee.log.commitment(owner, pending=True) for owner in Side}
    n = max_offer_msat(fundee.config, views, Side.REMOTE)  # the receiver's MUSTs only: no fee spike buffer
    assert n >= funder.sendable_msat()  # what we offer, the peer accepts
    with pytest.raises(ChannelFailure, match="above its reserve"):
        fundee.receive(_raw_add(fundee, 0, n + 1))
    fundee.receive(_raw_add(fundee, 0, n))


# -- htlc_minimum_msat, max_accepted_htlcs, max_htlc_value_in_flight_msat --------------------------

def test_htlc_minimum_at_the_boundary_both_ways() -> None:
    funder, fundee = channel_pair(FUNDING_SAT, 600_000_000, htlc_minimum_msat=5000)
    with pytest.raises(UsageError, match="htlc_minimum_msat"):
        funder.add_htlc(4999, _hash(), 700)
    _deliver(funder, fundee, 5000)
    with pytest.raises(ChannelFailure, match="htlc_minimum_msat"):
        funder.receive(_raw_add(funder, 0, 4999))
    with pytest.raises(ChannelFailure, match="htlc_minimum_msat"):
        fresh = channel_pair(FUNDING_SAT)[1]
        fresh.receive(_raw_add(fresh, 0, 0))  # BOLT 2: 0 is never valid


@pytest.mark.parametrize("offerer_is_funder", [True, False])
def test_max_accepted_htlcs_at_the_boundary_both_ways(offerer_is_funder: bool) -> None:
    funder, fundee = channel_pair(FUNDING_SAT, 600_000_000, max_accepted_htlcs=3)
    sender, receiver = (funder, fundee) if offerer_is_funder else (fundee, funder)
    for _ in range(3):
        _deliver(sender, receiver, 1_000_000)
    with pytest.raises(UsageError, match="max_accepted_htlcs"):
        sender.add_htlc(1_000_000, _hash(), 700)
    assert sender.sendable_msat() == 0
    with pytest.raises(ChannelFailure, match="max_accepted_htlcs"):
        receiver.receive(_raw_add(receiver, 3, 1_000_000))
    _exchange(sender, receiver)  # the three are fine to sign


@pytest.mark.parametrize("offerer_is_funder", [True, False])
def test_max_htlc_value_in_flight_at_the_boundary_both_ways(offerer_is_funder: bool) -> None:
    funder, fundee = channel_pair(FUNDING_SAT, 600_000_000, max_htlc_value_in_flight_msat=50_000_000)
    sender, receiver = (funder, fundee) if offerer_is_funder else (fundee, funder)
    _deliver(sender, receiver, 30_000_000)
    assert sender.sendable_msat() == 20_000_000
    with pytest.raises(UsageError, match="max_htlc_value_in_flight_msat"):
        sender.add_htlc(20_000_001, _hash(), 700)
    with pytest.raises(ChannelFailure, match="max_htlc_value_in_flight_msat"):
        receiver.receive(_raw_add(receiver, 1, 20_000_001))
    _deliver(sender, receiver, 20_000_000)


# -- the fee the funder pays for the extra HTLC ----------------------------------------------------

def test_the_fundee_does_not_offer_what_the_funder_cannot_pay_the_fee_for() -> None:
    """BOLT 2: the non-funder SHOULD NOT offer if the funder then cannot pay the fee above its reserve."""
    funding = FUNDING_SAT
    fee0 = commitment_fee_sat(2500, 0, False)
    # The funder holds its reserve plus the base fee and 10 sat: one more untrimmed HTLC (+430 sat) is too much.
    funder_msat = 1000 * (RESERVE_SAT + fee0 + 10)
    funder, fundee = channel_pair(funding, funder_msat, anchors=False, reserve_sat=RESERVE_SAT)
    untrimmed = untrimmed_from_msat(fundee.config, Side.REMOTE, Side.LOCAL, 2500)
    assert fundee.offer_problem(untrimmed) is not None and "short of the commitment fee" in str(
        fundee.offer_problem(untrimmed))
    assert fundee.sendable_msat() == min(untrimmed_from_msat(fundee.config, o, Side.LOCAL, 2500) for o in Side) - 1
    _deliver(fundee, funder, fundee.sendable_msat())  # a trimmed HTLC adds no fee: fine
    _exchange(fundee, funder)
    assert _funder_above_reserve_msat(funder) >= 0


# -- sendable_msat is exact: what we offer at the edge, the peer accepts, and one msat more is refused --

@settings(max_examples=60, deadline=None)
@given(anchors=st.booleans(), feerate=st.integers(253, 20_000), funder_sat=st.integers(20_000, FUNDING_SAT),
       dust=st.integers(354, 5_000), reserve=st.integers(5_000, 50_000), fundee_offers=st.booleans(),
       earlier=st.lists(st.integers(1_000, 3_000_000), max_size=3))
def test_sendable_is_the_exact_edge_and_the_peer_accepts_it(anchors: bool, feerate: int, funder_sat: int, dust: int,
                                                           reserve: int, fundee_offers: bool,
                                                           earlier: list[int]) -> None:
    funder, fundee = channel_pair(FUNDING_SAT, funder_sat * 1000, anchors=anchors, feerate_per_kw=feerate,
                                  reserve_sat=reserve, dust_limit_sat=dust)
    sender, receiver = (fundee, funder) if fundee_offers else (funder, fundee)
    for amount in earlier:  # HTLCs already in flight, where affordable
        if sender.offer_problem(amount) is None:
            _deliver(sender, receiver, amount)
    n = sender.sendable_msat()
    assert sender.offer_problem(n + 1) is not None
    event("nothing sendable" if n == 0 else "the edge sent")
    if n == 0:
        return
    if sender.log.has_changes_to_sign():
        _exchange(sender, receiver)
    before = _funder_above_reserve_msat(funder)
    _deliver(sender, receiver, n)  # the peer accepts our edge case
    _exchange(sender, receiver)  # both commitments build and verify
    # The funder ends above its reserve, or (it started below: the fundee's balance was pushed) no lower.
    assert _funder_above_reserve_msat(funder) >= min(0, before)


# -- the agreed limits survive a restart; records from before them still load ----------------------

def test_limits_survive_the_store_and_old_records_load() -> None:
    funder, _ = channel_pair(FUNDING_SAT, reserve_sat=RESERVE_SAT, htlc_minimum_msat=5000,
                             max_htlc_value_in_flight_msat=77_000_000, max_accepted_htlcs=12)
    back = channel_from_record(channel_to_record(funder))
    assert back.config == funder.config
    record = json.loads(channel_to_record(funder))
    for name in ("reserve_for_local_sat", "reserve_from_remote_sat", "htlc_minimum_msat", "remote_htlc_minimum_msat",
                 "max_htlc_value_in_flight_msat", "remote_max_htlc_value_in_flight_msat"):
        del record["config"][name]
    old = channel_from_record(json.dumps(record).encode())
    assert old.config == dataclasses.replace(funder.config, reserve_for_local_sat=0, reserve_from_remote_sat=0,
                                             htlc_minimum_msat=1, remote_htlc_minimum_msat=1,
                                             max_htlc_value_in_flight_msat=2**64 - 1,
                                             remote_max_htlc_value_in_flight_msat=2**64 - 1)
