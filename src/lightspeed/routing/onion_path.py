"""Paths for onion messages: the fewest hops over nodes that relay them.

Onion messages need no liquidity and pay no fees, so any announced channel joins two nodes
whichever direction its policies allow; what matters is that every node on the way forwards
onion messages (``option_onion_messages`` in its ``node_announcement``, BOLT 9) and that the
first hop is a peer we are connected to. Breadth-first search gives the shortest such path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping

from lightspeed.routing.graph import ChannelGraph

#: A longer path is refused: every hop adds latency and another node that may drop the message.
MAX_ONION_MESSAGE_HOPS = 20


def graph_neighbours(graph: ChannelGraph) -> dict[bytes, set[bytes]]:
    """Each node's channel peers, both directions of every channel the graph holds."""
    adjacency: dict[bytes, set[bytes]] = {}
    for target, channels in graph.incoming.items():
        for channel in channels:
            adjacency.setdefault(target, set()).add(channel.source)
            adjacency.setdefault(channel.source, set()).add(target)
    return adjacency


def find_onion_message_path(
    neighbours: Mapping[bytes, Iterable[bytes]],
    first_hops: Iterable[bytes],
    target: bytes,
    relays: Callable[[bytes], bool],
    max_hops: int = MAX_ONION_MESSAGE_HOPS,
) -> list[bytes] | None:
    """The node ids from a first hop to ``target`` (both included), or None if there is none.

    ``first_hops`` are the connected peers that accept onion messages; ``relays(node_id)`` says
    whether an intermediate node forwards them (the target itself is not asked).
    """
    parent: dict[bytes, bytes | None] = {}
    queue: deque[tuple[bytes, int]] = deque()
    for hop in first_hops:
        if hop not in parent:
            parent[hop] = None
            queue.append((hop, 1))
    while queue:
        node, depth = queue.popleft()
        if node == target:
            path = [node]
            while (previous := parent[path[-1]]) is not None:
                path.append(previous)
            return path[::-1]
        if depth >= max_hops or not relays(node):
            continue
        for following in sorted(neighbours.get(node, ())):  # sorted: the same path every time
            if following not in parent:
                parent[following] = node
                queue.append((following, depth + 1))
    return None
