"""LSPS5 (bLIP-55) webhook notifications: the body, the signed headers, and their check (pure).

An LSP wakes a sleeping client by POSTing a JSON-RPC 2.0 notification to the webhook URL the
client registered. The LSP signs it with its node key the way ``signmessage`` does (zbase32,
see :mod:`lightspeed.crypto.signed_message`), over the text
``"LSPS5: DO NOT SIGN THIS MESSAGE MANUALLY: LSP: At ${timestamp} I notify ${body}"``, and sends
``x-lsps5-timestamp`` (an LSPS0 datetime, ``YYYY-MM-DDThh:mm:ss.uuuZ``) and ``x-lsps5-signature``.
The receiver recovers the LSP's node id from the signature and refuses a timestamp more than
ten minutes off its own clock, and a signature it has already seen (a replay).
"""

from __future__ import annotations

import json
from collections import deque
from datetime import UTC, datetime
from typing import Any

from lightspeed.crypto.signed_message import recover_signer, sign_message
from lightspeed.errors import DecodeError

TIMESTAMP_HEADER = "x-lsps5-timestamp"
SIGNATURE_HEADER = "x-lsps5-signature"
#: LSPS5: the client rejects a notification whose timestamp is more than 10 minutes from its clock.
MAX_CLOCK_SKEW_SECONDS = 600
#: LSPS5 notification methods an async-payment LSP sends.
PAYMENT_INCOMING = "lsps5.payment_incoming"
ONION_MESSAGE_INCOMING = "lsps5.onion_message_incoming"


def lsps0_datetime(now: float) -> str:
    """LSPS0 datetime: ISO 8601 UTC with milliseconds and a ``Z``."""
    moment = datetime.fromtimestamp(now, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_lsps0_datetime(text: str, field: str = TIMESTAMP_HEADER) -> float:
    try:
        if not text.endswith("Z"):
            raise ValueError
        return datetime.strptime(text[:-1], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise DecodeError(field, f"{text!r} is not an LSPS0 datetime (YYYY-MM-DDThh:mm:ss.uuuZ)") from None


def notification_body(method: str, params: dict[str, Any] | None = None) -> str:
    """The JSON-RPC 2.0 notification (no ``id``), compact, as it is signed and sent."""
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": params or {}}, separators=(",", ":"))


def signed_text(timestamp: str, body: str) -> bytes:
    return f"LSPS5: DO NOT SIGN THIS MESSAGE MANUALLY: LSP: At {timestamp} I notify {body}".encode()


def sign_headers(node_privkey: bytes, body: str, now: float) -> dict[str, str]:
    """The headers of one delivery attempt (signed at send time, so a late retry still verifies)."""
    timestamp = lsps0_datetime(now)
    return {"content-type": "application/json", TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign_message(node_privkey, signed_text(timestamp, body))}


class NotificationVerifier:
    """The client side (or its push proxy): authenticity, freshness, no replay."""

    def __init__(self, lsp_node_id: bytes, remember: int = 64) -> None:
        self.lsp_node_id = lsp_node_id
        self._seen: deque[str] = deque(maxlen=remember)

    def verify(self, headers: dict[str, str], body: str, now: float) -> dict[str, Any]:
        """The notification's JSON object, or :class:`DecodeError` naming what is wrong."""
        lowered = {k.lower(): v for k, v in headers.items()}
        for name in (TIMESTAMP_HEADER, SIGNATURE_HEADER):
            if name not in lowered:
                raise DecodeError(name, "missing")
        timestamp, signature = lowered[TIMESTAMP_HEADER], lowered[SIGNATURE_HEADER]
        if abs(parse_lsps0_datetime(timestamp) - now) > MAX_CLOCK_SKEW_SECONDS:
            raise DecodeError(TIMESTAMP_HEADER, f"{timestamp} is more than {MAX_CLOCK_SKEW_SECONDS} s from now")
        if recover_signer(signed_text(timestamp, body), signature, SIGNATURE_HEADER) != self.lsp_node_id:
            raise DecodeError(SIGNATURE_HEADER, "not signed by the LSP's node key")
        if signature in self._seen:
            raise DecodeError(SIGNATURE_HEADER, "replayed notification")
        try:
            parsed = json.loads(body)
        except ValueError:
            raise DecodeError("body", "not JSON") from None
        if not isinstance(parsed, dict) or parsed.get("jsonrpc") != "2.0" or not isinstance(parsed.get("method"), str):
            raise DecodeError("body", "not a JSON-RPC 2.0 notification")
        self._seen.append(signature)
        return parsed
