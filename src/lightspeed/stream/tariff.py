"""A seller's tariff: what one unit costs, how many units a tick is, how much one stream may buy.

A *tick* is the quantum of payment: the buyer pays one hash-chain link per tick, before the
tick is delivered, and never holds more than one tick of credit with the seller. The tick
size is the exposure bound of both sides, so the seller picks it as the most it is willing
to deliver unpaid (0: it never does) and the buyer the most it is willing to lose.
``window_ticks`` is the Lightning prepayment: the buyer funds at most that many ticks ahead
(an allowance batch), so what it trusts the seller to refund is bounded too.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightspeed.errors import DecodeError, UsageError

MAX_UNIT_NAME = 16
MAX_TICKS = 10**9  # ticks one stream may buy (one link each)


@dataclass(frozen=True, slots=True)
class Tariff:
    """``msat_per_unit`` per ``unit``; paid ``tick_units`` at a time; at most ``max_units``."""

    unit: str
    msat_per_unit: int
    tick_units: int
    max_units: int
    window_ticks: int = 600  # one minute at 10 ticks/s

    def __post_init__(self) -> None:
        problem = _problem(self.unit, self.msat_per_unit, self.tick_units, self.max_units,
                           self.window_ticks)
        if problem:
            raise UsageError(f"{problem[0]}: {problem[1]}")

    @property
    def tick_msat(self) -> int:
        """The price of one tick: the value of one link."""
        return self.msat_per_unit * self.tick_units

    @property
    def max_ticks(self) -> int:
        return self.max_units // self.tick_units

    def to_json(self) -> dict[str, object]:
        return {"unit": self.unit, "msat_per_unit": self.msat_per_unit, "tick_units": self.tick_units,
                "max_units": self.max_units, "window_ticks": self.window_ticks}

    @classmethod
    def from_json(cls, data: object) -> Tariff:
        if not isinstance(data, dict):
            raise DecodeError("tariff", "expected a JSON object")
        values = []
        for name in ("msat_per_unit", "tick_units", "max_units", "window_ticks"):
            value = data.get(name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise DecodeError(f"tariff.{name}", "expected an integer")
            values.append(value)
        unit = data.get("unit")
        if not isinstance(unit, str):
            raise DecodeError("tariff.unit", "expected a string")
        problem = _problem(unit, *values)
        if problem:
            raise DecodeError(f"tariff.{problem[0]}", problem[1])
        return cls(unit, *values)


def _problem(unit: str, msat_per_unit: int, tick_units: int, max_units: int,
             window_ticks: int) -> tuple[str, str] | None:
    """The first field that is wrong, and why (``None``: all are fine)."""
    if not unit or len(unit) > MAX_UNIT_NAME or not unit.isprintable() or not unit.isascii():
        return "unit", f"a printable ASCII name of 1 to {MAX_UNIT_NAME} characters (Wh, litre, s, MB)"
    if msat_per_unit < 1:
        return "msat_per_unit", "must be at least 1"
    if tick_units < 1:
        return "tick_units", "must be at least 1"
    if max_units < tick_units or max_units % tick_units:
        return "max_units", f"must be a positive multiple of tick_units ({tick_units})"
    if max_units // tick_units > MAX_TICKS:
        return "max_units", f"more than {MAX_TICKS} ticks"
    if window_ticks < 1:
        return "window_ticks", "must be at least 1"
    return None
