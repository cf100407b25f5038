"""The seller's ASGI WebSocket binding: a metered stream per connection, paid by allowance links.

:class:`StreamSeller` sells one tariff. It buys nothing itself: allowances are sold, checked
and stored by the pay-per-call :class:`~lightspeed.micro.server.AllowanceServer` (priced at one
tick per link), so a tick's payment is one hash and one atomic store update, committed before
the units it pays for are granted to the meter. :class:`StreamMiddleware` routes WebSocket
connections on the given paths to their sellers and passes everything else to the wrapped app.

The flow of one connection (messages in :mod:`.messages`)::

    seller: tariff            buyer: buy {anchor, ticks, batch_ticks}
    seller: invoice           buyer pays it over Lightning, then: open {allowance_id}
    seller: position          buyer: pay {index, link}  (one per tick, each once the last is delivered)
    seller: delivered ...     ... until the buyer sends close (or stops paying: delivery stops)
    seller: statement         (signed with the node key; the connection closes)

A dropped connection pauses the stream; ``resume {stream_id, signature}`` on a new connection
goes on, signed with the key the buyer gave at ``open`` (:mod:`.resume`; a stream closed
meanwhile answers with its statement). Streams paused longer than ``resume_seconds`` are closed
when the next stream opens.

Streams paid from an allowance live in a :class:`~lightspeed.stream.state.StreamStore`: with a
shared one (PostgreSQL, Redis) any of the seller's processes resumes a stream another one served,
each with its own node. The links need no Lightning there: they are checked against the shared
allowance store, which the first process's node filled when the allowance was paid. Why that is
safe (the lane is what is paid; delivery is written first and fenced by an epoch) is in
:mod:`.state`. Streams paid by increments are invoices of one node and stay in its process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from lightspeed.errors import DecodeError, LightspeedError, StorageUnavailable, UsageError
from lightspeed.invoice.decode import decode
from lightspeed.micro.ratelimit import RateLimiter, client_key
from lightspeed.micro.server import AllowanceServer, CallRefused
from lightspeed.micro.terms import Price
from lightspeed.micro.token import AllowanceRequest, Token
from lightspeed.stream.machine import RemoteProtocolError, SellerStream, StreamStatus
from lightspeed.stream.messages import encode, encode_delivered, parse
from lightspeed.stream.receipt import STREAM_ID_SIZE, SignedStatement, sign_statement
from lightspeed.stream.resume import resume_signed
from lightspeed.stream.state import MemoryStreamStore, StreamRecord, StreamStore
from lightspeed.stream.tariff import Tariff
from lightspeed.tasks import cancel_and_wait

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: The application's meter: deliver at most ``grant`` units of ``stream``, return how many were.
Meter = Callable[[SellerStream, int], Awaitable[int]]

class MeterStopped(LightspeedError):
    """Raised by a meter when nothing more will be delivered (the tank is full): the stream ends."""


BUYER_MESSAGES = frozenset({"buy", "open", "resume", "pay", "close", "buy_increments", "paid"})
INCREMENT_INVOICE_EXPIRY = 600  # seconds an increment's invoice can be paid
MAX_BAD_FRAMES = 8  # malformed frames one connection may send before it is closed


SELLERS_REFRESH = 2.0  # seconds the list of the seller's processes is cached for the greeting
SWEEP_EVERY = 1.0  # seconds between two looks at every stream for the paused ones to close
PURGE_EVERY = 300.0  # seconds between two purges of the shared store's expired closed streams


@dataclass
class _Live:
    machine: SellerStream
    store: StreamStore  # the shared one (allowance streams) or this process's (increments)
    epoch: int = 0  # the store's epoch when this process took it: a resume anywhere moves it on
    invoice_sent: str = ""  # the last batch invoice offered, sent once
    statement: SignedStatement | None = None
    paused_at: float = 0.0
    ticks_per_increment: int = 0  # > 0: paid by increments (no allowance)
    ticks: int = 0  # by increments: the most the buyer buys (its budget)
    pending: tuple[bytes, int, str] | None = None  # the increment invoice offered: hash, ticks, invoice
    #: The task inside :meth:`_Connection.deliver` for this stream (a connection's own task when
    #: it delivers inline), the one a resume here stops (``evicting``), and a future set when it left.
    deliverer: asyncio.Task[Any] | None = None
    evicting: asyncio.Task[Any] | None = None
    left: asyncio.Future[None] | None = None


@dataclass
class StreamSeller:
    tariff: Tariff
    allowances: AllowanceServer
    node_secret: bytes
    meter: Meter
    clock: Callable[[], float] = time.time
    max_streams: int = 10_000
    resume_seconds: float = 60.0
    #: Streams by increments one client (remote address, IPv6 by /64) may open per minute: each
    #: makes an invoice before anything is paid (allowances have the allowance server's own limit).
    increment_streams_per_minute: int = 60
    #: Run (as a task) once a stream is closed; :class:`~lightspeed.stream.refund.StreamRefunds`
    #: refunds its unused credit.
    on_closed: Callable[[SellerStream], Awaitable[object]] | None = None
    #: Stream state shared with the seller's other processes (PostgreSQL, Redis); memory: this one.
    store: StreamStore = field(default_factory=MemoryStreamStore)
    streams: dict[bytes, _Live] = field(default_factory=dict)
    _bound: dict[bytes, bytes] = field(default_factory=dict)  # allowance id -> stream id
    _limiter: RateLimiter = field(init=False)
    _local: MemoryStreamStore = field(default_factory=MemoryStreamStore)  # streams paid by increments
    _sellers: tuple[float, list[tuple[str, bytes]]] = (float("-inf"), [])
    _swept: float = float("-inf")  # when sweep() last looked at every stream
    #: Seconds between two deletions of the closed streams past the store's retention (each of at
    #: most :data:`~lightspeed.stream.state.PURGE_LIMIT`: a sweep stays short whatever the backlog).
    purge_every: float = PURGE_EVERY
    _purged: float = float("-inf")  # when sweep() last purged the store

    def __post_init__(self) -> None:
        self._limiter = RateLimiter(self.increment_streams_per_minute, 100_000)
        if self.allowances.policy.price != Price(self.tariff.tick_msat, 1):
            raise UsageError(f"allowances: must sell one tick per link (Price({self.tariff.tick_msat}, 1)), "
                             f"not {self.allowances.policy.price}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":  # mounted on its own: tell plain HTTP clients what to do
            body = b'{"code":"upgrade_required","reason":"a metered stream is a WebSocket: connect with ws://"}'
            await send({"type": "http.response.start", "status": 426,
                        "headers": [(b"content-type", b"application/json"), (b"upgrade", b"websocket"),
                                    (b"connection", b"Upgrade")]})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] != "websocket":
            return
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        connection = _Connection(self, send, client_key(scope["client"][0] if scope.get("client") else None))
        # The connection's loop runs in a task of its own, awaited here: a tick wakes it three
        # times (its frame, its lane's commit, its meter) and each wake-up resumes every frame
        # of the awaiting chain; from the server's task that chain starts with the server's and
        # the routers' frames, ~4 more per wake-up. Cancelling this task cancels that one.
        await asyncio.get_running_loop().create_task(connection.run(receive))

    async def announce(self, url: str) -> None:
        """Tell buyers (through the shared store) that this process also serves streams at ``url``."""
        await self.store.announce(url, self.allowances.node_id)
        self._sellers = (float("-inf"), [])

    async def sellers(self) -> list[tuple[str, bytes]]:
        """The seller's processes (URL, node id) for the greeting, refreshed every few seconds."""
        now = self.clock()
        if now - self._sellers[0] > SELLERS_REFRESH:
            try:
                self._sellers = (now, await self.store.sellers())
            except StorageUnavailable as exc:  # greet without the list: this process still serves
                logging.getLogger(__name__).warning("no list of seller processes: %s", exc)
                return []
        return self._sellers[1]

    async def sweep(self) -> None:
        """Close streams paused here for longer than ``resume_seconds`` (their statements are
        kept); a stream another process took over meanwhile is only forgotten here.

        It looks at every stream, so it runs at most once per :data:`SWEEP_EVERY` seconds (a
        thousand streams opening at once made it the opening's main cost), and always when the
        streams are at ``max_streams``. Every :attr:`purge_every` seconds it also deletes the
        shared store's streams closed longer ago than its retention (PostgreSQL; Redis expires them)."""
        now = self.clock()
        if now - self._purged >= self.purge_every:
            self._purged = now
            try:
                await self.store.purge_closed()
            except StorageUnavailable as exc:  # not this stream's business: the next purge goes on
                logging.getLogger(__name__).warning("closed streams not purged: %s", exc)
        if now - self._swept < SWEEP_EVERY and len(self.streams) < self.max_streams:
            return
        self._swept = now
        for stream_id, live in list(self.streams.items()):
            m = live.machine
            if m.status is StreamStatus.PAUSED and now - live.paused_at > self.resume_seconds:
                await self.finish(live)
            if m.status is StreamStatus.CLOSED and now - live.paused_at > self.resume_seconds:
                del self.streams[stream_id]
                self._bound.pop(m.allowance_id, None)
                if isinstance(live.store, MemoryStreamStore):  # a shared one keeps them its retention
                    live.store.forget(stream_id)

    async def finish(self, live: _Live) -> SignedStatement | None:
        """Close the stream and sign its statement; the store keeps the first statement recorded.
        ``None``: another process serves the stream now (it was forgotten here)."""
        if live.statement is None:
            status = live.machine.status
            statement = live.machine.close(int(self.clock()))
            signed = sign_statement(statement, self.node_secret, os.urandom(32))
            try:
                stored = await live.store.close(statement.stream_id, live.epoch, json.dumps(signed.to_json()))
            except StorageUnavailable:
                live.machine.status = status  # not closed: a later close or resume makes the statement
                raise
            live.paused_at = self.clock()  # a delivery going on sees the status after its meter call and ends
            if not stored:
                return None
            live.statement = SignedStatement.from_json(json.loads(stored))
            if self.on_closed is not None:  # closed here (a process that lost the stream returned above)
                _keep_running(self.on_closed(live.machine))
        return live.statement


async def _stop_delivery(live: _Live, timeout: float = 5.0) -> None:
    """Stop the delivery another connection of this process runs for ``live`` (it may be inside
    the meter, a tick that connection's handler is delivering) and wait until it has left.

    Without this, a buyer resuming here while its old connection was still metering a grant got
    the same grant from both (the second report then exceeded what was paid: ``meter_failed``).
    The stopped grant's units are granted again here, as after a disconnect (at most one tick).
    A meter that ignores the cancellation is waited for at most ``timeout`` seconds."""
    task = live.deliverer
    if task is None or task is asyncio.current_task() or task.done():
        return
    live.evicting, live.left = task, asyncio.get_running_loop().create_future()
    task.cancel()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(live.left), timeout)


class _Connection:
    def __init__(self, seller: StreamSeller, send: Send, client: str) -> None:
        self.seller, self._send, self.client = seller, send, client
        self.stream_id = os.urandom(STREAM_ID_SIZE)
        self.live: _Live | None = None
        self.epoch = 0
        self.lock = asyncio.Lock()
        self.delivery: asyncio.Task[None] | None = None
        self.closed = False
        #: Served by :mod:`.wsserver`: its connection's synchronous write (a tick's frame without
        #: an ASGI message dict and a lock round, ~2 µs of the server's ~100 per tick).
        self._write_now: Callable[[str], asyncio.Future[None] | None] | None = getattr(
            getattr(send, "__self__", None), "send_text_now", None)

    async def send(self, kind: str, **fields: object) -> None:
        await self.send_text(encode(kind, **fields))

    async def send_text(self, text: str) -> None:
        wait = self.write_frame(text)
        if wait is not None:
            await wait

    def write_frame(self, text: str) -> Awaitable[None] | None:
        """Send one text frame: on :mod:`.wsserver` it is written now, and what is returned is the
        wait for a peer that reads slower than we write (None: nothing to wait for; the tick's path
        calls this, without :meth:`send_text`'s coroutine); elsewhere an ASGI send to await."""
        write_now = self._write_now
        if write_now is None:
            return self._send_locked(text)
        return None if self.closed else write_now(text)

    async def _send_locked(self, text: str) -> None:
        async with self.lock:
            if not self.closed:
                try:
                    await self._send({"type": "websocket.send", "text": text})
                except OSError:  # the peer is gone (uvicorn: ClientDisconnected): receive() reports the
                    self.closed = True  # disconnect and detach() pauses the stream, which the buyer resumes

    async def run(self, receive: Receive) -> None:
        s = self.seller
        sellers = await s.sellers()
        await self.send("tariff", stream_id=self.stream_id, node_id=s.allowances.node_id,
                        tariff=s.tariff.to_json(), **({"sellers": sellers} if sellers else {}))
        bad = 0
        try:
            while not self.closed:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                try:
                    frame = message.get("text")
                    m = parse(frame if frame is not None else message.get("bytes") or b"", BUYER_MESSAGES)
                    if m["type"] == "pay" and self.live is not None:
                        # every tick's message: straight to its handler (through handle(), a coroutine
                        # or a plain dispatcher, 1.2% more instructions per tick, stream_instructions)
                        await self.on_pay(m)
                    else:
                        await self.handle(m)
                except DecodeError as exc:
                    bad += 1
                    await self.send("error", code="bad_message", reason=str(exc))
                    if bad >= MAX_BAD_FRAMES:
                        break
                except RemoteProtocolError as exc:
                    await self.send("error", code=exc.code, reason=exc.reason)
                except CallRefused as exc:
                    extra = {"invoice": exc.invoice} if exc.invoice else {}
                    await self.send("error", code=exc.code, reason=exc.reason, **extra)
                except StorageUnavailable as exc:
                    await self.send("error", code="store_unavailable", reason=str(exc))
        finally:
            await self.detach()

    async def detach(self) -> None:
        if self.delivery is not None:
            await cancel_and_wait(self.delivery)
        live = self.live
        if live is not None and live.epoch == self.epoch and live.machine.status is StreamStatus.OPEN:
            live.machine.disconnect()
            live.paused_at = self.seller.clock()
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):  # the peer may be gone already
                await self._send({"type": "websocket.close", "code": 1000})

    async def handle(self, m: dict[str, Any]) -> None:
        kind = m["type"]
        if kind in ("buy", "open", "resume", "buy_increments") and self.live is not None:
            raise RemoteProtocolError("already_open", f"{kind}: this connection serves a stream already")
        if kind in ("pay", "close", "paid") and self.live is None:
            raise RemoteProtocolError("not_open", f"{kind}: open or resume a stream first")
        await getattr(self, "on_" + kind)(m)

    async def on_buy(self, m: dict[str, Any]) -> None:
        tariff = self.seller.tariff
        batch = m["batch_ticks"]
        if not 1 <= batch <= tariff.window_ticks:
            raise RemoteProtocolError("bad_request", f"batch_ticks: must be 1 to {tariff.window_ticks} "
                                      "(the prepayment window)")
        ticks = m["ticks"]
        if not 1 <= ticks <= tariff.max_ticks:
            raise RemoteProtocolError("bad_request", f"ticks: the lane's length must be 1 to {tariff.max_ticks}")
        terms = await self.seller.allowances.create(
            AllowanceRequest(ticks, (m["anchor"],), min(batch, ticks)), self.client)
        await self.send("invoice", allowance_id=terms.allowance_id, invoice=terms.invoice,
                        ticks=terms.first_paid_calls)

    async def on_open(self, m: dict[str, Any]) -> None:
        s, allowance_id = self.seller, m["allowance_id"]
        status = await s.allowances.status(allowance_id)
        if status["status"] != "active":
            raise CallRefused("unpaid", "the allowance is not paid (or is closed)",
                              invoice=str(status["invoice"]) if status["status"] == "pending" else None)
        if allowance_id in s._bound:
            raise RemoteProtocolError("in_use", "allowance_id: another stream is paid from this allowance")
        await s.sweep()
        if len(s.streams) >= s.max_streams:
            raise RemoteProtocolError("busy", f"{s.max_streams} streams are open: retry later")
        lane = await s.allowances.store.lane(allowance_id, 0)
        assert lane is not None  # the allowance exists: status() found it
        await s.store.create(StreamRecord(self.stream_id, allowance_id, 0, lane.index, lane.value,
                                          json.dumps(s.tariff.to_json()), m.get("resume_key", b"")))
        machine = SellerStream(s.tariff, self.stream_id, s.allowances.node_id, allowance_id, 0, lane.index,
                               lane.value)
        self.live = s.streams[self.stream_id] = _Live(machine, s.store)
        s._bound[allowance_id] = self.stream_id
        await self.attach()

    async def on_resume(self, m: dict[str, Any]) -> None:
        """Take the stream over (here or from another process), if the buyer signs for it."""
        s, stream_id = self.seller, m["stream_id"]
        live = s.streams.get(stream_id)
        store = live.store if live is not None else s.store
        record = await store.load(stream_id)
        if record is None:
            raise RemoteProtocolError("unknown_stream", "stream_id: no such stream (or it was forgotten)")
        if not record.resume_key:
            raise RemoteProtocolError("not_resumable", "stream_id: the stream was opened without a resume_key")
        if not resume_signed(record.resume_key, stream_id, self.stream_id, m.get("signature", b"")):
            raise RemoteProtocolError("unauthorized", "signature: not the stream's resume_key signing this "
                                      "stream_id and this connection's nonce (the greeting's stream_id)")
        if not record.statement and not await store.take_over(stream_id, record.epoch):
            record = await store.load(stream_id)  # closed, or taken over, meanwhile
            assert record is not None
            if not record.statement:
                raise RemoteProtocolError("busy", "stream_id: another connection took the stream over just now")
        if record.statement:
            if live is not None:
                live.statement = SignedStatement.from_json(json.loads(record.statement))
            await self.send("statement", **json.loads(record.statement))
            return
        # served here last: this process's count is exact; else what is paid is the lane and what
        # was delivered the record (a ceiling: units granted before a crash count as delivered)
        fresh = live is None or live.epoch != record.epoch
        if live is not None:
            live.epoch = record.epoch + 1  # a delivery of the old connection sees the new epoch and ends
            await _stop_delivery(live)  # ... and one inside its meter now ends before we deliver
        if fresh:
            live = await self._load(record, live)
            # a batch invoice of the process we take over from is payable to its node only: ours
            # replaces it, offered ahead as usual (a paid one is credited by that node later)
            await s.allowances.take_over_batch(record.allowance_id)
        assert live is not None
        live.machine.resume()
        self.stream_id = stream_id
        self.live = live
        await self.attach()

    async def _load(self, record: StreamRecord, live: _Live | None) -> _Live:
        """The stream as the shared stores have it: the lane (paid) and the record (delivered)."""
        s = self.seller
        lane = await s.allowances.store.lane(record.allowance_id, record.lane)
        if lane is None:
            raise RemoteProtocolError("unknown_stream", "stream_id: its allowance is gone")
        tariff = Tariff.from_json(json.loads(record.tariff))
        machine = SellerStream(tariff, record.stream_id, s.allowances.node_id, record.allowance_id, record.lane,
                               record.start_index, record.start_link, record.delivered_units,
                               StreamStatus.PAUSED)
        machine.last_index, machine.last_link = lane.index, lane.value
        if live is None:
            if len(s.streams) >= s.max_streams:
                raise RemoteProtocolError("busy", f"{s.max_streams} streams are open: retry later")
            live = s.streams[record.stream_id] = _Live(machine, s.store)
            s._bound[record.allowance_id] = record.stream_id
        live.machine, live.epoch = machine, record.epoch + 1
        return live

    async def attach(self) -> None:
        assert self.live is not None
        m = self.live.machine
        self.epoch = self.live.epoch
        await self.send("position", stream_id=m.stream_id, start_index=m.start_index, start_link=m.start_link,
                        last_index=m.last_index, delivered_units=m.delivered_units, increments=len(m.increments))
        if self.live.pending is not None:  # offered before a disconnect: offer it again
            await self.send("invoice", allowance_id=bytes(16), invoice=self.live.pending[2],
                            ticks=self.live.pending[1])
        if self.live.machine.grant():  # paid before a disconnect and not delivered yet
            self.delivery = asyncio.create_task(self.deliver(self.live))

    async def on_pay(self, m: dict[str, Any]) -> None:
        assert self.live is not None
        live, index, link = self.live, m["index"], m["link"]
        machine = live.machine
        # cheap refusals before the store is asked; the link's hash is checked once, by spend(),
        # against the lane the store has (the machine's last link is that lane's value)
        machine.check_payment(index, link, verify_link=False)
        receipt = await self.seller.allowances.spend(Token(machine.allowance_id, machine.lane, index, link))
        # the store has the link (committed): now the units it pays for may be delivered
        machine.receive_payment(index, link, verified=True)
        if receipt.next_invoice and receipt.next_invoice != live.invoice_sent:
            live.invoice_sent = receipt.next_invoice
            ticks = receipt.next_calls or (decode(receipt.next_invoice).amount_msat or 0) // self.seller.tariff.tick_msat
            await self.send("invoice", allowance_id=machine.allowance_id, invoice=receipt.next_invoice, ticks=ticks)
        if self.delivery is None or self.delivery.done():
            await self.deliver(live, inline=True)
        # else the delivery task is at it: it looks at what is paid again after its meter call

    async def on_buy_increments(self, m: dict[str, Any]) -> None:
        """A buyer without an allowance: one invoice of the seller's node per ``ticks_per_payment`` ticks."""
        s, ticks = self.seller, m["ticks_per_payment"]
        wait = s._limiter.take(self.client, s.clock())
        if wait > 0:
            raise RemoteProtocolError("rate_limited", f"too many streams opened from {self.client}; retry in "
                                      f"{math.ceil(wait)} s")
        if not 1 <= ticks <= s.tariff.window_ticks:
            raise RemoteProtocolError("bad_request", f"ticks_per_payment: must be 1 to {s.tariff.window_ticks} "
                                      "(the prepayment window)")
        if not 1 <= m["ticks"] <= s.tariff.max_ticks:
            raise RemoteProtocolError("bad_request", f"ticks: the stream's length must be 1 to {s.tariff.max_ticks}")
        await s.sweep()
        if len(s.streams) >= s.max_streams:
            raise RemoteProtocolError("busy", f"{s.max_streams} streams are open: retry later")
        machine = SellerStream(s.tariff, self.stream_id, s.allowances.node_id, bytes(16), 0, 0, bytes(32))
        await s._local.create(StreamRecord(self.stream_id, bytes(16), 0, 0, bytes(32), "",
                                           m.get("resume_key", b"")))
        self.live = s.streams[self.stream_id] = _Live(machine, s._local, ticks_per_increment=ticks,
                                                      ticks=m["ticks"])
        await self.attach()
        await self.offer_increment(self.live)

    async def offer_increment(self, live: _Live) -> None:
        """Invoice the next increment (once; it is paid when everything paid before is delivered)."""
        machine = live.machine
        ticks = min(live.ticks_per_increment, live.ticks - machine.paid_ticks)
        if ticks < 1 or live.pending is not None:
            return
        first = machine.paid_ticks + 1
        invoice = await self.seller.allowances.payee.create_invoice(
            ticks * machine.tariff.tick_msat,
            f"Lightspeed stream {machine.stream_id.hex()}: ticks {first}-{first + ticks - 1}", INCREMENT_INVOICE_EXPIRY)
        live.pending = (invoice.payment_hash, ticks, invoice.encode())
        await self.send("invoice", allowance_id=bytes(16), invoice=live.pending[2], ticks=ticks)

    async def on_paid(self, m: dict[str, Any]) -> None:
        assert self.live is not None
        live, payment_hash = self.live, m["payment_hash"]
        if live.pending is None or live.pending[0] != payment_hash:
            raise RemoteProtocolError("unknown_invoice", "payment_hash: not the increment invoiced")
        ticks, invoice = live.pending[1], live.pending[2]
        live.machine.check_increment(payment_hash, ticks)
        if not await self.seller.allowances.payee.is_paid(payment_hash):
            raise CallRefused("unpaid", "the increment's invoice is not paid (yet)", invoice=invoice)
        # the node has the payment (committed): the units it pays for may be delivered
        live.machine.receive_increment(payment_hash, ticks)
        live.pending = None
        await self.offer_increment(live)
        if self.delivery is None or self.delivery.done():  # an increment is many ticks: a task delivers them
            self.delivery = asyncio.create_task(self.deliver(live))

    async def on_close(self, m: dict[str, Any]) -> None:
        assert self.live is not None
        signed = await self.seller.finish(self.live)
        if signed is None:
            raise RemoteProtocolError("taken_over", "the stream is served by another connection now")
        await self.send("statement", **_statement_fields(signed))
        await self.detach()

    async def deliver(self, live: _Live, inline: bool = False) -> None:
        """Grant the meter what is paid and not delivered, until nothing is.

        ``inline``: called by the handler of the payment, in the connection's own task, for one
        grant (a tick paid by a link: the common case); anything left after it (a meter that
        delivered less) goes on in a delivery task. Why not always a task: waking it was one of
        the four event-loop hand-offs of a tick (~8 µs of the server's ~120, profiled at 1,000
        streams); the connection reads its next message once the tick is delivered, which is
        when the buyer sends it. A stream paid by increments, or resumed with units paid and not
        delivered, is delivered by the task (many ticks: the connection goes on reading).

        A meter that raises :class:`MeterStopped` (nothing more to deliver) or fails ends the
        stream: the buyer gets an ``error`` (``ended`` or ``meter_failed``), then the statement.
        """
        machine, epoch = live.machine, self.epoch
        me = asyncio.current_task()
        live.deliverer = me
        try:
            try:
                while live.epoch == epoch and machine.status is StreamStatus.OPEN and not self.closed:
                    grant = machine.grant()
                    if grant == 0:
                        return
                    # written before the meter runs: had this process died after, another one
                    # would count the grant as delivered (the buyer's tick at most), never again
                    if not await live.store.deliver(machine.stream_id, epoch, machine.delivered_units + grant):
                        return  # taken over by another process (or closed there): deliver nothing
                    units = await self.seller.meter(machine, grant)
                    machine.delivered(units)  # the meter must not exceed its grant (UsageError otherwise)
                    if units:
                        wait = self.write_frame(encode_delivered(units, machine.delivered_units))
                        if wait is not None:
                            await wait  # the peer reads slower than we write (or an ASGI send)
                    if inline:
                        if machine.grant() and machine.status is StreamStatus.OPEN:
                            self.delivery = asyncio.create_task(self.deliver(live))
                        return
                    if not units:
                        await asyncio.sleep(0)
            except asyncio.CancelledError:
                if me is None or live.evicting is not me:
                    raise
                live.evicting = None  # stopped by a resume on another connection: that one delivers now
                me.uncancel()
            except StorageUnavailable as exc:  # nothing was written: pause, the buyer resumes once it is back
                await self.send("error", code="store_unavailable", reason=str(exc))
                async with self.lock:
                    if not self.closed:
                        self.closed = True
                        with contextlib.suppress(Exception):
                            await self._send({"type": "websocket.close", "code": 1011})
            except Exception as exc:
                if not isinstance(exc, MeterStopped):
                    logging.getLogger(__name__).exception("the meter of stream %s failed", machine.stream_id.hex())
                await self.send("error", code="ended" if isinstance(exc, MeterStopped) else "meter_failed",
                                reason=str(exc) or type(exc).__name__)
                try:
                    signed = await self.seller.finish(live)
                except StorageUnavailable:
                    return  # the statement is made at the buyer's next resume or close
                if signed is not None:
                    await self.send("statement", **_statement_fields(signed))
        finally:
            if live.deliverer is me:
                live.deliverer = None
                if live.left is not None and not live.left.done():
                    live.left.set_result(None)

_hooks: set[asyncio.Task[object]] = set()


def _keep_running(work: Awaitable[object]) -> None:
    """Run a closed stream's hook to its end (a reference kept: a task only weakly held may vanish)."""

    async def run() -> object:
        try:
            return await work
        except Exception:
            logging.getLogger(__name__).exception("the hook of a closed stream failed")
            return None

    task = asyncio.get_running_loop().create_task(run())
    _hooks.add(task)
    task.add_done_callback(_hooks.discard)


def _statement_fields(signed: SignedStatement) -> dict[str, object]:
    return {"statement": signed.statement.to_json(), "signature": signed.signature}


class StreamMiddleware:
    """Serve ``sellers[path]`` to WebSocket connections on ``path``; pass the rest to ``app``."""

    def __init__(self, app: ASGIApp, sellers: Mapping[str, StreamSeller]) -> None:
        self.app, self.sellers = app, dict(sellers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope.get("path") in self.sellers:
            await self.sellers[scope["path"]](scope, receive, send)
            return
        await self.app(scope, receive, send)
