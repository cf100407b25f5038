"""Our onion messages around the draft flow (bolts#1149), where the draft leaves the how to us (sans-IO).

The draft's own messages are ``held_htlc_available`` (72), ``release_held_htlc`` (74) and
``static_invoice`` (70) (:mod:`.messages`). Two hand-offs it does not fix on the wire:

* :class:`HoldHtlcPaths` (A -> LSP_a, before the HTLC): the static invoice's
  ``held_htlc_available_paths`` for a payment hash, so that the LSP, on receiving the HTLC with
  ``hold_htlc`` set, knows where to send ``held_htlc_available``. Signed by the client, like
  LightningRod's ``hold_htlcs``: onion messages are anonymous, and only HTLCs arriving from that
  client's channel are held under it.
* :class:`ServeStaticInvoice` (B -> LSP_b): "serve this static invoice for requests arriving over
  the offer path with this ``slot`` as its ``path_id``"; the invoice's own signature (by B's node
  key) authenticates it. The LSP answers ``static_invoice_persisted`` (empty) once it is durable.

All our types are odd (a node that does not know them ignores the message, BOLT 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from lightspeed.codec.tlv import decode_tlv_stream, encode_tlv_stream
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.secp256k1 import (
    is_valid_pubkey,
    pubkey_from_privkey,
    sign_compact,
    verify_compact,
)
from lightspeed.errors import DecodeError, UsageError
from lightspeed.onion.blinding import BlindedPath

HOLD_HTLC_PATHS = 65547
SERVE_STATIC_INVOICE = 65549
STATIC_INVOICE_PERSISTED = 65551

#: The most held-HTLC paths one request may carry (a static invoice names a few; bounds our parsing).
MAX_HELD_PATHS = 4
SLOT_SIZE = 32

_PAYMENT_HASH, _PATHS, _CLIENT_ID, _SIGNATURE = 0, 2, 6, 8
_SLOT, _INVOICE = 0, 2


def parse_paths(value: bytes, field: str) -> tuple[BlindedPath, ...]:
    """Concatenated blinded paths (as ``held_htlc_available_paths``): 1 to :data:`MAX_HELD_PATHS`."""
    paths: list[BlindedPath] = []
    offset = 0
    while offset < len(value):
        if len(paths) == MAX_HELD_PATHS:
            raise DecodeError(field, f"more than {MAX_HELD_PATHS} paths")
        path, offset = BlindedPath.parse(value, offset)
        paths.append(path)
    if not paths:
        raise DecodeError(field, "no blinded path")
    return tuple(paths)


@dataclass(frozen=True)
class HoldHtlcPaths:
    """A -> LSP_a: "my HTLC with ``payment_hash`` carries ``hold_htlc``; wake its payee over these paths"."""

    payment_hash: bytes
    paths: tuple[BlindedPath, ...]
    client_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.payment_hash) != 32:
            raise UsageError("payment_hash is 32 bytes")
        if not 1 <= len(self.paths) <= MAX_HELD_PATHS:
            raise UsageError(f"1 to {MAX_HELD_PATHS} held_htlc_available paths, not {len(self.paths)}")
        if len(self.client_id) != 33 or len(self.signature) != 64:
            raise UsageError("client_id is 33 bytes and signature 64")

    def _unsigned(self) -> list[tuple[int, bytes]]:
        return [(_PAYMENT_HASH, self.payment_hash), (_PATHS, b"".join(p.to_bytes() for p in self.paths)),
                (_CLIENT_ID, self.client_id)]

    def sighash(self) -> bytes:
        return sha256(b"lightspeed/hold_htlc_paths" + encode_tlv_stream(self._unsigned()))

    @classmethod
    def sign(cls, payment_hash: bytes, paths: Sequence[BlindedPath], client_privkey: bytes) -> HoldHtlcPaths:
        unsigned = cls(payment_hash, tuple(paths), pubkey_from_privkey(client_privkey), bytes(64))
        return replace(unsigned, signature=sign_compact(client_privkey, unsigned.sighash()))

    def to_bytes(self) -> bytes:
        return encode_tlv_stream([*self._unsigned(), (_SIGNATURE, self.signature)])

    @classmethod
    def from_bytes(cls, data: bytes) -> HoldHtlcPaths:
        records = decode_tlv_stream(data, {_PAYMENT_HASH, _PATHS, _CLIENT_ID, _SIGNATURE}, field="hold_htlc_paths")
        for tlv_type, name, size in ((_PAYMENT_HASH, "payment_hash", 32), (_CLIENT_ID, "client_id", 33),
                                     (_SIGNATURE, "signature", 64)):
            if tlv_type not in records:
                raise DecodeError(f"hold_htlc_paths {name}", "missing")
            if len(records[tlv_type]) != size:
                raise DecodeError(f"hold_htlc_paths {name}", f"{len(records[tlv_type])} bytes, expected {size}")
        if _PATHS not in records:
            raise DecodeError("hold_htlc_paths paths", "missing")
        paths = parse_paths(records[_PATHS], "hold_htlc_paths paths")
        client_id = records[_CLIENT_ID]
        if not is_valid_pubkey(client_id):
            raise DecodeError("hold_htlc_paths client_id", "not a valid public key")
        request = cls(records[_PAYMENT_HASH], paths, client_id, records[_SIGNATURE])
        if not verify_compact(client_id, request.signature, request.sighash()):
            raise DecodeError("hold_htlc_paths signature", "not client_id's signature of this request")
        return request


@dataclass(frozen=True)
class ServeStaticInvoice:
    """B -> LSP_b: keep ``invoice`` (a signed static invoice) and serve it for ``slot``."""

    slot: bytes
    invoice: bytes

    def __post_init__(self) -> None:
        if len(self.slot) != SLOT_SIZE or not self.invoice:
            raise UsageError(f"slot is {SLOT_SIZE} bytes and the invoice is not empty")

    def to_bytes(self) -> bytes:
        return encode_tlv_stream([(_SLOT, self.slot), (_INVOICE, self.invoice)])

    @classmethod
    def from_bytes(cls, data: bytes) -> ServeStaticInvoice:
        records = decode_tlv_stream(data, {_SLOT, _INVOICE}, field="serve_static_invoice")
        if len(records.get(_SLOT, b"")) != SLOT_SIZE:
            raise DecodeError("serve_static_invoice slot", f"missing or not {SLOT_SIZE} bytes")
        if not records.get(_INVOICE):
            raise DecodeError("serve_static_invoice invoice", "missing")
        return cls(records[_SLOT], records[_INVOICE])
