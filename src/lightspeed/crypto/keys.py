"""BOLT 3 key derivation: per-commitment keys, revocation keys, per-commitment secrets.

Every commitment transaction uses fresh keys, derived from long-lived basepoints
and the commitment's ``per_commitment_point``. Ordinary keys are tweaked
additively (whoever knows the basepoint secret can sign); revocation keys are a
combination of both parties' points, so that the private key exists only once
the owner of the commitment reveals its ``per_commitment_secret``: that
revelation is what makes an old commitment punishable.

All inputs and outputs are raw bytes: 33-byte compressed points, 32-byte
secrets. Bad keys raise :class:`~lightspeed.errors.DecodeError` naming the
argument.
"""

from __future__ import annotations

from coincurve import PrivateKey, PublicKey

from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.secp256k1 import CURVE_ORDER
from lightspeed.errors import DecodeError

MAX_INDEX = (1 << 48) - 1
"""The first per-commitment secret index; BOLT 3 counts down from here."""


def _point(data: bytes, field: str) -> PublicKey:
    if len(data) != 33 or data[0] not in (2, 3):
        raise DecodeError(field, "must be a 33-byte compressed secp256k1 point")
    try:
        return PublicKey(data)
    except (ValueError, TypeError) as exc:
        raise DecodeError(field, "is not a point on secp256k1") from exc


def _scalar(data: bytes, field: str) -> int:
    if len(data) != 32:
        raise DecodeError(field, "must be 32 bytes")
    value = int.from_bytes(data, "big")
    if not 0 < value < CURVE_ORDER:
        raise DecodeError(field, "must be a valid secp256k1 private key (0 < k < n)")
    return value


def _tweak(first: bytes, second: bytes, field: str) -> bytes:
    tweak = sha256(first + second)
    if int.from_bytes(tweak, "big") >= CURVE_ORDER:  # probability ~2^-128
        raise DecodeError(field, "derivation tweak overflows the curve order")
    return tweak


def point_from_secret(secret: bytes) -> bytes:
    """Compressed public key of a 32-byte secret (``secret * G``)."""
    _scalar(secret, "secret")
    return PrivateKey(secret).public_key.format(compressed=True)


def derive_pubkey(basepoint: bytes, per_commitment_point: bytes) -> bytes:
    """``localpubkey``, ``local_htlcpubkey``, ``local_delayedpubkey`` and their remote twins.

    BOLT #3: pubkey = basepoint + SHA256(per_commitment_point || basepoint) * G
    """
    _point(per_commitment_point, "per_commitment_point")
    base = _point(basepoint, "basepoint")
    tweak = _tweak(per_commitment_point, basepoint, "basepoint")
    try:
        return base.add(tweak).format(compressed=True)
    except ValueError as exc:  # result is the point at infinity
        raise DecodeError("basepoint", "derived key is the point at infinity") from exc


def derive_privkey(basepoint_secret: bytes, per_commitment_point: bytes) -> bytes:
    """Private key matching :func:`derive_pubkey`.

    BOLT #3: privkey = basepoint_secret + SHA256(per_commitment_point || basepoint)
    """
    secret = _scalar(basepoint_secret, "basepoint_secret")
    _point(per_commitment_point, "per_commitment_point")
    basepoint = point_from_secret(basepoint_secret)
    tweak = int.from_bytes(_tweak(per_commitment_point, basepoint, "basepoint_secret"), "big")
    value = (secret + tweak) % CURVE_ORDER
    if value == 0:
        raise DecodeError("basepoint_secret", "derived key is zero")
    return value.to_bytes(32, "big")


def derive_revocation_pubkey(revocation_basepoint: bytes, per_commitment_point: bytes) -> bytes:
    """``revocationpubkey``: spendable only with both the basepoint secret and the commitment secret.

    BOLT #3: revocationpubkey = revocation_basepoint * SHA256(revocation_basepoint || per_commitment_point)
    + per_commitment_point * SHA256(per_commitment_point || revocation_basepoint)
    """
    base = _point(revocation_basepoint, "revocation_basepoint")
    pcp = _point(per_commitment_point, "per_commitment_point")
    left = base.multiply(_tweak(revocation_basepoint, per_commitment_point, "revocation_basepoint"))
    right = pcp.multiply(_tweak(per_commitment_point, revocation_basepoint, "per_commitment_point"))
    try:
        return PublicKey.combine_keys([left, right]).format(compressed=True)
    except ValueError as exc:
        raise DecodeError("revocation_basepoint", "derived key is the point at infinity") from exc


def derive_revocation_privkey(
    revocation_basepoint_secret: bytes, per_commitment_secret: bytes
) -> bytes:
    """Private key of :func:`derive_revocation_pubkey`, once the commitment secret is revealed.

    BOLT #3: revocationprivkey = revocation_basepoint_secret * SHA256(revocation_basepoint || per_commitment_point)
    + per_commitment_secret * SHA256(per_commitment_point || revocation_basepoint)
    """
    base_secret = _scalar(revocation_basepoint_secret, "revocation_basepoint_secret")
    commit_secret = _scalar(per_commitment_secret, "per_commitment_secret")
    basepoint = point_from_secret(revocation_basepoint_secret)
    pcp = point_from_secret(per_commitment_secret)
    left = int.from_bytes(_tweak(basepoint, pcp, "revocation_basepoint_secret"), "big")
    right = int.from_bytes(_tweak(pcp, basepoint, "per_commitment_secret"), "big")
    value = (base_secret * left + commit_secret * right) % CURVE_ORDER
    if value == 0:
        raise DecodeError("revocation_basepoint_secret", "derived key is zero")
    return value.to_bytes(32, "big")


def derive_secret(base: bytes, bits: int, index: int) -> bytes:
    """BOLT 3 ``derive_secret``: walk from ``base`` down the low ``bits`` bits of ``index``.

    For each set bit, from bit ``bits - 1`` down to 0: flip that bit of the
    running value, then hash it. 48 hashes at most.
    """
    value = bytearray(base)
    for bit in range(bits - 1, -1, -1):
        if (index >> bit) & 1:
            value[bit // 8] ^= 1 << (bit % 8)
            value[:] = sha256(bytes(value))
    return bytes(value)


def per_commitment_secret(seed: bytes, index: int) -> bytes:
    """The secret for ``index`` (BOLT 3 ``generate_from_seed``).

    BOLT #3: the first secret used MUST be index 281474976710655, and then the
    index decremented. Use :func:`secret_index` to map a commitment number.
    """
    if len(seed) != 32:
        raise DecodeError("seed", "must be 32 bytes")
    if not 0 <= index <= MAX_INDEX:
        raise DecodeError("index", f"{index} is outside 0..2^48-1")
    return derive_secret(seed, 48, index)


def secret_index(commitment_number: int) -> int:
    """Per-commitment secret index of ``commitment_number`` (0 is the first commitment)."""
    if not 0 <= commitment_number <= MAX_INDEX:
        raise DecodeError("commitment_number", f"{commitment_number} is outside 0..2^48-1")
    return MAX_INDEX - commitment_number


def per_commitment_point(seed: bytes, index: int) -> bytes:
    """``per_commitment_point = per_commitment_secret * G`` for ``index``."""
    return point_from_secret(per_commitment_secret(seed, index))
