"""BIP-340 signatures over a BOLT 12 Merkle root (libsecp256k1 through coincurve).

BOLT #12: "All signatures are created as per BIP-340 and tagged as recommended
there ... the tag is "lightning" || `messagename` || `fieldname`, and `msg` is the
Merkle-root". Keys on the wire are 33-byte compressed points; BIP-340 verifies
against the x-only key (the point's x coordinate).
"""

from __future__ import annotations

from coincurve import PrivateKey, PublicKeyXOnly

from lightspeed.errors import UsageError
from lightspeed.offers.merkle import tagged_hash


def signature_tag(message_name: str, field_name: str = "signature") -> bytes:
    """BOLT #12: the tag is "lightning" || `messagename` || `fieldname`."""
    return b"lightning" + message_name.encode() + field_name.encode()


def signature_digest(message_name: str, merkle_root: bytes, field_name: str = "signature") -> bytes:
    """H(tag, merkle-root): the 32-byte message BIP-340 signs."""
    return tagged_hash(signature_tag(message_name, field_name), merkle_root)


def sign_merkle_root(
    message_name: str, merkle_root: bytes, secret_key: bytes, *, aux_rand: bytes | None = None,
    field_name: str = "signature",
) -> bytes:
    """BOLT #12: SIG(`tag`,`msg`,`key`), a 64-byte BIP-340 signature.

    ``aux_rand`` is BIP-340's auxiliary randomness (32 bytes from a CSPRNG, as BIP-340
    recommends against side channels); ``None`` signs deterministically, as the spec's
    signature vector does. The sans-IO core takes randomness as an input.
    """
    if len(secret_key) != 32:
        raise UsageError("a secret key is 32 bytes")
    if aux_rand is not None and len(aux_rand) != 32:
        raise UsageError("aux_rand must be 32 bytes")
    try:
        key = PrivateKey(secret_key)
    except ValueError:
        raise UsageError("invalid secret key") from None
    digest = signature_digest(message_name, merkle_root, field_name)
    # libsecp256k1 treats all-zero auxiliary data as no randomness (coincurve's default b""
    # would draw fresh randomness itself).
    return bytes(key.sign_schnorr(digest, aux_rand if aux_rand is not None else bytes(32)))


def verify_merkle_root(
    message_name: str, merkle_root: bytes, signature: bytes, public_key: bytes, field_name: str = "signature",
) -> bool:
    """True when ``signature`` is the BIP-340 signature of the tagged root by ``public_key``
    (33-byte compressed or 32-byte x-only). A malformed key or signature is simply invalid."""
    if len(signature) != 64 or len(public_key) not in (32, 33):
        return False
    try:
        xonly = PublicKeyXOnly(public_key[-32:])
        return bool(xonly.verify(signature, signature_digest(message_name, merkle_root, field_name)))
    except ValueError:
        return False


def public_key_of(secret_key: bytes) -> bytes:
    """The 33-byte compressed public key of a 32-byte secret."""
    try:
        return bytes(PrivateKey(secret_key).public_key.format(compressed=True))
    except ValueError:
        raise UsageError("invalid secret key") from None
