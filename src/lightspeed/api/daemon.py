"""``lightspeed node start``: one process running a Node (peers over TCP) and its REST API.

Both share one asyncio loop: uvicorn serves the Starlette app on a socket we
bind first (so port 0 works and the real address can be written to the
datadir before anyone asks), and the handlers await the node directly. SIGINT
and SIGTERM stop both cleanly: the API address file is removed, peers are
closed, the chain file is released. The daemon prints one JSON line on stdout
once it serves (``{"node_id", "listen", "api"}``), which scripts can wait for. The node's
channels, invoices and payments are in ``DATADIR/node.sqlite`` (:mod:`lightspeed.store`): a
restarted daemon loads them and reconnects to its channels' peers.

A datadir whose ``node_secret`` exists but whose store is missing or empty is refused
(the node ran before; its channels were in that store): starting anyway would make a
node that knows nothing of them. ``--fresh-store`` starts it anyway, as a new node. A
store that cannot be read is refused with ``node.sqlite is not a valid Lightspeed store:
<reason>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import socket
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from lightspeed.api.app import create_app
from lightspeed.api.datadir import SECRET_FILE, Datadir
from lightspeed.api.handlers import ApiContext
from lightspeed.chain.regtest import RegtestChain
from lightspeed.errors import DecodeError, UsageError
from lightspeed.node.node import Node
from lightspeed.store import STORE_FILE, SqliteStore, StoreCorrupt, open_store, store_exists

log = logging.getLogger("lightspeed.daemon")


def parse_hostport(text: str, option: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> (host, port); UsageError naming the option otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"{option} must be HOST:PORT (e.g. 127.0.0.1:9735), got {text!r}")
    return host.strip("[]"), int(port_text)


def require_loopback(host: str, option: str) -> None:
    """The REST API controls funds: it only listens on loopback."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UsageError(f"{option} must be a loopback address (127.0.0.1, ::1 or localhost), got {host!r}")


def open_chain(path: Path, create: bool = False) -> RegtestChain:
    """The shared regtest chain at ``path``; UsageError (naming --chain) if it cannot be opened."""
    if not create and not path.exists():
        raise UsageError(f"--chain {path}: no chain file there (a daemon creates it)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return RegtestChain(path)
    except (OSError, sqlite3.Error) as exc:
        raise UsageError(f"--chain {path}: {getattr(exc, 'strerror', None) or exc}") from None


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the daemon stops the node and the API together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True)
class DaemonConfig:
    datadir: Path
    listen: tuple[str, int]
    api: tuple[str, int]
    chain_file: Path
    announce_channels: bool = False  # open public channels and take part in BOLT 7 gossip
    fresh_store: bool = False  # start although node_secret exists and the store is missing or empty


async def run(config: DaemonConfig) -> None:
    """Run until SIGINT/SIGTERM."""
    require_loopback(config.api[0], "--api")
    datadir = Datadir(config.datadir)
    try:
        datadir.create()
    except OSError as exc:
        raise UsageError(f"--datadir {config.datadir}: {exc.strerror or exc}") from None
    datadir.lock()
    try:
        token = datadir.ensure_token()
        chain = open_chain(config.chain_file, create=True)
        try:
            await _serve(config, datadir, chain, token)
        finally:
            chain.close()
    finally:
        datadir.remove_api_address()
        datadir.unlock()


def open_node_store(datadir: Datadir, fresh_store: bool) -> SqliteStore:
    """DIR/node.sqlite, refused if the node ran before and its store is gone (see the module docstring)."""
    if (datadir.path / SECRET_FILE).exists() and not store_exists(datadir.path):
        if not fresh_store:
            raise UsageError(
                f"{datadir.path / STORE_FILE} is missing or empty, but {datadir.path / SECRET_FILE} exists: this "
                "node ran before and its channels were in that store. Restore node.sqlite (with its -wal file, "
                "if any) from your latest backup into the datadir and start again. To start anyway as a new node "
                "that knows none of the old channels (their funds come back only if the peers force-close them), "
                "pass --fresh-store.")
        log.warning("starting with a fresh store although %s exists (--fresh-store): channels in a lost store "
                    "are unknown to this node", datadir.path / SECRET_FILE)
    return open_store(datadir.path)


async def _serve(config: DaemonConfig, datadir: Datadir, chain: RegtestChain, token: str) -> None:
    store = open_node_store(datadir, config.fresh_store)  # channels, invoices, payments survive restarts
    try:
        try:
            node = Node(datadir.node_privkey(), chain, datadir.wallet_seed(), store=store,
                        announce_channels=config.announce_channels)
        except DecodeError as exc:  # a record in the store that cannot be read back
            raise StoreCorrupt(f"{STORE_FILE} is not a valid Lightspeed store: {exc}") from None
        await _serve_node(config, datadir, node, token)
    finally:
        store.close()


async def _serve_node(config: DaemonConfig, datadir: Datadir, node: Node, token: str) -> None:
    host, port = config.listen
    try:
        port = await node.start(host, port)
    except OSError as exc:
        raise UsageError(f"--listen {host}:{port}: {exc.strerror or exc}") from None
    ctx = ApiContext(node, listen=f"{host}:{port}", chain_file=str(config.chain_file))
    events = ctx.spawn(ctx.follow_events(), "event follower")
    try:
        sock = socket.create_server(config.api, family=socket.AF_INET6 if ":" in config.api[0] else socket.AF_INET)
    except OSError as exc:
        await node.stop()
        raise UsageError(f"--api {config.api[0]}:{config.api[1]}: {exc.strerror or exc}") from None
    api_host, api_port = sock.getsockname()[:2]
    server = _Server(uvicorn.Config(create_app(ctx, token), log_level="warning", lifespan="off",
                                    access_log=False))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    datadir.write_api_address(api_host, api_port)
    print(json.dumps({"node_id": node.node_id.hex(), "listen": ctx.listen, "api": f"{api_host}:{api_port}",
                      "chain_file": str(config.chain_file)}), flush=True)
    log.info("node %s listening on %s, API on %s:%s", node.node_id.hex(), ctx.listen, api_host, api_port)
    waiting = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(serving, 5)
    waiting.cancel()
    events.cancel()
    for task in list(ctx.tasks):
        task.cancel()
    await node.stop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    print("stopped", file=sys.stderr, flush=True)
