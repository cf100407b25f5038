"""Routing: the channel graph, path finding, learned liquidity, and loading real network snapshots
(LND describegraph JSON, and a compact cached form of it that reloads faster)."""

from lightspeed.routing.graph import (
    ChannelGraph,
    DirectedChannel,
    Policy,
    SearchIndex,
    directed_key,
)
from lightspeed.routing.lnd_json import graph_from_describegraph
from lightspeed.routing.pathfind import (
    BOUND_NODES,
    MAX_HOPS,
    NoRouteError,
    Route,
    RouteHop,
    find_route,
)
from lightspeed.routing.scorer import (
    Prior,
    ProbabilisticScorer,
    ScoreView,
    ScoringParameters,
    success_probability,
)
from lightspeed.routing.snapshot import StaleSnapshot

__all__ = [
    "BOUND_NODES",
    "MAX_HOPS",
    "ChannelGraph",
    "DirectedChannel",
    "NoRouteError",
    "Policy",
    "Prior",
    "ProbabilisticScorer",
    "Route",
    "RouteHop",
    "ScoreView",
    "ScoringParameters",
    "SearchIndex",
    "StaleSnapshot",
    "directed_key",
    "find_route",
    "graph_from_describegraph",
    "success_probability",
]
