"""Blinded payment paths the payer itself introduces: start them at the next hop instead.

A payee picks introduction nodes two hops away without knowing who will pay; when the payer is
one of them (it is the only other neighbour of the payee's peers), every such path starts at
the payer, which never routes to itself. Like the onion messenger for messages, the payer opens
its own hop (``unblind_hop``: the ``short_channel_id`` to the next node and the next
``path_key``) and pays the rest of the path, introduced by the next node. Without this a big
offer can be left with a single usable path and no way to split (issue 13's MPP). A path
whose introduction node is named by a short channel id (``sciddir``) is resolved first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from lightspeed.errors import DecodeError, UsageError
from lightspeed.offers.tlv_fields import BlindedPayInfo
from lightspeed.onion.blinding import BlindedPath, PaymentRelay, unblind_hop

if TYPE_CHECKING:
    from lightspeed.node.node import Node


def _past_our_hop(node: Node, path: BlindedPath, info: BlindedPayInfo) -> tuple[BlindedPath, BlindedPayInfo] | None:
    """The path after our own hop(s), without our fee and delta; None if it ends at us or is unreadable."""
    while path.first_node_id == node.node_id:
        if len(path.hops) == 1:
            return None  # the path ends at us: nothing to pay
        try:
            hop = unblind_hop(node.privkey, path.first_path_key, path.hops[0].encrypted_recipient_data)
        except DecodeError:
            return None  # not made for us after all: the payer cannot use it
        next_id = hop.data.next_node_id
        if next_id is None and hop.data.short_channel_id is not None:
            channel_id = node._by_scid.get(hop.data.short_channel_id)
            next_id = None if channel_id is None else node._channel_node.get(channel_id)
        if next_id is None:
            return None
        if hop.data.payment_relay is not None:
            info = _without_hop(info, hop.data.payment_relay)
        path = BlindedPath(next_id, hop.next_path_key, path.hops[1:])
    return path, info


def _without_hop(info: BlindedPayInfo, relay: PaymentRelay) -> BlindedPayInfo:
    """The payinfo of the path after its first hop, recovered from the aggregate and that hop's relay.

    BOLT #4 aggregates from the recipient outwards, rounding up: ``base_0 = ceil((fb*1e6 +
    base_1*(1e6+fp)) / 1e6)``, ``prop_0 = ceil(prop_1 + fp + prop_1*fp/1e6)``, ``delta_0 =
    delta_1 + cltv_expiry_delta``. So ``base_1 <= (base_0 - fb)*1e6 / (1e6+fp)`` and
    ``prop_1 <= (prop_0 - fp)*1e6 / (1e6+fp)``, each less than one unit above (the round-up added
    less than one unit, divided again by ``(1e6+fp)/1e6 >= 1``): the floors are the true values.
    """
    scale = 1_000_000 + relay.fee_proportional_millionths
    base = max(0, (info.fee_base_msat - relay.fee_base_msat) * 1_000_000 // scale)
    prop = max(0, (info.fee_proportional_millionths - relay.fee_proportional_millionths) * 1_000_000 // scale)
    delta = max(0, info.cltv_expiry_delta - relay.cltv_expiry_delta)
    return replace(info, fee_base_msat=base, fee_proportional_millionths=prop, cltv_expiry_delta=delta)


def skip_own_hops(node: Node, paths: Sequence[tuple[BlindedPath, BlindedPayInfo]]
                  ) -> list[tuple[BlindedPath, BlindedPayInfo]]:
    """``paths`` with every path we introduce started at the node after us, and an introduction node
    named by ``sciddir`` (BOLT 7 ``sciddir_or_pubkey``) replaced by its node id (unusable ones left out)."""
    out = []
    for path, info in paths:
        if len(path.first_node_id) == 9:
            try:
                path = node.onion_messages.resolve_sciddir(path)
            except UsageError:
                continue  # a channel we do not know: we cannot find its introduction node
        step = _past_our_hop(node, path, info) if path.first_node_id == node.node_id else (path, info)
        if step is not None:
            out.append(step)
    return out
