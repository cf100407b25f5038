"""Channel secrets derived from the node key and a random per-channel id stored with the channel.

Why not a counter: the secrets of channel *n* were once derived from index *n* handed out
by a counter in the store. A node restored with its key but an empty, missing or old store
counted from 0 again, so its next channel reused the keys of an earlier one, whose old
revocation secrets that channel's peer holds: the new peer could be robbed by anyone who
learns them. An id that only the store remembers cannot be made unique by the store.

The scheme: each channel draws a fresh 255-bit random id when it is opened
(:func:`new_key_id`), kept in the channel's record (``key_index``, as an integer; no
secret is stored), and its six secrets are
``HMAC-SHA256(channel_seed, "lightspeed/channel-id/" || id (32 bytes) || purpose)`` with
``channel_seed = HMAC-SHA256(node_privkey, "lightspeed/channel keys")``. Two channels
collide only if two random draws do (probability about n^2 / 2^256): whatever the store
forgot, a new channel never gets an old channel's keys. The node key in the data
directory stays the only secret to back up beside the store.

Records written before this (a counter index, below 2^64) still load: their secrets
are derived the old way, ``HMAC-SHA256(channel_seed, "lightspeed/channel/" || index (8 bytes)
|| purpose)``. New ids are at least 2^255, so the two ranges never meet.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from lightspeed.channel.state import LocalSecrets
from lightspeed.crypto.secp256k1 import CURVE_ORDER
from lightspeed.errors import UsageError

_PURPOSES = (b"funding", b"revocation", b"payment", b"delayed_payment", b"htlc", b"per_commitment_seed")
LEGACY_INDEX_LIMIT = 1 << 64  # counter indices of records written by earlier versions are below this
_RANDOM_ID_BIT = 1 << 255  # set in every random id: the ranges never overlap


def channel_seed(node_privkey: bytes) -> bytes:
    return hmac.digest(node_privkey, b"lightspeed/channel keys", hashlib.sha256)


def new_key_id() -> int:
    """A fresh channel key id: 255 random bits (from the OS), never one of an earlier channel."""
    return _RANDOM_ID_BIT | secrets.randbits(255)


def derive_channel_secrets(seed: bytes, key_id: int) -> LocalSecrets:
    """The secrets of the channel with ``key_id``; the same seed and id always give the same."""
    if key_id < 0 or key_id >= 1 << 256:
        raise UsageError(f"channel key id {key_id}: out of range")
    if key_id < LEGACY_INDEX_LIMIT:  # a counter index (records of earlier versions)
        prefix = b"lightspeed/channel/" + key_id.to_bytes(8, "big")
    else:
        prefix = b"lightspeed/channel-id/" + key_id.to_bytes(32, "big")
    values = [hmac.digest(seed, prefix + p, hashlib.sha256) for p in _PURPOSES]
    for purpose, value in zip(_PURPOSES[:5], values[:5], strict=True):
        if not 0 < int.from_bytes(value, "big") < CURVE_ORDER:  # about 2^-128: draw another id
            raise UsageError(f"channel key id {key_id}: {purpose.decode()} secret is not a valid key")
    return LocalSecrets(*values)
