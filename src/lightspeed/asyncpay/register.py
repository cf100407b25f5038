"""``lsp register``: a client asks an LSP to keep its mailbox and wake it by webhook (sans-IO codec).

LSPS5 registers webhooks over LSPS0 JSON-RPC in BOLT 8 custom messages, which Lightspeed's peer
layer does not carry yet; this is the same request as an onion message (ours, odd type, so other
nodes ignore it). Onion messages are anonymous, so the request names the client and is signed by
its node key, over a timestamp the LSP checks (a replayed request older than
:data:`MAX_CLOCK_SKEW_S` is refused). The LSP answers over the reply path with its announced
:class:`~lightspeed.asyncpay.policy.HoldLimits` (``lsp_registered``, JSON).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from lightspeed.codec.tlv import decode_tlv_stream, encode_tlv_stream
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.secp256k1 import (
    is_valid_pubkey,
    pubkey_from_privkey,
    sign_compact,
    verify_compact,
)
from lightspeed.errors import DecodeError, UsageError

#: onionmsg_tlv payload types (ours: odd, after the LightningRod ones of :mod:`.messages`).
LSP_REGISTER = 65543
LSP_REGISTERED = 65545
#: How far the request's timestamp may be from the LSP's clock (as LSPS5's webhook window).
MAX_CLOCK_SKEW_S = 600
MAX_URL_BYTES = 1024  # LSPS5: url MUST NOT exceed 1024 ASCII characters

_WEBHOOK_URL = 0
_CLIENT_ID = 2
_TIMESTAMP = 4
_SIGNATURE = 6


@dataclass(frozen=True)
class LspRegisterRequest:
    client_id: bytes
    timestamp: int
    webhook_url: str | None
    signature: bytes

    def _unsigned(self) -> list[tuple[int, bytes]]:
        records = [(_CLIENT_ID, self.client_id), (_TIMESTAMP, self.timestamp.to_bytes(8, "big"))]
        if self.webhook_url is not None:
            records.insert(0, (_WEBHOOK_URL, self.webhook_url.encode()))
        return records

    def sighash(self) -> bytes:
        return sha256(b"lightspeed/lsp_register" + encode_tlv_stream(self._unsigned()))

    @classmethod
    def sign(cls, client_privkey: bytes, timestamp: int, webhook_url: str | None) -> LspRegisterRequest:
        if webhook_url is not None and len(webhook_url.encode()) > MAX_URL_BYTES:
            raise UsageError(f"webhook: longer than {MAX_URL_BYTES} bytes")
        unsigned = cls(pubkey_from_privkey(client_privkey), timestamp, webhook_url, bytes(64))
        return replace(unsigned, signature=sign_compact(client_privkey, unsigned.sighash()))

    def to_bytes(self) -> bytes:
        return encode_tlv_stream([*self._unsigned(), (_SIGNATURE, self.signature)])

    @classmethod
    def from_bytes(cls, data: bytes, *, now: int) -> LspRegisterRequest:
        """Decode and verify (signature, and timestamp within ``MAX_CLOCK_SKEW_S`` of ``now``)."""
        records = decode_tlv_stream(data, {_WEBHOOK_URL, _CLIENT_ID, _TIMESTAMP, _SIGNATURE}, field="lsp_register")
        for tlv_type, size, name in ((_CLIENT_ID, 33, "client_id"), (_TIMESTAMP, 8, "timestamp"),
                                     (_SIGNATURE, 64, "signature")):
            if len(records.get(tlv_type, b"")) != size:
                raise DecodeError(f"lsp_register {name}", f"missing or not {size} bytes")
        url = None
        if _WEBHOOK_URL in records:
            raw = records[_WEBHOOK_URL]
            if len(raw) > MAX_URL_BYTES:
                raise DecodeError("lsp_register webhook_url", f"longer than {MAX_URL_BYTES} bytes")
            try:
                url = raw.decode("ascii")
            except UnicodeDecodeError:
                raise DecodeError("lsp_register webhook_url", "not ASCII") from None
        client_id = records[_CLIENT_ID]
        if not is_valid_pubkey(client_id):
            raise DecodeError("lsp_register client_id", "not a valid public key")
        request = cls(client_id, int.from_bytes(records[_TIMESTAMP], "big"), url, records[_SIGNATURE])
        if not verify_compact(client_id, request.signature, request.sighash()):
            raise DecodeError("lsp_register signature", "not client_id's signature of this request")
        if abs(request.timestamp - now) > MAX_CLOCK_SKEW_S:
            raise DecodeError("lsp_register timestamp", f"more than {MAX_CLOCK_SKEW_S} s from our clock")
        return request


def registered_reply(limits: dict[str, int]) -> bytes:
    return json.dumps({"limits": limits}, sort_keys=True).encode()


def parse_registered_reply(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise DecodeError("lsp_registered", "not JSON") from None
    if not isinstance(value, dict) or not isinstance(value.get("limits"), dict):
        raise DecodeError("lsp_registered", "no limits object")
    return value
