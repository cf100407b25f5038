"""BOLT 8 handshake: Noise_XK_secp256k1_ChaChaPoly_SHA256, as a sans-IO state machine.

Theory of operation: a :class:`Handshake` is created for one role, fed whatever
bytes arrive (whole acts, fragments, or more than one act at once) through
:meth:`Handshake.receive_data`, and returns the bytes to send back. When
:attr:`Handshake.complete` turns true, :meth:`Handshake.transport` hands over a
:class:`~lightspeed.transport.cipher.NoiseTransport` with the session keys and
any bytes that arrived after act three. A bad act raises
:class:`~lightspeed.errors.HandshakeError` naming the act and the reason; the
handshake is then dead and the caller must close the connection without
sending anything further (BOLT 8: "MUST terminate the connection without any
further messages"). Ephemeral keys can be injected for the spec's test vectors;
otherwise they come from ``os.urandom``.

Speed: a handshake is six ECDHs and two ephemeral public keys; everything else
should be noise beside them. So the secp256k1 calls go straight to
libsecp256k1 (coincurve's ``PrivateKey`` computes two public keys on creation,
twice what an ephemeral key needs), the static public key is derived once per
node key, and a received point is parsed once, which is also its validity check.
"""

from __future__ import annotations

import os
from enum import Enum
from functools import lru_cache
from typing import Any

from coincurve._libsecp256k1 import ffi, lib
from coincurve.context import GLOBAL_CONTEXT
from cryptography.exceptions import InvalidTag

from lightspeed.crypto.hashes import sha256
from lightspeed.errors import HandshakeError, UsageError
from lightspeed.transport.cipher import NoiseTransport, aead_decrypt, aead_encrypt, hkdf2

PROTOCOL_NAME = b"Noise_XK_secp256k1_ChaChaPoly_SHA256"
PROLOGUE = b"lightning"
VERSION = 0
ACT_ONE_SIZE = 50
ACT_TWO_SIZE = 50
ACT_THREE_SIZE = 66

_INITIAL_CK = sha256(PROTOCOL_NAME)
_INITIAL_H = sha256(_INITIAL_CK + PROLOGUE)


class Role(Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class _Step(Enum):
    SEND_ACT_ONE = 1
    RECV_ACT_ONE = 2
    RECV_ACT_TWO = 3
    RECV_ACT_THREE = 4
    DONE = 5
    FAILED = 6


_CTX = GLOBAL_CONTEXT.ctx


def _public_key(secret: bytes) -> bytes:
    """The compressed public key of a 32-byte secret (UsageError if it is not a valid key)."""
    point = ffi.new("secp256k1_pubkey *")
    if not lib.secp256k1_ec_pubkey_create(_CTX, point, secret):
        raise UsageError("private key is zero or not below the curve order")
    out, size = ffi.new("unsigned char [33]"), ffi.new("size_t *", 33)
    lib.secp256k1_ec_pubkey_serialize(_CTX, out, size, point, lib.SECP256K1_EC_COMPRESSED)
    return bytes(ffi.buffer(out, 33))


@lru_cache(maxsize=16)
def _static_public_key(secret: bytes) -> bytes:
    """A node key's public key: every handshake of the node uses the same one."""
    return _public_key(secret)


def _parse_point(data: bytes, act: str, what: str) -> Any:
    """Parse a received compressed point once (it is then used for one or two ECDHs)."""
    point = ffi.new("secp256k1_pubkey *")
    if data[0] not in (2, 3):
        raise HandshakeError(act, f"{what} is not a compressed public key")
    if not lib.secp256k1_ec_pubkey_parse(_CTX, point, data, 33):
        raise HandshakeError(act, f"{what} is not a point on secp256k1")
    return point


def _ecdh(secret: bytes, point: Any) -> bytes:
    """BOLT 8 ECDH: SHA256 of the compressed shared point (libsecp256k1's default hash)."""
    out = ffi.new("unsigned char [32]")
    if not lib.secp256k1_ecdh(_CTX, out, point, secret, ffi.NULL, ffi.NULL):
        raise UsageError("private key is zero or not below the curve order")
    return bytes(ffi.buffer(out, 32))


class Handshake:
    """One side of the BOLT 8 handshake (see the module docstring)."""

    def __init__(
        self,
        role: Role,
        local_privkey: bytes,
        remote_pubkey: bytes | None = None,
        ephemeral_privkey: bytes | None = None,
    ) -> None:
        if len(local_privkey) != 32:
            raise UsageError("local_privkey must be 32 bytes")
        self.role = role
        self._static = local_privkey
        self.local_pubkey = _static_public_key(local_privkey)
        self._ephemeral = ephemeral_privkey or os.urandom(32)
        if len(self._ephemeral) != 32:
            raise UsageError("ephemeral_privkey must be 32 bytes")
        self._ephemeral_pub = _public_key(self._ephemeral)
        self._ck = _INITIAL_CK
        self._buffer = bytearray()
        self._temp_k2 = b""
        if role is Role.INITIATOR:
            if remote_pubkey is None or len(remote_pubkey) != 33:
                raise UsageError("the initiator must know the responder's 33-byte static key")
            try:
                self._remote_static = _parse_point(remote_pubkey, "", "remote_pubkey")
            except HandshakeError as exc:
                raise UsageError(exc.reason) from None
            self.remote_pubkey: bytes | None = remote_pubkey
            # BOLT 8: the initiator mixes in the responder's static public key.
            self._h = sha256(_INITIAL_H + remote_pubkey)
            self._step = _Step.SEND_ACT_ONE
        else:
            self.remote_pubkey = None
            self._h = sha256(_INITIAL_H + self.local_pubkey)
            self._step = _Step.RECV_ACT_ONE
        self._transport: NoiseTransport | None = None

    @classmethod
    def initiator(
        cls, local_privkey: bytes, remote_pubkey: bytes, ephemeral_privkey: bytes | None = None
    ) -> Handshake:
        return cls(Role.INITIATOR, local_privkey, remote_pubkey, ephemeral_privkey)

    @classmethod
    def responder(cls, local_privkey: bytes, ephemeral_privkey: bytes | None = None) -> Handshake:
        return cls(Role.RESPONDER, local_privkey, None, ephemeral_privkey)

    @property
    def complete(self) -> bool:
        return self._step is _Step.DONE

    @property
    def bytes_expected(self) -> int:
        """How many more bytes the current act needs (0 when none is awaited)."""
        size = {_Step.RECV_ACT_ONE: ACT_ONE_SIZE, _Step.RECV_ACT_TWO: ACT_TWO_SIZE,
                _Step.RECV_ACT_THREE: ACT_THREE_SIZE}.get(self._step, 0)
        return max(0, size - len(self._buffer))

    def _mix_hash(self, data: bytes) -> None:
        self._h = sha256(self._h + data)

    def start(self) -> bytes:
        """Initiator only: act one, the first 50 bytes on the wire."""
        if self._step is not _Step.SEND_ACT_ONE:
            raise UsageError("start() is for an initiator that has not sent act one")
        e_pub = self._ephemeral_pub
        self._mix_hash(e_pub)
        self._ck, temp_k1 = hkdf2(self._ck, _ecdh(self._ephemeral, self._remote_static))
        c = aead_encrypt(temp_k1, 0, self._h, b"")
        self._mix_hash(c)
        self._step = _Step.RECV_ACT_TWO
        return bytes([VERSION]) + e_pub + c

    def receive_data(self, data: bytes) -> bytes:
        """Feed received bytes; returns what to send (maybe nothing). Raises HandshakeError."""
        if self._step is _Step.FAILED:
            raise UsageError("the handshake already failed; close the connection")
        if self._transport is not None:  # complete: later bytes belong to the session
            self._transport.receive_data(data)
            return b""
        if self._step is _Step.SEND_ACT_ONE:
            raise UsageError("call start() to send act one before receiving")
        self._buffer += data
        if self.bytes_expected:
            return b""
        size = {_Step.RECV_ACT_ONE: ACT_ONE_SIZE, _Step.RECV_ACT_TWO: ACT_TWO_SIZE,
                _Step.RECV_ACT_THREE: ACT_THREE_SIZE}[self._step]
        act, rest = bytes(self._buffer[:size]), bytes(self._buffer[size:])
        self._buffer.clear()
        try:
            if self._step is _Step.RECV_ACT_ONE:
                out = self._receive_act_one(act)
            elif self._step is _Step.RECV_ACT_TWO:
                out = self._receive_act_two(act)
            else:
                out = self._receive_act_three(act)
        except HandshakeError:
            self._step = _Step.FAILED
            raise
        if self._transport is not None:  # that act completed the handshake
            self._transport.receive_data(rest)
        elif rest:
            out += self.receive_data(rest)
        return out

    def receive_eof(self) -> None:
        """The peer closed the connection: an act cut short is an error."""
        if self._step in (_Step.RECV_ACT_ONE, _Step.RECV_ACT_TWO, _Step.RECV_ACT_THREE):
            act = {_Step.RECV_ACT_ONE: "act 1", _Step.RECV_ACT_TWO: "act 2", _Step.RECV_ACT_THREE: "act 3"}[self._step]
            self._step = _Step.FAILED
            raise HandshakeError(act, f"connection closed after {len(self._buffer)} bytes (short read)")

    def transport(self) -> NoiseTransport:
        """The encrypted session, once :attr:`complete`."""
        if self._transport is None:
            raise UsageError("the handshake is not complete")
        return self._transport

    def _check_version(self, act: bytes, name: str) -> None:
        # BOLT 8: if `v` is an unrecognized handshake version, MUST abort the connection attempt.
        if act[0] != VERSION:
            raise HandshakeError(name, f"unknown handshake version {act[0]}")

    def _receive_act_one(self, act: bytes) -> bytes:
        self._check_version(act, "act 1")
        re = act[1:34]
        point = _parse_point(re, "act 1", "ephemeral key")
        self._mix_hash(re)
        self._ck, temp_k1 = hkdf2(self._ck, _ecdh(self._static, point))
        try:
            aead_decrypt(temp_k1, 0, self._h, act[34:])
        except InvalidTag:
            # BOLT 8: the initiator does not know our static key: terminate without a reply.
            raise HandshakeError("act 1", "bad MAC (the initiator does not know our node key)") from None
        self._mix_hash(act[34:])
        # Act two.
        e_pub = self._ephemeral_pub
        self._mix_hash(e_pub)
        self._ck, self._temp_k2 = hkdf2(self._ck, _ecdh(self._ephemeral, point))
        c = aead_encrypt(self._temp_k2, 0, self._h, b"")
        self._mix_hash(c)
        self._step = _Step.RECV_ACT_THREE
        return bytes([VERSION]) + e_pub + c

    def _receive_act_two(self, act: bytes) -> bytes:
        self._check_version(act, "act 2")
        re = act[1:34]
        point = _parse_point(re, "act 2", "ephemeral key")
        self._mix_hash(re)
        self._ck, temp_k2 = hkdf2(self._ck, _ecdh(self._ephemeral, point))
        try:
            aead_decrypt(temp_k2, 0, self._h, act[34:])
        except InvalidTag:
            raise HandshakeError("act 2", "bad MAC") from None
        self._mix_hash(act[34:])
        # Act three.
        c = aead_encrypt(temp_k2, 1, self._h, self.local_pubkey)
        self._mix_hash(c)
        self._ck, temp_k3 = hkdf2(self._ck, _ecdh(self._static, point))
        t = aead_encrypt(temp_k3, 0, self._h, b"")
        sk, rk = hkdf2(self._ck, b"")
        self._transport = NoiseTransport(sk, rk, self._ck)
        self._step = _Step.DONE
        return bytes([VERSION]) + c + t

    def _receive_act_three(self, act: bytes) -> bytes:
        self._check_version(act, "act 3")
        c, t = act[1:50], act[50:]
        try:
            rs = aead_decrypt(self._temp_k2, 1, self._h, c)
        except InvalidTag:
            raise HandshakeError("act 3", "bad MAC on the encrypted static key") from None
        point = _parse_point(rs, "act 3", "initiator static key")
        self._mix_hash(c)
        self._ck, temp_k3 = hkdf2(self._ck, _ecdh(self._ephemeral, point))
        try:
            aead_decrypt(temp_k3, 0, self._h, t)
        except InvalidTag:
            raise HandshakeError("act 3", "bad final MAC") from None
        rk, sk = hkdf2(self._ck, b"")
        self.remote_pubkey = rs
        self._transport = NoiseTransport(sk, rk, self._ck)
        self._step = _Step.DONE
        return b""
