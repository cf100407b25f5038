"""REST handlers for the operator commands ``lncli``/``lightning-cli`` users reach for.

Pending and closed channels, disconnecting a peer, stopping the daemon, looking an invoice up
and waiting for it, following a payment to its end, keysend/AMP sends, signed messages.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request

from lightspeed.api.handlers import (
    ApiContext,
    ApiError,
    _hex_param,
    channel_json,
    closed_channel_json,
    with_fee,
)
from lightspeed.api.ledger import invoice_json, sent_json
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.signed_message import recover_signer, sign_message
from lightspeed.errors import DecodeError, LightspeedError, PaymentError, UsageError
from lightspeed.node import queries

POLL_S = 0.05
MAX_WAIT_S = 3600  # the most a wait or track request holds its connection
MAX_FORWARD_EVENTS = 10_000  # the most forwards one fwdinghistory answer lists


def _query_timeout(request: Request, default: int) -> int:
    """``timeout_s`` from the query (already checked against its schema: 1..3600)."""
    text = request.query_params.get("timeout_s")
    if text is None:
        return default
    if int(text) > MAX_WAIT_S:
        raise DecodeError("timeout_s", f"must be at most {MAX_WAIT_S}")
    return int(text)


async def pending_channels(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    """Channels not open yet, closing, or closed with funds still waiting for their CSV delay."""
    node = ctx.node
    height = node.chain.tip()[0]
    opening, closing = [], []
    for cid, channel in node.channels.items():
        if cid in node.closed_channels:
            continue
        entry = channel_json(ctx, cid, channel)
        if node.channel_is_closing(cid):
            closing.append(entry)
        elif not queries.funding_confirmed(node, cid):
            opening.append(entry)
    sweeps = node.pending_sweeps()
    waiting = {s.channel_id for s in sweeps}
    force_closed = []
    for record in node.closed_channel_records():
        if record.channel_id not in waiting:
            continue
        entry = closed_channel_json(ctx, record, sweeps)
        for sweep in entry["limbo_sweeps"]:
            maturity = sweep["maturity_height"]
            sweep["blocks_til_maturity"] = None if maturity is None else max(0, maturity - height)
        force_closed.append(entry)
    return 200, {"block_height": height, "total_limbo_sat": sum(s.amount_sat for s in sweeps),
                 "pending_open": opening, "pending_closing": closing, "pending_force_closing": force_closed}


async def closed_channels(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    """Closed channels as the store keeps them (across restarts), oldest first."""
    sweeps = ctx.node.pending_sweeps()
    return 200, {"channels": [closed_channel_json(ctx, c, sweeps) for c in ctx.node.closed_channel_records()]}


async def disconnect(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    """Drop the connection to a peer we have no open channel with (channel peers are redialled)."""
    node = ctx.node
    node_id = _hex_param(request, "node_id")
    peer = node.peer(node_id)
    if peer is None:
        raise ApiError(404, f"not connected to {node_id.hex()}", "node_id")
    open_ = [cid for cid in node.channels if node.channel_peer_id(cid) == node_id and cid not in node.closed_channels]
    if open_:
        raise ApiError(409, f"the peer has {len(open_)} open channel(s) (the node keeps channel peers connected): "
                            "close them first", "node_id")
    await peer.close()
    return 200, {"node_id": node_id.hex(), "connected": False}


async def stop(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    """Ask the daemon to exit cleanly, as SIGTERM does; the answer goes out first."""
    if ctx.request_stop is None:
        raise ApiError(409, "this API does not run in a daemon that can be stopped")
    asyncio.get_running_loop().call_later(0.05, ctx.request_stop)
    return 200, {"stopping": True}


async def lookup_invoice(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    payment_hash = _hex_param(request, "payment_hash")
    record = ctx.node.store.invoice(payment_hash)
    if record is None:
        raise ApiError(404, f"no invoice {payment_hash.hex()}", "payment_hash")
    return 200, invoice_json(record, ctx.times, ctx.now())


async def wait_invoice(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    """Return once the invoice is paid or expired, or after ``timeout_s`` (then it is still unpaid)."""
    payment_hash = _hex_param(request, "payment_hash")
    deadline = asyncio.get_running_loop().time() + _query_timeout(request, 60)
    while True:
        record = ctx.node.store.invoice(payment_hash)
        if record is None:
            raise ApiError(404, f"no invoice {payment_hash.hex()}", "payment_hash")
        entry = invoice_json(record, ctx.times, ctx.now())
        if entry["status"] != "unpaid" or asyncio.get_running_loop().time() >= deadline:
            return 200, entry
        await asyncio.sleep(POLL_S)


async def track_payment(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    """Return once an outgoing payment ended (succeeded or failed), or after ``timeout_s`` (still pending)."""
    payment_hash = _hex_param(request, "payment_hash")
    deadline = asyncio.get_running_loop().time() + _query_timeout(request, 60)
    while True:
        record = ctx.node.store.payment(payment_hash)
        if record is None:
            raise ApiError(404, f"no payment {payment_hash.hex()}", "payment_hash")
        if record.status != "pending" or asyncio.get_running_loop().time() >= deadline:
            return 200, with_fee(ctx, sent_json(record, ctx.times))
        await asyncio.sleep(POLL_S)


async def keysend(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    """A spontaneous payment (keysend), or with ``amp_parts`` an AMP payment in that many shards."""
    node = ctx.node
    node_id, amount_msat = bytes.fromhex(body["node_id"]), body["amount_msat"]
    if node_id == node.node_id:
        raise ApiError(400, "is this node's own id", "node_id")
    timeout_s, parts = body.get("timeout_s", 60), body.get("amp_parts")
    before = {p.payment_hash for p in node.store.payments()}
    try:
        if parts is None:
            payment_id = sha256(await node.keysend(node_id, amount_msat, timeout=timeout_s))
        else:
            payment_id = await node.pay_amp(node_id, amount_msat, parts, timeout=timeout_s)
    except (PaymentError, UsageError) as exc:
        # The payment was recorded (pending, then failed or still pending): name it.
        new = [p for p in node.store.payments() if p.payment_hash not in before]
        details = {"payment_hash": new[0].payment_hash.hex()} if len(new) == 1 else None
        status = 504 if len(new) == 1 and new[0].status == "pending" else 409
        raise ApiError(status, str(exc), "node_id", details) from None
    record = node.store.payment(payment_id)
    if record is None:
        raise LightspeedError("the payment left no record")
    ctx.times.settled.setdefault(payment_id, ctx.now())
    return 200, with_fee(ctx, sent_json(record, ctx.times))


async def sign(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    """Sign with the node key as LND and Core Lightning do (zbase32, "Lightning Signed Message:")."""
    return 200, {"signature": sign_message(ctx.node.privkey, body["message"].encode())}


async def verify(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    """Recover the signer; ``valid`` says it is the ``pubkey`` given (or, without one, a node we know)."""
    node = ctx.node
    signer = recover_signer(body["message"].encode(), body["signature"])
    expected = body.get("pubkey")
    if expected is not None:
        valid = signer == bytes.fromhex(expected)
    else:  # as LND: a signature is only worth something from a node we know of
        known = {node.node_id, *node.peer_ids(), *(node.channel_peer_id(c) for c in node.channels)}
        if node.graph is not None:
            known |= node.graph.nodes
        valid = signer in known
    return 200, {"valid": valid, "pubkey": signer.hex()}


async def forwarding_history(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    """Settled forwards between ``start_time`` and ``end_time`` (unix seconds), oldest first."""
    params = request.query_params  # checked against their digit patterns
    start, end = params.get("start_time"), params.get("end_time")
    limit = int(params.get("max_events", "100"))
    if not 1 <= limit <= MAX_FORWARD_EVENTS:
        raise DecodeError("max_events", f"must be between 1 and {MAX_FORWARD_EVENTS}")
    events = ctx.forwards.query(None if start is None else int(start), None if end is None else int(end), limit)
    return 200, {"forwarding_events": events, "total_fee_msat": sum(e.get("fee_msat", 0) for e in events)}
