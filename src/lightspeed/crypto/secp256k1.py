"""secp256k1 operations on raw bytes (coincurve underneath).

Lightning carries signatures in compact form (64-byte ``r || s``) and keys as
33-byte compressed points; these helpers take and return exactly those, so
protocol code never handles library objects. Hashing is the caller's job: every
function takes a 32-byte message hash.
"""

from __future__ import annotations

import functools

from coincurve import PrivateKey, PublicKey
from coincurve.ecdsa import cdata_to_der, deserialize_compact

CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_ORDER = CURVE_ORDER // 2


def pubkey_from_privkey(privkey: bytes) -> bytes:
    return PrivateKey(privkey).public_key.format(compressed=True)


def is_valid_pubkey(pubkey: bytes) -> bool:
    """True for a 33-byte compressed encoding of a point on the curve."""
    if len(pubkey) != 33 or pubkey[0] not in (2, 3):
        return False
    try:
        PublicKey(pubkey)
    except ValueError:
        return False
    return True


def is_low_s(signature: bytes) -> bool:
    """BIP 62 / BOLT 11 low-S rule for a compact signature."""
    return int.from_bytes(signature[32:64], "big") <= HALF_ORDER


def sign_recoverable(privkey: bytes, msg_hash: bytes) -> tuple[bytes, int]:
    """RFC 6979 deterministic, low-S signature: ``(r || s, recovery id)``."""
    raw = PrivateKey(privkey).sign_recoverable(msg_hash, hasher=None)
    return raw[:64], raw[64]


def sign_recoverable_with_pubkey(privkey: bytes, msg_hash: bytes) -> tuple[bytes, int, bytes]:
    """Like :func:`sign_recoverable`, also returning the signer's compressed public key.

    The invoice signer's: its key object (and public key) is kept for the few latest keys,
    since making one computes the public key and a keypair (two point multiplications, ~70 µs,
    more than the signature itself) and a node signs every invoice with the same key.
    """
    key, public = _signer(privkey)
    raw = key.sign_recoverable(msg_hash, hasher=None)
    return raw[:64], raw[64], public


@functools.lru_cache(maxsize=4)
def _signer(privkey: bytes) -> tuple[PrivateKey, bytes]:
    key = PrivateKey(privkey)
    return key, key.public_key.format(compressed=True)


def sign_compact(privkey: bytes, msg_hash: bytes) -> bytes:
    """RFC 6979 deterministic, low-S compact signature ``r || s``."""
    return PrivateKey(privkey).sign_recoverable(msg_hash, hasher=None)[:64]


def recover_pubkey(signature: bytes, recovery_id: int, msg_hash: bytes) -> bytes:
    """Compressed public key that made ``signature``; raises ValueError if none.

    Accepts high-S signatures, as BOLT 11 requires for recovery.
    """
    pubkey = PublicKey.from_signature_and_message(
        signature + bytes([recovery_id]), msg_hash, hasher=None
    )
    return pubkey.format(compressed=True)


def verify_compact(pubkey: bytes, signature: bytes, msg_hash: bytes) -> bool:
    """Verify a compact ``r || s`` signature; high-S signatures do not verify."""
    try:
        der = cdata_to_der(deserialize_compact(signature))
        return bool(PublicKey(pubkey).verify(der, msg_hash, hasher=None))
    except (ValueError, TypeError):
        return False


def der_to_compact(der: bytes) -> bytes:
    """A DER signature (without sighash byte) as the 64-byte ``r || s`` Lightning messages carry."""
    from coincurve.ecdsa import der_to_cdata, serialize_compact

    return bytes(serialize_compact(der_to_cdata(der)))


def compact_to_der(signature: bytes) -> bytes:
    """A 64-byte ``r || s`` signature as DER (raises ValueError if r or s is out of range)."""
    return bytes(cdata_to_der(deserialize_compact(signature)))
