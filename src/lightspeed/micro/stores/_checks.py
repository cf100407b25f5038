"""Argument checks shared by the store implementations, so all three refuse the same misuse.

Counts (indices, ``paid_calls``, ``expires_at``) are capped at 2**53 - 1: Redis evaluates its
scripts with Lua numbers (doubles), exact up to that bound, and the cap is far above any
allowance (10**9 calls). SQLite and PostgreSQL would hold 2**63 - 1, but a value one store
accepts and another refuses would make the stores disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

from lightspeed.errors import UsageError
from lightspeed.micro.store import AllowanceState, LaneState, Refund

MAX_COUNT = 2**53 - 1


def check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{name}: must be an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_COUNT:
        raise UsageError(f"{name}: {value} is outside 0..{MAX_COUNT}")


def check_state(state: AllowanceState) -> None:
    check_count("paid_calls", state.paid_calls)
    check_count("spent", state.spent)
    if "\x00" in state.extra:
        raise UsageError("extra: must not contain NUL characters (PostgreSQL text cannot)")


def check_create(allowance_id: bytes, expires_at: int, anchors: Sequence[bytes],
                 state: AllowanceState) -> None:
    if not allowance_id:
        raise UsageError("allowance_id: must not be empty")
    check_count("expires_at", expires_at)
    if not anchors:
        raise UsageError("anchors: an allowance needs at least one lane")
    check_state(state)
    if state.spent != 0:
        raise UsageError(f"spent: a new allowance's lanes start at index 0, so spent must be 0, "
                         f"not {state.spent}")


def check_advance(lane: int, expected_index: int, new: LaneState) -> int:
    """Validate an advance request and return the number of calls it spends."""
    index = new.index
    if (type(lane) is int and type(expected_index) is int and type(index) is int  # exactly int: not bool
            and 0 <= lane <= MAX_COUNT and 0 <= expected_index < index <= MAX_COUNT):
        return index - expected_index  # the common case (every paid call), in one test
    check_count("lane", lane)
    check_count("expected_index", expected_index)
    check_count("new.index", new.index)
    if new.index <= expected_index:
        raise UsageError(f"new.index: {new.index} must be greater than expected_index "
                         f"{expected_index}")
    return new.index - expected_index


def check_create_limits(unpaid_until: int | None, max_unpaid: int | None) -> None:
    if unpaid_until is not None:
        check_count("unpaid_until", unpaid_until)
    if max_unpaid is not None:
        check_count("max_unpaid", max_unpaid)


def check_refund(refund: Refund) -> None:
    if refund.attempt < 1:
        raise UsageError(f"attempt: counts from 1, got {refund.attempt}")
    check_count("attempt", refund.attempt)
    check_count("amount_msat", refund.amount_msat)
    if len(refund.payment_hash) != 32:
        raise UsageError("payment_hash: must be 32 bytes")
    for name in ("invoice", "reason"):
        if "\x00" in getattr(refund, name):
            raise UsageError(f"{name}: must not contain NUL characters (PostgreSQL text cannot)")
    if refund.owner and (len(refund.owner) != 66 or refund.owner.strip("0123456789abcdef")):
        raise UsageError("owner: must be a node id in lowercase hex (66 characters) or empty")
