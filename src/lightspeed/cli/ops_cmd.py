"""Operator commands as ``lncli``/``lightning-cli`` users expect them, each one REST call to the daemon.

``pendingchannels``, ``closedchannels``, ``disconnect``, ``stop``, ``invoice lookup|wait``,
``trackpayment``, ``keysend``, ``signmessage``, ``verifymessage``; and :func:`resolve_channel`, which
lets ``close`` take a short channel id, a funding outpoint or a peer's node id.
"""

from __future__ import annotations

import re
from typing import Any

import click

from lightspeed.cli.common import INTERRUPT_HINT, Amount, datadir_option, segment, with_example
from lightspeed.cli.node_cmd import _call, _errors_to_exit, _print
from lightspeed.errors import UsageError

_CHANNEL_ID = re.compile(r"[0-9a-fA-F]{64}")
_OUTPOINT = re.compile(r"([0-9a-fA-F]{64}):([0-9]{1,5})")
_SCID = re.compile(r"[0-9]+x[0-9]+x[0-9]+")
_NODE_ID = re.compile(r"0[23][0-9a-fA-F]{64}")


def resolve_channel(ctx: click.Context, channel: str) -> str:
    """The channel id CHANNEL names: a channel id, a short channel id (BLOCKxTXxOUT), a funding
    outpoint (TXID:INDEX), or a peer's node id when it has exactly one channel that is not closed."""
    if _CHANNEL_ID.fullmatch(channel):
        return channel.lower()
    if not (_OUTPOINT.fullmatch(channel) or _SCID.fullmatch(channel) or _NODE_ID.fullmatch(channel)):
        raise UsageError(f"CHANNEL {channel!r}: give a channel id (64 hex digits), a short channel id "
                         "(BLOCKxTXxOUTPUT), a funding outpoint (TXID:INDEX) or a peer's node id")
    listed = [c for c in _call(ctx, "GET", "/v1/channels")["channels"] if c["state"] != "closed"]
    outpoint = _OUTPOINT.fullmatch(channel)
    if outpoint:
        found = [c for c in listed if c["funding_txid"] == outpoint[1].lower()
                 and c["funding_output_index"] == int(outpoint[2])]
    elif _SCID.fullmatch(channel):
        found = [c for c in listed if c["short_channel_id"] == channel]
    else:
        found = [c for c in listed if c["peer_id"] == channel.lower()]
        if len(found) > 1:
            raise UsageError(f"CHANNEL: the peer {channel} has {len(found)} channels; name one by its id, "
                             "short channel id or outpoint")
    if not found:
        raise UsageError(f"CHANNEL: no open channel {channel}")
    channel_id: str = found[0]["channel_id"]
    return channel_id


@click.command("pendingchannels")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice pendingchannels")
def pending_channels(ctx: click.Context) -> None:
    """Channels opening, closing, and force-closed with funds in limbo (with their maturity heights)."""
    _print(_call(ctx, "GET", "/v1/channels/pending"))


@click.command("closedchannels")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice closedchannels")
def closed_channels(ctx: click.Context) -> None:
    """Closed channels (kept across restarts), oldest first."""
    _print(_call(ctx, "GET", "/v1/channels/closed"))


@click.command("disconnect")
@click.argument("node_id")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice disconnect $BOB")
def disconnect(ctx: click.Context, node_id: str) -> None:
    """Close the connection to NODE_ID (refused while it has open channels: the node redials those)."""
    _print(_call(ctx, "POST", f"/v1/peers/{segment(node_id, 'NODE_ID')}/disconnect"))


@click.command("stop")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice stop")
def stop(ctx: click.Context) -> None:
    """Stop the daemon cleanly (as Ctrl-C or SIGTERM would)."""
    _print(_call(ctx, "POST", "/v1/stop"))


@click.command("lookup")
@click.argument("payment_hash")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/bob invoice lookup $PAYMENT_HASH")
def invoice_lookup(ctx: click.Context, payment_hash: str) -> None:
    """The invoice of PAYMENT_HASH this node issued, with its status."""
    _print(_call(ctx, "GET", f"/v1/invoices/{segment(payment_hash, 'PAYMENT_HASH')}"))


_wait_option = click.option("--timeout", "timeout_s", type=click.IntRange(1, 3600), default=60,
                            show_default=True, help="Seconds to wait at most.")


@click.command("wait")
@click.argument("payment_hash")
@_wait_option
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/bob invoice wait $PAYMENT_HASH --timeout 600")
def invoice_wait(ctx: click.Context, payment_hash: str, timeout_s: int) -> None:
    """Wait until the invoice of PAYMENT_HASH is paid or expires; prints it (still unpaid after --timeout)."""
    _print(_call(ctx, "GET", f"/v1/invoices/{segment(payment_hash, 'PAYMENT_HASH')}/wait",
                 params={"timeout_s": str(timeout_s)}, wait_s=timeout_s))


@click.command("trackpayment")
@click.argument("payment_hash")
@_wait_option
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice trackpayment $PAYMENT_HASH")
def track_payment(ctx: click.Context, payment_hash: str, timeout_s: int) -> None:
    """Wait until the payment of PAYMENT_HASH succeeded or failed; prints it (pending after --timeout)."""
    ctx.meta[INTERRUPT_HINT] = "the payment goes on; track it again to see how it ends"
    _print(_call(ctx, "GET", f"/v1/payments/{segment(payment_hash, 'PAYMENT_HASH')}/track",
                 params={"timeout_s": str(timeout_s)}, wait_s=timeout_s))


@click.command("keysend")
@click.argument("node_id")
@click.argument("amount_msat", type=Amount("msat", minimum=1))
@click.option("--amp", "amp_parts", type=click.IntRange(1, 16),
              help="Send as an AMP payment in this many shards instead of one keysend HTLC.")
@click.option("--timeout", "timeout_s", type=click.IntRange(1, 600), default=60, show_default=True,
              help="Seconds to wait.")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice keysend $BOB 5000sat",
              "lightspeed --datadir ~/.lightspeed/alice keysend $BOB 5000sat --amp 3")
def keysend(ctx: click.Context, node_id: str, amount_msat: int, amp_parts: int | None, timeout_s: int) -> None:
    """Pay AMOUNT_MSAT to NODE_ID without an invoice (keysend, or AMP with --amp)."""
    ctx.meta[INTERRUPT_HINT] = "the daemon goes on with the payment; `lightspeed payments` shows how it ends"
    body: dict[str, Any] = {"node_id": node_id, "amount_msat": amount_msat, "timeout_s": timeout_s}
    if amp_parts is not None:
        body["amp_parts"] = amp_parts
    _print(_call(ctx, "POST", "/v1/keysend", body, wait_s=timeout_s))


@click.command("signmessage")
@click.argument("message")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example('lightspeed --datadir ~/.lightspeed/alice signmessage "I run this node"')
def sign_message(ctx: click.Context, message: str) -> None:
    """Sign MESSAGE with the node key (zbase32, as lncli/lightning-cli signmessage)."""
    _print(_call(ctx, "POST", "/v1/messages/sign", {"message": message}))


@click.command("verifymessage")
@click.argument("message")
@click.argument("signature")
@click.option("--pubkey", help="The node id the signature must be from (else: any node this node knows).")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example('lightspeed --datadir ~/.lightspeed/bob verifymessage "I run this node" $SIGNATURE --pubkey $ALICE')
def verify_message(ctx: click.Context, message: str, signature: str, pubkey: str | None) -> None:
    """Recover who signed MESSAGE with SIGNATURE (zbase32); valid says whether it is --pubkey (or a known node)."""
    body: dict[str, Any] = {"message": message, "signature": signature}
    if pubkey is not None:
        body["pubkey"] = pubkey
    _print(_call(ctx, "POST", "/v1/messages/verify", body))


@click.command("describegraph")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice describegraph > graph.json",
              "lightspeed route --graph graph.json $ALICE $CAROL 1000sat")
def describe_graph(ctx: click.Context) -> None:
    """The network graph the node knows from gossip, as LND's describegraph JSON."""
    _print(_call(ctx, "GET", "/v1/graph"))


@click.command("getnodeinfo")
@click.argument("node_id")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice getnodeinfo $CAROL")
def get_node_info(ctx: click.Context, node_id: str) -> None:
    """NODE_ID as the graph knows it: its channels and their capacity."""
    _print(_call(ctx, "GET", f"/v1/graph/nodes/{segment(node_id, 'NODE_ID')}"))


@click.command("getchaninfo")
@click.argument("short_channel_id")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice getchaninfo 103x1x0")
def get_chan_info(ctx: click.Context, short_channel_id: str) -> None:
    """The graph's channel SHORT_CHANNEL_ID (BLOCKxTXxOUTPUT or an integer) with both policies."""
    _print(_call(ctx, "GET", f"/v1/graph/channels/{segment(short_channel_id, 'SHORT_CHANNEL_ID')}"))


@click.command("queryroutes")
@click.argument("node_id")
@click.argument("amount_msat", type=Amount("msat", minimum=1))
@click.option("--max-fee-msat", type=Amount("msat"), help="The most the route may cost in fees.")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice queryroutes $CAROL 5000sat")
def query_routes(ctx: click.Context, node_id: str, amount_msat: int, max_fee_msat: int | None) -> None:
    """The route a payment of AMOUNT_MSAT to NODE_ID would take first, on the live graph."""
    body: dict[str, Any] = {"node_id": node_id, "amount_msat": amount_msat}
    if max_fee_msat is not None:
        body["max_fee_msat"] = max_fee_msat
    _print(_call(ctx, "POST", "/v1/graph/routes", body))


@click.command("feereport")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/bob feereport")
def fee_report(ctx: click.Context) -> None:
    """What the node charges to forward, per channel."""
    _print(_call(ctx, "GET", "/v1/fees"))


@click.command("updatechanpolicy")
@click.option("--base-fee-msat", "fee_base_msat", type=Amount("msat"), help="Base fee per forwarded HTLC.")
@click.option("--fee-ppm", type=click.IntRange(0, 2**32 - 1), help="Proportional fee in millionths.")
@click.option("--cltv-delta", type=click.IntRange(1, 2**16 - 1), help="CLTV expiry delta in blocks.")
@click.option("--min-htlc-msat", "htlc_minimum_msat", type=Amount("msat"), help="Smallest HTLC forwarded.")
@click.option("--max-htlc-msat", "htlc_maximum_msat", type=Amount("msat", minimum=1), help="Largest HTLC forwarded.")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/bob updatechanpolicy --base-fee-msat 1000 --fee-ppm 250")
def update_chan_policy(ctx: click.Context, fee_base_msat: int | None, fee_ppm: int | None, cltv_delta: int | None,
                       htlc_minimum_msat: int | None, htlc_maximum_msat: int | None) -> None:
    """Change the forwarding terms of every channel (a new channel_update goes out for each)."""
    terms = {"fee_base_msat": fee_base_msat, "fee_ppm": fee_ppm, "cltv_delta": cltv_delta,
             "htlc_minimum_msat": htlc_minimum_msat, "htlc_maximum_msat": htlc_maximum_msat}
    body = {key: value for key, value in terms.items() if value is not None}
    if not body:
        raise UsageError("give at least one of --base-fee-msat, --fee-ppm, --cltv-delta, --min-htlc-msat, "
                         "--max-htlc-msat")
    _print(_call(ctx, "POST", "/v1/fees", body))


@click.command("fwdinghistory")
@click.option("--start-time", type=click.IntRange(min=0), help="Unix seconds: forwards from then on.")
@click.option("--end-time", type=click.IntRange(min=0), help="Unix seconds: forwards before then.")
@click.option("--max-events", type=click.IntRange(1, 10_000), default=100, show_default=True)
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/bob fwdinghistory --start-time 1733400000")
def forwarding_history(ctx: click.Context, start_time: int | None, end_time: int | None, max_events: int) -> None:
    """HTLCs the node forwarded that settled, with the fee each earned."""
    params = {"max_events": str(max_events)}
    for key, value in (("start_time", start_time), ("end_time", end_time)):
        if value is not None:
            params[key] = str(value)
    _print(_call(ctx, "GET", "/v1/forwards", params=params))


def register(cli: click.Group, invoice_group: click.Group) -> None:
    for command in (pending_channels, closed_channels, disconnect, stop, track_payment, keysend, sign_message,
                    verify_message, describe_graph, get_node_info, get_chan_info, query_routes, fee_report,
                    update_chan_policy, forwarding_history):
        cli.add_command(command)
    for sub in (invoice_lookup, invoice_wait):
        invoice_group.add_command(sub)
