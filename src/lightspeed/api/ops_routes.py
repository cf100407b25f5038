"""The operator routes (:mod:`lightspeed.api.ops_handlers`) in the endpoint table's form.

Kept apart from :mod:`lightspeed.api.app` so the table there stays readable; ``app.ENDPOINTS``
includes these, so they are served, validated and published in ``/openapi.json`` like the rest.
"""

from __future__ import annotations

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
_OBJECT: Schema = {"type": "object"}
_PAYMENT: Schema = {"type": "object", "properties": {
    "payment_hash": {"type": "string"}, "amount_msat": {"type": "integer"},
    "status": {"enum": ["pending", "succeeded", "failed"]}, "preimage": _NULLABLE_STR,
    "failure_reason": _NULLABLE_STR}}
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
    )


__all__ = ["MAX_WAIT_S", "endpoints"]
