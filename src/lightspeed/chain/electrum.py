"""The Electrum server protocol (1.4 to 1.6) over the embedded regtest chain: one session's logic.

Sans-IO in the h11 sense: a :class:`ElectrumSession` takes a client's lines and returns the
lines to send back; :meth:`ElectrumSession.notifications` takes what changed in the chain
file (:class:`ChainFollower`) and returns the notifications this client subscribed to. The
TCP server (``lightspeed.node.electrum_server``) only moves bytes and runs the clock.

What a wallet checks, and where it comes from here: ``server.features`` names Bitcoin
Core's regtest genesis; headers are the chain's real 80-byte headers; merkle branches
prove a transaction against its block's header (:mod:`.blocks`); a script hash's status is
the protocol's hash of its history - confirmed transactions by height and position in the
block, then mempool ones by (-height, txid), height 0 for a mempool transaction whose
inputs are all confirmed and -1 otherwise. Broadcasts go through the chain's full
validation; a rejection is an RPC error carrying the rule it broke.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lightspeed import __version__
from lightspeed.bitcoin.tx import Transaction
from lightspeed.chain.blocks import GENESIS_HASH, merkle_branch
from lightspeed.chain.electrum_rpc import (
    BAD_REQUEST,
    DAEMON_ERROR,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    Incoming,
    Invalid,
    Request,
    RpcError,
    bind,
    encode,
    error_message,
    flag,
    hash32,
    hex_bytes,
    non_negative_int,
    notification,
    parse_line,
    result_message,
)
from lightspeed.chain.index import ChainCursor, HistoryItem
from lightspeed.chain.regtest import PackageRejected, RegtestChain
from lightspeed.errors import ChainBusy, ChainError, DecodeError, RejectedTransaction

SERVER_VERSION = f"lightspeed {__version__}"
PROTOCOL_MIN = (1, 4)
PROTOCOL_MAX = (1, 6)
SUPPORTED_VERSIONS = ((1, 4), (1, 4, 1), (1, 4, 2), (1, 6))
MAX_HEADERS = 2016  # one difficulty period: what Electrum asks for at once
MAX_SUBSCRIPTIONS = 100_000
MAX_PACKAGE = 25  # Bitcoin Core's package limit
MIN_RELAY_SAT_PER_KVB = 1000  # Bitcoin Core's default minrelaytxfee: announced while the chain takes any fee
INCREMENTAL_RELAY_SAT_PER_KVB = 1000  # what a BIP 125 replacement adds (the chain's replacement rule)
REJECTED = "the transaction was rejected by network rules.\n\n"


# Our rejection reasons, tagged with the reject reason bitcoind gives for the same rule: wallets
# (Electrum) show the server's message only when it holds one of bitcoind's tokens.
_BITCOIND_REASONS = (
    ("already known", "txn-already-known"),
    ("at least one input and one output", "bad-txns-vin-empty"),
    ("coinbase transactions only come from mining", "coinbase"),
    ("spent twice within", "bad-txns-inputs-duplicate"),
    ("exceed 21 million", "bad-txns-txouttotal-toolarge"),
    ("out of range", "bad-txns-vout-toolarge"),
    ("relative", "non-BIP68-final"),
    ("locktime", "non-final"),
    ("already spent in the mempool", "txn-mempool-conflict"),
    ("a replacement must pay", "insufficient fee"),  # BIP 125: bitcoind's "insufficient fee, rejecting replacement"
    ("which it would replace", "insufficient fee"),  # BIP 125 rule 6: a feerate not above the replaced one's
    ("a replacement may not add an unconfirmed input", "replacement-adds-unconfirmed"),  # BIP 125 rule 2
    ("BIP 125 allows", "too many potential replacements"),  # BIP 125 rule 5
    ("below the minimum relay feerate", "min relay fee not met"),
    ("already spent in the chain", "bad-txns-inputs-missingorspent"),
    ("does not exist", "bad-txns-inputs-missingorspent"),
    ("immature", "bad-txns-premature-spend-of-coinbase"),
    ("exceed inputs", "bad-txns-in-belowout"),
    ("input ", "mandatory-script-verify-flag-failed"),  # the witness failed: what is left
)


def rejection(reason: str) -> RpcError:
    """A chain rejection as ElectrumX words it: bitcoind's reject reason, then ours in full."""
    token = next((t for needle, t in _BITCOIND_REASONS if needle in reason), "rejected")
    return RpcError(DAEMON_ERROR, f"{REJECTED}{token} ({reason})")


def _btc(sat: int) -> float:
    """Satoshi as the protocol's fee fields want them: a number of whole coins (the JSON edge only)."""
    return sat / 100_000_000


def _version_tuple(text: Any, name: str) -> tuple[int, ...]:
    parts = text.split(".") if isinstance(text, str) else []
    if len(parts) < 2 or not all(p.isdigit() and len(p) <= 4 for p in parts):
        raise RpcError(INVALID_PARAMS, f"{name}: a protocol version such as \"1.4\", got {text!r:.40}")
    return tuple(int(p) for p in parts)


def _version_text(version: tuple[int, ...]) -> str:
    return ".".join(str(n) for n in version)


def status_of(history: list[HistoryItem]) -> str | None:
    """The protocol's status of a script hash: SHA-256 of "txid:height:" over its ordered history."""
    entries = ordered_history(history)
    if not entries:
        return None
    text = "".join(f"{txid}:{height}:" for txid, height, _fee in entries)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def ordered_history(history: list[HistoryItem]) -> list[tuple[str, int, int | None]]:
    """(txid hex, height, fee) in the protocol's order: confirmed by block position, then the mempool."""
    confirmed = sorted((i for i in history if i.height is not None), key=lambda i: (i.height, i.position))
    mempool = sorted(((i.txid[::-1].hex(), -1 if i.unconfirmed_parent else 0, i.fee_sat)
                      for i in history if i.height is None), key=lambda e: (-e[1], e[0]))
    return [(i.txid[::-1].hex(), i.height or 0, None) for i in confirmed] + mempool


@dataclass(frozen=True)
class ChainChanges:
    """What a poll of the chain file found: the tip (if it moved) and the script hashes touched
    (None: any may have changed; each subscription's status is computed again)."""

    tip_height: int
    tip_moved: bool
    touched: frozenset[bytes] | None


class ChainFollower:
    """Follows the chain file that other processes write: one cheap query per poll when idle."""

    def __init__(self, chain: RegtestChain) -> None:
        self.chain = chain
        self.cursor: ChainCursor = chain.index.cursor()

    def poll(self) -> ChainChanges | None:
        """None if nothing changed since the last poll (ChainBusy if the file cannot be read now)."""
        index = self.chain.index
        with index.snapshot():
            now = index.cursor()
            if now == self.cursor:
                return None
            touched = index.touched_since(self.cursor)
        changes = ChainChanges(now.height, now.tip_hash != self.cursor.tip_hash,
                               None if touched is None else frozenset(touched))
        self.cursor = now
        return changes


class ElectrumSession:
    """One client connection's protocol state: the negotiated version and its subscriptions."""

    def __init__(self, chain: RegtestChain, host: str = "127.0.0.1", tcp_port: int | None = None) -> None:
        self.chain, self.host, self.tcp_port = chain, host, tcp_port
        self.protocol: tuple[int, ...] | None = None  # fixed by server.version, or 1.4 by any other first call
        self.close_after_reply = False  # version negotiation failed: the server closes once it answered
        self.headers_subscribed = False
        self.notified_tip: str | None = None  # the header last sent: a tip is never sent twice
        self.statuses: dict[bytes, str | None] = {}  # subscribed script hash -> last status sent
        self._methods: dict[str, Callable[[Request], Any]] = {
            "server.version": self._server_version,
            "server.features": lambda r: self._no_params(r, self.features()),
            "server.banner": lambda r: self._no_params(r, "Lightspeed's embedded regtest chain"),
            "server.donation_address": lambda r: self._no_params(r, ""),
            "server.peers.subscribe": lambda r: self._no_params(r, []),
            "server.ping": lambda r: self._no_params(r, None),
            "server.add_peer": self._add_peer,
            "blockchain.headers.subscribe": self._headers_subscribe,
            "blockchain.block.header": self._block_header,
            "blockchain.block.headers": self._block_headers,
            "blockchain.estimatefee": self._estimatefee,
            "blockchain.relayfee": lambda r: self._no_params(r, _btc(self.relay_floor_sat_per_kvb())),
            "mempool.get_fee_histogram": lambda r: self._no_params(r, self.fee_histogram()),
            "mempool.get_info": lambda r: self._no_params(r, {
                "mempoolminfee": _btc(self.relay_floor_sat_per_kvb()),
                "minrelaytxfee": _btc(self.relay_floor_sat_per_kvb()),
                "incrementalrelayfee": _btc(INCREMENTAL_RELAY_SAT_PER_KVB)}),
            "blockchain.scripthash.subscribe": self._scripthash_subscribe,
            "blockchain.scripthash.unsubscribe": self._scripthash_unsubscribe,
            "blockchain.scripthash.get_history": self._get_history,
            "blockchain.scripthash.get_mempool": self._get_mempool,
            "blockchain.scripthash.listunspent": self._listunspent,
            "blockchain.scripthash.get_balance": self._get_balance,
            "blockchain.transaction.get": self._transaction_get,
            "blockchain.transaction.get_merkle": self._get_merkle,
            "blockchain.transaction.id_from_pos": self._id_from_pos,
            "blockchain.transaction.broadcast": self._broadcast,
            "blockchain.transaction.broadcast_package": self._broadcast_package,
        }

    # -- lines in, lines out ---------------------------------------------------------------------

    def handle_line(self, line: bytes) -> bytes | None:
        """The answer to one line (None if it held only notifications). ChainBusy: retry the line later."""
        incoming = parse_line(line)
        return self.answer(incoming, [self.run(item) for item in incoming.items])

    def run(self, item: Request | Invalid) -> dict[str, Any] | None:
        """One request's answer message (None for a client notification). Raises only ChainBusy."""
        if isinstance(item, Invalid):
            return error_message(item.id, item.error)
        try:
            result = self.call(item)
        except RpcError as exc:
            return None if item.notification else error_message(item.id, exc)
        return None if item.notification else result_message(item.id, result)

    @staticmethod
    def answer(incoming: Incoming, messages: list[dict[str, Any] | None]) -> bytes | None:
        replies = [m for m in messages if m is not None]
        if not replies:
            return None
        return encode(replies if incoming.batch else replies[0])

    def call(self, request: Request) -> Any:
        method = self._methods.get(request.method)
        if method is None:
            raise RpcError(METHOD_NOT_FOUND, f"unknown method {request.method!r:.80}")
        if self.protocol is None and request.method != "server.version":
            self.protocol = PROTOCOL_MIN  # protocol 1.4: a client that does not negotiate gets the oldest
        try:
            return method(request)
        except (RpcError, ChainBusy):
            raise
        except ChainError as exc:
            raise RpcError(DAEMON_ERROR, str(exc)) from None
        except Exception as exc:  # a bug of ours must not end the connection without an answer
            raise RpcError(INTERNAL_ERROR, f"internal error: {type(exc).__name__}") from exc

    @staticmethod
    def _no_params(request: Request, result: Any) -> Any:
        bind(request, (), 0)
        return result

    # -- server.* --------------------------------------------------------------------------------

    def _server_version(self, request: Request) -> list[str]:
        if self.protocol is not None:
            raise RpcError(BAD_REQUEST, "server.version must be the first message, and only one is accepted")
        client_name, wanted = bind(request, ("client_name", "protocol_version"), 0, extra_ok=True)
        if client_name is not None and not isinstance(client_name, str):
            raise RpcError(INVALID_PARAMS, "client_name: must be a string")
        if wanted is None:
            wanted = _version_text(PROTOCOL_MIN)
        if isinstance(wanted, list) and len(wanted) == 2:
            low, high = _version_tuple(wanted[0], "protocol_min"), _version_tuple(wanted[1], "protocol_max")
        elif isinstance(wanted, str):
            low = high = _version_tuple(wanted, "protocol_version")
        else:
            raise RpcError(INVALID_PARAMS, "protocol_version: a version string or [protocol_min, protocol_max]")
        common = [v for v in SUPPORTED_VERSIONS if max(low, PROTOCOL_MIN) <= v <= min(high, PROTOCOL_MAX)]
        if not common:
            self.close_after_reply = True
            raise RpcError(BAD_REQUEST, f"unsupported protocol version: this server speaks "
                                        f"{_version_text(PROTOCOL_MIN)} to {_version_text(PROTOCOL_MAX)}")
        self.protocol = common[-1]
        return [SERVER_VERSION, _version_text(self.protocol)]

    def features(self) -> dict[str, Any]:
        return {"genesis_hash": GENESIS_HASH[::-1].hex(),
                "hosts": {self.host: {"tcp_port": self.tcp_port, "ssl_port": None}},
                "protocol_min": _version_text(PROTOCOL_MIN), "protocol_max": _version_text(PROTOCOL_MAX),
                "pruning": None, "server_version": SERVER_VERSION, "hash_function": "sha256", "services": []}

    def _add_peer(self, request: Request) -> bool:
        bind(request, ("features",), 1)
        return False  # this server keeps no peer list

    # -- headers ---------------------------------------------------------------------------------

    def _tip(self) -> dict[str, Any]:
        height = self.chain.index.cursor().height
        header = self.chain.index.header(height)
        assert header is not None
        return {"hex": header.hex(), "height": height}

    def _headers_subscribe(self, request: Request) -> dict[str, Any]:
        bind(request, (), 0)
        tip = self._tip()
        self.headers_subscribed, self.notified_tip = True, tip["hex"]
        return tip

    def _block_header(self, request: Request) -> Any:
        height, cp_height = bind(request, ("height", "cp_height"), 1)
        height = non_negative_int(height, "height")
        cp_height = non_negative_int(cp_height or 0, "cp_height")
        with self.chain.index.snapshot():
            header = self.chain.index.header(height)
            if header is None:
                raise RpcError(BAD_REQUEST, f"height {height} is beyond the tip {self.chain.index.cursor().height}")
            if not cp_height:
                return header.hex()
            return {"header": header.hex(), **self._checkpoint_proof(height, cp_height)}

    def _block_headers(self, request: Request) -> dict[str, Any]:
        start, count, cp_height = bind(request, ("start_height", "count", "cp_height"), 2)
        start = non_negative_int(start, "start_height")
        count = min(non_negative_int(count, "count"), MAX_HEADERS)
        cp_height = non_negative_int(cp_height or 0, "cp_height")
        with self.chain.index.snapshot():
            headers = self.chain.index.headers(start, count) if count else []
            result: dict[str, Any] = {"count": len(headers), "max": MAX_HEADERS}
            if self.protocol is not None and self.protocol >= (1, 6):
                result["headers"] = [h.hex() for h in headers]  # 1.6: a list instead of one hex string
            else:
                result["hex"] = b"".join(headers).hex()
            if headers and cp_height:
                result.update(self._checkpoint_proof(start + len(headers) - 1, cp_height))
        return result

    def _checkpoint_proof(self, height: int, cp_height: int) -> dict[str, Any]:
        """The merkle branch of block ``height``'s hash up to the root of all block hashes to ``cp_height``."""
        tip = self.chain.index.cursor().height
        if not height <= cp_height <= tip:
            raise RpcError(BAD_REQUEST, f"need height {height} <= cp_height {cp_height} <= tip {tip}")
        branch, root = merkle_branch(self.chain.index.block_hashes(cp_height + 1), height)
        return {"branch": [h[::-1].hex() for h in branch], "root": root[::-1].hex()}

    # -- fees ------------------------------------------------------------------------------------

    def _estimatefee(self, request: Request) -> float:
        number, mode = bind(request, ("number", "mode"), 1)
        non_negative_int(number, "number", maximum=1008)
        if mode is not None and not isinstance(mode, str):
            raise RpcError(INVALID_PARAMS, "mode: must be a string")
        estimate = self.chain.estimate_feerate_per_kw(max(number, 1)) * 4  # sat/kw -> sat/kvB
        # A real estimator never answers below what the mempool relays, nor below what blocks take
        # while they are full: the chain's congested mode leaves packages under that rate waiting.
        return _btc(max(estimate, self.relay_floor_sat_per_kvb(), self.chain.congested_below_per_kw() * 4))

    def relay_floor_sat_per_kvb(self) -> int:
        """The chain's minimum relay feerate (``chain set-feerate --min-relay``) in sat/kvB, read at
        every call (another process may change it), never under Bitcoin Core's default 1 sat/vB."""
        return max(MIN_RELAY_SAT_PER_KVB, self.chain.min_relay_feerate_per_kw() * 4)

    def fee_histogram(self) -> list[list[int]]:
        """[fee rate in sat/vB, total vsize at that rate] for the mempool, highest rate first."""
        buckets: dict[int, int] = {}
        for fee, vsize in self.chain.index.mempool_fees():
            rate = fee // vsize
            buckets[rate] = buckets.get(rate, 0) + vsize
        return [[rate, buckets[rate]] for rate in sorted(buckets, reverse=True)]

    # -- script hashes ---------------------------------------------------------------------------

    def status(self, scripthash: bytes) -> str | None:
        return status_of(self.chain.index.history(scripthash))

    def _scripthash(self, request: Request) -> bytes:
        (value,) = bind(request, ("scripthash",), 1)
        return hash32(value, "scripthash")

    def _scripthash_subscribe(self, request: Request) -> str | None:
        scripthash = self._scripthash(request)
        if scripthash not in self.statuses and len(self.statuses) >= MAX_SUBSCRIPTIONS:
            raise RpcError(BAD_REQUEST, f"at most {MAX_SUBSCRIPTIONS} script hashes per connection")
        status = self.status(scripthash)
        self.statuses[scripthash] = status
        return status

    def _scripthash_unsubscribe(self, request: Request) -> bool:
        scripthash = self._scripthash(request)
        subscribed = scripthash in self.statuses
        self.statuses.pop(scripthash, None)
        return subscribed

    def _history(self, request: Request, mempool_only: bool) -> list[dict[str, Any]]:
        entries = ordered_history(self.chain.index.history(self._scripthash(request)))
        return [{"tx_hash": txid, "height": height} if height > 0 else
                {"tx_hash": txid, "height": height, "fee": fee or 0}
                for txid, height, fee in entries if not mempool_only or height <= 0]

    def _get_history(self, request: Request) -> list[dict[str, Any]]:
        return self._history(request, mempool_only=False)

    def _get_mempool(self, request: Request) -> list[dict[str, Any]]:
        return self._history(request, mempool_only=True)

    def _listunspent(self, request: Request) -> list[dict[str, Any]]:
        outputs = [o for o in self.chain.index.outputs(self._scripthash(request)) if not o.spent]
        outputs.sort(key=lambda o: (o.height is None, o.height or 0, o.position or 0, o.txid[::-1], o.vout))
        return [{"tx_hash": o.txid[::-1].hex(), "tx_pos": o.vout, "height": o.height or 0, "value": o.value_sat}
                for o in outputs]

    def _get_balance(self, request: Request) -> dict[str, int]:
        outputs = self.chain.index.outputs(self._scripthash(request))
        confirmed = sum(o.value_sat for o in outputs if o.height is not None and not o.spent_in_chain)
        with_mempool = sum(o.value_sat for o in outputs if not o.spent)
        return {"confirmed": confirmed, "unconfirmed": with_mempool - confirmed}

    # -- transactions ----------------------------------------------------------------------------

    def _transaction_get(self, request: Request) -> str:
        tx_hash, verbose = bind(request, ("tx_hash", "verbose"), 1)
        txid = hash32(tx_hash, "tx_hash")
        if flag(verbose, "verbose"):
            raise RpcError(BAD_REQUEST, "verbose=true (bitcoind's decoded form) is not served; ask with verbose=false")
        found = self.chain.index.raw_transaction(txid)
        if found is None:
            raise RpcError(BAD_REQUEST, f"no transaction {tx_hash} in the chain or the mempool")
        return found[0].hex()

    def _get_merkle(self, request: Request) -> dict[str, Any]:
        tx_hash, height = bind(request, ("tx_hash", "height"), 2)
        txid = hash32(tx_hash, "tx_hash")
        non_negative_int(height, "height")  # a hint: the proof is for the block the transaction is in
        with self.chain.index.snapshot():
            found = self.chain.index.raw_transaction(txid)
            if found is None or found[1] is None:
                raise RpcError(BAD_REQUEST, f"transaction {tx_hash} is not in a block")
            _raw, block_height, position = found
            assert block_height is not None and position is not None
            branch, _root = merkle_branch(self.chain.index.block_txids(block_height), position)
        return {"block_height": block_height, "merkle": [h[::-1].hex() for h in branch], "pos": position}

    def _id_from_pos(self, request: Request) -> Any:
        height, tx_pos, merkle = bind(request, ("height", "tx_pos", "merkle"), 2)
        height, tx_pos = non_negative_int(height, "height"), non_negative_int(tx_pos, "tx_pos")
        txids = self.chain.index.block_txids(height)
        if not txids:
            raise RpcError(BAD_REQUEST, f"no block at height {height}")
        if tx_pos >= len(txids):
            raise RpcError(BAD_REQUEST, f"block {height} has {len(txids)} transactions, no position {tx_pos}")
        txid = txids[tx_pos][::-1].hex()
        if not flag(merkle, "merkle"):
            return txid
        branch, _root = merkle_branch(txids, tx_pos)
        return {"tx_hash": txid, "merkle": [h[::-1].hex() for h in branch]}

    def _parse_tx(self, value: Any, name: str) -> Transaction:
        raw = hex_bytes(value, name)
        try:
            return Transaction.parse(raw)
        except DecodeError as exc:
            raise RpcError(DAEMON_ERROR, f"{REJECTED}TX decode failed ({exc})") from None

    def _broadcast(self, request: Request) -> str:
        (raw_tx,) = bind(request, ("raw_tx",), 1)
        tx = self._parse_tx(raw_tx, "raw_tx")
        known = self.chain.index.raw_transaction(tx.txid)
        if known is not None:
            if known[1] is not None:
                raise RpcError(DAEMON_ERROR, f"{REJECTED}Transaction already in block chain")
            return tx.txid_hex  # already in the mempool: what Bitcoin Core answers too
        try:
            self.chain.broadcast(tx)
        except RejectedTransaction as exc:
            raise rejection(str(exc)) from None
        return tx.txid_hex

    def _broadcast_package(self, request: Request) -> dict[str, Any]:
        raw_txs, verbose = bind(request, ("raw_txs", "verbose"), 1)
        if not isinstance(raw_txs, list) or not 1 <= len(raw_txs) <= MAX_PACKAGE:
            raise RpcError(INVALID_PARAMS, f"raw_txs: must be an array of 1 to {MAX_PACKAGE} hex transactions")
        if flag(verbose, "verbose"):
            raise RpcError(BAD_REQUEST, "verbose=true (bitcoind's submitpackage result) is not served")
        txs = [self._parse_tx(raw, f"raw_txs[{i}]") for i, raw in enumerate(raw_txs)]
        *parents, child = txs
        spent_by_child = {txin.prevout.txid for txin in child.inputs}
        parent_ids = {p.txid for p in parents}
        if (len(parent_ids) != len(parents) or not parent_ids <= spent_by_child
                or any(txin.prevout.txid in parent_ids for p in parents for txin in p.inputs)):
            raise RpcError(BAD_REQUEST, "package topology disallowed: not child-with-parents, "
                                        "or parents depend on each other")
        try:
            self.chain.broadcast_package(txs)
        except PackageRejected as exc:
            return {"success": False, "errors": [{"txid": exc.txid[::-1].hex(), "error": rejection(exc.reason).message[len(REJECTED):]}]}
        return {"success": True}

    # -- notifications ---------------------------------------------------------------------------

    def notifications(self, changes: ChainChanges) -> list[bytes]:
        """What this client subscribed to and that changed: a new tip, new statuses."""
        out = []
        if self.headers_subscribed and changes.tip_moved:  # a reorganisation may keep the height: still a new tip
            # The tip is read now, not at the poll: a block mined in between is sent here, and the next
            # poll, which sees it as a move, must not send it again.
            tip = self._tip()
            if tip["hex"] != self.notified_tip:
                out.append(notification("blockchain.headers.subscribe", [tip]))
                self.notified_tip = tip["hex"]
        subscribed = self.statuses.keys()
        for scripthash in list(subscribed if changes.touched is None else changes.touched & subscribed):
            status = self.status(scripthash)
            if status != self.statuses[scripthash]:
                self.statuses[scripthash] = status
                out.append(notification("blockchain.scripthash.subscribe", [scripthash[::-1].hex(), status]))
        return out
