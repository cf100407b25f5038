"""Metered streams: goods delivered over time, paid one hash-chain link per tick.

Neither side is ever exposed to more than one tick (see :mod:`.machine`); the seller signs
a statement at the end, and the links prove it (:mod:`.receipt`).
"""

from lightspeed.stream.machine import BuyerStream, RemoteProtocolError, SellerStream, StreamStatus
from lightspeed.stream.receipt import (
    Receipt,
    Recomputed,
    SignedStatement,
    Statement,
    StatementError,
    check_statement,
    recompute,
    sign_statement,
)
from lightspeed.stream.tariff import Tariff

__all__ = [
    "BuyerStream",
    "Receipt",
    "Recomputed",
    "RemoteProtocolError",
    "SellerStream",
    "SignedStatement",
    "Statement",
    "StatementError",
    "StreamStatus",
    "Tariff",
    "check_statement",
    "recompute",
    "sign_statement",
]
