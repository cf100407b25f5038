"""Processing an HTLC's onion at a hop: from ``update_add_htlc`` fields to *forward* or *receive*.

This joins the pieces a forwarding node needs: peel the packet (unblinding
with the ``path_key`` when there is one), decode and check the payload, open
the ``encrypted_recipient_data`` inside a blinded path and apply its
``payment_relay`` and ``payment_constraints``. Every failure comes back as
:class:`HtlcOnionFailure` carrying the exact failure message to return, so
the channel layer only has to send it (``update_fail_malformed_htlc`` for
``BADONION`` codes, ``update_fail_htlc`` otherwise).

Checks that need the node's own policy (its fee schedule for an unblinded
forward, whether the outgoing channel exists) are left to the caller.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from lightspeed.errors import DecodeError, OnionError
from lightspeed.onion.blinding import EncryptedDataTlv, check_allowed_features, unblind_hop
from lightspeed.onion.failure import FailureCode, FailureMessage
from lightspeed.onion.payload import (
    HopPayload,
    InvalidHopPayload,
    check_hop_payload,
    final_total_msat,
)
from lightspeed.onion.sphinx import OnionPacket, peel_onion


class HtlcOnionFailure(OnionError):
    """The HTLC must fail with ``failure`` (built for the caller to send back)."""

    def __init__(self, field: str, reason: str, failure: FailureMessage) -> None:
        super().__init__(field, reason)
        self.failure = failure


@dataclass(frozen=True)
class ForwardHtlc:
    """Forward to ``short_channel_id`` or ``next_node_id`` with these values."""

    short_channel_id: int | None
    next_node_id: bytes | None
    amt_to_forward_msat: int
    outgoing_cltv_value: int
    next_packet: OnionPacket
    #: put this in the outgoing ``update_add_htlc`` (inside a blinded path), else ``None``
    next_path_key: bytes | None
    shared_secret: bytes
    payload: HopPayload


@dataclass(frozen=True)
class ReceiveHtlc:
    """We are the final node; the payment layer checks the hash, secret and amount totals."""

    amt_to_forward_msat: int
    outgoing_cltv_value: int
    total_msat: int
    payment_secret: bytes | None
    payment_metadata: bytes | None
    #: from our own blinded path, to check it was used in the right context
    path_id: bytes | None
    shared_secret: bytes
    payload: HopPayload


def malformed_onion_failure(code: FailureCode, onion: bytes) -> FailureMessage:
    """A ``BADONION`` failure naming the onion by its hash."""
    return FailureMessage(code, sha256_of_onion=hashlib.sha256(onion).digest())


def process_htlc_onion(
    onion: bytes,
    node_privkey: bytes,
    payment_hash: bytes,
    amount_msat: int,
    cltv_expiry: int,
    path_key: bytes | None = None,
) -> ForwardHtlc | ReceiveHtlc:
    """Decide what an incoming HTLC asks of us; raise :class:`HtlcOnionFailure` with the reply.

    ``path_key`` is the ``update_add_htlc`` TLV (set inside a blinded path).
    """
    try:
        packet = OnionPacket.from_bytes(onion)
        peeled = peel_onion(packet, node_privkey, payment_hash, path_key)
    except OnionError as exc:
        # BOLT #4: if `path_key` is set in the incoming `update_add_htlc`:
        # MUST return an `invalid_onion_blinding` error.
        code = FailureCode.INVALID_ONION_BLINDING if path_key is not None else {
            "version": FailureCode.INVALID_ONION_VERSION, "public_key": FailureCode.INVALID_ONION_KEY,
        }.get(exc.field, FailureCode.INVALID_ONION_HMAC)
        raise HtlcOnionFailure(exc.field, exc.reason, malformed_onion_failure(code, onion)) from None
    is_final = peeled.next_packet is None
    payload: HopPayload | None = None
    try:
        payload = HopPayload.from_bytes(peeled.payload)
        check_hop_payload(payload, is_final=is_final, update_path_key=path_key is not None)
    except InvalidHopPayload as exc:
        # BOLT #4: if `current_path_key` is set in the onion payload and it is not the final
        # node: MUST return an `invalid_onion_blinding` error (as when `path_key` is set).
        intro = payload is not None and payload.current_path_key is not None and not is_final
        if path_key is not None or intro:
            raise HtlcOnionFailure(exc.field, exc.reason, malformed_onion_failure(
                FailureCode.INVALID_ONION_BLINDING, onion)) from None
        failure = FailureMessage(FailureCode.INVALID_ONION_PAYLOAD, tlv_type=exc.tlv_type or 0, offset=0)
        raise HtlcOnionFailure(exc.field, exc.reason, failure) from None
    assert payload is not None
    if payload.encrypted_recipient_data is None:
        return _unblinded(payload, peeled.next_packet, peeled.shared_secret, amount_msat, cltv_expiry)
    return _blinded(payload, peeled.next_packet, peeled.shared_secret, node_privkey, onion, amount_msat,
                    cltv_expiry, path_key)


def _unblinded(payload: HopPayload, next_packet: OnionPacket | None, secret: bytes, amount_msat: int,
               cltv_expiry: int) -> ForwardHtlc | ReceiveHtlc:
    amount = payload.amt_to_forward_msat
    outgoing = payload.outgoing_cltv_value
    assert amount is not None and outgoing is not None  # check_hop_payload guarantees both
    if next_packet is not None:
        return ForwardHtlc(payload.short_channel_id, None, amount, outgoing, next_packet, None, secret, payload)
    # BOLT #4: the final node MUST return an error if incoming `amount_msat` < `amt_to_forward`
    # or incoming `cltv_expiry` < `outgoing_cltv_value`.
    if amount_msat < amount:
        raise HtlcOnionFailure("amount_msat", f"{amount_msat} is below amt_to_forward {amount}",
                               FailureMessage(FailureCode.FINAL_INCORRECT_HTLC_AMOUNT, htlc_msat=amount_msat))
    if cltv_expiry < outgoing:
        raise HtlcOnionFailure("cltv_expiry", f"{cltv_expiry} is below outgoing_cltv_value {outgoing}",
                               FailureMessage(FailureCode.FINAL_INCORRECT_CLTV_EXPIRY, cltv_expiry=cltv_expiry))
    total = final_total_msat(payload)
    assert total is not None
    return ReceiveHtlc(amount, outgoing, total, payload.payment_secret, payload.payment_metadata, None, secret,
                       payload)


def _blinded(payload: HopPayload, next_packet: OnionPacket | None, secret: bytes, node_privkey: bytes,
             onion: bytes, amount_msat: int, cltv_expiry: int, path_key: bytes | None) -> ForwardHtlc | ReceiveHtlc:
    failure = malformed_onion_failure(FailureCode.INVALID_ONION_BLINDING, onion)
    # BOLT #4: MUST use the `update_add_htlc` path_key if set, else `current_path_key`.
    key = path_key if path_key is not None else payload.current_path_key
    assert key is not None and payload.encrypted_recipient_data is not None
    try:
        hop = unblind_hop(node_privkey, key, payload.encrypted_recipient_data)
        data: EncryptedDataTlv = hop.data
        check_allowed_features(data)
    except DecodeError as exc:
        raise HtlcOnionFailure(exc.field, exc.reason, failure) from None
    constraints = data.payment_constraints
    # BOLT #4: MUST return an error if the expiry is greater than max_cltv_expiry or the amount
    # is below htlc_minimum_msat.
    if constraints is not None and cltv_expiry > constraints.max_cltv_expiry:
        raise HtlcOnionFailure("cltv_expiry", "beyond the path's max_cltv_expiry", failure)
    if constraints is not None and amount_msat < constraints.htlc_minimum_msat:
        raise HtlcOnionFailure("amount_msat", "below the path's htlc_minimum_msat", failure)
    if next_packet is None:
        amount, outgoing, total = payload.amt_to_forward_msat, payload.outgoing_cltv_value, payload.total_amount_msat
        assert amount is not None and outgoing is not None and total is not None
        if amount_msat < amount or cltv_expiry < outgoing:
            raise HtlcOnionFailure("htlc", "amount or expiry below the onion's values", failure)
        return ReceiveHtlc(amount, outgoing, total, None, None, data.path_id, secret, payload)
    # BOLT #4: MUST return an error if `encrypted_recipient_data` contains both or neither of
    # `short_channel_id` and `next_node_id`, or does not contain `payment_relay`.
    if (data.short_channel_id is None) == (data.next_node_id is None):
        raise HtlcOnionFailure("encrypted_data_tlv", "needs exactly one of short_channel_id, next_node_id", failure)
    relay = data.payment_relay
    if relay is None:
        raise HtlcOnionFailure("payment_relay", "missing at a blinded forwarding hop", failure)
    outgoing_cltv = cltv_expiry - relay.cltv_expiry_delta
    forward_msat = relay.amount_to_forward_msat(amount_msat)
    if forward_msat <= 0 or outgoing_cltv <= 0:
        raise HtlcOnionFailure("payment_relay", "the HTLC does not cover the relay fee or delta", failure)
    return ForwardHtlc(data.short_channel_id, data.next_node_id, forward_msat, outgoing_cltv, next_packet,
                       hop.next_path_key, secret, payload)
