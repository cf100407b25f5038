"""Checking received gossip (the receiving node's side of BOLT 7), on the raw bytes.

Two outcomes besides success are kept apart, because BOLT 7 treats them differently:

* the message is *invalid* (a signature that does not verify, unordered node ids, a
  body that does not decode): :class:`~lightspeed.errors.DecodeError` /
  :class:`~lightspeed.errors.SignatureError`; the peer "SHOULD" get a ``warning``;
* the message is fine but *must be ignored here* (another chain, a funding output
  that is missing, spent or not the channel's 2-of-2): :class:`GossipIgnored`,
  silently.

Whether the funding output exists is the runtime's knowledge (it owns the chain), so
it is asked through :class:`FundingLookup`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeVar

from lightspeed.bitcoin.script import p2wsh_script
from lightspeed.channel.scripts import funding_script
from lightspeed.codec.generated import ChannelAnnouncement, ChannelUpdate, NodeAnnouncement
from lightspeed.codec.messages import decode_message
from lightspeed.errors import DecodeError
from lightspeed.gossip.addresses import DecodedAddresses, decode_addresses
from lightspeed.gossip.create import scid_from_bytes
from lightspeed.gossip.signing import (
    CHANNEL_ANNOUNCEMENT_SIGNED_FROM,
    SINGLE_SIGNATURE_SIGNED_FROM,
    check_signature,
    signed_hash,
)

_M = TypeVar("_M")


class GossipIgnored(DecodeError):
    """A well-formed message that BOLT 7 says to ignore here (no warning to the peer)."""


class FundingOutput(NamedTuple):
    """The on-chain output a ``short_channel_id`` points at."""

    script_pubkey: bytes
    amount_sat: int


class FundingLookup(Protocol):
    """The runtime's answer for a ``short_channel_id``: its output if it is unspent and
    deep enough (BOLT 7: at least 6 confirmations, or close to it), else ``None``."""

    def __call__(self, short_channel_id: int) -> FundingOutput | None: ...


@dataclass(frozen=True)
class VerifiedChannel:
    """A ``channel_announcement`` whose signatures and funding output check out."""

    message: ChannelAnnouncement
    short_channel_id: int
    capacity_sat: int | None  # None when accepted without a funding lookup (own private view)


def _decode(raw: bytes, cls: type[_M], name: str) -> _M:
    message = decode_message(raw)
    if not isinstance(message, cls):
        raise DecodeError("message type", f"expected {name}, got {type(message).__name__}")
    return message


def _check_chain(chain_hash: bytes, expected: bytes, name: str) -> None:
    # BOLT #7: if the specified chain_hash is unknown to the receiver: MUST ignore the message.
    if chain_hash != expected:
        raise GossipIgnored(f"{name}.chain_hash", f"unknown chain {chain_hash.hex()}")


def verify_channel_announcement(
    raw: bytes, chain_hash: bytes, funding: FundingLookup | None
) -> VerifiedChannel:
    """Decode and check a ``channel_announcement``; ``funding`` None skips the UTXO check.

    Checks, cheapest first: chain, node id order, the funding output (P2WSH of the 2-of-2
    of bitcoin_key_1 and bitcoin_key_2), then the four signatures of ``h``.
    """
    message = _decode(raw, ChannelAnnouncement, "channel_announcement")
    _check_chain(message.chain_hash, chain_hash, "channel_announcement")
    # BOLT #7: node_id_1 is the lexicographically-lesser of the two compressed keys.
    if not message.node_id_1 < message.node_id_2:
        raise DecodeError("channel_announcement.node_id_1", "is not less than node_id_2")
    scid = scid_from_bytes(message.short_channel_id)
    capacity_sat = None
    if funding is not None:
        output = funding(scid)
        # BOLT #7: if the short_channel_id's output does NOT correspond to a P2WSH (using
        # bitcoin_key_1 and bitcoin_key_2) OR the output is spent: MUST ignore the message.
        if output is None:
            raise GossipIgnored(
                "channel_announcement.short_channel_id", "no unspent funding output"
            )
        expected = p2wsh_script(funding_script(message.bitcoin_key_1, message.bitcoin_key_2))
        if output.script_pubkey != expected:
            raise GossipIgnored(
                "channel_announcement.short_channel_id",
                "the output is not the P2WSH 2-of-2 of bitcoin_key_1 and bitcoin_key_2",
            )
        capacity_sat = output.amount_sat
    # BOLT #7: MUST verify the integrity AND authenticity of the message by verifying the
    # signatures.
    h = signed_hash(raw, CHANNEL_ANNOUNCEMENT_SIGNED_FROM)
    check_signature(
        message.node_id_1, message.node_signature_1, h, "channel_announcement.node_signature_1"
    )
    check_signature(
        message.node_id_2, message.node_signature_2, h, "channel_announcement.node_signature_2"
    )
    check_signature(
        message.bitcoin_key_1,
        message.bitcoin_signature_1,
        h,
        "channel_announcement.bitcoin_signature_1",
    )
    check_signature(
        message.bitcoin_key_2,
        message.bitcoin_signature_2,
        h,
        "channel_announcement.bitcoin_signature_2",
    )
    return VerifiedChannel(message, scid, capacity_sat)


def verify_node_announcement(raw: bytes) -> tuple[NodeAnnouncement, DecodedAddresses]:
    """Decode and check a ``node_announcement``: the signature by ``node_id``, the addresses.

    BOLT #7: if node_id is NOT a valid compressed public key (the decoder checks it) or the
    signature is NOT valid: MUST NOT process the message further; if addrlen is
    insufficient to hold the address descriptors of the known types: SHOULD send a warning.
    """
    message = _decode(raw, NodeAnnouncement, "node_announcement")
    h = signed_hash(raw, SINGLE_SIGNATURE_SIGNED_FROM)
    check_signature(message.node_id, message.signature, h, "node_announcement.signature")
    return message, decode_addresses(message.addresses)


def decode_channel_update(raw: bytes) -> ChannelUpdate:
    """The ``channel_update`` in ``raw`` (signature not yet checked: that needs the channel)."""
    message = _decode(raw, ChannelUpdate, "channel_update")
    return message


def verify_channel_update(
    raw: bytes, chain_hash: bytes, node_id_1: bytes, node_id_2: bytes
) -> ChannelUpdate:
    """Decode and check a ``channel_update`` of the channel between ``node_id_1`` and ``node_id_2``.

    BOLT #7: the node_id for the signature verification is node_id_1 if the least-significant
    bit of channel_flags is 0, node_id_2 otherwise.
    """
    message = decode_channel_update(raw)
    _check_chain(message.chain_hash, chain_hash, "channel_update")
    signer = node_id_2 if message.channel_flags[0] & 1 else node_id_1
    h = signed_hash(raw, SINGLE_SIGNATURE_SIGNED_FROM)
    check_signature(signer, message.signature, h, "channel_update.signature")
    return message
