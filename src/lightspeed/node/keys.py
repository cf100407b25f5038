"""Channel secrets derived from the node key, so the store keeps an index and no private key.

Each channel's six secrets are ``HMAC-SHA256(channel_seed, "lightspeed/channel/" || index ||
purpose)`` with ``channel_seed = HMAC-SHA256(node_privkey, "lightspeed/channel keys")``. The
node key in the data directory is then the only secret to back up beside the store.

An index must never be handed out twice for one node key: the first peer holds the old
revocation secrets of a channel, and a second channel on the same keys would let it take
that channel's funds. A store counter alone is not enough (a lost or wiped ``node.sqlite``
restarts it at 0), so an index is ``random 128 bits (top bit set) || 64-bit store counter``:
unique within one store by the counter, and across stores (a restore, a wiped file) by the
random part. Indexes below 2^64 are the counter-only ones of earlier versions; they still
derive exactly as before.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from lightspeed.channel.state import LocalSecrets
from lightspeed.crypto.secp256k1 import CURVE_ORDER
from lightspeed.errors import UsageError

_PURPOSES = (b"funding", b"revocation", b"payment", b"delayed_payment", b"htlc", b"per_commitment_seed")


def channel_seed(node_privkey: bytes) -> bytes:
    return hmac.digest(node_privkey, b"lightspeed/channel keys", hashlib.sha256)


_COUNTER_BITS = 64


def new_key_index(counter: int) -> int:
    """A key index for the store's ``counter``: never the same twice, even after the store is lost."""
    if not 0 <= counter < 1 << _COUNTER_BITS:
        raise UsageError(f"key counter {counter} is out of range")
    return ((secrets.randbits(127) | 1 << 127) << _COUNTER_BITS) | counter


def derive_channel_secrets(seed: bytes, index: int) -> LocalSecrets:
    """The secrets of channel number ``index``; the same seed and index always give the same."""
    encoded = index.to_bytes(8 if index < 1 << _COUNTER_BITS else 24, "big")  # 8 bytes: earlier versions
    values = [hmac.digest(seed, b"lightspeed/channel/" + encoded + p, hashlib.sha256) for p in _PURPOSES]
    for purpose, value in zip(_PURPOSES[:5], values[:5], strict=True):
        if not 0 < int.from_bytes(value, "big") < CURVE_ORDER:  # about 2^-128: take the next index
            raise UsageError(f"channel key index {index}: {purpose.decode()} secret is not a valid key")
    return LocalSecrets(*values)
