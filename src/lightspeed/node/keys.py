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

Records written before this still load, each range the way it was written: a counter
index (below 2^64) as ``HMAC-SHA256(channel_seed, "lightspeed/channel/" || index (8 bytes)
|| purpose)``, and the interim ``random 128 bits || counter`` index (from 2^191 up to 2^192)
the same with 24 bytes. New ids are at least 2^255, so the ranges never meet.

Where the secrets come from is pluggable: the node asks a :class:`ChannelKeys` provider for
the secrets of a key id (LDK's ``SignerProvider``, reduced to what the node needs), at an
opening and again for every stored channel after a restart. :class:`DerivedChannelKeys`, the
default, is the scheme above. :class:`FixedChannelKeys` gives every channel the same given
secrets: conformance suites need that (lnprototest computes and checks our commitment
signatures from keys it knows in advance, as Core Lightning's ``--dev-force-channel-secrets``);
anywhere else it would let anyone who knows the keys take the funds, so it refuses every
network but regtest.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Protocol

from lightspeed.bitcoin.network import REGTEST, Network
from lightspeed.channel.state import LocalSecrets
from lightspeed.crypto.secp256k1 import CURVE_ORDER
from lightspeed.errors import UsageError

_PURPOSES = (b"funding", b"revocation", b"payment", b"delayed_payment", b"htlc", b"per_commitment_seed")
_KEY_NAMES = ("funding", "revocation", "payment", "delayed_payment", "htlc")
LEGACY_INDEX_LIMIT = 1 << 64  # counter indices of records written by earlier versions are below this
_INTERIM_INDEXES = range(1 << 191, 1 << 192)  # random 128 bits (top bit set) || 64-bit counter, briefly used
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
    elif key_id in _INTERIM_INDEXES:
        prefix = b"lightspeed/channel/" + key_id.to_bytes(24, "big")
    elif key_id >= _RANDOM_ID_BIT:
        prefix = b"lightspeed/channel-id/" + key_id.to_bytes(32, "big")
    else:  # never written by any version: refuse rather than derive keys nobody agreed on
        raise UsageError(f"channel key id {key_id}: not an id any version of Lightspeed writes")
    values = [hmac.digest(seed, prefix + p, hashlib.sha256) for p in _PURPOSES]
    for purpose, value in zip(_PURPOSES[:5], values[:5], strict=True):
        if not 0 < int.from_bytes(value, "big") < CURVE_ORDER:  # about 2^-128: draw another id
            raise UsageError(f"channel key id {key_id}: {purpose.decode()} secret is not a valid key")
    return LocalSecrets(*values)


class ChannelKeys(Protocol):
    """A source of channel secrets (see the module docstring)."""

    def channel_secrets(self, key_id: int) -> LocalSecrets:
        """The secrets of the channel with ``key_id``: always the same for one id.

        UsageError if this id gives no valid key (the node then draws another id).
        """
        ...

    def check_network(self, network: Network) -> None:
        """UsageError if this source must not be used on ``network``."""
        ...


@dataclass(frozen=True)
class DerivedChannelKeys:
    """Secrets derived from a seed and the channel's key id (the node's default)."""

    seed: bytes

    @classmethod
    def from_node_key(cls, node_privkey: bytes) -> DerivedChannelKeys:
        return cls(channel_seed(node_privkey))

    def channel_secrets(self, key_id: int) -> LocalSecrets:
        return derive_channel_secrets(self.seed, key_id)

    def check_network(self, network: Network) -> None:
        return None


@dataclass(frozen=True)
class FixedChannelKeys:
    """The same secrets for every channel: for conformance tests, and refused off regtest."""

    secrets: LocalSecrets

    def __post_init__(self) -> None:
        for name in _KEY_NAMES:
            value = getattr(self.secrets, name)
            if len(value) != 32 or not 0 < int.from_bytes(value, "big") < CURVE_ORDER:
                raise UsageError(f"{name} secret: not a valid private key (32 bytes, 1 to n-1)")
        if len(self.secrets.per_commitment_seed) != 32:
            raise UsageError("per_commitment_seed: must be 32 bytes")

    def channel_secrets(self, key_id: int) -> LocalSecrets:
        return self.secrets

    def check_network(self, network: Network) -> None:
        if network != REGTEST:
            raise UsageError(f"fixed channel keys are for regtest only, not {network.name}: "
                             "anyone who knows them could take the channel's funds")
