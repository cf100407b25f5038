"""A closed stream's unused credit goes back to the buyer through its payment's return path.

Why. A buyer prepays up to one window of ticks (an allowance batch) and pays each tick with a
link before it is delivered; when the stream ends, the seller holds the ticks funded and never
paid by a link, and the units paid by a link and never delivered (the meter stopped short, at
most one tick). Both are the buyer's. :class:`StreamRefunds`, the seller's
:attr:`~lightspeed.stream.asgi.StreamSeller.on_closed` hook, closes the stream's allowance with
the undelivered part recorded in the allowance store (so the amount survives a restart), and the
allowance's automatic refund (:mod:`lightspeed.micro.auto_refund`) pays both back once, through
the return path the buyer's prepayments carried; the buyer stays anonymous.

Streams paid by increments (no allowance) are not refunded here: each increment is paid only
once everything before it is delivered, so at most what the meter left undelivered of the last
one is at stake.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lightspeed.micro.server import AllowanceServer
from lightspeed.stream.machine import SellerStream

log = logging.getLogger("lightspeed.stream.refund")

NO_ALLOWANCE = bytes(16)  # the allowance id of a stream paid by increments


@dataclass
class StreamRefunds:
    """Close a finished stream's allowance and refund what it did not use (the ``on_closed`` hook)."""

    allowances: AllowanceServer

    async def __call__(self, machine: SellerStream) -> int:
        """The refund due in msat (0 for a stream paid by increments)."""
        if machine.allowance_id == NO_ALLOWANCE:
            return 0
        undelivered = (machine.paid_units - machine.delivered_units) * machine.tariff.msat_per_unit
        due = await self.allowances.close_by_seller(machine.allowance_id, undelivered)
        log.info("stream %s closed: %d msat unused credit (%d undelivered)", machine.stream_id.hex(), due,
                 undelivered)
        return due
