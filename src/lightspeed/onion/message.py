"""Onion messages (BOLT 4): build along a blinded path, peel at a hop, reply paths.

Every onion message travels a blinded path: each hop is handed a ``path_key``
beside the packet, unblinds its Sphinx key with it, and reads where to send
the message next from its ``encrypted_recipient_data``. Packets use no
associated data and may be larger than payment onions (1300 or 32768 bytes of
payloads). Nothing is returned to the sender on failure: a hop that cannot
process a message ignores it, which here means :class:`OnionError` is raised
and the caller drops the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from lightspeed.codec.tlv import decode_tlv_stream, encode_tlv_stream
from lightspeed.errors import DecodeError, OnionError, UsageError
from lightspeed.onion.blinding import (
    BlindedHop,
    BlindedPath,
    EncryptedDataTlv,
    UnblindedHop,
    blind_hop,
    create_blinded_path,
    unblind_hop,
)
from lightspeed.onion.payload import check_point
from lightspeed.onion.sphinx import (
    HMAC_SIZE,
    ROUTING_INFO_SIZE,
    OnionPacket,
    build_onion,
    peel_onion,
)

ONION_MESSAGE_TYPE = 513
#: BOLT #4: SHOULD set `onion_message_packet` `len` to 1366 or 32834.
LARGE_ROUTING_INFO_SIZE = 32768
REPLY_PATH = 2
ENCRYPTED_RECIPIENT_DATA = 4
#: Final-hop payload types: BOLT 12's invoice_request/invoice/invoice_error (64, 66, 68) and the
#: async-payments draft's static_invoice/held_htlc_available/release_held_htlc (70, 72, 74, as LDK
#: numbers them; lightspeed.asyncpay decodes them). Even, so an onion layer that did not list them
#: would drop such messages (BOLT 4: unknown even types: MUST ignore the message).
_KNOWN = frozenset({REPLY_PATH, ENCRYPTED_RECIPIENT_DATA, 64, 66, 68, 70, 72, 74})


@dataclass(frozen=True)
class OnionMessage:
    """The ``onion_message`` wire message (type 513)."""

    path_key: bytes
    onion_message_packet: bytes

    def to_bytes(self) -> bytes:
        packet = self.onion_message_packet
        return ONION_MESSAGE_TYPE.to_bytes(2, "big") + self.path_key + len(packet).to_bytes(2, "big") + packet

    @classmethod
    def from_bytes(cls, data: bytes) -> OnionMessage:
        if len(data) < 2 + 33 + 2:
            raise OnionError("onion_message", "truncated")
        if int.from_bytes(data[:2], "big") != ONION_MESSAGE_TYPE:
            raise OnionError("onion_message", f"message type {int.from_bytes(data[:2], 'big')} is not 513")
        path_key = check_point(data[2:35], "path_key")
        length = int.from_bytes(data[35:37], "big")
        if len(data) - 37 < length:
            raise OnionError("onion_message_packet", f"len {length} exceeds the message")
        # Extension TLVs after the packet are allowed by BOLT 1 and ignored here.
        return cls(path_key, data[37: 37 + length])


@dataclass(frozen=True)
class OnionMessagePayload:
    """An ``onionmsg_tlv``. ``records`` holds the final-hop payloads (64+, e.g. ``invoice_request``)."""

    encrypted_recipient_data: bytes | None = None
    reply_path: BlindedPath | None = None
    records: tuple[tuple[int, bytes], ...] = ()

    def to_bytes(self) -> bytes:
        records = list(self.records)
        if self.reply_path is not None:
            records.append((REPLY_PATH, self.reply_path.to_bytes()))
        if self.encrypted_recipient_data is not None:
            records.append((ENCRYPTED_RECIPIENT_DATA, self.encrypted_recipient_data))
        try:
            return encode_tlv_stream(records)
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    @classmethod
    def from_bytes(cls, data: bytes) -> OnionMessagePayload:
        # BOLT #4: if the result is not a valid `onionmsg_tlv`, or it contains unknown even
        # types: MUST ignore the message.
        records = decode_tlv_stream(data, _KNOWN, field="onionmsg_tlv")
        reply = BlindedPath.from_bytes(records[REPLY_PATH]) if REPLY_PATH in records else None
        others = tuple((t, v) for t, v in records.items() if t not in (REPLY_PATH, ENCRYPTED_RECIPIENT_DATA))
        return cls(records.get(ENCRYPTED_RECIPIENT_DATA), reply, others)


def blinded_path_to(
    session_key: bytes, node_ids: Sequence[bytes], then: BlindedPath, payloads: Sequence[EncryptedDataTlv] = ()
) -> BlindedPath:
    """Prepend our own blinded hops through ``node_ids`` to reach ``then``'s introduction node.

    BOLT #4: the sender MUST set `next_path_key_override` in the prior onion payload to
    `first_path_key`. ``payloads`` may add fields (e.g. padding) to each prepended hop.
    """
    if len(then.first_node_id) != 33:
        raise UsageError("resolve a sciddir first_node_id to a node id first")
    if not node_ids:
        return then
    extras = list(payloads) or [EncryptedDataTlv() for _ in node_ids]
    hops: list[BlindedHop] = []
    key = session_key
    first_path_key = b""
    for index, (node_id, extra) in enumerate(zip(node_ids, extras, strict=True)):
        last = index == len(node_ids) - 1
        next_node = then.first_node_id if last else node_ids[index + 1]
        data = EncryptedDataTlv(
            padding=extra.padding, next_node_id=next_node, unknown_records=extra.unknown_records,
            next_path_key_override=then.first_path_key if last else None,
        )
        secrets = blind_hop(key, node_id, data.to_bytes())
        first_path_key = first_path_key or secrets.path_key
        hops.append(BlindedHop(secrets.blinded_node_id, secrets.encrypted_recipient_data))
        key = secrets.next_path_privkey
    return BlindedPath(node_ids[0], first_path_key, tuple(hops) + then.hops)


def build_onion_message(
    session_key: bytes,
    path: BlindedPath,
    final_payload: OnionMessagePayload,
    routing_info_size: int | None = None,
) -> tuple[bytes, OnionMessage]:
    """Build a message along ``path``; return (the peer to send it to, the message).

    ``final_payload`` gives the last hop's records and optional ``reply_path``;
    its ``encrypted_recipient_data`` is taken from the path. The packet is 1300
    bytes of payloads when they fit, else 32768, unless ``routing_info_size`` says.
    """
    if len(path.first_node_id) != 33:
        raise UsageError("resolve a sciddir first_node_id to a node id first")
    # BOLT #4: For the non-final nodes' `onionmsg_tlv`: MUST NOT set fields other than
    # `encrypted_recipient_data`.
    payloads = [OnionMessagePayload(hop.encrypted_recipient_data).to_bytes() for hop in path.hops[:-1]]
    payloads.append(OnionMessagePayload(path.hops[-1].encrypted_recipient_data, final_payload.reply_path,
                                        final_payload.records).to_bytes())
    if routing_info_size is None:
        needed = sum(len(p) + 3 + HMAC_SIZE for p in payloads)
        routing_info_size = ROUTING_INFO_SIZE if needed <= ROUTING_INFO_SIZE else LARGE_ROUTING_INFO_SIZE
    # BOLT #4: MUST NOT use any `associated_data` in the Sphinx construction.
    built = build_onion(session_key, [hop.blinded_node_id for hop in path.hops], payloads, b"", routing_info_size)
    return path.first_node_id, OnionMessage(path.first_path_key, built.packet.to_bytes())


@dataclass(frozen=True)
class ForwardOnionMessage:
    """Send ``message`` to ``next_node_id`` (or across ``short_channel_id``, resolved by the caller)."""

    next_node_id: bytes | None
    short_channel_id: int | None
    message: OnionMessage


@dataclass(frozen=True)
class ReceivedOnionMessage:
    """We are the destination. ``path_id`` must be checked against the paths we published."""

    payload: OnionMessagePayload
    path_id: bytes | None
    encrypted_data: EncryptedDataTlv


def peel_onion_message(node_privkey: bytes, message: OnionMessage) -> ForwardOnionMessage | ReceivedOnionMessage:
    """Process an incoming onion message; :class:`OnionError` means *ignore it*."""
    packet = OnionPacket.from_bytes(message.onion_message_packet, routing_info_size=None)
    # BOLT #4: MUST decrypt `onion_message_packet` using an empty `associated_data`, and `path_key`.
    peeled = peel_onion(packet, node_privkey, b"", message.path_key, min_payload_length=0)
    try:
        payload = OnionMessagePayload.from_bytes(peeled.payload)
    except DecodeError as exc:
        raise OnionError(f"onionmsg_tlv {exc.field}", exc.reason) from None
    if payload.encrypted_recipient_data is None:
        raise OnionError("encrypted_recipient_data", "missing: every onion message hop is blinded")
    hop: UnblindedHop = unblind_hop(node_privkey, message.path_key, payload.encrypted_recipient_data)
    data = hop.data
    # BOLT #4: if `encrypted_data_tlv` contains `allowed_features`: MUST ignore the message if it
    # contains an unknown feature bit (none are defined for onion messages).
    if data.allowed_features is not None and int.from_bytes(data.allowed_features, "big"):
        raise OnionError("allowed_features", "unknown feature bit")
    if peeled.next_packet is None:
        # BOLT #4: if the `onionmsg_tlv` contains more than one payload field (types 64 and
        # above): MUST ignore the message.
        if sum(1 for tlv_type, _ in payload.records if tlv_type >= 64) > 1:
            raise OnionError("onionmsg_tlv", "more than one payload field")
        return ReceivedOnionMessage(payload, data.path_id, data)
    # BOLT #4: if it is not the final node: if the `onionmsg_tlv` contains other tlv fields than
    # `encrypted_recipient_data`: MUST ignore the message.
    if payload.reply_path is not None or payload.records:
        raise OnionError("onionmsg_tlv", "a forwarding hop's payload has fields besides encrypted_recipient_data")
    # BOLT #4: if the `encrypted_data_tlv` contains `path_id`: MUST ignore the message.
    if data.path_id is not None:
        raise OnionError("path_id", "present at a forwarding hop")
    if data.next_node_id is None and data.short_channel_id is None:
        raise OnionError("encrypted_data_tlv", "neither next_node_id nor short_channel_id")
    forwarded = OnionMessage(hop.next_path_key, peeled.next_packet.to_bytes())
    return ForwardOnionMessage(data.next_node_id, None if data.next_node_id else data.short_channel_id, forwarded)


def create_reply_path(
    session_key: bytes, node_ids: Sequence[bytes], path_id: bytes, padding_to: int = 0
) -> BlindedPath:
    """A ``reply_path`` through ``node_ids`` back to us (the last id is ours).

    The last hop carries ``path_id`` so we can recognise replies. ``padding_to``
    pads every ``encrypted_data_tlv`` to the same length (BOLT #4: SHOULD).
    """
    if not node_ids:
        raise UsageError("a reply path needs at least our own node id")
    tlvs = [EncryptedDataTlv(next_node_id=node_ids[i + 1]) for i in range(len(node_ids) - 1)]
    tlvs.append(EncryptedDataTlv(path_id=path_id))
    if padding_to:
        tlvs = [_pad(t, padding_to) for t in tlvs]
    return create_blinded_path(session_key, node_ids, tlvs)


def _pad(data: EncryptedDataTlv, target: int) -> EncryptedDataTlv:
    size = len(data.to_bytes())
    if size + 2 > target:
        return data
    # padding's own type and length take 2 bytes while the value is under 253 bytes
    return replace(data, padding=bytes(target - size - 2))
