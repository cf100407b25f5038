"""Cryptographic building blocks: hashes, secp256k1 helpers, BOLT 3 key derivation."""

from lightspeed.crypto.hashes import hash160, ripemd160, sha256, sha256d

__all__ = ["hash160", "ripemd160", "sha256", "sha256d"]
