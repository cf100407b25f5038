"""The multi-hash request: a payee-signed list of payment hashes, amounts, and what all of them buy.

Why several hashes (Plooy's proposal). A large payment split over several payment hashes, each
an ordinary BOLT 11 invoice, settles part by part: every part that succeeds gives the payer its
preimage, a proof that the payee received that part. The request, signed by the payee's node
key, states that the goods (``delivers``) are delivered only once every part is paid. So when
only some parts succeed, nobody is left exposed: the payee has delivered nothing, and the payer
holds the payee's signed promise plus the preimages of what it paid, enough to prove to anyone
what it is owed back (a :mod:`refund declaration <lightspeed.multihash.declaration>`).

Why plain invoices rather than hold invoices: a held HTLC locks the liquidity of every hop on
its route until the last part arrives (and a held set that never completes is what a channel-
jamming attack looks like); and a set of parts held and released together is multi-part payment
(MPP) again, whose atomicity is exactly what a payer without a route for the whole amount cannot
get. Settling each part at once frees every hop at once; the refund declaration makes the
outcome provable instead of atomic.

Encoding: canonical JSON (sorted keys, no spaces, UTF-8), as the stream statement
(:mod:`lightspeed.stream.receipt`), not TLV. The documents travel out of band (files, REST
bodies, a chat message), never in an onion, so size hardly matters; what matters is that the
file a person reads and the bytes that were signed are the same, and that a dispute can be
checked with any JSON tool. Signature: BIP-340 over the tagged hash with tag
:data:`REQUEST_TAG`, so it can never be replayed as any other signature of the node key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lightspeed.errors import DecodeError
from lightspeed.invoice import decode as decode_invoice
from lightspeed.multihash import _json as j

REQUEST_TAG = b"lightspeed/multihash/request/v1"
MAX_PARTS = 32  # payment hashes in one request
MAX_INVOICE_CHARS = 7089  # what a QR code holds, as the API's other invoice strings
_REQUEST_KEYS = {"version", "payee_node_id", "created_at", "expires_at", "delivers", "parts", "total_msat"}
_PART_KEYS = {"payment_hash", "amount_msat", "invoice"}


@dataclass(frozen=True, slots=True)
class Part:
    """One payment hash of the request, its amount, and the payee's invoice for it (what a payer pays)."""

    payment_hash: bytes
    amount_msat: int
    invoice: str

    def to_json(self) -> dict[str, Any]:
        return {"payment_hash": self.payment_hash.hex(), "amount_msat": self.amount_msat, "invoice": self.invoice}


@dataclass(frozen=True, slots=True)
class MultihashRequest:
    """What the payee promises: ``delivers`` once every part is paid, if paid before ``expires_at``."""

    payee_node_id: bytes
    parts: tuple[Part, ...]
    delivers: str
    created_at: int
    expires_at: int

    @property
    def total_msat(self) -> int:
        return sum(p.amount_msat for p in self.parts)

    def part(self, payment_hash: bytes) -> Part | None:
        return next((p for p in self.parts if p.payment_hash == payment_hash), None)

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "payee_node_id": self.payee_node_id.hex(), "created_at": self.created_at,
                "expires_at": self.expires_at, "delivers": self.delivers,
                "parts": [p.to_json() for p in self.parts],
                "total_msat": self.total_msat}  # derived, for the reader (checked on decode)

    def canonical(self) -> bytes:
        return j.canonical(self.to_json())

    def digest(self) -> bytes:
        return j.tagged_digest(REQUEST_TAG, self.canonical())

    @classmethod
    def from_json(cls, value: object, field: str = "request") -> MultihashRequest:
        data = j.obj(value, field)
        j.only_keys(data, _REQUEST_KEYS, field)
        if data.get("version") != 1:
            raise DecodeError(f"{field}.version", "expected 1")
        payee = j.hex_bytes(data, "payee_node_id", 33, f"{field}.payee_node_id")
        created_at = j.integer(data, "created_at", f"{field}.created_at")
        expires_at = j.integer(data, "expires_at", f"{field}.expires_at")
        if expires_at <= created_at:
            raise DecodeError(f"{field}.expires_at", "must be after created_at")
        delivers = j.text(data, "delivers", f"{field}.delivers")
        parts = []
        for i, item in enumerate(j.array(data, "parts", f"{field}.parts", MAX_PARTS)):
            parts.append(_part(item, payee, f"{field}.parts[{i}]"))
        if len({p.payment_hash for p in parts}) != len(parts):
            raise DecodeError(f"{field}.parts", "a payment hash is listed twice")
        request = cls(payee, tuple(parts), delivers, created_at, expires_at)
        if data.get("total_msat") != request.total_msat:
            raise DecodeError(f"{field}.total_msat", f"is not the sum of the parts ({request.total_msat})")
        return request


def _part(value: object, payee: bytes, field: str) -> Part:
    data = j.obj(value, field)
    j.only_keys(data, _PART_KEYS, field)
    payment_hash = j.hex_bytes(data, "payment_hash", 32, f"{field}.payment_hash")
    amount = j.integer(data, "amount_msat", f"{field}.amount_msat", 1, 2**53)
    text = data.get("invoice")
    if not isinstance(text, str) or not 0 < len(text) <= MAX_INVOICE_CHARS:
        raise DecodeError(f"{field}.invoice", f"expected a BOLT 11 invoice of at most {MAX_INVOICE_CHARS} characters")
    try:
        invoice = decode_invoice(text)
    except DecodeError as exc:
        raise DecodeError(f"{field}.invoice", str(exc)) from None
    if invoice.payment_hash != payment_hash:
        raise DecodeError(f"{field}.invoice", "its payment hash is not the part's payment_hash")
    if invoice.amount_msat != amount:
        raise DecodeError(f"{field}.invoice", f"is for {invoice.amount_msat} msat, not the part's {amount}")
    if invoice.payee != payee:
        raise DecodeError(f"{field}.invoice", "is not signed by the request's payee_node_id")
    return Part(payment_hash, amount, text)


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """The request with the payee node's BIP-340 signature; its digest is the request's id."""

    request: MultihashRequest
    signature: bytes

    @property
    def request_id(self) -> bytes:
        return self.request.digest()

    def valid(self) -> bool:
        """True when the signature is the payee node's over this request."""
        return j.schnorr_valid(self.request.payee_node_id, self.signature, self.request.digest())

    def to_json(self) -> dict[str, Any]:
        # request_id is derived (the tagged hash of the request), for people and tools; checked on decode.
        return {"request": self.request.to_json(), "signature": self.signature.hex(),
                "request_id": self.request_id.hex()}

    @classmethod
    def from_json(cls, value: object, field: str = "") -> SignedRequest:
        """Decode (the signature is read, not checked: :meth:`valid` says whether it holds)."""
        data = j.obj(value, field or "document")
        j.only_keys(data, {"request", "signature", "request_id"}, field)
        prefix = f"{field}." if field else ""
        signed = cls(MultihashRequest.from_json(data.get("request"), prefix + "request"),
                     j.hex_bytes(data, "signature", 64, prefix + "signature"))
        if "request_id" in data and data["request_id"] != signed.request_id.hex():
            raise DecodeError(prefix + "request_id", "is not the id (tagged hash) of the request")
        return signed


def sign_request(request: MultihashRequest, node_secret: bytes, aux_rand: bytes = bytes(32)) -> SignedRequest:
    """Sign with the payee's node key (``aux_rand``: BIP-340's 32 random bytes, an input here)."""
    return SignedRequest(request, j.schnorr_sign(node_secret, request.payee_node_id, request.digest(), aux_rand,
                                                 "payee_node_id"))
