"""A dict keyed by commitment number that knows the highest number it holds.

A channel keeps, for every commitment number, the peer's per-commitment point and what
each remote commitment we signed contained: punishing a revoked commitment, or claiming
from it, needs them, so both grow with the channel's age. A save needs only the few
above a number (the points above the last revoked commitment, the commitments signed
since the last save): scanning the whole dict for them at every save cost time in
proportion to the channel's age. The book tracks its highest key on every way a dict can
gain one (item assignment, ``update``, ``setdefault``, ``|=``), so
:meth:`NumberedBook.numbers_above` probes only the numbers between that one and the top.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

V = TypeVar("V")


class NumberedBook(dict[int, V]):
    """A ``dict[int, V]`` that knows its highest key (removals may leave it high: still correct)."""

    top: int = -1  # also what copy and pickle see while they put the items back, before the state

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.top = -1
        self.update(*args, **kwargs)

    def __setitem__(self, number: int, value: V) -> None:
        super().__setitem__(number, value)
        if number > self.top:
            self.top = number

    def update(self, *args: Any, **kwargs: Any) -> None:
        added: dict[int, V] = dict(*args, **kwargs)
        super().update(added)
        self.top = max(self.top, max(added, default=-1))

    def setdefault(self, number: int, value: V) -> V:
        if number not in self:
            self[number] = value
        return self[number]

    def __ior__(self, other: Mapping[int, V] | Iterable[tuple[int, V]]) -> NumberedBook[V]:  # type: ignore[override, misc]
        self.update(other)
        return self

    def numbers_above(self, number: int) -> list[int]:
        """The numbers above ``number`` that have an entry, ascending."""
        return [n for n in range(number + 1, self.top + 1) if n in self]


def numbers_above(book: Mapping[int, object], number: int) -> list[int]:
    """The keys above ``number``, ascending: probed in a :class:`NumberedBook`, else (a plain dict put
    there by hand) found by a scan."""
    if isinstance(book, NumberedBook):
        return book.numbers_above(number)
    return sorted(n for n in book if n > number)
