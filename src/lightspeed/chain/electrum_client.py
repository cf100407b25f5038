"""The client side of the Electrum server protocol (1.4): requests out, checked answers in (sans-IO).

A server is a stranger: every answer is parsed into typed values here, and anything of the
wrong shape becomes :class:`ServerError` naming the method and the field, never another
exception (the runtime then drops the server and tries the next one). Headers and merkle
branches are checked against the header chain by :mod:`.spv`; what is parsed here is only
their form. Fee rates come as bitcoin per kvB in JSON numbers: they are read as decimals and
turned into integer sat per 1000 weight units at once (never a float).

:class:`ClientProtocol` frames JSON-RPC: :meth:`~ClientProtocol.request` gives the line to send
and its id; :meth:`~ClientProtocol.receive` takes the bytes read and returns the answers
(:class:`Reply`) and notifications (:class:`Notification`) they completed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from lightspeed.bitcoin.tx import Transaction
from lightspeed.chain.blocks import HEADER_SIZE
from lightspeed.errors import DecodeError

PROTOCOL_VERSION = "1.4"
CLIENT_NAME = "lightspeed"
MAX_LINE_BYTES = 8 * 1024 * 1024  # an answer longer than this is a hostile server
METHOD_NOT_FOUND = -32601
MIN_FEERATE_PER_KW = 253  # 1 sat/vB: what relays everywhere (the floor every implementation uses)
MAX_FEERATE_PER_KW = 10_000_000


class ServerError(DecodeError):
    """A server's answer that is malformed or untrue: the connection goes, the next server is tried."""


class RemoteError(Exception):
    """The server answered a request with a JSON-RPC error (a well-formed refusal, e.g. a rejected tx)."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"{method}: {message} (code {code})")
        self.method, self.code, self.message = method, code, message


@dataclass(frozen=True)
class Reply:
    id: int
    method: str
    result: Any
    error: RemoteError | None


@dataclass(frozen=True)
class Notification:
    method: str
    params: list[Any]


class ClientProtocol:
    """JSON-RPC framing: one JSON object per line; ids pair answers with requests."""

    def __init__(self) -> None:
        self._next_id = 0
        self._pending: dict[int, str] = {}  # id -> method
        self._buffer = b""

    def request(self, method: str, params: Sequence[Any] = ()) -> tuple[int, bytes]:
        self._next_id += 1
        self._pending[self._next_id] = method
        line = json.dumps({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": list(params)})
        return self._next_id, line.encode() + b"\n"

    def receive(self, data: bytes) -> list[Reply | Notification]:
        self._buffer += data
        out: list[Reply | Notification] = []
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            if line.strip():
                out.extend(self._message(line))
        if len(self._buffer) > MAX_LINE_BYTES:
            raise ServerError("line", f"longer than {MAX_LINE_BYTES} bytes")
        return out

    def _message(self, line: bytes) -> list[Reply | Notification]:
        try:
            value = json.loads(line, parse_float=Decimal, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise ServerError("line", f"not JSON ({str(exc)[:80]})") from None
        items = value if isinstance(value, list) else [value]
        return [self._one(item) for item in items]

    def _one(self, item: Any) -> Reply | Notification:
        if not isinstance(item, dict):
            raise ServerError("message", f"a JSON-RPC message is an object, got {type(item).__name__}")
        if "method" in item and "id" not in item:
            method, params = item["method"], item.get("params", [])
            if not isinstance(method, str) or not isinstance(params, list):
                raise ServerError("notification", "method must be a string and params a list")
            return Notification(method, params)
        msg_id = item.get("id")
        if not isinstance(msg_id, int) or isinstance(msg_id, bool) or msg_id not in self._pending:
            raise ServerError("id", f"an answer to no request of ours ({str(msg_id)[:40]})")
        method = self._pending.pop(msg_id)
        error = item.get("error")
        if error is not None:
            if isinstance(error, dict):
                code, message = error.get("code"), error.get("message")
            else:
                code, message = 0, error
            if not isinstance(code, int) or not isinstance(message, str):
                raise ServerError(method, "an error must have an integer code and a string message")
            return Reply(msg_id, method, None, RemoteError(method, code, message[:2000]))
        if "result" not in item:
            raise ServerError(method, "an answer without result or error")
        return Reply(msg_id, method, item["result"], None)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# -- answers, method by method -------------------------------------------------------------------

def _hex(value: Any, field: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise ServerError(field, f"expected a hex string, got {type(value).__name__}")
    try:
        data = bytes.fromhex(value)
    except ValueError:
        raise ServerError(field, f"not hex: {value[:40]!r}") from None
    if size is not None and len(data) != size:
        raise ServerError(field, f"{len(data)} bytes, expected {size}")
    return data


def _int(value: Any, field: str, low: int = 0, high: int = 2**31) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ServerError(field, f"expected an integer in {low}..{high}, got {str(value)[:40]}")
    return value


def _txid(value: Any, field: str) -> bytes:
    return _hex(value, field, 32)[::-1]  # hashes travel in display order


def parse_version(result: Any) -> str:
    """``server.version``: [server software, protocol]; the protocol must be the one we asked for."""
    if not (isinstance(result, list) and len(result) == 2 and all(isinstance(x, str) for x in result)):
        raise ServerError("server.version", "expected [server_software, protocol_version]")
    if result[1] != PROTOCOL_VERSION:
        raise ServerError("server.version", f"protocol {result[1][:20]!r}, we speak {PROTOCOL_VERSION}")
    return str(result[0])[:100]


def parse_genesis(result: Any) -> bytes:
    """``server.features``: the genesis hash (internal byte order) the server's chain starts from."""
    if not isinstance(result, dict):
        raise ServerError("server.features", "expected an object")
    return _txid(result.get("genesis_hash"), "server.features genesis_hash")


def parse_tip(result: Any) -> tuple[int, bytes]:
    """``blockchain.headers.subscribe`` (answer or notification): (height, 80-byte header)."""
    if not isinstance(result, dict):
        raise ServerError("blockchain.headers.subscribe", "expected {height, hex}")
    return _int(result.get("height"), "height"), _hex(result.get("hex"), "hex", HEADER_SIZE)


def parse_header_hex(result: Any) -> bytes:
    """``blockchain.block.header``: one 80-byte header in hex."""
    return _hex(result, "blockchain.block.header", HEADER_SIZE)


def parse_headers(result: Any, asked: int) -> list[bytes]:
    """``blockchain.block.headers``: up to ``asked`` 80-byte headers (``hex`` in 1.4, ``headers`` in 1.6)."""
    if not isinstance(result, dict):
        raise ServerError("blockchain.block.headers", "expected an object")
    count = _int(result.get("count"), "count", 0, asked)
    if "headers" in result:
        items = result["headers"]
        if not isinstance(items, list):
            raise ServerError("headers", "expected a list")
        headers = [_hex(h, f"headers[{i}]", HEADER_SIZE) for i, h in enumerate(items)]
    else:
        raw = _hex(result.get("hex"), "hex")
        if len(raw) % HEADER_SIZE:
            raise ServerError("hex", f"{len(raw)} bytes is not a whole number of headers")
        headers = [raw[i:i + HEADER_SIZE] for i in range(0, len(raw), HEADER_SIZE)]
    if len(headers) != count:
        raise ServerError("count", f"says {count} headers, sent {len(headers)}")
    return headers


@dataclass(frozen=True)
class HistoryItem:
    txid: bytes
    height: int  # > 0 confirmed at that height; 0 in the mempool; -1 in the mempool with unconfirmed parents


def parse_history(result: Any) -> list[HistoryItem]:
    """``blockchain.scripthash.get_history``: [{tx_hash, height[, fee]}]."""
    if not isinstance(result, list):
        raise ServerError("get_history", "expected a list")
    items = []
    for i, entry in enumerate(result):
        if not isinstance(entry, dict):
            raise ServerError(f"get_history[{i}]", "expected {tx_hash, height}")
        items.append(HistoryItem(_txid(entry.get("tx_hash"), f"get_history[{i}].tx_hash"),
                                 _int(entry.get("height"), f"get_history[{i}].height", -1)))
    if len({item.txid for item in items}) != len(items):
        raise ServerError("get_history", "the same transaction twice")
    return items


def history_status(items: Sequence[HistoryItem]) -> str | None:
    """The protocol's status of a script hash: SHA-256 of "txid:height:" over the history, in the
    server's order (None for no history). It must match what the server announced."""
    if not items:
        return None
    text = "".join(f"{item.txid[::-1].hex()}:{item.height}:" for item in items)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def parse_status(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 64:
        raise ServerError(field, "a status is null or 64 hex characters")
    _hex(value, field)
    return value.lower()


def parse_scripthash_notification(params: list[Any]) -> tuple[bytes, str | None]:
    if len(params) != 2:
        raise ServerError("blockchain.scripthash.subscribe", "expected [scripthash, status]")
    return _txid(params[0], "scripthash"), parse_status(params[1], "status")


@dataclass(frozen=True)
class MerkleProof:
    block_height: int
    position: int
    branch: tuple[bytes, ...]  # internal byte order, deepest first


def parse_merkle(result: Any) -> MerkleProof:
    """``blockchain.transaction.get_merkle``: {block_height, merkle, pos}."""
    if not isinstance(result, dict):
        raise ServerError("get_merkle", "expected {block_height, merkle, pos}")
    branch = result.get("merkle")
    if not isinstance(branch, list) or len(branch) > 32:
        raise ServerError("get_merkle.merkle", "expected a list of at most 32 hashes")
    return MerkleProof(_int(result.get("block_height"), "block_height", 1),
                       _int(result.get("pos"), "pos", 0, 2**32),
                       tuple(_txid(h, f"merkle[{i}]") for i, h in enumerate(branch)))


def parse_transaction(result: Any, txid: bytes) -> Transaction:
    """``blockchain.transaction.get``: raw hex that must parse and hash to the txid asked for."""
    raw = _hex(result, "blockchain.transaction.get")
    try:
        tx = Transaction.parse(raw)
    except DecodeError as exc:
        raise ServerError("blockchain.transaction.get", f"not a transaction ({exc})") from None
    if tx.txid != txid:
        raise ServerError("blockchain.transaction.get", f"asked for {txid[::-1].hex()}, got {tx.txid_hex}")
    return tx


def parse_txid(result: Any, expected: bytes) -> bytes:
    """``blockchain.transaction.broadcast``: the txid, which must be the one we sent."""
    txid = _txid(result, "blockchain.transaction.broadcast")
    if txid != expected:
        raise ServerError("blockchain.transaction.broadcast", f"answered {txid[::-1].hex()} for "
                                                              f"{expected[::-1].hex()}")
    return txid


def parse_feerate(result: Any) -> int | None:
    """``blockchain.estimatefee`` (BTC per kvB) as sat per 1000 weight units, within the relay floor
    and a sane ceiling; None when the server has no estimate (-1)."""
    if isinstance(result, bool) or not isinstance(result, (int, Decimal)):
        raise ServerError("blockchain.estimatefee", f"expected a number, got {str(result)[:40]}")
    try:
        if result < 0:
            return None
        sat_per_kvb = int(Decimal(result) * 100_000_000)
    except (InvalidOperation, ValueError, OverflowError):
        raise ServerError("blockchain.estimatefee", f"not a fee rate: {str(result)[:40]}") from None
    return min(max(sat_per_kvb // 4, MIN_FEERATE_PER_KW), MAX_FEERATE_PER_KW)


def parse_relayfee(result: Any) -> int:
    """``blockchain.relayfee`` (BTC per kvB) as sat per 1000 weight units, rounded up (paying the
    floor exactly must relay), never under 253 sat/kw and within the sane ceiling."""
    if isinstance(result, bool) or not isinstance(result, (int, Decimal)):
        raise ServerError("blockchain.relayfee", f"expected a number, got {str(result)[:40]}")
    try:
        sat_per_kvb = int(Decimal(result) * 100_000_000)
    except (InvalidOperation, ValueError, OverflowError):
        raise ServerError("blockchain.relayfee", f"not a fee rate: {str(result)[:40]}") from None
    if sat_per_kvb < 0:
        raise ServerError("blockchain.relayfee", f"a negative fee rate: {str(result)[:40]}")
    return min(max(-(-sat_per_kvb // 4), MIN_FEERATE_PER_KW), MAX_FEERATE_PER_KW)


def parse_package_result(result: Any) -> list[str]:
    """``blockchain.transaction.broadcast_package`` (1.6): the members' errors (empty on success)."""
    if not isinstance(result, dict) or not isinstance(result.get("success"), bool):
        raise ServerError("broadcast_package", "expected {success, errors}")
    if result["success"]:
        return []
    errors = result.get("errors") or []
    if not isinstance(errors, list):
        raise ServerError("broadcast_package.errors", "expected a list")
    return [str(e.get("error") if isinstance(e, dict) else e)[:500] for e in errors] or ["rejected"]


def parse_id_from_pos(result: Any) -> bytes:
    return _txid(result, "blockchain.transaction.id_from_pos")


def scripthash(script_pubkey: bytes) -> bytes:
    """The protocol's key for an output script: its SHA-256 (sent byte-reversed, like a txid)."""
    return hashlib.sha256(script_pubkey).digest()


def parse_server(text: str) -> tuple[str, int, bool]:
    """``HOST:PORT:s`` (TLS) or ``HOST:PORT:t`` (plain TCP), as Electrum writes servers: (host, port, tls)."""
    host, sep, rest = text.rpartition(":")
    if not sep or rest not in ("s", "t"):
        raise ValueError(f"{text!r}: a server is HOST:PORT:s (TLS) or HOST:PORT:t (TCP)")
    host, sep, port_text = host.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: a server is HOST:PORT:s (TLS) or HOST:PORT:t (TCP)")
    return host.strip("[]"), int(port_text), rest == "s"
