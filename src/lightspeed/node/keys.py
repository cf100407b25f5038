"""Where a channel's secrets come from: a pluggable provider, derived from the node key by default.

The node asks a :class:`ChannelKeys` provider for the secrets of channel number ``index``
(LDK's ``SignerProvider``, reduced to what the node needs); the index is allocated by the
store in a committed transaction, and a restart asks the provider again for the secrets of
every stored channel.

The default, :class:`DerivedChannelKeys`, keeps no private key in the store: each channel's
six secrets are ``HMAC-SHA256(channel_seed, "lightspeed/channel/" || index || purpose)`` with
``channel_seed = HMAC-SHA256(node_privkey, "lightspeed/channel keys")``. The node key in the
data directory is then the only secret to back up beside the store.

An index must never be handed out twice for one node key: the first peer holds the old
revocation secrets of a channel, and a second channel on the same keys would let it take
that channel's funds. A store counter alone is not enough (a lost or wiped ``node.sqlite``
restarts it at 0), so an index is ``random 128 bits (top bit set) || 64-bit store counter``:
unique within one store by the counter, and across stores (a restore, a wiped file) by the
random part. Indexes below 2^64 are the counter-only ones of earlier versions; they still
derive exactly as before.

:class:`FixedChannelKeys` gives every channel the same given secrets. Conformance suites
need that (lnprototest computes and checks our commitment signatures from keys it knows in
advance, as Core Lightning's ``--dev-force-channel-secrets``); anywhere else it would let
anyone who knows the keys take the funds, so it refuses every network but regtest.
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


class ChannelKeys(Protocol):
    """A source of channel secrets (see the module docstring)."""

    def channel_secrets(self, index: int) -> LocalSecrets:
        """The secrets of channel number ``index``: always the same for one index.

        UsageError if this index gives no valid key (the node then takes the next index).
        """
        ...

    def check_network(self, network: Network) -> None:
        """UsageError if this source must not be used on ``network``."""
        ...


@dataclass(frozen=True)
class DerivedChannelKeys:
    """Secrets derived from a seed and the channel index (the node's default)."""

    seed: bytes

    @classmethod
    def from_node_key(cls, node_privkey: bytes) -> DerivedChannelKeys:
        return cls(channel_seed(node_privkey))

    def channel_secrets(self, index: int) -> LocalSecrets:
        return derive_channel_secrets(self.seed, index)

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

    def channel_secrets(self, index: int) -> LocalSecrets:
        return self.secrets

    def check_network(self, network: Network) -> None:
        if network != REGTEST:
            raise UsageError(f"fixed channel keys are for regtest only, not {network.name}: "
                             "anyone who knows them could take the channel's funds")
