"""Which scope each REST route needs (one table), and how a pay token's budget is spent.

Scopes are levels (:data:`lightspeed.api.credentials.SCOPES`): ``readonly`` reads (GETs, and the
POSTs that only compute: ``queryRoutes``, ``verifyMessage``, ``decodeOffer``); ``invoice`` also
receives (invoices, offers, addresses, hold-invoice settle/cancel); ``pay`` also pays BOLT 11 invoices within its
budget; ``admin`` does everything else (peers, channels, fees, keysend, signing, tokens, stop).
:func:`lightspeed.api.app.create_app` refuses to build an app with a route missing here.

Keysend/AMP, blinded payments and BOLT 12 offers are admin-only: the node takes no fee limit
for them, so the fees such a payment could pay are not known before it is sent and a budget
could not hold; so is creating a refund (anyone who claims it is paid, later).
"""

from __future__ import annotations

import asyncio
from typing import Any

from lightspeed.api.credentials import Credential, Credentials, Scope
from lightspeed.errors import DecodeError
from lightspeed.invoice import decode
from lightspeed.node.node import Node, PaymentFailed, PaymentSent

REQUIRED_SCOPE: dict[str, Scope] = {
    # readonly: what the node knows
    "getinfo": "readonly", "listPeers": "readonly", "listChannels": "readonly", "pendingChannels": "readonly",
    "closedChannels": "readonly", "balance": "readonly", "listInvoices": "readonly", "lookupInvoice": "readonly",
    "waitInvoice": "readonly", "invoiceQr": "readonly", "listPayments": "readonly", "trackPayment": "readonly",
    "forwardingHistory": "readonly", "describeGraph": "readonly", "getNodeInfo": "readonly",
    "getChanInfo": "readonly", "queryRoutes": "readonly", "feeReport": "readonly", "verifyMessage": "readonly",
    "onionMessageStats": "readonly", "listRefunds": "readonly", "events": "readonly", "openapi": "readonly",
    "listFunds": "readonly", "listTransactions": "readonly", "lspHeld": "readonly", "lspList": "readonly", "decodeOffer": "readonly",
    # invoice: receive money
    "createInvoice": "invoice", "settleInvoice": "invoice", "cancelInvoice": "invoice", "createOffer": "invoice",
    "createBlindedPaths": "invoice", "newAddress": "invoice", "payRefund": "invoice",  # a refund owed to us
    # pay: spend, within the token's budget
    "payInvoice": "pay", "fetchInvoice": "pay",
    # admin: everything that moves channels, keys, or the node itself
    "connect": "admin", "disconnectPeer": "admin", "openChannel": "admin", "closeChannel": "admin",
    "forceCloseChannel": "admin", "updateChannelFee": "admin", "updateChannelPolicy": "admin",
    "keysend": "admin", "payBlinded": "admin", "payOffer": "admin", "createRefund": "admin", "sendReturnRefund": "admin",
    "sendOnionMessage": "admin", "createOnionMessagePath": "admin",
    "lspRegister": "admin", "payAsync": "admin",  # async payments: no token budget holds them
    "exportBackup": "admin",  # encrypted, but it lists every channel and peer
    "withdraw": "admin",  # on-chain funds out: no budget holds it (the fee is the chain's)
    "signMessage": "admin", "stop": "admin", "listTokens": "admin", "createToken": "admin",
    "revokeToken": "admin",
    # multi-hash requests: checking one only computes; creating one receives; paying, declaring (signs
    # with a key of ours) and settling (pays refunds) are admin: no budget holds several payments
    "verifyMultihash": "readonly", "multihashStatus": "readonly", "createMultihash": "invoice",
    "payMultihash": "admin", "declareMultihash": "admin", "settleMultihash": "admin",
}

DEFAULT_FEE_PPM = 10_000  # a budgeted payment without a fee limit may pay 1% in fees...
MIN_DEFAULT_FEE_MSAT = 1_000  # ...or 1 sat, whichever is more (a base fee alone is often 1 sat)


def default_fee_limit_msat(amount_msat: int) -> int:
    return max(amount_msat * DEFAULT_FEE_PPM // 1_000_000, MIN_DEFAULT_FEE_MSAT)


def payment_cost(body: Any) -> tuple[int, dict[str, Any]] | None:
    """For a budgeted ``payInvoice``: the most it can spend, and the body with that fee limit in it.

    None when the invoice cannot be read or names no amount and none is given: the handler then
    refuses it with its own 400, so nothing is spent.
    """
    if not isinstance(body, dict):
        return None
    try:
        invoice_msat = decode(body["invoice"]).amount_msat
    except DecodeError:
        return None
    amount_msat = invoice_msat if invoice_msat is not None else body.get("amount_msat")
    if not isinstance(amount_msat, int):
        return None
    limits = [body[k] for k in ("max_fee_msat",) if k in body]
    if "max_fee_ppm" in body:
        limits.append(amount_msat * body["max_fee_ppm"] // 1_000_000)
    fee_limit = min(limits) if limits else default_fee_limit_msat(amount_msat)
    return amount_msat + fee_limit, {**body, "max_fee_msat": fee_limit}


def settle(credentials: Credentials, credential: Credential, reserved_msat: int, status: int,
           result: Any, details: dict[str, str] | None = None) -> None:
    """After a budgeted payment: give back what it did not spend.

    A failed payment (a 4xx, 5xx other than 504) gives back all; a settled one what its amount
    and fee left of the reservation; one of unknown fee keeps it all. One still pending (504)
    keeps it until the node reports how it ended (:func:`settle_held`).
    """
    if status == 504:
        payment_hash = (details or {}).get("payment_hash")
        if payment_hash is not None:
            credentials.hold(bytes.fromhex(payment_hash), credential, reserved_msat)
        return
    if status >= 400:
        credentials.refund(credential, reserved_msat)
        return
    if isinstance(result, dict) and result.get("status") == "failed":
        credentials.refund(credential, reserved_msat)
        return
    amount, fee = (result.get("amount_msat"), result.get("fee_msat")) if isinstance(result, dict) else (None, None)
    if isinstance(amount, int) and isinstance(fee, int):
        credentials.refund(credential, reserved_msat - amount - fee)


FEE_WAIT_S = 2.0  # the fee of a settled payment is known a moment after its PaymentSent event


async def settle_held(credentials: Credentials, node: Node, event: PaymentSent | PaymentFailed) -> None:
    """A payment still pending when its request ended (504) has ended: settle its reservation.

    Failed: all of it comes back. Settled: what its amount and fee left (the fee is waited for a
    moment; unknown, the reservation is kept whole: never less counted than spent).
    """
    if event.payment_hash not in credentials.held():
        return
    if isinstance(event, PaymentFailed):
        credentials.release(event.payment_hash, 0)
        return
    for _ in range(int(FEE_WAIT_S / 0.05)):
        if event.payment_hash in node.payment_fees:
            break
        await asyncio.sleep(0.05)
    fee = node.payment_fees.get(event.payment_hash)
    credentials.release(event.payment_hash, None if fee is None else event.amount_msat + fee)
