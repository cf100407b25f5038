"""What each REST endpoint does: validated JSON in, the node's answer as JSON out.

Handlers take the :class:`ApiContext` and the already validated body and return
``(status, json)``. They check what they can before asking the node (connected?
a ready channel? enough coins?) so a user gets a precise 409 instead of a
timeout, and they translate bytes to hex only here, at the edge.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from lightspeed import __version__
from lightspeed.api.address import format_hostport
from lightspeed.api.credentials import Credentials
from lightspeed.api.forwards import ForwardLog
from lightspeed.api.ledger import Timestamps, invoice_json, received_json, sent_json
from lightspeed.api.scopes import settle_held
from lightspeed.bitcoin.address import address_to_script
from lightspeed.bitcoin.tx import Transaction
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.state import Channel
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import (
    ChannelOpenFailed,
    DecodeError,
    LightspeedError,
    PaymentError,
    RejectedTransaction,
    UsageError,
)
from lightspeed.invoice import decode
from lightspeed.node import queries
from lightspeed.node.forwarding import ForwardSettled
from lightspeed.node.node import Node, PaymentFailed, PaymentReceived, PaymentSent
from lightspeed.node.onchain import PendingSweep
from lightspeed.node.paying import PayLimits
from lightspeed.node.recovery import RecoveringChannel
from lightspeed.payments.forward import ForwardingPolicy
from lightspeed.store import ClosedChannel

log = logging.getLogger("lightspeed.api")

OPEN_FEE_MARGIN_SAT = 2_000  # what the funding transaction's fee may take beyond the channel amount


class ApiError(LightspeedError):
    """A refusal with its HTTP status (409: not now; 404: no such object; ...).

    ``details`` join the JSON error beside ``field`` and ``reason`` (a pending payment's hash).
    """

    def __init__(self, status: int, reason: str, field: str | None = None,
                 details: dict[str, str] | None = None) -> None:
        self.status, self.reason, self.field, self.details = status, reason, field, details
        super().__init__(reason)


@dataclass
class ApiContext:
    """Everything the handlers reach: the node, where things are, the clock, when payments happened."""

    node: Node
    listen: str = ""
    chain_file: str | None = None
    times: Timestamps = field(default_factory=Timestamps)
    clock: Callable[[], float] = time.time
    open_timeout_s: float = 30.0
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    request_stop: Callable[[], None] | None = None  # set by the daemon: POST /v1/stop calls it
    save_policy: Callable[[ForwardingPolicy], None] | None = None  # set by the daemon: keeps updatechanpolicy
    forwards: ForwardLog = field(default_factory=ForwardLog)  # the daemon's is kept in DATADIR/forwards.jsonl
    credentials: Credentials | None = None  # scoped tokens (DATADIR/credentials.sqlite); None: admin token only

    def now(self) -> int:
        return int(self.clock())

    def spawn(self, coro: Any, what: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.create_task(coro)
        self.tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self.tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("%s ended: %s", what, t.exception())

        task.add_done_callback(done)
        return task

    async def follow_events(self) -> None:
        """Note when payments end, both ways (the API is the event queue's only reader)."""
        while True:
            event = await self.node.events.get()
            if isinstance(event, (PaymentReceived, PaymentSent, PaymentFailed)):
                self.times.settled.setdefault(event.payment_hash, self.now())
            if isinstance(event, (PaymentSent, PaymentFailed)) and self.credentials is not None:
                self.spawn(settle_held(self.credentials, self.node, event), "pay token budget")
            elif isinstance(event, ForwardSettled):
                self.forwards.add(self._forward_json(event))

    def _forward_json(self, event: ForwardSettled) -> dict[str, Any]:
        def scid(channel_id: bytes) -> str | None:
            value = self.node.short_channel_id(channel_id)
            return None if value is None else queries.format_scid(value)

        return {"timestamp": self.now(), "chan_id_in": scid(event.in_channel_id),
                "chan_id_out": scid(event.out_channel_id), "channel_id_in": event.in_channel_id.hex(),
                "channel_id_out": event.out_channel_id.hex(), "amt_in_msat": event.in_msat,
                "amt_out_msat": event.out_msat, "fee_msat": event.in_msat - event.out_msat,
                "payment_hash": event.payment_hash.hex()}


def _hex_param(request: Request, name: str) -> bytes:
    """A path parameter the app already checked against its hex schema (exact length, no whitespace)."""
    return bytes.fromhex(request.path_params[name])


def channel_json(ctx: ApiContext, channel_id: bytes, channel: Channel) -> dict[str, Any]:
    node = ctx.node
    view = channel.log.commitment(Side.LOCAL)
    state = ("closing" if node.channel_is_closing(channel_id) else
             "normal" if node.channel_is_ready(channel_id) else "awaiting_confirmations")
    peer = node.channel_peer_id(channel_id)
    return {"channel_id": channel_id.hex(), "peer_id": None if peer is None else peer.hex(), "state": state,
            "funding_txid": channel.config.funding_txid[::-1].hex(),
            "funding_output_index": channel.config.funding_output_index,
            "capacity_sat": channel.config.funding_sat, "initiator": channel.config.local_is_funder,
            "local_balance_msat": view.to_local_msat, "remote_balance_msat": view.to_remote_msat,
            "pending_htlcs": len(view.htlcs), "closing_txid": None, "close_type": None, "limbo_sat": 0,
            "limbo_sweeps": [], "anchors": channel.config.anchors, "feerate_per_kw": view.feerate_per_kw,
            **liquidity_json(queries.liquidity(node, channel_id))}


def liquidity_json(liquidity: queries.Liquidity | None) -> dict[str, Any]:
    """The operator fields of a channel (null for a closed one)."""
    scid = None if liquidity is None else liquidity.short_channel_id
    return {"short_channel_id": None if scid is None else queries.format_scid(scid),
            "active": liquidity is not None and liquidity.active,
            "spendable_msat": 0 if liquidity is None else liquidity.spendable_msat,
            "receivable_msat": 0 if liquidity is None else liquidity.receivable_msat,
            "local_reserve_sat": None if liquidity is None else liquidity.local_reserve_sat,
            "remote_reserve_sat": None if liquidity is None else liquidity.remote_reserve_sat,
            "private": None if liquidity is None else liquidity.private}


def _sweep_json(sweep: PendingSweep) -> dict[str, Any]:
    return {"label": sweep.label, "amount_sat": sweep.amount_sat, "maturity_height": sweep.maturity_height}


def closed_channel_json(ctx: ApiContext, record: ClosedChannel, sweeps: list[PendingSweep]) -> dict[str, Any]:
    """A closed channel from the store (it outlives restarts); ``local_balance_msat`` is ours when it
    closed, ``limbo_sat`` what force-close claims will still sweep to the wallet (``limbo_sweeps``
    says from which block each may be mined; null until the transaction it spends confirms)."""
    summary = record.summary
    mine = [s for s in sweeps if s.channel_id == record.channel_id]
    entry: dict[str, Any] = {
        "channel_id": record.channel_id.hex(), "peer_id": record.peer_id.hex(), "state": "closed",
        "funding_txid": None, "funding_output_index": None, "capacity_sat": None, "initiator": None,
        "local_balance_msat": None, "remote_balance_msat": None, "pending_htlcs": 0,
        "closing_txid": None if record.closing_txid is None else record.closing_txid[::-1].hex(),
        "close_type": None if summary is None else summary.kind,
        "limbo_sat": sum(s.amount_sat for s in mine), "limbo_sweeps": [_sweep_json(s) for s in mine],
        "anchors": None, "feerate_per_kw": None, **liquidity_json(None)}
    if summary is not None:
        entry.update({"funding_txid": summary.funding_txid[::-1].hex(),
                      "funding_output_index": summary.funding_output_index, "capacity_sat": summary.capacity_sat,
                      "initiator": summary.initiator, "local_balance_msat": summary.local_balance_msat,
                      "remote_balance_msat": summary.remote_balance_msat})
    elif record.closing_txid is not None:  # closed before summaries were kept: the funding from the chain
        found = ctx.node.chain.get_transaction(record.closing_txid)
        if found is not None:
            funding = found[0].inputs[0].prevout
            entry.update({"funding_txid": funding.txid[::-1].hex(), "funding_output_index": funding.index})
    return entry


def recovering_channel_json(recovering: RecoveringChannel) -> dict[str, Any]:
    """A channel restored from a static backup (node.recovery): no balance is known, it cannot pay;
    ``recovering`` until its funds are swept from the peer's commitment, then ``closed``."""
    entry = recovering.entry
    return {"channel_id": entry.channel_id.hex(), "peer_id": entry.peer_id.hex(), "state": recovering.state,
            "funding_txid": entry.funding_txid[::-1].hex(), "funding_output_index": entry.funding_output_index,
            "capacity_sat": entry.funding_sat, "initiator": entry.local_is_funder, "local_balance_msat": None,
            "remote_balance_msat": None, "pending_htlcs": 0,
            "closing_txid": None if recovering.closing_txid is None else recovering.closing_txid[::-1].hex(),
            "close_type": "data_loss" if recovering.state == "closed" else None,
            "limbo_sat": 0, "limbo_sweeps": [], "anchors": entry.anchors, "feerate_per_kw": None,
            **liquidity_json(None)}


def _closed(ctx: ApiContext, channel_id: bytes) -> ClosedChannel | None:
    return next((c for c in ctx.node.closed_channel_records() if c.channel_id == channel_id), None)


def _closed_now(ctx: ApiContext, channel_id: bytes, closing: Transaction) -> dict[str, Any]:
    """The answer of a close: the channel as now recorded closed."""
    record = _closed(ctx, channel_id) or ClosedChannel(channel_id, ctx.node.channel_peer_id(channel_id) or b"",
                                                       closing.txid, None)
    return closed_channel_json(ctx, record, ctx.node.pending_sweeps())


# -- handlers ------------------------------------------------------------------------------------

async def getinfo(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    node = ctx.node
    height, block_hash = node.chain.tip()
    counts = queries.channel_counts(node)
    return 200, {"node_id": node.node_id.hex(), "alias": node.gossip.alias, "color": "#" + node.gossip.rgb_color.hex(),
                 "network": node.network.name, "version": __version__, "listen": ctx.listen,
                 "uris": [f"{node.node_id.hex()}@{ctx.listen}"] if ctx.listen else [],
                 "chain_file": ctx.chain_file, "block_height": height, "block_hash": block_hash[::-1].hex(),
                 "synced_to_chain": queries.is_synced(node), "num_peers": len(node.peer_ids()),
                 "num_channels": len(node.channels), "num_active_channels": counts.active,
                 "num_pending_channels": counts.pending, "num_inactive_channels": counts.inactive,
                 "features": queries.features_json(node.features)}


async def list_peers(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    node = ctx.node
    peers = []
    for peer_id in node.peer_ids():
        peer = node.peer(peer_id)
        connected = None if peer is None else peer.connected_now()
        address = None if peer is None else peer.remote_address
        channels = [cid for cid in node.channels if node.channel_peer_id(cid) == peer_id
                    and cid not in node.closed_channels]
        peers.append({"node_id": peer_id.hex(),
                      "address": None if address is None else format_hostport(*address),
                      "features": [] if connected is None else queries.features_json(connected.remote_init.all_features),
                      "channels": [cid.hex() for cid in channels]})
    return 200, {"peers": peers}


async def connect(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    node_id = bytes.fromhex(body["node_id"])
    if node_id == ctx.node.node_id:
        raise DecodeError("node_id", "is this node's own id")
    await asyncio.wait_for(ctx.node.connect(body["host"], body["port"], node_id), 15)
    return 200, {"node_id": node_id.hex(), "connected": True}


async def open_channel(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    """Start opening and return once the funding transaction is broadcast (mine to confirm it)."""
    node = ctx.node
    node_id = bytes.fromhex(body["node_id"])
    amount_sat, push_msat = body["amount_sat"], body.get("push_msat", 0)
    if push_msat > amount_sat * 1000:
        raise DecodeError("push_msat", "exceeds the channel amount")
    if node_id not in node.peer_ids():
        raise ApiError(409, f"not connected to {node_id.hex()}: connect first", "node_id")
    balance = node.wallet.balance_sat()
    if balance < amount_sat + OPEN_FEE_MARGIN_SAT:
        raise ApiError(409, f"insufficient funds: the wallet has {balance} sat, the channel needs {amount_sat} "
                            f"sat plus up to {OPEN_FEE_MARGIN_SAT} sat of fees", "amount_sat")
    before = set(node.channels)

    async def opening() -> None:
        try:
            await node.open_channel(node_id, amount_sat, push_msat)
        except TimeoutError:  # Node.open_channel stops waiting, the channel does not: it gets ready once mined
            log.info("channel with %s: funding not confirmed yet; ready once it has enough confirmations",
                     node_id.hex())
        except KeyError:  # the peer went away between the check above and the opening
            raise ApiError(409, f"not connected to {node_id.hex()} any more: connect again", "node_id") from None
        except (PaymentError, UsageError, RejectedTransaction) as exc:
            raise ApiError(409, f"cannot open the channel: {exc}", "node_id") from None
        except ChannelOpenFailed as exc:  # the peer refused, or we refused its terms, or it went away
            raise ApiError(409, str(exc).removeprefix("node_id: "), "node_id") from None

    task = ctx.spawn(opening(), "channel opening")
    deadline = asyncio.get_running_loop().time() + ctx.open_timeout_s
    while True:
        new = [cid for cid in node.channels if cid not in before and node.channel_peer_id(cid) == node_id]
        if new:
            return 201, channel_json(ctx, new[0], node.channels[new[0]])
        if task.done():
            task.result()  # raises what went wrong
            raise ApiError(409, "the channel was opened and closed again before it could be listed", "node_id")
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("the peer did not sign the funding in time")
        await asyncio.sleep(0.02)


async def list_channels(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    channels = [channel_json(ctx, cid, ch) for cid, ch in ctx.node.channels.items()]
    sweeps = ctx.node.pending_sweeps()
    channels += [closed_channel_json(ctx, c, sweeps) for c in ctx.node.closed_channel_records()
                 if c.channel_id not in ctx.node.channels]
    channels += [recovering_channel_json(r) for r in ctx.node.recovering_channels()]
    return 200, {"channels": channels}


async def close_channel(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    channel_id = _hex_param(request, "channel_id")
    node = ctx.node
    if channel_id in node.closed_channels or _closed(ctx, channel_id) is not None:
        raise ApiError(409, "the channel is already closed", "channel_id")
    channel = node.channels.get(channel_id)
    if channel is None:
        raise ApiError(404, f"no channel {channel_id.hex()}", "channel_id")
    if not node.channel_is_ready(channel_id):
        raise ApiError(409, "the channel is not open yet (mine blocks to confirm its funding)", "channel_id")
    if node.channel_peer_id(channel_id) not in node.peer_ids():
        raise ApiError(409, "the channel's peer is not connected (a mutual close needs it; reconnect first)",
                       "channel_id")
    view = channel.log.commitment(Side.LOCAL)
    if view.htlcs or channel.log.commitment(Side.REMOTE).htlcs or channel.log.has_changes_to_sign():
        raise ApiError(409, "payments are in flight on this channel; close once they settle", "channel_id")
    script = None
    if "address" in body:
        try:
            script = address_to_script(body["address"], node.network)
        except (DecodeError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, DecodeError) else str(exc)
            raise DecodeError("address", f"is not a {node.network.name} address: {reason}") from None
        if not _shutdown_script_ok(script):
            raise DecodeError("address", "must be P2PKH, P2SH, P2WPKH or P2WSH (the forms BOLT 2 allows in "
                                         "shutdown without option_shutdown_anysegwit)")
    try:
        closing = await node.close_channel(channel_id, script_pubkey=script, feerate_per_kw=body.get("feerate_per_kw"))
    except (UsageError, RejectedTransaction) as exc:
        raise ApiError(409, f"cannot close: {exc}", "channel_id") from None
    return 200, _closed_now(ctx, channel_id, closing)


def _shutdown_script_ok(script: bytes) -> bool:
    # BOLT #2 shutdown: the sender MUST set scriptpubkey in one of the following forms:
    # OP_DUP OP_HASH160 20 20-bytes OP_EQUALVERIFY OP_CHECKSIG (P2PKH), OP_HASH160 20 20-bytes OP_EQUAL
    # (P2SH), OP_0 20 20-bytes (P2WPKH), OP_0 32 32-bytes (P2WSH); others only with anysegwit (not ours).
    return ((len(script) == 25 and script[:3] == b"\x76\xa9\x14" and script[23:] == b"\x88\xac")
            or (len(script) == 23 and script[:2] == b"\xa9\x14" and script[22:] == b"\x87")
            or (len(script) == 22 and script[:2] == b"\x00\x14")
            or (len(script) == 34 and script[:2] == b"\x00\x20"))


async def force_close_channel(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    """Unilateral close: our latest commitment is broadcast, the node sweeps our outputs later."""
    channel_id = _hex_param(request, "channel_id")
    node = ctx.node
    if channel_id in node.closed_channels or _closed(ctx, channel_id) is not None:
        raise ApiError(409, "the channel is already closed", "channel_id")
    if channel_id not in node.channels:
        raise ApiError(404, f"no channel {channel_id.hex()}", "channel_id")
    try:
        spend = await node.force_close_channel(channel_id, "force closed by its operator")
    except (UsageError, RejectedTransaction) as exc:
        raise ApiError(409, f"cannot force close: {exc}", "channel_id") from None
    return 200, _closed_now(ctx, channel_id, spend)


async def update_fee(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    """As the funder, move the channel to a new feerate (update_fee + commitment_signed)."""
    channel_id = _hex_param(request, "channel_id")
    node = ctx.node
    if channel_id not in node.channels or channel_id in node.closed_channels:
        raise ApiError(404, f"no open channel {channel_id.hex()}", "channel_id")
    try:
        await node.update_fee(channel_id, body["feerate_per_kw"])
    except UsageError as exc:
        raise _refused(exc, "feerate_per_kw") from None
    return 200, channel_json(ctx, channel_id, node.channels[channel_id])


async def create_invoice(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    amount_msat, description = body.get("amount_msat"), body.get("description", "")
    description_hash = body.get("description_hash")
    if description_hash is not None and description:
        raise DecodeError("description_hash", "give description or description_hash, not both")
    hints = ctx.node.private_route_hints() if body.get("private") else ()
    if body.get("payment_hash") is not None:  # a hold invoice: the preimage comes later (settle)
        if amount_msat is None or description_hash is not None or hints:
            raise DecodeError("payment_hash", "a hold invoice needs amount_msat, and takes no description_hash "
                                              "or private")
        try:
            invoice = ctx.node.create_hold_invoice(bytes.fromhex(body["payment_hash"]), amount_msat,
                                                   description, body.get("expiry", 3600))
        except UsageError as exc:
            raise _refused(exc, "payment_hash") from None
    else:
        invoice = ctx.node.create_invoice(amount_msat, description, body.get("expiry", 3600), route_hints=hints,
                                          description_hash=None if description_hash is None
                                          else bytes.fromhex(description_hash))
    record = ctx.node.store.invoice(invoice.payment_hash)
    assert record is not None  # create_invoice stored it
    return 201, invoice_json(record, ctx.times, ctx.now())


async def settle_invoice(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    """Release a held payment with its preimage (the preimage must hash to the path's payment_hash)."""
    payment_hash, preimage = _hex_param(request, "payment_hash"), bytes.fromhex(body["preimage"])
    if sha256(preimage) != payment_hash:
        raise ApiError(400, "does not hash to the invoice's payment_hash", "preimage")
    try:
        await ctx.node.settle_hold(preimage)
    except UsageError as exc:
        raise _refused(exc, "payment_hash") from None
    return 200, _invoice_after(ctx, payment_hash)


async def cancel_invoice(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    """Refuse a held payment: every part fails back to the payer."""
    payment_hash = _hex_param(request, "payment_hash")
    try:
        await ctx.node.cancel_hold(payment_hash)
    except UsageError as exc:
        raise _refused(exc, "payment_hash") from None
    return 200, _invoice_after(ctx, payment_hash)


def _refused(exc: UsageError, default_field: str) -> ApiError:
    """409 for a command the node refused; the field is the one its message starts with ("field: ...")."""
    field_, sep, reason = str(exc).partition(": ")
    if sep and field_.isidentifier():
        return ApiError(409, reason, field_)
    return ApiError(409, str(exc), default_field)


def _invoice_after(ctx: ApiContext, payment_hash: bytes) -> dict[str, Any]:
    record = ctx.node.store.invoice(payment_hash)
    if record is None:
        raise ApiError(404, f"no invoice {payment_hash.hex()}", "payment_hash")
    return invoice_json(record, ctx.times, ctx.now())


async def list_invoices(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    now = ctx.now()
    return 200, {"invoices": [invoice_json(r, ctx.times, now) for r in ctx.node.store.invoices()]}


async def pay(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    node = ctx.node
    try:
        invoice = decode(body["invoice"])
    except DecodeError as exc:
        raise DecodeError("invoice", f"{exc.field}: {exc.reason}") from None
    now = ctx.now()
    if invoice.network != node.network:
        raise DecodeError("invoice", f"is for {invoice.network.name}; this node runs on {node.network.name}")
    amount_msat = body.get("amount_msat")
    if invoice.amount_msat is None and amount_msat is None:
        raise DecodeError("amount_msat", "is required: the invoice names no amount")
    if invoice.amount_msat is not None and amount_msat not in (None, invoice.amount_msat):
        raise DecodeError("amount_msat", f"differs from the invoice's own amount ({invoice.amount_msat} msat)")
    if invoice.is_expired(now):
        raise ApiError(409, f"the invoice expired at {invoice.expires_at}", "invoice")
    if invoice.payee == node.node_id:
        raise ApiError(409, "the invoice is this node's own", "invoice")
    earlier = node.store.payment(invoice.payment_hash)
    if earlier is not None and earlier.status != "failed":
        raise ApiError(409, f"this invoice is already {'paid' if earlier.status == 'succeeded' else 'being paid'}"
                            " (paying it twice would let any hop take the second payment)", "invoice")
    ready = [cid for cid in node.channels
             if node.channel_is_ready(cid) and node.channel_peer_id(cid) in node.peer_ids()]
    if not ready:
        # The node routes over its channels (multi-hop, invoice route hints); with none usable
        # there is nothing to try.
        suspended = [cid for cid in node.channels if cid in node._funding_watch.suspended]
        if suspended:  # node.funding_watch: a reorganisation took a funding's confirmations back
            raise ApiError(409, f"no ready channel: {len(suspended)} suspended: its funding was reorganised out "
                                "and has not confirmed again", "invoice")
        raise ApiError(409, "no ready channel with its peer connected now: open or reconnect one first",
                       "invoice")
    from lightspeed.api.async_routes import pay_automatically  # it imports this module

    automatic = await pay_automatically(ctx, invoice, body)  # the payee is our LSP's client: async
    if automatic is not None:
        ctx.times.started[invoice.payment_hash] = now
        return automatic
    limits = _pay_limits(ctx, body, invoice.amount_msat or amount_msat or 0)
    return_path = None
    if body.get("return_path", False):
        try:  # a fresh blinded way back for this payment only (node/return_paths.py)
            return_path = node.return_paths.create()
        except UsageError as exc:
            raise ApiError(409, str(exc).partition(": ")[2], "return_path") from None
    ctx.times.started[invoice.payment_hash] = now
    timeout_s = body.get("timeout_s", 60)
    try:
        await node.pay(invoice, timeout=timeout_s, amount_msat=amount_msat, limits=limits, return_path=return_path)
    except (LightspeedError, TimeoutError) as exc:
        record = node.store.payment(invoice.payment_hash)
        if record is not None and record.status == "pending":
            # Not a failure: the HTLCs are out and may still settle (or fail) at any time.
            payment_hash = invoice.payment_hash.hex()
            raise ApiError(504, f"the payment is still pending after {timeout_s} s; it will end settled or "
                                f"failed: GET /v1/payments/{payment_hash}/track (lightspeed trackpayment "
                                f"{payment_hash}) waits for it",
                           details={"payment_hash": payment_hash}) from None
        ctx.times.settled.setdefault(invoice.payment_hash, ctx.now())
        if isinstance(exc, (PaymentError, UsageError)):
            raise ApiError(409, str(exc), "invoice") from None
        raise
    ctx.times.settled.setdefault(invoice.payment_hash, ctx.now())
    record = node.store.payment(invoice.payment_hash)
    assert record is not None  # pay() stored it
    return 200, with_fee(ctx, sent_json(record, ctx.times))


def with_fee(ctx: ApiContext, entry: dict[str, Any]) -> dict[str, Any]:
    """A sent payment with the routing fee it paid (known for payments settled since the daemon started)."""
    return {**entry, "fee_msat": ctx.node.payment_fees.get(bytes.fromhex(entry["payment_hash"]))}


def _pay_limits(ctx: ApiContext, body: dict[str, Any], amount_msat: int) -> PayLimits:
    """``max_fee_msat``/``max_fee_ppm`` (the smaller wins), ``outgoing_channel``, ``max_parts``."""
    budgets = [body[k] for k in ("max_fee_msat",) if k in body]
    if "max_fee_ppm" in body:
        budgets.append(amount_msat * body["max_fee_ppm"] // 1_000_000)
    outgoing = None
    if "outgoing_channel" in body:
        outgoing = queries.parse_scid(body["outgoing_channel"])
        ours = {ctx.node.short_channel_id(cid): cid for cid in ctx.node.channels}
        if outgoing is None or outgoing not in ours:
            raise ApiError(409, f"no channel of ours is {body['outgoing_channel']}", "outgoing_channel")
        if not queries.is_active(ctx.node, ours[outgoing]):
            raise ApiError(409, f"the channel {body['outgoing_channel']} is not active (peer offline, closing, "
                                "or not open yet)", "outgoing_channel")
    return PayLimits(min(budgets) if budgets else None, outgoing, body.get("max_parts"))


async def list_payments(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    direction = request.query_params.get("direction")  # checked against its schema: sent or received
    node, times = ctx.node, ctx.times
    payments = []
    if direction in (None, "sent"):
        payments += [sent_json(p, times) for p in node.store.payments()]
    if direction in (None, "received"):
        payments += [received_json(i, times, node.node_id) for i in node.store.invoices() if i.status == "paid"]
    payments.sort(key=lambda p: p["created_at"] or p["settled_at"] or 0)  # unknown times: before this run
    return 200, {"payments": payments}


async def balance(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    node = ctx.node
    local = sum(ch.log.commitment(Side.LOCAL).to_local_msat for ch in node.channels.values())
    remote = sum(ch.log.commitment(Side.LOCAL).to_remote_msat for ch in node.channels.values())
    sweeps = node.pending_sweeps()  # force-closed funds still on their way to the wallet
    return 200, {"onchain_sat": node.wallet.balance_sat(), "onchain_confirmed_sat": node.wallet.balance_sat(1),
                 "channels_local_msat": local, "channels_remote_msat": remote,
                 "limbo_sat": sum(s.amount_sat for s in sweeps),
                 "limbo_sweeps": [{"channel_id": s.channel_id.hex(), **_sweep_json(s)} for s in sweeps]}
