"""The on-chain wallet's REST routes: new addresses by type, funds, history, withdrawals.

Kept apart from :mod:`lightspeed.api.app` (whose ``ENDPOINTS`` includes these) so the table
there stays readable. Amounts are sat integers; a fee rate is sat per 1000 weight units, as
everywhere in the node (``chain set-feerate``), at least 253 (Bitcoin Core's relay floor).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from lightspeed.api.handlers import ApiContext, ApiError
from lightspeed.api.openapi import Endpoint
from lightspeed.api.schema import Schema, integer, obj, string
from lightspeed.bitcoin.address import address_to_script, script_to_address
from lightspeed.bitcoin.tx import Transaction
from lightspeed.chain.source import Utxo
from lightspeed.chain.wallet import ADDRESS_TYPES, Wallet
from lightspeed.errors import DecodeError, UsageError

MIN_FEERATE_PER_KW = 253
_NULLABLE_INT: Schema = {"type": ["integer", "null"]}
_OUTPUT: Schema = {"type": "object", "properties": {
    "txid": {"type": "string"}, "vout": {"type": "integer"}, "value_sat": {"type": "integer"},
    "address": {"type": "string"}, "type": {"enum": list(ADDRESS_TYPES)}, "path": {"type": "string"},
    "status": {"enum": ["confirmed", "unconfirmed"]}, "blockheight": _NULLABLE_INT,
    "spendable": {"type": "boolean"}}}
_TX: Schema = {"type": "object", "properties": {
    "txid": {"type": "string"}, "blockheight": _NULLABLE_INT, "confirmations": {"type": "integer"},
    "received_sat": {"type": "integer"}, "sent_sat": {"type": "integer"}, "net_sat": {"type": "integer"},
    "fee_sat": _NULLABLE_INT, "raw_tx": {"type": "string"}}}


def _output_json(wallet: Wallet, utxo: Utxo, tip: int) -> dict[str, Any]:
    key = wallet.owns(utxo.output.script_pubkey)
    kind = key.kind if key is not None else "p2wpkh"
    return {"txid": utxo.outpoint.txid[::-1].hex(), "vout": utxo.outpoint.index, "value_sat": utxo.output.value_sat,
            "address": script_to_address(utxo.output.script_pubkey, wallet.network) or "",
            "type": kind, "path": key.path if key is not None else "",
            "status": "unconfirmed" if utxo.height is None else "confirmed", "blockheight": utxo.height,
            "spendable": key is not None}  # both P2WPKH and P2TR (key path) coins are spent


async def new_address(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    kind = body.get("type", "p2wpkh")
    try:
        key = ctx.node.wallet.new_key(kind)
    except UsageError as exc:  # p2tr on a datadir whose wallet predates BIP 39: the field is "type"
        raise ApiError(409, str(exc).removeprefix("type: "), field="type") from None
    return 201, {"address": ctx.node.wallet.address(key), "type": kind, "path": key.path}


async def list_funds(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    wallet = ctx.node.wallet
    tip = wallet.chain.tip()[0]
    outputs = [_output_json(wallet, u, tip) for u in wallet.all_utxos()]
    return 200, {"outputs": outputs, "total_sat": sum(o["value_sat"] for o in outputs),
                 "spendable_sat": sum(o["value_sat"] for o in outputs if o["spendable"])}


async def list_transactions(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    wallet = ctx.node.wallet
    tip = wallet.chain.tip()[0]
    return 200, {"transactions": [
        {"txid": e.tx.txid[::-1].hex(), "blockheight": e.height,
         "confirmations": 0 if e.height is None else tip - e.height + 1,
         "received_sat": e.received_sat, "sent_sat": e.sent_sat, "net_sat": e.net_sat, "fee_sat": e.fee_sat,
         "raw_tx": e.tx.serialize().hex()} for e in wallet.history()]}


async def withdraw(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    wallet = ctx.node.wallet
    if ("amount_sat" in body) == bool(body.get("all", False)):
        raise ApiError(400, "give either amount_sat or all: true (not both, not neither)", "amount_sat")
    try:
        script = address_to_script(body["address"], wallet.network)
    except DecodeError as exc:
        raise ApiError(400, f"not a {wallet.network.name} address: {exc.reason}", "address") from None
    tx: Transaction = wallet.withdraw(script, body.get("amount_sat"), body.get("feerate_per_kw"))
    paid = sum(o.value_sat for o in tx.outputs if o.script_pubkey == script)
    return 201, {"txid": tx.txid[::-1].hex(), "amount_sat": paid, "raw_tx": tx.serialize().hex()}


def endpoints() -> tuple[Endpoint, ...]:
    return (
        Endpoint("POST", "/v1/addresses", "newAddress",
                 "A fresh on-chain address of the node's wallet (BIP 84 p2wpkh, or BIP 86 p2tr: spent by the "
                 "BIP 341 key path)", new_address,
                 {"type": "object", "properties": {"address": {"type": "string"}, "type": {"type": "string"},
                                                   "path": {"type": "string"}}},
                 body=obj({"type": {"enum": list(ADDRESS_TYPES), "description": "the address type (p2wpkh)"}}),
                 status=201),
        Endpoint("GET", "/v1/funds", "listFunds",
                 "The wallet's unspent outputs (listfunds, listunspent), with their key path and whether the "
                 "wallet spends them", list_funds,
                 {"type": "object", "properties": {"outputs": {"type": "array", "items": _OUTPUT},
                                                   "total_sat": {"type": "integer"},
                                                   "spendable_sat": {"type": "integer"}}}),
        Endpoint("GET", "/v1/transactions", "listTransactions",
                 "The wallet's on-chain transactions, oldest first (mempool last)", list_transactions,
                 {"type": "object", "properties": {"transactions": {"type": "array", "items": _TX}}}),
        Endpoint("POST", "/v1/withdraw", "withdraw",
                 "Send on-chain funds to an address: amount_sat, or all (every spendable coin, fee deducted)",
                 withdraw, {"type": "object", "properties": {
                     "txid": {"type": "string"}, "amount_sat": {"type": "integer"}, "raw_tx": {"type": "string"}}},
                 body=obj({"address": string("where the funds go (an address of the node's network)", 1, 90),
                           "amount_sat": integer("sat to send (at least the 294 sat dust limit)", 1, 21 * 10**14),
                           "all": {"type": "boolean", "description": "send every spendable coin"},
                           "feerate_per_kw": integer("sat per 1000 weight units (default: the chain's estimate)",
                                                     MIN_FEERATE_PER_KW, 10_000_000)}, ["address"]),
                 status=201),
    )
