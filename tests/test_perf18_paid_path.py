"""The paid call's own cost (issue 18): the token's one-match fast path reads every header value
exactly as the careful parser does, and the counts kept instead of new state objects stay exact."""

from __future__ import annotations

import asyncio
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.errors import DecodeError
from lightspeed.micro.store import AllowanceState, LaneState, Status
from lightspeed.micro.stores.memory import MemoryAllowanceStore
from lightspeed.micro.token import Token

_GOOD = Token(bytes(range(16)), 3, 1234, bytes(range(32))).header_value()


def _outcome(parse: object, value: object) -> tuple[str, object]:
    try:
        return "token", parse(value)  # type: ignore[operator]
    except DecodeError as exc:
        return "error", (exc.field, exc.reason)
    except UnicodeDecodeError:
        return "error", "not ascii"


def _careful(value: bytes) -> tuple[str, object]:
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return "error", "not ascii"
    return _outcome(Token.parse, text)


_edits = st.lists(st.tuples(st.integers(0, len(_GOOD) + 2), st.sampled_from(
    [b"", b" ", b"\t", b".", b"0", b"9", b"a", b"F", b"g", b"-", b"+", b"\n", b"\xff", b"\x00", b"00",
     b"1" * 20])), max_size=3)


@settings(max_examples=600, deadline=None)
@given(_edits, st.booleans())
def test_the_fast_path_reads_every_value_as_the_careful_parser(edits: list[tuple[int, bytes]], cut: bool) -> None:
    """Well-formed values, and values a few edits away from one (signs, leading zeros, 20-digit
    numbers, spaces, tabs, newlines, non-hex, non-ASCII): the same token or the same error."""
    value = bytearray(_GOOD.encode())
    for at, text in edits:
        if cut and at < len(value):
            del value[at]
        value[at:at] = text
    assert _outcome(Token.from_header, bytes(value)) == _careful(bytes(value))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.integers(0, 2**64), st.integers(0, 2**64), st.binary(min_size=32, max_size=32),
       st.sampled_from(["", " ", "\t ", "  "]), st.sampled_from(["", " ", " \t"]))
def test_any_token_round_trips_through_the_fast_path(aid: bytes, lane: int, index: int, link: bytes,
                                                      before: str, after: str) -> None:
    value = f"{before}{aid.hex()}.{lane}.{index}.{link.hex()}{after}".encode()
    assert _outcome(Token.from_header, value) == _careful(value)


def test_the_memory_store_counts_spent_calls_across_advances_and_state_changes() -> None:
    """The memory store keeps ``spent`` as a count beside the state: every load and every
    compare-and-set sees the sum of the lanes, as the other stores do."""

    async def go() -> None:
        store = MemoryAllowanceStore()
        aid = os.urandom(16)
        await store.create(aid, b"t", 2**40, [bytes(32)] * 2, AllowanceState(Status.ACTIVE, 10))
        await store.advance(aid, 0, 0, LaneState(3, b"a" * 32))
        await store.advance(aid, 1, 0, LaneState(2, b"b" * 32))
        loaded = await store.load(aid)
        assert loaded is not None and loaded.state.spent == 5
        assert await store.update_state(aid, AllowanceState(Status.ACTIVE, 10, 0, ""),
                                        AllowanceState(Status.ACTIVE, 20, 0, "x"))
        loaded = await store.load(aid)
        assert loaded is not None and (loaded.state.paid_calls, loaded.state.spent, loaded.state.extra) == (20, 5, "x")

    asyncio.run(go())
