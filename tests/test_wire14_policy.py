"""HoldBook.released_under: an MPP part that reaches the LSP after its payment was released follows it."""

from __future__ import annotations

import hashlib

from lightspeed.asyncpay.policy import HoldBook, HoldLimits, ReleaseKey

CLIENT = b"\x02" + b"a" * 32
HASH = hashlib.sha256(b"wire14 preimage").digest()
PID, OTHER_PID = b"p" * 32, b"q" * 32


def test_released_under_only_after_a_release_of_that_tag() -> None:
    book = HoldBook(HoldLimits(), ReleaseKey(b"k" * 32))
    registration = book.register(CLIENT, (HASH,), PID, 2_000, now=0)
    other = book.register(CLIENT, (b"h" * 32,), OTHER_PID, 1_000, now=0)
    book.admit("chan:0", CLIENT, HASH, 1_000, 800, registration.release_tag, now=1, block_height=700)
    assert not book.released_under(registration.release_tag)  # held, not released: a late part is held too
    book.release(PID, now=2, block_height=700)
    assert book.released_under(registration.release_tag)
    assert not book.released_under(other.release_tag)
    book.forget("chan:0")
    assert not book.released_under(registration.release_tag)  # resolved: nothing follows any more
