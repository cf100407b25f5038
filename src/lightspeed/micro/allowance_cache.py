"""An allowance as one server process last saw it, and where its next batch is offered.

Split from :mod:`lightspeed.micro.server`: the per-allowance memory every paid call reads and
updates (kept cheap: a paid call only counts what it spent), beside the rule that fixes, per
allowance, the call at which its next batch is offered.
"""

from __future__ import annotations

from lightspeed.micro.store import AllowanceState, LaneState
from lightspeed.micro.terms import AllowanceTerms


def batch_offer_point(batch_calls: int, allowance_id: bytes, spread: float) -> int:
    """The paid calls left at which the next batch is offered: half a batch, plus up to ``spread``
    of a batch at a point the allowance's id fixes (the same in every process serving it, and
    spread evenly over allowances, whose ids are random)."""
    share = int.from_bytes(allowance_id[:4], "big") / 2**32
    return batch_calls // 2 + int(batch_calls * spread * share)


class CachedAllowance:
    """An allowance as this process last saw it.

    ``state``'s ``spent`` is brought up to date when read: ``AllowanceServer.spend`` only adds to a count
    (building a frozen AllowanceState costs about 2 µs, on every paid call otherwise)."""

    __slots__ = ("_state", "_unsaved_spent", "batch_offer", "lanes", "offer_at", "paid_checked", "terms")

    def __init__(self, terms: AllowanceTerms, state: AllowanceState, lanes: list[LaneState],
                 offer_spread: float = 0.0) -> None:
        self.terms, self._state, self.lanes = terms, state, lanes
        self._unsaved_spent = 0
        #: the paid calls left at which the next batch is offered (batched allowances); at half
        #: that, the offered batch is looked at once and taken if it is paid (see ``spend``)
        self.offer_at = batch_offer_point(terms.batch_calls, terms.allowance_id, offer_spread)
        self.paid_checked = -1  # the paid_calls for which that look was taken
        #: Our batch invoice offered ahead and its calls, for the ``extra`` it was read from: while
        #: ``extra`` is that same string, every paid call of the batch's second half reuses it
        #: instead of parsing ``extra``'s JSON again (a paid call only moves ``spent``).
        self.batch_offer: tuple[str, int, str, int] | None = None  # extra, paid_calls, invoice, its calls

    def offered(self) -> tuple[str, int] | None:
        """The batch invoice memoised for the state as it is now, and its calls."""
        offer, state = self.batch_offer, self._state
        if offer is not None and offer[0] is state.extra and offer[1] == state.paid_calls:
            return offer[2], offer[3]
        return None

    def paid_check_due(self, remaining: int) -> bool:
        """Past half the offer point, and the offered batch not looked at yet for this state."""
        return remaining * 2 <= self.offer_at and self.paid_checked != self._state.paid_calls

    @property
    def state(self) -> AllowanceState:
        if self._unsaved_spent:
            s = self._state
            self._state = AllowanceState(s.status, s.paid_calls, s.spent + self._unsaved_spent, s.extra)
            self._unsaved_spent = 0
        return self._state

    @state.setter
    def state(self, state: AllowanceState) -> None:
        self._state, self._unsaved_spent = state, 0

    def add_spent(self, calls: int) -> int:
        """Count ``calls`` more spent; returns the paid calls left."""
        self._unsaved_spent += calls
        s = self._state
        return s.paid_calls - s.spent - self._unsaved_spent
