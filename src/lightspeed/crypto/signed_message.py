"""Signed messages as LND (``signmessage``) and Core Lightning (``signmessage``/``checkmessage``) make them.

The bLIP "General-purpose Lightning signatures": a recoverable ECDSA signature over
``sha256(sha256("Lightning Signed Message:" || message))``, 65 bytes (``31 + recovery id``, then
``r || s``), shown in z-base-32. Verifying recovers the signer's node id from the signature.
"""

from __future__ import annotations

from lightspeed.codec import zbase32
from lightspeed.crypto.hashes import sha256d
from lightspeed.crypto.secp256k1 import recover_pubkey, sign_recoverable
from lightspeed.errors import DecodeError

PREFIX = b"Lightning Signed Message:"
HEADER = 31  # 27 + 4 (compressed public key), as in Bitcoin's signed messages


def message_hash(message: bytes) -> bytes:
    return sha256d(PREFIX + message)


def sign_message(privkey: bytes, message: bytes) -> str:
    """The z-base-32 signature of ``message`` by ``privkey``."""
    signature, recovery_id = sign_recoverable(privkey, message_hash(message))
    return zbase32.encode(bytes([HEADER + recovery_id]) + signature)


def recover_signer(message: bytes, signature: str, field: str = "signature") -> bytes:
    """The compressed public key that signed ``message``; DecodeError(field) if the signature is malformed."""
    raw = zbase32.decode(signature, field)
    if len(raw) != 65:
        raise DecodeError(field, f"must encode 65 bytes, not {len(raw)}")
    # LND accepts the header with or without the compressed-key flag (27..34); so do we.
    recovery_id = (raw[0] - 27) & 3 if 27 <= raw[0] <= 34 else None
    if recovery_id is None:
        raise DecodeError(field, f"has recovery byte {raw[0]}, not 27-34")
    try:
        return recover_pubkey(raw[1:], recovery_id, message_hash(message))
    except (ValueError, TypeError):
        raise DecodeError(field, "does not recover to a public key for this message") from None
