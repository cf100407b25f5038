"""JSON-RPC as the Electrum protocol frames it: one JSON value per line, strictly checked (sans-IO).

Anything a client sends becomes either requests to run or a JSON-RPC error to send back,
never an exception: a line that is not JSON is a parse error (-32700), a value that is not
a request is an invalid request (-32600), parameters of the wrong shape or type are invalid
params (-32602). Electrum's own codes (ElectrumX's ``BAD_REQUEST`` = 1 and ``DAEMON_ERROR``
= 2) say that a well-formed request could not be served.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
BAD_REQUEST = 1  # ElectrumX: the request is well formed but cannot be answered (unknown tx, bad height, ...)
DAEMON_ERROR = 2  # ElectrumX: the node refused (a broadcast's rejection reason)

MAX_LINE_BYTES = 4 * 1024 * 1024  # a 400 kWU transaction in hex, padded to a power of two by Electrum 4.8
MAX_BATCH = 100

RequestId = int | str | None


class RpcError(Exception):
    """An error answer: ``code`` and ``message`` go to the client as they are."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class Request:
    id: RequestId
    method: str
    params: list[Any] | dict[str, Any]
    notification: bool  # no "id": the client wants no answer


@dataclass(frozen=True)
class Invalid:
    """A batch element (or the whole line) that is not a request: answered with ``error``."""

    id: RequestId
    error: RpcError


@dataclass(frozen=True)
class Incoming:
    items: list[Request | Invalid]
    batch: bool


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_line(line: bytes) -> Incoming:
    """One line from the client: a request, or a batch (JSON array) of them."""
    try:
        value = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return Incoming([Invalid(None, RpcError(PARSE_ERROR, f"parse error: {exc}"[:200]))], batch=False)
    if isinstance(value, list):
        if not value:
            return Incoming([Invalid(None, RpcError(INVALID_REQUEST, "an empty batch"))], batch=False)
        if len(value) > MAX_BATCH:
            return Incoming([Invalid(None, RpcError(INVALID_REQUEST, f"a batch of more than {MAX_BATCH} requests"))],
                            batch=False)
        return Incoming([_request(item) for item in value], batch=True)
    return Incoming([_request(value)], batch=False)


def _request(value: Any) -> Request | Invalid:
    if not isinstance(value, dict):
        return Invalid(None, RpcError(INVALID_REQUEST, "a request must be a JSON object"))
    request_id = value.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, int | str | None):
        return Invalid(None, RpcError(INVALID_REQUEST, "id: must be a string, an integer or null"))
    if value.get("jsonrpc", "2.0") != "2.0":
        return Invalid(request_id, RpcError(INVALID_REQUEST, "jsonrpc: must be \"2.0\""))
    method = value.get("method")
    if not isinstance(method, str) or not method:
        return Invalid(request_id, RpcError(INVALID_REQUEST, "method: must be a non-empty string"))
    params = value.get("params", [])
    if not isinstance(params, list | dict):
        return Invalid(request_id, RpcError(INVALID_REQUEST, "params: must be an array or an object"))
    return Request(request_id, method, params, notification="id" not in value)


def bind(request: Request, names: Sequence[str], required: int, extra_ok: bool = False) -> list[Any]:
    """The request's parameters in the order of ``names`` (absent optional ones as None)."""
    params = request.params
    if isinstance(params, list):
        if len(params) < required or (len(params) > len(names) and not extra_ok):
            expected = f"{required}" if required == len(names) else f"{required} to {len(names)}"
            raise RpcError(INVALID_PARAMS, f"{request.method} takes {expected} parameters, got {len(params)}")
        return [*params[:len(names)], *[None] * (len(names) - len(params))]
    unknown = sorted(set(params) - set(names))
    if unknown and not extra_ok:
        raise RpcError(INVALID_PARAMS, f"{request.method}: unknown parameter {unknown[0]!r}")
    missing = [name for name in names[:required] if name not in params]
    if missing:
        raise RpcError(INVALID_PARAMS, f"{request.method}: missing parameter {missing[0]!r}")
    return [params.get(name) for name in names]


# -- parameter checks: each names the parameter and says what it must be ---------------------------

def non_negative_int(value: Any, name: str, maximum: int = 2**31 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise RpcError(INVALID_PARAMS, f"{name}: must be an integer from 0 to {maximum}, got {value!r:.80}")
    return value


def flag(value: Any, name: str, default: bool = False) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RpcError(INVALID_PARAMS, f"{name}: must be true or false, got {value!r:.80}")
    return value


def hex_bytes(value: Any, name: str, max_bytes: int = MAX_LINE_BYTES) -> bytes:
    if not isinstance(value, str) or len(value) > 2 * max_bytes:
        raise RpcError(INVALID_PARAMS, f"{name}: must be a hex string of at most {max_bytes} bytes")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise RpcError(INVALID_PARAMS, f"{name}: not valid hex") from None


def hash32(value: Any, name: str) -> bytes:
    """A hash as the protocol writes it (reversed hex) -> internal byte order."""
    if not isinstance(value, str) or len(value) != 64:
        raise RpcError(INVALID_PARAMS, f"{name}: must be 64 hex characters, got {value!r:.80}")
    return hex_bytes(value, name)[::-1]


# -- answers ---------------------------------------------------------------------------------------

def encode(message: Any) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def result_message(request_id: RequestId, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def error_message(request_id: RequestId, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": error.code, "message": error.message}}


def notification(method: str, params: list[Any]) -> bytes:
    return encode({"jsonrpc": "2.0", "method": method, "params": params})


Handler = Callable[[Request], Any]
