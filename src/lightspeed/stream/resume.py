"""Who may resume a stream: the buyer, proven by a signature with a key it gave at open.

A ``stream_id`` alone must not authorise a ``resume``: it travels in every position message and
in the statement, and whoever resumed a stream would be granted what the buyer paid ahead. So
the buyer makes a fresh key pair per stream and sends its x-only public key with ``open``
(``resume_key``); to resume, on a new connection, it signs (BIP-340) the tagged hash of the
stream id and that connection's nonce: the 16 random bytes the seller's ``tariff`` greeting
carries as ``stream_id`` (a new one per connection). The nonce makes a signature good for one
connection only: one seen on the wire, or kept by a seller process, cannot be replayed to
another. A fresh key per stream links nothing to the buyer's other streams or node.

Chosen over a secret revealed at resume (a hash preimage): a revealed secret is spent, so each
resume would need a new one, and any process that saw it could use it once more; a signature
is repeatable and proves possession without handing anything over.
"""

from __future__ import annotations

import hashlib

from coincurve import PrivateKey, PublicKeyXOnly

RESUME_TAG = b"lightspeed/stream/resume/v1"


def resume_digest(stream_id: bytes, nonce: bytes) -> bytes:
    tag = hashlib.sha256(RESUME_TAG).digest()
    return hashlib.sha256(tag + tag + stream_id + nonce).digest()


def resume_key(secret: bytes) -> bytes:
    """The x-only public key (32 bytes) to send with ``open``."""
    return PrivateKey(secret).public_key_xonly.format()


def sign_resume(secret: bytes, stream_id: bytes, nonce: bytes, aux_rand: bytes) -> bytes:
    return bytes(PrivateKey(secret).sign_schnorr(resume_digest(stream_id, nonce), aux_rand))


def resume_signed(key: bytes, stream_id: bytes, nonce: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``key``'s over this stream and this connection's nonce."""
    try:
        return len(signature) == 64 and bool(PublicKeyXOnly(key).verify(signature, resume_digest(stream_id, nonce)))
    except ValueError:
        return False
