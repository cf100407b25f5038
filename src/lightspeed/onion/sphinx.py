"""Sphinx onion packets (BOLT 4): build at the sender, peel one layer at each hop.

Theory of operation: the sender derives one ephemeral key per hop (each the
previous one times ``SHA256(E_i || ss_i)``), an ECDH shared secret with every
hop, and from each secret the ``rho`` (stream) and ``mu`` (HMAC) keys. The
routing info is filled from the last hop backwards: shift right, write the hop's
``bigsize length || payload || next hmac``, XOR with the hop's ``rho`` stream.
The *filler* makes the tail that each hop shifts in match what the sender
authenticated. A hop reverses one step: check the HMAC, XOR a stream twice the
routing-info size, read its payload, pass the rest on.

Everything here is pure: the session key, node keys and associated data are
inputs. The routing info size is a parameter because onion messages use
packets of other sizes; payment onions always use 1300 bytes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from coincurve import PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20

from lightspeed.codec.bigsize import decode_bigsize, encode_bigsize
from lightspeed.crypto.secp256k1 import CURVE_ORDER
from lightspeed.errors import DecodeError, OnionError, UsageError

ROUTING_INFO_SIZE = 1300
HMAC_SIZE = 32
#: version byte + public key + routing info + hmac
PACKET_OVERHEAD = 1 + 33 + HMAC_SIZE
PAYMENT_PACKET_SIZE = PACKET_OVERHEAD + ROUTING_INFO_SIZE
_ZERO_HMAC = bytes(HMAC_SIZE)
_NONCE = bytes(16)  # cryptography's ChaCha20 nonce: 4-byte counter 0 + 12-byte zero nonce


def generate_key(key_type: bytes, secret: bytes) -> bytes:
    """BOLT 4 key generation: HMAC-SHA256 keyed with the key type (``rho``, ``mu``, ``um``, ...)."""
    return hmac.digest(key_type, secret, "sha256")


def generate_stream(key: bytes, length: int) -> bytes:
    """ChaCha20 keystream (a zero-byte stream encrypted with a zero nonce)."""
    return Cipher(ChaCha20(key, _NONCE), mode=None).encryptor().update(bytes(length))


def xor_bytes(data: bytes, stream: bytes) -> bytes:
    """XOR two equal-length byte strings as big integers (no per-byte Python loop)."""
    n = len(data)
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream[:n], "big")).to_bytes(n, "big")


def ecdh(privkey: bytes, pubkey: bytes) -> bytes:
    """BOLT 4 shared secret: SHA256 of the compressed point ``privkey * pubkey``.

    Same result as coincurve's ``PrivateKey.ecdh`` (libsecp256k1's default hash),
    without building a ``PrivateKey``, whose constructor derives the public key
    and costs more than the multiplication itself. Raises ``ValueError`` on a bad
    point or scalar.
    """
    return hashlib.sha256(PublicKey(pubkey).multiply(privkey).format(compressed=True)).digest()


def _multiply_pubkey(pubkey: bytes, scalar: bytes) -> bytes:
    return PublicKey(pubkey).multiply(scalar).format(compressed=True)


def _multiply_privkey(privkey: bytes, scalar: bytes) -> bytes:
    """Scalar product mod n, in integers (coincurve would derive a public key we do not need)."""
    product = int.from_bytes(privkey, "big") * int.from_bytes(scalar, "big") % CURVE_ORDER
    if product == 0:
        raise ValueError("the product is zero")
    return product.to_bytes(32, "big")


def blinding_factor(ephemeral_pubkey: bytes, shared_secret: bytes) -> bytes:
    """BOLT 4: the ephemeral key is blinded by ``SHA256(public_key || shared_secret)``."""
    return hashlib.sha256(ephemeral_pubkey + shared_secret).digest()


@dataclass(frozen=True)
class OnionPacket:
    """An ``onion_packet`` (or ``onion_message_packet``): the routing info size is its own."""

    version: int
    public_key: bytes
    hop_payloads: bytes
    hmac: bytes

    def to_bytes(self) -> bytes:
        return bytes([self.version]) + self.public_key + self.hop_payloads + self.hmac

    @classmethod
    def from_bytes(cls, data: bytes, routing_info_size: int | None = ROUTING_INFO_SIZE) -> OnionPacket:
        """Parse a packet; ``routing_info_size=None`` accepts any size (onion messages)."""
        if routing_info_size is not None and len(data) != PACKET_OVERHEAD + routing_info_size:
            raise OnionError("onion_packet", f"{len(data)} bytes, expected {PACKET_OVERHEAD + routing_info_size}")
        if len(data) < PACKET_OVERHEAD:
            raise OnionError("onion_packet", f"{len(data)} bytes is shorter than the {PACKET_OVERHEAD}-byte header")
        # BOLT #4: if `version` is not 0: MUST abort processing the packet and fail.
        if data[0] != 0:
            raise OnionError("version", f"unknown onion version {data[0]}")
        public_key = data[1:34]
        # BOLT #4: if `public_key` is not a valid pubkey: MUST abort processing the packet and fail.
        if public_key[0] not in (2, 3):
            raise OnionError("public_key", "not a compressed point")
        try:
            PublicKey(public_key)
        except ValueError:
            raise OnionError("public_key", "not a point on the curve") from None
        return cls(0, public_key, data[34:-HMAC_SIZE], data[-HMAC_SIZE:])


@dataclass(frozen=True)
class HopKeys:
    """What the sender derives for one hop (kept to attribute failures later)."""

    ephemeral_pubkey: bytes
    shared_secret: bytes


def derive_hop_keys(session_key: bytes, hop_pubkeys: Sequence[bytes]) -> list[HopKeys]:
    """The ephemeral key and shared secret of every hop, in route order."""
    keys: list[HopKeys] = []
    ephemeral = int.from_bytes(session_key, "big")
    if len(session_key) != 32 or not 0 < ephemeral < CURVE_ORDER:
        raise UsageError("session_key is not a valid secp256k1 private key")
    for index, hop_pubkey in enumerate(hop_pubkeys):
        secret_bytes = ephemeral.to_bytes(32, "big")
        # E_i from e_i uses libsecp256k1's generator tables: cheaper than tweaking E_{i-1}.
        ephemeral_pub = PublicKey.from_secret(secret_bytes).format(compressed=True)
        try:
            secret = ecdh(secret_bytes, hop_pubkey)
        except ValueError:
            raise UsageError(f"hop {index} public key is invalid") from None
        keys.append(HopKeys(ephemeral_pub, secret))
        # e_{i+1} = e_i * SHA256(E_i || ss_i)
        ephemeral = ephemeral * int.from_bytes(blinding_factor(ephemeral_pub, secret), "big") % CURVE_ORDER
    return keys


def _frame(payload: bytes) -> bytes:
    return encode_bigsize(len(payload)) + payload


def generate_filler(streams: Sequence[bytes], frame_sizes: Sequence[int]) -> bytes:
    """BOLT 4 filler: the bytes hops 0..n-2 shift in, as the last hop will see them.

    ``streams[i]`` is hop i's ``rho`` stream, at least routing-info size plus its
    frame long. Each hop's own frame size counts (pyln-proto uses the next hop's).
    """
    filler = b""
    for stream, size in zip(streams[:-1], frame_sizes[:-1], strict=True):
        filler += bytes(size)
        filler = xor_bytes(filler, stream[len(stream) - len(filler):])
    return filler


@dataclass(frozen=True)
class BuiltOnion:
    """A packet and the per-hop shared secrets the sender keeps to read failures."""

    packet: OnionPacket
    shared_secrets: tuple[bytes, ...]


def build_onion(
    session_key: bytes,
    hop_pubkeys: Sequence[bytes],
    hop_payloads: Sequence[bytes],
    associated_data: bytes,
    routing_info_size: int = ROUTING_INFO_SIZE,
) -> BuiltOnion:
    """Build an onion for ``hop_pubkeys`` carrying ``hop_payloads`` (TLV bytes, no length prefix).

    The bound is the total size (each frame is length + payload + 32-byte hmac),
    not the hop count. ``associated_data`` is the payment hash for payments and
    empty for onion messages.
    """
    if len(hop_pubkeys) != len(hop_payloads) or not hop_pubkeys:
        raise UsageError("need one payload per hop and at least one hop")
    frames = [_frame(p) for p in hop_payloads]
    frame_sizes = [len(f) + HMAC_SIZE for f in frames]
    if sum(frame_sizes) > routing_info_size:
        raise UsageError(f"hop payloads need {sum(frame_sizes)} bytes, the packet has {routing_info_size}")
    keys = derive_hop_keys(session_key, hop_pubkeys)
    # One stream per hop serves both the filler (which needs routing size + frame) and the layer.
    streams = [generate_stream(generate_key(b"rho", k.shared_secret), routing_info_size + size)
               for k, size in zip(keys, frame_sizes, strict=True)]
    filler = generate_filler(streams, frame_sizes)
    # BOLT #4: the routing info starts as pseudo-random bytes from the `pad` key.
    routing = generate_stream(generate_key(b"pad", session_key), routing_info_size)
    next_hmac = _ZERO_HMAC
    for index in range(len(keys) - 1, -1, -1):
        shifted = frames[index] + next_hmac + routing[: routing_info_size - frame_sizes[index]]
        routing = xor_bytes(shifted, streams[index])
        if index == len(keys) - 1 and filler:
            routing = routing[: routing_info_size - len(filler)] + filler
        mu = generate_key(b"mu", keys[index].shared_secret)
        next_hmac = hmac.digest(mu, routing + associated_data, "sha256")
    packet = OnionPacket(0, keys[0].ephemeral_pubkey, routing, next_hmac)
    return BuiltOnion(packet, tuple(k.shared_secret for k in keys))


@dataclass(frozen=True)
class PeeledOnion:
    """One layer removed: this hop's payload, and the packet for the next hop (``None`` if final)."""

    payload: bytes
    next_packet: OnionPacket | None
    shared_secret: bytes

    @property
    def is_final(self) -> bool:
        return self.next_packet is None


def blinded_node_privkey(node_privkey: bytes, path_key: bytes) -> bytes:
    """BOLT 4 route blinding: ``b_i = HMAC256("blinded_node_id", ECDH(path_key, k_i)) * k_i``."""
    try:
        blinding_ss = ecdh(node_privkey, path_key)
        return _multiply_privkey(node_privkey, generate_key(b"blinded_node_id", blinding_ss))
    except ValueError:
        raise OnionError("path_key", "not a valid point") from None


def peel_onion(
    packet: OnionPacket,
    node_privkey: bytes,
    associated_data: bytes,
    path_key: bytes | None = None,
    *,
    min_payload_length: int = 2,
) -> PeeledOnion:
    """Remove this hop's layer. Raises :class:`OnionError` on any failure the spec lists.

    ``path_key`` is the ``update_add_htlc``/``onion_message`` path key when the
    hop sits inside a blinded path. Onion messages pass ``min_payload_length=0``.
    """
    key = node_privkey if path_key is None else blinded_node_privkey(node_privkey, path_key)
    try:
        shared_secret = ecdh(key, packet.public_key)
    except ValueError:
        raise OnionError("public_key", "not a valid point") from None
    mu = generate_key(b"mu", shared_secret)
    expected = hmac.digest(mu, packet.hop_payloads + associated_data, "sha256")
    # BOLT #4: MUST use a constant time comparison of the computed HMAC and `hmac`.
    # If the computed HMAC and `hmac` differ: MUST abort processing the packet and fail.
    if not hmac.compare_digest(expected, packet.hmac):
        raise OnionError("hmac", "onion HMAC does not match")
    size = len(packet.hop_payloads)
    # BOLT #4: Derive `bytestream` of twice the length of `hop_payloads` using `rho`.
    # (the second half XORs zeros, so it is the stream itself)
    stream = generate_stream(generate_key(b"rho", shared_secret), 2 * size)
    unwrapped = xor_bytes(packet.hop_payloads, stream) + stream[size:]
    try:
        length, offset = decode_bigsize(unwrapped, 0, "payload length")
    except DecodeError as exc:
        raise OnionError("payload length", exc.reason) from None
    # BOLT #4: If the `payload_length` is less than two: MUST abort processing the packet and fail.
    if length < min_payload_length:
        raise OnionError("payload length", f"{length} is below the minimum {min_payload_length}")
    # BOLT #4: If there are fewer than `payload_length` bytes remaining ... fewer than 32 bytes
    # remaining ... or `unwrapped_payloads` is smaller than `hop_payloads`: MUST abort.
    if offset + length + HMAC_SIZE > size:
        raise OnionError("payload length", f"{length} bytes do not fit the packet")
    payload = unwrapped[offset: offset + length]
    next_hmac = unwrapped[offset + length: offset + length + HMAC_SIZE]
    if next_hmac == _ZERO_HMAC:
        return PeeledOnion(payload, None, shared_secret)
    rest = unwrapped[offset + length + HMAC_SIZE:]
    next_public_key = _multiply_pubkey(packet.public_key, blinding_factor(packet.public_key, shared_secret))
    return PeeledOnion(payload, OnionPacket(0, next_public_key, rest[:size], next_hmac), shared_secret)
