"""Multi-hash requests on a node (``node.multihash``): create and track them as payee, pay and
declare as payer, settle refund declarations as payee. The documents are :mod:`lightspeed.multihash`.

Payee. :meth:`MultihashPayments.create` makes one ordinary invoice per part (each settles as soon
as it is paid, see :mod:`lightspeed.multihash.request` for why not hold invoices) and signs the
request with the node key. The payee keeps nothing else: the request comes back signed by
itself, which proves it, and each part's state is its invoice's. The goods are delivered only
when :meth:`status` says ``complete`` (every part paid).

Payer. :meth:`pay` pays the parts one after the other, each with the same return path (issue 15
part 3) in its final payload, whose key is derived from the node key and the request id: the
payer can sign a declaration later without having stored anything, and that key is what the
payee trusts. One part at a time because parts paid together compete for the same channels:
two parts split into shards can starve each other so that neither completes, and held shards
wait out the payee's MPP timeout. A failed part can be paid again later (all paid), or
:meth:`declare` signs a refund declaration (all refunded).

Settling a declaration (payee). Every check of :func:`~lightspeed.multihash.verify_declaration`,
then against our own records: the request is ours; each succeeded part was received by us and
its payment carried a return path whose key is ``payer_key`` (a node that only forwarded a part
learned its preimage, never that key); each failed part was not received and has no HTLC arriving
now. Then the failed parts' invoices are cancelled (committed: a late payment for one is refused,
so the request can never turn complete after a refund) and each succeeded part is refunded
through the declaration's return path, at most its amount: the parts are committed by
:class:`~lightspeed.node.return_paths.ReturnPaths` before their HTLCs leave, so settling the same
declaration again (after a restart too) pays only what a failed refund left, never twice.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import DecodeError, PaymentError, UsageError
from lightspeed.invoice import decode as decode_invoice
from lightspeed.multihash import (
    MAX_PARTS,
    DeclarationError,
    MultihashRequest,
    Outcome,
    Part,
    RefundDeclaration,
    SignedDeclaration,
    SignedRequest,
    sign_declaration,
    sign_request,
    verify_declaration,
)
from lightspeed.node.paying import PayLimits
from lightspeed.node.return_paths import DEFAULT_RETURN_PATH_EXPIRY, RefundError, parse_return_path
from lightspeed.offers import decode_offer

if TYPE_CHECKING:
    from lightspeed.node.node import Node

MAX_DESCRIPTION_BYTES = 639  # BOLT 11


@dataclass(frozen=True)
class PartPaid:
    """How paying one part ended for the payer: ``succeeded`` (preimage), ``failed`` or ``pending``."""

    payment_hash: bytes
    amount_msat: int
    status: str
    preimage: bytes | None = None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"payment_hash": self.payment_hash.hex(), "amount_msat": self.amount_msat, "status": self.status,
                "preimage": None if self.preimage is None else self.preimage.hex(), "reason": self.reason or None}


def _description(delivers: str, index: int, count: int) -> str:
    text = f"part {index + 1} of {count}: {delivers}"
    return text.encode()[:MAX_DESCRIPTION_BYTES].decode(errors="ignore")


class MultihashPayments:
    """Both roles of multi-hash requests on one node (see the module docstring)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._settling: dict[bytes, asyncio.Lock] = {}  # request id -> one settlement at a time

    # -- the payee ---------------------------------------------------------------------------------

    def create(self, amounts_msat: Sequence[int], delivers: str, *, expiry: int = 3600) -> SignedRequest:
        """A signed request with one invoice per amount; UsageError names a bad input."""
        node = self.node
        if not 1 <= len(amounts_msat) <= MAX_PARTS:
            raise UsageError(f"amounts_msat: expected 1 to {MAX_PARTS} amounts")
        for i, amount in enumerate(amounts_msat):
            if not isinstance(amount, int) or isinstance(amount, bool) or not 1 <= amount <= 2**53:
                raise UsageError(f"amounts_msat[{i}]: expected an amount from 1 to {2**53} msat")
        try:
            size = len(delivers.encode())
        except UnicodeEncodeError:
            raise UsageError("delivers: is not valid Unicode") from None
        if size > MAX_DESCRIPTION_BYTES:
            raise UsageError(f"delivers: must be at most {MAX_DESCRIPTION_BYTES} bytes in UTF-8")
        if not 60 <= expiry <= 30 * 86_400:
            raise UsageError("expiry: expected 60 seconds to 30 days")
        now = int(time.time())
        parts = []
        for i, amount in enumerate(amounts_msat):
            invoice = node.create_invoice(amount, _description(delivers, i, len(amounts_msat)), expiry=expiry)
            parts.append(Part(invoice.payment_hash, amount, invoice.encode()))
        request = MultihashRequest(node.node_id, tuple(parts), delivers, now, now + expiry)
        return sign_request(request, node.privkey, os.urandom(32))

    def _ours(self, signed: SignedRequest, field: str) -> MultihashRequest:
        if signed.request.payee_node_id != self.node.node_id:
            raise DeclarationError(f"{field}.payee_node_id", "not this node's request")
        if not signed.valid():
            raise DeclarationError(f"{field}.signature", "not this node's signature over the request")
        return signed.request

    def status(self, signed: SignedRequest) -> dict[str, Any]:
        """Where a request of ours stands: ``complete`` (deliver), ``open``, ``expired``, or, once a
        declaration was settled, ``refunding``/``refunded``."""
        request = self._ours(signed, "request")
        store, paths = self.node.store, self.node.return_paths
        states: list[str] = []
        refunded: list[int] = []
        for part in request.parts:
            record = store.invoice(part.payment_hash)
            states.append("cancelled" if record is None else record.status)
            refunded.append(paths.refunded_msat(part.payment_hash) if states[-1] == "paid" else 0)
        state: str
        if all(s == "paid" for s in states):
            state = "complete"
        elif "cancelled" in states:
            owed = any(s == "paid" and r < p.amount_msat for s, r, p in zip(states, refunded, request.parts, strict=True))
            state = "refunding" if owed else "refunded"
        else:
            state = "expired" if time.time() >= request.expires_at else "open"
        parts = [{"payment_hash": p.payment_hash.hex(), "amount_msat": p.amount_msat, "status": s, "refunded_msat": r}
                 for p, s, r in zip(request.parts, states, refunded, strict=True)]
        return {"request_id": signed.request_id.hex(), "state": state, "deliver": state == "complete",
                "delivers": request.delivers, "total_msat": request.total_msat,
                "paid_msat": sum(p.amount_msat for p, s in zip(request.parts, states, strict=True) if s == "paid"),
                "refunded_msat": sum(refunded), "parts": parts}

    # -- the payer ---------------------------------------------------------------------------------

    async def pay(self, signed: SignedRequest, *, timeout: float = 30, max_parts: int = 1) -> list[PartPaid]:
        """Pay every part not paid yet, one after the other, with our return path; a part that fails
        does not stop the others. ``max_parts``: MPP shards per part (1: each part in one piece)."""
        node = self.node
        request = signed.request
        if not signed.valid():
            raise DeclarationError("signature", "not the payee node's signature over the request")
        now = int(time.time())
        if now >= request.expires_at:
            raise UsageError(f"request.expires_at: the request expired at {request.expires_at}")
        if request.payee_node_id == node.node_id:
            raise UsageError("request.payee_node_id: the request is our own")
        back = node.return_paths.create(expiry=request.expires_at - now + DEFAULT_RETURN_PATH_EXPIRY,
                                        description="multi-hash refund",
                                        nonce=node.return_paths.nonce_for(signed.request_id))
        results = []
        for part in request.parts:
            earlier = node.store.payment(part.payment_hash)
            if earlier is not None and earlier.status in ("succeeded", "pending"):
                results.append(PartPaid(part.payment_hash, part.amount_msat, earlier.status, earlier.preimage))
                continue
            try:
                preimage = await node.pay(decode_invoice(part.invoice), timeout=timeout,
                                          limits=PayLimits(max_parts=max_parts), return_path=back)
                results.append(PartPaid(part.payment_hash, part.amount_msat, "succeeded", preimage))
            except PaymentError as exc:
                record = node.store.payment(part.payment_hash)
                status = "pending" if record is not None and record.status == "pending" else "failed"
                results.append(PartPaid(part.payment_hash, part.amount_msat, status, reason=str(exc)))
        return results

    def declare(self, signed: SignedRequest) -> SignedDeclaration:
        """Our signed refund declaration for a request we paid in part (UsageError when a part is
        still pending, or when none or all of them succeeded)."""
        node = self.node
        if not signed.valid():
            raise DeclarationError("signature", "not the payee node's signature over the request")
        outcomes = []
        for i, part in enumerate(signed.request.parts):
            record = node.store.payment(part.payment_hash)
            if record is not None and record.status == "pending":
                raise UsageError(f"parts[{i}]: its payment is still pending: declare once it settled or failed")
            succeeded = record is not None and record.status == "succeeded" and record.preimage is not None
            outcomes.append(Outcome(part.payment_hash, record.preimage if succeeded and record else None))
        if all(o.succeeded for o in outcomes):
            raise UsageError("parts: every part succeeded: the request is complete, the goods are owed")
        if not any(o.succeeded for o in outcomes):
            raise UsageError("parts: no part succeeded: nothing was paid, nothing to refund")
        secret = node.return_paths.signing_key(node.return_paths.nonce_for(signed.request_id))
        back = node.return_paths.create(description="multi-hash refund")
        declaration = RefundDeclaration(signed, pubkey_from_privkey(secret), tuple(outcomes), back.encode(),
                                        int(time.time()))
        return sign_declaration(declaration, secret, os.urandom(32))

    # -- the payee: settle a declaration -----------------------------------------------------------

    def check(self, signed: SignedDeclaration) -> None:
        """Every check before anything is cancelled or paid (see the module docstring);
        DeclarationError names the field."""
        verify_declaration(signed)
        d = signed.declaration
        self._ours(d.request, "declaration.request")
        store = self.node.store
        arriving = self.node._invoice_hashes_in_channels()
        for i, (outcome, part) in enumerate(zip(d.parts, d.request.request.parts, strict=True)):
            field = f"declaration.parts[{i}]"
            record = store.invoice(part.payment_hash)
            if outcome.succeeded:
                if record is None or record.status != "paid":
                    raise DeclarationError(field, "we did not receive this part")
                committed = store.return_path(part.payment_hash)
                if committed is None:
                    raise DeclarationError(field, "its payment carried no return path: no payer key was committed")
                if decode_offer(committed).issuer_id != d.payer_key:
                    raise DeclarationError("declaration.payer_key", f"not the key committed in the payment of "
                                                                    f"part {i}")
            elif record is not None and record.status == "paid":
                raise DeclarationError(field, "we received this part: it did not fail")
            elif part.payment_hash in arriving:
                raise DeclarationError(field, "a payment for it is arriving now: declare once it settled or failed")
        try:
            parse_return_path(decode_offer(d.return_path).to_tlv(), self.node.network.chain_hash, int(time.time()))
        except DecodeError as exc:
            raise DeclarationError("declaration.return_path", f"{exc.field}: {exc.reason}") from None

    async def settle(self, signed: SignedDeclaration, *, timeout: float = 60) -> dict[str, Any]:
        """Check the declaration, cancel its failed parts, refund its succeeded ones (what is left of
        each, at most its amount); returns the request's status with each part's refund proofs."""
        d = signed.declaration
        request_id = d.request.request_id
        lock = self._settling.setdefault(request_id, asyncio.Lock())
        async with lock:
            self.check(signed)
            node, store = self.node, self.node.store
            request = d.request.request
            with store.transaction():
                for outcome in d.parts:
                    if not outcome.succeeded:
                        store.cancel_invoice(outcome.payment_hash)
            for outcome in d.parts:
                if not outcome.succeeded:
                    node.receiver.invoices.pop(outcome.payment_hash, None)
            via = decode_offer(d.return_path)
            errors: dict[bytes, str] = {}
            for part in request.parts:
                if part.payment_hash not in {o.payment_hash for o in d.parts if o.succeeded}:
                    continue
                record = store.invoice(part.payment_hash)
                assert record is not None  # check() found it paid; paid invoices are never deleted
                left = min(part.amount_msat, record.received_msat) - node.return_paths.refunded_msat(part.payment_hash)
                if left <= 0:
                    continue
                try:
                    await node.return_paths.refund(part.payment_hash, left, timeout=timeout, via=via)
                except (PaymentError, RefundError, UsageError) as exc:
                    errors[part.payment_hash] = str(exc)  # settle again later: only what is left is paid
            status = self.status(d.request)
            for entry in status["parts"]:
                payment_hash = bytes.fromhex(entry["payment_hash"])
                entry["refunds"] = self._proofs(payment_hash)
                entry["error"] = errors.get(payment_hash)
            return {**status, "refund_msat": d.refund_msat}

    def _proofs(self, payment_hash: bytes) -> list[dict[str, Any]]:
        """The refund parts paid for ``payment_hash``: each payer-signed invoice and its preimage."""
        store, out = self.node.store, []
        for refund_hash, amount in store.return_refunds(payment_hash):
            payment = store.payment(refund_hash)
            out.append({"payment_hash": refund_hash.hex(), "amount_msat": amount,
                        "status": "not started" if payment is None else payment.status,
                        "invoice": None if payment is None else payment.invoice,
                        "preimage": None if payment is None or payment.preimage is None else payment.preimage.hex()})
        return out
