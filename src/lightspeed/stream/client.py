"""The buyer: an asyncio client that buys a metered stream and pays it link by link.

:class:`StreamBuyer` connects to a seller's WebSocket, checks the tariff against its limits,
buys an allowance of one lane (a link per tick) whose first batch is at most one window, pays
its invoice with the given payer, then lets :class:`~lightspeed.stream.machine.BuyerStream`
decide every payment: the next link goes out only once the tick paid before it has been
delivered. Batch invoices the seller offers are paid only while the prepayment stays within
one window; one that cannot be paid (its process died with its node) is skipped once, since the
process taking the stream over invoices the batch again from its own node. Each batch counts
once in the budget (:meth:`StreamBuyer._fund`): a batch paid to a process that died and invoiced
again by the one taking over is paid again (nothing else lets the stream go on) but funds the
lane once, the payment beyond the budget bounded by one batch, which the seller refunds once its
first node sees it. A dropped connection is resumed on the next URL of the list (the caller's, then those
the seller's greeting announces: its other processes), signed with a key made for this stream
(:mod:`.resume`); at the end the seller's signed statement is checked against our own count and
returned as a :class:`~lightspeed.stream.receipt.Receipt` (with every link we paid).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from lightspeed.errors import DecodeError, PaymentError, UsageError
from lightspeed.invoice import Invoice
from lightspeed.invoice.decode import decode
from lightspeed.micro.hashchain import ChainWalker, anchor, lane_tip
from lightspeed.stream.machine import BuyerStream, RemoteProtocolError, StreamStatus
from lightspeed.stream.messages import encode, encode_pay, parse
from lightspeed.stream.receipt import Receipt, SignedStatement, Statement
from lightspeed.stream.resume import resume_key, sign_resume
from lightspeed.stream.tariff import Tariff
from lightspeed.stream.wsclient import ConnectionClosed, WebSocket

UNSEEN_RETRIES = 200  # 10 s of "not paid" for an invoice we paid, then give up
SELLER_MESSAGES = frozenset({"tariff", "invoice", "position", "delivered", "statement", "error"})
#: How an :class:`~lightspeed.micro.server.AllowanceServer` describes a batch invoice: the calls
#: (ticks of the lane, counted from 1) it pays for, "Lightspeed allowance <id>: calls 11-20".
_BATCH_CALLS = re.compile(r": calls (\d+)-(\d+)$")


def batch_calls(invoice: Invoice, ticks: int) -> tuple[int, int] | None:
    """The first and last tick of the lane a batch invoice of ``ticks`` ticks pays for, as its
    description says; ``None`` if it does not say (or says a range of another length)."""
    found = _BATCH_CALLS.search(invoice.description or "")
    if found is None:
        return None
    first, last = int(found[1]), int(found[2])
    return (first, last) if first >= 1 and last - first + 1 == ticks else None


class Payer(Protocol):
    def pay(self, invoice: str) -> Awaitable[bytes]: ...


@dataclass
class BuyPolicy:
    #: The most this stream may cost (its paid ticks). The batches paid over Lightning stay within
    #: it, plus at most one batch when one was paid twice across a failover (the seller refunds it).
    max_msat: int
    max_msat_per_unit: int | None = None  # refuse a tariff above this
    batch_ticks: int | None = None  # ticks per Lightning prepayment (default: half a window)
    reconnects: int = 5  # attempts to resume after a dropped connection
    idle_timeout: float = 30.0  # seconds without a message before the connection is taken as dead
    settle_timeout: float = 5.0  # seconds to wait for the paid units once we stop paying
    #: Without an allowance: pay one invoice per this many ticks (at most the tariff's window).
    #: The exposure is then one such increment instead of one tick.
    ticks_per_increment: int | None = None


class StreamBuyer:
    def __init__(self, urls: str | list[str], payer: Payer, policy: BuyPolicy,
                 on_update: Callable[[BuyerStream], None] | None = None) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        if not self.urls:
            raise UsageError("urls: at least one ws:// URL")
        self.payer, self.policy, self.on_update = payer, policy, on_update
        self.stream: BuyerStream | None = None
        self.ws: WebSocket | None = None
        self.paid_invoices: set[str] = set()
        self._paid_hashes: set[bytes] = set()  # the same, by payment hash: an invoice is paid once
        self.batches_msat = 0  # paid for batches over Lightning (the allowance's invoices)
        #: of which for ticks paid already (to a process that went away, then invoiced again by
        #: the one taking over): the seller refunds it once that node sees the payment
        self.paid_twice_msat = 0
        #: ticks paid twice the seller may have credited since (the first node saw its payment): the
        #: buyer pays links into them when nothing else is funded (:meth:`_pay_into_credit`)
        self._twice_ticks = 0
        self.reconnected = 0
        self._pending: tuple[str, int] | None = None  # a batch invoice offered, and its ticks
        #: The next batch's payment while the stream goes on (see :meth:`_stream`): one at a time.
        self._funding: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._final: SignedStatement | None = None  # a statement the seller sent unasked
        self.ended: str | None = None  # why the seller ended the stream, if it did
        self.invoices: list[tuple[str, bytes]] = []  # increments paid: (invoice, preimage)
        self._budget_spent = False  # the seller's next increment is more than the budget left
        self._unseen = 0  # refusals of a payment already made, since the last delivery
        self._resume_secret = os.urandom(32)  # signs our resumes (its public key goes with open)
        self.sellers: dict[str, bytes] = {}  # the seller's processes its greetings announced: url -> node id
        self.unpayable: list[str] = []  # batch invoices of a process that went away, not paid
        #: The invoices decoded lately, by their text: a batch's is looked at up to six times
        #: (paid? fits? pay), and each decode checks its signature (~0.4 ms; ~6% of the
        #: benchmark buyers' CPU at a thousand streams, all of it in the renewals' burst).
        self._decoded: dict[str, Invoice] = {}

    def _learn(self, hello: dict[str, Any]) -> None:
        """Add the seller processes a greeting announces to the URLs to go on with."""
        for url, node_id in hello.get("sellers", []):
            self.sellers[url] = node_id
            if url not in self.urls:
                self.urls.append(url)

    def stop(self) -> None:
        """Stop paying (the seller delivers what is paid, at most one tick) and close."""
        self._stop.set()

    async def run(self, stop_after_units: int | None = None) -> Receipt:
        """Buy, stream until the budget is spent or :meth:`stop` (or ``stop_after_units``), close."""
        buyer = await self._open()
        try:
            try:
                await self._stream(buyer, stop_after_units)
            except BaseException:
                funding, self._funding = self._funding, None
                if funding is not None:  # the payment under way ends first; the stream's error is raised
                    with contextlib.suppress(BaseException):
                        await funding
                raise
            await self._finish_funding()
            if self._final is not None:  # the seller ended the stream (its meter stopped)
                buyer.close()
                return buyer.accept_statement(self._final, tuple(self.invoices))
            return await self._close(buyer)
        finally:
            if self.ws is not None:
                await self.ws.close()

    # -- opening -------------------------------------------------------------------------------

    async def _open(self) -> BuyerStream:
        self.ws = await WebSocket.connect(self.urls[0])
        hello = await self._expect("tariff")
        self._learn(hello)
        tariff, node_id, stream_id = Tariff.from_json(hello["tariff"]), hello["node_id"], hello["stream_id"]
        p = self.policy
        if p.max_msat_per_unit is not None and tariff.msat_per_unit > p.max_msat_per_unit:
            raise PaymentError(f"tariff: {tariff.msat_per_unit} msat per {tariff.unit} is above the limit "
                               f"of {p.max_msat_per_unit}")
        ticks = min(tariff.max_ticks, p.max_msat // tariff.tick_msat)
        if ticks < 1:
            raise PaymentError(f"max_msat: {p.max_msat} msat does not buy one tick ({tariff.tick_msat} msat)")
        if p.ticks_per_increment is not None:
            return await self._open_increments(tariff, node_id, stream_id, min(p.ticks_per_increment,
                                                                               tariff.window_ticks), ticks)
        batch = self._batch_ticks(tariff)
        tip = lane_tip(os.urandom(32), 0)
        start = anchor(tip, ticks)
        await self._send("buy", anchor=start, ticks=ticks, batch_ticks=batch)
        offered = await self._expect("invoice")
        buyer = BuyerStream(tariff, stream_id, node_id, ChainWalker.from_tip(tip, ticks), 0, start, p.max_msat,
                            other_sellers=frozenset(self.sellers.values()))
        await self._fund(buyer, offered["invoice"], offered["ticks"])
        await self._send("open", allowance_id=offered["allowance_id"], resume_key=resume_key(self._resume_secret))
        position = await self._expect("position")
        if (position["stream_id"], position["start_index"], position["start_link"], position["last_index"]) != (
                stream_id, 0, start, 0):
            raise PaymentError("position: the seller does not start the stream at our lane's anchor")
        self.stream = buyer
        return buyer

    async def _open_increments(self, tariff: Tariff, node_id: bytes, stream_id: bytes, ticks: int,
                               total: int) -> BuyerStream:
        await self._send("buy_increments", ticks_per_payment=ticks, ticks=total,
                         resume_key=resume_key(self._resume_secret))
        position = await self._expect("position")
        if (position["stream_id"], position["last_index"], position["increments"]) != (stream_id, 0, 0):
            raise PaymentError("position: the seller does not start a new stream")
        buyer = BuyerStream(tariff, stream_id, node_id, None, 0, position["start_link"], self.policy.max_msat,
                            ticks_per_increment=ticks)
        self.stream = buyer
        return buyer

    async def _pay_increment(self, buyer: BuyerStream) -> None:
        """Pay the invoiced increment if it is due and fits; tell the seller."""
        assert self._pending is not None
        invoice, ticks = self._pending
        if invoice in self.paid_invoices:  # offered again after a reconnect: paid already
            self._pending = None
            return
        due = buyer.increment_due()
        if not due:
            return
        if ticks > due:
            self._budget_spent = True  # the seller's next increment is more than the budget left
            return
        decoded = decode(invoice)
        if decoded.payee != buyer.seller_node_id or decoded.amount_msat != ticks * buyer.tariff.tick_msat:
            raise PaymentError(f"invoice: not {ticks} ticks ({ticks * buyer.tariff.tick_msat} msat) to the "
                               "seller's node")
        self._pending = None
        preimage = await self.payer.pay(invoice)
        self.paid_invoices.add(invoice)
        self.invoices.append((invoice, preimage))
        buyer.paid_increment(decoded.payment_hash, ticks)
        await self._send_or_resume(buyer, "paid", payment_hash=decoded.payment_hash)

    def _batch_ticks(self, tariff: Tariff) -> int:
        """Ticks per Lightning prepayment: the policy's, or half a window; at most the budget."""
        ticks = min(tariff.max_ticks, self.policy.max_msat // tariff.tick_msat)
        return max(1, min(ticks, self.policy.batch_ticks or max(1, tariff.window_ticks // 2)))

    def _decode(self, invoice: str) -> Invoice:
        """``decode(invoice)``, once per invoice (the few latest are kept)."""
        decoded = self._decoded.get(invoice)
        if decoded is None:
            if len(self._decoded) >= 4:
                self._decoded.clear()
            decoded = self._decoded[invoice] = decode(invoice)
        return decoded

    def _paid(self, invoice: str) -> bool:
        """Paid already (by its text or its payment hash): never paid again."""
        return invoice in self.paid_invoices or self._decode(invoice).payment_hash in self._paid_hashes

    @staticmethod
    def _covers(buyer: BuyerStream, invoice: Invoice, ticks: int) -> int:
        """The ticks of the lane a batch invoice funds beyond those funded already: 0 for a batch
        we paid before to another of the seller's nodes (the process taking the stream over could
        not see that payment and invoiced the batch again); more than ``ticks`` when the seller
        counts ticks we paid twice before (the first node saw its payment since). An invoice that
        does not say which ticks it pays for funds ``ticks`` more."""
        calls = batch_calls(invoice, ticks)
        return ticks if calls is None else max(0, calls[1] - buyer.funded_ticks)

    def _may_pay(self, buyer: BuyerStream, invoice: str, ticks: int) -> bool:
        """The batch fits: what it funds stays within one window and the budget, and every batch
        paid stays within the budget plus one batch (paid twice across a failover)."""
        decoded = self._decode(invoice)
        covers = self._covers(buyer, decoded, ticks)
        return ((covers == 0 or buyer.may_fund(covers))
                and self.batches_msat + (decoded.amount_msat or 0)
                <= self.policy.max_msat + self._batch_ticks(buyer.tariff) * buyer.tariff.tick_msat)

    async def _fund(self, buyer: BuyerStream, invoice: str, ticks: int) -> None:
        """Pay a batch invoice of ``ticks`` ticks, after checking it is what it says and fits the window.

        The budget counts each batch once: it is the ticks of the lane funded (``funded_ticks``,
        the seller's count of paid calls), not the sum of the invoices paid, since the same batch
        may be invoiced twice (see :meth:`_covers`). Paying one again is still bounded: all the
        batches paid stay within ``max_msat`` plus one batch."""
        if self._paid(invoice):  # offered again (after a reconnect, in a batch_due): paid once
            return
        decoded = self._decode(invoice)
        if decoded.payee != buyer.seller_node_id and decoded.payee not in buyer.other_sellers:
            raise PaymentError("invoice: not payable to the seller's node (nor one of its announced processes)")
        if decoded.amount_msat != ticks * buyer.tariff.tick_msat:
            raise PaymentError(f"invoice: {decoded.amount_msat} msat is not {ticks} ticks at "
                               f"{buyer.tariff.tick_msat} msat")
        if not self._may_pay(buyer, invoice, ticks):
            raise PaymentError(f"invoice: {ticks} more ticks would prepay more than one window "
                               f"({buyer.tariff.window_ticks} ticks) or exceed the budget")
        covers = self._covers(buyer, decoded, ticks)
        calls = batch_calls(decoded, ticks)
        credited = max(0, calls[0] - 1 - buyer.funded_ticks) if calls is not None else 0  # ticks paid twice
        try:
            await self.payer.pay(invoice)
        except PaymentError:
            if invoice in self.unpayable:  # asked again for one that cannot be paid: give up
                raise
            # its process may have died with its node (we will resume elsewhere): the process
            # serving us then replaces it by its own invoice (micro/server.py, superseded)
            self.unpayable.append(invoice)
            return
        self.paid_invoices.add(invoice)
        self._paid_hashes.add(decoded.payment_hash)
        self.batches_msat += ticks * buyer.tariff.tick_msat
        self._twice_ticks = max(0, self._twice_ticks - credited)  # the seller counts them: funded now
        if covers:
            buyer.funded(covers)
        else:
            self.paid_twice_msat += ticks * buyer.tariff.tick_msat
            self._twice_ticks += ticks

    async def _finish_funding(self) -> None:
        """Wait for the batch being paid while the stream went on; raise what its payment raised."""
        funding, self._funding = self._funding, None
        if funding is not None:
            await funding

    def _pay_into_credit(self, buyer: BuyerStream) -> bool:
        """Count one more tick funded when the buyer would otherwise wait for an invoice that may
        never come: it paid ticks twice and the seller may have credited them (its first node came
        back), in which case it has the credit and offers no invoice for it. The link goes out; a
        seller without that credit answers ``batch_due`` with the next batch's invoice, whose range
        sets ``funded_ticks`` right again (:meth:`_covers`). At most the ticks paid twice, within
        the budget and the window; so the buyer never waits on a seller that waits for a link."""
        if (not self._twice_ticks or self._pending is not None or buyer.status is not StreamStatus.OPEN
                or buyer.stopped or buyer.delivered_units < buyer.paid_units
                or buyer.paid_ticks < buyer.funded_ticks or not buyer.may_fund(1)):
            return False
        self._twice_ticks -= 1
        buyer.funded(1)
        return True

    # -- streaming -----------------------------------------------------------------------------

    async def _stream(self, buyer: BuyerStream, stop_after_units: int | None) -> None:
        settle_deadline: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            if (self._stop.is_set() or (stop_after_units is not None and buyer.paid_units >= stop_after_units)) \
                    and not buyer.stopped:
                buyer.stop()
            if buyer.walker is None:
                if self._pending is not None:
                    await self._pay_increment(buyer)
            elif self._funding is not None:
                if self._funding.done():
                    await self._finish_funding()  # its error, if any, is raised here
            elif self._pending and (self._paid(self._pending[0]) or self._may_pay(buyer, *self._pending)):
                invoice, ticks = self._pending
                self._pending = None
                if buyer.paid_ticks < buyer.funded_ticks and not self._paid(invoice):
                    # ticks funded are left: pay the next batch while they stream (a Lightning
                    # payment takes a while; awaited here, it stopped every stream at every batch)
                    self._funding = asyncio.create_task(self._fund(buyer, invoice, ticks))
                else:
                    await self._fund(buyer, invoice, ticks)
            payment = buyer.next_payment()
            if payment is None and self._funding is not None and buyer.paid_ticks >= buyer.funded_ticks:
                await self._finish_funding()  # out of funded ticks: the batch first
                payment = buyer.next_payment()
            if payment is None and self._pay_into_credit(buyer):
                payment = buyer.next_payment()
            if payment is not None:
                await self._send_or_resume(buyer, "pay", index=payment[0], link=payment[1])
                continue
            if buyer.stopped or buyer.paid_ticks >= buyer.budget_ticks or self._budget_spent:
                if buyer.delivered_units >= buyer.paid_units:
                    return
                settle_deadline = settle_deadline or loop.time() + self.policy.settle_timeout
                if loop.time() >= settle_deadline:
                    return  # the seller stopped short of what was paid: the statement will say so
            timeout = self.policy.idle_timeout if settle_deadline is None else max(0.01, settle_deadline - loop.time())
            try:
                assert self.ws is not None
                message = parse(await self.ws.recv(timeout), SELLER_MESSAGES)
            except TimeoutError:
                if settle_deadline is not None:
                    continue
                await self._resume(buyer)
                continue
            except ConnectionClosed:
                await self._resume(buyer)
                continue
            await self._handle(buyer, message)
            if self._final is not None:
                return

    async def _handle(self, buyer: BuyerStream, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "delivered":
            self._unseen = 0
            buyer.receive_delivery(message["units"])
            if self.on_update is not None:
                self.on_update(buyer)
        elif kind == "invoice":
            self._pending = (message["invoice"], message["ticks"])
        elif kind == "statement":
            self._final = SignedStatement(Statement.from_json(message["statement"]), message["signature"])
        elif kind == "error":
            code, reason = message["code"], message["reason"]
            if code in ("ended", "meter_failed"):  # the statement follows
                self.ended = f"{code}: {reason}"
                return
            if code == "store_unavailable":  # the seller closes this connection: go on at the next URL
                await self._resume(buyer)
                return
            if code == "unpaid" and buyer.walker is None and buyer.increments:
                await asyncio.sleep(0.05)  # our payment is not settled at the seller's node yet
                await self._send_or_resume(buyer, "paid", payment_hash=buyer.increments[-1][0])
                return
            if code in ("batch_due", "unpaid") and buyer.paid_links:
                await self._finish_funding()  # a batch paid meanwhile is one never paid again below
                invoice = message.get("invoice")
                if invoice and not self._paid(invoice):
                    ticks = (self._decode(invoice).amount_msat or 0) // buyer.tariff.tick_msat
                    await self._fund(buyer, invoice, ticks)
                else:
                    self._unseen += 1
                    if self._unseen > UNSEEN_RETRIES:  # e.g. a process of the seller's that cannot see
                        raise PaymentError(  # what another one's node was paid (see docs/streaming.md)
                            f"the seller does not see the payment of its invoice: {code}: {reason}")
                    await asyncio.sleep(0.05)  # our payment is not settled at the seller's node yet
                await self._send_or_resume(buyer, "pay", index=buyer.last_index, link=buyer.paid_links[-1])
                return
            raise PaymentError(f"the seller refused: {code}: {reason}")
        else:
            raise RemoteProtocolError("unexpected", f"type: {kind} in the middle of a stream")

    async def _send_or_resume(self, buyer: BuyerStream, kind: str, **fields: object) -> None:
        try:
            await self._send(kind, **fields)
        except ConnectionClosed:
            await self._resume(buyer)  # resume resends a lost link itself

    async def _resume(self, buyer: BuyerStream) -> None:
        """Reconnect (next URL first) and reconcile with the seller's position."""
        buyer.disconnect()
        if self.ws is not None:
            await self.ws.close()
        last_error: Exception | None = None
        for attempt in range(self.policy.reconnects):
            url = self.urls[(self.reconnected + 1 + attempt) % len(self.urls)]
            try:
                self.ws = await WebSocket.connect(url)
                hello = await self._expect("tariff")
                self._learn(hello)
                # a URL we were given, or one the seller announced: its node may sign our statement
                self.sellers.setdefault(url, hello["node_id"])
                buyer.other_sellers = frozenset(self.sellers.values())
                # the greeting's stream_id is this connection's nonce: the signature is good here only
                await self._send("resume", stream_id=buyer.stream_id, signature=sign_resume(
                    self._resume_secret, buyer.stream_id, hello["stream_id"], os.urandom(32)))
                position = await self._expect("position", "statement")
                if position["type"] == "statement":  # the stream was closed meanwhile
                    self._final = SignedStatement(Statement.from_json(position["statement"]),
                                                  position["signature"])
                    return
                resend = buyer.resume(position["last_index"], position["delivered_units"], position["increments"])
                self.reconnected += 1
                if isinstance(resend, bytes):
                    await self._send("paid", payment_hash=resend)
                elif resend is not None:
                    await self._send("pay", index=resend[0], link=resend[1])
                return
            except (ConnectionClosed, TimeoutError, OSError) as exc:
                last_error = exc
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
        raise PaymentError(f"the stream's connection was lost and could not be resumed: {last_error}")

    # -- closing -------------------------------------------------------------------------------

    async def _close(self, buyer: BuyerStream) -> Receipt:
        await self._send("close")
        while True:
            assert self.ws is not None
            message = parse(await self.ws.recv(self.policy.idle_timeout), SELLER_MESSAGES)
            if message["type"] == "delivered":
                buyer.receive_delivery(message["units"])
            elif message["type"] == "statement":
                buyer.close()
                signed = SignedStatement(Statement.from_json(message["statement"]), message["signature"])
                return buyer.accept_statement(signed, tuple(self.invoices))
            elif message["type"] == "error":
                raise PaymentError(f"the seller refused to close: {message['code']}: {message['reason']}")

    # -- messages ------------------------------------------------------------------------------

    async def _send(self, kind: str, **fields: object) -> None:
        assert self.ws is not None
        if kind == "pay":  # every tick's frame: without json.dumps
            await self.ws.send(encode_pay(fields["index"], fields["link"]))  # type: ignore[arg-type]
            return
        await self.ws.send(encode(kind, **fields))

    async def _expect(self, *kinds: str) -> dict[str, Any]:
        assert self.ws is not None
        message = parse(await self.ws.recv(self.policy.idle_timeout), SELLER_MESSAGES)
        if message["type"] == "error":
            raise PaymentError(f"the seller refused: {message['code']}: {message['reason']}")
        if message["type"] not in kinds:
            raise DecodeError("type", f"expected {' or '.join(kinds)}, got {message['type']}")
        return message


async def buy_stream(urls: str | list[str], payer: Payer, max_msat: int, *,
                     on_update: Callable[[BuyerStream], None] | None = None,
                     stop_after_units: int | None = None, **policy: Any) -> Receipt:
    """Buy a stream for at most ``max_msat``; returns the checked receipt."""
    buyer = StreamBuyer(urls, payer, BuyPolicy(max_msat, **policy), on_update)
    return await buyer.run(stop_after_units)
