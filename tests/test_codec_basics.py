"""BigSize (BOLT 1 vectors live in test_bolt1_vectors), bech32 and base58 basics."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lightspeed.bitcoin import BITCOIN, REGTEST, TESTNET, address_to_script, script_to_address
from lightspeed.codec.base58 import b58check_decode, b58check_encode
from lightspeed.codec.bech32 import (
    CHARSET,
    Encoding,
    bech32_decode,
    bech32_encode,
    bytes_to_words,
    decode_segwit_address,
    int_to_chars,
    int_to_words,
    words_to_bytes,
)
from lightspeed.errors import DecodeError

# BIP 173 / BIP 350 reference addresses.
SEGWIT_ADDRESSES = [
    ("bc", "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    ("tb", "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
     "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262"),
    ("bc", "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
     "5128751e76e8199196d454941c45d1b3a323f1433bd6751e76e8199196d454941c45d1b3a323f1433bd6"),
    ("bc", "BC1SW50QGDZ25J", "6002751e"),
    ("bc", "bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", "5210751e76e8199196d454941c45d1b3a323"),
    ("bc", "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
     "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"),
]


@pytest.mark.parametrize(("hrp", "address", "script_hex"), SEGWIT_ADDRESSES)
def test_segwit_reference_addresses(hrp: str, address: str, script_hex: str) -> None:
    network = BITCOIN if hrp == "bc" else TESTNET
    script = bytes.fromhex(script_hex)
    assert address_to_script(address, network) == script
    assert script_to_address(script, network) == address.lower()


@pytest.mark.parametrize("address", [
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh",  # v0 with bech32m checksum
    "tb1q0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq24jc47",  # v1 with bech32
    "bc1zw508d6qejxtdg4y5r3zarvaryvqyzf3du",  # v2 with bech32 checksum
    "BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P",  # bad program length for v0
])
def test_invalid_segwit_addresses(address: str) -> None:
    with pytest.raises(DecodeError):
        decode_segwit_address("bc" if address.lower().startswith("bc") else "tb", address)


def test_p2pkh_p2sh_round_trip() -> None:
    # Satoshi's genesis coinbase key hash.
    assert script_to_address(bytes.fromhex("76a91462e907b15cbf27d5425399ebf6f0fb50ebb88f1888ac"), BITCOIN) == "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"
    script = address_to_script("2NBFNJTktNa7GZusGbDbGKRZTxdK9VVez3n", TESTNET)
    assert script_to_address(script, REGTEST) == "2NBFNJTktNa7GZusGbDbGKRZTxdK9VVez3n"


def test_bech32_rejects_mixed_case_and_bad_checksum() -> None:
    with pytest.raises(DecodeError, match="mixes"):
        bech32_decode("A12uEL5L")
    with pytest.raises(DecodeError, match="checksum"):
        bech32_decode("a12uel5m")


@given(st.binary(max_size=200), st.sampled_from(list(Encoding)))
def test_bech32_round_trip(data: bytes, encoding: Encoding) -> None:
    words = bytes_to_words(data)
    text = bech32_encode("ln", words, encoding)
    hrp, got, got_encoding = bech32_decode(text, max_length=None)
    assert (hrp, got, got_encoding) == ("ln", words, encoding)
    assert words_to_bytes(got) == data


@given(st.text(max_size=120))
def test_bech32_decode_only_raises_decode_error(text: str) -> None:
    with contextlib.suppress(DecodeError):
        bech32_decode(text, max_length=None)


@given(st.binary(min_size=1, max_size=60))
def test_base58check_round_trip(payload: bytes) -> None:
    assert b58check_decode(b58check_encode(payload)) == payload


@given(st.integers(min_value=0, max_value=700).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(min_value=0, max_value=(1 << 5 * n) - 1 if n else 0))))
def test_int_to_chars_writes_the_big_endian_words_of_every_length(case: tuple[int, int]) -> None:
    """The ten-bits-at-a-time writer (odd lengths padded by a word, then cut) against the word list."""
    length, value = case
    assert int_to_chars(value, length) == "".join(CHARSET[w] for w in int_to_words(value, length))


@pytest.mark.parametrize(("value", "length"), [(-1, 3), (32, 1), (1 << 10, 2), (1, 0)])
def test_int_to_chars_refuses_what_does_not_fit(value: int, length: int) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        int_to_chars(value, length)
