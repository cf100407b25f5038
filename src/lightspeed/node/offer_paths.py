"""Which introduction nodes the blinded payment paths of our BOLT 12 invoices go through.

A path whose introduction node is a peer tells a payer "the recipient is one hop behind this
node". Where the graph shows a channel into that peer from a third node, the path starts there
instead (two real hops before us, then a dummy hop): the recipient hides among every node two
hops from the introduction node. One-hop paths follow as a fallback (a payer that is itself the
two-hop introduction node cannot use that path: it never routes to itself), so a payer always
finds one it can use while any channel of ours is ready. Last comes a path we introduce
ourselves (its dummy hops still hide the path's length): the payer that is our only peer can
use no other, and it reveals nothing the invoice does not (``invoice_node_id`` is our node id).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightspeed.node.node import Node

#: Paths per invoice: enough for MPP and a retry over another introduction node, few enough to
#: keep the invoice (an onion message payload) small.
MAX_INVOICE_PATHS = 3


def invoice_path_routes(node: Node, max_paths: int = MAX_INVOICE_PATHS) -> list[list[bytes]]:
    """Node lists, introduction node first, each ending at a peer we have a ready channel with.

    Two-hop lists first (one per peer, through the peer's best-connected other neighbour our
    graph knows a usable policy for), then one-hop lists, then ``[]`` (we introduce it); at most
    ``max_paths``, the last always ``[]``.
    """
    blinded = node.blinded
    peers = list(dict.fromkeys(node._channel_node[c] for c in sorted(node.channels)
                               if node.channel_is_ready(c) and c not in node._closings))
    graph = node.graph
    two_hop: list[list[bytes]] = []
    for peer in peers:
        if blinded._policy(peer, node.node_id) is None:
            continue
        sources = sorted({d.source for d in (graph.incoming.get(peer, []) if graph is not None else [])}
                         - {node.node_id, peer},
                         key=lambda s: (-len(graph.incoming.get(s, [])) if graph is not None else 0, s))
        for source in sources:
            if blinded._policy(source, peer) is not None:
                two_hop.append([source, peer])
                break
    one_hop = [[peer] for peer in peers]
    return [*(two_hop + one_hop)[:max_paths - 1], []]
