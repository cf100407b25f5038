"""What an incoming HTLC's onion asks of us, and the terms we forward on (pure helpers of the node).

:func:`read_onion` peels our layer and sorts the HTLC into one of four cases the runtime
acts on: :class:`Malformed` (answer ``update_fail_malformed_htlc``), :class:`Refuse` (answer
``update_fail_htlc`` with this failure, encrypted for the payer), :class:`Forward` (ask
:func:`~lightspeed.payments.forward.decide_forward`) or :class:`Final` (hand to the
:class:`~lightspeed.payments.receiver.Receiver`). The final node understands the keysend and
AMP records; a forwarding node understands none beyond BOLT 4's. An HTLC inside a blinded path
(a ``path_key`` in ``update_add_htlc``, or ``encrypted_recipient_data`` in our payload) is read
by :func:`~lightspeed.node.blinded_incoming.read_blinded` instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from lightspeed.errors import OnionError
from lightspeed.node.blinded_incoming import BlindedRead, read_blinded
from lightspeed.onion.failure import FailureCode, FailureMessage, create_failure_packet
from lightspeed.onion.payload import (
    HopPayload,
    InvalidHopPayload,
    check_hop_payload,
)
from lightspeed.onion.sphinx import OnionPacket, peel_onion
from lightspeed.payments.forward import ForwardingPolicy
from lightspeed.payments.receiver import UNDERSTOOD_RECORDS

#: What a node charges and asks for unless told otherwise (LND's defaults: 1 sat + 1 ppm, 40 blocks).
DEFAULT_POLICY = ForwardingPolicy(fee_base_msat=1000, fee_proportional_millionths=1, cltv_expiry_delta=40,
                                  htlc_minimum_msat=1, htlc_maximum_msat=(1 << 63) - 1)


def short_channel_id(block_height: int, tx_index: int, output_index: int) -> int:
    """BOLT 7: block height (3 bytes), transaction index (3 bytes), output index (2 bytes)."""
    return block_height << 40 | tx_index << 16 | output_index


@dataclass(frozen=True)
class Malformed:
    sha256_of_onion: bytes
    code: int


@dataclass(frozen=True)
class Refuse:
    shared_secret: bytes
    failure: FailureMessage

    def reason(self) -> bytes:
        return create_failure_packet(self.shared_secret, self.failure.to_bytes())


@dataclass(frozen=True)
class ForwardSettled:
    """An HTLC we forwarded was fulfilled: we earned ``in_msat - out_msat`` (fwdinghistory)."""

    in_channel_id: bytes
    out_channel_id: bytes
    in_msat: int
    out_msat: int
    payment_hash: bytes


@dataclass(frozen=True)
class Forward:
    shared_secret: bytes
    payload: HopPayload
    next_onion: bytes


@dataclass(frozen=True)
class Final:
    shared_secret: bytes
    payload: HopPayload


Incoming = Malformed | Refuse | Forward | Final


def read_onion(onion: bytes, node_privkey: bytes, payment_hash: bytes, path_key: bytes | None = None,
               amount_msat: int = 0, cltv_expiry: int = 0, node_id: bytes = b"") -> Incoming | BlindedRead:
    """Peel our layer of an incoming HTLC's onion and say what it asks (never raises).

    ``path_key``, ``amount_msat``, ``cltv_expiry`` and ``node_id`` (ours) matter only inside a
    blinded path, where the recipient's ``payment_relay`` sets the forwarded amount and expiry.
    """
    if path_key is not None:
        return read_blinded(onion, node_privkey, node_id, payment_hash, amount_msat, cltv_expiry, path_key)
    try:
        peeled = peel_onion(OnionPacket.from_bytes(onion), node_privkey, payment_hash)
    except OnionError as exc:
        code = {"version": FailureCode.INVALID_ONION_VERSION,
                "public_key": FailureCode.INVALID_ONION_KEY}.get(exc.field, FailureCode.INVALID_ONION_HMAC)
        return Malformed(hashlib.sha256(onion).digest(), code)
    final = peeled.next_packet is None
    try:
        payload = HopPayload.from_bytes(peeled.payload, understood=UNDERSTOOD_RECORDS if final else frozenset())
        if payload.encrypted_recipient_data is not None:  # we are the introduction node of a blinded path
            return read_blinded(onion, node_privkey, node_id, payment_hash, amount_msat, cltv_expiry, None,
                                payload, peeled.next_packet, peeled.shared_secret)
        check_hop_payload(payload, is_final=final, update_path_key=False)
    except InvalidHopPayload as exc:
        failure = FailureMessage(FailureCode.INVALID_ONION_PAYLOAD, tlv_type=exc.tlv_type or 0, offset=0)
        return Refuse(peeled.shared_secret, failure)
    if peeled.next_packet is None:
        return Final(peeled.shared_secret, payload)
    return Forward(peeled.shared_secret, payload, peeled.next_packet.to_bytes())
