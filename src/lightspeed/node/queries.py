"""Read-only questions an operator asks a node (``getinfo``, ``peers``, ``channels``, ``pendingchannels``).

Kept out of ``node.py``: they only read the node's state through its public methods, and the API
(:mod:`lightspeed.api.ops_handlers`) turns the answers into JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightspeed.codec.features import NAME_BY_BIT, Features
from lightspeed.invoice import format_short_channel_id
from lightspeed.invoice.fields import parse_short_channel_id
from lightspeed.node.node import Node

DEFAULT_MINIMUM_DEPTH = 3  # what a channel record from before minimum_depth was kept waited for


@dataclass(frozen=True)
class Liquidity:
    """What one open channel can do now: the fields ``lncli listchannels`` shows beside balances."""

    short_channel_id: int | None  # None until the funding transaction is mined
    active: bool  # payments may go out on it now (ready, peer connected, not closing)
    spendable_msat: int  # the largest HTLC we could send now (0 if not active)
    receivable_msat: int  # the largest HTLC the peer could send us now (0 if not active)
    local_reserve_sat: int  # what we must keep in the channel (the peer chose it)
    remote_reserve_sat: int  # what the peer must keep (we chose it)
    private: bool  # not announced to the network (BOLT 7)


@dataclass(frozen=True)
class ChannelCounts:
    active: int
    pending: int  # opening (funding not deep enough), closing, or closed with funds still to sweep
    inactive: int  # open but unusable now (peer offline)


def format_scid(scid: int) -> str:
    """BOLT 7's human-readable short channel id: ``BLOCKxTXxOUTPUT``."""
    return format_short_channel_id(scid)


def parse_scid(text: str) -> int | None:
    """``BLOCKxTXxOUTPUT`` (or LND's integer ``chan_id``) as the 64-bit short channel id; None if it is neither."""
    if text.isdigit():
        value = int(text)
        return value if value < 2**64 else None
    try:
        return parse_short_channel_id(text)
    except ValueError:
        return None


def features_json(features: Features) -> list[dict[str, object]]:
    """Every bit set, with its BOLT 9 name (if known) and whether it is required (even)."""
    return [{"bit": bit, "name": NAME_BY_BIT.get(bit & ~1), "required": bit % 2 == 0}
            for bit in sorted(features.bits)]


def is_active(node: Node, channel_id: bytes) -> bool:
    peer_id = node.channel_peer_id(channel_id)
    return (channel_id not in node.closed_channels and node.channel_is_ready(channel_id)
            and not node.channel_is_closing(channel_id) and peer_id is not None and node.peer(peer_id) is not None)


def liquidity(node: Node, channel_id: bytes) -> Liquidity:
    channel = node.channels[channel_id]
    config = channel.config
    active = is_active(node, channel_id)
    return Liquidity(node.short_channel_id(channel_id), active, channel.sendable_msat() if active else 0,
                     channel.receivable_msat() if active else 0, config.reserve_for_local_sat,
                     config.reserve_from_remote_sat, not config.announce_channel)


def funding_confirmed(node: Node, channel_id: bytes) -> bool:
    """The funding has the depth both sides wait for (the channel is open, usable or not)."""
    channel = node.channels[channel_id]
    position = node.chain.tx_position(channel.config.funding_txid)
    if position is None:
        return False
    depth = node.chain.tip()[0] - position[0] + 1
    return depth >= (channel.config.minimum_depth or DEFAULT_MINIMUM_DEPTH)


def channel_counts(node: Node) -> ChannelCounts:
    active = pending = inactive = 0
    for cid in node.channels:
        if cid in node.closed_channels:
            continue
        if is_active(node, cid):
            active += 1
        elif node.channel_is_closing(cid) or not funding_confirmed(node, cid):
            pending += 1
        else:
            inactive += 1
    sweeping = {s.channel_id for s in node.pending_sweeps()} - set(node.channels)
    return ChannelCounts(active, pending + len(sweeping), inactive)


def is_synced(node: Node) -> bool:
    """Every block up to the chain's tip has been handled (closes seen, claims broadcast)."""
    return node.synced_tip == node.chain.tip()
