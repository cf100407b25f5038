"""What a gossip signature covers, and signing/checking it.

Every gossip signature is over the double-SHA256 of the raw message from the end of
its signature fields to the very end, "including any future fields appended to the
end". So verification works on the bytes as received, never on a re-encoding: a
message from a newer peer with extra trailing fields still verifies.
"""

from __future__ import annotations

from lightspeed.crypto.hashes import sha256d
from lightspeed.crypto.secp256k1 import CURVE_ORDER, HALF_ORDER, sign_compact, verify_compact
from lightspeed.errors import SignatureError

TYPE_LENGTH = 2
# channel_announcement: "the double-SHA256 hash h of the message, beginning at offset 256"
# (of the payload, i.e. after node_signature_1/2 and bitcoin_signature_1/2).
CHANNEL_ANNOUNCEMENT_SIGNED_FROM = TYPE_LENGTH + 4 * 64
# node_announcement, channel_update: "the entire remaining packet after signature".
SINGLE_SIGNATURE_SIGNED_FROM = TYPE_LENGTH + 64


def signed_hash(raw: bytes, start: int) -> bytes:
    """``h``: the double-SHA256 of ``raw`` (type included) from ``start`` to the end."""
    return sha256d(raw[start:])


def sign(privkey: bytes, msg_hash: bytes) -> bytes:
    """A compact low-S signature of ``msg_hash``."""
    return sign_compact(privkey, msg_hash)


def low_s(signature: bytes) -> bytes:
    """The signature with ``s`` replaced by ``n - s`` when high.

    BOLT 7 notes that any relaying node can flip ``s`` to ``-s``; such a signature is
    still the signer's, so it is normalised before libsecp256k1 (which requires low S)
    checks it.
    """
    s = int.from_bytes(signature[32:64], "big")
    if s <= HALF_ORDER:
        return signature
    return signature[:32] + (CURVE_ORDER - s).to_bytes(32, "big")


def check_signature(pubkey: bytes, signature: bytes, msg_hash: bytes, field: str) -> None:
    """Raise SignatureError naming ``field`` unless ``signature`` by ``pubkey`` is valid."""
    if len(signature) != 64 or not verify_compact(pubkey, low_s(signature), msg_hash):
        raise SignatureError(field, "does not verify")
