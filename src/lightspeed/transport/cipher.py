"""BOLT 8 after the handshake: ChaCha20-Poly1305 framing with key rotation (sans-IO).

Each Lightning message travels as ``encrypted 2-byte length + MAC`` then
``encrypted body + MAC``; each direction has its own key, nonce and chaining
key, and rotates the key after 1000 encryptions (every 500 messages).
:class:`NoiseTransport` takes received bytes in any fragmentation and yields
whole messages; it never touches a socket.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from lightspeed.errors import DecodeError, UsageError

MAX_MESSAGE_SIZE = 65535
LENGTH_FRAME_SIZE = 2 + 16
MAC_SIZE = 16
ROTATE_AFTER = 1000


def hkdf2(salt: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """RFC 5869 HKDF-SHA256 with empty info, returning its 64 bytes as two 32-byte keys."""
    prk = hmac.digest(salt, ikm, "sha256")
    t1 = hmac.digest(prk, b"\x01", "sha256")
    t2 = hmac.digest(prk, t1 + b"\x02", "sha256")
    return t1, t2


def _nonce(n: int) -> bytes:
    """32 zero bits then the 64-bit little-endian counter (the Noise convention)."""
    return b"\0\0\0\0" + n.to_bytes(8, "little")


def aead_encrypt(key: bytes, n: int, ad: bytes, plaintext: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(_nonce(n), plaintext, ad)


def aead_decrypt(key: bytes, n: int, ad: bytes, ciphertext: bytes) -> bytes:
    """Raises cryptography's InvalidTag on a bad MAC."""
    return ChaCha20Poly1305(key).decrypt(_nonce(n), ciphertext, ad)


class CipherState:
    """One direction's key, nonce and chaining key, rotating every 1000 uses."""

    __slots__ = ("_aead", "chaining_key", "key", "nonce")

    def __init__(self, key: bytes, chaining_key: bytes) -> None:
        self.key = key
        self.chaining_key = chaining_key
        self.nonce = 0
        self._aead = ChaCha20Poly1305(key)

    def _advance(self) -> None:
        self.nonce += 1
        if self.nonce == ROTATE_AFTER:
            # BOLT 8: ck', k' = HKDF(ck, k); reset the nonce; k = k'; ck = ck'.
            self.chaining_key, self.key = hkdf2(self.chaining_key, self.key)
            self.nonce = 0
            self._aead = ChaCha20Poly1305(self.key)

    def encrypt(self, plaintext: bytes) -> bytes:
        out = self._aead.encrypt(b"\0\0\0\0" + self.nonce.to_bytes(8, "little"), plaintext, None)
        self._advance()
        return out

    def decrypt(self, ciphertext: bytes) -> bytes:
        """Raises InvalidTag on a bad MAC (and then this state must not be used again)."""
        out = self._aead.decrypt(b"\0\0\0\0" + self.nonce.to_bytes(8, "little"), ciphertext, None)
        self._advance()
        return out


class NoiseTransport:
    """Encrypts outgoing messages and reassembles incoming ones.

    ``send(message)`` returns the bytes to write; ``receive_data(data)`` buffers
    what arrived and ``next_message()`` (or iteration) yields complete
    plaintext messages. A bad MAC raises :class:`DecodeError`; the connection is
    then unusable and must be closed.
    """

    def __init__(self, send_key: bytes, receive_key: bytes, chaining_key: bytes,
                 max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        self.max_message_size = max_message_size
        self._send = CipherState(send_key, chaining_key)
        self._receive = CipherState(receive_key, chaining_key)
        self._buffer = bytearray()
        self._body_length: int | None = None
        self._failed = False

    @property
    def send_key(self) -> bytes:
        return self._send.key

    @property
    def receive_key(self) -> bytes:
        return self._receive.key

    def send(self, message: bytes) -> bytes:
        # BOLT 8: the maximum size of any Lightning message MUST NOT exceed 65535 bytes.
        if len(message) > MAX_MESSAGE_SIZE:
            raise UsageError(f"message of {len(message)} bytes exceeds the 65535-byte limit")
        return self._send.encrypt(len(message).to_bytes(2, "big")) + self._send.encrypt(message)

    def receive_data(self, data: bytes) -> None:
        if self._failed:
            raise UsageError("the transport failed; close the connection")
        self._buffer += data

    def next_message(self) -> bytes | None:
        """The next complete message, or None until more bytes arrive."""
        if self._failed:
            raise UsageError("the transport failed; close the connection")
        if self._body_length is None:
            if len(self._buffer) < LENGTH_FRAME_SIZE:
                return None
            try:
                header = self._receive.decrypt(bytes(self._buffer[:LENGTH_FRAME_SIZE]))
            except InvalidTag:
                self._failed = True
                raise DecodeError("message length", "bad MAC on the encrypted length prefix") from None
            del self._buffer[:LENGTH_FRAME_SIZE]
            self._body_length = int.from_bytes(header, "big")
            if self._body_length > self.max_message_size:
                # Refuse before buffering: a peer must not make us hold frames we will not accept.
                self._failed = True
                raise DecodeError("message length", f"{self._body_length} bytes exceeds our limit of {self.max_message_size}")
        size = self._body_length + MAC_SIZE
        if len(self._buffer) < size:
            return None
        try:
            message = self._receive.decrypt(bytes(self._buffer[:size]))
        except InvalidTag:
            self._failed = True
            raise DecodeError("message body", "bad MAC on the encrypted message") from None
        del self._buffer[:size]
        self._body_length = None
        return message

    def messages(self) -> Iterator[bytes]:
        """Every complete message buffered so far."""
        while (message := self.next_message()) is not None:
            yield message

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as messages."""
        return len(self._buffer)
