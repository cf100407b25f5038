"""Attribution data (``option_attribution_data``, BOLT 4 "Returning Errors"): hold times and
truncated HMACs that let the sender blame the hop that corrupted a failure and read each
hop's reported hold time.

Layout: 20 big-endian u32 hold times (units of 100 ms), then 210 four-byte HMACs. Seen
from the node currently handling the data, hop ``x`` (0 = itself) owns ``20 - x`` slots
holding ``hmac_x_y`` for ``y = 19 - x`` down to ``0``; ``y`` is that hop's assumed distance
from the node that started the data. Each hop shifts what it received one hop down
(dropping what would be position 21), writes its own hold time and 20 HMACs, then XORs
the whole block with its ``ammagext`` stream.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from lightspeed.errors import OnionError, UsageError
from lightspeed.onion.sphinx import generate_key, generate_stream, xor_bytes

MAX_HOPS = 20
HMAC_LEN = 4
HOLD_TIMES_SIZE = MAX_HOPS * 4
HMAC_SLOTS = MAX_HOPS * (MAX_HOPS + 1) // 2
ATTRIBUTION_DATA_SIZE = HOLD_TIMES_SIZE + HMAC_SLOTS * HMAC_LEN


def _block_start(x: int) -> int:
    """First slot of hop ``x``'s block: 20 + 19 + ... + (20 - x + 1)."""
    return x * MAX_HOPS - x * (x - 1) // 2


def _slot(x: int, y: int) -> int:
    return _block_start(x) + (MAX_HOPS - 1 - x - y)


def _hmacs(um: bytes, message: bytes, hold_times: bytes, slots: bytes) -> bytes:
    """This hop's 20 truncated HMACs, ``hmac_0_19`` first, computed over ``slots`` (the shifted
    data whose block 0 is still empty)."""
    out = bytearray()
    for y in range(MAX_HOPS - 1, -1, -1):
        downstream = b"".join(slots[_slot(x, y - x) * HMAC_LEN: (_slot(x, y - x) + 1) * HMAC_LEN]
                              for x in range(1, y + 1))
        out += hmac.digest(um, message + hold_times[: (y + 1) * 4] + downstream, "sha256")[:HMAC_LEN]
    return bytes(out)


def _shift(data: bytes) -> tuple[bytes, bytes]:
    """Hold times and HMAC slots moved one hop down; the new hop-0 entries are zero."""
    hold = bytes(4) + data[: HOLD_TIMES_SIZE - 4]
    old = data[HOLD_TIMES_SIZE:]
    slots = bytearray(MAX_HOPS * HMAC_LEN)
    for x in range(1, MAX_HOPS):
        # old block x-1 without its first entry (that hop would now be 21 hops away)
        start = (_block_start(x - 1) + 1) * HMAC_LEN
        slots += old[start: start + (MAX_HOPS - x) * HMAC_LEN]
    return hold, bytes(slots)


def add_attribution(shared_secret: bytes, message: bytes, hold_time: int, downstream: bytes | None = None) -> bytes:
    """Add this hop's layer. ``message`` is the return packet as this hop received it (before its
    ``ammag`` stream; the erring node passes its plaintext packet). ``downstream`` is the
    attribution data received, or ``None`` to start an all-zero block."""
    if downstream is None:
        downstream = bytes(ATTRIBUTION_DATA_SIZE)
    if len(downstream) != ATTRIBUTION_DATA_SIZE:
        raise UsageError(f"attribution_data must be {ATTRIBUTION_DATA_SIZE} bytes")
    if not 0 <= hold_time < 2**32:
        raise UsageError("hold_time must fit a u32")
    hold, slots = _shift(downstream)
    hold = hold_time.to_bytes(4, "big") + hold[4:]
    own = _hmacs(generate_key(b"um", shared_secret), message, hold, slots)
    data = hold + own + slots[MAX_HOPS * HMAC_LEN:]
    return xor_bytes(data, generate_stream(generate_key(b"ammagext", shared_secret), ATTRIBUTION_DATA_SIZE))


@dataclass(frozen=True)
class Attribution:
    """What the sender learns: hold times (in 100 ms units) of the hops whose HMAC verified, in
    route order; ``first_invalid_hop`` is where verification stopped (``None`` if all passed)."""

    hold_times: tuple[int, ...]
    first_invalid_hop: int | None


def _unshift(data: bytes) -> bytes:
    """Inverse of the shift as far as it can be: the slots a hop dropped come back as zeros."""
    hold = data[4:HOLD_TIMES_SIZE] + bytes(4)
    slots = data[HOLD_TIMES_SIZE:]
    out = bytearray()
    for x in range(MAX_HOPS):
        length = MAX_HOPS - x
        if x + 1 < MAX_HOPS:
            start = _block_start(x + 1) * HMAC_LEN
            out += bytes(HMAC_LEN) + slots[start: start + (length - 1) * HMAC_LEN]
        else:
            out += bytes(HMAC_LEN)
    return hold + bytes(out)


def verify_attribution(shared_secrets: Sequence[bytes], packet: bytes, attribution_data: bytes,
                       final_hop: int | None = None) -> Attribution:
    """Walk the hops in route order, checking each hop's HMAC at its position.

    ``packet`` is the failure packet as the sender received it (``b""`` for a fulfill).
    Position ``y`` of hop ``i`` assumes the data started at ``final_hop`` (default: the last
    hop), which every hop's 20 HMACs make valid whichever hop really started it.
    """
    if len(attribution_data) != ATTRIBUTION_DATA_SIZE:
        raise OnionError("attribution_data", f"{len(attribution_data)} bytes, expected {ATTRIBUTION_DATA_SIZE}")
    if not 1 <= len(shared_secrets) <= MAX_HOPS:
        raise UsageError(f"a route has 1 to {MAX_HOPS} hops")
    last = len(shared_secrets) - 1 if final_hop is None else final_hop
    data = attribution_data
    hold_times: list[int] = []
    for index, secret in enumerate(shared_secrets[: last + 1]):
        if index:
            data = _unshift(data)
        data = xor_bytes(data, generate_stream(generate_key(b"ammagext", secret), ATTRIBUTION_DATA_SIZE))
        if packet:
            packet = xor_bytes(packet, generate_stream(generate_key(b"ammag", secret), len(packet)))
        y = last - index
        hold = data[:HOLD_TIMES_SIZE]
        slots = data[HOLD_TIMES_SIZE:]
        downstream = b"".join(slots[_slot(x, y - x) * HMAC_LEN: (_slot(x, y - x) + 1) * HMAC_LEN]
                              for x in range(1, y + 1))
        expected = hmac.digest(generate_key(b"um", secret), packet + hold[: (y + 1) * 4] + downstream,
                               "sha256")[:HMAC_LEN]
        got = slots[_slot(0, y) * HMAC_LEN: (_slot(0, y) + 1) * HMAC_LEN]
        if not hmac.compare_digest(expected, got):
            return Attribution(tuple(hold_times), index)
        hold_times.append(int.from_bytes(hold[:4], "big"))
    return Attribution(tuple(hold_times), None)
