"""Onion-message payloads of asynchronous payments, for both flows (sans-IO codecs).

Flow 1, LightningRod (Breez): the payer A asks its LSP to hold HTLCs by payment hash
(:class:`HoldHtlcsRequest`), tells the payee B about the payment through B's LSP mailbox
(:class:`AsyncPaymentNotice`, sent with a reply path that A built to its own LSP), and B
unblocks the payment by sending :class:`PaymentUnblock` along that reply path: the ``pid``
sits in the ``encrypted_data_tlv`` A sealed for its LSP (:data:`PAYMENT_UNBLOCK`), so B
carries it without being able to read or alter it. Breez's write-up names the pieces but
fixes no numbers; ours are odd types in the custom range (docs/async-payments.md).

Flow 2, the draft spec (bolts#1149, as LDK implements it): ``held_htlc_available`` (72)
to the payee, ``release_held_htlc`` (74) back along the reply path, both empty TLV streams;
the static invoice travels as ``static_invoice`` (70), see :mod:`.static_invoice`.

Every decoder raises :class:`DecodeError` naming the field, and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from lightspeed.codec.tlv import decode_tlv_stream, encode_tlv_stream
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.secp256k1 import (
    is_valid_pubkey,
    pubkey_from_privkey,
    sign_compact,
    verify_compact,
)
from lightspeed.errors import DecodeError, UsageError

# onionmsg_tlv payload types (BOLT 4 reserves 64+ for the final hop's payload).
#: Draft spec / LDK ``onion_message/async_payments.rs``: HELD_HTLC_AVAILABLE_TLV_TYPE.
HELD_HTLC_AVAILABLE = 72
#: Draft spec / LDK: RELEASE_HELD_HTLC_TLV_TYPE.
RELEASE_HELD_HTLC = 74
#: LDK ``onion_message/offers.rs``: STATIC_INVOICE_TLV_TYPE.
STATIC_INVOICE = 70
#: LightningRod, our numbers (odd: a node that does not know them ignores the message).
HOLD_HTLCS = 65537
ASYNC_PAYMENT_NOTICE = 65539
PAYMENT_UNBLOCK_MESSAGE = 65541
#: encrypted_data_tlv type carrying the pid to the payer's LSP (odd: BOLT 4 readers skip it).
PAYMENT_UNBLOCK = 65537
#: update_add_htlc TLV (LDK ``ln/msgs.rs``: ``(75537, hold_htlc, option)``): "hold this HTLC".
UPDATE_ADD_HOLD_HTLC = 75537

PID_SIZE = 32
HASH_SIZE = 32
#: The most payment hashes one hold request may name (MPP parts share one hash; several
#: hashes serve several invoices paid together). Bounds what a peer makes us parse and store.
MAX_HASHES = 32

# Inner TLV types of our LightningRod messages.
_PAYMENT_HASHES = 0
_PID = 2
_AMOUNT_MSAT = 4
_CLIENT_ID = 6
_SIGNATURE = 8


def _hashes(value: bytes, field: str) -> tuple[bytes, ...]:
    if not value or len(value) % HASH_SIZE:
        raise DecodeError(field, f"{len(value)} bytes is not a non-empty multiple of {HASH_SIZE}")
    count = len(value) // HASH_SIZE
    if count > MAX_HASHES:
        raise DecodeError(field, f"{count} payment hashes, at most {MAX_HASHES}")
    hashes = tuple(value[i : i + HASH_SIZE] for i in range(0, len(value), HASH_SIZE))
    if len(set(hashes)) != len(hashes):
        raise DecodeError(field, "a payment hash is repeated")
    return hashes


def _check_hashes(hashes: Sequence[bytes]) -> None:
    if not 1 <= len(hashes) <= MAX_HASHES:
        raise UsageError(f"1 to {MAX_HASHES} payment hashes, not {len(hashes)}")
    if any(len(h) != HASH_SIZE for h in hashes) or len(set(hashes)) != len(hashes):
        raise UsageError("payment hashes must be distinct 32-byte values")


def _fixed(records: dict[int, bytes], tlv_type: int, size: int, field: str) -> bytes:
    if tlv_type not in records:
        raise DecodeError(field, "missing")
    value = records[tlv_type]
    if len(value) != size:
        raise DecodeError(field, f"{len(value)} bytes, expected {size}")
    return value


@dataclass(frozen=True)
class HoldHtlcsRequest:
    """A -> LSP_a: hold the HTLCs A is about to send with these hashes until ``pid`` unblocks them.

    Onion messages are anonymous, so the request names its client (``client_id``, A's node id)
    and is signed by it (``signature``: compact ECDSA over :meth:`sighash`); otherwise anyone who
    knows B's payment hash could have A's HTLC held under a pid of their own. The LSP stores only
    an HMAC of ``pid`` (see :mod:`.policy`). ``amount_msat`` is the total A will send.
    Build one with :meth:`sign`; :meth:`from_bytes` refuses a bad signature.
    """

    payment_hashes: tuple[bytes, ...]
    pid: bytes
    amount_msat: int
    client_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_hashes(self.payment_hashes)
        if len(self.pid) != PID_SIZE:
            raise UsageError(f"pid is {PID_SIZE} bytes")
        if not 0 < self.amount_msat < 1 << 64:
            raise UsageError("amount_msat must be a positive u64")
        if len(self.client_id) != 33 or len(self.signature) != 64:
            raise UsageError("client_id is 33 bytes and signature 64")

    def _unsigned(self) -> list[tuple[int, bytes]]:
        return [(_PAYMENT_HASHES, b"".join(self.payment_hashes)), (_PID, self.pid),
                (_AMOUNT_MSAT, self.amount_msat.to_bytes(8, "big")), (_CLIENT_ID, self.client_id)]

    def sighash(self) -> bytes:
        return sha256(b"lightspeed/hold_htlcs" + encode_tlv_stream(self._unsigned()))

    @classmethod
    def sign(cls, payment_hashes: tuple[bytes, ...], pid: bytes, amount_msat: int,
             client_privkey: bytes) -> HoldHtlcsRequest:
        unsigned = cls(payment_hashes, pid, amount_msat, pubkey_from_privkey(client_privkey), bytes(64))
        return replace(unsigned, signature=sign_compact(client_privkey, unsigned.sighash()))

    def to_bytes(self) -> bytes:
        return encode_tlv_stream([*self._unsigned(), (_SIGNATURE, self.signature)])

    @classmethod
    def from_bytes(cls, data: bytes) -> HoldHtlcsRequest:
        records = decode_tlv_stream(data, {_PAYMENT_HASHES, _PID, _AMOUNT_MSAT, _CLIENT_ID, _SIGNATURE},
                                    field="hold_htlcs")
        if _PAYMENT_HASHES not in records:
            raise DecodeError("hold_htlcs payment_hashes", "missing")
        hashes = _hashes(records[_PAYMENT_HASHES], "hold_htlcs payment_hashes")
        pid = _fixed(records, _PID, PID_SIZE, "hold_htlcs pid")
        amount = int.from_bytes(_fixed(records, _AMOUNT_MSAT, 8, "hold_htlcs amount_msat"), "big")
        if amount == 0:
            raise DecodeError("hold_htlcs amount_msat", "must be positive")
        client_id = _fixed(records, _CLIENT_ID, 33, "hold_htlcs client_id")
        if not is_valid_pubkey(client_id):
            raise DecodeError("hold_htlcs client_id", "not a valid public key")
        request = cls(hashes, pid, amount, client_id, _fixed(records, _SIGNATURE, 64, "hold_htlcs signature"))
        if not verify_compact(client_id, request.signature, request.sighash()):
            raise DecodeError("hold_htlcs signature", "not client_id's signature of this request")
        return request


@dataclass(frozen=True)
class AsyncPaymentNotice:
    """A -> B (through LSP_b's mailbox): "a payment with these hashes waits for you".

    It travels with a ``reply_path`` to LSP_a whose last ``encrypted_data_tlv`` carries the
    pid (:func:`payment_unblock_record`); B answers along it with :class:`PaymentUnblock`.
    """

    payment_hashes: tuple[bytes, ...]
    amount_msat: int

    def __post_init__(self) -> None:
        _check_hashes(self.payment_hashes)
        if not 0 < self.amount_msat < 1 << 64:
            raise UsageError("amount_msat must be a positive u64")

    def to_bytes(self) -> bytes:
        return encode_tlv_stream([(_PAYMENT_HASHES, b"".join(self.payment_hashes)),
                                  (_AMOUNT_MSAT, self.amount_msat.to_bytes(8, "big"))])

    @classmethod
    def from_bytes(cls, data: bytes) -> AsyncPaymentNotice:
        records = decode_tlv_stream(data, {_PAYMENT_HASHES, _AMOUNT_MSAT}, field="async_payment_notice")
        if _PAYMENT_HASHES not in records:
            raise DecodeError("async_payment_notice payment_hashes", "missing")
        hashes = _hashes(records[_PAYMENT_HASHES], "async_payment_notice payment_hashes")
        amount = int.from_bytes(_fixed(records, _AMOUNT_MSAT, 8, "async_payment_notice amount_msat"), "big")
        if amount == 0:
            raise DecodeError("async_payment_notice amount_msat", "must be positive")
        return cls(hashes, amount)


@dataclass(frozen=True)
class EmptyPayload:
    """A payload whose meaning is its type alone: ``held_htlc_available``, ``release_held_htlc``
    (LDK: ``impl_ser_tlv_based!(HeldHtlcAvailable, {})``) and our ``payment_unblock`` message.
    Unknown odd inner records are allowed (and dropped); even ones refused, per BOLT 1."""

    @classmethod
    def from_bytes(cls, data: bytes, field: str) -> EmptyPayload:
        decode_tlv_stream(data, frozenset(), field=field)
        return cls()

    def to_bytes(self) -> bytes:
        return b""


def payment_unblock_record(pid: bytes) -> tuple[int, bytes]:
    """The ``encrypted_data_tlv`` record A seals for its LSP in the reply path it gives B."""
    if len(pid) != PID_SIZE:
        raise UsageError(f"pid is {PID_SIZE} bytes")
    return (PAYMENT_UNBLOCK, pid)


def payment_unblock_from(unknown_records: Sequence[tuple[int, bytes]]) -> bytes | None:
    """The pid in a decrypted ``encrypted_data_tlv``'s unknown records, or None if absent."""
    for tlv_type, value in unknown_records:
        if tlv_type == PAYMENT_UNBLOCK:
            if len(value) != PID_SIZE:
                raise DecodeError("payment_unblock", f"{len(value)} bytes, expected {PID_SIZE}")
            return value
    return None


AsyncPayload = HoldHtlcsRequest | AsyncPaymentNotice | EmptyPayload

_NAMES = {HELD_HTLC_AVAILABLE: "held_htlc_available", RELEASE_HELD_HTLC: "release_held_htlc",
          PAYMENT_UNBLOCK_MESSAGE: "payment_unblock"}
#: Every onionmsg_tlv payload type this module decodes.
ASYNC_PAYLOAD_TYPES = frozenset({HOLD_HTLCS, ASYNC_PAYMENT_NOTICE, *_NAMES})


def decode_payload(tlv_type: int, value: bytes) -> AsyncPayload:
    """Decode the final-hop payload record ``(tlv_type, value)`` of an onion message."""
    if tlv_type == HOLD_HTLCS:
        return HoldHtlcsRequest.from_bytes(value)
    if tlv_type == ASYNC_PAYMENT_NOTICE:
        return AsyncPaymentNotice.from_bytes(value)
    if tlv_type in _NAMES:
        return EmptyPayload.from_bytes(value, _NAMES[tlv_type])
    raise DecodeError("onionmsg_tlv", f"type {tlv_type} is not an async-payment payload")
