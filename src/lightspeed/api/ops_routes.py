"""The operator routes (:mod:`lightspeed.api.ops_handlers`) in the endpoint table's form.

Kept apart from :mod:`lightspeed.api.app` so the table there stays readable; ``app.ENDPOINTS``
includes these, so they are served, validated and published in ``/openapi.json`` like the rest.
"""

from __future__ import annotations

from lightspeed.api import graph_handlers as gr
from lightspeed.api import ops_handlers as ops
from lightspeed.api.openapi import Endpoint
from lightspeed.api.ops_handlers import MAX_WAIT_S
from lightspeed.api.schema import Schema, hex_string, integer, node_id, obj, string

_NULLABLE_STR: Schema = {"type": ["string", "null"]}
_NULLABLE_INT: Schema = {"type": ["integer", "null"]}
PAYMENT_HASH = hex_string(32, "a payment hash: 32 bytes in hex")
# Query values are strings: the range is checked here by the pattern (1..3600 has at most 4 digits)
# and the rest by the handler.
WAIT = ("timeout_s", {"type": "string", "pattern": "^[1-9][0-9]{0,3}$",
                      "description": f"seconds to wait, 1 to {MAX_WAIT_S} (default 60)"})
MAX_MESSAGE_BYTES = 65_535  # Core Lightning's limit on signmessage

# The shapes are the ones app.py publishes (kept loose here: app.py owns CHANNEL, PAYMENT, INVOICE).
_POLICY_JSON: Schema = {"type": ["object", "null"], "properties": {
    "time_lock_delta": {"type": "integer"}, "min_htlc": {"type": "string"}, "fee_base_msat": {"type": "string"},
    "fee_rate_milli_msat": {"type": "string"}, "disabled": {"type": "boolean"}, "max_htlc_msat": {"type": "string"}}}
_EDGE: Schema = {"type": "object", "properties": {
    "channel_id": {"type": "string"}, "scid": {"type": "string"}, "node1_pub": {"type": "string"},
    "node2_pub": {"type": "string"}, "capacity": {"type": "string"}, "node1_policy": _POLICY_JSON,
    "node2_policy": _POLICY_JSON}}
_FEES: Schema = {"type": "object", "properties": {
    "fee_base_msat": {"type": "integer"}, "fee_ppm": {"type": "integer"}, "cltv_delta": {"type": "integer"},
    "htlc_minimum_msat": {"type": "integer"}, "htlc_maximum_msat": {"type": "integer"}}}
_HOP: Schema = {"type": "object", "properties": {
    "short_channel_id": {"type": "string"}, "pubkey": {"type": "string"}, "amount_msat": {"type": "integer"},
    "fee_msat": {"type": "integer"}, "cltv_expiry_delta": {"type": "integer"}}}
SCID: Schema = {"type": "string", "pattern": "^([0-9]{1,20}|[0-9]{1,8}x[0-9]{1,8}x[0-9]{1,5})$",
                "description": "a short channel id: BLOCKxTXxOUTPUT, or LND's integer chan_id"}
U32 = 2**32 - 1
_UNIX: Schema = {"type": "string", "pattern": "^[0-9]{1,12}$", "description": "unix seconds"}
_PAYMENT: Schema = {"type": "object", "properties": {
    "payment_hash": {"type": "string"}, "amount_msat": {"type": "integer"},
    "status": {"enum": ["pending", "succeeded", "failed"]}, "preimage": _NULLABLE_STR,
    "failure_reason": _NULLABLE_STR, "invoice": _NULLABLE_STR, "fee_msat": _NULLABLE_INT}}
_INVOICE: Schema = {"type": "object", "properties": {
    "invoice": {"type": "string"}, "payment_hash": {"type": "string"}, "amount_msat": _NULLABLE_INT,
    "status": {"enum": ["unpaid", "paid", "expired"]}, "received_msat": _NULLABLE_INT}}


def endpoints(channel: Schema) -> tuple[Endpoint, ...]:
    """The operator routes; ``channel`` is the channel schema app.py publishes."""
    channels: Schema = {"type": "array", "items": channel}
    return (
        Endpoint("GET", "/v1/channels/pending", "pendingChannels",
                 "Channels opening (funding not deep enough), closing, and force-closed with funds in limbo "
                 "until their CSV delay ends (blocks_til_maturity)", ops.pending_channels,
                 {"type": "object", "properties": {
                     "block_height": {"type": "integer"}, "total_limbo_sat": {"type": "integer"},
                     "pending_open": channels, "pending_closing": channels, "pending_force_closing": channels}}),
        Endpoint("GET", "/v1/channels/closed", "closedChannels",
                 "Closed channels as the store keeps them (across restarts), oldest first",
                 ops.closed_channels, {"type": "object", "properties": {"channels": channels}}),
        Endpoint("POST", "/v1/peers/{node_id}/disconnect", "disconnectPeer",
                 "Close the connection to a peer without open channels (channel peers are redialled)",
                 ops.disconnect, {"type": "object", "properties": {
                     "node_id": {"type": "string"}, "connected": {"type": "boolean"}}},
                 path_params=(("node_id", node_id("a node id: 33-byte compressed public key in hex")),)),
        Endpoint("POST", "/v1/stop", "stop", "Stop the daemon cleanly (as SIGTERM): it answers, then exits",
                 ops.stop, {"type": "object", "properties": {"stopping": {"type": "boolean"}}}),
        Endpoint("GET", "/v1/invoices/{payment_hash}", "lookupInvoice", "One invoice this node issued",
                 ops.lookup_invoice, _INVOICE, path_params=(("payment_hash", PAYMENT_HASH),)),
        Endpoint("GET", "/v1/invoices/{payment_hash}/wait", "waitInvoice",
                 "Wait until the invoice is paid or expires (at most timeout_s; then it is still unpaid)",
                 ops.wait_invoice, _INVOICE, path_params=(("payment_hash", PAYMENT_HASH),),
                 query_params=(WAIT,)),
        Endpoint("GET", "/v1/payments/{payment_hash}/track", "trackPayment",
                 "Wait until an outgoing payment succeeded or failed (at most timeout_s; then it is pending)",
                 ops.track_payment, _PAYMENT, path_params=(("payment_hash", PAYMENT_HASH),),
                 query_params=(WAIT,)),
        Endpoint("POST", "/v1/keysend", "keysend",
                 "A spontaneous payment to a node: keysend (the preimage in the onion), or with amp_parts an "
                 "AMP payment in that many shards; returns once it settled", ops.keysend, _PAYMENT,
                 body=obj({"node_id": node_id("the payee's node id"),
                           "amount_msat": integer("amount to send", 1, 2**53),
                           "amp_parts": integer("send as AMP in this many shards", 1, 16),
                           "timeout_s": integer("give up waiting after this many seconds", 1, 600)},
                          ["node_id", "amount_msat"])),
        Endpoint("POST", "/v1/messages/sign", "signMessage",
                 "Sign a message with the node key (LND/Core Lightning format: zbase32, recoverable)",
                 ops.sign, {"type": "object", "properties": {"signature": {"type": "string"}}},
                 body=obj({"message": string("the text to sign", 0, max_utf8_bytes=MAX_MESSAGE_BYTES)},
                          ["message"])),
        Endpoint("POST", "/v1/messages/verify", "verifyMessage",
                 "Recover who signed a message; valid: it is pubkey (if given) or a node this node knows",
                 ops.verify, {"type": "object", "properties": {
                     "valid": {"type": "boolean"}, "pubkey": {"type": "string"}}},
                 body=obj({"message": string("the signed text", 0, max_utf8_bytes=MAX_MESSAGE_BYTES),
                           "signature": {"type": "string", "pattern": "^[ybndrfg8ejkmcpqxot1uwisza345h769]{104}$",
                                         "description": "a zbase32 signature (104 characters)"},
                           "pubkey": node_id("the node id the signature must be from")},
                          ["message", "signature"])),
        Endpoint("GET", "/v1/forwards", "forwardingHistory",
                 "HTLCs this node forwarded that settled, with the fee each earned (kept across restarts)",
                 ops.forwarding_history, {"type": "object", "properties": {
                     "forwarding_events": {"type": "array", "items": {"type": "object", "properties": {
                         "timestamp": {"type": "integer"}, "chan_id_in": _NULLABLE_STR, "chan_id_out": _NULLABLE_STR,
                         "channel_id_in": {"type": "string"}, "channel_id_out": {"type": "string"},
                         "amt_in_msat": {"type": "integer"}, "amt_out_msat": {"type": "integer"},
                         "fee_msat": {"type": "integer"}, "payment_hash": {"type": "string"}}}},
                     "total_fee_msat": {"type": "integer"}}},
                 query_params=(("start_time", _UNIX), ("end_time", _UNIX),
                               ("max_events", {"type": "string", "pattern": "^[1-9][0-9]{0,4}$",
                                               "description": "at most this many events, 1 to 10000 (default 100)"}))),
        Endpoint("GET", "/v1/graph", "describeGraph",
                 "The network graph this node knows from gossip, as LND's describegraph JSON (lightspeed route "
                 "--graph reads it)", gr.describe_graph, {"type": "object", "properties": {
                     "nodes": {"type": "array", "items": {"type": "object"}},
                     "edges": {"type": "array", "items": _EDGE}}}),
        Endpoint("GET", "/v1/graph/nodes/{node_id}", "getNodeInfo", "A node of the graph and its channels",
                 gr.node_info, {"type": "object", "properties": {
                     "node": {"type": "object"}, "num_channels": {"type": "integer"},
                     "total_capacity": {"type": "string"}, "channels": {"type": "array", "items": _EDGE}}},
                 path_params=(("node_id", node_id("a node id: 33-byte compressed public key in hex")),)),
        Endpoint("GET", "/v1/graph/channels/{short_channel_id}", "getChanInfo",
                 "A channel of the graph with both sides' policies", gr.channel_info, _EDGE,
                 path_params=(("short_channel_id", SCID),)),
        Endpoint("POST", "/v1/graph/routes", "queryRoutes",
                 "The route a payment would take first, on the live graph and our channels as they are now",
                 gr.query_routes, {"type": "object", "properties": {"routes": {"type": "array", "items": {
                     "type": "object", "properties": {
                         "hops": {"type": "array", "items": _HOP}, "total_amount_msat": {"type": "integer"},
                         "total_fee_msat": {"type": "integer"}, "total_cltv_expiry_delta": {"type": "integer"}}}}}},
                 body=obj({"node_id": node_id("the destination"),
                           "amount_msat": integer("the amount to deliver", 1, 2**53),
                           "max_fee_msat": integer("the most the route may cost in fees", 0, 2**53)},
                          ["node_id", "amount_msat"])),
        Endpoint("GET", "/v1/fees", "feeReport", "What this node charges to forward, per channel",
                 gr.fee_report, {"type": "object", "properties": {
                     "policy": _FEES, "channels": {"type": "array", "items": _FEES}}}),
        Endpoint("POST", "/v1/fees", "updateChannelPolicy",
                 "Change the forwarding fees, CLTV delta and HTLC bounds of every channel; a new channel_update "
                 "goes out for each", gr.update_policy, {"type": "object", "properties": {"policy": _FEES}},
                 body=obj({"fee_base_msat": integer("base fee per forwarded HTLC", 0, U32),
                           "fee_ppm": integer("proportional fee, millionths of the amount", 0, U32),
                           # BOLT 7 channel_update: cltv_expiry_delta is a u16.
                           "cltv_delta": integer("blocks we ask between incoming and outgoing HTLC expiry",
                                                 1, 2**16 - 1),
                           "htlc_minimum_msat": integer("smallest HTLC we forward", 0, 2**53),
                           "htlc_maximum_msat": integer("largest HTLC we forward", 1, 2**53)})),
    )


__all__ = ["MAX_WAIT_S", "endpoints"]
