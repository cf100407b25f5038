"""Hash functions used across the protocol."""

from __future__ import annotations

import hashlib


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sha256d(data: bytes) -> bytes:
    """Bitcoin's double SHA-256 (txids, block hashes, base58 checksums)."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def ripemd160(data: bytes) -> bytes:
    return hashlib.new("ripemd160", data).digest()


def hash160(data: bytes) -> bytes:
    """RIPEMD160(SHA256(data)): P2PKH/P2SH/P2WPKH key and script hashes."""
    return ripemd160(hashlib.sha256(data).digest())
