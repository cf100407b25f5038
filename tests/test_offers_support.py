"""Shared helpers of the offers tests (no tests here): keys, paths, raw TLV crafting, strategies."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from lightspeed.bitcoin.network import BITCOIN, TESTNET
from lightspeed.codec.tlv import encode_tlv_stream
from lightspeed.offers import (
    Bip353Name,
    BlindedPayInfo,
    FallbackAddress,
    Offer,
    build_offer,
    encode_string,
    merkle_root,
    request_invoice,
    respond_to_invoice_request,
    sign_merkle_root,
)
from lightspeed.offers.sign import public_key_of
from lightspeed.onion.blinding import BlindedHop, BlindedPath, create_blinded_path

ALICE = bytes([0x41]) * 32  # the offer's issuer (the spec's signature vector uses these keys)
BOB = bytes([0x42]) * 32  # the payer
ALICE_ID = public_key_of(ALICE)
BOB_ID = public_key_of(BOB)
CAROL_ID = public_key_of(bytes([0x43]) * 32)
CHAINS = frozenset({BITCOIN.chain_hash})
NOW = 1_700_000_000


def payment_path(node_id: bytes = ALICE_ID, session: int = 3) -> BlindedPath:
    return create_blinded_path(bytes([session]) * 32, [CAROL_ID, node_id], [b"\x01\x02", b"\x03"])


PAYINFO = BlindedPayInfo(fee_base_msat=1000, fee_proportional_millionths=100, cltv_expiry_delta=144,
                         htlc_minimum_msat=1, htlc_maximum_msat=10**10)


def raw_string(hrp: str, records: Sequence[tuple[int, bytes]]) -> str:
    """A BOLT 12 string of exactly these records (no rule checked: for invalid inputs)."""
    return encode_string(hrp, encode_tlv_stream(records))


def signed_string(hrp: str, records: Sequence[tuple[int, bytes]], key: bytes) -> str:
    """The records plus a correct `signature` (240) by ``key`` for the message of ``hrp``."""
    stream = encode_tlv_stream(records)
    name = {"lnr": "invoice_request", "lni": "invoice"}[hrp]
    return encode_string(hrp, encode_tlv_stream([*records, (240, sign_merkle_root(name, merkle_root(stream), key))]))


def sample_offer(**overrides: object) -> Offer:
    args: dict[str, object] = {"issuer_id": ALICE_ID, "description": "coffee", "amount_msat": 10_000}
    args.update(overrides)
    return build_offer(**args)  # type: ignore[arg-type]


def sample_invoice(offer: Offer | None = None, **request_args: object):  # type: ignore[no-untyped-def]
    offer = offer or sample_offer()
    invreq = request_invoice(offer, payer_key=BOB, metadata=b"\x07" * 16, **request_args)  # type: ignore[arg-type]
    invoice = respond_to_invoice_request(invreq, node_key=ALICE, payment_hash=b"\x55" * 32, created_at=NOW,
                                         paths=[payment_path()], blindedpay=[PAYINFO])
    return invreq, invoice


# ---- hypothesis strategies --------------------------------------------------------------

def _key(i: int) -> bytes:
    return public_key_of(i.to_bytes(32, "big"))


keys = st.integers(1, 2**20).map(_key)
small_bytes = st.binary(max_size=40)
texts = st.text(max_size=30)
u64 = st.integers(0, 2**64 - 1)


@st.composite
def blinded_paths(draw: st.DrawFn) -> BlindedPath:
    first = draw(st.one_of(keys, st.tuples(st.sampled_from([0, 1]), st.integers(0, 2**64 - 1)).map(
        lambda t: bytes([t[0]]) + t[1].to_bytes(8, "big"))))
    hops = draw(st.lists(st.tuples(keys, small_bytes), min_size=1, max_size=3))
    return BlindedPath(first, draw(keys), tuple(BlindedHop(k, d) for k, d in hops))


@st.composite
def offers(draw: st.DrawFn, *, valid: bool = True) -> Offer:
    """Offers that pass the reader's rules (or, with ``valid=False``, any field values)."""
    paths = draw(st.none() | st.lists(blinded_paths(), min_size=1, max_size=2).map(tuple))
    issuer_id = draw(keys if paths is None and valid else st.none() | keys)
    amount = draw(st.none() | st.integers(1 if valid else 0, 2**64 - 1))
    currency = draw(st.none() | st.sampled_from(["USD", "EUR", "JPY"])) if amount is not None or not valid else None
    description = draw(texts if amount is not None and valid else st.none() | texts)
    odd = st.integers(0, 60).map(lambda b: 2 * b + 1)
    return Offer(
        chains=draw(st.none() | st.lists(st.sampled_from([BITCOIN.chain_hash, TESTNET.chain_hash]),
                                         min_size=1, max_size=2).map(tuple)),
        metadata=draw(st.none() | small_bytes), currency=currency, amount=amount, description=description,
        features=draw(st.none() | st.sets(odd, max_size=3).map(
            lambda bits: sum(1 << b for b in bits).to_bytes((max(bits, default=0) + 8) // 8, "big"))),
        absolute_expiry=draw(st.none() | u64), paths=paths, issuer=draw(st.none() | texts),
        quantity_max=draw(st.none() | u64), issuer_id=issuer_id,
        unknown_records=tuple(draw(st.lists(st.tuples(st.sampled_from([33, 35, 77, 1_000_000_033]), small_bytes),
                                            unique_by=lambda r: r[0], max_size=2))),
    )


names = st.text(alphabet="abcXYZ09-_.", min_size=0, max_size=10)
bip353_names = st.builds(Bip353Name, names, names)
fallbacks = st.builds(FallbackAddress, st.integers(0, 16), st.binary(min_size=2, max_size=40))
