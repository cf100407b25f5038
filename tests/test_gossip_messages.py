"""BOLT 7 messages: create and sign, then verify; every rejection rule; addresses; fuzzing."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.bitcoin.network import BITCOIN
from lightspeed.codec.generated import ChannelAnnouncement, ChannelUpdate
from lightspeed.codec.messages import decode_message, encode_message
from lightspeed.crypto.secp256k1 import CURVE_ORDER, pubkey_from_privkey
from lightspeed.errors import DecodeError, SignatureError, UsageError
from lightspeed.gossip import (
    DNS,
    IPV4,
    IPV6,
    TORV3,
    Address,
    GossipIgnored,
    announcement_signatures,
    combine_announcement_signatures,
    create_channel_update,
    create_node_announcement,
    decode_addresses,
    encode_addresses,
    sign_channel_announcement,
    unsigned_channel_announcement,
    verify_channel_announcement,
    verify_channel_update,
    verify_node_announcement,
)
from lightspeed.gossip.addresses import TORV2, onion_v3_host
from lightspeed.gossip.signing import CHANNEL_ANNOUNCEMENT_SIGNED_FROM, sign, signed_hash
from tests.gossip_network import (
    CHAIN,
    Utxos,
    announcement,
    funding_key,
    node_announcement,
    node_id,
    node_key,
    scid,
    update,
)

SCID = scid(700_000, 12, 1)


def funded(a: int = 1, b: int = 2) -> Utxos:
    utxos = Utxos()
    utxos.fund(SCID, a, b, 2_000_000)
    return utxos


def unsigned(a: int = 1, b: int = 2) -> ChannelAnnouncement:
    return unsigned_channel_announcement(
        chain_hash=CHAIN,
        short_channel_id=SCID,
        node_id_a=node_id(a),
        node_id_b=node_id(b),
        bitcoin_key_a=pubkey_from_privkey(funding_key(a)),
        bitcoin_key_b=pubkey_from_privkey(funding_key(b)),
    )


# ---------------------------------------------------------------- channel_announcement


@pytest.mark.parametrize(("a", "b"), [(1, 2), (2, 1), (7, 3)])
def test_channel_announcement_round_trip_orders_nodes(a: int, b: int) -> None:
    verified = verify_channel_announcement(announcement(SCID, a, b), CHAIN, funded(a, b))
    message = verified.message
    assert message.node_id_1 < message.node_id_2
    assert {message.node_id_1, message.node_id_2} == {node_id(a), node_id(b)}
    # Each bitcoin key stays with its node.
    first = a if node_id(a) < node_id(b) else b
    assert message.bitcoin_key_1 == pubkey_from_privkey(funding_key(first))
    assert verified.short_channel_id == SCID
    assert verified.capacity_sat == 2_000_000


def test_announcement_signatures_exchange_in_either_order() -> None:
    ann = unsigned(2, 1)
    from_1 = announcement_signatures(b"\x11" * 32, ann, node_key(1), funding_key(1))
    from_2 = announcement_signatures(b"\x11" * 32, ann, node_key(2), funding_key(2))
    one = combine_announcement_signatures(ann, from_1, from_2)
    two = combine_announcement_signatures(ann, from_2, from_1)
    assert one == two
    verify_channel_announcement(encode_message(one), CHAIN, funded())
    assert (from_1.node_signature, from_1.bitcoin_signature) == sign_channel_announcement(
        ann, node_key(1), funding_key(1)
    )


def test_combine_rejects_foreign_or_duplicate_signatures() -> None:
    ann = unsigned()
    good = announcement_signatures(bytes(32), ann, node_key(1), funding_key(1))
    other = announcement_signatures(bytes(32), unsigned(1, 3), node_key(3), funding_key(3))
    with pytest.raises(SignatureError, match="neither node"):
        combine_announcement_signatures(
            ann, good, dataclasses.replace(other, short_channel_id=ann.short_channel_id)
        )
    with pytest.raises(SignatureError, match="same node"):
        combine_announcement_signatures(ann, good, good)
    wrong_bitcoin = dataclasses.replace(
        announcement_signatures(bytes(32), ann, node_key(2), funding_key(2)),
        bitcoin_signature=good.bitcoin_signature,
    )
    with pytest.raises(SignatureError, match="bitcoin_signature_2"):
        combine_announcement_signatures(ann, good, wrong_bitcoin)
    with pytest.raises(UsageError, match="neither node 1's nor node 2's"):
        sign_channel_announcement(ann, node_key(3), funding_key(3))


@pytest.mark.parametrize(
    "field", ["node_signature_1", "node_signature_2", "bitcoin_signature_1", "bitcoin_signature_2"]
)
def test_each_bad_announcement_signature_is_named(field: str) -> None:
    message = decode_message(announcement(SCID, 1, 2))
    assert isinstance(message, ChannelAnnouncement)
    other = sign(node_key(9), b"\x42" * 32)
    raw = encode_message(dataclasses.replace(message, **{field: other}))
    with pytest.raises(SignatureError, match=field):
        verify_channel_announcement(raw, CHAIN, funded())


def test_announcement_for_another_chain_is_ignored() -> None:
    with pytest.raises(GossipIgnored, match="unknown chain"):
        verify_channel_announcement(
            announcement(SCID, 1, 2, chain=BITCOIN.chain_hash), CHAIN, funded()
        )


def test_unordered_node_ids_are_invalid_even_when_signed() -> None:
    ann = unsigned()
    swapped = dataclasses.replace(
        ann,
        node_id_1=ann.node_id_2,
        node_id_2=ann.node_id_1,
        bitcoin_key_1=ann.bitcoin_key_2,
        bitcoin_key_2=ann.bitcoin_key_1,
    )
    h = signed_hash(encode_message(swapped), CHANNEL_ANNOUNCEMENT_SIGNED_FROM)
    first, second = (2, 1) if node_id(1) < node_id(2) else (1, 2)  # who is now in slot 1 / 2
    signed = dataclasses.replace(
        swapped,
        node_signature_1=sign(node_key(first), h),
        node_signature_2=sign(node_key(second), h),
        bitcoin_signature_1=sign(funding_key(first), h),
        bitcoin_signature_2=sign(funding_key(second), h),
    )
    with pytest.raises(DecodeError, match="node_id_1: is not less than node_id_2"):
        verify_channel_announcement(encode_message(signed), CHAIN, funded())


def test_funding_output_must_exist_unspent_and_be_the_2_of_2() -> None:
    raw = announcement(SCID, 1, 2)
    with pytest.raises(GossipIgnored, match="no unspent funding output"):
        verify_channel_announcement(raw, CHAIN, Utxos())
    wrong_keys = Utxos()
    wrong_keys.fund(SCID, 1, 3)  # a 2-of-2, but with node 3's funding key
    with pytest.raises(GossipIgnored, match="not the P2WSH 2-of-2"):
        verify_channel_announcement(raw, CHAIN, wrong_keys)
    assert verify_channel_announcement(raw, CHAIN, None).capacity_sat is None


def test_signature_covers_fields_appended_by_future_versions() -> None:
    ann = unsigned()
    raw_unsigned = encode_message(ann) + b"future field"
    h = signed_hash(raw_unsigned, CHANNEL_ANNOUNCEMENT_SIGNED_FROM)
    sigs = [sign(k, h) for k in (node_key(1), node_key(2), funding_key(1), funding_key(2))]
    if ann.node_id_1 != node_id(1):
        sigs = [sigs[1], sigs[0], sigs[3], sigs[2]]
    raw = raw_unsigned[:2] + b"".join(sigs) + raw_unsigned[2 + 256 :]
    verify_channel_announcement(raw, CHAIN, funded())
    with pytest.raises(SignatureError):
        verify_channel_announcement(raw[:-1] + b"?", CHAIN, funded())


# ---------------------------------------------------------------- channel_update


def test_channel_update_round_trip_and_flags() -> None:
    raw = encode_message(
        create_channel_update(
            node_key(2),
            chain_hash=CHAIN,
            short_channel_id=SCID,
            timestamp=1_700_000_000,
            direction=1,
            cltv_expiry_delta=144,
            htlc_minimum_msat=0,
            htlc_maximum_msat=10**9,
            fee_base_msat=0,
            fee_proportional_millionths=1,
            disabled=True,
            dont_forward=True,
        )
    )
    message = verify_channel_update(
        raw, CHAIN, node_id(1), node_id(2)
    )  # direction 1: node_id_2 signs
    assert message.message_flags == b"\x03"  # must_be_one | dont_forward
    assert message.channel_flags == b"\x03"  # direction 1 | disable
    assert (message.timestamp, message.cltv_expiry_delta, message.htlc_maximum_msat) == (
        1_700_000_000,
        144,
        10**9,
    )


def test_channel_update_checked_against_the_direction_bit() -> None:
    raw = update(SCID, 1, 2, 100)  # node 1's direction
    low, high = sorted((node_id(1), node_id(2)))
    verify_channel_update(raw, CHAIN, low, high)
    message = decode_message(raw)
    assert isinstance(message, ChannelUpdate)
    flipped = encode_message(
        dataclasses.replace(message, channel_flags=bytes([message.channel_flags[0] ^ 1]))
    )
    with pytest.raises(SignatureError, match=r"channel_update\.signature"):
        verify_channel_update(flipped, CHAIN, low, high)
    with pytest.raises(GossipIgnored):
        verify_channel_update(update(SCID, 1, 2, 100, chain=BITCOIN.chain_hash), CHAIN, low, high)


def test_high_s_signature_from_a_relaying_node_still_verifies() -> None:
    raw = update(SCID, 1, 2, 100)
    s = int.from_bytes(raw[2 + 32 : 2 + 64], "big")
    malleated = raw[:34] + (CURVE_ORDER - s).to_bytes(32, "big") + raw[66:]
    low, high = sorted((node_id(1), node_id(2)))
    verify_channel_update(malleated, CHAIN, low, high)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"htlc_minimum_msat": 10, "htlc_maximum_msat": 9}, "htlc_minimum_msat"),
        ({"timestamp": 0}, "timestamp"),
        ({"direction": 2}, "direction"),
        ({"cltv_expiry_delta": 1 << 16}, "cltv_expiry_delta"),
        ({"fee_base_msat": -1}, "fee_base_msat"),
    ],
)
def test_channel_update_creation_refuses_bad_values(change: dict[str, int], match: str) -> None:
    terms = {
        "chain_hash": CHAIN,
        "short_channel_id": SCID,
        "timestamp": 5,
        "direction": 0,
        "cltv_expiry_delta": 40,
        "htlc_minimum_msat": 0,
        "htlc_maximum_msat": 1000,
        "fee_base_msat": 0,
        "fee_proportional_millionths": 0,
        **change,
    }
    with pytest.raises(UsageError, match=match):
        create_channel_update(node_key(1), **terms)


@settings(max_examples=30, deadline=None)
@given(
    timestamp=st.integers(1, 2**32 - 1),
    delta=st.integers(0, 0xFFFF),
    low=st.integers(0, 2**63),
    extra=st.integers(0, 2**63),
    base=st.integers(0, 2**32 - 1),
    rate=st.integers(0, 2**32 - 1),
    direction=st.integers(0, 1),
    disabled=st.booleans(),
)
def test_channel_update_sign_verify_property(
    timestamp: int,
    delta: int,
    low: int,
    extra: int,
    base: int,
    rate: int,
    direction: int,
    disabled: bool,
) -> None:
    ids = sorted((node_id(1), node_id(2)))
    signer = (
        node_key(1) if node_id(1) == ids[direction] else node_key(2)
    )  # direction d: ids[d] signs
    raw = encode_message(
        create_channel_update(
            signer,
            chain_hash=CHAIN,
            short_channel_id=SCID,
            timestamp=timestamp,
            direction=direction,
            cltv_expiry_delta=delta,
            htlc_minimum_msat=low,
            htlc_maximum_msat=low + extra,
            fee_base_msat=base,
            fee_proportional_millionths=rate,
            disabled=disabled,
        )
    )
    message = verify_channel_update(raw, CHAIN, ids[0], ids[1])
    assert (message.timestamp, message.cltv_expiry_delta, message.htlc_minimum_msat) == (
        timestamp,
        delta,
        low,
    )
    assert (
        message.htlc_maximum_msat,
        message.fee_base_msat,
        message.fee_proportional_millionths,
    ) == (low + extra, base, rate)
    assert message.channel_flags[0] == direction | (2 if disabled else 0)


# ---------------------------------------------------------------- node_announcement

ONION_KEY = bytes(range(32))


def test_node_announcement_round_trip_with_every_address_type() -> None:
    addresses = [
        Address(DNS, "node.example.com", 9735),
        Address(IPV4, "203.0.113.7", 9735),
        Address(TORV3, onion_v3_host(ONION_KEY), 9736),
        Address(IPV6, "2001:db8::1", 19735),
    ]
    raw = node_announcement(
        5,
        1_700_000_000,
        alias="ünïcode ⚡",
        rgb_color=b"\x01\x02\x03",
        addresses=addresses,
        features=b"\x02\x00",
    )
    message, decoded = verify_node_announcement(raw)
    assert message.node_id == node_id(5)
    assert message.alias == "ünïcode ⚡".encode().ljust(32, b"\0")
    assert (message.rgb_color, message.features, message.timestamp) == (
        b"\x01\x02\x03",
        b"\x02\x00",
        1_700_000_000,
    )
    assert list(decoded.addresses) == sorted(addresses, key=lambda a: a.kind)  # ascending types
    assert decoded.forwardable and decoded.ignored == 0
    assert str(decoded.addresses[1]) == "[2001:db8::1]:19735"


def test_node_announcement_bad_signature_and_bad_fields() -> None:
    raw = node_announcement(5, 10)
    with pytest.raises(SignatureError, match=r"node_announcement\.signature"):
        verify_node_announcement(raw[:106] + bytes([raw[106] ^ 1]) + raw[107:])  # a colour byte
    with pytest.raises(UsageError, match="at most 32"):
        create_node_announcement(node_key(5), timestamp=1, alias="x" * 33)
    with pytest.raises(UsageError, match="rgb_color"):
        create_node_announcement(node_key(5), timestamp=1, rgb_color=b"\0")
    with pytest.raises(DecodeError, match="message type"):
        verify_node_announcement(update(SCID, 1, 2, 5))


def test_real_tor_v3_address_checksum() -> None:
    # The Tor Project's own onion service (torproject.org), published by Tor.
    host = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion"
    data = encode_addresses([Address(TORV3, host, 443)])
    assert decode_addresses(data).addresses == (Address(TORV3, host, 443),)
    with pytest.raises(UsageError, match="Tor v3"):
        encode_addresses([Address(TORV3, "3" + host[1:], 443)])


def test_address_encoding_rules() -> None:
    with pytest.raises(UsageError, match="port 0"):
        encode_addresses([Address(IPV4, "1.2.3.4", 0)])
    with pytest.raises(UsageError, match="one DNS hostname"):
        encode_addresses([Address(DNS, "a.example", 1), Address(DNS, "b.example", 1)])
    with pytest.raises(UsageError, match="ASCII"):
        encode_addresses([Address(DNS, "bücher.example", 1)])
    with pytest.raises(UsageError, match="bad IP address"):
        encode_addresses([Address(IPV4, "1.2.3", 1)])


def test_address_reader_rules() -> None:
    ipv4 = bytes([IPV4, 1, 2, 3, 4]) + (9735).to_bytes(2, "big")
    port0 = bytes([IPV4, 5, 6, 7, 8, 0, 0])
    torv2 = bytes([TORV2]) + bytes(12)
    dns = lambda name: bytes([DNS, len(name)]) + name + b"\x00\x01"  # noqa: E731
    # Tor v2 and port 0 are skipped; an unknown type ends the list (its length is unknown).
    decoded = decode_addresses(port0 + ipv4 + torv2 + dns(b"a.example") + bytes([9, 1, 2, 3]))
    assert decoded.addresses == (Address(IPV4, "1.2.3.4", 9735), Address(DNS, "a.example", 1))
    assert decoded.ignored == 3 and decoded.forwardable
    two = decode_addresses(dns(b"a.example") + dns(b"b.example"))
    assert two.addresses == (Address(DNS, "a.example", 1),) and not two.forwardable
    with pytest.raises(DecodeError, match="too short for a type 2"):
        decode_addresses(bytes([IPV6]) + bytes(10))
    with pytest.raises(DecodeError, match="must ascend"):
        decode_addresses(dns(b"a.example") + ipv4)
    assert decode_addresses(b"").addresses == ()


address_strategy = st.one_of(
    st.builds(
        lambda n, p: Address(IPV4, f"{n >> 24}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", p),
        st.integers(0, 2**32 - 1),
        st.integers(1, 0xFFFF),
    ),
    st.builds(
        lambda b, p: Address(IPV6, str(__import__("ipaddress").IPv6Address(b)), p),
        st.binary(min_size=16, max_size=16),
        st.integers(1, 0xFFFF),
    ),
    st.builds(
        lambda k, p: Address(TORV3, onion_v3_host(k), p),
        st.binary(min_size=32, max_size=32),
        st.integers(0, 0xFFFF),
    ),
)


@settings(max_examples=50, deadline=None)
@given(
    addresses=st.lists(address_strategy, max_size=6),
    hostname=st.none()
    | st.text("abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=255),
)
def test_address_round_trip_property(addresses: list[Address], hostname: str | None) -> None:
    if hostname is not None:
        addresses = [*addresses, Address(DNS, hostname, 9735)]
    decoded = decode_addresses(encode_addresses(addresses))
    assert list(decoded.addresses) == sorted(addresses, key=lambda a: a.kind)
    assert decoded.forwardable and decoded.ignored == 0


# ---------------------------------------------------------------- fuzzing: only DecodeError


def _prefixed(type_number: int) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=600).map(lambda body: type_number.to_bytes(2, "big") + body)


@settings(max_examples=200, deadline=None)
@given(raw=st.one_of(st.binary(max_size=40), _prefixed(256), _prefixed(257), _prefixed(258)))
def test_verifiers_raise_only_decode_errors(raw: bytes) -> None:
    ids = sorted((node_id(1), node_id(2)))
    for check in (
        lambda: verify_channel_announcement(raw, CHAIN, funded()),
        lambda: verify_node_announcement(raw),
        lambda: verify_channel_update(raw, CHAIN, ids[0], ids[1]),
        lambda: decode_addresses(raw),
    ):
        with contextlib.suppress(DecodeError):  # anything else fails the test
            check()


@settings(max_examples=100, deadline=None)
@given(position=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_any_flipped_bit_in_a_signed_update_is_rejected(position: int, bit: int) -> None:
    raw = update(SCID, 1, 2, 1234)
    position = 2 + position % (len(raw) - 2)  # anywhere after the type
    tampered = raw[:position] + bytes([raw[position] ^ (1 << bit)]) + raw[position + 1 :]
    ids = sorted((node_id(1), node_id(2)))
    with pytest.raises(DecodeError):  # signature, or the chain no longer ours
        verify_channel_update(tampered, CHAIN, ids[0], ids[1])
