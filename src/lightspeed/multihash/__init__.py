"""Multi-hash requests and refund declarations (issue 15 part 4, Plooy's proposal), sans-IO.

:mod:`~lightspeed.multihash.request` is the payee's signed request (several payment hashes, their
amounts, what all of them buy); :mod:`~lightspeed.multihash.declaration` is the payer's signed
refund declaration when only some parts succeeded. The node layer is
:mod:`lightspeed.node.multihash`; :func:`decode_document` reads either from JSON.
"""

from __future__ import annotations

from lightspeed.errors import DecodeError
from lightspeed.multihash._json import loads
from lightspeed.multihash.declaration import (
    DECLARATION_TAG,
    DeclarationError,
    Outcome,
    RefundDeclaration,
    SignedDeclaration,
    sign_declaration,
    verify_declaration,
)
from lightspeed.multihash.request import (
    MAX_PARTS,
    REQUEST_TAG,
    MultihashRequest,
    Part,
    SignedRequest,
    sign_request,
)


def decode_document(value: object) -> SignedRequest | SignedDeclaration:
    """A signed request (``{"request", "signature"}``) or declaration (``{"declaration", "signature"}``),
    as parsed JSON or its text; DecodeError names the field for anything else."""
    if isinstance(value, (str, bytes)):
        value = loads(value, "document")
    if isinstance(value, dict) and "declaration" in value:
        return SignedDeclaration.from_json(value)
    if isinstance(value, dict) and "request" in value:
        return SignedRequest.from_json(value)
    raise DecodeError("document", 'expected {"request", "signature"} or {"declaration", "signature"}')


__all__ = ["DECLARATION_TAG", "MAX_PARTS", "REQUEST_TAG", "DeclarationError", "MultihashRequest", "Outcome",
           "Part", "RefundDeclaration", "SignedDeclaration", "SignedRequest", "decode_document",
           "sign_declaration", "sign_request", "verify_declaration"]
