"""Keeps pyln-proto (an interop peer, not our code) working on current ``cryptography``.

pyln-proto's ``onion.chacha20_stream`` encrypts a buffer into itself with ``update_into``;
cryptography 51 refuses overlapping buffers ("data and buf must not overlap"). The
replacement produces the same ChaCha20 stream through a copy; nothing else of pyln changes.
"""

from __future__ import annotations

import pyln.proto.onion
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms


def chacha20_stream_out_of_place(key: bytes, dest: bytearray | memoryview) -> None:
    encryptor = Cipher(algorithms.ChaCha20(key, bytes(16)), None).encryptor()
    dest[:] = encryptor.update(bytes(dest))


def install() -> None:
    pyln.proto.onion.chacha20_stream = chacha20_stream_out_of_place  # type: ignore[assignment]
