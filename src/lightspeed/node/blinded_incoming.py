"""An incoming HTLC inside a blinded path (BOLT 4 "Route Blinding"): what it asks of us, pure.

:func:`read_blinded` is what :func:`~lightspeed.node.forwarding.read_onion` hands over to when
the ``update_add_htlc`` carries a ``path_key`` or our payload holds ``encrypted_recipient_data``.
The node's role decides how every failure travels back (BOLT 2 and BOLT 4):

* ``inside`` (``path_key`` set in ``update_add_htlc``): every local or downstream error is
  ``update_fail_malformed_htlc`` with ``invalid_onion_blinding``;
* ``intro`` (``current_path_key`` in a non-final payload): ``update_fail_htlc`` with
  ``invalid_onion_blinding``, encrypted for the payer;
* the introduction node that is also the recipient: the final node's usual errors.

Dummy hops (the recipient "forwarding" to itself, see :mod:`lightspeed.payments.blinded`) are
peeled here, so the node sees one :class:`BlindedFinal` for them all.

The incoming ``path_key`` is kept with the onion in the store (:func:`pack_onion`), so a
restart decides the HTLC again exactly as before.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from lightspeed.errors import DecodeError, OnionError
from lightspeed.onion.blinding import EncryptedDataTlv, check_allowed_features, unblind_hop
from lightspeed.onion.failure import FailureCode, FailureMessage, create_failure_packet
from lightspeed.onion.payload import (
    KEYSEND_PREIMAGE,
    HopPayload,
    InvalidHopPayload,
    check_hop_payload,
)
from lightspeed.onion.sphinx import PAYMENT_PACKET_SIZE, OnionPacket, peel_onion

Role = Literal["inside", "intro", "intro_final"]
MAX_SELF_HOPS = 20  # dummy hops a path of ours may hold (payments.blinded caps paths at 20 hops)
_PATH_KEY_SIZE = 33
#: Even records a blinded final hop reads: a static invoice's payment carries the payer's preimage.
_UNDERSTOOD = frozenset({KEYSEND_PREIMAGE})


def pack_onion(onion: bytes, path_key: bytes | None) -> bytes:
    """The stored form of an incoming HTLC's onion: the packet, then the ``path_key`` if any."""
    return onion if path_key is None else onion + path_key


def unpack_onion(stored: bytes) -> tuple[bytes, bytes | None]:
    if len(stored) == PAYMENT_PACKET_SIZE + _PATH_KEY_SIZE:
        return stored[:PAYMENT_PACKET_SIZE], stored[PAYMENT_PACKET_SIZE:]
    return stored, None


@dataclass(frozen=True)
class BlindedFailure:
    """Fail the HTLC: ``update_fail_malformed_htlc`` if ``malformed``, else ``update_fail_htlc``."""

    failure: FailureMessage
    shared_secret: bytes | None  # to encrypt the failure for the payer (None: malformed)

    @property
    def malformed(self) -> bool:
        return self.shared_secret is None


@dataclass(frozen=True)
class BlindedForward:
    """Forward inside the path: amounts and expiry from ``payment_relay``, ``next_path_key`` to pass on."""

    role: Role
    shared_secret: bytes
    sha256_of_onion: bytes
    short_channel_id: int | None
    next_node_id: bytes | None
    amount_msat: int
    cltv_expiry: int
    next_onion: bytes
    next_path_key: bytes


@dataclass(frozen=True)
class BlindedFinal:
    """We are the recipient: the payment layer checks ``path_id`` and the amounts."""

    role: Role
    shared_secret: bytes
    sha256_of_onion: bytes
    amt_to_forward_msat: int
    outgoing_cltv_value: int
    total_amount_msat: int
    path_id: bytes | None
    payload: HopPayload


BlindedRead = BlindedFailure | BlindedForward | BlindedFinal


def blinded_failure(role: Role, sha256_of_onion: bytes, shared_secret: bytes,
                    failure: FailureMessage | None = None) -> BlindedFailure:
    """The failure a node in ``role`` returns; ``failure`` is used only where BOLT 4 lets it show."""
    blinding = FailureMessage(FailureCode.INVALID_ONION_BLINDING, sha256_of_onion=sha256_of_onion)
    if role == "inside":
        # BOLT #2: If `path_key` is set in the incoming `update_add_htlc`: MUST send an
        # `update_fail_malformed_htlc` error using the `invalid_onion_blinding` failure code for
        # any local or downstream errors; SHOULD use the `sha256_of_onion` of the onion it received.
        return BlindedFailure(blinding, None)
    if role == "intro":
        # BOLT #2: If `current_path_key` is set in the onion payload and it is not the final node:
        # MUST send an `update_fail_htlc` error using the `invalid_onion_blinding` failure code.
        return BlindedFailure(blinding, shared_secret)
    # BOLT #4: otherwise (the introduction node is the final node) select one of the error codes.
    return BlindedFailure(failure or blinding, shared_secret)


def failure_reason(failure: BlindedFailure) -> bytes:
    """The ``update_fail_htlc`` reason (encrypted with our shared secret); not for malformed ones."""
    assert failure.shared_secret is not None
    return create_failure_packet(failure.shared_secret, failure.failure.to_bytes())


def read_blinded(onion: bytes, node_privkey: bytes, node_id: bytes, payment_hash: bytes, amount_msat: int,
                 cltv_expiry: int, path_key: bytes | None, peeled_payload: HopPayload | None = None,
                 peeled_next: OnionPacket | None = None, peeled_secret: bytes | None = None) -> BlindedRead:
    """Decide an HTLC in a blinded path (never raises). ``peeled_*``: the layer the caller already peeled."""
    sha = hashlib.sha256(onion).digest()
    role: Role = "inside" if path_key is not None else "intro"
    if peeled_payload is None or peeled_secret is None:
        try:
            peeled = peel_onion(OnionPacket.from_bytes(onion), node_privkey, payment_hash, path_key)
        except OnionError:
            # BOLT #4: if `path_key` is set in the incoming `update_add_htlc`: MUST return an
            # `invalid_onion_blinding` error (never the onion's own BADONION codes).
            return BlindedFailure(FailureMessage(FailureCode.INVALID_ONION_BLINDING, sha256_of_onion=sha), None)
        try:
            peeled_payload = HopPayload.from_bytes(peeled.payload, _UNDERSTOOD)
        except InvalidHopPayload:
            return blinded_failure(role, sha, peeled.shared_secret)
        peeled_next, peeled_secret = peeled.next_packet, peeled.shared_secret
    payload, next_packet, secret = peeled_payload, peeled_next, peeled_secret
    key = path_key
    for layer in range(MAX_SELF_HOPS + 1):
        final = next_packet is None
        if role == "intro" and final and layer == 0:
            role = "intro_final"
        try:
            check_hop_payload(payload, is_final=final, update_path_key=key is not None)
        except InvalidHopPayload as exc:
            code = FailureMessage(FailureCode.INVALID_ONION_PAYLOAD, tlv_type=exc.tlv_type or 0, offset=0)
            return blinded_failure(role, sha, secret, code)
        # BOLT #4: MUST use the `update_add_htlc` path_key if set, else `current_path_key`.
        use_key = key if key is not None else payload.current_path_key
        assert use_key is not None and payload.encrypted_recipient_data is not None  # check_hop_payload
        try:
            hop = unblind_hop(node_privkey, use_key, payload.encrypted_recipient_data)
            data: EncryptedDataTlv = hop.data
            check_allowed_features(data)
        except DecodeError:
            return blinded_failure(role, sha, secret)
        constraints = data.payment_constraints
        # BOLT #4: If `payment_constraints` is present: MUST return an error if the expiry is
        # greater than `max_cltv_expiry` or the amount is below `htlc_minimum_msat`.
        if constraints is not None and (cltv_expiry > constraints.max_cltv_expiry
                                        or amount_msat < constraints.htlc_minimum_msat):
            return blinded_failure(role, sha, secret)
        if (data.short_channel_id is not None) and (data.next_node_id is not None):
            # BOLT #4: MUST return an error if `encrypted_recipient_data` contains both.
            return blinded_failure(role, sha, secret)
        if final:
            amount, outgoing, total = payload.amt_to_forward_msat, payload.outgoing_cltv_value, payload.total_amount_msat
            assert amount is not None and outgoing is not None and total is not None  # check_hop_payload
            return BlindedFinal(role, secret, sha, amount, outgoing, total, data.path_id, payload)
        relay = data.payment_relay
        if relay is None or (data.short_channel_id is None and data.next_node_id is None):
            # BOLT #4: if not the final node, MUST return an error if `encrypted_recipient_data` does
            # not contain either `short_channel_id` or `next_node_id`, or `payment_relay`.
            return blinded_failure(role, sha, secret)
        # BOLT #4: MUST use `payment_relay` to calculate `amt_to_forward` and `outgoing_cltv_value`.
        forward_msat = relay.amount_to_forward_msat(amount_msat)
        outgoing_cltv = cltv_expiry - relay.cltv_expiry_delta
        if forward_msat <= 0 or outgoing_cltv <= 0:
            return blinded_failure(role, sha, secret)
        assert next_packet is not None
        if data.next_node_id != node_id:
            return BlindedForward(role, secret, sha, data.short_channel_id, data.next_node_id, forward_msat,
                                  outgoing_cltv, next_packet.to_bytes(), hop.next_path_key)
        # A dummy hop of our own path: peel the next layer here, as the next node would.
        key, amount_msat, cltv_expiry = hop.next_path_key, forward_msat, outgoing_cltv
        try:
            peeled = peel_onion(next_packet, node_privkey, payment_hash, key)
            payload = HopPayload.from_bytes(peeled.payload, _UNDERSTOOD)
        except (OnionError, InvalidHopPayload):
            return blinded_failure(role, sha, secret)
        next_packet = peeled.next_packet
    return blinded_failure(role, sha, secret)
