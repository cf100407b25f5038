"""The peer's per-commitment points by commitment number, knowing the highest number it holds.

A channel keeps every point the peer sent (punishing a revoked commitment, or claiming
from it, needs the point it was built with), so the book grows with the channel's age.
The store record keeps only the points above the last revoked commitment, usually two:
scanning the whole book for them at every save cost time in proportion to the channel's
age. The book tracks its highest key on every way a dict can gain one (item assignment,
``update``, ``setdefault``, ``|=``), so :meth:`PointBook.numbers_above` probes only the
numbers between the revoked one and the top.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class PointBook(dict[int, bytes]):
    """A ``dict[int, bytes]`` that knows its highest key (removals may leave it high: still correct)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.top = -1
        self.update(*args, **kwargs)

    def __setitem__(self, number: int, point: bytes) -> None:
        super().__setitem__(number, point)
        if number > self.top:
            self.top = number

    def update(self, *args: Any, **kwargs: Any) -> None:
        added: dict[int, bytes] = dict(*args, **kwargs)
        super().update(added)
        self.top = max(self.top, max(added, default=-1))

    def setdefault(self, number: int, point: bytes) -> bytes:
        if number not in self:
            self[number] = point
        return self[number]

    def __ior__(self, other: Mapping[int, bytes] | Iterable[tuple[int, bytes]]) -> PointBook:  # type: ignore[override, misc]
        self.update(other)
        return self

    def numbers_above(self, number: int) -> list[int]:
        """The commitment numbers above ``number`` that have a point, ascending."""
        return [n for n in range(number + 1, self.top + 1) if n in self]
