"""Creating and signing the three gossip messages (the origin node's side of BOLT 7).

A ``channel_announcement`` needs four signatures from two nodes: each side signs the
same unsigned announcement with its node key and its funding key (sent to the other
as ``announcement_signatures``), and either side can then assemble the final message.
``node_announcement`` and ``channel_update`` carry one signature by the origin node.
All return typed messages (``encode_message`` gives their wire bytes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from lightspeed.codec.generated import (
    AnnouncementSignatures,
    ChannelAnnouncement,
    ChannelUpdate,
    NodeAnnouncement,
)
from lightspeed.codec.messages import encode_message
from lightspeed.crypto.secp256k1 import pubkey_from_privkey, verify_compact
from lightspeed.errors import SignatureError, UsageError
from lightspeed.gossip.addresses import Address, encode_addresses
from lightspeed.gossip.signing import (
    CHANNEL_ANNOUNCEMENT_SIGNED_FROM,
    SINGLE_SIGNATURE_SIGNED_FROM,
    check_signature,
    sign,
    signed_hash,
)

# channel_update flag bits (BOLT 7 tables).
DIRECTION = 0x01  # channel_flags bit 0: 0 from node_id_1, 1 from node_id_2
DISABLE = 0x02  # channel_flags bit 1
MUST_BE_ONE = 0x01  # message_flags bit 0
DONT_FORWARD = 0x02  # message_flags bit 1
NO_SIGNATURE = bytes(64)
U32_MAX, U64_MAX = 0xFFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF


def scid_to_bytes(short_channel_id: int) -> bytes:
    if not 0 <= short_channel_id <= U64_MAX:
        raise UsageError(f"short_channel_id {short_channel_id} is out of range")
    return short_channel_id.to_bytes(8, "big")


def scid_from_bytes(data: bytes) -> int:
    return int.from_bytes(data, "big")


def direction_of(node_id: bytes, other_node_id: bytes) -> int:
    """0 when ``node_id`` is ``node_id_1`` (the lesser key) of the channel, else 1."""
    return 0 if node_id < other_node_id else 1


# ---------------------------------------------------------------- channel_announcement


def unsigned_channel_announcement(
    *,
    chain_hash: bytes,
    short_channel_id: int,
    node_id_a: bytes,
    node_id_b: bytes,
    bitcoin_key_a: bytes,
    bitcoin_key_b: bytes,
    features: bytes = b"",
) -> ChannelAnnouncement:
    """The announcement both ends sign; the two sides may be given in either order.

    BOLT #7: node_id_1 is the lexicographically-lesser of the two compressed keys, and
    bitcoin_key_1/2 are node_id_1/2's respective funding_pubkeys.
    """
    if node_id_a == node_id_b:
        raise UsageError("a channel needs two different node ids")
    if node_id_a > node_id_b:
        node_id_a, node_id_b = node_id_b, node_id_a
        bitcoin_key_a, bitcoin_key_b = bitcoin_key_b, bitcoin_key_a
    return ChannelAnnouncement(
        node_signature_1=NO_SIGNATURE,
        node_signature_2=NO_SIGNATURE,
        bitcoin_signature_1=NO_SIGNATURE,
        bitcoin_signature_2=NO_SIGNATURE,
        features=features,
        chain_hash=chain_hash,
        short_channel_id=scid_to_bytes(short_channel_id),
        node_id_1=node_id_a,
        node_id_2=node_id_b,
        bitcoin_key_1=bitcoin_key_a,
        bitcoin_key_2=bitcoin_key_b,
    )


def channel_announcement_hash(announcement: ChannelAnnouncement) -> bytes:
    """``h`` of the announcement (the signatures in it do not matter)."""
    return signed_hash(encode_message(announcement), CHANNEL_ANNOUNCEMENT_SIGNED_FROM)


def sign_channel_announcement(
    announcement: ChannelAnnouncement, node_privkey: bytes, bitcoin_privkey: bytes
) -> tuple[bytes, bytes]:
    """One side's ``(node_signature, bitcoin_signature)`` over the announcement."""
    node_id, bitcoin_key = pubkey_from_privkey(node_privkey), pubkey_from_privkey(bitcoin_privkey)
    sides = (
        (announcement.node_id_1, announcement.bitcoin_key_1),
        (announcement.node_id_2, announcement.bitcoin_key_2),
    )
    if (node_id, bitcoin_key) not in sides:
        raise UsageError("the keys are neither node 1's nor node 2's keys of this announcement")
    h = channel_announcement_hash(announcement)
    return sign(node_privkey, h), sign(bitcoin_privkey, h)


def announcement_signatures(
    channel_id: bytes,
    announcement: ChannelAnnouncement,
    node_privkey: bytes,
    bitcoin_privkey: bytes,
) -> AnnouncementSignatures:
    """The ``announcement_signatures`` message one end sends the other."""
    node_sig, bitcoin_sig = sign_channel_announcement(announcement, node_privkey, bitcoin_privkey)
    return AnnouncementSignatures(
        channel_id=channel_id,
        short_channel_id=announcement.short_channel_id,
        node_signature=node_sig,
        bitcoin_signature=bitcoin_sig,
    )


def combine_announcement_signatures(
    announcement: ChannelAnnouncement, first: AnnouncementSignatures, second: AnnouncementSignatures
) -> ChannelAnnouncement:
    """The signed announcement from both ends' ``announcement_signatures`` (any order).

    Each pair is matched to its side by checking it; a pair that fits neither side
    raises SignatureError (BOLT #7: the recipient of a wrong signature MAY warn).
    """
    h = channel_announcement_hash(announcement)
    by_side: dict[int, AnnouncementSignatures] = {}
    for sigs in (first, second):
        if sigs.short_channel_id != announcement.short_channel_id:
            raise UsageError("announcement_signatures for another short_channel_id")
        for side, node_id in ((1, announcement.node_id_1), (2, announcement.node_id_2)):
            if verify_compact(node_id, sigs.node_signature, h):
                by_side[side] = sigs
                break
        else:
            raise SignatureError(
                "announcement_signatures.node_signature", "matches neither node of the channel"
            )
    if len(by_side) != 2:
        raise SignatureError("announcement_signatures", "both come from the same node")
    check_signature(
        announcement.bitcoin_key_1, by_side[1].bitcoin_signature, h, "bitcoin_signature_1"
    )
    check_signature(
        announcement.bitcoin_key_2, by_side[2].bitcoin_signature, h, "bitcoin_signature_2"
    )
    return dataclasses.replace(
        announcement,
        node_signature_1=by_side[1].node_signature,
        node_signature_2=by_side[2].node_signature,
        bitcoin_signature_1=by_side[1].bitcoin_signature,
        bitcoin_signature_2=by_side[2].bitcoin_signature,
    )


def create_channel_announcement(
    *,
    chain_hash: bytes,
    short_channel_id: int,
    node_privkey_a: bytes,
    bitcoin_privkey_a: bytes,
    node_privkey_b: bytes,
    bitcoin_privkey_b: bytes,
    features: bytes = b"",
) -> ChannelAnnouncement:
    """A fully signed announcement when one process holds both ends' keys (tests, demos)."""
    unsigned = unsigned_channel_announcement(
        chain_hash=chain_hash,
        short_channel_id=short_channel_id,
        node_id_a=pubkey_from_privkey(node_privkey_a),
        node_id_b=pubkey_from_privkey(node_privkey_b),
        bitcoin_key_a=pubkey_from_privkey(bitcoin_privkey_a),
        bitcoin_key_b=pubkey_from_privkey(bitcoin_privkey_b),
        features=features,
    )
    channel_id = bytes(32)
    return combine_announcement_signatures(
        unsigned,
        announcement_signatures(channel_id, unsigned, node_privkey_a, bitcoin_privkey_a),
        announcement_signatures(channel_id, unsigned, node_privkey_b, bitcoin_privkey_b),
    )


# ---------------------------------------------------------------- node_announcement


def _alias_bytes(alias: str | bytes) -> bytes:
    raw = alias.encode("utf-8") if isinstance(alias, str) else alias
    if len(raw) > 32:
        raise UsageError(f"alias is {len(raw)} bytes, at most 32 fit")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError("alias must be valid UTF-8") from None
    # BOLT #7: MUST set alias to a valid UTF-8 string, with any alias trailing-bytes equal to 0.
    return raw.ljust(32, b"\0")


def create_node_announcement(
    node_privkey: bytes,
    *,
    timestamp: int,
    alias: str | bytes = b"",
    rgb_color: bytes = b"\0\0\0",
    addresses: Iterable[Address] = (),
    features: bytes = b"",
) -> NodeAnnouncement:
    """A signed ``node_announcement``; ``timestamp`` must exceed the node's previous one."""
    if not 0 <= timestamp <= U32_MAX:
        raise UsageError(f"timestamp {timestamp} does not fit a u32")
    if len(rgb_color) != 3:
        raise UsageError(f"rgb_color must be 3 bytes, got {len(rgb_color)}")
    unsigned = NodeAnnouncement(
        signature=NO_SIGNATURE,
        features=features,
        timestamp=timestamp,
        node_id=pubkey_from_privkey(node_privkey),
        rgb_color=rgb_color,
        alias=_alias_bytes(alias),
        addresses=encode_addresses(addresses),
    )
    h = signed_hash(encode_message(unsigned), SINGLE_SIGNATURE_SIGNED_FROM)
    return dataclasses.replace(unsigned, signature=sign(node_privkey, h))


# ---------------------------------------------------------------- channel_update


def create_channel_update(
    node_privkey: bytes,
    *,
    chain_hash: bytes,
    short_channel_id: int,
    timestamp: int,
    direction: int,
    cltv_expiry_delta: int,
    htlc_minimum_msat: int,
    htlc_maximum_msat: int,
    fee_base_msat: int,
    fee_proportional_millionths: int,
    disabled: bool = False,
    dont_forward: bool = False,
) -> ChannelUpdate:
    """A signed ``channel_update`` for the direction leaving the signing node.

    BOLT #7: must_be_one is set; unassigned flag bits are 0; timestamp is greater than 0;
    htlc_maximum_msat >= htlc_minimum_msat. ``dont_forward`` marks an update meant only
    for the channel peer (a private or not yet announced channel).
    """
    if direction not in (0, 1):
        raise UsageError(f"direction must be 0 or 1, got {direction}")
    if not 0 < timestamp <= U32_MAX:
        raise UsageError(f"timestamp must be in 1..2^32-1, got {timestamp}")
    if not 0 <= htlc_minimum_msat <= htlc_maximum_msat <= U64_MAX:
        raise UsageError(
            f"need 0 <= htlc_minimum_msat ({htlc_minimum_msat})"
            f" <= htlc_maximum_msat ({htlc_maximum_msat})"
        )
    for name, value, limit in (
        ("cltv_expiry_delta", cltv_expiry_delta, 0xFFFF),
        ("fee_base_msat", fee_base_msat, U32_MAX),
        ("fee_proportional_millionths", fee_proportional_millionths, U32_MAX),
    ):
        if not 0 <= value <= limit:
            raise UsageError(f"{name} {value} is out of range 0..{limit}")
    unsigned = ChannelUpdate(
        signature=NO_SIGNATURE,
        chain_hash=chain_hash,
        short_channel_id=scid_to_bytes(short_channel_id),
        timestamp=timestamp,
        message_flags=bytes([MUST_BE_ONE | (DONT_FORWARD if dont_forward else 0)]),
        channel_flags=bytes([direction | (DISABLE if disabled else 0)]),
        cltv_expiry_delta=cltv_expiry_delta,
        htlc_minimum_msat=htlc_minimum_msat,
        fee_base_msat=fee_base_msat,
        fee_proportional_millionths=fee_proportional_millionths,
        htlc_maximum_msat=htlc_maximum_msat,
    )
    h = signed_hash(encode_message(unsigned), SINGLE_SIGNATURE_SIGNED_FROM)
    return dataclasses.replace(unsigned, signature=sign(node_privkey, h))
