"""REST handlers for onion messages: send (and wait for a reply), a blinded path to us, counters.

Kept apart from :mod:`lightspeed.api.handlers` so the endpoint table stays a list and the
onion-message surface can grow (offers) without touching the payment handlers.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from lightspeed.api.handlers import ApiContext, ApiError
from lightspeed.errors import DecodeError, UsageError
from lightspeed.onion.blinding import BlindedPath
from lightspeed.onion.payload import check_point


def parse_destination(text: str) -> bytes | BlindedPath:
    """A node id (33 bytes) or a serialized ``blinded_path``, in hex (the schema checked the hex)."""
    data = bytes.fromhex(text)
    try:
        if len(data) == 33:
            return check_point(data, "destination")
        return BlindedPath.from_bytes(data)
    except DecodeError as exc:
        raise DecodeError("destination", f"neither a node id nor a blinded path: {exc.field}: {exc.reason}") \
            from None


async def send_onion_message(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    messenger = ctx.node.onion_messages
    destination = parse_destination(body["destination"])
    records = [(body["tlv_type"], bytes.fromhex(body.get("value", "")))]
    try:
        if not body.get("reply_path", False):
            sent = await messenger.send(destination, records)
            return 200, {"first_hop": sent.first_hop.hex(), "hops": sent.hops,
                         "delivered_locally": sent.delivered_locally, "reply": None}
        try:
            reply = await messenger.request(destination, records, timeout=body.get("timeout_s", 10),
                                            attempts=body.get("attempts", 2))
        except TimeoutError:
            return 200, {"first_hop": None, "hops": None, "delivered_locally": False, "reply": None}
    except UsageError as exc:  # no path now, the destination is us: the node cannot, not a bad request
        raise ApiError(409, str(exc), "destination") from None
    return 200, {"first_hop": None, "hops": None, "delivered_locally": False, "reply": reply.to_json()}


async def blinded_path(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    path, path_id = ctx.node.onion_messages.blinded_path_to_us()
    return 201, {"blinded_path": path.to_bytes().hex(), "introduction_node": path.first_node_id.hex(),
                 "path_id": path_id.hex()}


async def onion_message_stats(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    return 200, ctx.node.onion_messages.stats()
