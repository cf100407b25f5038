"""Hypothesis strategies for valid BOLT 11 invoices (shared by property and interop tests)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from lightspeed.bitcoin.network import NETWORKS
from lightspeed.crypto.secp256k1 import CURVE_ORDER
from lightspeed.invoice import Fallback, RouteHintHop

privkeys = st.integers(min_value=1, max_value=CURVE_ORDER - 1).map(lambda k: k.to_bytes(32, "big"))
hashes = st.binary(min_size=32, max_size=32)
pubkeys = st.tuples(st.sampled_from([b"\x02", b"\x03"]), st.binary(min_size=32, max_size=32)).map(
    lambda t: t[0] + t[1]
)
hops = st.builds(
    RouteHintHop,
    pubkey=pubkeys,
    short_channel_id=st.integers(0, 2**64 - 1),
    fee_base_msat=st.integers(0, 2**32 - 1),
    fee_proportional_millionths=st.integers(0, 2**32 - 1),
    cltv_expiry_delta=st.integers(0, 2**16 - 1),
)
fallbacks = st.one_of(
    st.builds(Fallback, st.sampled_from([17, 18]), st.binary(min_size=20, max_size=20)),
    st.builds(Fallback, st.just(0), st.sampled_from([20, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n))),
    st.builds(Fallback, st.integers(1, 16), st.binary(min_size=2, max_size=40)),
)
# Required bits must be understood; odd (optional) bits may be anything.
features = st.tuples(
    st.sets(st.sampled_from([8, 14, 16, 48])), st.sets(st.integers(0, 127).map(lambda b: 2 * b + 1), max_size=5)
).map(lambda t: frozenset(t[0] | t[1]))


@st.composite
def invoice_kwargs(draw: st.DrawFn) -> dict[str, Any]:
    hashed = draw(st.booleans())
    return {
        "network": draw(st.sampled_from(NETWORKS)),
        "amount_msat": draw(st.one_of(st.none(), st.integers(1, 21 * 10**6 * 10**11))),
        "timestamp": draw(st.integers(0, 2**35 - 1)),
        "payment_hash": draw(hashes),
        "payment_secret": draw(hashes),
        "description": None if hashed else draw(st.text(max_size=60)),
        "description_hash": draw(hashes) if hashed else None,
        "expiry": draw(st.one_of(st.none(), st.integers(0, 2**40))),
        "min_final_cltv_expiry": draw(st.one_of(st.none(), st.integers(0, 2**20))),
        "features": draw(features),
        "fallbacks": draw(st.lists(fallbacks, max_size=2)),
        "route_hints": draw(st.lists(st.lists(hops, min_size=1, max_size=3), max_size=2)),
        "metadata": draw(st.one_of(st.none(), st.binary(max_size=40))),
    }
