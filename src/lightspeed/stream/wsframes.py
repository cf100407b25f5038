"""RFC 6455 framing without I/O: the little of WebSocket a metered stream needs, at a low cost per frame.

Why not wsproto here: a tick is two frames of about 100 bytes, and on a loaded server the
per-frame cost of a general library (events, state objects, UTF-8 incremental decoders) was
most of a tick's CPU (profiled: uvicorn + wsproto 65-95 µs per echoed message). This codec does
only what RFC 6455 requires of an endpoint without extensions: the opening handshake, masked
frames from clients and unmasked ones from servers, fragmented messages, ping/pong, close, and
a size limit; everything else is refused with the close code the RFC names. Both roles use it:
:mod:`.wsserver` (the seller) and :mod:`.wsclient` (the buyer).

:class:`FrameReader` turns bytes into :data:`Event` tuples; :func:`frame` builds one frame.
A peer's violation raises :class:`WsProtocolError` with the close code to answer with.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
MAX_HANDSHAKE = 16 * 1024  # bytes of request or response head we read before giving up
MAX_MESSAGE = 64 * 1024  # the longest message (all its fragments) either side accepts

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA = (CONT, TEXT, BINARY)
_CONTROL = (CLOSE, PING, PONG)

#: ``(kind, payload)``: ``("text", str)``, ``("binary", bytes)``, ``("ping", bytes)``,
#: ``("pong", bytes)``, ``("close", (code, reason))``.
Event = tuple[str, object]


class WsProtocolError(Exception):
    """The peer broke RFC 6455; ``code`` is the close code to send (1002, 1007, 1009)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code, self.reason = code, reason


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + GUID).digest()).decode("ascii")


def client_key() -> str:
    return base64.b64encode(os.urandom(16)).decode("ascii")


def parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    """The start line and the headers (lower-case names; repeated ones joined by ``,``) of an
    HTTP/1.1 head without its final blank line. ``ValueError`` if it is not one."""
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ValueError(f"header line {line[:40]!r}: expected NAME: VALUE")
        key = name.lower()
        headers[key] = f"{headers[key]},{value.strip()}" if key in headers else value.strip()
    return lines[0], headers


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


def check_upgrade(headers: dict[str, str]) -> str:
    """The client's key if ``headers`` ask for a WebSocket (version 13), else ``ValueError`` naming why."""
    if "websocket" not in _tokens(headers.get("upgrade", "")):
        raise ValueError("Upgrade: expected websocket")
    if "upgrade" not in _tokens(headers.get("connection", "")):
        raise ValueError("Connection: expected Upgrade")
    if headers.get("sec-websocket-version") != "13":
        raise ValueError("Sec-WebSocket-Version: expected 13")
    key = headers.get("sec-websocket-key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except ValueError:
        raise ValueError("Sec-WebSocket-Key: expected 16 bytes in base64") from None
    return key


def _mask(payload: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte key repeated (masking and unmasking are the same): one big-integer
    XOR instead of a Python loop per byte."""
    n = len(payload)
    if not n:
        return payload
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def frame(opcode: int, payload: bytes, mask: bool = False) -> bytes:
    """One final frame; ``mask``: a client's (a fresh random key), else a server's."""
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, bit | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, bit | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, bit | 127, n)
    if mask:
        key = os.urandom(4)
        return head + key + _mask(payload, key)
    return head + payload


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode("utf-8")[:120]


class FrameReader:
    """Bytes in, events out, for one side: ``masked`` is True on a server (clients must mask)."""

    def __init__(self, masked: bool, max_message: int = MAX_MESSAGE) -> None:
        self.masked, self.max_message = masked, max_message
        self._buffer = b""
        self._parts: list[bytes] = []
        self._opcode = 0  # of the fragmented message being collected (0: none)
        self._size = 0

    def feed(self, data: bytes) -> list[Event]:
        """Every complete frame's event in ``data`` (with what was buffered before)."""
        buffer = self._buffer + data if self._buffer else data
        events: list[Event] = []
        pos, end = 0, len(buffer)
        while end - pos >= 2:
            b0, b1 = buffer[pos], buffer[pos + 1]
            if b0 & 0x70:
                raise WsProtocolError(1002, "reserved bits set: no extension was negotiated")
            if bool(b1 & 0x80) is not self.masked:
                raise WsProtocolError(1002, "a client must mask its frames, a server must not")
            n, head = b1 & 0x7F, 2
            if n == 126:
                if end - pos < 4:
                    break
                n, head = int.from_bytes(buffer[pos + 2:pos + 4], "big"), 4
            elif n == 127:
                if end - pos < 10:
                    break
                n, head = int.from_bytes(buffer[pos + 2:pos + 10], "big"), 10
            if n > self.max_message:
                raise WsProtocolError(1009, f"a frame of {n} bytes: at most {self.max_message}")
            key_end = head + (4 if self.masked else 0)
            if end - pos < key_end + n:
                break
            payload = buffer[pos + key_end:pos + key_end + n]
            if self.masked:
                payload = _mask(payload, buffer[pos + head:pos + key_end])
            pos += key_end + n
            event = self._frame(b0 & 0x80 != 0, b0 & 0x0F, payload)
            if event is not None:
                events.append(event)
        self._buffer = buffer[pos:]
        return events

    def _frame(self, fin: bool, opcode: int, payload: bytes) -> Event | None:
        if opcode in _CONTROL:
            if not fin or len(payload) > 125:
                raise WsProtocolError(1002, "a control frame must be final and at most 125 bytes")
            if opcode == PING:
                return ("ping", payload)
            if opcode == PONG:
                return ("pong", payload)
            return ("close", _close_reason(payload))
        if opcode not in _DATA:
            raise WsProtocolError(1002, f"opcode {opcode:#x} is reserved")
        if opcode == CONT:
            if not self._opcode:
                raise WsProtocolError(1002, "a continuation frame without a message to continue")
        elif self._opcode:
            raise WsProtocolError(1002, "a new message before the last one's final fragment")
        if fin and opcode != CONT:  # the common case: a whole message in one frame
            return _message(opcode, payload)
        if opcode != CONT:
            self._opcode = opcode
        self._size += len(payload)
        if self._size > self.max_message:
            raise WsProtocolError(1009, f"a message longer than {self.max_message} bytes")
        self._parts.append(payload)
        if not fin:
            return None
        whole, kind = b"".join(self._parts), self._opcode
        self._parts, self._opcode, self._size = [], 0, 0
        return _message(kind, whole)


def _message(opcode: int, payload: bytes) -> Event:
    if opcode == BINARY:
        return ("binary", payload)
    try:
        return ("text", payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise WsProtocolError(1007, "a text message that is not UTF-8") from None


def _close_reason(payload: bytes) -> tuple[int, str]:
    if not payload:
        return 1005, ""  # no status code was given
    if len(payload) == 1:
        raise WsProtocolError(1002, "a close frame of one byte")
    code = int.from_bytes(payload[:2], "big")
    if code < 1000 or code in (1004, 1005, 1006) or 1015 <= code < 3000 or code >= 5000:
        raise WsProtocolError(1002, f"close code {code} may not be sent")
    try:
        return code, payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise WsProtocolError(1007, "a close reason that is not UTF-8") from None
