"""A :class:`~lightspeed.chain.source.ChainSource` over the Electrum server protocol (TCP or TLS).

The node asks its chain synchronously (``tip()``, ``get_transaction()``...) from its event
loop, and polls often; an Electrum server answers over the network. So the client runs on a
thread of its own, with its own event loop, and keeps what the node polls in memory: the
verified header chain (:mod:`lightspeed.chain.spv`), the transactions it has seen, and the
history of every script hash it follows (subscribed: the server notifies changes). A question
the cache cannot answer (a transaction never seen, a script not followed yet) costs one round
trip, once; from then on the server's notifications keep the answer current.

Nothing the server says is believed: answers are parsed by :mod:`lightspeed.chain.electrum_client`,
headers must link, carry their proof of work and the difficulty the rules demand, a confirmed
transaction needs a merkle branch to a header of our chain, a history must hash to the status
the server announced. A server that fails any of this, sends garbage, or stops answering is
dropped and the next one is tried, with a growing pause (0.5 s doubling to 30 s) once all have
failed. A reorganisation (a branch with more work) drops every confirmation above the fork:
the histories are fetched again and what was reorged out is followed again as unconfirmed.

While no server is reachable, reads answer from the cache ("not known yet" for the rest) and
writes (broadcasts) raise :class:`~lightspeed.errors.ChainBusy`, which the node retries.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import ssl
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lightspeed.bitcoin.tx import OutPoint, Transaction, TxOut
from lightspeed.chain import electrum_client as ec
from lightspeed.chain.electrum_client import (
    ClientProtocol,
    HistoryItem,
    Notification,
    RemoteError,
    Reply,
    ServerError,
)
from lightspeed.chain.source import Utxo
from lightspeed.chain.spv import (
    PARAMS,
    RETARGET_INTERVAL,
    HeaderChain,
    HeaderError,
    WeakerBranch,
    meets_target,
    parse_header,
    verify_merkle,
)
from lightspeed.crypto.hashes import sha256d
from lightspeed.errors import ChainBusy, ChainError, DecodeError, RejectedTransaction

log = logging.getLogger("lightspeed.electrum_client")

T = TypeVar("T")

CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 30.0
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.5, 30.0
FEE_REFRESH_S = 60.0
PING_S = 60.0
MAX_SYNC_ROUNDS = 10_000  # header batches per tip: 2016 each, and a fork search doubling back


@dataclass(frozen=True)
class ServerAddress:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, text: str) -> ServerAddress:
        return cls(*ec.parse_server(text))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}:{'s' if self.tls else 't'}"


class _Connection:
    """One server connection: requests paired with answers; notifications queued."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout_s: float) -> None:
        self.reader, self.writer, self.timeout_s = reader, writer, timeout_s
        self.protocol = ClientProtocol()
        self.waiting: dict[int, asyncio.Future[Reply]] = {}
        self.notifications: asyncio.Queue[Notification | BaseException] = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        failure: BaseException
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("the server closed the connection")
                for message in self.protocol.receive(data):
                    if isinstance(message, Notification):
                        self.notifications.put_nowait(message)
                    else:
                        future = self.waiting.pop(message.id, None)
                        if future is not None and not future.done():
                            future.set_result(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to every waiter, then the session ends
            failure = exc
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(failure)
        self.waiting.clear()
        self.notifications.put_nowait(failure)

    async def call(self, method: str, *params: Any) -> Any:
        msg_id, line = self.protocol.request(method, params)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.waiting[msg_id] = future
        self.writer.write(line)
        try:
            reply = await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError:
            raise TimeoutError(f"{method}: no answer in {self.timeout_s:g} s") from None
        if reply.error is not None:
            raise reply.error
        return reply.result

    def fail(self, exc: BaseException) -> None:
        """A lie found outside the session loop (in a call for the node): end the session with it."""
        self.notifications.put_nowait(exc)

    def close(self) -> None:
        self.task.cancel()
        self.writer.close()


@dataclass
class _Cache:
    """What the node polls, kept current by the session (read under the lock)."""

    txs: dict[bytes, Transaction] = field(default_factory=dict)
    histories: dict[bytes, list[HistoryItem]] = field(default_factory=dict)  # scripthash -> history
    statuses: dict[bytes, str | None] = field(default_factory=dict)
    confirmed: dict[bytes, tuple[int, int]] = field(default_factory=dict)  # txid -> (height, position), proven
    feerates: dict[int, int] = field(default_factory=dict)  # target blocks -> sat per kw
    relay_floor_per_kw: int = 253  # the server's blockchain.relayfee, in sat per kw


class ElectrumChainSource:
    """The chain as Electrum servers show it, checked by SPV: ``start()``, use, ``close()``."""

    def __init__(self, servers: Sequence[ServerAddress], network: str = "regtest", *,
                 ssl_context: ssl.SSLContext | None = None, request_timeout_s: float = REQUEST_TIMEOUT_S,
                 backoff_max_s: float = BACKOFF_MAX_S, fee_refresh_s: float = FEE_REFRESH_S,
                 headers_file: Path | None = None) -> None:
        if not servers:
            raise ValueError("at least one Electrum server is needed")
        if network not in PARAMS:
            raise ValueError(f"network: one of {', '.join(PARAMS)}, not {network!r}")
        self.servers, self.network = list(servers), network
        self.ssl_context = ssl_context
        self.request_timeout_s, self.backoff_max_s = request_timeout_s, backoff_max_s
        self.fee_refresh_s = fee_refresh_s
        self.headers = HeaderChain(PARAMS[network])
        self.headers_file = headers_file  # verified headers kept between starts (checked again on load)
        self.server: ServerAddress | None = None  # the one we are connected to
        self.last_error: str | None = None  # why the last server was dropped
        self.dropped: list[tuple[str, str]] = []  # (server, reason), most recent last (bounded)
        self._cache = _Cache()
        self._unproven: dict[bytes, int] = {}  # txid -> height of a block whose header we lack yet
        self._lock = threading.RLock()
        self._conn: _Connection | None = None
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="electrum-client", daemon=True)
        self._main: concurrent.futures.Future[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout_s: float = 60.0) -> None:
        """Connect and sync headers; ChainError naming every server's failure if none got there in time."""
        self._load_headers()
        self._thread.start()
        self._main = asyncio.run_coroutine_threadsafe(self._run(), self._loop)
        if not self._ready.wait(timeout_s):
            reasons = "; ".join(f"{s}: {r}" for s, r in self.dropped[-len(self.servers):]) or "no answer"
            self.close()
            raise ChainError(f"no Electrum server synced the {self.network} headers in {timeout_s:g} s ({reasons})")

    def close(self) -> None:
        """Stop the session and the client thread (idempotent)."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    async def _shutdown(self) -> None:
        if self._main is not None:
            self._main.cancel()
        if self._conn is not None:
            self._conn.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the session loop (client thread) --------------------------------------------------------

    async def _run(self) -> None:
        pause = BACKOFF_MIN_S
        while True:
            for server in self.servers:
                served = False
                try:
                    await self._session(server)
                except asyncio.CancelledError:
                    raise
                except (ServerError, HeaderError, DecodeError) as exc:
                    self._drop(server, f"bad answer: {exc}")
                except RemoteError as exc:
                    self._drop(server, f"refused: {exc}")
                except (OSError, TimeoutError, ConnectionError, ssl.SSLError) as exc:
                    self._drop(server, f"unreachable: {exc or type(exc).__name__}")
                except Exception as exc:  # a bug of ours: logged, and the client goes on with the next server
                    log.exception("Electrum client failure with %s", server)
                    self._drop(server, f"internal error: {exc!r}")
                finally:
                    served = served or self.server is not None
                    if self._conn is not None:
                        self._conn.close()
                    self._conn, self.server = None, None
                if served:
                    pause = BACKOFF_MIN_S  # it served a while: the next try is the first of a new round
            await asyncio.sleep(pause)
            pause = min(pause * 2, self.backoff_max_s)

    def _drop(self, server: ServerAddress, reason: str) -> None:
        log.warning("Electrum server %s dropped: %s", server, reason)
        self.last_error = f"{server}: {reason}"
        self.dropped = [*self.dropped[-31:], (str(server), reason)]

    async def _session(self, server: ServerAddress) -> None:
        """Serve the node through ``server`` until it fails (raises); the server is only used for the
        node's calls once its headers are synced and the followed script hashes subscribed again."""
        context = None
        if server.tls:
            context = self.ssl_context or ssl.create_default_context()
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(server.host, server.port, ssl=context, limit=ec.MAX_LINE_BYTES),
            CONNECT_TIMEOUT_S)
        conn = self._conn = _Connection(reader, writer, self.request_timeout_s)
        ec.parse_version(await conn.call("server.version", ec.CLIENT_NAME, ec.PROTOCOL_VERSION))
        genesis = ec.parse_genesis(await conn.call("server.features"))
        if genesis != self.headers.params.genesis_hash:
            raise ServerError("genesis_hash", f"the server's chain starts at {genesis[::-1].hex()}, "
                                              f"not the {self.network} genesis")
        height, header = ec.parse_tip(await conn.call("blockchain.headers.subscribe"))
        await self._follow_tip(conn, height, header)
        for sh in list(self._cache.statuses):  # follow again what we followed on the last server
            await self._subscribe(conn, sh, force=True)
        self.server = server
        self._ready.set()
        log.info("following the %s chain through %s at height %d", self.network, server, self.headers.tip_height)
        loop = asyncio.get_running_loop()
        next_fees = next_ping = loop.time()
        while True:
            now = loop.time()
            if now >= next_fees:  # estimates move without any notification: ask again now and then
                await self._refresh_fees(conn)
                next_fees = now + self.fee_refresh_s
            if now >= next_ping:
                await conn.call("server.ping")  # a server that stopped answering is noticed
                next_ping = now + PING_S
            try:
                item = await asyncio.wait_for(conn.notifications.get(), min(next_fees, next_ping) - loop.time())
            except TimeoutError:
                continue
            if isinstance(item, BaseException):
                raise item
            if item.method == "blockchain.headers.subscribe":
                if not item.params:
                    raise ServerError("blockchain.headers.subscribe", "a notification without the header")
                await self._follow_tip(conn, *ec.parse_tip(item.params[0]))
                for txid, height in list(self._unproven.items()):
                    if height <= self.headers.tip_height and txid in self._cache.txs:
                        await self._prove(conn, txid, height)
            elif item.method == "blockchain.scripthash.subscribe":
                sh, status = ec.parse_scripthash_notification(item.params)
                if sh in self._cache.statuses and status != self._cache.statuses[sh]:
                    await self._refresh(conn, sh, status)

    # -- headers ---------------------------------------------------------------------------------

    async def _follow_tip(self, conn: _Connection, height: int, raw_tip: bytes) -> None:
        before = self.headers.tip_hash if self.headers.started else None
        await self._sync_tip(conn, height, raw_tip)
        if self.headers_file is not None and self.headers.tip_hash != before:
            await asyncio.to_thread(self._save_headers, self.headers.serialize())

    def _save_headers(self, data: bytes) -> None:
        """Keep the verified headers for the next start (written aside, then moved into place)."""
        assert self.headers_file is not None
        tmp = self.headers_file.with_name(self.headers_file.name + ".tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, self.headers_file)
        except OSError as exc:  # a full disk costs a longer sync next time, nothing else
            log.warning("cannot save the headers to %s: %s", self.headers_file, exc)

    def _load_headers(self) -> None:
        if self.headers_file is None or not self.headers_file.exists():
            return
        try:
            self.headers.load(self.headers_file.read_bytes(), int(time.time()))
        except (OSError, HeaderError) as exc:
            log.warning("ignoring the saved headers in %s: %s", self.headers_file, exc)

    async def _sync_tip(self, conn: _Connection, height: int, raw_tip: bytes) -> None:
        """Bring our header chain to the server's tip; on a fork, walk back until the branch links."""
        chain = self.headers
        tip_header = parse_header(raw_tip, "blockchain.headers.subscribe hex")
        if not meets_target(chain.params, tip_header):
            raise HeaderError("bits", f"the server's tip {tip_header.hash[::-1].hex()} at {height} does not "
                                      f"meet the target of its bits (proof of work)")
        if not chain.started:
            base = chain.base_height
            with self._lock:
                chain.set_base(ec.parse_header_hex(await conn.call("blockchain.block.header", base)))
        if height < chain.base_height:
            raise ServerError("height", f"the server's tip {height} is below the checkpoint {chain.base_height}")
        back = 0
        for _attempt in range(MAX_SYNC_ROUNDS):
            if chain.tip_height >= height:
                if chain.block_hash(height) == sha256d(raw_tip):
                    return
                if chain.tip_height > height:
                    return  # the server lags behind us: keep our heavier chain
                back = max(back, 1)  # another block at our tip's height
            start = max(chain.base_height + 1, min(chain.tip_height, height) + 1 - back)
            count = min(RETARGET_INTERVAL, height - start + 1)
            raw = ec.parse_headers(await conn.call("blockchain.block.headers", start, count), count)
            if not raw:
                raise ServerError("blockchain.block.headers", f"no headers from {start} though its tip is {height}")
            first_prev = raw[0][4:36]
            if first_prev != chain.block_hash(start - 1):
                if start - 1 <= chain.base_height:
                    raise HeaderError("headers", "the server's chain forks below our checkpoint")
                back = max(1, back * 2)  # a reorganisation: find where the branch joins our chain
                continue
            try:
                with self._lock:
                    changed = chain.connect(start, raw, int(time.time()))
            except WeakerBranch:
                if start + len(raw) - 1 >= height:
                    return  # a branch with no more work than ours: we keep ours
                more = await self._more_headers(conn, start + len(raw), height)  # it may outweigh ours in full
                with self._lock:
                    changed = chain.connect(start, raw + more, int(time.time()))
            if changed.reorg and changed.changed_from is not None:
                await self._reorganised(conn, changed.changed_from)
            back = 0
            if start + len(raw) - 1 >= height and raw[height - start] != raw_tip:
                raise ServerError("blockchain.block.headers", f"block {height} differs from the tip it announced")
        raise ServerError("blockchain.block.headers", f"its headers never reached its tip {height}")

    async def _more_headers(self, conn: _Connection, start: int, height: int) -> list[bytes]:
        out: list[bytes] = []
        while start <= height:
            count = min(RETARGET_INTERVAL, height - start + 1)
            got = ec.parse_headers(await conn.call("blockchain.block.headers", start, count), count)
            if not got:
                break
            out += got
            start += len(got)
        return out

    async def _reorganised(self, conn: _Connection, fork_height: int) -> None:
        """Blocks from ``fork_height`` were replaced: their confirmations are void until proven again."""
        log.warning("chain reorganisation from block %d (new tip %d)", fork_height, self.headers.tip_height)
        with self._lock:
            for txid, (height, _pos) in list(self._cache.confirmed.items()):
                if height >= fork_height:
                    del self._cache.confirmed[txid]
        for sh in list(self._cache.statuses):
            await self._subscribe(conn, sh, force=True)

    # -- script hashes ---------------------------------------------------------------------------

    async def _subscribe(self, conn: _Connection, sh: bytes, force: bool = False) -> None:
        status = ec.parse_status(await conn.call("blockchain.scripthash.subscribe", sh[::-1].hex()), "status")
        if force or sh not in self._cache.histories or status != self._cache.statuses.get(sh):
            await self._refresh(conn, sh, status)

    async def _refresh(self, conn: _Connection, sh: bytes, status: str | None) -> None:
        """Fetch a script hash's history, check it against ``status``, prove its confirmations."""
        history = ec.parse_history(await conn.call("blockchain.scripthash.get_history", sh[::-1].hex()))
        if ec.history_status(history) != status:
            # The history moved between the status and our question: take the newer status with it.
            status = ec.parse_status(await conn.call("blockchain.scripthash.subscribe", sh[::-1].hex()), "status")
            history = ec.parse_history(await conn.call("blockchain.scripthash.get_history", sh[::-1].hex()))
            if ec.history_status(history) != status:
                raise ServerError("get_history", f"the history of {sh[::-1].hex()} does not hash to its status")
        for item in history:
            if item.txid not in self._cache.txs:
                tx = ec.parse_transaction(await conn.call("blockchain.transaction.get", item.txid[::-1].hex()),
                                          item.txid)
                with self._lock:
                    self._cache.txs[item.txid] = tx
            proven = self._cache.confirmed.get(item.txid)
            if item.height > 0 and (proven is None or proven[0] != item.height):
                await self._prove(conn, item.txid, item.height)
            elif item.height <= 0 and proven is not None:
                with self._lock:
                    self._cache.confirmed.pop(item.txid, None)  # back in the mempool (reorged out)
        with self._lock:
            self._cache.histories[sh], self._cache.statuses[sh] = history, status

    async def _prove(self, conn: _Connection, txid: bytes, height: int) -> None:
        header = self.headers.header(height)
        if header is None:
            self._unproven[txid] = height  # a block we have no header of yet: proven once it comes
            return
        self._unproven.pop(txid, None)
        proof = ec.parse_merkle(await conn.call("blockchain.transaction.get_merkle", txid[::-1].hex(), height))
        if proof.block_height != height:
            raise ServerError("get_merkle", f"proof for block {proof.block_height}, the history says {height}")
        verify_merkle(txid, proof.position, proof.branch, header, len(self._cache.txs[txid].serialize(include_witness=False)))
        with self._lock:
            self._cache.confirmed[txid] = (height, proof.position)

    async def _refresh_fees(self, conn: _Connection) -> None:
        try:
            floor = ec.parse_relayfee(await conn.call("blockchain.relayfee"))
        except RemoteError:  # a server without it (none known): the 1 sat/vB floor stays
            floor = ec.MIN_FEERATE_PER_KW
        with self._lock:
            self._cache.relay_floor_per_kw = floor
        for target in sorted(set(self._cache.feerates) | {6}):
            rate = ec.parse_feerate(await conn.call("blockchain.estimatefee", target))
            with self._lock:
                self._cache.feerates[target] = rate if rate is not None else ec.MIN_FEERATE_PER_KW

    # -- calls from the node's thread ------------------------------------------------------------

    def _sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the client's loop and wait; ChainBusy when no server is connected."""
        if self._conn is None or self.server is None:
            coro.close()
            raise ChainBusy(f"no Electrum server connected ({self.last_error or 'connecting'})")
        future = asyncio.run_coroutine_threadsafe(self._guarded(coro), self._loop)
        try:
            return future.result(self.request_timeout_s + 1)
        except RemoteError:
            raise
        except (ServerError, HeaderError, DecodeError, OSError, TimeoutError, ConnectionError) as exc:
            future.cancel()
            raise ChainBusy(f"the Electrum server failed: {exc}") from None

    async def _guarded(self, coro: Coroutine[Any, Any, T]) -> T:
        conn = self._conn
        try:
            return await coro
        except (ServerError, HeaderError, DecodeError) as exc:
            if conn is not None:
                conn.fail(exc)  # the session drops this server and moves on to the next
            raise

    async def _on_conn(self) -> _Connection:
        conn = self._conn
        if conn is None or self.server is None:
            raise ConnectionError("no Electrum server connected")
        return conn

    async def _ensure_followed(self, scripthashes: Sequence[bytes]) -> None:
        conn = await self._on_conn()
        for sh in scripthashes:
            if sh not in self._cache.histories:
                await self._subscribe(conn, sh)

    async def _fetch_tx(self, txid: bytes) -> Transaction | None:
        conn = await self._on_conn()
        try:
            tx = ec.parse_transaction(await conn.call("blockchain.transaction.get", txid[::-1].hex()), txid)
        except RemoteError:
            return None  # the server knows no such transaction
        with self._lock:
            self._cache.txs[txid] = tx
        await self._subscribe(conn, ec.scripthash(tx.outputs[0].script_pubkey))
        return tx

    def _follow(self, scripthashes: Sequence[bytes]) -> bool:
        """Make sure these script hashes are followed; False if that cannot be done now."""
        if all(sh in self._cache.histories for sh in scripthashes):
            return True
        try:
            self._sync(self._ensure_followed(scripthashes))
        except (ChainBusy, RemoteError):
            return False
        return True

    def _transaction(self, txid: bytes) -> Transaction | None:
        with self._lock:
            tx = self._cache.txs.get(txid)
        if tx is not None:
            self._follow([ec.scripthash(tx.outputs[0].script_pubkey)])
            return tx
        try:
            return self._sync(self._fetch_tx(txid))
        except (ChainBusy, RemoteError):
            return None

    # -- ChainSource -----------------------------------------------------------------------------

    def tip(self) -> tuple[int, bytes]:
        with self._lock:
            return self.headers.tip_height, self.headers.tip_hash

    def get_transaction(self, txid: bytes) -> tuple[Transaction, int] | None:
        tx = self._transaction(txid)
        if tx is None:
            return None
        with self._lock:
            proven = self._cache.confirmed.get(txid)
            in_history = any(item.txid == txid for h in self._cache.histories.values() for item in h)
            if proven is not None:
                return tx, self.headers.tip_height - proven[0] + 1
        return (tx, 0) if in_history else None

    def tx_position(self, txid: bytes) -> tuple[int, int] | None:
        """(block height, index in the block) of a confirmed transaction, proven by its merkle branch."""
        if self._transaction(txid) is None:
            return None
        with self._lock:
            return self._cache.confirmed.get(txid)

    def spending_tx(self, outpoint: OutPoint) -> Transaction | None:
        tx = self._transaction(outpoint.txid)
        if tx is None or outpoint.index >= len(tx.outputs):
            return None
        sh = ec.scripthash(tx.outputs[outpoint.index].script_pubkey)
        if not self._follow([sh]):
            return None
        with self._lock:
            for item in self._cache.histories.get(sh, []):
                spender = self._cache.txs.get(item.txid)
                if spender is not None and any(txin.prevout == outpoint for txin in spender.inputs):
                    return spender
        return None

    def output_at(self, block_height: int, tx_index: int, output_index: int) -> tuple[TxOut, bool] | None:
        """The output a short channel id names and whether it is spent (the position proven by merkle branch)."""
        try:
            txid = self._sync(self._id_from_pos(block_height, tx_index))
        except (ChainBusy, RemoteError):
            return None
        tx = self._transaction(txid)
        if tx is None or output_index >= len(tx.outputs) or self.tx_position(txid) != (block_height, tx_index):
            return None
        return tx.outputs[output_index], self.spending_tx(OutPoint(txid, output_index)) is not None

    async def _id_from_pos(self, height: int, position: int) -> bytes:
        conn = await self._on_conn()
        return ec.parse_id_from_pos(await conn.call("blockchain.transaction.id_from_pos", height, position))

    def unspent(self, script_pubkeys: list[bytes]) -> list[Utxo]:
        by_sh = {ec.scripthash(s): s for s in script_pubkeys}
        self._follow(list(by_sh))
        out: list[Utxo] = []
        with self._lock:
            for sh, script in by_sh.items():
                history = self._cache.histories.get(sh, [])
                txs = [self._cache.txs[i.txid] for i in history if i.txid in self._cache.txs]
                spent = {txin.prevout for tx in txs for txin in tx.inputs}
                for tx in txs:
                    proven = self._cache.confirmed.get(tx.txid)
                    for n, output in enumerate(tx.outputs):
                        outpoint = OutPoint(tx.txid, n)
                        if output.script_pubkey == script and outpoint not in spent:
                            out.append(Utxo(outpoint, output, None if proven is None else proven[0]))
        return out

    def history(self, script_pubkeys: list[bytes]) -> list[tuple[Transaction, int | None]]:
        """Transactions paying or spending ``script_pubkeys`` (their followed histories), oldest first."""
        by_sh = [ec.scripthash(s) for s in script_pubkeys]
        self._follow(by_sh)
        found: dict[bytes, tuple[Transaction, int | None]] = {}
        with self._lock:
            for sh in by_sh:
                for item in self._cache.histories.get(sh, []):
                    tx = self._cache.txs.get(item.txid)
                    if tx is not None:
                        found[item.txid] = tx, item.height if item.height > 0 else None
        return sorted(found.values(), key=lambda e: (e[1] is None, e[1] or 0))

    def estimate_feerate_per_kw(self, target_blocks: int = 6) -> int:
        """The server's estimate, never below its relay floor (a transaction under it would not relay)."""
        with self._lock:
            known = self._cache.feerates.get(target_blocks)
            floor = self._cache.relay_floor_per_kw
        if known is not None:
            return max(known, floor)
        try:
            rate = self._sync(self._estimate(target_blocks))
        except (ChainBusy, RemoteError):
            with self._lock:
                return max(self._cache.feerates.get(6, ec.MIN_FEERATE_PER_KW), floor)
        return max(rate, floor)

    def min_relay_feerate_per_kw(self) -> int:
        """The server's minimum relay feerate (``blockchain.relayfee``, asked with the estimates), never
        below 253 sat/kw: node.fee_updates keeps commitments above it, estimates are floored by it."""
        with self._lock:
            return self._cache.relay_floor_per_kw

    async def _estimate(self, target: int) -> int:
        conn = await self._on_conn()
        rate = ec.parse_feerate(await conn.call("blockchain.estimatefee", target))
        with self._lock:
            self._cache.feerates[target] = rate if rate is not None else ec.MIN_FEERATE_PER_KW
            return self._cache.feerates[target]

    def broadcast(self, tx: Transaction) -> bytes:
        try:
            return self._sync(self._broadcast(tx))
        except RemoteError as exc:
            raise RejectedTransaction(exc.message) from None

    async def _broadcast(self, tx: Transaction) -> bytes:
        conn = await self._on_conn()
        txid = ec.parse_txid(await conn.call("blockchain.transaction.broadcast", tx.serialize().hex()), tx.txid)
        with self._lock:
            self._cache.txs[txid] = tx
        await self._subscribe(conn, ec.scripthash(tx.outputs[0].script_pubkey), force=True)
        return txid

    def broadcast_package(self, txs: list[Transaction]) -> list[bytes]:
        """Parents and child together where the server relays packages (1.6), else one by one."""
        try:
            return self._sync(self._broadcast_package(txs))
        except RemoteError as exc:
            raise RejectedTransaction(exc.message) from None

    async def _broadcast_package(self, txs: list[Transaction]) -> list[bytes]:
        conn = await self._on_conn()
        try:
            errors = ec.parse_package_result(await conn.call(
                "blockchain.transaction.broadcast_package", [tx.serialize().hex() for tx in txs]))
        except RemoteError as exc:
            if exc.code != ec.METHOD_NOT_FOUND:
                raise
            return [await self._broadcast(tx) for tx in txs]  # no package relay: parents first
        if errors:
            raise RemoteError("blockchain.transaction.broadcast_package", 2, "; ".join(errors))
        for tx in txs:
            with self._lock:
                self._cache.txs[tx.txid] = tx
            await self._subscribe(conn, ec.scripthash(tx.outputs[0].script_pubkey), force=True)
        return [tx.txid for tx in txs]


def connect(servers: Sequence[str], network: str, *, ssl_context: ssl.SSLContext | None = None,
            timeout_s: float = 60.0) -> ElectrumChainSource:
    """Parse ``HOST:PORT:s|t`` servers, connect, sync headers (ChainError if none could)."""
    source = ElectrumChainSource([ServerAddress.parse(s) for s in servers], network, ssl_context=ssl_context)
    source.start(timeout_s)
    return source
