"""The node's REST API as a Starlette app: the endpoint table, bearer-token auth, JSON errors.

Every route is one :class:`~lightspeed.api.openapi.Endpoint` in :data:`ENDPOINTS`;
the app's routes and ``GET /openapi.json`` are both built from it. Every
request must carry ``Authorization: Bearer <token>``: the datadir's admin token (compared in
constant time) or a scoped token (:mod:`lightspeed.api.credentials`) whose scope covers the
route's entry in :data:`lightspeed.api.scopes.REQUIRED_SCOPE`. Every input (body, path and query parameters) is checked against its
schema in :mod:`lightspeed.api.schema` before a handler runs, and bodies are
bounded by :mod:`lightspeed.api.guard`. Failures are always
``{"error": {"field"?, "reason"}}`` with a status that says whose move it is:
400 bad input, 401 no or bad token, 403 the token's scope or budget does not allow it, 404 unknown, 409 the node cannot do it now, 413
body too large, 502 the peer failed, 503 the node's store failed (the node
stopped: every command is refused until it is restarted) or the chain file cannot be
written (full disk, read-only: the reason names it), 504 too slow (a payment
still pending adds its ``payment_hash``); never a traceback.
"""

from __future__ import annotations

import hmac
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from lightspeed.api import async_routes, backup_routes, multihash_routes, ops_routes, wallet_routes
from lightspeed.api import handlers as h
from lightspeed.api import offer_handlers as of
from lightspeed.api import onion_handlers as om
from lightspeed.api import scopes as sc
from lightspeed.api import token_handlers as tk
from lightspeed.api.blinded import endpoints as blinded_endpoints
from lightspeed.api.credentials import (
    ADMIN,
    SCOPES,
    Credential,
    Credentials,
    TokenRejected,
    scope_allows,
)
from lightspeed.api.dashboard import UI_PREFIX, static_routes
from lightspeed.api.dashboard import endpoints as dashboard_endpoints
from lightspeed.api.guard import BodyLimit, parse_json_body
from lightspeed.api.handlers import ApiContext, ApiError
from lightspeed.api.offer_pay import endpoints as offer_pay_endpoints
from lightspeed.api.openapi import Endpoint, openapi_document
from lightspeed.api.schema import (
    Schema,
    field_name,
    hex_string,
    host,
    integer,
    node_id,
    obj,
    string,
    validate,
)
from lightspeed.errors import (
    DecodeError,
    LightspeedError,
    PaymentError,
    PeerProtocolError,
    RejectedTransaction,
    StorageUnavailable,
    UsageError,
)
from lightspeed.store import StoreCorrupt, StoreUnavailable

log = logging.getLogger("lightspeed.api")

NODE_ID = node_id("a node id: 33-byte compressed public key in hex")
CHANNEL_ID = hex_string(32, "a channel id: 32 bytes in hex")
PAYMENT_HASH = hex_string(32, "a payment hash: 32 bytes in hex")
MAX_INVOICE_LENGTH = 7089  # the most a QR code holds; BOLT 11 sets no bound, a server must
_NULLABLE_STR: Schema = {"type": ["string", "null"]}
_NULLABLE_INT: Schema = {"type": ["integer", "null"]}
_SWEEP: Schema = {"type": "object", "properties": {
    "label": {"type": "string"}, "amount_sat": {"type": "integer"}, "maturity_height": _NULLABLE_INT}}

CHANNEL: Schema = {"type": "object", "properties": {
    "channel_id": {"type": "string"}, "peer_id": _NULLABLE_STR,
    "state": {"enum": ["awaiting_confirmations", "normal", "closing", "closed", "recovering"]},
    "funding_txid": _NULLABLE_STR, "funding_output_index": _NULLABLE_INT,
    "capacity_sat": _NULLABLE_INT, "initiator": {"type": ["boolean", "null"]},
    "local_balance_msat": _NULLABLE_INT, "remote_balance_msat": _NULLABLE_INT,
    "pending_htlcs": {"type": "integer"}, "closing_txid": _NULLABLE_STR,
    "close_type": {"enum": ["mutual", "local", "remote", "revoked", "data_loss", "funding_double_spent", None]},
    "limbo_sat": {"type": "integer"}, "limbo_sweeps": {"type": "array", "items": _SWEEP},
    "anchors": {"type": ["boolean", "null"]}, "feerate_per_kw": _NULLABLE_INT,
    "short_channel_id": _NULLABLE_STR, "active": {"type": "boolean"}, "spendable_msat": {"type": "integer"},
    "receivable_msat": {"type": "integer"}, "local_reserve_sat": _NULLABLE_INT, "remote_reserve_sat": _NULLABLE_INT,
    "private": {"type": ["boolean", "null"]}}}
FEATURES: Schema = {"type": "array", "items": {"type": "object", "properties": {
    "bit": {"type": "integer"}, "name": _NULLABLE_STR, "required": {"type": "boolean"}}}}
PAYMENT: Schema = {"type": "object", "properties": {
    "direction": {"enum": ["sent", "received"]}, "payment_hash": {"type": "string"},
    "amount_msat": {"type": "integer"}, "status": {"enum": ["pending", "succeeded", "failed"]},
    "created_at": _NULLABLE_INT, "settled_at": _NULLABLE_INT, "preimage": _NULLABLE_STR,
    "payee": _NULLABLE_STR, "failure_reason": _NULLABLE_STR,
    "invoice": _NULLABLE_STR,  # sent: the invoice paid (with the preimage, the proof of payment); received: null
    "fee_msat": _NULLABLE_INT,  # routing fees paid (sent, settled since the daemon started; else null)
    # POST /v1/payments only, when it paid asynchronously (the payee is our LSP's client): the LSP
    # holding the HTLC; the answer comes at once with status pending (docs/async-payments.md)
    "async_lsp_id": _NULLABLE_STR}}
INVOICE: Schema = {"type": "object", "properties": {
    "invoice": {"type": "string"}, "payment_hash": {"type": "string"}, "amount_msat": _NULLABLE_INT,
    "description": _NULLABLE_STR, "created_at": _NULLABLE_INT, "expires_at": _NULLABLE_INT,
    "status": {"enum": ["unpaid", "paid", "expired"]}, "paid_at": _NULLABLE_INT,
    "received_msat": _NULLABLE_INT}}


ONION_RECORD: Schema = {"type": "object", "properties": {"type": {"type": "integer"}, "hex": {"type": "string"}}}
ONION_SENT: Schema = {"type": "object", "properties": {
    "first_hop": _NULLABLE_STR, "hops": _NULLABLE_INT, "delivered_locally": {"type": "boolean"},
    "reply": {"type": ["object", "null"], "properties": {
        "records": {"type": "array", "items": ONION_RECORD}, "path_id": _NULLABLE_STR,
        "reply_path": _NULLABLE_STR, "is_reply": {"type": "boolean"}}}}}
MAX_BLINDED_PATH_BYTES = 32_768  # far above any path that fits in an onion message


def _list_of(key: str, item: Schema) -> Schema:
    return {"type": "object", "properties": {key: {"type": "array", "items": item}}}


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/v1/getinfo", "getinfo", "The node's id, network, addresses, chain tip and counts",
             h.getinfo, {"type": "object", "properties": {
                 "node_id": {"type": "string"}, "alias": {"type": "string"}, "color": {"type": "string"},
                 "network": {"type": "string"}, "version": {"type": "string"},
                 "listen": {"type": "string"}, "uris": {"type": "array", "items": {"type": "string"}},
                 "chain_file": _NULLABLE_STR, "block_height": {"type": "integer"},
                 "block_hash": {"type": "string"}, "synced_to_chain": {"type": "boolean"},
                 "num_peers": {"type": "integer"}, "num_channels": {"type": "integer"},
                 "num_active_channels": {"type": "integer"}, "num_pending_channels": {"type": "integer"},
                 "num_inactive_channels": {"type": "integer"}, "features": FEATURES}}),
    Endpoint("GET", "/v1/peers", "listPeers", "Peers connected now: address, init features, channels",
             h.list_peers, _list_of("peers", {"type": "object", "properties": {
                 "node_id": {"type": "string"}, "address": _NULLABLE_STR, "features": FEATURES,
                 "channels": {"type": "array", "items": {"type": "string"}}}})),
    Endpoint("POST", "/v1/peers", "connect", "Connect to a peer over TCP (BOLT 8 handshake, init)", h.connect,
             {"type": "object", "properties": {"node_id": {"type": "string"}, "connected": {"type": "boolean"}}},
             body=obj({"node_id": NODE_ID, "host": host("the peer's host: an IP address or a DNS name"),
                       "port": integer("the peer's TCP port", 1, 65535)}, ["node_id", "host", "port"])),
    Endpoint("GET", "/v1/channels", "listChannels", "Channels, open and closed, with balances", h.list_channels,
             _list_of("channels", CHANNEL)),
    Endpoint("POST", "/v1/channels", "openChannel",
             "Open a channel funded from the wallet; returns once the funding is broadcast "
             "(state awaiting_confirmations until it has 3 confirmations)", h.open_channel, CHANNEL,
             body=obj({"node_id": NODE_ID, "amount_sat": integer("channel capacity", 20_000, 16_777_215),
                       "push_msat": integer("given to the peer at opening", 0, 16_777_215_000)},
                      ["node_id", "amount_sat"]),
             status=201),
    Endpoint("POST", "/v1/channels/{channel_id}/close", "closeChannel",
             "Mutual close (shutdown, closing_signed); returns the broadcast closing transaction's id",
             h.close_channel, CHANNEL, path_params=(("channel_id", CHANNEL_ID),),
             body=obj({"feerate_per_kw": integer("the closing transaction's feerate, sat per 1000 weight (else "
                                                 "the chain's estimate); the peer must accept it", 253, 100_000),
                       "address": string("where our balance goes (else a fresh address of the wallet)", 1, 90)})),
    Endpoint("POST", "/v1/channels/{channel_id}/force-close", "forceCloseChannel",
             "Unilateral close: broadcast our latest commitment (closing_txid); the node sweeps our outputs "
             "to the wallet as their delays expire (to_local after the peer's to_self_delay blocks)",
             h.force_close_channel, CHANNEL, path_params=(("channel_id", CHANNEL_ID),)),
    Endpoint("POST", "/v1/channels/{channel_id}/fee", "updateChannelFee",
             "As the channel's funder, move its commitments to a new feerate (update_fee); refused when the "
             "fee would take our balance below the reserve the peer asked for",
             h.update_fee, CHANNEL, path_params=(("channel_id", CHANNEL_ID),),
             body=obj({"feerate_per_kw": integer("the new commitment feerate, sat per 1000 weight", 253, 100_000)},
                      ["feerate_per_kw"])),
    Endpoint("POST", "/v1/invoices/{payment_hash}/settle", "settleInvoice",
             "Release a payment held by a hold invoice: its preimage fulfils every part",
             h.settle_invoice, INVOICE, path_params=(("payment_hash", PAYMENT_HASH),),
             body=obj({"preimage": hex_string(32, "the payment preimage: 32 bytes in hex")}, ["preimage"])),
    Endpoint("POST", "/v1/invoices/{payment_hash}/cancel", "cancelInvoice",
             "Refuse a payment held by a hold invoice: every part fails back to the payer",
             h.cancel_invoice, INVOICE, path_params=(("payment_hash", PAYMENT_HASH),)),
    Endpoint("GET", "/v1/invoices", "listInvoices", "Invoices this node issued", h.list_invoices,
             _list_of("invoices", INVOICE)),
    Endpoint("POST", "/v1/invoices", "createInvoice", "Create and sign a BOLT 11 invoice", h.create_invoice,
             INVOICE, status=201,
             body=obj({"amount_msat": integer("amount to receive (absent: the payer chooses)", 1, 2**53),
                       # BOLT #11: a tagged field holds at most 1023 5-bit words: 639 whole bytes.
                       "description": string("what the payment is for", max_utf8_bytes=639),
                       "description_hash": hex_string(32, "sha256 of a description kept elsewhere (BOLT 11 h), "
                                                          "instead of description"),
                       "private": {"type": "boolean", "description": "add route hints for our private channels"},
                       "expiry": integer("seconds until the invoice expires", 1, 31_536_000),
                       "payment_hash": hex_string(32, "makes a hold invoice: the payment is held until settled "
                                                      "with the preimage of this hash (or cancelled)")})),
    Endpoint("GET", "/v1/payments", "listPayments", "Payments sent and received, oldest first", h.list_payments,
             _list_of("payments", PAYMENT), query_params=(("direction", {"enum": ["sent", "received"]}),)),
    Endpoint("POST", "/v1/payments", "payInvoice",
             "Pay a BOLT 11 invoice over a direct channel; returns once it settled (with the preimage)",
             h.pay, PAYMENT,
             body=obj({"invoice": string("a BOLT 11 invoice", 1, MAX_INVOICE_LENGTH),
                       "amount_msat": integer("the amount to pay, for an invoice that names none", 1, 2**53),
                       "max_fee_msat": integer("the most the routing fees may be, all parts together", 0, 2**53),
                       "max_fee_ppm": integer("the most the routing fees may be, in millionths of the amount",
                                              0, 1_000_000),
                       "outgoing_channel": ops_routes.SCID,
                       "max_parts": integer("split into at most this many parts (MPP)", 1, 16),
                       "return_path": {"type": "boolean", "description":
                                       "attach a blinded return path (TLV 65539) so the payee can refund us "
                                       "without learning our node id (POST /v1/refunds/send)"},
                       "timeout_s": integer("give up waiting after this many seconds", 1, 600)}, ["invoice"])),
    Endpoint("POST", "/v1/onion-messages", "sendOnionMessage",
             "Send an onion message (BOLT 4) to a node id (routed over nodes that relay onion messages) or "
             "along a blinded path; with reply_path, wait up to timeout_s for the reply (null if none came)",
             om.send_onion_message, ONION_SENT,
             body=obj({"destination": {"type": "string", "pattern": "^([0-9a-fA-F]{2})+$",
                                       "maxLength": 2 * MAX_BLINDED_PATH_BYTES,
                                       "description": "a node id or a blinded_path, in hex"},
                       "tlv_type": integer("the final-hop payload field's type (BOLT 4: 64 and above)",
                                           64, 2**64 - 1),
                       "value": {"type": "string", "pattern": "^([0-9a-fA-F]{2})*$", "maxLength": 2 * 16_000,
                                 "description": "the payload field's value, in hex"},
                       "reply_path": {"type": "boolean", "description": "add a reply path and wait for the reply"},
                       "timeout_s": integer("how long to wait for a reply, all attempts together", 1, 120),
                       "attempts": integer("messages sent (each with a new reply path) until one is answered",
                                           1, 10)},
                      ["destination", "tlv_type"])),
    Endpoint("POST", "/v1/onion-messages/blinded-path", "createOnionMessagePath",
             "A blinded path through one of our peers to this node, for others to send onion messages to",
             om.blinded_path, {"type": "object", "properties": {
                 "blinded_path": {"type": "string"}, "introduction_node": {"type": "string"},
                 "path_id": {"type": "string"}}}, status=201),
    Endpoint("GET", "/v1/onion-messages/stats", "onionMessageStats",
             "Onion messages received, relayed, sent and dropped (by reason, and rate-limited by peer), "
             "and the latest received", om.onion_message_stats, {"type": "object", "properties": {
                 "received": {"type": "integer"}, "relayed": {"type": "integer"}, "sent": {"type": "integer"},
                 "replies": {"type": "integer"}, "unhandled": {"type": "integer"}, "dropped": {"type": "integer"},
                 "dropped_by_reason": {"type": "object"}, "rate_limited_by_peer": {"type": "object"},
                 "recent": {"type": "array", "items": {"type": "object"}}}}),
    Endpoint("POST", "/v1/offers", "createOffer",
             "Make a BOLT 12 offer of this node (offer_issuer_id is the node id); invoice requests for it "
             "are answered over onion messages, also after a restart (the offer's metadata authenticates it)",
             of.create_offer, {"type": "object", "properties": {
                 "offer": {"type": "string"}, "amount_msat": _NULLABLE_INT, "description": _NULLABLE_STR,
                 "absolute_expiry": _NULLABLE_INT, "quantity_max": _NULLABLE_INT, "issuer_id": {"type": "string"},
                 "static_invoice_lsp": _NULLABLE_STR, "static_invoice_expires_at": _NULLABLE_INT}},
             status=201,
             body=obj({"description": string("what the offer is for", 1, max_utf8_bytes=639),
                       "amount_msat": integer("price per item (absent: the payer chooses)", 1, 2**53),
                       "absolute_expiry": integer("unix seconds after which the offer is refused", 0, 2**63 - 1),
                       "quantity_max": integer("most items one invoice may be for (0: no limit)", 0, 2**63 - 1),
                       "issuer": string("who makes the offer", 1, max_utf8_bytes=639),
                       "static_invoice_lsp": hex_string(33, "async payments (draft): this LSP, with which we are "
                                                        "registered, answers for the offer with a static invoice "
                                                        "of ours while we are offline; needs amount_msat")},
                      ["description"])),
    Endpoint("POST", "/v1/offers/decode", "decodeOffer",
             "Decode any BOLT 12 string (offer, invoice request or refund, invoice) as `lightspeed offer decode` "
             "prints it: type, tlv_fields, the fields named as in BOLT 12, and for signed types merkle_root, "
             "signature, signature_valid (a bad signature is false, not an error); an invalid string is a 400 "
             "naming the field", of.decode_bolt12, {"type": "object", "properties": {
                 "type": {"type": "string", "enum": ["offer", "invoice_request", "invoice"]},
                 "tlv_fields": {"type": "array", "items": {"type": "object", "properties": {
                     "type": {"type": "integer"}, "length": {"type": "integer"}, "hex": {"type": "string"}}}},
                 "merkle_root": _NULLABLE_STR, "signature": _NULLABLE_STR,
                 "signature_valid": {"type": ["boolean", "null"]}}},
             body=obj({"string": string("a BOLT 12 string: lno1..., lnr1... or lni1... ('+' continuations allowed)",
                                        1, 65536)}, ["string"])),
    Endpoint("POST", "/v1/offers/fetch-invoice", "fetchInvoice",
             "Request an invoice for a BOLT 12 offer over onion messages (with retries) and check it against "
             "the request; the payee's invoice_error is a 409 naming its reason",
             of.fetch_invoice, {"type": "object", "properties": {
                 "invoice": {"type": "string"}, "amount_msat": {"type": "integer"},
                 "payment_hash": {"type": "string"}, "node_id": {"type": "string"},
                 "created_at": {"type": "integer"}, "expires_at": {"type": "integer"},
                 "quantity": _NULLABLE_INT, "payer_note": _NULLABLE_STR, "elapsed_ms": {"type": "integer"}}},
             body=obj({"offer": string("a BOLT 12 offer (lno1...)", 1, 7089),
                       "amount_msat": integer("the amount to request (required when the offer has none)", 1, 2**53),
                       "quantity": integer("items, for an offer with offer_quantity_max", 1, 2**63 - 1),
                       "payer_note": string("a note for the payee", 0, max_utf8_bytes=639),
                       "timeout_s": integer("how long to wait for the invoice, all attempts together", 1, 120),
                       "attempts": integer("invoice requests sent (each with a new reply path)", 1, 10)},
                      ["offer"])),
    *ops_routes.endpoints(CHANNEL),
    *async_routes.endpoints(),  # lsp register, lsp held, pay --async (api/async_routes.py)
    *wallet_routes.endpoints(),  # addresses, funds, transactions, withdraw (api/wallet_routes.py)
    *backup_routes.endpoints(),  # the static channel backup (api/backup_routes.py)
    Endpoint("GET", "/v1/balance", "balance", "On-chain wallet and channel balances", h.balance,
             {"type": "object", "properties": {
                 "onchain_sat": {"type": "integer"}, "onchain_confirmed_sat": {"type": "integer"},
                 "channels_local_msat": {"type": "integer"}, "channels_remote_msat": {"type": "integer"},
                 "limbo_sat": {"type": "integer"},
                 "limbo_sweeps": {"type": "array", "items": {**_SWEEP, "properties": {
                     **_SWEEP["properties"], "channel_id": {"type": "string"}}}}}}),
    *blinded_endpoints(PAYMENT),  # route blinding (api/blinded.py)
    *offer_pay_endpoints(PAYMENT),  # paying offers, refunds (api/offer_pay.py)
    *multihash_routes.endpoints(),  # multi-hash requests, refund declarations (api/multihash_routes.py)
    *tk.endpoints(),  # scoped credentials (api/token_handlers.py)
    *dashboard_endpoints(),  # live events and invoice QR codes (api/dashboard.py)
)


def error_response(status: int, reason: str, field: str | None = None,
                   details: dict[str, str] | None = None) -> JSONResponse:
    error: dict[str, str] = {"reason": _printable(reason)}
    if field is not None:
        error = {"field": _printable(field), **error}
    return JSONResponse({"error": {**error, **(details or {})}}, status_code=status)


def _printable(text: str) -> str:
    """An error text the JSON encoder cannot choke on (a reason may quote what the client sent)."""
    return text.encode("utf-8", "backslashreplace").decode()


def _status_of(exc: Exception) -> tuple[int, str | None]:
    if isinstance(exc, ApiError):
        return exc.status, exc.field
    if isinstance(exc, (StoreUnavailable, StoreCorrupt, StorageUnavailable)):  # a file the node needs (chain)
        return 503, None
    if isinstance(exc, DecodeError):
        return 400, exc.field
    if isinstance(exc, UsageError):
        return 400, None
    if isinstance(exc, (PaymentError, RejectedTransaction)):
        return 409, None
    if isinstance(exc, TimeoutError):  # before OSError: TimeoutError is one, but it is no peer failure
        return 504, None
    if isinstance(exc, (PeerProtocolError, ConnectionError, OSError)):
        return 502, None
    return 409, None  # any other LightspeedError: the node refused


def _reason(exc: Exception) -> str:
    if isinstance(exc, (ApiError, DecodeError)):
        return exc.reason
    if isinstance(exc, TimeoutError):
        return str(exc) or "timed out"
    if isinstance(exc, (ConnectionError, OSError)) and not isinstance(exc, LightspeedError):
        return f"cannot reach the peer: {exc.strerror or exc}"
    return str(exc)


def _parameters(endpoint: Endpoint, request: Request) -> None:
    """Check the path and query parameters against their schemas (unknown or repeated ones too)."""
    for name, schema in endpoint.path_params:
        validate(request.path_params[name], schema, name)
    declared = dict(endpoint.query_params)
    for name in request.query_params:
        if name not in declared:
            raise DecodeError(field_name(name), "is not a known query parameter")
        values = request.query_params.getlist(name)
        if len(values) > 1:
            raise DecodeError(name, "is given more than once")
        validate(values[0], declared[name], name)


CREDENTIAL = "lightspeed.credential"  # the ASGI scope key BearerAuth puts the request's credential under


def _forbidden(required: str, credential: Credential) -> Response:
    return error_response(403, f"this token's scope is {credential.scope}; this route needs {required}"
                               " (or a higher scope: readonly < invoice < pay < admin)")


def _route(ctx: ApiContext, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    required = sc.REQUIRED_SCOPE[endpoint.operation_id]

    async def handle(request: Request) -> Response:
        credential: Credential = request.scope.get(CREDENTIAL, ADMIN)
        if not scope_allows(credential.scope, required):
            return _forbidden(required, credential)
        body: Any = None
        reserved = 0
        try:
            if endpoint.method != "GET" and ctx.node.store_failure is not None:  # the node stopped
                raise StoreUnavailable(ctx.node.store_failure)
            _parameters(endpoint, request)
            if endpoint.body is not None:
                body = parse_json_body(await request.body())  # BodyLimit bounded its size
                validate(body, endpoint.body)
            if credential.budget_msat is not None and endpoint.operation_id == "payInvoice":
                reserved, body = _reserve(ctx, credential, body)
            status, result = await endpoint.handler(ctx, request, body)
        except (LightspeedError, OSError, TimeoutError) as exc:
            status, field = _status_of(exc)
            _settle(ctx, credential, reserved, status, None, getattr(exc, "details", None))
            return error_response(status, _reason(exc), field, getattr(exc, "details", None))
        except Exception as exc:  # a bug: log it here, never show a traceback to the client
            log.exception("%s %s failed", endpoint.method, endpoint.path)
            _settle(ctx, credential, reserved, 504, None)  # a bug mid-payment: keep it counted as spent
            return error_response(500, f"internal error: {type(exc).__name__}")
        _settle(ctx, credential, reserved, status, result)
        if isinstance(result, Response):  # a stream (GET /v1/events)
            return result
        return JSONResponse(result, status_code=status)

    return handle


def _reserve(ctx: ApiContext, credential: Credential, body: Any) -> tuple[int, Any]:
    """Count a budgeted payment's most it can cost as spent before it is sent (ApiError 403 if over)."""
    cost = sc.payment_cost(body)
    if cost is None or ctx.credentials is None:
        return 0, body  # the handler refuses the body with its 400: nothing is sent
    amount, limited = cost
    if not ctx.credentials.reserve(credential, amount):
        left = ctx.credentials.remaining(credential)
        raise ApiError(403, f"the payment may cost up to {amount} msat (amount and fee limit) but this token "
                            f"has {left} msat of its budget left", "amount_msat")
    return amount, limited


def _settle(ctx: ApiContext, credential: Credential, reserved: int, status: int, result: Any,
            details: dict[str, str] | None = None) -> None:
    if reserved and ctx.credentials is not None:
        sc.settle(ctx.credentials, credential, reserved, status, result, details)


class BearerAuth:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer <token>``.

    The admin token (DATADIR/api_token) is compared in constant time; any other token is checked
    by the credential store. The credential found goes into the ASGI scope for the route's scope
    check. The dashboard's static files (``/ui/``) need no token: they hold none.
    """

    def __init__(self, app: ASGIApp, token: str, credentials: Credentials | None,
                 clock: Callable[[], int], ui: bool = False) -> None:
        self.app, self._expected = app, f"Bearer {token}".encode()
        self._credentials, self._clock, self._ui = credentials, clock, ui

    def _credential(self, given: bytes) -> Credential:
        if hmac.compare_digest(given, self._expected):
            return ADMIN
        if not given.startswith(b"Bearer ") or self._credentials is None:
            raise TokenRejected("missing or wrong bearer token (see DATADIR/api_token)")
        try:
            token = given[len(b"Bearer "):].decode("ascii")
        except UnicodeDecodeError:
            raise TokenRejected("the token is malformed") from None
        return self._credentials.verify(token, self._clock())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope.get("path", "")
            if self._ui and (path == UI_PREFIX or path.startswith(UI_PREFIX + "/")):
                await self.app(scope, receive, send)
                return
            given = dict(scope["headers"]).get(b"authorization", b"")
            try:
                credential = self._credential(given)
            except TokenRejected as exc:
                response = error_response(401, str(exc))
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
            except sqlite3.Error as exc:  # the credential store cannot be read (disk): no one is let in
                log.error("credential store: %s", exc)
                await error_response(503, f"the credential store cannot be read: {exc}")(scope, receive, send)
                return
            scope = {**scope, CREDENTIAL: credential}
        await self.app(scope, receive, send)


def create_app(ctx: ApiContext, token: str, ui: bool = False) -> ASGIApp:
    """The API over ``ctx.node``: ``token`` is the admin token, ``ctx.credentials`` checks scoped ones.

    With ``ui`` it also serves the web dashboard at ``/ui/`` (api/dashboard.py).
    """
    if len(token) < 16:
        raise UsageError("the API token must be at least 16 characters")
    missing = [e.operation_id for e in ENDPOINTS if e.operation_id not in sc.REQUIRED_SCOPE]
    if missing:
        raise UsageError(f"routes without a required scope in api/scopes.py: {', '.join(missing)}")
    document = openapi_document(ENDPOINTS, sc.REQUIRED_SCOPE, SCOPES)

    async def openapi(request: Request) -> Response:
        credential: Credential = request.scope.get(CREDENTIAL, ADMIN)
        if not scope_allows(credential.scope, sc.REQUIRED_SCOPE["openapi"]):
            return _forbidden(sc.REQUIRED_SCOPE["openapi"], credential)
        return JSONResponse(document)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        reason = {404: "no such route", 405: "method not allowed on this route"}.get(exc.status_code, exc.detail)
        return error_response(exc.status_code, reason)

    routes = [Route(e.path, _route(ctx, e), methods=[e.method], name=e.operation_id) for e in ENDPOINTS]
    routes.append(Route("/openapi.json", openapi, methods=["GET"], name="openapi"))
    if ui:
        routes += static_routes()
    # Auth first: a client without the token gets its 401 before a byte of its body is read.
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error},
                    middleware=[Middleware(BodyLimit, refuse=error_response)])
    return BearerAuth(app, token, ctx.credentials, ctx.now, ui)
