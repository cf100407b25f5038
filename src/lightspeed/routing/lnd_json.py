"""Load a channel graph from LND's ``lncli describegraph`` JSON.

That format is what Lightning tools exchange for snapshots of the public
network. lncli prints 64-bit numbers as JSON strings, so every number may be a
string; policies may be null (never announced), and such directions are unusable.
"""

from __future__ import annotations

from typing import Any

from lightspeed.errors import DecodeError
from lightspeed.routing.graph import ChannelGraph, Policy, collector_paused


def _number(value: Any, field: str, default: int | None = None) -> int:
    if value is None or value == "":
        if default is None:
            raise DecodeError(field, "missing")
        return default
    if isinstance(value, bool):
        raise DecodeError(field, "is a boolean, expected a number")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise DecodeError(field, f"{value!r} is not a non-negative integer")


def _node_id(value: Any, field: str) -> bytes:
    try:
        node = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        node = b""
    if len(node) != 33 or node[0] not in (2, 3):
        raise DecodeError(field, f"{value!r} is not a 33-byte compressed public key in hex")
    return node


def _policy(raw: Any, field: str) -> Policy | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise DecodeError(field, "must be an object or null")
    max_htlc = _number(raw.get("max_htlc_msat"), f"{field}.max_htlc_msat", 0)
    return Policy(
        fee_base_msat=_number(raw.get("fee_base_msat"), f"{field}.fee_base_msat", 0),
        fee_proportional_millionths=_number(raw.get("fee_rate_milli_msat"), f"{field}.fee_rate_milli_msat", 0),
        cltv_expiry_delta=_number(raw.get("time_lock_delta"), f"{field}.time_lock_delta", 0),
        htlc_minimum_msat=_number(raw.get("min_htlc"), f"{field}.min_htlc", 0),
        htlc_maximum_msat=max_htlc or None,  # 0: not announced
        disabled=bool(raw.get("disabled", False)),
    )


def graph_from_describegraph(data: Any) -> ChannelGraph:
    """Build a :class:`ChannelGraph`; raises DecodeError naming the bad entry."""
    with collector_paused():
        return _build(data)


def _build(data: Any) -> ChannelGraph:
    if not isinstance(data, dict):
        raise DecodeError("graph", "expected a JSON object with nodes and edges")
    graph = ChannelGraph()
    for i, node in enumerate(data.get("nodes") or []):
        if not isinstance(node, dict):
            raise DecodeError(f"nodes[{i}]", "must be an object")
        graph.add_node(_node_id(node.get("pub_key"), f"nodes[{i}].pub_key"))
    edges = data.get("edges") or []
    if not isinstance(edges, list):
        raise DecodeError("edges", "must be a list")
    for i, edge in enumerate(edges):
        where = f"edges[{i}]"
        if not isinstance(edge, dict):
            raise DecodeError(where, "must be an object")
        scid = _number(edge.get("channel_id"), f"{where}.channel_id")
        if scid >= 1 << 64:
            raise DecodeError(f"{where}.channel_id", "does not fit in 64 bits")
        capacity = edge.get("capacity")
        graph.add_channel(
            scid,
            _node_id(edge.get("node1_pub"), f"{where}.node1_pub"),
            _node_id(edge.get("node2_pub"), f"{where}.node2_pub"),
            None if capacity in (None, "", "0", 0) else _number(capacity, f"{where}.capacity"),
            _policy(edge.get("node1_policy"), f"{where}.node1_policy"),
            _policy(edge.get("node2_policy"), f"{where}.node2_policy"),
        )
    graph.compiled()  # a snapshot is searched many times: compile it as part of loading
    return graph
