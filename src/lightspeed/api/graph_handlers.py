"""REST handlers over the node's network graph and its forwarding fees (:mod:`lightspeed.node.graph_queries`)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from lightspeed.api.handlers import ApiContext, ApiError, _hex_param
from lightspeed.channel.limits import advertised_htlc_range
from lightspeed.errors import DecodeError, UsageError
from lightspeed.invoice import format_short_channel_id
from lightspeed.node import graph_queries, queries
from lightspeed.payments.forward import ForwardingPolicy
from lightspeed.routing import NoRouteError


def _policy_json(policy: ForwardingPolicy) -> dict[str, Any]:
    return {"fee_base_msat": policy.fee_base_msat, "fee_ppm": policy.fee_proportional_millionths,
            "cltv_delta": policy.cltv_expiry_delta, "htlc_minimum_msat": policy.htlc_minimum_msat,
            "htlc_maximum_msat": policy.htlc_maximum_msat}


async def describe_graph(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    return 200, graph_queries.describe_graph(ctx.node)


async def node_info(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    node_id = _hex_param(request, "node_id")
    info = graph_queries.node_info(ctx.node, node_id)
    if info is None:
        raise ApiError(404, f"the graph has no node {node_id.hex()}", "node_id")
    return 200, info


async def channel_info(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    text = request.path_params["short_channel_id"]
    scid = queries.parse_scid(text)
    if scid is None:
        raise DecodeError("short_channel_id", "is out of range (BLOCK and TX below 2^24, OUTPUT below 2^16)")
    info = graph_queries.channel_info(ctx.node, scid)
    if info is None:
        raise ApiError(404, f"the graph has no channel {text}", "short_channel_id")
    return 200, info


async def query_routes(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    """The route a payment would take first, searched on the live graph and our channels as they are."""
    target = bytes.fromhex(body["node_id"])
    if target == ctx.node.node_id:
        raise DecodeError("node_id", "is this node's own id")
    try:
        route = graph_queries.query_route(ctx.node, target, body["amount_msat"], body.get("max_fee_msat"))
    except NoRouteError as exc:
        raise ApiError(409, f"no route: {exc}", "node_id") from None
    return 200, {"routes": [{
        "hops": [{"short_channel_id": format_short_channel_id(h.short_channel_id), "pubkey": h.pubkey.hex(),
                  "amount_msat": h.amount_msat, "fee_msat": h.fee_msat, "cltv_expiry_delta": h.cltv_expiry_delta}
                 for h in route.hops],
        "total_amount_msat": route.total_amount_msat, "total_fee_msat": route.total_fee_msat,
        "total_cltv_expiry_delta": route.total_cltv_expiry_delta}]}


async def fee_report(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    """What we charge to forward, per channel (htlc bounds narrowed to what each peer accepts)."""
    node = ctx.node
    policy = node.forwarding_policy
    channels = []
    for cid, channel in node.channels.items():
        if cid in node.closed_channels:
            continue
        low, high = advertised_htlc_range(channel.config, policy.htlc_minimum_msat, policy.htlc_maximum_msat)
        scid = node.short_channel_id(cid)
        channels.append({"channel_id": cid.hex(), "short_channel_id": None if scid is None else
                         queries.format_scid(scid), **_policy_json(policy), "htlc_minimum_msat": low,
                         "htlc_maximum_msat": high})
    return 200, {"policy": _policy_json(policy), "channels": channels}


async def update_policy(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    """New forwarding terms for every channel; a new channel_update goes out for each."""
    try:
        policy = graph_queries.update_policy(
            ctx.node, fee_base_msat=body.get("fee_base_msat"), fee_ppm=body.get("fee_ppm"),
            cltv_delta=body.get("cltv_delta"), htlc_minimum_msat=body.get("htlc_minimum_msat"),
            htlc_maximum_msat=body.get("htlc_maximum_msat"), save=ctx.save_policy)
    except UsageError as exc:
        field, _, reason = str(exc).partition(": ")
        raise DecodeError(field, reason) from None
    return 200, {"policy": _policy_json(policy)}
