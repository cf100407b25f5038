"""BOLT 9 feature bits: the table matches the spec, byte fields, context checks, negotiation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lightspeed.codec.features import ASSUMED, FEATURES, NAME_BY_BIT, Features, negotiate
from lightspeed.errors import DecodeError, PeerProtocolError
from tests.support.vectors import load_vectors


def test_table_matches_bolt9() -> None:
    rows = load_vectors("bolt09_features.json")["features"]
    assert len(rows) == len(FEATURES) == 23
    for row in rows:
        info = FEATURES[row["name"]]
        assert [info.bit, info.bit + 1] == row["bits"]
        assert info.contexts == row["context"]
        assert list(info.depends) == row["dependencies"]
        assert info.assumed == (row["description"] == "ASSUMED")


def test_bytes_are_big_endian_and_minimal() -> None:
    assert Features.from_bytes(b"\x02\x00\x01").bits == {0, 17}
    assert Features(frozenset({0, 17})).to_bytes() == b"\x02\x00\x01"
    assert Features().to_bytes() == b""
    assert Features.from_bytes(b"\x00\x00\x01").to_bytes() == b"\x01"  # leading zeros dropped


@given(st.frozensets(st.integers(0, 600), max_size=40))
def test_bytes_round_trip(bits: frozenset[int]) -> None:
    features = Features(bits)
    assert Features.from_bytes(features.to_bytes()) == features
    assert int.from_bytes(features.to_bytes(), "big") == sum(1 << b for b in bits)


def test_names_supports_requires() -> None:
    f = Features.of(required=["option_anchors"], optional=["basic_mpp"])
    assert f.bits == {22, 17}
    assert f.supports("option_anchors") and f.requires("option_anchors")
    assert f.supports("basic_mpp") and not f.requires("basic_mpp")
    assert not f.supports("option_splice")
    assert f.names() == ["basic_mpp", "option_anchors"]
    with pytest.raises(KeyError):
        f.supports("option_teleport")
    # BOLT #9: both bits set is treated as mandatory.
    assert Features(frozenset({16, 17})).requires("basic_mpp")


def test_with_dependencies_adds_transitive_dependencies_as_optional() -> None:
    f = Features.of(required=["option_zeroconf", "option_simple_close"], with_dependencies=True)
    assert f.bits == {50, 47, 60, 27}
    assert f.missing_dependencies() == []
    assert Features.of(optional=["basic_mpp"]).missing_dependencies() == [("basic_mpp", "payment_secret")]


def test_check_contexts_both_bits_and_dependencies() -> None:
    Features.of(optional=["basic_mpp", "payment_secret", "option_payment_metadata"]).check("9")
    Features.of(optional=["option_anchors", "option_scid_alias"]).check("T")
    Features.of(optional=["var_onion_optin", "gossip_queries_ex"]).check("I")
    Features(frozenset({101})).check("N")  # unknown bits are not this check's business
    with pytest.raises(DecodeError, match="context 9"):
        Features.of(optional=["option_anchors"]).check("9")
    with pytest.raises(DecodeError, match="context I"):
        Features.of(optional=["option_payment_metadata"]).check("I")
    with pytest.raises(DecodeError, match="both bits"):
        Features(frozenset({24, 25})).check("I")
    with pytest.raises(DecodeError, match="dependency option_scid_alias"):
        Features.of(optional=["option_zeroconf"]).check("T")
    with pytest.raises(ValueError):
        Features().check("X")


def test_unknown_required() -> None:
    assert Features(frozenset({2, 3, 20, 22, 101, 200})).unknown_required() == [2, 20, 200]
    assert all(bit % 2 == 0 for bit in NAME_BY_BIT)


OURS = Features.of(optional=["var_onion_optin", "payment_secret", "basic_mpp", "option_anchors"])


def test_negotiate_returns_the_common_features() -> None:
    theirs = Features.of(required=["payment_secret"], optional=["var_onion_optin", "option_splice"])
    common = negotiate(OURS, theirs)
    assert common.names() == ["var_onion_optin", "payment_secret"]
    # The two init fields are ORed (BOLT #1): globalfeatures may carry bits too.
    assert negotiate(OURS, b"\x02\x00", b"\x80\x00") == negotiate(OURS, Features(frozenset({9, 15})))


def test_negotiate_fails_on_required_bits_we_lack_or_missing_dependencies() -> None:
    with pytest.raises(PeerProtocolError, match="200 \\(unknown\\)"):
        negotiate(OURS, Features(frozenset({200})))
    with pytest.raises(PeerProtocolError, match="option_splice"):
        negotiate(OURS, Features.of(required=["option_splice"]))
    with pytest.raises(PeerProtocolError, match="dependency option_scid_alias"):
        negotiate(OURS, Features.of(optional=["option_zeroconf"]))
    # A dependency on an ASSUMED feature holds even when its bit is not set (BOLT 9).
    assert negotiate(OURS, Features.of(optional=["basic_mpp"])).names() == [
        "var_onion_optin", "payment_secret", "basic_mpp"]
    # Unknown odd bits are fine ("it's OK to be odd").
    assert negotiate(OURS, Features(frozenset({201, 9}))).names() == ["var_onion_optin", "payment_secret"]


@given(st.frozensets(st.integers(0, 80)), st.frozensets(st.integers(0, 80)))
def test_negotiate_is_a_subset_of_ours_or_fails_cleanly(local: frozenset[int], remote: frozenset[int]) -> None:
    try:
        common = negotiate(Features(local), Features(remote))
    except PeerProtocolError:
        assert any(b % 2 == 0 and b not in local and b + 1 not in local and b not in ASSUMED
                   for b in remote) or Features(remote).missing_dependencies()
        return
    assert common.bits <= local
    # BOLT 1: negotiated = offered by both, or offered as even by us; ASSUMED ones always.
    assert {b & ~1 for b in common.bits} <= {b & ~1 for b in remote} | {b for b in local if b % 2 == 0} | ASSUMED


def test_init_combines_both_feature_fields() -> None:
    from lightspeed.codec.messages import Init, decode_message, encode_message

    init = Init(globalfeatures=b"\x02", features=Features.of(optional=["var_onion_optin"]).to_bytes())
    decoded = decode_message(encode_message(init))
    assert isinstance(decoded, Init)
    assert decoded.all_features.bits == {1, 9}
    assert decoded.all_features.supports("var_onion_optin")
