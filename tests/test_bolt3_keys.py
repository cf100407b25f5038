"""BOLT 3 Appendix D (per-commitment secrets, shachain storage) and E (key derivation)."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.crypto.keys import (
    MAX_INDEX,
    derive_privkey,
    derive_pubkey,
    derive_revocation_privkey,
    derive_revocation_pubkey,
    per_commitment_point,
    per_commitment_secret,
    point_from_secret,
    secret_index,
)
from lightspeed.crypto.shachain import ShachainError, ShachainStore
from lightspeed.errors import DecodeError
from tests.support.vectors import load_vectors

KEYS = load_vectors("bolt03_key_derivation.json")
SECRETS = load_vectors("bolt03_per_commitment_secrets.json")
h = bytes.fromhex


def test_points_of_the_given_secrets() -> None:
    assert point_from_secret(h(KEYS["base_secret"])).hex() == KEYS["base_point"]
    assert point_from_secret(h(KEYS["per_commitment_secret"])).hex() == KEYS["per_commitment_point"]


def test_derive_pubkey() -> None:
    assert (
        derive_pubkey(h(KEYS["base_point"]), h(KEYS["per_commitment_point"])).hex()
        == KEYS["localpubkey"]
    )


def test_derive_privkey() -> None:
    priv = derive_privkey(h(KEYS["base_secret"]), h(KEYS["per_commitment_point"]))
    assert priv.hex() == KEYS["localprivkey"]
    assert point_from_secret(priv).hex() == KEYS["localpubkey"]


def test_derive_revocation_pubkey() -> None:
    got = derive_revocation_pubkey(h(KEYS["base_point"]), h(KEYS["per_commitment_point"]))
    assert got.hex() == KEYS["revocationpubkey"]


def test_derive_revocation_privkey() -> None:
    priv = derive_revocation_privkey(h(KEYS["base_secret"]), h(KEYS["per_commitment_secret"]))
    assert priv.hex() == KEYS["revocationprivkey"]
    assert point_from_secret(priv).hex() == KEYS["revocationpubkey"]


@pytest.mark.parametrize("case", SECRETS["generation"], ids=lambda c: c["name"])
def test_generate_from_seed(case: dict[str, Any]) -> None:
    assert (
        per_commitment_secret(h(str(case["seed"])), int(str(case["index"]))).hex() == case["output"]
    )


@pytest.mark.parametrize("case", SECRETS["storage"], ids=lambda c: c["name"])
def test_shachain_storage(case: dict[str, Any]) -> None:
    store = ShachainStore()
    inserts = case["inserts"]
    for step in inserts:
        index, secret = int(str(step["index"])), h(str(step["secret"]))
        if step["ok"]:
            store.insert(index, secret)
            assert store.get(index) == secret
        else:
            before = store.serialize()
            with pytest.raises(ShachainError) as info:
                store.insert(index, secret)
            assert str(index) in info.value.field
            assert store.serialize() == before  # a refused insert changes nothing
    # Every vector sequence ends in exactly one ERROR, at its last insert.
    assert [s["ok"] for s in inserts].count(False) <= 1
    assert inserts[-1]["ok"] is (case["name"] == "insert_secret correct sequence")


def test_secret_index_counts_down() -> None:
    assert secret_index(0) == MAX_INDEX
    assert secret_index(42) == MAX_INDEX - 42
    with pytest.raises(DecodeError):
        secret_index(-1)


def test_out_of_order_insert_is_refused() -> None:
    seed = bytes(range(32))
    store = ShachainStore()
    with pytest.raises(ShachainError):
        store.insert(MAX_INDEX - 1, per_commitment_secret(seed, MAX_INDEX - 1))
    store.insert(MAX_INDEX, per_commitment_secret(seed, MAX_INDEX))
    with pytest.raises(ShachainError):
        store.insert(MAX_INDEX, per_commitment_secret(seed, MAX_INDEX))


@settings(max_examples=40, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), count=st.integers(1, 300))
def test_store_accepts_any_correct_sequence(seed: bytes, count: int) -> None:
    store = ShachainStore()
    for n in range(count):
        store.insert(secret_index(n), per_commitment_secret(seed, secret_index(n)))
        assert len(store) <= 49
    for n in range(count):
        assert store.get(secret_index(n)) == per_commitment_secret(seed, secret_index(n))
    assert store.get(secret_index(count)) is None
    restored = ShachainStore.parse(store.serialize())
    assert restored.serialize() == store.serialize()
    assert restored.next_index == store.next_index


@settings(max_examples=40, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    count=st.integers(2, 200),
    data=st.data(),
)
def test_store_rejects_a_corrupted_secret(seed: bytes, count: int, data: st.DataObject) -> None:
    """A wrong secret is caught at the latest when an index with more trailing zeros arrives."""
    bad_n = data.draw(st.integers(0, count - 2))
    bit = data.draw(st.integers(0, 255))
    store = ShachainStore()
    caught = False
    for n in range(count):
        index = secret_index(n)
        secret = per_commitment_secret(seed, index)
        if n == bad_n:
            secret = bytes(
                b ^ (1 << (bit % 8)) if i == bit // 8 else b for i, b in enumerate(secret)
            )
        try:
            store.insert(index, secret)
        except ShachainError:
            caught = True
            break
    assert caught == _reference_detects(count, bad_n)


def _reference_detects(count: int, bad_n: int) -> bool:
    """Model of the spec algorithm tracking only which stored entry is the corrupt one.

    An insert into bucket B checks every held entry of a lower bucket; the check
    fails exactly when one side of the comparison is the corrupt secret.
    """
    held: dict[int, bool] = {}  # bucket -> is the corrupt secret
    for n in range(count):
        index = secret_index(n)
        bucket = (index & -index).bit_length() - 1 if index else 48
        is_bad = n == bad_n
        if any(held[b] != is_bad for b in held if b < bucket):
            return True
        held[bucket] = is_bad
    return False


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_into_parse_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        ShachainStore.parse(data)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=40), st.binary(max_size=40))
def test_arbitrary_keys_raise_only_decode_error(a: bytes, b: bytes) -> None:
    for fn in (derive_pubkey, derive_privkey, derive_revocation_pubkey, derive_revocation_privkey):
        with contextlib.suppress(DecodeError):
            fn(a, b)


def test_per_commitment_point_matches_secret() -> None:
    seed = b"\x01" * 32
    assert per_commitment_point(seed, MAX_INDEX) == point_from_secret(
        per_commitment_secret(seed, MAX_INDEX)
    )
