"""Channel secrets derived from the node key, so the store keeps an index and no private key.

Each channel gets a fresh index from the store (allocated in a committed transaction,
so a crash never hands one out twice) and its six secrets are
``HMAC-SHA256(channel_seed, "lightspeed/channel/" || index || purpose)`` with
``channel_seed = HMAC-SHA256(node_privkey, "lightspeed/channel keys")``. The node
key in the data directory is then the only secret to back up beside the store.
"""

from __future__ import annotations

import hashlib
import hmac

from lightspeed.channel.state import LocalSecrets
from lightspeed.crypto.secp256k1 import CURVE_ORDER
from lightspeed.errors import UsageError

_PURPOSES = (b"funding", b"revocation", b"payment", b"delayed_payment", b"htlc", b"per_commitment_seed")


def channel_seed(node_privkey: bytes) -> bytes:
    return hmac.digest(node_privkey, b"lightspeed/channel keys", hashlib.sha256)


def derive_channel_secrets(seed: bytes, index: int) -> LocalSecrets:
    """The secrets of channel number ``index``; the same seed and index always give the same."""
    values = [hmac.digest(seed, b"lightspeed/channel/" + index.to_bytes(8, "big") + p, hashlib.sha256)
              for p in _PURPOSES]
    for purpose, value in zip(_PURPOSES[:5], values[:5], strict=True):
        if not 0 < int.from_bytes(value, "big") < CURVE_ORDER:  # about 2^-128: take the next index
            raise UsageError(f"channel key index {index}: {purpose.decode()} secret is not a valid key")
    return LocalSecrets(*values)
