"""Helpers for gossip tests: numbered nodes with real keys, funding outputs, signed messages.

Node ``i`` has node key ``i`` and funding key ``1000 + i``. :class:`Utxos` is an
in-memory UTXO set answering the :class:`~lightspeed.gossip.FundingLookup` question
the way a chain backend would (script and amount of an unspent output, else None).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lightspeed.bitcoin.network import REGTEST
from lightspeed.bitcoin.script import p2wsh_script
from lightspeed.channel.scripts import funding_script
from lightspeed.codec.messages import encode_message
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.gossip import (
    FundingOutput,
    create_channel_announcement,
    create_channel_update,
    create_node_announcement,
    direction_of,
)

CHAIN = REGTEST.chain_hash


def node_key(i: int) -> bytes:
    return i.to_bytes(32, "big")


def funding_key(i: int) -> bytes:
    return (1000 + i).to_bytes(32, "big")


def node_id(i: int) -> bytes:
    return pubkey_from_privkey(node_key(i))


def scid(block: int, tx: int = 1, out: int = 0) -> int:
    return block << 40 | tx << 16 | out


@dataclass
class Utxos:
    """Unspent funding outputs by short_channel_id."""

    outputs: dict[int, FundingOutput] = field(default_factory=dict)

    def __call__(self, short_channel_id: int) -> FundingOutput | None:
        return self.outputs.get(short_channel_id)

    def fund(self, short_channel_id: int, a: int, b: int, amount_sat: int = 1_000_000) -> None:
        script = p2wsh_script(
            funding_script(pubkey_from_privkey(funding_key(a)), pubkey_from_privkey(funding_key(b)))
        )
        self.outputs[short_channel_id] = FundingOutput(script, amount_sat)


def announcement(
    short_channel_id: int, a: int, b: int, features: bytes = b"", chain: bytes = CHAIN
) -> bytes:
    message = create_channel_announcement(
        chain_hash=chain,
        short_channel_id=short_channel_id,
        node_privkey_a=node_key(a),
        bitcoin_privkey_a=funding_key(a),
        node_privkey_b=node_key(b),
        bitcoin_privkey_b=funding_key(b),
        features=features,
    )
    return encode_message(message)


POLICY: dict[str, Any] = {
    "cltv_expiry_delta": 40,
    "htlc_minimum_msat": 1_000,
    "htlc_maximum_msat": 500_000_000,
    "fee_base_msat": 1_000,
    "fee_proportional_millionths": 100,
}


def update(
    short_channel_id: int, a: int, b: int, timestamp: int, chain: bytes = CHAIN, **policy: Any
) -> bytes:
    """``a``'s channel_update for its direction of the channel to ``b``."""
    terms = {**POLICY, **policy}
    message = create_channel_update(
        node_key(a),
        chain_hash=chain,
        short_channel_id=short_channel_id,
        timestamp=timestamp,
        direction=direction_of(node_id(a), node_id(b)),
        **terms,
    )
    return encode_message(message)


def node_announcement(a: int, timestamp: int, **kw: Any) -> bytes:
    return encode_message(create_node_announcement(node_key(a), timestamp=timestamp, **kw))
