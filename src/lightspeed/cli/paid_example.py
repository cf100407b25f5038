"""A paid example API on the embedded network, and a client that opens a channel to it.

It lives in ``cli`` because it composes a node with the pay-per-call layer (``micro`` is
below ``node`` and must not import it).

Used by ``lightspeed serve-example``, ``lightspeed call``, ``lightspeed demo`` and the
paid-API benchmark. The server is a Lightspeed node (BOLT 8 listener) beside an ASGI app
behind :class:`~lightspeed.micro.asgi.LightspeedMiddleware`; the offer in every 402 names
the node's address, so a client can open a channel to it and pay over that channel.
Both sides share one regtest chain (a SQLite file when they are separate processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lightspeed.chain.regtest import RegtestChain
from lightspeed.errors import UsageError
from lightspeed.micro.asgi import LightspeedMiddleware
from lightspeed.micro.auto_refund import AutoRefunds
from lightspeed.micro.lightning import NodePayee, NodePayer, NodeReturnPaths
from lightspeed.micro.server import AllowanceServer, ServerPolicy
from lightspeed.micro.store import AllowanceStore
from lightspeed.micro.terms import Price
from lightspeed.node.node import Node
from lightspeed.node.regtest import mine_forever
from lightspeed.tasks import wait_ended

EXAMPLE_PRICES = {"/weather": 1, "/forecast": 5}  # links of the allowance per call


def _celsius(city: str, day: int = 0) -> int:
    return hashlib.sha256(f"{city}/{day}".encode()).digest()[0] % 35 - 5


async def _index(request: Request) -> JSONResponse:
    return JSONResponse({"service": "Lightspeed example weather API", "prices_in_links": EXAMPLE_PRICES,
                         "free": ["/"], "how": "GET a priced route; the 402 answer says how to pay"})


async def _weather(request: Request) -> JSONResponse:
    city = request.path_params["city"]
    return JSONResponse({"city": city, "celsius": _celsius(city)})


async def _forecast(request: Request) -> JSONResponse:
    city = request.path_params["city"]
    return JSONResponse({"city": city, "celsius": [_celsius(city, day) for day in range(7)]})


def example_app() -> Starlette:
    """The unpaid application: what any developer already has before adding Lightspeed."""
    return Starlette(routes=[Route("/", _index), Route("/weather/{city}", _weather),
                             Route("/forecast/{city}", _forecast)])


def loopback_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Without NODELAY a response split in two writes waits for a delayed ACK: 40 ms a call.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


@dataclass
class PaidApi:
    """A running example: the server's node, its allowance server and the HTTP server."""

    node: Node
    allowances: AllowanceServer
    url: str
    node_address: str
    _http: uvicorn.Server
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    charger: Any = None  # the metered endpoint's StreamSeller

    async def stop(self) -> None:
        self._http.should_exit = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await wait_ended(task)
        if self.allowances.auto_refunds is not None:  # left in flight: resumed at the next start
            await self.allowances.auto_refunds.aclose()
        await self.node.stop()
        await self.allowances.store.aclose()
        if self.charger is not None:
            await self.charger.store.aclose()


class _Server(uvicorn.Server):
    """uvicorn that leaves SIGINT alone: Ctrl-C belongs to the command that started the API (uvicorn's
    own handler would stop only the server, and the command's calls would fail with ReadError)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def start_paid_api(chain: RegtestChain, store: AllowanceStore, price: Price, *,
                         http_host: str = "127.0.0.1", http_port: int = 0, node_port: int = 0,
                         node_key: bytes | None = None, mine_every: float | None = 0.2,
                         app: Any = None, prices: dict[str, int] | None = None,
                         creates_per_minute: int | None = None, open_back_sat: int | None = None,
                         stream_store: Any = None, sock: socket.socket | None = None) -> PaidApi:
    """Start the server node and the paid HTTP API; ``mine_every`` seconds a block (regtest).

    ``open_back_sat``: open a channel of that size back to each client that opened one to us
    (funded from the regtest faucet), so refunds have the server's own balance to go over.
    ``stream_store`` (a :class:`~lightspeed.stream.state.StreamStore`) is where the charger keeps
    its streams: a shared one lets another process resume them (default: this process's memory).
    ``sock``: a listening socket to serve on instead of ``http_host``/``http_port`` (several
    worker processes sharing one inherited socket, as ``benchmarks/paid_api.py --workers`` does).

    ``creates_per_minute`` overrides the per-client limit on new allowances (a benchmark that
    buys one allowance per call from one address needs more than the default).
    """
    node_key = node_key or os.urandom(32)
    node = Node(node_key, chain, os.urandom(32))
    port = await node.start("127.0.0.1", node_port)
    node_address = f"127.0.0.1:{port}"
    policy = ServerPolicy(price)
    if creates_per_minute is not None:
        policy = ServerPolicy(price, creates_per_minute=creates_per_minute)
    # unused credit goes back through the return path the buyer's payment carried (if it did)
    auto_refunds = AutoRefunds(store, NodeReturnPaths(node))
    allowances = AllowanceServer(store, NodePayee(node), node.node_id, policy,
                                 payer=NodePayer(node), node_address=node_address, auto_refunds=auto_refunds)
    asgi: Any = LightspeedMiddleware(app or example_app(), allowances, prices or EXAMPLE_PRICES)
    # the metered endpoint: an EV charger (WebSocket), paid per tick from its own allowances
    from lightspeed.cli.stream_example import CHARGER_PATH, stream_seller
    from lightspeed.stream.asgi import StreamMiddleware

    charger = stream_seller(store, NodePayee(node), node.node_id, node_key, payer=NodePayer(node),
                            auto_refunds=auto_refunds, stream_store=stream_store)
    asgi = StreamMiddleware(asgi, {CHARGER_PATH: charger})
    sock = sock or loopback_socket(http_host, http_port)
    http = _Server(uvicorn.Config(asgi, log_level="warning", lifespan="off", access_log=False, ws="wsproto",
                                  ws_max_size=64 * 1024))
    tasks = [asyncio.create_task(http.serve(sockets=[sock]))]
    tasks.append(asyncio.create_task(_expire(allowances)))
    if mine_every:
        tasks.append(asyncio.create_task(mine_forever(chain, mine_every)))
        if open_back_sat:
            tasks.append(asyncio.create_task(_open_back(node, chain, open_back_sat)))
    while not http.started:
        if tasks[0].done():
            tasks[0].result()
            raise UsageError("the HTTP server did not start")
        await asyncio.sleep(0.01)
    host, bound = sock.getsockname()[:2]
    return PaidApi(node, allowances, f"http://{host}:{bound}", node_address, http, tasks, charger)


async def _expire(allowances: AllowanceServer, every: float = 60) -> None:
    """Once a minute: close expired allowances (their unspent calls become refunds due),
    forget unpaid ones whose invoice can no longer be paid, and record how refunds left in
    flight ended (first at start: a refund in flight when the server stopped)."""
    while True:
        try:
            await allowances.resolve_refunds()
            await allowances.forget_unpaid()
            await allowances.expire_due()
        except Exception:  # the store or the node unreachable for now: the next round retries
            logging.getLogger(__name__).exception("allowance sweep failed")
        await asyncio.sleep(every)


async def _open_back(node: Node, chain: RegtestChain, funding_sat: int, every: float = 0.2) -> None:
    """Regtest example: a channel back to each client that opened one to us.

    Why: a client's new channel holds nothing of the server's above its channel reserve, so the
    server could not pay a refund over it; a real seller keeps liquidity toward its buyers (or an
    LSP does). One at a time (each spends its own faucet coin); a failure is logged, not retried.
    """
    served: set[bytes] = set()
    while True:
        for channel_id, channel in list(node.channels.items()):
            peer = node.channel_peer_id(channel_id)
            if (peer is None or peer in served or channel.config.local_is_funder
                    or not node.channel_is_ready(channel_id)):
                continue
            served.add(peer)
            try:
                chain.fund(node.wallet.new_key().script_pubkey, funding_sat + 50_000)
                await asyncio.wait_for(node.open_channel(peer, funding_sat), 60)
            except Exception as exc:  # the client left, the wallet is short: the example goes on
                logging.getLogger(__name__).info("no channel back to a client: %s", exc)
        await asyncio.sleep(every)


async def open_channel_to_api(node: Node, chain: RegtestChain, base_url: str, funding_sat: int,
                              timeout: float = 60) -> dict[str, Any]:
    """Read the API's offer, connect to its node and open a channel funded from ``node``'s wallet.

    Mines on the regtest chain while waiting for the confirmations. Returns the offer.
    """
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get("/lightspeed/offer")
    if response.status_code != 200:
        raise UsageError(f"{base_url} does not offer Lightspeed allowances (HTTP {response.status_code})")
    offer: dict[str, Any] = response.json()["lightspeed"]
    address = offer.get("node_address")
    if not isinstance(address, str) or ":" not in address:
        raise UsageError("the offer names no node address to open a channel to")
    host, port = address.rsplit(":", 1)
    node_id = bytes.fromhex(offer["node_id"])
    if node.wallet.balance_sat(min_confirmations=1) < funding_sat + 10_000:
        chain.fund(node.wallet.new_key().script_pubkey, funding_sat + 100_000)  # the regtest faucet
    await node.connect(host, int(port), node_id)
    mining = asyncio.create_task(mine_forever(chain, 0.05))
    try:
        await asyncio.wait_for(node.open_channel(node_id, funding_sat), timeout)
    finally:
        mining.cancel()
    return offer
