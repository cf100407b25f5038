"""Receipts: each tick's link, and the seller's signed statement at the end of a stream.

A link is a receipt by itself: it is the preimage of the link before it, so the chain of
links a buyer revealed, from the lane's position when the stream opened, proves how many
ticks were paid, to anyone, with one hash each. At the end the seller signs a
:class:`Statement` of units delivered and ticks paid with its node key; the buyer's
library checks it against what it saw (:func:`check_statement`), and the dispute tool
recomputes it from the links alone (:func:`recompute`).

Signature scheme: BIP-340 (Schnorr) over a tagged hash ``SHA256(SHA256(tag) ||
SHA256(tag) || statement)`` with the tag ``lightspeed/stream/statement/v1``. Why BIP-340
rather than ECDSA: the tag separates these signatures from every other use of the node key
(a statement can never be replayed as a BOLT 7 announcement, a BOLT 12 invoice or a
``signmessage`` text, which sign other digests), the verifier needs nothing but the node
id (its x coordinate), and it is what BOLT 12 already signs with the node key. The
statement is canonical JSON (sorted keys, no spaces), so the file a human reads is the
byte string that was signed.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from coincurve import PrivateKey, PublicKeyXOnly

from lightspeed.errors import DecodeError, UsageError
from lightspeed.invoice import Invoice
from lightspeed.invoice.decode import decode
from lightspeed.micro.hashchain import LINK_SIZE
from lightspeed.stream.tariff import Tariff

STATEMENT_TAG = b"lightspeed/stream/statement/v1"
STREAM_ID_SIZE = 16
ALLOWANCE_ID_SIZE = 16
MAX_RECEIPT_LINKS = 10**7  # a receipt file a dispute tool will hash through
MAX_INCREMENTS = 100_000  # invoices one stream paid without an allowance
_HEX = re.compile(r"[0-9a-fA-F]*")  # bytes.fromhex alone would skip spaces


class StatementError(DecodeError):
    """A statement that does not match the links or the buyer's own count (``field`` says which)."""


@dataclass(frozen=True, slots=True)
class Statement:
    """What the seller states at the end: ticks paid (links ``start_index+1 .. last_index`` of a
    lane) and units delivered. ``start_link`` is the lane's link at ``start_index`` (its anchor
    when 0): the link every later one hashes back to."""

    stream_id: bytes
    seller_node_id: bytes
    tariff: Tariff
    allowance_id: bytes
    lane: int
    start_index: int
    start_link: bytes
    last_index: int
    last_link: bytes
    delivered_units: int
    closed_at: int
    increments: tuple[tuple[bytes, int], ...] = ()  # (payment hash, ticks) paid by invoice, without links

    @property
    def increment_ticks(self) -> int:
        return sum(ticks for _, ticks in self.increments)

    @property
    def paid_ticks(self) -> int:
        return self.last_index - self.start_index + self.increment_ticks

    @property
    def paid_units(self) -> int:
        return self.paid_ticks * self.tariff.tick_units

    @property
    def paid_msat(self) -> int:
        return self.paid_ticks * self.tariff.tick_msat

    @property
    def delivered_msat(self) -> int:
        return self.delivered_units * self.tariff.msat_per_unit

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "stream_id": self.stream_id.hex(), "seller_node_id": self.seller_node_id.hex(),
                "tariff": self.tariff.to_json(), "allowance_id": self.allowance_id.hex(), "lane": self.lane,
                "start_index": self.start_index, "start_link": self.start_link.hex(),
                "last_index": self.last_index, "last_link": self.last_link.hex(),
                "delivered_units": self.delivered_units, "closed_at": self.closed_at,
                "increments": [[h.hex(), t] for h, t in self.increments],
                # derived, for people reading the file (checked on decode)
                "paid_ticks": self.paid_ticks, "paid_msat": self.paid_msat}

    def canonical(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> bytes:
        tag = hashlib.sha256(STATEMENT_TAG).digest()
        return hashlib.sha256(tag + tag + self.canonical()).digest()

    @classmethod
    def from_json(cls, data: object) -> Statement:
        if not isinstance(data, dict):
            raise DecodeError("statement", "expected a JSON object")
        if data.get("version") != 1:
            raise DecodeError("statement.version", "expected 1")
        statement = cls(
            _hex(data, "stream_id", STREAM_ID_SIZE), _hex(data, "seller_node_id", 33),
            Tariff.from_json(data.get("tariff")), _hex(data, "allowance_id", ALLOWANCE_ID_SIZE),
            _int(data, "lane"), _int(data, "start_index"), _hex(data, "start_link", LINK_SIZE),
            _int(data, "last_index"), _hex(data, "last_link", LINK_SIZE),
            _int(data, "delivered_units"), _int(data, "closed_at"), _increments(data.get("increments")))
        if statement.last_index < statement.start_index:
            raise DecodeError("statement.last_index", "below start_index")
        for name in ("paid_ticks", "paid_msat"):
            if data.get(name) != getattr(statement, name):
                raise DecodeError(f"statement.{name}", f"does not follow from the indices and the tariff "
                                  f"(expected {getattr(statement, name)})")
        return statement


@dataclass(frozen=True, slots=True)
class SignedStatement:
    statement: Statement
    signature: bytes  # 64-byte BIP-340 signature by statement.seller_node_id

    def valid(self) -> bool:
        """True when the signature is the seller node's over this statement."""
        try:
            key = PublicKeyXOnly(self.statement.seller_node_id[1:])
            return len(self.signature) == 64 and bool(key.verify(self.signature, self.statement.digest()))
        except ValueError:
            return False

    def to_json(self) -> dict[str, Any]:
        return {"statement": self.statement.to_json(), "signature": self.signature.hex()}

    @classmethod
    def from_json(cls, data: object) -> SignedStatement:
        if not isinstance(data, dict):
            raise DecodeError("receipt", "expected a JSON object")
        return cls(Statement.from_json(data.get("statement")), _hex(data, "signature", 64))


def sign_statement(statement: Statement, node_secret: bytes, aux_rand: bytes = bytes(32)) -> SignedStatement:
    """Sign with the seller's node key (BIP-340; ``aux_rand`` is BIP-340's auxiliary randomness,
    an input here: the caller passes 32 random bytes)."""
    try:
        key = PrivateKey(node_secret)
    except ValueError:
        raise UsageError("node_secret: not a valid secp256k1 secret key") from None
    if key.public_key.format(compressed=True) != statement.seller_node_id:
        raise UsageError("node_secret: is not the key of the statement's seller_node_id")
    return SignedStatement(statement, bytes(key.sign_schnorr(statement.digest(), aux_rand)))


@dataclass(frozen=True)
class Receipt:
    """The buyer's receipt file: the signed statement, every link it paid with, in order, and for
    increments paid without an allowance each invoice with its preimage (the proof of payment)."""

    signed: SignedStatement
    links: tuple[bytes, ...] = field(default_factory=tuple)
    invoices: tuple[tuple[str, bytes], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {**self.signed.to_json(), "links": [link.hex() for link in self.links],
                "invoices": [{"invoice": i, "preimage": p.hex()} for i, p in self.invoices]}

    @classmethod
    def from_json(cls, data: object) -> Receipt:
        signed = SignedStatement.from_json(data)
        assert isinstance(data, dict)
        links = data.get("links")
        if not isinstance(links, list) or len(links) > MAX_RECEIPT_LINKS:
            raise DecodeError("links", f"expected a list of at most {MAX_RECEIPT_LINKS} hex links")
        parsed = []
        for i, link in enumerate(links):
            if not isinstance(link, str) or len(link) != 2 * LINK_SIZE or not _HEX.fullmatch(link):
                raise DecodeError(f"links[{i}]", f"expected {LINK_SIZE} bytes as {2 * LINK_SIZE} hex digits")
            parsed.append(bytes.fromhex(link))
        invoices = data.get("invoices", [])
        if not isinstance(invoices, list) or len(invoices) > MAX_INCREMENTS:
            raise DecodeError("invoices", f"expected a list of at most {MAX_INCREMENTS} objects")
        paid = []
        for i, item in enumerate(invoices):
            if not isinstance(item, dict) or not isinstance(item.get("invoice"), str):
                raise DecodeError(f"invoices[{i}]", "expected {invoice, preimage}")
            paid.append((item["invoice"], _hex(item, "preimage", 32, f"invoices[{i}].preimage")))
        return cls(signed, tuple(parsed), tuple(paid))


@dataclass(frozen=True)
class Recomputed:
    """What the links prove, beside what the seller signed. ``problems`` empty: they agree."""

    signature_valid: bool
    links_chain: bool  # every link hashes to the one before it, the first to start_link
    paid_ticks: int  # counted from the links
    paid_msat: int
    delivered_units: int  # as the seller signed
    delivered_msat: int
    unserved_msat: int  # paid for but not delivered (at most one tick when both sides follow the protocol)
    problems: tuple[str, ...]

    @property
    def consistent(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"consistent": self.consistent, "signature_valid": self.signature_valid,
                "links_chain": self.links_chain, "paid_ticks": self.paid_ticks, "paid_msat": self.paid_msat,
                "delivered_units": self.delivered_units, "delivered_msat": self.delivered_msat,
                "unserved_msat": self.unserved_msat, "problems": list(self.problems)}


def recompute(receipt: Receipt) -> Recomputed:
    """The dispute tool's check: recount the ticks paid from the links and set them beside the statement."""
    s = receipt.signed.statement
    problems: list[str] = []
    signature_valid = receipt.signed.valid()
    if not signature_valid:
        problems.append("signature: not the seller node's signature over this statement")
    previous, chain_ok = s.start_link, True
    for i, link in enumerate(receipt.links):
        if hashlib.sha256(link).digest() != previous:
            problems.append(f"links[{i}]: does not hash to the link before it (index {s.start_index + i})")
            chain_ok = False
            break
        previous = link
    paid_ticks = len(receipt.links) if chain_ok else 0
    if chain_ok and receipt.links and receipt.links[-1] != s.last_link:
        problems.append("last_link: the statement's last link is not the receipt's last link")
    paid_ticks += _count_increments(receipt, problems)
    if chain_ok and paid_ticks != s.paid_ticks:
        problems.append(f"paid_ticks: the links and invoices pay {paid_ticks} ticks, the statement says "
                        f"{s.paid_ticks}")
    paid_msat = paid_ticks * s.tariff.tick_msat
    paid_units = paid_ticks * s.tariff.tick_units
    if s.delivered_units > paid_units:
        problems.append(f"delivered_units: {s.delivered_units} exceed the {paid_units} units paid")
    unserved = max(0, paid_msat - s.delivered_msat)
    step = max([1, *(t for _, t in s.increments)])  # a stream paid by increments is ahead by one at most
    if unserved > step * s.tariff.tick_msat:
        what = "one tick" if step == 1 else "one increment"
        problems.append(f"unserved: {unserved} msat paid but not delivered, more than {what} "
                        f"({step * s.tariff.tick_msat} msat)")
    return Recomputed(signature_valid, chain_ok, paid_ticks, paid_msat, s.delivered_units, s.delivered_msat,
                      unserved, tuple(problems))


def _count_increments(receipt: Receipt, problems: list[str]) -> int:
    """Ticks the receipt's invoices prove paid: each signed by the seller's node, for the statement's
    payment hash and ticks, with its preimage."""
    s = receipt.signed.statement
    by_hash: dict[bytes, tuple[Invoice, bytes]] = {}
    for i, (text, preimage) in enumerate(receipt.invoices):
        try:
            invoice = decode(text)
        except DecodeError as exc:
            problems.append(f"invoices[{i}]: {exc}")
            continue
        by_hash[invoice.payment_hash] = (invoice, preimage)
    ticks = 0
    for payment_hash, count in s.increments:
        found = by_hash.get(payment_hash)
        if found is None:
            problems.append(f"increments: no invoice with its preimage for payment hash {payment_hash.hex()}")
            continue
        invoice, preimage = found
        if invoice.payee != s.seller_node_id:
            problems.append(f"invoices: {payment_hash.hex()} is not the seller node's invoice")
        elif hashlib.sha256(preimage).digest() != payment_hash:
            problems.append(f"invoices: the preimage of {payment_hash.hex()} does not match it")
        elif invoice.amount_msat != count * s.tariff.tick_msat:
            problems.append(f"invoices: {payment_hash.hex()} is for {invoice.amount_msat} msat, not {count} ticks")
        else:
            ticks += count
    return ticks


def check_statement(signed: SignedStatement, *, seller_node_id: bytes, stream_id: bytes,
                    paid_links: tuple[bytes, ...], start_link: bytes, delivered_units: int,
                    increments: tuple[tuple[bytes, int], ...] = ()) -> None:
    """The buyer's check of the seller's closing statement against its own count; raises
    :class:`StatementError` naming the first field that differs."""
    s = signed.statement
    if s.seller_node_id != seller_node_id:
        raise StatementError("statement.seller_node_id", "not the node the stream was bought from")
    if s.stream_id != stream_id:
        raise StatementError("statement.stream_id", "not this stream")
    if not signed.valid():
        raise StatementError("signature", "not the seller node's signature over the statement")
    if s.start_link != start_link:
        raise StatementError("statement.start_link", "not the lane position the stream started from")
    if s.increments != increments:
        raise StatementError("statement.increments", "not the invoices the buyer paid")
    if s.paid_ticks != len(paid_links) + sum(t for _, t in increments):
        raise StatementError("statement.paid_ticks", f"says {s.paid_ticks}, the buyer paid "
                             f"{len(paid_links) + sum(t for _, t in increments)}")
    if paid_links and s.last_link != paid_links[-1]:
        raise StatementError("statement.last_link", "not the last link the buyer paid with")
    if s.delivered_units != delivered_units:
        raise StatementError("statement.delivered_units",
                             f"says {s.delivered_units}, the buyer counted {delivered_units}")


def _hex(data: dict[str, Any], name: str, size: int, label: str | None = None) -> bytes:
    value = data.get(name)
    if not isinstance(value, str) or len(value) != 2 * size or not _HEX.fullmatch(value):
        raise DecodeError(label or (f"statement.{name}" if name != "signature" else name),
                          f"expected {size} bytes as {2 * size} hex digits")
    return bytes.fromhex(value)


def _increments(value: object) -> tuple[tuple[bytes, int], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_INCREMENTS:
        raise DecodeError("statement.increments", f"expected a list of at most {MAX_INCREMENTS} [hash, ticks]")
    out = []
    for i, item in enumerate(value):
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
                or len(item[0]) != 64 or not _HEX.fullmatch(item[0]) or not isinstance(item[1], int)
                or isinstance(item[1], bool) or item[1] < 1):
            raise DecodeError(f"statement.increments[{i}]", "expected [payment hash hex, ticks >= 1]")
        out.append((bytes.fromhex(item[0]), item[1]))
    return tuple(out)


def _int(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DecodeError(f"statement.{name}", "expected a non-negative integer")
    return value
