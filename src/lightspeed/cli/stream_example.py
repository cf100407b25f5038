"""The metered example: an EV charger selling energy over a WebSocket, and a server for it.

It lives in ``cli`` because it runs a server (uvicorn); the protocol is in
:mod:`lightspeed.stream`. The charger reports energy every ``interval`` seconds: at the
default 36 kW that is 1 Wh per 100 ms, one tick of 1 Wh, so ten ticks a second.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from lightspeed.cli.paid_example import loopback_socket
from lightspeed.errors import UsageError
from lightspeed.micro.auto_refund import AutoRefunds
from lightspeed.micro.refunds import RefundPayer
from lightspeed.micro.server import AllowanceServer, Payee, ServerPolicy
from lightspeed.micro.store import AllowanceStore
from lightspeed.micro.terms import Price
from lightspeed.stream.asgi import ASGIApp, Meter, StreamSeller
from lightspeed.stream.machine import SellerStream
from lightspeed.stream.refund import StreamRefunds
from lightspeed.stream.state import MemoryStreamStore, StreamStore
from lightspeed.stream.tariff import Tariff

#: 300 msat per Wh (about 0.30 EUR/kWh at 100k EUR/BTC), paid 1 Wh a tick, up to 50 kWh per
#: stream, at most a minute of charging (600 ticks) prepaid.
CHARGER_TARIFF = Tariff("Wh", msat_per_unit=300, tick_units=1, max_units=50_000, window_ticks=600)
CHARGER_PATH = "/charge"


class ChargerMeter:
    """An EV charger: every ``interval`` s it delivers ``wh_per_report`` Wh, never more than granted.

    Reports keep a schedule, one every ``interval`` from the stream's first: a payment that
    arrives before its report is due costs no time, and one that arrives late by less than an
    interval is reported at once with the schedule kept (the next report is due when it was due
    anyway), so a tick that waited a few loop turns on a busy server does not lower the stream's
    rate. A payment later than that (no credit for a while, a disconnect, a server that cannot
    keep up) starts the schedule afresh: the charger resumes without a burst. At most one
    report is made up at a time, so no more than two fall within one interval.

    Why: a meter whose schedule moves on by every delay offers less load the slower the server
    answers, and so hides how far behind it is (what load generators call coordinated
    omission); this one offers its rate whatever the latency, and ``late`` (reports made up)
    and ``restarts`` (schedules started afresh: the server fell behind by more than an
    interval) say how it went. ``keep_schedule=False`` is the other charger, one that never
    makes up a delay (no two reports closer than ``interval``): the schedule moves on by each.
    """

    def __init__(self, wh_per_report: int = 1, interval: float = 0.1, *, keep_schedule: bool = True,
                 clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], Awaitable[object]] | None = None) -> None:
        if wh_per_report < 1 or interval < 0:
            raise UsageError("charger_meter: wh_per_report must be at least 1 and interval not negative")
        self.wh_per_report, self.interval, self.keep_schedule = wh_per_report, interval, keep_schedule
        # default: the running loop's clock and timers (tests give their own)
        self._clock, self._sleep = clock, sleep
        self.late = self.restarts = 0
        self.reports = 0  # reports made (each one delivered units)
        self._due: dict[bytes, float] = {}  # stream id -> when its last report was due

    async def __call__(self, stream: SellerStream, grant: int) -> int:
        interval = self.interval
        if interval:
            now = self._clock() if self._clock is not None else asyncio.get_running_loop().time()
            last = self._due.get(stream.stream_id)
            due = now if last is None else last + interval
            if due < now - interval:  # more than an interval late: a pause, not a delay to make up
                due = now
                self.restarts += 1
            elif due < now:
                self.late += 1
                if not self.keep_schedule:
                    due = now
            if len(self._due) > 100_000:  # forget streams that ended long ago
                self._due.clear()
            self._due[stream.stream_id] = due
            if due > now:
                if self._sleep is not None:
                    await self._sleep(due - now)
                else:
                    await _until(due - now)
        self.reports += 1
        return min(grant, self.wh_per_report)


def _until(delay: float) -> asyncio.Future[None]:
    """A future the running loop sets after ``delay`` s: ``asyncio.sleep`` without its coroutine
    (every tick of every stream waits here once; one frame less to resume at each). A cancelled
    wait leaves its timer to fire on a done future, which does nothing."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    loop.call_later(delay, _wake, future)
    return future


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def charger_meter(wh_per_report: int = 1, interval: float = 0.1, *, keep_schedule: bool = True) -> ChargerMeter:
    """The example's meter (:class:`ChargerMeter`): ``wh_per_report`` Wh every ``interval`` s."""
    return ChargerMeter(wh_per_report, interval, keep_schedule=keep_schedule)


def stream_seller(store: AllowanceStore, payee: Payee, node_id: bytes, node_secret: bytes, *,
                  tariff: Tariff = CHARGER_TARIFF, meter: Meter | None = None,
                  payer: RefundPayer | None = None, creates_per_minute: int = 60,
                  auto_refunds: AutoRefunds | None = None,
                  stream_store: StreamStore | None = None,
                  batch_offer_spread: float = ServerPolicy.batch_offer_spread) -> StreamSeller:
    """A seller of ``tariff`` whose allowances (one tick per link) live in ``store``, its streams in
    ``stream_store`` (default: this process's memory); with ``auto_refunds``, a closed stream's
    unused credit is refunded through the buyer's return path. ``batch_offer_spread``: see
    :class:`~lightspeed.micro.server.ServerPolicy` (0: every next batch offered at half a batch left)."""
    policy = ServerPolicy(Price(tariff.tick_msat, 1), max_calls=tariff.max_ticks, max_lanes=1,
                          creates_per_minute=creates_per_minute, batch_offer_spread=batch_offer_spread)
    allowances = AllowanceServer(store, payee, node_id, policy, payer=payer, auto_refunds=auto_refunds)
    on_closed = StreamRefunds(allowances) if auto_refunds is not None else None
    return StreamSeller(tariff, allowances, node_secret, meter or charger_meter(), on_closed=on_closed,
                        store=stream_store or MemoryStreamStore())


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # Ctrl-C belongs to the command that started the server


@dataclass
class WsServer:
    """A running ASGI server (HTTP and WebSocket) on a loopback socket."""

    url: str  # ws://host:port
    _server: uvicorn.Server
    _task: asyncio.Task[Any]

    async def stop(self) -> None:
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self._task, 5)


async def serve_asgi(app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> WsServer:
    """Serve ``app`` with WebSockets (wsproto) until :meth:`WsServer.stop`."""
    sock = loopback_socket(host, port)
    server = _Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False, ws="wsproto",
                                    ws_max_size=64 * 1024))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise UsageError("the WebSocket server did not start")
        await asyncio.sleep(0.01)
    bound_host, bound = sock.getsockname()[:2]
    return WsServer(f"ws://{bound_host}:{bound}", server, task)
