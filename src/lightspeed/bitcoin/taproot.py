"""BIP 340 / BIP 341 keys: tagged hashes, the TapTweak of a key, Schnorr signatures.

A P2TR output commits to an *output key* ``Q = P + t*G``, with ``P`` the x-only internal key
and ``t = H_TapTweak(P || merkle_root)`` (BIP 86 wallets have no script tree: the root is
empty). Spending by the key path means signing with the private key of ``Q``, which is the
internal private key, negated first when ``P`` has an odd y (x-only keys stand for the
even-y point), plus ``t``. Only the key path is implemented: the wallet's BIP 86 coins need
nothing else, and the Lightning scripts are all segwit v0.
"""

from __future__ import annotations

import hashlib

from coincurve import PrivateKey, PublicKeyXOnly

from lightspeed.crypto.secp256k1 import CURVE_ORDER

ZERO_AUX = bytes(32)


def tagged_hash(tag: str, data: bytes) -> bytes:
    """BIP 340: ``sha256(sha256(tag) || sha256(tag) || data)``."""
    tag_digest = hashlib.sha256(tag.encode()).digest()
    return hashlib.sha256(tag_digest + tag_digest + data).digest()


def taptweak(internal_xonly: bytes, merkle_root: bytes = b"") -> bytes:
    """BIP 341's tweak ``t`` for an internal key (and a script tree root; empty for BIP 86)."""
    if len(internal_xonly) != 32 or len(merkle_root) not in (0, 32):
        raise ValueError("internal key must be 32 bytes and the merkle root empty or 32 bytes")
    return tagged_hash("TapTweak", internal_xonly + merkle_root)


def tweaked_pubkey(internal_xonly: bytes, merkle_root: bytes = b"") -> bytes:
    """The x-only output key ``Q`` of a P2TR output."""
    output = PublicKeyXOnly(internal_xonly)
    output.tweak_add(taptweak(internal_xonly, merkle_root))  # in place
    return bytes(output.format())


def tweaked_privkey(internal_privkey: bytes, merkle_root: bytes = b"") -> bytes:
    """The private key of the output key: what signs a key path spend."""
    key = PrivateKey(internal_privkey)
    compressed = key.public_key.format(compressed=True)
    secret = int.from_bytes(internal_privkey, "big")
    if compressed[0] == 3:  # odd y: the x-only key stands for -P, whose secret is n - d
        secret = CURVE_ORDER - secret
    tweak = int.from_bytes(taptweak(compressed[1:], merkle_root), "big")
    if tweak >= CURVE_ORDER:
        raise ValueError("the TapTweak is not below the curve order (probability ~2^-128)")
    tweaked = (secret + tweak) % CURVE_ORDER
    if tweaked == 0:
        raise ValueError("the tweaked private key is zero")
    return tweaked.to_bytes(32, "big")


def schnorr_sign(privkey: bytes, msg: bytes, aux_rand: bytes = ZERO_AUX) -> bytes:
    """BIP 340 signature (64 bytes) of a 32-byte message.

    The auxiliary randomness defaults to zeros: BIP 340 nonces are still derived from the
    secret key and the message (deterministic, as the BIP 341 vectors are); it only adds
    protection against side channels, which a test node does not need to vary.
    """
    return bytes(PrivateKey(privkey).sign_schnorr(msg, aux_rand))


def schnorr_verify(xonly_pubkey: bytes, signature: bytes, msg: bytes) -> bool:
    """BIP 340 verification; False for a malformed key or signature rather than an exception."""
    if len(xonly_pubkey) != 32 or len(signature) != 64 or len(msg) != 32:
        return False
    try:
        return bool(PublicKeyXOnly(xonly_pubkey).verify(signature, msg))
    except (ValueError, TypeError):
        return False


def key_path_witness_signature(internal_privkey: bytes, sighash: bytes, sighash_type: int,
                               merkle_root: bytes = b"") -> bytes:
    """The one witness item of a key path spend: the signature, with the type byte unless DEFAULT."""
    signature = schnorr_sign(tweaked_privkey(internal_privkey, merkle_root), sighash)
    return signature if sighash_type == 0 else signature + bytes([sighash_type])
