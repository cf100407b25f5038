"""BOLT 8 after the handshake: ChaCha20-Poly1305 framing with key rotation (sans-IO).

Each Lightning message travels as ``encrypted 2-byte length + MAC`` then
``encrypted body + MAC``; each direction has its own key, nonce and chaining
key, and rotates the key after 1000 encryptions (every 500 messages).
:class:`NoiseTransport` takes received bytes in any fragmentation and yields
whole messages; it never touches a socket.

Speed: a frame's cost should be the four AEAD calls and little else (the
``transport`` benchmark holds it to 1.3x of them). So each direction keeps one
bound AEAD method per key, nonces come from a table built once, the receive
received bytes are decrypted where they lie (frames that arrive whole are never
copied into a buffer) and a reassembly buffer is consumed by moving an offset,
not by deleting its head on every frame.

Two copies remain on purpose: ``send`` joins the sealed length and body (one
allocation), and the body is sliced out of the received bytes before it is opened.
Measured for a 1 KB message (issue 18), sealing both parts with ``encrypt_into``
into one preallocated ``bytearray`` and opening through ``memoryview`` slices cost
more than those copies (the views are made per frame, the 1 KB copy is a memcpy);
they only pay off near the 64 KB limit, by ~5%.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Callable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from lightspeed.errors import DecodeError, UsageError

MAX_MESSAGE_SIZE = 65535
LENGTH_FRAME_SIZE = 2 + 16
MAC_SIZE = 16
ROTATE_AFTER = 1000

# 32 zero bits then the 64-bit little-endian counter (the Noise convention); BOLT 8 rotates
# the key before the counter reaches 1000, so these are all the nonces a transport uses.
_NONCES = tuple(b"\0\0\0\0" + n.to_bytes(8, "little") for n in range(ROTATE_AFTER))
_from_bytes = int.from_bytes
_LENGTH = struct.Struct(">H").pack  # raises struct.error past 65535: the size check for free
# Compact the receive buffer once this much of its head has been consumed.
_COMPACT_AFTER = 1 << 16

_Seal = Callable[[bytes, bytes, None], bytes]
_Open = Callable[[bytes, bytes | bytearray, None], bytes]


def hkdf2(salt: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """RFC 5869 HKDF-SHA256 with empty info, returning its 64 bytes as two 32-byte keys."""
    prk = hmac.digest(salt, ikm, "sha256")
    t1 = hmac.digest(prk, b"\x01", "sha256")
    t2 = hmac.digest(prk, t1 + b"\x02", "sha256")
    return t1, t2


def _nonce(n: int) -> bytes:
    return _NONCES[n] if n < ROTATE_AFTER else b"\0\0\0\0" + n.to_bytes(8, "little")


def aead_encrypt(key: bytes, n: int, ad: bytes, plaintext: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(_nonce(n), plaintext, ad)


def aead_decrypt(key: bytes, n: int, ad: bytes, ciphertext: bytes) -> bytes:
    """Raises cryptography's InvalidTag on a bad MAC."""
    return ChaCha20Poly1305(key).decrypt(_nonce(n), ciphertext, ad)


class FrameError(DecodeError):
    """A received frame failed (bad MAC, too long); ``messages`` were completed before it."""

    def __init__(self, field: str, reason: str, messages: list[bytes]) -> None:
        super().__init__(field, reason)
        self.messages = messages


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
            self.rotate()

    def rotate(self) -> None:
        # BOLT 8: ck', k' = HKDF(ck, k); reset the nonce; k = k'; ck = ck'.
        self.chaining_key, self.key = hkdf2(self.chaining_key, self.key)
        self.nonce = 0
        self._aead = ChaCha20Poly1305(self.key)

    def encrypt(self, plaintext: bytes) -> bytes:
        out = self._aead.encrypt(_NONCES[self.nonce], plaintext, None)
        self._advance()
        return out

    def decrypt(self, ciphertext: bytes) -> bytes:
        """Raises InvalidTag on a bad MAC (and then this state must not be used again)."""
        out = self._aead.decrypt(_NONCES[self.nonce], ciphertext, None)
        self._advance()
        return out


class NoiseTransport:
    """Encrypts outgoing messages and reassembles incoming ones.

    ``send(message)`` returns the bytes to write (``send_all`` one buffer for
    many); ``receive(data)`` takes what arrived and returns the plaintext
    messages it completed (``receive_data`` then ``next_message()`` or
    iteration do the same in steps). A bad MAC or an oversized length raises
    :class:`FrameError` (a :class:`DecodeError`); the connection is then
    unusable and must be closed.

    Every message uses two nonces (length, body), so a direction's nonce is even
    between messages and the rotation at 1000 always falls after a body.
    """

    __slots__ = ("_body_length", "_buffer", "_failed", "_idle", "_open", "_pos", "_receive", "_rn", "_seal",
                 "_send", "_sn", "max_message_size")

    def __init__(self, send_key: bytes, receive_key: bytes, chaining_key: bytes,
                 max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        self.max_message_size = max_message_size
        self._send = CipherState(send_key, chaining_key)
        self._receive = CipherState(receive_key, chaining_key)
        # The hot path keeps each direction's nonce and bound AEAD method here; the CipherStates
        # hold the keys for the rotation.
        self._sn = self._rn = 0
        self._seal: _Seal = self._send._aead.encrypt
        self._open: _Open = self._receive._aead.decrypt
        # Unread bytes are _buffer[_pos:]: the last received bytes object while whole frames
        # come in one piece, a bytearray accumulating the pieces of a frame otherwise.
        self._buffer: bytes | bytearray = b""
        self._pos = 0
        self._body_length = -1  # the decrypted length of the frame being read, -1 before its header
        self._failed = False
        self._idle = True  # nothing unread, no header pending, not failed: receive()'s fast path

    @property
    def send_key(self) -> bytes:
        return self._send.key

    @property
    def receive_key(self) -> bytes:
        return self._receive.key

    def send(self, message: bytes) -> bytes:
        try:
            length = _LENGTH(len(message))
        except struct.error:
            # BOLT 8: the maximum size of any Lightning message MUST NOT exceed 65535 bytes.
            raise UsageError(f"message of {len(message)} bytes exceeds the 65535-byte limit") from None
        n = self._sn
        seal = self._seal
        frame = seal(_NONCES[n], length, None) + seal(_NONCES[n + 1], message, None)
        if n == ROTATE_AFTER - 2:
            self._sn = 0
            self._send.rotate()
            self._seal = self._send._aead.encrypt
        else:
            self._sn = n + 2
        return frame

    def send_all(self, messages: list[bytes]) -> bytes:
        """The frames of several messages as one buffer, for one write."""
        return b"".join([self.send(message) for message in messages])

    def receive_data(self, data: bytes) -> None:
        if self._failed:
            raise UsageError("the transport failed; close the connection")
        if not data:
            return
        self._idle = False
        buffer = self._buffer
        if self._pos == len(buffer):
            # Nothing unread: frames are read straight out of the received bytes, uncopied.
            self._buffer = data if type(data) is bytes else bytes(data)
            self._pos = 0
        elif isinstance(buffer, bytearray):
            if self._pos >= _COMPACT_AFTER:
                del buffer[:self._pos]
                self._pos = 0
            buffer += data
        else:  # a partial frame is waiting: accumulate from here on
            self._buffer = bytearray(memoryview(buffer)[self._pos:])
            self._buffer += data
            self._pos = 0

    def next_message(self) -> bytes | None:
        """The next complete message, or None until more bytes arrive."""
        messages = self.receive(b"", 1)
        return messages[0] if messages else None

    def receive(self, data: bytes, limit: int = 0) -> list[bytes]:
        """``receive_data(data)``, then the messages now complete (at most ``limit``; 0: all).

        The runtime's path: one call per read. A bad frame raises :class:`FrameError`,
        carrying the messages completed before it.
        """
        if self._idle and type(data) is bytes:
            size = len(data)
            if size >= LENGTH_FRAME_SIZE + MAC_SIZE:
                # The common case, one whole frame per read: no buffer bookkeeping at all.
                rn, decrypt = self._rn, self._open
                try:
                    header = decrypt(_NONCES[rn], data[:LENGTH_FRAME_SIZE], None)
                except InvalidTag:
                    self._fail()
                    raise FrameError("message length", "bad MAC on the encrypted length prefix", []) from None
                length = _from_bytes(header, "big")
                if size == length + LENGTH_FRAME_SIZE + MAC_SIZE and length <= self.max_message_size:
                    try:
                        message = decrypt(_NONCES[rn + 1], data[LENGTH_FRAME_SIZE:], None)
                    except InvalidTag:
                        self._fail()
                        raise FrameError("message body", "bad MAC on the encrypted message", []) from None
                    if rn == ROTATE_AFTER - 2:
                        self._rn = 0
                        self._receive.rotate()
                        self._open = self._receive._aead.decrypt
                    else:
                        self._rn = rn + 2
                    return [message]
                # Longer or shorter than this frame: the general path goes on from its body.
                self._buffer, self._pos, self._body_length = data, LENGTH_FRAME_SIZE, length
                if length > self.max_message_size:
                    self._fail()
                    raise FrameError("message length",
                                     f"{length} bytes exceeds our limit of {self.max_message_size}", [])
            else:
                self._buffer, self._pos = data, 0
        else:
            if self._failed:
                raise UsageError("the transport failed; close the connection")
            if data:
                self.receive_data(data)
        buffer, pos, length, rn, decrypt = self._buffer, self._pos, self._body_length, self._rn, self._open
        size = len(buffer)
        out: list[bytes] = []
        while True:
            if length < 0:
                if size - pos < LENGTH_FRAME_SIZE:
                    break
                try:
                    header = decrypt(_NONCES[rn], buffer[pos:pos + LENGTH_FRAME_SIZE], None)
                except InvalidTag:
                    self._fail()
                    raise FrameError("message length", "bad MAC on the encrypted length prefix", out) from None
                pos += LENGTH_FRAME_SIZE
                length = _from_bytes(header, "big")
                if length > self.max_message_size:
                    # Refuse before buffering: a peer must not make us hold frames we will not accept.
                    self._fail()
                    raise FrameError("message length",
                                     f"{length} bytes exceeds our limit of {self.max_message_size}", out)
            end = pos + length + MAC_SIZE
            if size < end:
                break
            try:
                out.append(decrypt(_NONCES[rn + 1], buffer[pos:end], None))
            except InvalidTag:
                self._fail()
                raise FrameError("message body", "bad MAC on the encrypted message", out) from None
            pos, length = end, -1
            if rn == ROTATE_AFTER - 2:
                rn = 0
                self._receive.rotate()
                decrypt = self._open = self._receive._aead.decrypt
            else:
                rn += 2
            if len(out) == limit:
                break
        self._pos, self._body_length, self._rn = pos, length, rn
        self._idle = pos == size and length < 0
        return out

    def _fail(self) -> None:
        self._failed, self._idle = True, False

    def messages(self) -> Iterator[bytes]:
        """Every complete message buffered so far."""
        while (message := self.next_message()) is not None:
            yield message

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as messages."""
        return len(self._buffer) - self._pos
