"""The server side of pay-per-call: sell allowances, accept tokens, close and refund.

:class:`AllowanceServer` is transport-free (the ASGI middleware in :mod:`.asgi` maps it to
HTTP). Accepting a call is one hash and one atomic ``advance`` in the store; nothing is
signed and no node is asked. Lane states are cached in-process and the store's
compare-and-set catches a cache made stale by another server instance.

Creating an allowance is the one thing anyone can do for free, so it is bounded: a
per-client rate limit, a cap on the unpaid allowances in the store, and unpaid ones are
forgotten (deleted) once their invoice can no longer be paid (:meth:`forget_unpaid`).
Refunds are paid exactly once by :class:`~lightspeed.micro.refunds.RefundDesk`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from lightspeed.errors import LightspeedError, UsageError
from lightspeed.invoice import Invoice
from lightspeed.invoice.decode import decode
from lightspeed.micro.allowance_cache import CachedAllowance
from lightspeed.micro.auto_refund import AutoRefunds, AutoRefundView, is_return_path_record
from lightspeed.micro.cache import DEFAULT_CACHE_BYTES, LruCache, entry_bytes
from lightspeed.micro.hashchain import links_to
from lightspeed.micro.ratelimit import RateLimiter
from lightspeed.micro.refunds import RefundDesk, RefundPayer, RefundRefused, RefundView
from lightspeed.micro.store import (
    Advance,
    AllowanceState,
    AllowanceStore,
    LaneState,
    RefundStatus,
    Status,
    StoredAllowance,
    StoreFull,
)
from lightspeed.micro.terms import AllowanceTerms, Price
from lightspeed.micro.token import ALLOWANCE_ID_SIZE, MAX_LANES, AllowanceRequest, Token


class Payee(Protocol):
    """What the server needs from its Lightning node to be paid."""

    async def create_invoice(self, amount_msat: int, description: str, expiry: int) -> Invoice: ...

    async def is_paid(self, payment_hash: bytes) -> bool: ...


class Payer(Protocol):
    """What pays an invoice (a client's node paying allowances); refunds need a
    :class:`~lightspeed.micro.refunds.RefundPayer`."""

    async def pay(self, invoice: str) -> bytes: ...


log = logging.getLogger("lightspeed.micro")
MIN_UNPAID_GRACE = 60  # seconds past an invoice's expiry before it is treated as never payable
FULL_RETRY_SECONDS = 60  # Retry-After when the unpaid allowances are at their cap


class CallRefused(LightspeedError):
    """A call is not served. ``code`` is machine-readable; ``invoice`` is set when paying it helps."""

    def __init__(self, code: str, reason: str, http_status: int = 402, invoice: str | None = None,
                 last_index: int | None = None, retry_after: int | None = None):
        super().__init__(f"{code}: {reason}")
        self.code, self.reason, self.http_status, self.invoice = code, reason, http_status, invoice
        self.last_index = last_index  # lets a client that lost its place resynchronise a lane
        self.retry_after = retry_after  # seconds (the Retry-After header of a 429 or 503)

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "reason": self.reason}
        if self.invoice is not None:
            body["invoice"] = self.invoice
        if self.last_index is not None:
            body["last_index"] = self.last_index
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        return body


@dataclass(frozen=True)
class Receipt:
    """An accepted call: how many paid calls remain, and a batch invoice to pay ahead if due."""

    allowance_id: bytes
    remaining_calls: int
    next_invoice: str | None = None
    next_calls: int = 0  # the calls ``next_invoice`` pays for (no need to decode it)


@dataclass
class ServerPolicy:
    price: Price
    min_calls: int = 1
    max_calls: int = 10**9
    max_lanes: int = 64
    ttl_seconds: int = 7 * 24 * 3600
    max_skip: int = 10_000  # most hashes one token may cost the server (bounds a huge index jump)
    invoice_expiry: int = 600
    #: Anyone can ask for allowances, so the unpaid ones are capped and forgotten: at most this
    #: many wait for their payment (503 ``busy`` beyond; about 5 KB each in the store), each for
    #: its invoice's expiry plus ``unpaid_grace`` seconds (an HTLC that arrived in time may settle
    #: a little later; past that the node refuses any payment to it).
    max_unpaid: int = 10_000
    unpaid_grace: int = 600
    #: Allowances one client (remote address, IPv6 by /64) may ask for per minute, in bursts up
    #: to as many (429 ``rate_limited`` with Retry-After beyond). Per server process.
    creates_per_minute: int = 60
    rate_limited_clients: int = 100_000  # buckets kept in memory
    #: A batched allowance's next batch is offered once half a batch is left, plus up to this
    #: share of a batch more, at a point the allowance's id fixes (:func:`~lightspeed.micro.allowance_cache.batch_offer_point`).
    #: Allowances bought together (a thousand streams opened at once) then renew spread over a
    #: quarter of a batch, not at the same call: each renewal costs the server about 1 ms (its
    #: invoice made and signed, the payment, the batch taken), and a thousand of them within a
    #: few seconds held a server already serving 10,000 ticks/s back by more than a tick.
    #: A client that pays on receipt holds at most ``1.5 + batch_offer_spread`` batches ahead.
    batch_offer_spread: float = 0.25

    def __post_init__(self) -> None:
        if self.unpaid_grace < MIN_UNPAID_GRACE:
            raise UsageError(f"unpaid_grace: must be at least {MIN_UNPAID_GRACE} s (an unpaid "
                             "allowance is deleted only once its invoice can no longer be paid)")
        if self.max_unpaid < 1 or self.creates_per_minute < 1:
            raise UsageError("max_unpaid and creates_per_minute: must be at least 1")
        if not 0 <= self.batch_offer_spread <= 0.5:
            raise UsageError("batch_offer_spread: must be 0 to 0.5 of a batch (the next batch is offered "
                             "once at most half a batch plus the spread is left: never a whole batch ahead)")

    @property
    def unpaid_ttl(self) -> int:
        """Seconds after its creation an unpaid allowance is deleted."""
        return self.invoice_expiry + self.unpaid_grace


@dataclass
class AllowanceServer:
    store: AllowanceStore
    payee: Payee
    node_id: bytes
    policy: ServerPolicy
    payer: RefundPayer | None = None  # for refunds; without one, refunds are refused
    node_address: str | None = None  # "host:port" where the server's node takes channels
    clock: Callable[[], float] = time.time
    #: Memory for cached allowances (least recently used out; the store stays the truth), and
    #: optionally a cap on their number.
    cache_bytes: int = DEFAULT_CACHE_BYTES
    max_cached: int | None = None
    #: Refund unused credit through the payments' return paths when an allowance closes
    #: (:mod:`lightspeed.micro.auto_refund`); without it, refunds wait for the client's invoice.
    auto_refunds: AutoRefunds | None = None
    _cache: LruCache[CachedAllowance] = field(init=False)
    _limiter: RateLimiter = field(init=False)
    _owed_running: set[bytes] = field(default_factory=set)  # allowances whose owed refunds run here
    _owed_tasks: set[asyncio.Task[int]] = field(default_factory=set)  # held: a task only weakly held may vanish

    def __post_init__(self) -> None:
        p = self.policy
        self._limiter = RateLimiter(p.creates_per_minute, p.rate_limited_clients)
        self._cache = LruCache(self.cache_bytes, self.max_cached)

    # -- selling -----------------------------------------------------------------------------

    def offer(self, cost: int = 1) -> dict[str, object]:
        """The terms a client needs to buy an allowance (the body of every 402)."""
        p = self.policy
        return {"version": 1, "node_id": self.node_id.hex(), "node_address": self.node_address,
                "price": p.price.to_json(), "cost": cost, "min_calls": p.min_calls,
                "max_calls": p.max_calls, "max_lanes": p.max_lanes, "granularity": p.price.granularity(),
                "ttl_seconds": p.ttl_seconds, "max_skip": p.max_skip}

    async def create(self, request: AllowanceRequest, client: str | None = None) -> AllowanceTerms:
        """Register the client's lanes and invoice it; nothing is served until the invoice is paid.

        ``client`` (a remote address key, see :func:`~lightspeed.micro.ratelimit.client_key`)
        is rate-limited; ``None`` is not (a caller that is not a network peer).
        """
        p = self.policy
        if client is not None:
            wait = self._limiter.take(client, self.clock())
            if wait > 0:
                raise CallRefused("rate_limited", f"too many allowances asked from {client}; "
                                  f"retry in {math.ceil(wait)} s", 429, retry_after=math.ceil(wait))
        total = request.total_calls
        if len(request.anchors) > min(p.max_lanes, MAX_LANES):
            raise CallRefused("bad_request", f"anchors: at most {p.max_lanes} lanes", 400)
        if len(set(request.anchors)) != len(request.anchors):
            raise CallRefused("bad_request", "anchors: two lanes share an anchor (a link would pay twice)", 400)
        if not p.min_calls <= total <= p.max_calls:
            raise CallRefused("bad_request", f"calls: total {total} is outside {p.min_calls}..{p.max_calls}", 400)
        if request.batch_calls > total:
            raise CallRefused("bad_request", "batch_calls: larger than the allowance", 400)
        granularity = p.price.granularity()
        for name, calls in (("calls", total), ("batch_calls", request.batch_calls)):
            if calls % granularity:
                raise CallRefused("bad_request", f"{name}: must be a multiple of {granularity} "
                                  f"(at {p.price} only that many calls cost whole msat)", 400)
        now = int(self.clock())
        first_calls = request.batch_calls or total
        amount = p.price.cost_msat(first_calls)
        if amount == 0:
            raise CallRefused("bad_request", "calls: the allowance would cost 0 msat", 400)
        if await self.store.unpaid_count() >= p.max_unpaid:  # before making an invoice for nothing
            await self.forget_unpaid()
            if await self.store.unpaid_count() >= p.max_unpaid:
                raise self._full()
        allowance_id = os.urandom(ALLOWANCE_ID_SIZE)
        invoice = await self.payee.create_invoice(
            amount, f"Lightspeed allowance {allowance_id.hex()}: {first_calls} calls", p.invoice_expiry)
        terms = AllowanceTerms(allowance_id, self.node_id, p.price, len(request.anchors),
                               request.calls_per_lane, request.batch_calls, amount, invoice.payment_hash,
                               invoice.encode(), now, now + p.ttl_seconds)
        try:  # the store counts again, atomically with the insert: racing creates stay under the cap
            await self.store.create(allowance_id, terms.to_bytes(), terms.expires_at, request.anchors,
                                    AllowanceState(Status.PENDING, 0), unpaid_until=now + p.unpaid_ttl,
                                    max_unpaid=p.max_unpaid)
        except StoreFull:
            raise self._full() from None
        return terms

    def _full(self) -> CallRefused:
        return CallRefused("busy", f"{self.policy.max_unpaid} allowances wait for payment already: "
                           "pay yours, or retry later", 503, retry_after=FULL_RETRY_SECONDS)

    # -- serving -----------------------------------------------------------------------------

    async def spend(self, token: Token, cost: int = 1) -> Receipt:
        """Accept ``token`` for a call costing ``cost`` links, or raise :class:`CallRefused`."""
        entry = self._cache.get(token.allowance_id) or await self._entry(token.allowance_id)
        terms = entry.terms
        if token.lane >= terms.lanes:
            raise CallRefused("bad_token", f"lane: the allowance has {terms.lanes} lanes", 401)
        if token.index > terms.calls_per_lane:
            raise CallRefused("exhausted", f"index: the lane has {terms.calls_per_lane} links", 402)
        if self.clock() >= terms.expires_at:
            raise CallRefused("expired", "the allowance has expired; buy a new one (unspent calls are refunded)")
        reloaded = False
        for _ in range(8):
            last = entry.lanes[token.lane]
            steps = token.index - last.index
            if steps < cost:
                if not reloaded:
                    await self._reload(entry, token.allowance_id)
                    reloaded = True
                    continue
                if steps > 0:
                    raise CallRefused("underpaid", f"index: this call costs {cost} links, the token "
                                      f"moves lane {token.lane} by {steps}", 402, last_index=last.index)
                raise CallRefused("replayed", f"index: {token.index} of lane {token.lane} is already "
                                  f"spent (last spent index {last.index})", 401, last_index=last.index)
            if steps > self.policy.max_skip:
                if not reloaded:  # another process (worker) sharing the store may have moved the lane
                    await self._reload(entry, token.allowance_id)
                    reloaded = True
                    continue
                raise CallRefused("bad_token", f"index: jumps {steps} links, more than {self.policy.max_skip}", 401)
            if not links_to(token.link, steps, last.value):
                raise CallRefused("forged", "link: does not hash to the lane's last spent link", 401)
            moved = LaneState(token.index, token.link)
            result = await self.store.advance(token.allowance_id, token.lane, last.index, moved)
            if result is Advance.OK:
                entry.lanes[token.lane] = moved
                remaining = entry.add_spent(steps)
                # the common cases without another await: no batches, or before the offer point
                if not terms.batch_calls or remaining > entry.offer_at:
                    return Receipt(token.allowance_id, remaining)
                offer = entry.offered()
                if offer is not None and not entry.paid_check_due(remaining):
                    return Receipt(token.allowance_id, remaining, *offer)
                return await self._receipt(token.allowance_id, entry)
            await self._reload(entry, token.allowance_id)
            reloaded = True
            if result is Advance.STALE:
                continue
            if result is Advance.NOT_ACTIVE:
                await self._activate_or_refuse(token.allowance_id, entry)
            elif result is Advance.OVER_LIMIT:
                await self._next_batch_or_refuse(token.allowance_id, entry, steps)
        raise CallRefused("busy", "the lane kept changing under this call; retry", 409)

    async def status(self, allowance_id: bytes) -> dict[str, object]:
        entry = await self._entry(allowance_id)
        await self._reload(entry, allowance_id)
        if entry.state.status is Status.PENDING:
            await self._try_activate(allowance_id, entry)
        await self._credit_superseded(allowance_id, entry)
        if entry.state.status is Status.CLOSED:
            await self._count_late_payment(allowance_id, entry)
            self._start_owed_refunds(allowance_id, entry)
        s = entry.state
        return {**entry.terms.public_json(), "status": s.status.value, "paid_calls": s.paid_calls,
                "spent": s.spent, "remaining_calls": s.paid_calls - s.spent,
                "lanes_spent": [lane.index for lane in entry.lanes],
                **await self._refund_view(allowance_id, entry)}

    # -- ending ------------------------------------------------------------------------------

    async def close(self, token: Token) -> int:
        """Close the allowance; returns the refund due in msat.

        Authenticated by a link past the last spent one, which only the client knows; the
        link is checked, not spent, so an exhausted allowance can be closed too. An unpaid
        allowance is not closed (its invoice could still be paid after): it is forgotten
        once its invoice has expired.
        """
        entry = await self._entry(token.allowance_id)
        await self._reload(entry, token.allowance_id)
        self._check_link(entry, token)  # only the client knows links past the last spent one
        await self._apply_payments(token.allowance_id, entry)
        while _status(entry) is not Status.CLOSED:
            if _status(entry) is Status.PENDING:
                raise CallRefused("unpaid", "the allowance's invoice is not paid: nothing to close "
                                  "(it is forgotten once the invoice expires)", 409)
            closed = self._closed_state(entry)
            if not await self.store.update_state(token.allowance_id, entry.state, closed):
                await self._reload(entry, token.allowance_id)
                await self._apply_payments(token.allowance_id, entry)
                continue
            await self._reload(entry, token.allowance_id)
        # The amount comes from the store's state once closed: no call can be spent any more.
        await self.auto_refund(token.allowance_id)
        return self._refund_msat(entry)

    async def close_by_seller(self, allowance_id: bytes, undelivered_msat: int = 0) -> int:
        """Close an allowance on the seller's own account (the stream it paid ended); returns the
        refund due, ``undelivered_msat`` (paid for, never delivered) included, and starts its
        automatic refund. An allowance closed already is left as it is."""
        entry = await self._entry(allowance_id)
        await self._reload(entry, allowance_id)
        await self._apply_payments(allowance_id, entry)
        while _status(entry) is Status.ACTIVE:
            if await self.store.update_state(allowance_id, entry.state, self._closed_state(entry, undelivered_msat)):
                await self._reload(entry, allowance_id)
                break
            await self._reload(entry, allowance_id)
            await self._apply_payments(allowance_id, entry)
        if _status(entry) is not Status.CLOSED:
            return 0  # never paid: nothing to refund (forgotten once its invoice expires)
        await self.auto_refund(allowance_id)
        return self._refund_msat(entry)

    async def auto_refund(self, allowance_id: bytes, wait: float = 0.0) -> AutoRefundView | None:
        """Start (or report) the refund of a closed allowance through its payments' return paths;
        ``wait``: seconds to wait for its payment to end. ``None`` without :attr:`auto_refunds`,
        or while a batch invoice offered before the close can still be paid (its calls would be
        refunded too: decided once it cannot)."""
        if self.auto_refunds is None:
            return None
        entry = await self._entry(allowance_id)
        await self._reload(entry, allowance_id)
        if _status(entry) is not Status.CLOSED:
            return None
        await self._count_late_payment(allowance_id, entry)
        if "late_until" in json.loads(entry.state.extra or "{}"):
            self.auto_refunds.later.add(allowance_id)  # the sweep (resolve_refunds) looks again
            return None
        self.auto_refunds.later.discard(allowance_id)
        self._start_owed_refunds(allowance_id, entry)
        hashes = self._payment_hashes(entry)
        view = await self.auto_refunds.start(allowance_id, self._refund_msat(entry), hashes)
        if wait > 0 and view.status == "in_flight":
            view = await self.auto_refunds.wait(allowance_id, wait) or view
        return view

    async def resume_auto_refunds(self) -> int:
        """Go on with refunds through return paths left in flight (after a start, then periodically)."""
        if self.auto_refunds is None:
            return 0

        async def hashes_of(allowance_id: bytes) -> list[bytes]:
            stored = await self.store.load(allowance_id)
            return [] if stored is None else self._payment_hashes(self._cached(stored))

        for allowance_id in list(self.auto_refunds.later):  # waited for a batch invoice to be paid or expire
            await self.auto_refund(allowance_id)
        return await self.auto_refunds.resume_all(hashes_of)

    @staticmethod
    def _payment_hashes(entry: CachedAllowance) -> list[bytes]:
        """The allowance's payments, first one first (the last few batches of a long one)."""
        later = json.loads(entry.state.extra or "{}").get("paid_hashes", [])
        return [entry.terms.payment_hash, *(bytes.fromhex(h) for h in later)]

    async def refund(self, token: Token, invoice_text: str) -> RefundView:
        """Pay the refund of a closed allowance to the client's invoice, exactly once.

        Authenticated by a link past the last spent one (checked, not spent: the allowance
        is closed). The refund is recorded in flight with this invoice before it is paid;
        while in flight, or once paid, every request gets that refund's view (its own
        invoice) and nothing more is paid. Only a definitively failed refund lets a new
        invoice be paid. See :mod:`lightspeed.micro.refunds`.
        """
        entry = await self._entry(token.allowance_id)
        await self._reload(entry, token.allowance_id)
        if entry.state.status is not Status.CLOSED:
            raise CallRefused("not_closed", "close the allowance first", 409)
        self._check_link(entry, token)
        desk = self._desk()
        record = await self.store.refund(token.allowance_id)
        due = self._refund_msat(entry)
        if is_return_path_record(record):
            assert record is not None
            if record.status is not RefundStatus.FAILED or self.auto_refunds is None:
                return RefundView.of(record)  # paid (or being paid) through the return path
            if self.auto_refunds.elsewhere(record):  # only its node knows what it sent
                raise CallRefused("refund_elsewhere", f"the refund through the return path was paid in part by "
                                  f"node {record.owner}: claim the rest at a server with that node", 409)
            # What the return path did not carry may be claimed with an invoice (never more).
            due = max(0, record.amount_msat - self.auto_refunds.sent_msat(self._payment_hashes(entry)))
        if record is None:
            legacy = json.loads(entry.state.extra or "{}").get("refund")
            if legacy not in (None, "due"):  # recorded by an earlier version: never pay it again
                raise CallRefused("refund_done", f"the refund is already {legacy}", 409)
            await self._count_late_payment(token.allowance_id, entry)
            until = json.loads(entry.state.extra or "{}").get("late_until")
            if until is not None:
                wait = max(1, math.ceil(until + self.policy.unpaid_grace - self.clock()))
                raise CallRefused("refund_not_ready", "the batch invoice offered before closing can "
                                  "still be paid; pay it (it is refunded too) or retry once it "
                                  "expires", 409, retry_after=wait)
        try:
            return await desk.claim(token.allowance_id, due, invoice_text)
        except RefundRefused as exc:
            raise CallRefused("bad_request", str(exc), 400) from None

    async def resolve_refunds(self) -> int:
        """Resolve in-flight refunds with the payer (run after a start and periodically);
        returns how many ended (paid or definitively failed)."""
        await self.resume_auto_refunds()
        return await self._desk().resolve_all() if self.payer is not None else 0

    async def expire_due(self) -> int:
        """Close allowances past their expiry (their unspent calls become a refund due); an
        expired allowance that was never paid is deleted instead."""
        closed = 0
        for allowance_id in await self.store.expiring(int(self.clock())):
            stored = await self.store.load(allowance_id)
            if stored is None or stored.state.status is Status.CLOSED:
                continue
            entry = self._cached(stored)
            await self._apply_payments(allowance_id, entry)
            if entry.state.status is Status.PENDING:  # never paid: deleted once it cannot be paid
                if self.clock() >= entry.terms.created_at + self.policy.unpaid_ttl:
                    await self.store.delete_unpaid(allowance_id)
            elif await self.store.update_state(allowance_id, entry.state, self._closed_state(entry)):
                closed += 1
                self._cache.pop(allowance_id)
                await self.auto_refund(allowance_id)
            self._cache.pop(allowance_id)
        return closed

    async def forget_unpaid(self, limit: int = 1000) -> int:
        """Delete unpaid allowances past their invoice's expiry plus ``unpaid_grace`` (run periodically).

        Each one's invoice has expired by then, past a grace period, so the node refuses any
        payment to it: asking ``is_paid`` once more and then deleting (only if still PENDING,
        atomically) cannot lose a payment. One found paid is activated instead.
        """
        forgotten = 0
        for allowance_id in await self.store.unpaid_due(int(self.clock()), limit):
            stored = await self.store.load(allowance_id)
            if stored is None:
                continue
            entry = self._cached(stored)
            await self._try_activate(allowance_id, entry)
            if entry.state.status is Status.PENDING and await self.store.delete_unpaid(allowance_id):
                forgotten += 1
            self._cache.pop(allowance_id)
        return forgotten

    # -- internals ---------------------------------------------------------------------------

    async def _entry(self, allowance_id: bytes) -> CachedAllowance:
        entry = self._cache.get(allowance_id)
        if entry is None:
            stored = await self.store.load(allowance_id)
            if stored is None:
                raise CallRefused("unknown_allowance", "no such allowance on this server")
            entry = self._cached(stored)
            self._cache.put(allowance_id, entry, entry_bytes(len(entry.lanes)))
        return entry

    def _cached(self, stored: StoredAllowance) -> CachedAllowance:
        return CachedAllowance(AllowanceTerms.from_bytes(stored.terms), stored.state, list(stored.lanes),
                               self.policy.batch_offer_spread)

    async def _reload(self, entry: CachedAllowance, allowance_id: bytes) -> None:
        stored = await self.store.load(allowance_id)
        if stored is None:
            raise CallRefused("unknown_allowance", "no such allowance on this server")
        entry.state, entry.lanes = stored.state, list(stored.lanes)

    async def _try_activate(self, allowance_id: bytes, entry: CachedAllowance) -> None:
        if await self.payee.is_paid(entry.terms.payment_hash):
            new = AllowanceState(Status.ACTIVE, entry.terms.first_paid_calls)
            await self.store.update_state(allowance_id, entry.state, new)
            await self._reload(entry, allowance_id)

    async def _apply_payments(self, allowance_id: bytes, entry: CachedAllowance) -> None:
        """Before closing: count an invoice paid but not yet seen, so no payment is lost."""
        if entry.state.status is Status.PENDING:
            await self._try_activate(allowance_id, entry)
        await self._credit_superseded(allowance_id, entry)
        pending = json.loads(entry.state.extra or "{}")
        if (_status(entry) is Status.ACTIVE and "batch_hash" in pending
                and await self.payee.is_paid(bytes.fromhex(pending["batch_hash"]))):
            new = AllowanceState(Status.ACTIVE, pending["paid_calls"], 0, _batch_paid(pending))
            await self.store.update_state(allowance_id, entry.state, new)
            await self._reload(entry, allowance_id)

    async def _activate_or_refuse(self, allowance_id: bytes, entry: CachedAllowance) -> None:
        if entry.state.status is Status.PENDING:
            await self._try_activate(allowance_id, entry)
        status = _status(entry)  # re-read: activation may have changed it
        if status is Status.PENDING:
            raise CallRefused("unpaid", "the allowance's invoice is not paid", invoice=entry.terms.invoice)
        if status is Status.CLOSED:
            raise CallRefused("closed", "the allowance is closed")

    async def _next_batch_or_refuse(self, allowance_id: bytes, entry: CachedAllowance, steps: int) -> None:
        terms, state = entry.terms, entry.state
        if not terms.batch_calls or state.paid_calls >= terms.total_calls:
            raise CallRefused("exhausted", f"the allowance's {state.paid_calls} paid calls are spent "
                              f"({state.paid_calls - state.spent} left, this call needs {steps})")
        await self._credit_superseded(allowance_id, entry)
        await self._ensure_batch_invoice(allowance_id, entry)  # ours: another node's is superseded
        if await self._take_paid_batch(allowance_id, entry):
            return
        pending = json.loads(entry.state.extra or "{}")
        raise CallRefused("batch_due", "pay the next batch to go on", invoice=pending["batch_invoice"])

    async def _take_paid_batch(self, allowance_id: bytes, entry: CachedAllowance) -> bool:
        """Count the pending batch (ours) if its invoice is paid: True once it is counted, by this
        call or by another process meanwhile (compare-and-set; ``entry`` is reloaded)."""
        pending = json.loads(entry.state.extra or "{}")
        if "batch_hash" not in pending or not await self.payee.is_paid(bytes.fromhex(pending["batch_hash"])):
            return False
        new = AllowanceState(Status.ACTIVE, pending["paid_calls"], 0, _batch_paid(pending))
        await self.store.update_state(allowance_id, entry.state, new)
        await self._reload(entry, allowance_id)
        return True

    async def _ensure_batch_invoice(self, allowance_id: bytes, entry: CachedAllowance, supersede: bool = True) -> str | None:
        """The invoice for the next batch, created once (compare-and-set on ``extra``).

        One of another process's node is replaced by ours only when the batch is due here
        (``supersede``); offering ahead, it is left alone (``None``), so that processes serving
        one allowance in turn do not replace each other's invoices call after call."""
        while True:
            pending = json.loads(entry.state.extra or "{}")
            terms, state = entry.terms, entry.state
            if "batch_invoice" in pending:
                payee = _batch_payee(pending)
                if payee == self.node_id.hex():
                    offered = str(pending["batch_invoice"])
                    entry.batch_offer = (state.extra, state.paid_calls, offered,
                                         int(pending.get("paid_calls", state.paid_calls)) - state.paid_calls)
                    return offered
                if not supersede:
                    return None
                await self._supersede_batch(allowance_id, entry, pending, payee)
                continue
            calls = min(terms.batch_calls, terms.total_calls - state.paid_calls)
            invoice = await self.payee.create_invoice(
                terms.price.cost_msat(calls),
                f"Lightspeed allowance {allowance_id.hex()}: calls {state.paid_calls + 1}-"
                f"{state.paid_calls + calls}", self.policy.invoice_expiry * 6)
            extra = json.dumps({"batch_invoice": invoice.encode(), "batch_hash": invoice.payment_hash.hex(),
                                "batch_payee": self.node_id.hex(), "paid_calls": state.paid_calls + calls,
                                **_kept(pending)})
            new = AllowanceState(state.status, state.paid_calls, 0, extra)
            await self.store.update_state(allowance_id, state, new)
            await self._reload(entry, allowance_id)

    async def _supersede_batch(self, allowance_id: bytes, entry: CachedAllowance, pending: dict[str, Any],
                               payee: str) -> None:
        """Replace a batch invoice of another process's node by one of ours.

        Seller processes sharing the store each have their own node: this one cannot see that
        invoice paid (its node has no record of it), and the process that made it may be dead. The
        buyer is asked to pay ours instead; the other invoice is kept under ``superseded`` with its
        calls, so that if it was paid after all, its node credits them (:meth:`_credit_superseded`)
        when its process touches the allowance again: the payment is refunded, never lost."""
        state = entry.state
        superseded = [*pending.get("superseded", []), {"hash": pending["batch_hash"], "payee": payee,
                                                       "calls": pending["paid_calls"] - state.paid_calls}]
        extra = json.dumps({**_kept(pending), "superseded": superseded})
        await self.store.update_state(allowance_id, state, AllowanceState(state.status, state.paid_calls, 0, extra))
        await self._reload(entry, allowance_id)

    async def take_over_batch(self, allowance_id: bytes) -> None:
        """Another process served this allowance until now (a stream resumed here): supersede its
        node's pending batch invoice, so that ours is offered ahead instead of none."""
        entry = await self._entry(allowance_id)
        await self._reload(entry, allowance_id)
        pending = json.loads(entry.state.extra or "{}")
        if "batch_invoice" in pending:
            payee = _batch_payee(pending)
            if payee != self.node_id.hex():
                await self._supersede_batch(allowance_id, entry, pending, payee)

    async def credit_superseded(self, allowance_id: bytes) -> int:
        """Count the batch invoices of this node that another process superseded and that were paid
        (run when a process comes back: its node has the payments); returns the calls credited."""
        entry = await self._entry(allowance_id)
        await self._reload(entry, allowance_id)
        return await self._credit_superseded(allowance_id, entry)

    async def _credit_superseded(self, allowance_id: bytes, entry: CachedAllowance) -> int:
        for _ in range(8):
            extra = json.loads(entry.state.extra or "{}")
            mine = [s for s in extra.get("superseded", []) if s["payee"] == self.node_id.hex()]
            paid = [s for s in mine if await self.payee.is_paid(bytes.fromhex(s["hash"]))]
            if not paid:
                return 0
            if entry.state.status is Status.CLOSED and await self.store.refund(allowance_id) is not None:
                # the refund was recorded (its amount fixed) before this node came back: owed apart
                if await self._owe(allowance_id, entry, extra, paid):
                    return 0
                continue
            calls = sum(int(s["calls"]) for s in paid)
            rest = [s for s in extra["superseded"] if s not in paid]
            credited = {**extra, "superseded": rest}
            if not rest:
                del credited["superseded"]
            for key in ("paid_calls", "late_paid_calls"):  # a pending batch's total moves up as well
                if key in credited:
                    credited[key] += calls
            hashes = [*credited.get("paid_hashes", []), *(s["hash"] for s in paid)]
            credited["paid_hashes"] = hashes[-MAX_KEPT_HASHES:]
            state = entry.state
            new = AllowanceState(state.status, state.paid_calls + calls, 0, json.dumps(credited))
            done = await self.store.update_state(allowance_id, state, new)
            await self._reload(entry, allowance_id)
            if done:
                return calls
        return 0

    async def _owe(self, allowance_id: bytes, entry: CachedAllowance, extra: dict[str, Any],
                   paid: list[dict[str, Any]]) -> bool:
        """Record superseded batch payments this node sees only after the allowance's refund was
        recorded as owed (``extra["owed"]``: hash, payee, msat), out of ``superseded`` in the same
        compare-and-set, so they are owed once. They are not added to that refund: its amount is
        fixed, and another node paid it, whose running totals this node cannot see (raising the
        amount would make this node pay the whole refund again). This node pays each back through
        the payment's own return path instead (:meth:`refund_owed`). False: the state changed."""
        owed = [*extra.get("owed", []), *({"hash": s["hash"], "payee": s["payee"],
                                           "msat": entry.terms.price.cost_msat(int(s["calls"]))} for s in paid)]
        rest = [s for s in extra["superseded"] if s not in paid]
        new_extra = {**extra, "owed": owed, "superseded": rest}
        if not rest:
            del new_extra["superseded"]
        state = entry.state
        done = await self.store.update_state(allowance_id, state, AllowanceState(state.status, state.paid_calls, 0,
                                                                                 json.dumps(new_extra)))
        await self._reload(entry, allowance_id)
        if done:
            log.warning("allowance %s: %d msat paid to this node after its process was superseded and after the "
                        "refund was recorded: owed, refunded apart", allowance_id.hex(),
                        sum(int(o["msat"]) for o in owed[len(owed) - len(paid):]))
        return done

    async def refund_owed(self, allowance_id: bytes) -> int:
        """Pay back what is owed to this node's payments of a closed allowance (:meth:`_owe`), each
        through the return path of the payment it is owed for; returns the msat paid back now.

        Once: the node keeps a durable running total per payment hash (a part counts from before
        its first HTLC) and refuses to refund a payment beyond what it received, and only this
        path refunds through these payments (they are in no refund record). An owed payment paid
        back is moved to ``late_refunded_msat``. Without :attr:`auto_refunds`, or a payment that
        carried no return path, it stays owed (``status`` reports it)."""
        if self.auto_refunds is None or allowance_id in self._owed_running:
            return 0
        self._owed_running.add(allowance_id)
        try:
            entry = await self._entry(allowance_id)
            await self._reload(entry, allowance_id)
            paths, sent = self.auto_refunds.paths, 0
            for owed in json.loads(entry.state.extra or "{}").get("owed", []):
                if owed["payee"] != self.node_id.hex():
                    continue
                payment_hash = bytes.fromhex(owed["hash"])
                left, room = int(owed["msat"]) - paths.refunded_msat(payment_hash), paths.refundable_msat(payment_hash)
                if left > 0 and room:
                    try:
                        await paths.refund(payment_hash, min(room, left))
                        sent += min(room, left)
                    except Exception as exc:  # a timeout may still settle: the running total says
                        log.info("allowance %s: owed refund through the return path failed: %s",
                                 allowance_id.hex(), exc)
                if int(owed["msat"]) <= paths.refunded_msat(payment_hash):
                    await self._owed_refunded(allowance_id, entry, owed)
            return sent
        finally:
            self._owed_running.discard(allowance_id)

    async def _owed_refunded(self, allowance_id: bytes, entry: CachedAllowance, owed: dict[str, Any]) -> None:
        for _ in range(8):
            extra = json.loads(entry.state.extra or "{}")
            if owed not in extra.get("owed", []):
                return
            rest = [o for o in extra["owed"] if o != owed]
            new_extra = {**extra, "owed": rest,
                         "late_refunded_msat": int(extra.get("late_refunded_msat", 0)) + int(owed["msat"])}
            if not rest:
                del new_extra["owed"]
            state = entry.state
            done = await self.store.update_state(allowance_id, state, AllowanceState(
                state.status, state.paid_calls, 0, json.dumps(new_extra)))
            await self._reload(entry, allowance_id)
            if done:
                return

    def _start_owed_refunds(self, allowance_id: bytes, entry: CachedAllowance) -> None:
        """Run :meth:`refund_owed` in the background if something is owed to this node's payments."""
        owed = json.loads(entry.state.extra or "{}").get("owed", [])
        if self.auto_refunds is None or allowance_id in self._owed_running \
                or not any(o["payee"] == self.node_id.hex() for o in owed):
            return
        task = asyncio.get_running_loop().create_task(self.refund_owed(allowance_id))
        self._owed_tasks.add(task)
        task.add_done_callback(self._owed_tasks.discard)

    async def _receipt(self, allowance_id: bytes, entry: CachedAllowance) -> Receipt:
        state, terms = entry.state, entry.terms
        remaining = state.paid_calls - state.spent
        # Batched: offer the next batch once half of this one is spent (a little earlier for some
        # allowances: ServerPolicy.batch_offer_spread), so the client pays ahead and never
        # stalls on a 402 (it then has at most two batches prepaid).
        if terms.batch_calls and remaining <= entry.offer_at and state.paid_calls < terms.total_calls:
            next_invoice = await self._ensure_batch_invoice(allowance_id, entry, supersede=False)
            if next_invoice is not None and entry.paid_check_due(remaining):
                # A client that paid on receipt has paid by now: the batch is taken here, once,
                # at a point as spread as the offer, not at the call that finds the paid calls
                # spent (where allowances bought together would all take theirs at once).
                entry.paid_checked = state.paid_calls
                if await self._take_paid_batch(allowance_id, entry):
                    return await self._receipt(allowance_id, entry)
            offer = entry.offered()
            if next_invoice is not None and offer is not None and offer[0] == next_invoice:
                return Receipt(allowance_id, remaining, *offer)
            return Receipt(allowance_id, remaining, next_invoice)
        return Receipt(allowance_id, remaining)

    def _check_link(self, entry: CachedAllowance, token: Token) -> None:
        last = entry.lanes[token.lane] if token.lane < len(entry.lanes) else None
        if last is None or token.index <= last.index or token.index - last.index > self.policy.max_skip:
            raise CallRefused("bad_token", "lane/index: not a link past the last spent one", 401)
        if not links_to(token.link, token.index - last.index, last.value):
            raise CallRefused("forged", "link: does not hash to the lane's last spent link", 401)

    def _refund_msat(self, entry: CachedAllowance) -> int:
        undelivered = int(json.loads(entry.state.extra or "{}").get("undelivered_msat", 0))
        return entry.terms.price.refund_msat(entry.state.paid_calls - entry.state.spent) + undelivered

    async def _refund_view(self, allowance_id: bytes, entry: CachedAllowance) -> dict[str, object]:
        if entry.state.status is not Status.CLOSED:
            return {}
        return {**await self._main_refund_view(allowance_id, entry), **_late_refund_view(entry)}

    async def _main_refund_view(self, allowance_id: bytes, entry: CachedAllowance) -> dict[str, object]:
        record = await self.store.refund(allowance_id)
        if record is not None and record.status is RefundStatus.IN_FLIGHT and self.payer is not None:
            record = await self._desk().resolve(allowance_id, record, resume=False)
        if record is None:
            due = self._refund_msat(entry)
            legacy = json.loads(entry.state.extra or "{}").get("refund")
            status = legacy if legacy not in (None, "due") else ("due" if due else "none")
            return {"refund_msat": due, "refund": status}
        view = RefundView.of(record)
        body: dict[str, object] = {"refund_msat": record.amount_msat, "refund": view.status}
        if record.owner:
            body["refund_node"] = record.owner  # the node paying it: only it can move an in-flight record
        if is_return_path_record(record):
            body["refund_via"] = "return_path"
            refunded = None if self.auto_refunds is None else \
                self.auto_refunds.refunded(record, self._payment_hashes(entry))
            if refunded is not None:  # unknown when another node is paying it
                body["refunded_msat"] = refunded
        else:
            body["refund_invoice"] = record.invoice
        if view.preimage is not None:
            body["refund_preimage"] = view.preimage.hex()
        if view.reason:
            body["refund_reason"] = view.reason
        return body

    def _desk(self) -> RefundDesk:
        if self.payer is None:
            raise CallRefused("no_refunds", "this server cannot pay refunds", 501)
        return RefundDesk(self.store, self.payer, self.node_id, self.clock)

    def _closed_state(self, entry: CachedAllowance, undelivered_msat: int = 0) -> AllowanceState:
        """CLOSED with the calls paid so far; a batch invoice that could still be paid is kept,
        so that a payment arriving after the close is counted in the refund, not lost."""
        pending = json.loads(entry.state.extra or "{}")
        extra: dict[str, object] = {"refund": "due", **_kept(pending)}
        if undelivered_msat:
            extra["undelivered_msat"] = undelivered_msat
        payee = _batch_payee(pending) if "batch_hash" in pending else ""
        if payee and payee != self.node_id.hex():  # only its node can see it paid
            extra["superseded"] = [*pending.get("superseded", []), {
                "hash": pending["batch_hash"], "payee": payee, "calls": pending["paid_calls"] - entry.state.paid_calls}]
        elif "batch_hash" in pending:
            extra.update(late_hash=pending["batch_hash"], late_paid_calls=pending["paid_calls"],
                         late_until=decode(pending["batch_invoice"]).expires_at)
        return AllowanceState(Status.CLOSED, entry.state.paid_calls, 0, json.dumps(extra))

    async def _count_late_payment(self, allowance_id: bytes, entry: CachedAllowance) -> None:
        """A closed allowance's batch invoice paid after the close adds its calls (refunded);
        one that can no longer be paid is dropped. Before any refund is recorded only."""
        late = json.loads(entry.state.extra or "{}")
        if "late_hash" not in late or await self.store.refund(allowance_id) is not None:
            return
        paid_calls, kept = entry.state.paid_calls, _kept(late)
        if await self.payee.is_paid(bytes.fromhex(late["late_hash"])):
            paid_calls = late["late_paid_calls"]
            kept = json.loads(_batch_paid({**kept, "batch_hash": late["late_hash"]}))
        elif self.clock() < late["late_until"] + self.policy.unpaid_grace:
            return  # still payable: decided later
        new = AllowanceState(Status.CLOSED, paid_calls, 0, json.dumps({"refund": "due", **kept}))
        await self.store.update_state(allowance_id, entry.state, new)
        await self._reload(entry, allowance_id)


def _batch_payee(pending: dict[str, Any]) -> str:
    """The node (hex) that made the pending batch invoice: only it can see the invoice paid."""
    return str(pending.get("batch_payee") or decode(pending["batch_invoice"]).payee.hex())


def _late_refund_view(entry: CachedAllowance) -> dict[str, object]:
    """Payments seen after the refund was recorded (superseded batch invoices paid to a node that
    came back later): ``late_refund_msat`` owed for them in all, ``late_refunded_msat`` paid back."""
    extra = json.loads(entry.state.extra or "{}")
    refunded = int(extra.get("late_refunded_msat", 0))
    owed = refunded + sum(int(o["msat"]) for o in extra.get("owed", []))
    return {"late_refund_msat": owed, "late_refunded_msat": refunded} if owed else {}


def _status(entry: CachedAllowance) -> Status:
    return entry.state.status


MAX_KEPT_HASHES = 4
_KEPT = ("paid_hashes", "undelivered_msat", "superseded", "owed", "late_refunded_msat")  # carried through every state change


def _kept(extra: dict[str, object]) -> dict[str, object]:
    return {k: extra[k] for k in _KEPT if k in extra}


def _batch_paid(pending: dict[str, object]) -> str:
    """``extra`` once the pending batch is paid: its payment hash joins the allowance's payments
    (a refund through return paths may need every payment's)."""
    kept = _kept(pending)
    # The unused credit is at most about two batches: the last payments are enough to refund it.
    earlier = kept.get("paid_hashes", [])
    hashes = [*(earlier if isinstance(earlier, list) else []), pending["batch_hash"]]
    kept["paid_hashes"] = hashes[-MAX_KEPT_HASHES:]
    return json.dumps(kept)
