"""Cryptographic building blocks: hashes, secp256k1 helpers, BOLT 3 key derivation."""

from lightspeed.crypto.hashes import hash160, ripemd160, sha256, sha256d
from lightspeed.crypto.keys import (
    derive_privkey,
    derive_pubkey,
    derive_revocation_privkey,
    derive_revocation_pubkey,
    per_commitment_point,
    per_commitment_secret,
    point_from_secret,
    secret_index,
)
from lightspeed.crypto.shachain import ShachainError, ShachainStore

__all__ = [
    "ShachainError",
    "ShachainStore",
    "derive_privkey",
    "derive_pubkey",
    "derive_revocation_privkey",
    "derive_revocation_pubkey",
    "hash160",
    "per_commitment_point",
    "per_commitment_secret",
    "point_from_secret",
    "ripemd160",
    "secret_index",
    "sha256",
    "sha256d",
]
