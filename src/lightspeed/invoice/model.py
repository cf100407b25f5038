"""The ``Invoice`` value object, and ``UnsignedInvoice``, the thing a payee signs.

An invoice is kept in two forms at once: the raw tagged fields in wire order
(so that encoding a decoded invoice gives back the identical string, unknown and
skipped fields included) and the interpreted values a payer uses. Both are
produced together by :func:`lightspeed.invoice.decode.interpret_fields`, so
they cannot disagree.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from lightspeed.bitcoin.network import Network
from lightspeed.codec.bech32 import (
    CHARSET,
    Encoding,
    bech32_encode_chars,
    chars_to_int,
    int_to_chars,
)
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.secp256k1 import sign_recoverable_with_pubkey
from lightspeed.errors import UsageError
from lightspeed.invoice import features as feature_bits
from lightspeed.invoice.fields import Fallback, RouteHintHop, TaggedField


@dataclass(frozen=True)
class Invoice:
    """A decoded, signature-checked BOLT 11 invoice.

    Construct it with :func:`lightspeed.invoice.decode` or
    :meth:`UnsignedInvoice.sign`, never by hand: the interpreted fields must match
    ``tagged_fields`` and the signature.
    """

    network: Network
    hrp: str
    amount_msat: int | None
    timestamp: int
    payment_hash: bytes
    payment_secret: bytes | None
    description: str | None
    description_hash: bytes | None
    expiry: int
    min_final_cltv_expiry: int
    features: frozenset[int]
    payee: bytes
    fallbacks: tuple[Fallback, ...]
    route_hints: tuple[tuple[RouteHintHop, ...], ...]
    metadata: bytes | None
    signature: bytes
    recovery_id: int
    tagged_fields: tuple[TaggedField, ...]

    @property
    def expires_at(self) -> int:
        """Unix time after which the payee will refuse payment."""
        return self.timestamp + self.expiry

    def is_expired(self, now: int | float) -> bool:
        """True once ``now`` (unix seconds, passed in: the core has no clock) is past expiry."""
        return now > self.expires_at

    def verify_description(self, description: str) -> bool:
        """True if ``description`` is the one committed to by ``h`` (or equals ``d``).

        BOLT #11: a reader MUST check that the SHA2 256-bit hash in the `h` field
        exactly matches the hashed description.
        """
        if self.description_hash is not None:
            return hmac.compare_digest(sha256(description.encode()), self.description_hash)
        return self.description == description

    def has_feature(self, name: str) -> bool:
        return feature_bits.has_feature(self.features, name)

    @property
    def fallback_addresses(self) -> list[str]:
        return [f.address(self.network) for f in self.fallbacks]

    def encode(self) -> str:
        """The invoice string (lower case), byte-for-byte what was decoded or signed."""
        data = _data_chars(self.timestamp, self.tagged_fields)
        signature_chars = int_to_chars(
            int.from_bytes(self.signature + bytes([self.recovery_id]), "big"), 104
        )
        return bech32_encode_chars(self.hrp, data + signature_chars, Encoding.BECH32)

    def __str__(self) -> str:
        return self.encode()


def verify_payment_proof(invoice: Invoice, preimage: bytes) -> bool:
    """Proof of payment: a (signature-checked) invoice plus the preimage of its payment hash."""
    return len(preimage) == 32 and hmac.compare_digest(sha256(preimage), invoice.payment_hash)


@dataclass(frozen=True)
class UnsignedInvoice:
    """Everything a payee signs: the hrp, the timestamp and the tagged fields in order.

    Build one with :func:`lightspeed.invoice.encode.build_invoice` (from values) or
    from JSON (keeping another invoice's field layout), then :meth:`sign` it.
    """

    network: Network
    hrp: str
    timestamp: int
    tagged_fields: tuple[TaggedField, ...]

    def signing_message(self) -> bytes:
        return signing_message(self.hrp, _data_chars(self.timestamp, self.tagged_fields))

    def sign(self, privkey: bytes) -> Invoice:
        """Sign with the payee's key (RFC 6979, low-S) and return the complete invoice.

        Raises DecodeError if the fields themselves are invalid (e.g. no ``p``).
        """
        if len(privkey) != 32:
            raise UsageError("privkey must be 32 bytes")
        from lightspeed.invoice.decode import invoice_from_parts

        signature, recovery_id, payee = sign_recoverable_with_pubkey(privkey, sha256(self.signing_message()))
        return invoice_from_parts(
            self.network, self.hrp, self.timestamp, self.tagged_fields, signature, recovery_id, payee=payee,
        )


def _data_chars(timestamp: int, fields: tuple[TaggedField, ...]) -> str:
    if not 0 <= timestamp < 1 << 35:
        raise UsageError("timestamp must fit in 35 bits")
    parts = [int_to_chars(timestamp, 7)]
    for field in fields:
        length = len(field.data)
        parts.append(CHARSET[field.tag] + CHARSET[length >> 5] + CHARSET[length & 31] + field.data)
    return "".join(parts)


def signing_message(hrp: str, data_chars: str) -> bytes:
    """BOLT #11: the hrp as UTF-8 bytes then the data part, 0 bits appended to a byte boundary."""
    nbits = 5 * len(data_chars)
    pad = -nbits % 8
    value = chars_to_int(data_chars) << pad
    return hrp.encode() + value.to_bytes((nbits + pad) // 8, "big")
