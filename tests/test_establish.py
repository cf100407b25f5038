"""open_channel / accept_channel checks: a valid exchange passes, each MUST-fail rule fails alone."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from lightspeed.bitcoin.network import REGTEST
from lightspeed.channel.establish import (
    ANCHORS,
    STATIC_REMOTEKEY,
    ChannelPolicy,
    ChannelType,
    check_accept_channel,
    check_open_channel,
)
from lightspeed.codec.features import Features
from lightspeed.codec.generated import AcceptChannel, OpenChannel
from lightspeed.codec.messages import decode_message, encode_message, make_message
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import PeerProtocolError

POLICY = ChannelPolicy(chain_hash=REGTEST.chain_hash)
POINTS = {name: pubkey_from_privkey(bytes([i + 1]) * 32) for i, name in enumerate(
    ("funding_pubkey", "revocation_basepoint", "payment_basepoint", "delayed_payment_basepoint",
     "htlc_basepoint", "first_per_commitment_point"))}


def open_channel(channel_type: ChannelType = ANCHORS, **overrides: Any) -> OpenChannel:
    fields: dict[str, Any] = dict(
        chain_hash=REGTEST.chain_hash, temporary_channel_id=b"\x07" * 32, funding_satoshis=1_000_000,
        push_msat=100_000_000, dust_limit_satoshis=546, max_htlc_value_in_flight_msat=10**9,
        channel_reserve_satoshis=10_000, htlc_minimum_msat=1000, feerate_per_kw=2500, to_self_delay=144,
        max_accepted_htlcs=30, channel_flags=b"\x01", **POINTS)
    fields.update(overrides)
    message = make_message("open_channel", tlvs={"upfront_shutdown_script": {"shutdown_scriptpubkey": b""},
                                                 "channel_type": {"type": channel_type.to_bytes()}}, **fields)
    if "revocation_basepoint" in overrides:
        # The wire decoder already refuses invalid points (see test below); test the check itself.
        assert isinstance(message, OpenChannel)
        return message
    decoded = decode_message(encode_message(message))  # exercise the wire format too
    assert isinstance(decoded, OpenChannel)
    return decoded


def accept_channel(channel_type: ChannelType = ANCHORS, **overrides: Any) -> AcceptChannel:
    fields: dict[str, Any] = dict(
        temporary_channel_id=b"\x07" * 32, dust_limit_satoshis=546, max_htlc_value_in_flight_msat=10**9,
        channel_reserve_satoshis=10_000, htlc_minimum_msat=1000, minimum_depth=3, to_self_delay=144,
        max_accepted_htlcs=30, **POINTS)
    fields.update(overrides)
    message = make_message("accept_channel", tlvs={"channel_type": {"type": channel_type.to_bytes()}}, **fields)
    assert isinstance(message, AcceptChannel)
    return message


def test_a_valid_exchange_passes() -> None:
    sent = open_channel()
    assert check_open_channel(sent, POLICY, Features()) == ANCHORS
    assert check_accept_channel(accept_channel(), sent, POLICY) == ANCHORS
    assert check_open_channel(open_channel(STATIC_REMOTEKEY), POLICY, Features()) == STATIC_REMOTEKEY


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"chain_hash": b"\x01" * 32}, "another chain"),
    ({"push_msat": 1_000_000_001}, "push_msat"),
    ({"funding_satoshis": 1 << 24, "push_msat": 0}, "option_support_large_channel"),
    ({"funding_satoshis": 10_000, "push_msat": 0, "channel_reserve_satoshis": 546}, "below our minimum"),
    ({"feerate_per_kw": 100}, "feerate_per_kw"),
    ({"to_self_delay": 5000}, "to_self_delay"),
    ({"max_accepted_htlcs": 484}, "greater than 483"),
    ({"dust_limit_satoshis": 353, "channel_reserve_satoshis": 353}, "below 354"),
    ({"dust_limit_satoshis": 20_000}, "greater than channel_reserve_satoshis"),
    ({"revocation_basepoint": b"\x02" + b"\xff" * 32}, "revocation_basepoint"),
    ({"feerate_per_kw": 100_000, "push_msat": 999_000_000}, "cannot pay the initial commitment fee"),
    ({"push_msat": 0, "funding_satoshis": 30_000, "channel_reserve_satoshis": 30_000}, "at or below channel_reserve"),
])
def test_each_open_channel_rule(overrides: dict[str, Any], reason: str) -> None:
    with pytest.raises(PeerProtocolError, match=reason) as excinfo:
        check_open_channel(open_channel(**overrides), POLICY, Features())
    assert excinfo.value.channel_id == b"\x07" * 32


def test_channel_type_rules() -> None:
    missing = dataclasses.replace(open_channel(), tlvs={})
    with pytest.raises(PeerProtocolError, match="no channel_type"):
        check_open_channel(missing, POLICY, Features())
    with pytest.raises(PeerProtocolError, match="not one we support"):
        check_open_channel(open_channel(ChannelType(frozenset({22}))), POLICY, Features())
    with pytest.raises(PeerProtocolError, match="zero-conf"):
        check_open_channel(open_channel(ChannelType(ANCHORS.bits | {46, 50})), POLICY, Features())
    with pytest.raises(PeerProtocolError, match="differs"):
        check_accept_channel(accept_channel(STATIC_REMOTEKEY), open_channel(), POLICY)


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"temporary_channel_id": b"\x08" * 32}, "another temporary_channel_id"),
    ({"minimum_depth": 1000}, "unreasonably large"),
    ({"channel_reserve_satoshis": 500}, "below our dust_limit"),
    ({"dust_limit_satoshis": 20_000}, "above the reserve"),
    ({"max_accepted_htlcs": 500}, "greater than 483"),
])
def test_each_accept_channel_rule(overrides: dict[str, Any], reason: str) -> None:
    with pytest.raises(PeerProtocolError, match=reason):
        check_accept_channel(accept_channel(**overrides), open_channel(), POLICY)


def test_the_wire_decoder_already_refuses_invalid_basepoints() -> None:
    from lightspeed.errors import DecodeError

    bad = open_channel(revocation_basepoint=b"\x02" + b"\xff" * 32)
    with pytest.raises(DecodeError, match="revocation_basepoint"):
        decode_message(encode_message(bad))
