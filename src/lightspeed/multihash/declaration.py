"""The refund declaration: the payer's signed statement of which parts of a request succeeded.

When only some parts of a :class:`~lightspeed.multihash.request.MultihashRequest` were paid, the
payer declares, for every part in the request's order, ``succeeded`` (with its preimage: only the
payee could have revealed it, by settling) or ``failed``, and asks for the succeeded parts back
(``refund_msat``, their sum) through a blinded return path (``return_path``, an ``lno1...`` offer,
issue 15 part 3). The declaration embeds the signed request, so it is a complete, self-checking
record: anyone can verify both signatures and every preimage with :func:`verify_declaration`.

Who signs, and why not the payer's node key: the payer stays anonymous. Every part was paid with
the same return path in its final hop payload; its ``offer_issuer_id`` is a key derived from the
payer's node key and the request id, fresh for this request and unrelated to the node id. That key
(``payer_key``) signs the declaration. Only the payee ever saw it (a final payload is readable by
the payee alone), so a forwarding node that learned a preimage on its way back cannot declare in
the payer's place: the payee refunds only a declaration signed by the key committed in the
payments it received. The ``return_path`` the refund goes to may be another one (a fresh path made
at declaration time, still unexpired when the dispute comes), since the committed key vouches
for it.

Signature: BIP-340 over the tagged hash with :data:`DECLARATION_TAG` of the canonical JSON.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from lightspeed.errors import DecodeError
from lightspeed.multihash import _json as j
from lightspeed.multihash.request import MAX_PARTS, SignedRequest
from lightspeed.offers import decode_offer

DECLARATION_TAG = b"lightspeed/multihash/declaration/v1"
MAX_RETURN_PATH_CHARS = 7089
_KEYS = {"version", "request", "request_id", "payer_key", "parts", "refund_msat", "return_path", "declared_at"}


class DeclarationError(DecodeError):
    """A declaration that does not hold (a signature, a preimage, the parts): ``field`` says where."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one part ended for the payer: ``preimage`` when it succeeded, None when it failed."""

    payment_hash: bytes
    preimage: bytes | None

    @property
    def succeeded(self) -> bool:
        return self.preimage is not None

    def to_json(self) -> dict[str, Any]:
        if self.preimage is None:
            return {"payment_hash": self.payment_hash.hex(), "outcome": "failed"}
        return {"payment_hash": self.payment_hash.hex(), "outcome": "succeeded", "preimage": self.preimage.hex()}


@dataclass(frozen=True, slots=True)
class RefundDeclaration:
    request: SignedRequest
    payer_key: bytes  # the return path key committed in every payment of the request
    parts: tuple[Outcome, ...]  # in the request's order, one per part
    return_path: str  # lno1...: where the refund goes
    declared_at: int

    @property
    def refund_msat(self) -> int:
        """What is owed back: the amounts of the parts that succeeded."""
        succeeded = {o.payment_hash for o in self.parts if o.succeeded}
        return sum(p.amount_msat for p in self.request.request.parts if p.payment_hash in succeeded)

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "request": self.request.to_json(), "request_id": self.request.request_id.hex(),
                "payer_key": self.payer_key.hex(), "parts": [o.to_json() for o in self.parts],
                "refund_msat": self.refund_msat, "return_path": self.return_path, "declared_at": self.declared_at}

    def digest(self) -> bytes:
        return j.tagged_digest(DECLARATION_TAG, j.canonical(self.to_json()))

    @classmethod
    def from_json(cls, value: object, field: str = "declaration") -> RefundDeclaration:
        data = j.obj(value, field)
        j.only_keys(data, _KEYS, field)
        if data.get("version") != 1:
            raise DecodeError(f"{field}.version", "expected 1")
        request = SignedRequest.from_json(data.get("request"), f"{field}.request")
        payer_key = j.hex_bytes(data, "payer_key", 33, f"{field}.payer_key")
        parts = tuple(_outcome(item, f"{field}.parts[{i}]")
                      for i, item in enumerate(j.array(data, "parts", f"{field}.parts", MAX_PARTS)))
        return_path = data.get("return_path")
        if not isinstance(return_path, str) or not 0 < len(return_path) <= MAX_RETURN_PATH_CHARS:
            raise DecodeError(f"{field}.return_path", "expected a BOLT 12 offer (lno1...)")
        try:
            decode_offer(return_path)
        except DecodeError as exc:
            raise DecodeError(f"{field}.return_path", str(exc)) from None
        declaration = cls(request, payer_key, parts, return_path,
                          j.integer(data, "declared_at", f"{field}.declared_at"))
        if data.get("request_id") != request.request_id.hex():
            raise DecodeError(f"{field}.request_id", "is not the id (tagged hash) of the embedded request")
        if data.get("refund_msat") != declaration.refund_msat:
            raise DecodeError(f"{field}.refund_msat", f"is not the sum of the succeeded parts "
                                                      f"({declaration.refund_msat})")
        return declaration


def _outcome(value: object, field: str) -> Outcome:
    data = j.obj(value, field)
    outcome = data.get("outcome")
    if outcome == "failed":
        j.only_keys(data, {"payment_hash", "outcome"}, field)
        return Outcome(j.hex_bytes(data, "payment_hash", 32, f"{field}.payment_hash"), None)
    if outcome == "succeeded":
        j.only_keys(data, {"payment_hash", "outcome", "preimage"}, field)
        return Outcome(j.hex_bytes(data, "payment_hash", 32, f"{field}.payment_hash"),
                       j.hex_bytes(data, "preimage", 32, f"{field}.preimage"))
    raise DecodeError(f"{field}.outcome", 'expected "succeeded" or "failed"')


@dataclass(frozen=True, slots=True)
class SignedDeclaration:
    declaration: RefundDeclaration
    signature: bytes

    def valid(self) -> bool:
        """True when the signature is ``payer_key``'s over this declaration."""
        d = self.declaration
        return j.schnorr_valid(d.payer_key, self.signature, d.digest())

    def to_json(self) -> dict[str, Any]:
        return {"declaration": self.declaration.to_json(), "signature": self.signature.hex()}

    @classmethod
    def from_json(cls, value: object) -> SignedDeclaration:
        data = j.obj(value, "document")
        j.only_keys(data, {"declaration", "signature"}, "")
        return cls(RefundDeclaration.from_json(data.get("declaration")), j.hex_bytes(data, "signature", 64, "signature"))


def sign_declaration(declaration: RefundDeclaration, payer_secret: bytes,
                     aux_rand: bytes = bytes(32)) -> SignedDeclaration:
    """Sign with the secret of ``payer_key`` (``aux_rand``: BIP-340's 32 random bytes)."""
    return SignedDeclaration(declaration, j.schnorr_sign(payer_secret, declaration.payer_key,
                                                         declaration.digest(), aux_rand, "payer_key"))


def verify_declaration(signed: SignedDeclaration) -> None:
    """Everything a third party can check, or :class:`DeclarationError` naming the first failure:
    the payee's signature on the request, the payer key's on the declaration, one outcome per part
    in the request's order, each succeeded part's preimage, at least one part failed (when all
    succeeded the request is complete: the goods are owed, not a refund) and one succeeded."""
    d = signed.declaration
    if not d.request.valid():
        raise DeclarationError("declaration.request.signature", "not the payee node's signature over the request")
    if not signed.valid():
        raise DeclarationError("signature", "not payer_key's signature over the declaration")
    parts = d.request.request.parts
    if len(d.parts) != len(parts):
        raise DeclarationError("declaration.parts", f"{len(d.parts)} outcomes for a request of {len(parts)} parts")
    for i, (outcome, part) in enumerate(zip(d.parts, parts, strict=True)):
        if outcome.payment_hash != part.payment_hash:
            raise DeclarationError(f"declaration.parts[{i}].payment_hash", "not the request's part at this place")
        if outcome.preimage is not None and hashlib.sha256(outcome.preimage).digest() != part.payment_hash:
            raise DeclarationError(f"declaration.parts[{i}].preimage", "does not hash to the part's payment_hash")
    if all(o.succeeded for o in d.parts):
        raise DeclarationError("declaration.parts", "every part succeeded: the request is complete, nothing is "
                                                    "refunded (the goods are owed)")
    if not any(o.succeeded for o in d.parts):
        # Nothing is owed, and no payment committed payer_key: anyone who saw the request could
        # otherwise cancel someone else's purchase with it.
        raise DeclarationError("declaration.parts", "no part succeeded: nothing was paid, nothing to refund")
