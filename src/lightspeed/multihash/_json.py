"""Strict readers for the JSON the multi-hash documents are made of.

Every reader raises :class:`~lightspeed.errors.DecodeError` naming the field (``parts[2].preimage``)
and the reason, so a hostile or mistyped document is refused in words and never with a traceback.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from coincurve import PrivateKey, PublicKeyXOnly

from lightspeed.errors import DecodeError, UsageError

_HEX = re.compile(r"[0-9a-f]*")  # lower case only: one spelling per value keeps the encoding canonical
MAX_TEXT_BYTES = 639  # as a BOLT 11 description: what a QR code of the request still holds


def canonical(data: dict[str, Any]) -> bytes:
    """Sorted keys, no spaces, UTF-8: the bytes that are hashed and signed."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def tagged_digest(tag: bytes, message: bytes) -> bytes:
    """BIP-340's tagged hash: SHA256(SHA256(tag) || SHA256(tag) || message)."""
    prefix = hashlib.sha256(tag).digest()
    return hashlib.sha256(prefix + prefix + message).digest()


def schnorr_valid(pubkey: bytes, signature: bytes, digest: bytes) -> bool:
    """True when ``signature`` is ``pubkey``'s BIP-340 signature of ``digest`` (any bad key: False)."""
    if len(pubkey) != 33 or pubkey[0] not in (2, 3) or len(signature) != 64:
        return False
    try:
        return bool(PublicKeyXOnly(pubkey[1:]).verify(signature, digest))
    except ValueError:
        return False


def schnorr_sign(secret: bytes, expected_pubkey: bytes, digest: bytes, aux_rand: bytes, field: str) -> bytes:
    """Sign ``digest`` with ``secret``, which must be the key of ``expected_pubkey`` (UsageError otherwise)."""
    try:
        key = PrivateKey(secret)
    except ValueError:
        raise UsageError(f"{field}: not a valid secp256k1 secret key") from None
    if key.public_key.format(compressed=True) != expected_pubkey:
        raise UsageError(f"{field}: is not the key of the document's {field}")
    return bytes(key.sign_schnorr(digest, aux_rand))


def obj(value: object, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DecodeError(field, "expected a JSON object")
    return value


def hex_bytes(data: dict[str, Any], name: str, size: int, field: str) -> bytes:
    value = data.get(name)
    if not isinstance(value, str) or len(value) != 2 * size or not _HEX.fullmatch(value):
        raise DecodeError(field, f"expected {size} bytes as {2 * size} lower-case hex digits")
    return bytes.fromhex(value)


def integer(data: dict[str, Any], name: str, field: str, minimum: int = 0, maximum: int = 2**63 - 1) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise DecodeError(field, f"expected an integer from {minimum} to {maximum}")
    return value


def text(data: dict[str, Any], name: str, field: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise DecodeError(field, "expected a string")
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise DecodeError(field, "is not valid Unicode (it contains a lone surrogate)") from None
    if size > max_bytes:
        raise DecodeError(field, f"must be at most {max_bytes} bytes in UTF-8")
    return value


def array(data: dict[str, Any], name: str, field: str, max_items: int) -> list[Any]:
    value = data.get(name)
    if not isinstance(value, list) or not 1 <= len(value) <= max_items:
        raise DecodeError(field, f"expected a list of 1 to {max_items} items")
    return value


def only_keys(data: dict[str, Any], allowed: set[str], field: str) -> None:
    """Unknown keys are refused: a signer must not be made to appear to sign what it did not see."""
    extra = sorted(str(k) for k in data if k not in allowed)
    if extra:
        # A name as it may appear in an error: short, printable, never empty.
        name = extra[0] if 0 < len(extra[0]) <= 64 and extra[0].isprintable() else ascii(extra[0][:64])
        raise DecodeError(f"{field}.{name}" if field else name, "is not a known field")


def loads(raw: str | bytes, field: str) -> object:
    """Parse JSON text; DecodeError (never ValueError/RecursionError) for anything unreadable."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise DecodeError(field, f"not JSON ({str(exc)[:80]})") from None
