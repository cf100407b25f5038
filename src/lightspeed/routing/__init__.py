"""Routing: the channel graph, path finding, and loading real network snapshots."""

from lightspeed.routing.graph import ChannelGraph, DirectedChannel, Policy
from lightspeed.routing.lnd_json import graph_from_describegraph
from lightspeed.routing.pathfind import MAX_HOPS, NoRouteError, Route, RouteHop, find_route

__all__ = [
    "MAX_HOPS",
    "ChannelGraph",
    "DirectedChannel",
    "NoRouteError",
    "Policy",
    "Route",
    "RouteHop",
    "find_route",
    "graph_from_describegraph",
]
