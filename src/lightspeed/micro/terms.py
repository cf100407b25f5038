"""Prices and allowance terms: what a call costs and what an allowance bought.

Prices are exact fractions of a millisatoshi per call (``Price(1, 3)``: 1 msat per 3 calls),
because a micro-API may charge less than a satoshi and amounts on the wire are whole msat.
An allowance must buy a number of calls whose total is a whole number of msat.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction

from lightspeed.errors import DecodeError, UsageError


@dataclass(frozen=True)
class Price:
    """``msat`` millisatoshi per ``calls`` calls."""

    msat: int
    calls: int = 1

    def __post_init__(self) -> None:
        if self.msat < 0 or self.calls < 1:
            raise UsageError("price: msat must be >= 0 and calls >= 1")

    @property
    def per_call(self) -> Fraction:
        return Fraction(self.msat, self.calls)

    def cost_msat(self, calls: int) -> int:
        """The exact price of ``calls`` calls; refuses a total that is not whole msat."""
        total = self.per_call * calls
        if total.denominator != 1:
            raise UsageError(f"calls: {calls} calls at {self} cost {total} msat, not a whole number")
        return int(total)

    def refund_msat(self, calls: int) -> int:
        """What ``calls`` unspent calls are worth, rounded down to whole msat."""
        return int(self.per_call * calls)

    def granularity(self) -> int:
        """The smallest number of calls that costs whole msat."""
        return self.per_call.denominator

    def __str__(self) -> str:
        return f"{self.per_call} msat/call"

    def to_json(self) -> dict[str, int]:
        return {"msat": self.msat, "calls": self.calls}

    @classmethod
    def from_json(cls, data: object) -> Price:
        if not isinstance(data, dict):
            raise DecodeError("price", "expected {msat, calls}")
        msat, calls = data.get("msat"), data.get("calls", 1)
        if not isinstance(msat, int) or not isinstance(calls, int) or msat < 0 or calls < 1:
            raise DecodeError("price", "msat must be an integer >= 0 and calls an integer >= 1")
        return cls(msat, calls)


@dataclass(frozen=True)
class AllowanceTerms:
    """The immutable record of one allowance, as the server stores it.

    ``server_node_id`` binds the allowance to the server's node: its invoice is payable
    only to that node, and its id is valid only in that server's store.
    """

    allowance_id: bytes
    server_node_id: bytes
    price: Price
    lanes: int
    calls_per_lane: int
    batch_calls: int  # 0: prepaid in full; else paid batch by batch
    amount_msat: int  # of the first invoice
    payment_hash: bytes
    invoice: str
    created_at: int
    expires_at: int

    @property
    def total_calls(self) -> int:
        return self.lanes * self.calls_per_lane

    @property
    def first_paid_calls(self) -> int:
        """Calls the first invoice pays for."""
        return self.batch_calls or self.total_calls

    def to_bytes(self) -> bytes:
        return json.dumps({
            "allowance_id": self.allowance_id.hex(), "server_node_id": self.server_node_id.hex(),
            "price": self.price.to_json(), "lanes": self.lanes, "calls_per_lane": self.calls_per_lane,
            "batch_calls": self.batch_calls, "amount_msat": self.amount_msat,
            "payment_hash": self.payment_hash.hex(), "invoice": self.invoice,
            "created_at": self.created_at, "expires_at": self.expires_at,
        }, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> AllowanceTerms:
        d = json.loads(raw)
        return cls(bytes.fromhex(d["allowance_id"]), bytes.fromhex(d["server_node_id"]),
                   Price.from_json(d["price"]), d["lanes"], d["calls_per_lane"], d["batch_calls"],
                   d["amount_msat"], bytes.fromhex(d["payment_hash"]), d["invoice"],
                   d["created_at"], d["expires_at"])

    def public_json(self) -> dict[str, object]:
        """What the client is told about its allowance."""
        return {"id": self.allowance_id.hex(), "node_id": self.server_node_id.hex(),
                "price": self.price.to_json(), "lanes": self.lanes,
                "calls_per_lane": self.calls_per_lane, "batch_calls": self.batch_calls,
                "amount_msat": self.amount_msat, "invoice": self.invoice,
                "expires_at": self.expires_at}
