"""The server process of ``benchmarks/stream.py``: one process selling metered streams.

``python benchmarks/_stream_server.py --store URL``: prints ``READY <ws url> <http url>`` and
serves until killed:

* ``ws /charge``: the EV charger (1 Wh a tick, a report every 100 ms: 10 ticks/s per stream);
* ``ws /fast``: the same protocol with a meter that delivers at once (the per-tick cost);
* ``ws /echo``: a WebSocket echo on the same server stack (the baseline of a tick);
* ``POST /ledger/pay``: settles an allowance invoice. The benchmark's settlement is the tests'
  in-process ledger (real signed invoices, paid at once): one payment per prepaid window, off
  the per-tick path; Lightning payments themselves are measured by ``benchmarks/channel.py``;
* ``GET /stats``: this process's CPU time, the ticks served so far and the charger's reports
  made up (late by less than an interval) and schedules restarted (later than that).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from tests.support.ledger import Ledger

from lightspeed.cli.stream_example import CHARGER_TARIFF, charger_meter, serve_asgi, stream_seller
from lightspeed.micro.stores import open_allowance_store
from lightspeed.stream.asgi import StreamMiddleware
from lightspeed.stream.machine import SellerStream
from lightspeed.stream.tariff import Tariff
from lightspeed.stream.wsserver import serve_websockets

FAST_TARIFF = Tariff("B", msat_per_unit=1, tick_units=1, max_units=10**7, window_ticks=10**6)
TICKS = [0]


def counting(meter: Any) -> Any:
    async def counted(stream: SellerStream, grant: int) -> int:
        units: int = await meter(stream, grant)
        TICKS[0] += 1
        return units
    return counted


async def instant(stream: SellerStream, grant: int) -> int:
    return grant


async def echo(scope: Any, receive: Any, send: Any) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text")})


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", default="memory")
    parser.add_argument("--ws", choices=("fast", "uvicorn"), default="fast",
                        help="fast: lightspeed.stream.wsserver (default); uvicorn: the ASGI binding under uvicorn")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")  # read in __main__
    args = parser.parse_args()
    ledger = Ledger()
    store = open_allowance_store(args.store)
    charger = charger_meter()

    async def pay(request: Request) -> JSONResponse:
        body = await request.json()
        return JSONResponse({"preimage": (await ledger.pay(body["invoice"])).hex()})

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse({"cpu_s": time.process_time(), "ticks": TICKS[0] + getattr(charger, "reports", 0), "late": charger.late,
                             "restarts": charger.restarts, **store_stats()})

    def store_stats() -> dict[str, int]:
        """The SQLite store's commits so far and its WAL's size (other stores: none)."""
        writer, path = getattr(store, "_writer", None), getattr(store, "path", None)
        if writer is None or path is None:
            return {}
        wal = Path(f"{path}-wal")
        return {"store_commits": getattr(writer, "batches", 0), "store_wal_bytes": wal.stat().st_size if wal.exists() else 0}

    http = Starlette(routes=[Route("/ledger/pay", pay, methods=["POST"]), Route("/stats", stats)])
    many = 10**6  # one client process opens every stream: no per-address limit here
    sellers = {
        "/charge": stream_seller(store, ledger, ledger.node_id, ledger.privkey, tariff=CHARGER_TARIFF,
                                 meter=charger if hasattr(charger, "reports") else counting(charger),
                                 creates_per_minute=many),
        "/fast": stream_seller(store, ledger, ledger.node_id, ledger.privkey, tariff=FAST_TARIFF,
                               meter=counting(instant), creates_per_minute=many),
    }
    app = StreamMiddleware(http, sellers)

    async def routed(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and scope.get("path") == "/echo":
            await echo(scope, receive, send)
        else:
            await app(scope, receive, send)

    # The collector's young generation is tuned to the tick's short-lived objects (futures, frames,
    # dicts): at the default threshold (700), with the full collections that follow (~48 ms each
    # at 1,000 streams), it took ~12% of this process's CPU, ~1% after (measured with
    # gc.callbacks). What was imported is frozen out of every collection; cycles are still found.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    if args.ws == "fast":  # WebSockets on their own server and port, HTTP (ledger, stats) on uvicorn
        ws_server, http_server = await serve_websockets(routed), await serve_asgi(http)
        print("READY", ws_server.url, http_server.url.replace("ws://", "http://"), flush=True)
    else:
        server = await serve_asgi(routed)
        print("READY", server.url, server.url.replace("ws://", "http://"), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    if "asyncio" in sys.argv:  # --loop asyncio: the same server on the standard library's event loop
        asyncio.run(main())
    else:  # uvloop (the default): a seller serving many streams runs its loop on libuv
        import uvloop
        uvloop.run(main())
