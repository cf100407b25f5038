"""Route blinding (BOLT 4): blinded paths, ``encrypted_data_tlv`` and unblinding at a hop.

The path's creator walks a chain of ephemeral *path keys* ``E_i`` (each the last
times ``SHA256(E_i || ss_i)``), shares ``ss_i`` with every node, hides node ``N_i``
as ``HMAC256("blinded_node_id", ss_i) * N_i`` and seals that node's instructions
with ChaCha20-Poly1305 under ``rho_i``. A hop handed ``E_i`` repeats the ECDH,
opens its instructions and derives ``E_{i+1}`` (unless told an override).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from coincurve import PrivateKey, PublicKey
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from lightspeed.codec.tlv import decode_tlv_stream, decode_tu, encode_tlv_stream, encode_tu
from lightspeed.errors import DecodeError, OnionError, UsageError
from lightspeed.onion.payload import check_point
from lightspeed.onion.sphinx import ecdh, generate_key

PADDING = 1
SHORT_CHANNEL_ID = 2
NEXT_NODE_ID = 4
PATH_ID = 6
NEXT_PATH_KEY_OVERRIDE = 8
PAYMENT_RELAY = 10
PAYMENT_CONSTRAINTS = 12
ALLOWED_FEATURES = 14
_KNOWN = frozenset({PADDING, SHORT_CHANNEL_ID, NEXT_NODE_ID, PATH_ID, NEXT_PATH_KEY_OVERRIDE, PAYMENT_RELAY,
                    PAYMENT_CONSTRAINTS, ALLOWED_FEATURES})
_NONCE = bytes(12)


@dataclass(frozen=True)
class PaymentRelay:
    """How a blinded hop must forward: its delta and fees, chosen by the recipient."""

    cltv_expiry_delta: int
    fee_proportional_millionths: int
    fee_base_msat: int

    def amount_to_forward_msat(self, incoming_msat: int) -> int:
        """BOLT #4: ``((amount_msat - fee_base_msat) * 1000000 + 1000000 + fee_proportional_millionths - 1)
        / (1000000 + fee_proportional_millionths)`` (integer division)."""
        return ((incoming_msat - self.fee_base_msat) * 1_000_000 + 1_000_000 + self.fee_proportional_millionths
                - 1) // (1_000_000 + self.fee_proportional_millionths)


@dataclass(frozen=True)
class BlindedPayInfo:
    """The aggregate fees and delta a recipient tells the sender for a blinded route."""

    fee_base_msat: int
    fee_proportional_millionths: int
    cltv_expiry_delta: int

    def fee_msat(self, amount_msat: int) -> int:
        return self.fee_base_msat + amount_msat * self.fee_proportional_millionths // 1_000_000


def aggregate_payment_relay(relays: Sequence[PaymentRelay], min_final_cltv_expiry_delta: int) -> BlindedPayInfo:
    """BOLT #4: the creator MUST compute the total fees and CLTV delta of the route as follows
    (rounding up at each step, from the hop nearest the recipient outwards)."""
    base = 0
    proportional = 0
    for relay in reversed(relays):
        fee_base, fee_prop = relay.fee_base_msat, relay.fee_proportional_millionths
        base = (fee_base * 1_000_000 + base * (1_000_000 + fee_prop) + 1_000_000 - 1) // 1_000_000
        proportional = ((proportional + fee_prop) * 1_000_000 + proportional * fee_prop + 1_000_000 - 1) // 1_000_000
    delta = sum(r.cltv_expiry_delta for r in relays) + min_final_cltv_expiry_delta
    return BlindedPayInfo(base, proportional, delta)


@dataclass(frozen=True)
class PaymentConstraints:
    max_cltv_expiry: int
    htlc_minimum_msat: int


@dataclass(frozen=True)
class EncryptedDataTlv:
    """The instructions a blinded-path creator seals for one hop."""

    padding: bytes | None = None
    short_channel_id: int | None = None
    next_node_id: bytes | None = None
    path_id: bytes | None = None
    next_path_key_override: bytes | None = None
    payment_relay: PaymentRelay | None = None
    payment_constraints: PaymentConstraints | None = None
    allowed_features: bytes | None = None
    unknown_records: tuple[tuple[int, bytes], ...] = ()

    def to_bytes(self) -> bytes:
        records = list(self.unknown_records)
        if self.padding is not None:
            records.append((PADDING, self.padding))
        if self.short_channel_id is not None:
            records.append((SHORT_CHANNEL_ID, self.short_channel_id.to_bytes(8, "big")))
        if self.next_node_id is not None:
            records.append((NEXT_NODE_ID, self.next_node_id))
        if self.path_id is not None:
            records.append((PATH_ID, self.path_id))
        if self.next_path_key_override is not None:
            records.append((NEXT_PATH_KEY_OVERRIDE, self.next_path_key_override))
        if self.payment_relay is not None:
            relay = self.payment_relay
            records.append((PAYMENT_RELAY, relay.cltv_expiry_delta.to_bytes(2, "big")
                            + relay.fee_proportional_millionths.to_bytes(4, "big") + encode_tu(relay.fee_base_msat)))
        if self.payment_constraints is not None:
            c = self.payment_constraints
            records.append((PAYMENT_CONSTRAINTS, c.max_cltv_expiry.to_bytes(4, "big") + encode_tu(c.htlc_minimum_msat)))
        if self.allowed_features is not None:
            records.append((ALLOWED_FEATURES, self.allowed_features))
        try:
            return encode_tlv_stream(records)
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    @classmethod
    def from_bytes(cls, data: bytes) -> EncryptedDataTlv:
        """BOLT #4: MUST return an error if it ... contains unknown even fields."""
        records = decode_tlv_stream(data, _KNOWN, field="encrypted_data_tlv")
        values: dict[str, object] = {}
        for tlv_type, value in records.items():
            if tlv_type == PADDING:
                values["padding"] = value
            elif tlv_type == SHORT_CHANNEL_ID:
                if len(value) != 8:
                    raise OnionError("short_channel_id", f"{len(value)} bytes, expected 8")
                values["short_channel_id"] = int.from_bytes(value, "big")
            elif tlv_type == NEXT_NODE_ID:
                values["next_node_id"] = check_point(value, "next_node_id")
            elif tlv_type == PATH_ID:
                values["path_id"] = value
            elif tlv_type == NEXT_PATH_KEY_OVERRIDE:
                values["next_path_key_override"] = check_point(value, "next_path_key_override")
            elif tlv_type == PAYMENT_RELAY:
                if len(value) < 6:
                    raise OnionError("payment_relay", "shorter than 6 bytes")
                values["payment_relay"] = PaymentRelay(int.from_bytes(value[:2], "big"),
                                                       int.from_bytes(value[2:6], "big"),
                                                       decode_tu(value[6:], 4, "payment_relay fee_base_msat"))
            elif tlv_type == PAYMENT_CONSTRAINTS:
                if len(value) < 4:
                    raise OnionError("payment_constraints", "shorter than 4 bytes")
                values["payment_constraints"] = PaymentConstraints(
                    int.from_bytes(value[:4], "big"), decode_tu(value[4:], 8, "payment_constraints htlc_minimum_msat"))
            elif tlv_type == ALLOWED_FEATURES:
                values["allowed_features"] = value
        unknown = tuple((t, v) for t, v in records.items() if t not in _KNOWN)
        return cls(unknown_records=unknown, **values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class BlindedHop:
    blinded_node_id: bytes
    encrypted_recipient_data: bytes


@dataclass(frozen=True)
class BlindedPath:
    """A ``blinded_path``: ``first_node_id`` is a 33-byte node id or a 9-byte ``sciddir``."""

    first_node_id: bytes
    first_path_key: bytes
    hops: tuple[BlindedHop, ...]

    def to_bytes(self) -> bytes:
        if not 1 <= len(self.hops) <= 255:
            raise UsageError("a blinded path has 1 to 255 hops")
        out = bytearray(self.first_node_id + self.first_path_key + bytes([len(self.hops)]))
        for hop in self.hops:
            if len(hop.encrypted_recipient_data) > 0xFFFF:
                raise UsageError("encrypted_recipient_data longer than 65535 bytes")
            out += hop.blinded_node_id + len(hop.encrypted_recipient_data).to_bytes(2, "big")
            out += hop.encrypted_recipient_data
        return bytes(out)

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> tuple[BlindedPath, int]:
        """Read one path starting at ``offset``; return it and the offset after it."""

        def take(n: int, field: str) -> bytes:
            nonlocal offset
            if offset + n > len(data):
                raise OnionError(field, "truncated blinded_path")
            chunk = data[offset: offset + n]
            offset += n
            return chunk

        first = take(1, "first_node_id")
        # sciddir_or_pubkey: 0 or 1 then a short_channel_id, else a compressed point.
        first += take(8 if first[0] in (0, 1) else 32, "first_node_id")
        if len(first) == 33:
            check_point(first, "first_node_id")
        path_key = check_point(take(33, "first_path_key"), "first_path_key")
        num_hops = take(1, "num_hops")[0]
        if num_hops == 0:
            raise OnionError("num_hops", "a blinded path needs at least one hop")
        hops = []
        for _ in range(num_hops):
            node = check_point(take(33, "blinded_node_id"), "blinded_node_id")
            length = int.from_bytes(take(2, "enclen"), "big")
            hops.append(BlindedHop(node, take(length, "encrypted_recipient_data")))
        return cls(first, path_key, tuple(hops)), offset

    @classmethod
    def from_bytes(cls, data: bytes) -> BlindedPath:
        path, end = cls.parse(data)
        if end != len(data):
            raise OnionError("blinded_path", f"{len(data) - end} trailing bytes")
        return path


def encrypt_recipient_data(rho: bytes, plaintext: bytes) -> bytes:
    return ChaCha20Poly1305(rho).encrypt(_NONCE, plaintext, None)


def next_path_key(path_key: bytes, shared_secret: bytes) -> bytes:
    """``E_{i+1} = SHA256(E_i || ss_i) * E_i``."""
    tweak = hashlib.sha256(path_key + shared_secret).digest()
    return PublicKey(path_key).multiply(tweak).format(compressed=True)


@dataclass(frozen=True)
class BlindedHopSecrets:
    """Everything the creator derives for one hop (the vectors check each)."""

    path_key: bytes
    shared_secret: bytes
    rho: bytes
    blinded_node_id: bytes
    encrypted_recipient_data: bytes
    next_path_privkey: bytes


def blind_hop(path_privkey: bytes, node_id: bytes, encrypted_data_tlv: bytes) -> BlindedHopSecrets:
    """One step of the creator's chain: blind ``node_id`` and seal its instructions."""
    try:
        e = PrivateKey(path_privkey)
        point = e.public_key.format(compressed=True)
        ss = e.ecdh(node_id)
        blinded = PublicKey(node_id).multiply(generate_key(b"blinded_node_id", ss)).format(compressed=True)
    except ValueError:
        raise UsageError("invalid path private key or node id") from None
    rho = generate_key(b"rho", ss)
    # e_{i+1} = SHA256(E_i || ss_i) * e_i
    next_priv = e.multiply(hashlib.sha256(point + ss).digest()).secret
    return BlindedHopSecrets(point, ss, rho, blinded, encrypt_recipient_data(rho, encrypted_data_tlv), next_priv)


def create_blinded_path(
    session_key: bytes, node_ids: Sequence[bytes], payloads: Sequence[EncryptedDataTlv | bytes],
    first_node_id: bytes | None = None,
) -> BlindedPath:
    """Blind a route ``node_ids`` (introduction node first, recipient last).

    ``session_key`` is ``e_0`` (from a CSPRNG in real use). ``first_node_id``
    defaults to the introduction node's id; pass a ``sciddir`` to use that instead.
    """
    if len(node_ids) != len(payloads) or not node_ids:
        raise UsageError("need one encrypted_data_tlv per node and at least one node")
    key = session_key
    hops = []
    first_path_key = b""
    for node_id, payload in zip(node_ids, payloads, strict=True):
        raw = payload.to_bytes() if isinstance(payload, EncryptedDataTlv) else payload
        secrets = blind_hop(key, node_id, raw)
        first_path_key = first_path_key or secrets.path_key
        hops.append(BlindedHop(secrets.blinded_node_id, secrets.encrypted_recipient_data))
        key = secrets.next_path_privkey
    return BlindedPath(first_node_id or node_ids[0], first_path_key, tuple(hops))


@dataclass(frozen=True)
class UnblindedHop:
    """What a hop learns from its ``encrypted_recipient_data``."""

    data: EncryptedDataTlv
    plaintext: bytes
    shared_secret: bytes
    next_path_key: bytes


def unblind_hop(node_privkey: bytes, path_key: bytes, encrypted_recipient_data: bytes) -> UnblindedHop:
    """Open this hop's instructions and derive the next ``path_key`` (override first)."""
    check_point(path_key, "path_key")
    ss = ecdh(node_privkey, path_key)
    try:
        # BOLT #4: MUST decrypt the `encrypted_recipient_data` field using rho_i as a key using
        # ChaCha20-Poly1305 and an all-zero nonce key.
        plaintext = ChaCha20Poly1305(generate_key(b"rho", ss)).decrypt(_NONCE, encrypted_recipient_data, None)
    except InvalidTag:
        raise OnionError("encrypted_recipient_data", "does not decrypt with this path_key") from None
    try:
        data = EncryptedDataTlv.from_bytes(plaintext)
    except DecodeError as exc:
        raise OnionError(f"encrypted_data_tlv {exc.field}", exc.reason) from None
    # BOLT #4: If the `encrypted_data_tlv` contains a `next_path_key_override`: MUST use it as
    # the next `path_key`. Otherwise: MUST use E_{i+1} = SHA256(E_i || ss_i) * E_i.
    following = data.next_path_key_override or next_path_key(path_key, ss)
    return UnblindedHop(data, plaintext, ss, following)


def check_allowed_features(data: EncryptedDataTlv, used_features: bytes = b"") -> None:
    """BOLT #4: MUST return an error if `allowed_features` contains an unknown feature bit (even if
    odd) or the payment uses a feature not included. No feature is defined yet, so any bit set
    fails, and a missing field means the empty set."""
    allowed = int.from_bytes(data.allowed_features or b"", "big")
    if allowed:
        raise OnionError("allowed_features", f"unknown feature bit {allowed.bit_length() - 1}")
    if int.from_bytes(used_features, "big"):
        raise OnionError("allowed_features", "the payment uses a feature the path does not allow")
