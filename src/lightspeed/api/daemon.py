"""``lightspeed node start``: one process running a Node (peers over TCP) and its REST API.

Both share one asyncio loop: uvicorn serves the Starlette app on a socket we
bind first (so port 0 works and the real address can be written to the
datadir before anyone asks), and the handlers await the node directly. SIGINT
and SIGTERM stop both cleanly: the API address file is removed, peers are
closed, the chain file is released. The daemon prints one JSON line on stdout
once it serves (``{"node_id", "listen", "api"}``), which scripts can wait for. The node's
channels, invoices and payments are in ``DATADIR/node.sqlite`` (:mod:`lightspeed.store`): a
restarted daemon loads them and reconnects to its channels' peers.

A datadir whose node secret (``wallet_mnemonic`` or an older ``node_secret``) exists but whose store is missing or empty is refused
(the node ran before; its channels were in that store): ``--new-store`` starts it anyway,
as a new node. A store that cannot be read is refused with ``node.sqlite is not a valid
Lightspeed store: <reason>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import shutil
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from lightspeed.api.address import format_hostport, parse_hostport
from lightspeed.api.app import create_app
from lightspeed.api.chain_file import open_chain
from lightspeed.api.credentials import Credentials
from lightspeed.api.datadir import Datadir
from lightspeed.api.forwards import FORWARDS_FILE, ForwardLog
from lightspeed.api.handlers import ApiContext
from lightspeed.api.node_secrets import NodeKeys, read_text_file
from lightspeed.api.policy_file import load_policy, save_policy
from lightspeed.bitcoin.network import network_by_name
from lightspeed.chain.regtest import RegtestChain
from lightspeed.errors import ChainError, DecodeError, UsageError
from lightspeed.node.backup import BACKUP_FILE, BackupChannel, decode_backup
from lightspeed.node.electrum_chain import ElectrumChainSource, ServerAddress
from lightspeed.node.forwarding import DEFAULT_POLICY
from lightspeed.node.node import Node
from lightspeed.store import STORE_FILE, StoreCorrupt, open_store, store_exists

__all__ = ["DaemonConfig", "open_chain", "parse_hostport", "require_loopback", "run"]

log = logging.getLogger("lightspeed.daemon")

ASYNCPAY_FILE = "asyncpay.sqlite"  # --lsp: what the LSP holds for its clients (store/asyncpay.py)
ELECTRUM_START_TIMEOUT_S = 120.0  # mainnet: a few thousand headers from the checkpoint


def require_loopback(host: str, option: str) -> None:
    """The REST API controls funds: it only listens on loopback."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UsageError(f"{option} must be a loopback address (127.0.0.1, ::1 or localhost), got {host!r}")


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
    new_store: bool = False  # start with a new store beside an existing node key (see _require_store)
    network: str = "regtest"  # bitcoin | testnet | signet | regtest
    electrum: tuple[str, ...] = ()  # HOST:PORT:s|t servers; none: the embedded regtest chain file
    electrum_cafile: Path | None = None  # trust this certificate (or CA bundle) for TLS servers
    ui: bool = False  # also serve the web dashboard at /ui/ on the API's address (api/dashboard.py)
    mnemonic_file: Path | None = None  # a new datadir restores these BIP 39 words (else makes new ones)
    passphrase_file: Path | None = None  # the mnemonic is (or, new, will be) encrypted with this passphrase
    mnemonic_words: int = 24  # a new mnemonic's length: 12 or 24
    lsp: bool = False  # act as an LSP for async payments (issue 14): hold clients' HTLCs, keep their mailboxes
    lsp_max_hold_s: int = 24 * 3600  # the longest an HTLC is held (announced with the other HoldLimits)
    restore_backup: Path | None = None  # a static channel backup whose channels are recovered (node.recovery)
    fee_updates: bool | None = None  # update_fee from the chain's estimates (node.fee_updates); None: not on regtest


def _bind(address: tuple[str, int], option: str) -> socket.socket:
    host, port = address
    try:
        return socket.create_server(address, family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        raise UsageError(f"{option} {format_hostport(host, port)}: {exc.strerror or exc}") from None


def _require_store(datadir: Datadir) -> None:
    """A node key without its store is a restored or damaged datadir: never start it as new by accident.

    The store holds the channels (what we owe and are owed, the peers' revocation secrets); a node
    that starts afresh beside its old key forgets them. Starting anew is an explicit decision.
    """
    if not datadir.has_secret():
        return
    if store_exists(datadir.path):  # the file, or what is committed to its write-ahead log
        return
    store = datadir.path / STORE_FILE
    datadir.unlock()
    raise UsageError(
        f"--datadir {datadir.path}: it has a node secret ({datadir.secret_file()}) but {'an empty' if store.exists() else 'no'} "
        f"{STORE_FILE}: the node's channels are not here. Restore {STORE_FILE} from your backup; or, to "
        "start again as a new node that forgets every channel of the old store (their peers must force "
        "close them), pass --new-store")


@dataclass
class _Startup:
    ready: bool = False  # the daemon served: from here on the datadir is real (it may hold funds)


async def run(config: DaemonConfig) -> None:
    """Run until SIGINT/SIGTERM.

    Both ports are taken (the API's) or tried (the peers') before anything is
    written, so a busy port fails with a clear error and leaves no datadir
    behind; should starting fail later anyway, a datadir this run created is
    removed again (it holds nothing of value yet: a fresh key nobody knows).
    """
    require_loopback(config.api[0], "--api")
    datadir = Datadir(config.datadir)
    existed = datadir.path.exists()
    if existed and not datadir.path.is_dir():
        raise UsageError(f"--datadir {config.datadir}: not a directory")
    if existed:
        datadir.lock()  # "another daemon runs here" is the clearer error, before any port
        if not config.new_store:
            _require_store(datadir)
    startup = _Startup()
    try:
        api_sock = _bind(config.api, "--api")
        try:
            if config.listen[1] != 0:
                _bind(config.listen, "--listen").close()  # the node binds it again (SO_REUSEADDR)
            if not existed:
                try:
                    datadir.create()
                except OSError as exc:
                    raise UsageError(f"--datadir {config.datadir}: {exc.strerror or exc}") from None
                datadir.lock()
            token = datadir.ensure_token()
            chain = await open_chain_source(config)
            try:
                await _serve(config, datadir, chain, token, api_sock, startup)
            finally:
                chain.close()
        finally:
            api_sock.close()
    except BaseException:
        if not existed and not startup.ready:
            datadir.unlock()
            shutil.rmtree(datadir.path, ignore_errors=True)
        raise
    finally:
        datadir.remove_api_address()
        datadir.unlock()


async def open_chain_source(config: DaemonConfig) -> RegtestChain | ElectrumChainSource:
    """The embedded regtest chain file, or Electrum servers (SPV-checked) when ``--electrum`` names any."""
    if not config.electrum:
        if config.network != "regtest":
            raise UsageError(f"--network {config.network}: needs --electrum HOST:PORT:s|t (the embedded "
                             "chain is regtest only)")
        return open_chain(config.chain_file, create=True)
    try:
        servers = [ServerAddress.parse(text) for text in config.electrum]
    except ValueError as exc:
        raise UsageError(f"--electrum {exc}") from None
    context = None
    if config.electrum_cafile is not None:
        try:
            context = ssl.create_default_context(cafile=str(config.electrum_cafile))
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"--electrum-cafile {config.electrum_cafile}: {exc}") from None
    source = ElectrumChainSource(servers, config.network, ssl_context=context,
                                 headers_file=config.datadir / f"headers-{config.network}.bin")
    try:
        await asyncio.to_thread(source.start, ELECTRUM_START_TIMEOUT_S)
    except ChainError as exc:
        raise UsageError(f"--electrum: {exc}") from None
    return source


async def _serve(config: DaemonConfig, datadir: Datadir, chain: RegtestChain | ElectrumChainSource, token: str,
                 api_sock: socket.socket, startup: _Startup) -> None:
    keys = node_keys(config, datadir)
    store = open_store(datadir.path)  # DIR/node.sqlite: channels, invoices, payments survive restarts
    try:
        try:
            node = Node(keys.node_privkey, chain, keys.wallet_seed, store=store,
                        network=network_by_name(config.network),
                        announce_channels=config.announce_channels,
                        forwarding_policy=load_policy(datadir.path) or DEFAULT_POLICY,
                        channel_backup_file=datadir.path / BACKUP_FILE, fee_updates=config.fee_updates)
        except DecodeError as exc:  # a record in the store that cannot be read back
            raise StoreCorrupt(f"{STORE_FILE} is not a valid Lightspeed store: {exc}") from None
        if config.restore_backup is not None:
            node.restore_from_backup(read_backup(config.restore_backup, keys.node_privkey))
        else:  # channels being recovered when the daemon stopped: carried on (node.recovery)
            resume_own_recovery(node, datadir.path / BACKUP_FILE, keys.node_privkey)
        async with lsp_role(config, datadir, node):
            await _serve_node(config, datadir, node, token, api_sock, startup)
    finally:
        store.close()


@contextlib.asynccontextmanager
async def lsp_role(config: DaemonConfig, datadir: Datadir, node: Node) -> AsyncIterator[None]:
    """``--lsp``: the async-payment LSP (its own SQLite file: held HTLCs, mailboxes, clients, webhooks)."""
    if not config.lsp:
        yield
        return
    import httpx

    from lightspeed.asyncpay.policy import HoldLimits
    from lightspeed.node.async_lsp import AsyncLsp, release_key_for
    from lightspeed.node.webhooks import WebhookNotifier
    from lightspeed.store.asyncpay import AsyncPayStore

    store = AsyncPayStore(datadir.path / ASYNCPAY_FILE)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            notifier = WebhookNotifier(store, node.privkey, client)
            node.async_lsp = AsyncLsp(store, HoldLimits(max_hold_seconds=config.lsp_max_hold_s),
                                      release_key_for(node.privkey), notifier)
            yield
    finally:
        store.close()


def resume_own_recovery(node: Node, path: Path, node_privkey: bytes) -> None:
    """The datadir's own backup: channels it lists that the store does not know are recovered.

    An unreadable own backup does not stop the node (its channels are in the store); it is
    rewritten at start, and the reason is logged.
    """
    if not path.exists():
        return
    try:
        entries = decode_backup(node_privkey, path.read_bytes())
    except (OSError, DecodeError) as exc:
        log.warning("%s: not read (%s); it is written again from the store", path, exc)
        return
    if node.resume_recovery(entries):
        log.warning("%s lists channels the store does not have: recovering them from their peers", path)


def read_backup(path: Path, node_privkey: bytes) -> list[BackupChannel]:
    """The channels of ``--restore-backup``'s file, or a usage error that names the file and why."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"--restore-backup {path}: {exc.strerror or exc}") from None
    try:
        return decode_backup(node_privkey, data)
    except DecodeError as exc:
        raise UsageError(f"--restore-backup {path}: {exc.reason}") from None


def node_keys(config: DaemonConfig, datadir: Datadir) -> NodeKeys:
    """The datadir's keys; new words are shown once, on stderr (stdout carries the ready line)."""
    passphrase = None if config.passphrase_file is None else read_text_file(config.passphrase_file,
                                                                             "--passphrase-file")
    restore = None if config.mnemonic_file is None else read_text_file(config.mnemonic_file, "--mnemonic-file")
    keys = datadir.keys(network_by_name(config.network), passphrase=passphrase, restore=restore,
                        words=config.mnemonic_words)
    if keys.new_mnemonic is not None:
        print(mnemonic_banner(keys.new_mnemonic, datadir), file=sys.stderr, flush=True)
    return keys


def mnemonic_banner(words: str, datadir: Datadir) -> str:
    numbered = "\n".join(f"  {i:2}. {w}" for i, w in enumerate(words.split(), 1))
    return (f"\nNEW WALLET: write these {len(words.split())} words down, on paper, in order. They are shown "
            f"only now.\nThey restore the node key and every on-chain coin (BIP 39, BIP 84 m/84'/coin'/0').\n"
            f"{numbered}\n(They are also in {datadir.path}; anyone who reads them can take the funds.)\n")


async def _serve_node(config: DaemonConfig, datadir: Datadir, node: Node, token: str,
                      api_sock: socket.socket, startup: _Startup) -> None:
    host, port = config.listen
    credentials = Credentials(datadir.path)  # scoped tokens: DATADIR/credentials_key, credentials.sqlite
    try:
        try:
            port = await node.start(host, port)
        except OSError as exc:
            await node.stop()
            raise UsageError(f"--listen {format_hostport(host, port)}: {exc.strerror or exc}") from None
        await _serve_api(config, datadir, node, token, api_sock, startup, credentials, format_hostport(host, port))
    finally:
        credentials.close()


async def _serve_api(config: DaemonConfig, datadir: Datadir, node: Node, token: str, api_sock: socket.socket,
                     startup: _Startup, credentials: Credentials, listen: str) -> None:
    ctx = ApiContext(node, listen=listen, chain_file=None if config.electrum else str(config.chain_file),
                     forwards=ForwardLog(datadir.path / FORWARDS_FILE), credentials=credentials)
    events = ctx.spawn(ctx.follow_events(), "event follower")
    api_host, api_port = api_sock.getsockname()[:2]
    server = _Server(uvicorn.Config(create_app(ctx, token, ui=config.ui), log_level="warning", lifespan="off",
                                    access_log=False))
    stop = asyncio.Event()
    ctx.request_stop = stop.set  # POST /v1/stop: exits as SIGTERM does
    ctx.save_policy = lambda policy: save_policy(datadir.path, policy)  # updatechanpolicy outlives restarts
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.create_task(server.serve(sockets=[api_sock]))
    datadir.write_api_address(api_host, api_port)
    startup.ready = True
    ready: dict[str, Any] = {
        "node_id": node.node_id.hex(), "listen": ctx.listen, "api": format_hostport(api_host, api_port),
        "chain_file": None if config.electrum else str(config.chain_file),
        "network": config.network, "electrum": list(config.electrum)}
    if node.async_lsp is not None:  # --lsp: the limits it announces to clients
        ready["lsp"] = node.async_lsp.book.limits.announce()
    if config.ui:  # the page asks for a token: DATADIR/api_token, or one from `lightspeed token create`
        ready["ui"] = f"http://{format_hostport(api_host, api_port)}/ui/"
    print(json.dumps(ready), flush=True)
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
    await _cancel_leftover_tasks()
    print("stopped", file=sys.stderr, flush=True)


LEFTOVER_TASKS_TIMEOUT_S = 5.0


async def _cancel_leftover_tasks() -> None:
    """Cancel what is still running, and name any task that ignores the cancel.

    ``asyncio.run`` would wait for such a task without limit, and the daemon would never exit
    on SIGTERM; logging its stack says which one it is.
    """
    leftover = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in leftover:
        task.cancel()
    if not leftover:
        return
    _, pending = await asyncio.wait(leftover, timeout=LEFTOVER_TASKS_TIMEOUT_S)
    for task in pending:
        log.error("a task did not stop when cancelled: %r", task)
        task.print_stack(file=sys.stderr)
